//! `riffle parquet schema|stats`: what is in Parquet files, without writing a pipeline.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context;
use clap::Subcommand;
use riffle_parquet::StoreOptions;

/// The `riffle parquet` subcommands.
#[derive(Subcommand, Debug)]
pub enum ParquetCommand {
    /// Prints the Arrow schema of the files at URL (of the first, when there are several).
    Schema {
        /// A path, file://, s3://bucket/prefix or hdfs:// URL; a file, a prefix or a glob.
        url: String,
    },
    /// Prints every row group: its file, rows, compressed bytes and min/max per column.
    Stats {
        /// A path, file://, s3://bucket/prefix or hdfs:// URL; a file, a prefix or a glob.
        url: String,
        /// Only this column's min/max.
        #[arg(long, value_name = "C")]
        column: Option<String>,
    },
}

/// Runs one subcommand, printing to stdout (a closed pipe, as with `| head`, ends it
/// quietly).
pub fn run(cmd: &ParquetCommand) -> anyhow::Result<()> {
    let mut out = String::new();
    report(cmd, &mut out)?;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn report(cmd: &ParquetCommand, out: &mut String) -> anyhow::Result<()> {
    let opts = StoreOptions::new();
    match cmd {
        ParquetCommand::Schema { url } => {
            let (schema, files) =
                riffle_parquet::inspect::schema(url, &opts).with_context(|| format!("reading {url}"))?;
            let _ = writeln!(out, "{files} file(s) at {url}");
            for f in schema.fields() {
                let _ = writeln!(
                    out,
                    "  {}: {}{}",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { " (nullable)" } else { "" }
                );
            }
        }
        ParquetCommand::Stats { url, column } => {
            let groups = riffle_parquet::inspect::stats(url, &opts, column.as_deref())
                .with_context(|| format!("reading {url}"))?;
            if let Some(c) = column {
                if groups.iter().all(|g| g.columns.is_empty()) {
                    anyhow::bail!("{url}: no column {c:?}");
                }
            }
            let (rows, bytes): (i64, i64) = groups.iter().fold((0, 0), |(r, b), g| (r + g.rows, b + g.bytes));
            let _ = writeln!(out, "{} row group(s), {rows} rows, {bytes} compressed bytes", groups.len());
            for g in &groups {
                let _ = writeln!(out, "{} row group {}: {} rows, {} bytes", g.file, g.row_group, g.rows, g.bytes);
                for (name, min, max) in &g.columns {
                    let _ = writeln!(out, "  {name}: min {min} max {max}");
                }
            }
        }
    }
    Ok(())
}
