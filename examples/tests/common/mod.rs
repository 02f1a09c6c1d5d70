//! What the example tests share.

pub mod events;
pub mod parquet_out;

use std::path::{Path, PathBuf};
use std::process::Command;

/// An example binary; `cargo test` builds the package's examples beside its tests.
pub fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps");
    let path: PathBuf = dir.join("examples").join(name);
    assert!(path.exists(), "{} is not built; run `cargo test -p riffle-examples`", path.display());
    Command::new(path)
}

/// The newest completed checkpoint in `dir` (0: none yet).
#[allow(dead_code)]
pub fn completed(dir: &Path) -> usize {
    // The newest completed checkpoint's id, not how many there are: retention keeps three.
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("_MANIFEST.json").exists())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse::<usize>().ok())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The processes a local-cluster launcher started.
#[allow(dead_code)]
pub fn members(launcher: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).unwrap_or_default();
    children.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}
