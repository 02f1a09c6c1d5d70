//! What the example tests share.

pub mod events;
pub mod parquet_out;

use std::path::PathBuf;
use std::process::Command;

/// An example binary; `cargo test` builds the package's examples beside its tests.
pub fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps");
    let path: PathBuf = dir.join("examples").join(name);
    assert!(path.exists(), "{} is not built; run `cargo test -p riffle-examples`", path.display());
    Command::new(path)
}
