//! Checkpoints and resuming, in one process: a job that fails after some checkpoints, run
//! again with the same `--checkpoint-dir`, goes on from the latest one, at the same or
//! another worker count, and its panes are those of a run that never failed.
//!
//! Bug classes caught: state or positions saved at different cuts (an element counted
//! twice, or never); a resumed run that starts over; key groups restored on the wrong
//! worker at another worker count; input held aside for the next checkpoint and lost; a
//! damaged manifest that stops the resume instead of falling back to the one before; a
//! directory of another pipeline used silently; `--fresh` over existing checkpoints.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;

/// Events: one every 10 ms of event time, 5 keys, in order.
const EVENTS: u64 = 200_000;
const KEYS: u64 = 5;
const WINDOW_MS: i64 = 1_000;

/// The run fails on the event with this index when asked to.
const FAIL_AT: u64 = 150_000;

/// A pane: (key, window start) -> sum.
type Panes = BTreeMap<(u64, i64), u64>;

/// Sums of 1 per key per second over the events, slowed so that checkpoints happen while
/// it runs; fails at [`FAIL_AT`] when `fail`.
fn sums(p: &Pipeline, fail: bool) -> PCollection<(u64, u64)> {
    let fail = Arc::new(AtomicBool::new(fail));
    sums_failing(p, fail)
}

/// [`sums`], failing at [`FAIL_AT`] once: the first time it comes while `fail` is set.
fn sums_failing(p: &Pipeline, fail: Arc<AtomicBool>) -> PCollection<(u64, u64)> {
    p.generate_stream(
        EVENTS,
        |i| (i, EventTime::from_millis(i as i64 * 10)),
        WatermarkStrategy::bounded_out_of_orderness(0),
    )
    .map(move |i| {
        if i % 200 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!(i == FAIL_AT && fail.swap(false, Ordering::SeqCst)), "the injected failure at event {i}");
        (i % KEYS, 1u64)
    })
    .window_into(FixedWindows::of_millis(WINDOW_MS))
    .combine_per_key(Sum::new())
    .named("Sums")
}

/// What the Beam model says: each 1-second window holds 100 events, 20 per key.
fn expected() -> Panes {
    let windows = (EVENTS as i64 * 10 + WINDOW_MS - 1) / WINDOW_MS;
    (0..windows).flat_map(|w| (0..KEYS).map(move |k| ((k, w * WINDOW_MS), 20))).collect()
}

fn opts(dir: &Path, workers: usize) -> RunOptions {
    RunOptions {
        checkpoint_dir: Some(dir.display().to_string()),
        checkpoint_interval: Duration::from_millis(50),
        ..RunOptions::threads(workers)
    }
}

/// Runs the pipeline; its panes, or the error.
fn run(opts: &RunOptions, fail: bool) -> Result<Vec<WindowedValue<(u64, u64)>>, String> {
    riffle_timely::testing::try_run_windowed(opts, |p| sums(p, fail)).map_err(|e| e.to_string())
}

/// Panes as (key, window start) -> sum, failing on two different sums for one pane.
fn panes(out: &[WindowedValue<(u64, u64)>], into: &mut Panes) {
    for wv in out {
        let Window::Interval { start, .. } = wv.window else { panic!("a fixed window: {wv:?}") };
        let key = (wv.value.0, start.millis());
        if let Some(before) = into.insert(key, wv.value.1) {
            let all: Vec<_> = out.iter().filter(|o| o.value.0 == key.0 && o.window == wv.window).collect();
            assert_eq!(before, wv.value.1, "two different sums for {key:?}: {all:?}");
        }
    }
}

/// Fails a run at `workers`, then resumes at `resume_workers`: every pane comes out, once
/// with its right sum, and the resumed run did not start over.
fn fail_then_resume(workers: usize, resume_workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let failed = run(&opts(dir.path(), workers), true);
    let err = failed.expect_err("the injected failure stops the first run");
    assert!(err.contains("injected failure"), "{err}");
    let listing: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(
        !riffle_timely::testing::checkpoint_manifests(dir.path()).is_empty(),
        "the first run completed a checkpoint before failing: {listing:?}"
    );

    let resumed = run(&opts(dir.path(), resume_workers), false).expect("the resumed run");
    let mut got = Panes::new();
    panes(&resumed, &mut got);
    let want = expected();
    // Panes fired before the checkpoint the second run resumed from do not fire again.
    assert!(got.len() < want.len(), "the resumed run started over: {} panes", got.len());
    for (pane, sum) in &got {
        assert_eq!(want.get(pane), Some(sum), "pane {pane:?} after resuming at {resume_workers} workers");
    }
    // Every pane the resumed run did not fire, the first one did before its checkpoint:
    // the panes after the last window the first run could have fired are all here.
    let last_resumed_start = got.keys().map(|(_, s)| *s).min().unwrap();
    for (pane, _) in want.iter().filter(|((_, s), _)| *s >= last_resumed_start) {
        assert!(got.contains_key(pane), "pane {pane:?} is missing after resuming");
    }
}

#[test]
fn a_failed_job_resumes_from_its_latest_checkpoint_with_the_panes_of_an_unbroken_run() {
    fail_then_resume(2, 2);
}

#[test]
fn a_checkpoint_taken_at_two_workers_resumes_at_one_and_at_three() {
    fail_then_resume(2, 1);
    fail_then_resume(2, 3);
}

#[test]
fn a_completed_job_run_again_does_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(&opts(dir.path(), 2), false).unwrap();
    let mut got = Panes::new();
    panes(&first, &mut got);
    assert_eq!(got, expected());
    let again = run(&opts(dir.path(), 2), false).unwrap();
    assert!(again.is_empty(), "a second run of a completed job emitted {} panes", again.len());
}

#[test]
fn a_damaged_manifest_is_skipped_for_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    // A run to the end leaves its last checkpoint (every part final) and the ones before.
    let often = RunOptions { checkpoint_interval: Duration::from_millis(40), ..opts(dir.path(), 2) };
    run(&often, false).unwrap();
    let found = riffle_timely::testing::checkpoint_manifests(dir.path());
    assert!(found.len() >= 2, "two checkpoints at least: {found:?}");
    std::fs::write(dir.path().join(found.last().unwrap()).join("_MANIFEST.json"), b"{ not json").unwrap();
    let resumed = run(&opts(dir.path(), 2), false).expect("resumes from the checkpoint before");
    let mut got = Panes::new();
    panes(&resumed, &mut got);
    let want = expected();
    for (pane, sum) in &got {
        assert_eq!(want.get(pane), Some(sum), "{pane:?}");
    }
    assert!(got.len() < want.len(), "it resumed rather than starting over");
}

#[test]
fn another_pipelines_checkpoint_is_refused_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    run(&opts(dir.path(), 1), false).unwrap();
    let other = riffle_timely::testing::try_run_windowed(&opts(dir.path(), 1), |p| sums(p, false).named("Totals"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(other.contains("'Sums'") && other.contains("'Totals'"), "{other}");
}

#[test]
fn fresh_refuses_a_directory_that_holds_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    run(&opts(dir.path(), 1), false).unwrap();
    let err = run(&RunOptions { fresh: true, ..opts(dir.path(), 1) }, false).unwrap_err();
    assert!(err.contains("--fresh") && err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn with_restart_attempts_a_failed_job_restarts_itself_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(true));
    let restarting =
        RunOptions { restart_attempts: 1, checkpoint_interval: Duration::from_millis(40), ..opts(dir.path(), 2) };
    let out = riffle_timely::testing::try_run_windowed(&restarting, |p| sums_failing(p, fail.clone()))
        .expect("the second attempt completes");
    assert!(!fail.load(Ordering::SeqCst), "the first attempt failed");
    // Both attempts' panes: each once with its sum, or twice with the same.
    let mut got = Panes::new();
    panes(&out, &mut got);
    assert_eq!(got, expected());
    // Starting over would fire again every pane the first attempt fired before failing
    // at three quarters of the events: about 7,500.
    let twice = out.len() - got.len();
    assert!(twice < expected().len() * 2 / 3, "{twice} panes fired twice: the restart started over");
}

#[test]
fn from_checkpoint_resumes_from_an_older_one_and_retention_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    // A run to the end: its last checkpoint (every part final) and the one before are kept.
    let keep_two = RunOptions { checkpoint_retain: 2, ..opts(dir.path(), 2) };
    run(&keep_two, false).unwrap();
    let kept = riffle_timely::testing::checkpoint_manifests(dir.path());
    assert_eq!(kept.len(), 2, "--checkpoint-retain 2 keeps two: {kept:?}");
    let older: u64 = kept[0].strip_prefix("chk-").unwrap().parse().unwrap();
    let newer: u64 = kept[1].strip_prefix("chk-").unwrap().parse().unwrap();
    assert!(older < newer);

    let missing = run(&RunOptions { from_checkpoint: Some(newer + 100), ..opts(dir.path(), 2) }, false).unwrap_err();
    assert!(missing.contains(&format!("--from-checkpoint {}", newer + 100)), "{missing}");

    // From the older one: every pane after where it resumed, each with its sum (none, if
    // the older one was cut after the input had all been read and its windows fired).
    let from_older = run(&RunOptions { from_checkpoint: Some(older), ..opts(dir.path(), 2) }, false).unwrap();
    let mut got = Panes::new();
    panes(&from_older, &mut got);
    let want = expected();
    for (pane, sum) in &got {
        assert_eq!(want.get(pane), Some(sum), "{pane:?} from checkpoint {older}");
    }
    if let Some(first_start) = got.keys().map(|(_, s)| *s).min() {
        for (pane, _) in want.iter().filter(|((_, s), _)| *s >= first_start) {
            assert!(got.contains_key(pane), "{pane:?} missing from checkpoint {older}");
        }
    }
}
