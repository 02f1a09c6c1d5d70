//! Windowed sum per key, streaming against batch on the same events, and peak memory of a
//! stream ten times longer (DESIGN.md P5: window state is freed as the watermark passes).
//!
//! ```text
//! cargo bench -p riffle-benches --bench windowed               # 10M events
//! cargo bench -p riffle-benches --bench windowed -- 2000000    # events
//! cargo bench -p riffle-benches --bench windowed -- checkpoints # one section (or modes)
//! ```
//!
//! Events: key `splitmix(i) % 1000`, value 1, timestamp `i` ms less up to 50 ms of jitter
//! (one event per millisecond of event time, out of order by up to 50 ms). Pipeline: fixed
//! one-minute windows, sum per key (with combiner lifting), into a discarding sink.
//!
//! - **stream**: the generator's watermark trails the greatest timestamp by 50 ms, so
//!   windows fire and are freed as the stream goes.
//! - **batch**: the same generator with its watermark held at -infinity until the end, as a
//!   bounded source holds it: every window fires at the end.
//! - **explicit trigger**: the stream with `.triggering(Trigger::after_watermark())`, which
//!   means the default trigger's panes by another path (not lifted, the trigger's state
//!   per key and window), against the default trigger, at 2 and 4 workers: the cost of a
//!   grouping that applies its input in watermark order (docs/semantics.md).
//!
//! - **checkpoints**: the stream with `--checkpoint-dir` (a local temporary directory) and
//!   `--checkpoint-interval 1s`, against the stream without, same run: the cost of
//!   epoch-aligned checkpoints (docs/checkpoints.md; goal at most 10% slower), with how
//!   many checkpoints completed and the size of the last.
//!
//! Each run is its own process, so its peak RSS is its own.

use std::time::Duration;

/// mimalloc, as in the `riffle` binary: glibc's malloc lets the memory of batches that are
/// allocated on one worker and freed on another pile up in its per-thread arenas, which
/// grows RSS with the length of a stream while live memory stays flat (massif: 3.8 MB
/// live at the peak of a 6M-event stream whose RSS kept growing).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const WINDOW_MS: i64 = 60_000;
const JITTER_MS: u64 = 50;

/// Runs one mode in this process; prints `{"elapsed_s":..,"peak_rss_kib":..,"panes":..}`.
fn child(mode: &str, events: u64, workers: usize) {
    let strategy = match mode {
        "stream" | "explicit" | "checkpoints" => WatermarkStrategy::bounded_out_of_orderness(JITTER_MS as i64),
        _ => WatermarkStrategy::bounded_out_of_orderness(i64::MAX / 4),
    };
    let p = Pipeline::new();
    let sums = p
        .generate_stream(
            events,
            |i| {
                let h = splitmix(i);
                (((h % 1000) as u32, 1i64), EventTime::from_millis(i as i64 - ((h >> 32) % JITTER_MS) as i64))
            },
            strategy,
        )
        .window_into(FixedWindows::of_millis(WINDOW_MS));
    let sums = if mode == "explicit" { sums.triggering(Trigger::after_watermark()) } else { sums };
    let sums = sums.combine_per_key(Sum::new());
    riffle_connectors::memory::discard(&sums);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let opts = match mode {
        "checkpoints" => RunOptions {
            checkpoint_dir: Some(dir.path().display().to_string()),
            checkpoint_interval: Duration::from_secs(1),
            ..RunOptions::threads(workers)
        },
        _ => RunOptions::threads(workers),
    };
    let report = riffle_timely::run(&p, &opts).expect("the job runs");
    let (checkpoints, last_bytes) = checkpoints_in(dir.path());
    let panes: u64 = report.elements_in("Discard").iter().sum();
    let dropped = report.late_dropped("CombinePerKey");
    assert_eq!(dropped, 0, "no event is later than the watermark's delay");
    println!(
        "{{\"elapsed_s\":{},\"peak_rss_kib\":{},\"panes\":{panes},\"checkpoints\":{checkpoints},\"last_bytes\":{last_bytes}}}",
        report.elapsed.as_secs_f64(),
        peak_rss_kib()
    );
}

/// How many checkpoints completed in `dir` (the last is the job's final one), and the
/// bytes of the last one before the final.
fn checkpoints_in(dir: &std::path::Path) -> (u64, u64) {
    let mut ids: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("_MANIFEST.json").exists()).collect())
        .unwrap_or_default();
    ids.sort();
    let manifest: serde_json::Value = ids
        .iter()
        .rev()
        .nth(1)
        .and_then(|p| serde_json::from_slice(&std::fs::read(p.join("_MANIFEST.json")).ok()?).ok())
        .unwrap_or_default();
    let bytes = manifest["parts"].as_array().map_or(0, |parts| parts.iter().filter_map(|p| p["bytes"].as_u64()).sum());
    // A fresh directory's ids count from 1; older ones were deleted (retention).
    let last: u64 = ids.last().and_then(|p| p.file_name()?.to_str()?.strip_prefix("chk-")?.parse().ok()).unwrap_or(0);
    (last, bytes)
}

/// Peak resident memory of this process, from /proc (Linux).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Run {
    elapsed: Duration,
    rss_kib: u64,
    panes: u64,
    checkpoints: u64,
    last_bytes: u64,
}

fn run(mode: &str, events: u64, workers: usize) -> Run {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child", mode, &events.to_string(), &workers.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{mode} run failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).expect("a result line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    Run {
        elapsed: Duration::from_secs_f64(v["elapsed_s"].as_f64().unwrap()),
        rss_kib: v["peak_rss_kib"].as_u64().unwrap(),
        panes: v["panes"].as_u64().unwrap(),
        checkpoints: v["checkpoints"].as_u64().unwrap(),
        last_bytes: v["last_bytes"].as_u64().unwrap(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], args[i + 2].parse().unwrap(), args[i + 3].parse().unwrap());
        return;
    }
    let events: u64 = args.iter().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000_000);
    // The median of 3 runs, and the spread (slowest over fastest).
    let median = |mode: &str, n: u64, workers: usize| {
        let mut runs: Vec<Run> = (0..3).map(|_| run(mode, n, workers)).collect();
        runs.sort_by_key(|r| r.elapsed);
        let spread = runs[2].elapsed.as_secs_f64() / runs[0].elapsed.as_secs_f64();
        (runs.swap_remove(1), spread)
    };
    // `-- checkpoints`: that section alone.
    let sections: Vec<&str> = args.iter().skip(1).filter(|a| a.parse::<u64>().is_err()).map(String::as_str).collect();
    let only = |name: &str| sections.is_empty() || sections.contains(&name);
    if only("modes") {
        modes(events, &median);
    }
    if only("checkpoints") {
        checkpoints(events, &median);
    }
}

fn rate(r: &Run, n: u64) -> f64 {
    n as f64 / r.elapsed.as_secs_f64() / 1e6
}

/// Batch against stream, a 10x longer stream's memory, and the explicit trigger.
fn modes(events: u64, median: &dyn Fn(&str, u64, usize) -> (Run, f64)) {
    let (batch, _) = median("batch", events, 2);
    let (stream, _) = median("stream", events, 2);
    assert_eq!(batch.panes, stream.panes, "batch and stream fire the same number of panes");
    let long = run("stream", events * 10, 2);
    println!("windowed sum per key: 1-minute windows, 1000 keys, 2 workers, median of 3");
    println!("{:<22} {:>12} {:>10} {:>13} {:>8}", "run", "events", "Mev/s", "peak RSS MiB", "panes");
    for (name, r, n) in
        [("batch", &batch, events), ("stream", &stream, events), ("stream, 10x longer", &long, events * 10)]
    {
        println!("{name:<22} {n:>12} {:>10.2} {:>13.1} {:>8}", rate(r, n), r.rss_kib as f64 / 1024.0, r.panes);
    }
    println!("stream / batch throughput: {:.2}x (goal 0.7x or better)", rate(&stream, events) / rate(&batch, events));
    println!(
        "peak RSS, 10x longer stream / stream: {:.2}x (goal: within 1.2x)",
        long.rss_kib as f64 / stream.rss_kib as f64
    );
    println!();
    println!("explicit after_watermark trigger against the default trigger, median of 3 (spread: slowest/fastest)");
    println!(
        "{:<8} {:>16} {:>8} {:>17} {:>8} {:>10} {:>14}",
        "workers", "default Mev/s", "spread", "explicit Mev/s", "spread", "ratio", "RSS ratio"
    );
    for workers in [2, 4] {
        let (default, ds) = median("stream", events, workers);
        let (explicit, es) = median("explicit", events, workers);
        assert_eq!(default.panes, explicit.panes, "both triggers fire the same panes");
        println!(
            "{workers:<8} {:>16.2} {ds:>7.2}x {:>17.2} {es:>7.2}x {:>9.2}x {:>13.2}x",
            rate(&default, events),
            rate(&explicit, events),
            rate(&explicit, events) / rate(&default, events),
            explicit.rss_kib as f64 / default.rss_kib as f64,
        );
    }
    println!("(goal: explicit within 10% of default)");
    println!();
}

/// The stream with checkpoints every second against without.
fn checkpoints(events: u64, median: &dyn Fn(&str, u64, usize) -> (Run, f64)) {
    println!("checkpoints every 1 s against none, 2 workers, median of 3 (spread: slowest/fastest)");
    println!(
        "{:<14} {:>8} {:>18} {:>8} {:>8} {:>12} {:>16}",
        "none Mev/s", "spread", "checkpoints Mev/s", "spread", "ratio", "checkpoints", "last size bytes"
    );
    let (none, ns) = median("stream", events, 2);
    let (with, ws) = median("checkpoints", events, 2);
    assert_eq!(none.panes, with.panes, "checkpoints change no pane");
    println!(
        "{:<14.2} {ns:>7.2}x {:>18.2} {ws:>7.2}x {:>7.2}x {:>12} {:>16}",
        rate(&none, events),
        rate(&with, events),
        rate(&with, events) / rate(&none, events),
        with.checkpoints,
        with.last_bytes
    );
    println!("(goal: checkpoints at most 10% slower)");
}
