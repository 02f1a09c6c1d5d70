//! Checkpoint duration and size against state size, and the time to resume.
//!
//! ```text
//! cargo bench -p riffle-benches --bench checkpoint_state                  # 100k, 1M, 10M keys
//! cargo bench -p riffle-benches --bench checkpoint_state -- 100000 1000000
//! ```
//!
//! For each key count K: K events, one per key, all in one one-day window, summed per key
//! (so the grouping holds K accumulators), 2 workers, checkpoints every second in a local
//! temporary directory (with a combiner lifted before the shuffle, as every sum is). Once every event is in, the job is asked to stop: it stops at a
//! checkpoint holding all K keys (docs/checkpoints.md, "Stopping"). Printed:
//!
//! - the size of that checkpoint (every part, from its manifest) and its duration, from
//!   the first part written (a source's cut) to the manifest (file times);
//! - how long that first run took, and how many checkpoints it completed: a checkpoint is
//!   written synchronously by each worker, so a large state slows the run;
//! - the time to resume: a run from that checkpoint, which restores K keys and, its source
//!   being at its end, fires the K panes and ends; against a fresh run over the K events
//!   (read, group, fire), measured in the same process.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;

const DAY_MS: i64 = 86_400_000;

/// Events past the K that make the state: the same keys again, adding 0. The source paces
/// itself to at most 32 batches ahead of the sinks, so it is still reading when the K-th
/// event has passed the map and the stop is asked for.
const TAIL: u64 = 200_000;

/// K events into one window, summed per key (then [`TAIL`] more on the same keys); asks
/// the job to stop once the K have passed the map when `stop` is set.
fn job(p: &Pipeline, keys: u64, stop: bool) {
    let seen = Arc::new(AtomicU64::new(0));
    let event = move |i: u64| {
        let kv = if i < keys { (i, 1u64) } else { ((i - keys) % keys, 0) };
        (kv, EventTime::from_millis(i as i64 % DAY_MS))
    };
    let sums = p
        .generate_stream(keys + TAIL, event, WatermarkStrategy::bounded_out_of_orderness(0))
        .map(move |kv| {
            if stop && seen.fetch_add(1, Ordering::Relaxed) + 1 == keys {
                riffle_timely::request_stop();
            }
            kv
        })
        .window_into(FixedWindows::of_millis(DAY_MS))
        .combine_per_key(Sum::new());
    riffle_connectors::memory::discard(&sums);
}

fn opts(dir: &Path) -> RunOptions {
    RunOptions {
        checkpoint_dir: Some(dir.display().to_string()),
        checkpoint_interval: Duration::from_secs(1),
        no_progress: true,
        ..RunOptions::threads(2)
    }
}

/// The newest checkpoint in `dir`: its bytes, from its first part to its manifest, its id.
fn newest(dir: &Path) -> (u64, Duration, u64) {
    let mut ids: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("_MANIFEST.json").exists())
        .collect();
    ids.sort();
    let chk = ids.last().expect("a completed checkpoint");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(chk.join("_MANIFEST.json")).unwrap()).unwrap();
    let bytes = manifest["parts"].as_array().unwrap().iter().filter_map(|p| p["bytes"].as_u64()).sum();
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    let first = std::fs::read_dir(chk)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "_MANIFEST.json")
        .map(|e| modified(&e.path()))
        .min()
        .unwrap();
    let id = manifest["id"].as_u64().unwrap();
    (bytes, modified(&chk.join("_MANIFEST.json")).duration_since(first).unwrap_or_default(), id)
}

fn main() {
    let counts: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() { vec![100_000, 1_000_000, 10_000_000] } else { counts };
    println!("checkpoint size and duration against state size; time to resume (2 workers, 1-second interval)");
    println!(
        "{:>10} {:>14} {:>10} {:>16} {:>12} {:>12} {:>8} {:>14} {:>12}",
        "keys",
        "checkpoint MB",
        "B/key",
        "cut->manifest ms",
        "resume s",
        "fresh run s",
        "ratio",
        "stop run s",
        "checkpoints"
    );
    for keys in counts {
        let dir = tempfile::tempdir().unwrap();
        riffle_timely::reset_stop();
        let p = Pipeline::new();
        job(&p, keys, true);
        let started = Instant::now();
        riffle_timely::run(&p, &opts(dir.path())).expect("the job stops at a checkpoint");
        let with_checkpoints = started.elapsed();
        riffle_timely::reset_stop();
        let (bytes, duration, id) = newest(dir.path());

        let p = Pipeline::new();
        job(&p, keys, false);
        let started = Instant::now();
        riffle_timely::run(&p, &opts(dir.path())).expect("the resumed job");
        let resume = started.elapsed();

        let fresh_dir = tempfile::tempdir().unwrap();
        let p = Pipeline::new();
        job(&p, keys, false);
        let started = Instant::now();
        riffle_timely::run(&p, &opts(fresh_dir.path())).expect("a fresh run");
        let fresh = started.elapsed();
        println!(
            "{keys:>10} {:>14.1} {:>10.1} {:>16} {:>12.2} {:>12.2} {:>7.2}x {:>14.2} {id:>12}",
            bytes as f64 / 1e6,
            bytes as f64 / keys as f64,
            duration.as_millis(),
            resume.as_secs_f64(),
            fresh.as_secs_f64(),
            resume.as_secs_f64() / fresh.as_secs_f64(),
            with_checkpoints.as_secs_f64(),
        );
    }
    println!("(resume: restore every key, fire every pane, end; fresh: read, group and fire the same events;");
    println!(" stop run: the first run, read the K events with a checkpoint every second, stop at one)");
}
