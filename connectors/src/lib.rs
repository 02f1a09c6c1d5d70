//! Sources and sinks for Riffle pipelines, one folder per connector.
//!
//! - [`memory`]: collect a collection into memory (tests, small results).
//! - [`text`]: read lines from local text files (paths and globs); write lines to a file
//!   atomically.
//! - [`stdout`]: print lines, sorted, once the input is complete.
//!
//! Parquet on object stores and Kafka arrive behind cargo features.

pub mod memory;
pub mod stdout;
pub mod text;

mod lines;
