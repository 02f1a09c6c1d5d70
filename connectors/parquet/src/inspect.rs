//! What is in Parquet files: their schema and their row groups' statistics.

use crate::dataset::Dataset;
use crate::error::Result;
use crate::location::{Location, StoreOptions, at_start};
use crate::predicate::{Scalar, stat_range};

/// The Arrow schema of the first file at `url` (all files of a dataset are expected to
/// share it), and how many files there are.
///
/// # Errors
/// As the source's: a bad URL, nothing found, credentials, a corrupt file.
pub fn schema(url: &str, options: &StoreOptions) -> Result<(arrow_schema::SchemaRef, usize)> {
    let d = load(url, options)?;
    Ok((d.files[0].meta.schema().clone(), d.files.len()))
}

/// One row group's figures.
#[derive(Clone, Debug)]
pub struct RowGroupStats {
    /// The file's URL.
    pub file: String,
    /// The row group's index in its file.
    pub row_group: usize,
    /// Rows in it.
    pub rows: i64,
    /// Compressed bytes.
    pub bytes: i64,
    /// (column, min, max) for each column with statistics, printed.
    pub columns: Vec<(String, String, String)>,
}

/// Every row group of every file at `url`, with min/max of each column (or just of
/// `column`).
///
/// # Errors
/// As [`schema`].
pub fn stats(url: &str, options: &StoreOptions, column: Option<&str>) -> Result<Vec<RowGroupStats>> {
    let d = load(url, options)?;
    let mut out = Vec::new();
    for file in &d.files {
        let schema = file.meta.parquet_schema();
        for (g, rg) in file.meta.metadata().row_groups().iter().enumerate() {
            let mut columns = Vec::new();
            for (i, c) in schema.columns().iter().enumerate() {
                let name = c.path().string();
                if column.is_some_and(|want| want != name) {
                    continue;
                }
                let (min, max) = match rg.column(i).statistics().and_then(stat_range) {
                    Some((lo, hi)) => (show(&lo), show(&hi)),
                    None => ("-".into(), "-".into()),
                };
                columns.push((name, min, max));
            }
            out.push(RowGroupStats {
                file: file.url.clone(),
                row_group: g,
                rows: rg.num_rows(),
                bytes: rg.compressed_size(),
                columns,
            });
        }
    }
    Ok(out)
}

fn show(s: &Scalar) -> String {
    match s {
        Scalar::Int(v) => v.to_string(),
        Scalar::Float(v) => v.to_string(),
        Scalar::Str(v) => format!("{v:?}"),
    }
}

fn load(url: &str, options: &StoreOptions) -> Result<Dataset> {
    let location = Location::parse(url, options)?;
    let store = location.store()?;
    let d = at_start(url, options, Dataset::load(&location, store.clone()));
    drop(store); // outside the runtime: an HDFS client owns a runtime of its own
    d
}
