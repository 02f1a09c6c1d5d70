//! `riffle checkpoints list|show` on a directory a job wrote here: what it prints is
//! checked against the manifests and files the job left.

use std::process::Command;

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;

fn riffle(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_riffle")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn list_and_show_describe_the_checkpoints_a_job_left() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let p = Pipeline::new();
    let sums = p
        .create((0..1000u64).map(|i| (i % 7, i)).collect::<Vec<_>>())
        .named("Numbers")
        .combine_per_key(Sum::new())
        .named("Sums");
    riffle_connectors::memory::discard(&sums);
    let opts = RunOptions { checkpoint_dir: Some(ck.display().to_string()), ..RunOptions::threads(2) };
    riffle_timely::run(&p, &opts).unwrap();
    // A crashed run's partial checkpoint beside it.
    std::fs::create_dir_all(ck.join("chk-0000000099")).unwrap();
    std::fs::write(ck.join("chk-0000000099/s0000-w00000"), b"partial").unwrap();

    let ids: Vec<u64> = std::fs::read_dir(&ck)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("_MANIFEST.json").exists())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .collect();
    assert_eq!(ids.len(), 1, "a bounded job that completed leaves its last checkpoint: {ids:?}");
    let id = ids[0];

    let (ok, out, err) = riffle(&["checkpoints", "list", &ck.display().to_string()]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.trim_start().starts_with(&format!("{id} "))).expect("the checkpoint listed");
    assert!(line.contains("complete (4 parts)"), "two steps at two workers: {out}");
    let partial = out.lines().find(|l| l.trim_start().starts_with("99 ")).expect("the partial one listed");
    assert!(partial.contains("incomplete") && partial.contains("7"), "{partial}");

    let (ok, out, err) = riffle(&["checkpoints", "show", &ck.display().to_string(), &id.to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains("by 2 workers"), "{out}");
    assert!(out.contains("source 'Numbers': 2 parts") && out.contains("grouping 'Sums': 2 parts"), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join(format!("chk-{id:010}/_MANIFEST.json"))).unwrap()).unwrap();
    for part in manifest["parts"].as_array().unwrap() {
        let size = std::fs::metadata(ck.join(part["name"].as_str().unwrap())).unwrap().len();
        assert!(out.contains(&format!("{size} bytes  {}", part["name"].as_str().unwrap())), "{part}: {out}");
    }

    let (ok, _, err) = riffle(&["checkpoints", "show", &ck.display().to_string(), "98"]);
    assert!(!ok && err.contains("checkpoint 98"), "{err}");
}
