//! Parquet for Riffle, on local disk, S3 and HDFS: a parallel bounded source with a
//! backfill mode, and an atomic sink.
//!
//! ```text
//!  URL (path, file://, s3://, hdfs://; globs; date=.../ partitions)
//!    │  list + footers (once per process, at start: errors name the file and column)
//!    v
//!  row groups = splits ──deal by bytes (or by event time)──> worker 0..N
//!    │  async Arrow reader over object_store, projection, pruning, 2 row groups ahead
//!    v
//!  RecordBatch ──serde_arrow──> your #[derive(Deserialize)] rows, at their event time
//!    │  ... your pipeline ...
//!    v
//!  rows ──serde_arrow──> one file per worker per window ──completed at the end──> URL
//! ```
//!
//! - [`ReadParquet`]: the source; `.backfill(true)` reads in event-time order and moves
//!   the watermark as it goes (DESIGN.md section 3). `ReadParquet::<ArrowRecords>` gives
//!   Arrow record batches instead of rows, for code that wants columns.
//! - [`WriteParquet`]: the sink.
//! - [`inspect`]: schema and row-group statistics of files, for the `riffle parquet` command.
//!
//! Locations and credentials: see [`StoreOptions`] and `docs/connectors.md`.

mod columns;
mod dataset;
mod error;
pub mod inspect;
mod location;
mod predicate;
mod schema;
mod sink;
mod source;
pub mod testing;

pub use columns::ArrowRecords;
pub use error::{Error, Result};
pub use location::StoreOptions;
pub use predicate::{Op, Predicate, Scalar};
pub use sink::{Compression, DEFAULT_MAX_FILE_BYTES, FilesPer, OutputMode, WriteParquet};
pub use source::{BadRow, ReadParquet};

/// Arrow and Parquet as this crate uses them, for callers that build schemas or batches.
pub use arrow_array;
/// Arrow's schema types.
pub use arrow_schema;
