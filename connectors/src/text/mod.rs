//! Text files on local disk: read lines from paths and globs, write lines to one file.

mod sink;
mod source;

pub use sink::write_lines;
pub use source::read_lines;
