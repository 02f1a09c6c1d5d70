//! `riffle parquet schema|stats`: what is in Parquet files, without writing a pipeline.

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

/// Runs one subcommand, printing to stdout.
pub fn run(cmd: &ParquetCommand) -> anyhow::Result<()> {
    let opts = StoreOptions::new();
    match cmd {
        ParquetCommand::Schema { url } => {
            let (schema, files) =
                riffle_parquet::inspect::schema(url, &opts).with_context(|| format!("reading {url}"))?;
            println!("{files} file(s) at {url}");
            for f in schema.fields() {
                println!("  {}: {}{}", f.name(), f.data_type(), if f.is_nullable() { " (nullable)" } else { "" });
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
            println!("{} row group(s), {rows} rows, {bytes} compressed bytes", groups.len());
            for g in &groups {
                println!("{} row group {}: {} rows, {} bytes", g.file, g.row_group, g.rows, g.bytes);
                for (name, min, max) in &g.columns {
                    println!("  {name}: min {min} max {max}");
                }
            }
        }
    }
    Ok(())
}
