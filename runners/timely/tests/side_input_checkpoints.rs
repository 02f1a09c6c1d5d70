//! Checkpoints of a job with a side input: stopped at a checkpoint while main elements
//! wait for their side windows, or failed while the side input is read, then resumed at
//! another worker count, it emits exactly the panes of a run that never stopped. In a test
//! binary of its own, because a stop is asked of the whole process
//! (`riffle_timely::request_stop`), as a signal would.
//!
//! Bug classes caught: a side-input step left out of the checkpoint (the manifest lists
//! it); a side view left out of the part, or not restored (main elements after the resume
//! read side windows without the elements that came before the cut); main elements
//! waiting at the cut lost, or restored on more than one worker (a pane's sum is off); a
//! pane emitted both before the stop and after the resume; side input of the generation
//! after the cut applied before the part is written (saved, then read again after the
//! resume: a side list holds an element twice). Each was checked by breaking that piece
//! of `operators/side.rs` once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;

/// Side events, one every 10 ms: 100 a one-second window.
const SIDE_EVENTS: u64 = 200_000;
/// Main events, one every 100 ms over the same seconds: 10 a window, 2 a key. The main
/// input is read long before the side input (it is a few batches), and its elements
/// wait for their side windows.
const MAIN_EVENTS: u64 = 20_000;
const KEYS: u64 = 5;
const WINDOW_MS: i64 = 1_000;
/// The side input's watermark lags its events by this much, so main elements also wait
/// for side windows whose events have all come: a side view lost at the resume would
/// read them empty.
const SIDE_LAG_MS: i64 = 5_000;
/// The first run asks for a stop, or fails, once this many side events are read: a
/// quarter of the main elements still wait.
const STOP_AT: u64 = 150_000;

/// How the first run ends, once [`STOP_AT`] side events are read.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    /// It does not: the side input is read to its end.
    None,
    /// A stop is asked for, as SIGTERM would.
    Stop,
    /// The side step panics, and the job fails.
    Fail,
}

/// A pane: (key, window start) -> sum.
type Panes = BTreeMap<(u64, i64), u64>;
/// What a run emitted: (key, sum) per window.
type Emitted = Vec<WindowedValue<(u64, u64)>>;

/// Each main element reads the sum of its second's side list; summed per key and second.
/// The side list of second `w` holds the side events `100w .. 100w + 100`.
fn with_side(p: &Pipeline, ending: Ending) -> PCollection<(u64, u64)> {
    let once = Arc::new(AtomicBool::new(true));
    let read = Arc::new(AtomicU64::new(0));
    let side = p
        .generate_stream(
            SIDE_EVENTS,
            |i| (i, EventTime::from_millis(i as i64 * 10)),
            WatermarkStrategy::bounded_out_of_orderness(SIDE_LAG_MS),
        )
        .map(move |i| {
            if i % 200 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Counted over every worker's share of the side input.
            if read.fetch_add(1, Ordering::SeqCst) + 1 >= STOP_AT && once.swap(false, Ordering::SeqCst) {
                match ending {
                    Ending::None => {}
                    Ending::Stop => riffle_timely::request_stop(),
                    Ending::Fail => panic!("the injected failure"),
                }
            }
            i
        })
        .named("SlowSide")
        .window_into(FixedWindows::of_millis(WINDOW_MS))
        .as_list();
    p.generate_stream(
        MAIN_EVENTS,
        |i| (i, EventTime::from_millis(i as i64 * 100)),
        WatermarkStrategy::bounded_out_of_orderness(0),
    )
    .window_into(FixedWindows::of_millis(WINDOW_MS))
    .map_with(&side, |i, list| (i % KEYS, list.iter().sum::<u64>()))
    .named("ReadSide")
    .combine_per_key(Sum::new())
    .named("SideSums")
}

/// What the Beam model says: second `w`'s side list sums to `100 * 100w + 4950`, read by
/// 2 main elements of each key.
fn expected() -> Panes {
    let windows = MAIN_EVENTS as i64 * 100 / WINDOW_MS;
    (0..windows).flat_map(|w| (0..KEYS).map(move |k| ((k, w * WINDOW_MS), 2 * (10_000 * w as u64 + 4_950)))).collect()
}

fn opts(dir: &Path, workers: usize) -> RunOptions {
    RunOptions {
        checkpoint_dir: Some(dir.display().to_string()),
        checkpoint_interval: Duration::from_millis(50),
        ..RunOptions::threads(workers)
    }
}

/// Runs [`with_side`]; the panes it emitted (even when it failed), and its error.
fn run_ending(opts: &RunOptions, ending: Ending) -> (Emitted, Result<(), String>) {
    riffle_timely::reset_stop();
    let p = Pipeline::new();
    let out = riffle_connectors::memory::collect(&with_side(&p, ending));
    let result = riffle_timely::run(&p, opts).map(|_| ()).map_err(|e| e.to_string());
    riffle_timely::reset_stop();
    let emitted = std::mem::take(&mut *out.lock().unwrap());
    (emitted, result)
}

/// Runs [`with_side`]; its panes, or the error.
fn run(opts: &RunOptions, ending: Ending) -> Result<Emitted, String> {
    let (emitted, result) = run_ending(opts, ending);
    result.map(|()| emitted)
}

/// Adds panes as (key, window start) -> sum to `into`, failing on two for one pane.
fn panes(out: &[WindowedValue<(u64, u64)>], into: &mut Panes) {
    for wv in out {
        let Window::Interval { start, .. } = wv.window else { panic!("a fixed window: {wv:?}") };
        let key = (wv.value.0, start.millis());
        let before = into.insert(key, wv.value.1);
        assert!(before.is_none(), "pane {key:?} emitted twice: {before:?}, then {}", wv.value.1);
    }
}

/// The side-input step's parts in the newest checkpoint of `dir`: the bytes of the side
/// view saved (worker 0's part alone holds it), and the main elements saved waiting, by
/// worker.
fn saved_side(dir: &Path) -> (Vec<usize>, Vec<usize>) {
    let newest = riffle_timely::testing::checkpoint_manifests(dir).pop().expect("a checkpoint");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(&newest).join("_MANIFEST.json")).unwrap()).unwrap();
    let step = manifest["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ReadSide")
        .unwrap_or_else(|| panic!("the side-input step takes part in the checkpoint: {manifest}"));
    assert_eq!(step["kind"], "side input", "{step}");
    let (mut views, mut waiting) = (Vec::new(), Vec::new());
    for part in manifest["parts"].as_array().unwrap().iter().filter(|p| p["step"] == step["index"]) {
        let name = part["name"].as_str().unwrap();
        let body = riffle_timely::checkpoint::decode_part(name, &std::fs::read(dir.join(name)).unwrap()).unwrap();
        let saved = riffle_timely::checkpoint::SidePart::decode(&body).unwrap();
        views.push(saved.view.map_or(0, |v| v.len()));
        waiting.push(saved.waiting.iter().map(|(_, b)| b.len()).sum());
    }
    (views, waiting)
}

/// Stops the job at a checkpoint at `workers`, then resumes at `resume_workers`: the two
/// runs' panes together are the model's, each emitted once.
fn stop_then_resume(workers: usize, resume_workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let first = run(&opts(dir.path(), workers), Ending::Stop).expect("the first run stops at a checkpoint");
    let (views, waiting) = saved_side(dir.path());
    assert_eq!(waiting.len(), workers, "a part from every worker");
    assert!(views[0] > 0 && views[1..].iter().all(|v| *v == 0), "worker 0 alone saves the side view: {views:?}");
    let waited: usize = waiting.iter().sum();
    assert!(waited > 0, "main elements waited for their side windows at the cut: {waiting:?}");

    let resumed = run(&opts(dir.path(), resume_workers), Ending::None).expect("the resumed run");
    let mut got = Panes::new();
    panes(&first, &mut got);
    panes(&resumed, &mut got);
    assert!(!first.is_empty() && !resumed.is_empty(), "{} panes, then {}", first.len(), resumed.len());
    let want = expected();
    for (pane, sum) in &want {
        assert_eq!(got.get(pane), Some(sum), "pane {pane:?}, {workers} -> {resume_workers} workers");
    }
    assert_eq!(got.len(), want.len(), "{workers} -> {resume_workers} workers");
    // The main elements that waited at the cut are all in panes of the resumed run.
    let resumed_main = resumed
        .iter()
        .map(|wv| wv.value.1 / (10_000 * (wv.window.max_timestamp().millis() as u64 / 1_000) + 4_950))
        .sum::<u64>();
    assert!(resumed_main as usize >= waited, "{resumed_main} main elements in the resumed panes, {waited} waited");
}

#[test]
fn a_job_with_a_side_input_resumes_with_its_side_view_and_waiting_main_elements() {
    // The model holds for an uninterrupted run.
    let dir = tempfile::tempdir().unwrap();
    let mut got = Panes::new();
    panes(&run(&opts(dir.path(), 2), Ending::None).unwrap(), &mut got);
    assert_eq!(got, expected());

    stop_then_resume(1, 3);
    stop_then_resume(2, 1);
    // In this test, not one of its own: a stop is asked of the whole process.
    fail_then_resume(1, 2);
}

/// Fails the job at `workers` while the side input is read, then resumes at
/// `resume_workers` from its latest checkpoint: the panes of both runs together are the
/// model's, a pane emitted by both (after the checkpoint, before the failure) with the
/// same sum. Unlike a stop, a failure comes while side input of the generation after the
/// cut is in flight, which the side step must not apply before it has written its part.
fn fail_then_resume(workers: usize, resume_workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (first, failed) = run_ending(&opts(dir.path(), workers), Ending::Fail);
    let err = failed.expect_err("the injected failure stops the first run");
    assert!(err.contains("injected failure"), "{err}");
    assert!(!riffle_timely::testing::checkpoint_manifests(dir.path()).is_empty(), "a checkpoint before the failure");
    let resumed = run(&opts(dir.path(), resume_workers), Ending::None).expect("the resumed run");
    let mut got = Panes::new();
    for wv in first.iter().chain(&resumed) {
        let Window::Interval { start, .. } = wv.window else { panic!("a fixed window: {wv:?}") };
        let key = (wv.value.0, start.millis());
        if let Some(before) = got.insert(key, wv.value.1) {
            assert_eq!(before, wv.value.1, "two sums for pane {key:?}");
        }
    }
    assert_eq!(got, expected(), "{workers} -> {resume_workers} workers after a failure");
}
