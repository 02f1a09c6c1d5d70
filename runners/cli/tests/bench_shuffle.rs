//! `riffle bench shuffle` end to end on a tiny sweep: real processes, both baselines,
//! every operation, JSON and plot.

use std::process::Command;

#[test]
fn a_tiny_sweep_prints_ratios_and_writes_json_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let (json, svg) = (dir.path().join("r.json"), dir.path().join("r.svg"));
    let out = Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(["bench", "shuffle", "--sizes", "16", "--workers", "1", "--processes", "1,2", "--skew", "zipf1.2"])
        .args(["--mib", "1", "--key-count", "1000", "--reps", "2", "--min-run", "0.05", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("loopback TCP ceiling"), "{stdout}");
    assert!(stdout.contains("goals:"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["tcp_mb_per_s"].as_f64().unwrap() > 0.0);
    let rows = report["rows"].as_array().unwrap();
    let baselines = report["baselines"].as_array().unwrap();
    assert_eq!(baselines.len(), 2, "one timely baseline per (size, workers, processes)");
    // exchange x 2 codecs + gbk + combine, at 1 and 2 processes, plus 3 skewed ops x 2.
    assert_eq!(rows.len(), 2 * 4 + 2 * 3, "{rows:#?}");
    for r in rows {
        assert!(r["records_per_s"].as_f64().unwrap() > 0.0);
        // A ratio to timely's exchange for an exchange at the size the sweep measured
        // timely at, and none for a grouping or a combine, which do more than exchange.
        let comparable = r["spec"]["size"] == 16 && r["spec"]["op"] == "Exchange";
        assert_eq!(r["vs_timely"].as_f64().is_some_and(|x| x > 0.0), comparable, "{r}");
        assert!(r["imbalance"].as_f64().unwrap() >= 1.0);
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 0.0);
        assert!(r["vs_tcp"].as_f64().unwrap() > 0.0, "every row has its TCP ratio");
        assert!(r["spread"].as_f64().unwrap() >= 1.0, "every row has the spread of its repetitions");
    }
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
}

#[test]
fn help_explains_the_sweep() {
    let out = Command::new(env!("CARGO_BIN_EXE_riffle")).args(["bench", "shuffle", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--quick",
        "--sizes",
        "--workers",
        "--processes",
        "--skew",
        "--ops",
        "--json",
        "--plot",
        "--min-run",
        "--reps",
        "--hostfile",
        "--process",
        "--host-timeout",
        "--run-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    // The hostfile mode says what runs where.
    for words in ["single-process configurations are left out", "Process 0 prints the", "TCP ceiling"] {
        assert!(help.contains(words), "{words:?} missing:\n{help}");
    }
}
