//! Helpers for tests and doctests: run a bounded pipeline and get its output back.
//!
//! They run on two worker threads, so every doctest also exercises the exchange.

use std::sync::{Arc, Mutex};

use riffle_connectors::memory::collect;
use riffle_engine::{Data, PCollection, Pipeline, Result, WindowedValue};

use crate::options::RunOptions;

/// Worker threads the helpers use.
pub const TEST_WORKERS: usize = 2;

type Collected<T> = Arc<Mutex<Vec<WindowedValue<T>>>>;

fn finish<T>(c: Collected<T>) -> Vec<WindowedValue<T>> {
    std::mem::take(&mut *c.lock().expect("collected output"))
}

fn values<T>(c: Collected<T>) -> Vec<T> {
    finish(c).into_iter().map(|wv| wv.value).collect()
}

/// Builds a pipeline with `build`, runs it with `opts`, and returns the elements of the
/// collection it returns, with timestamps, windows and panes, in no particular order.
///
/// # Errors
/// Whatever [`crate::run`] returns.
pub fn try_run_windowed<T: Data>(
    opts: &RunOptions,
    build: impl FnOnce(&Pipeline) -> PCollection<T>,
) -> Result<Vec<WindowedValue<T>>> {
    let p = Pipeline::new();
    let out = collect(&build(&p));
    crate::run(&p, opts)?;
    Ok(finish(out))
}

/// The output values of a bounded pipeline, in no particular order.
///
/// # Panics
/// If the pipeline fails.
pub fn run_bounded<T: Data>(build: impl FnOnce(&Pipeline) -> PCollection<T>) -> Vec<T> {
    run_bounded_windowed(build).into_iter().map(|wv| wv.value).collect()
}

/// The output elements of a bounded pipeline with their metadata, in no particular order.
///
/// # Panics
/// If the pipeline fails.
pub fn run_bounded_windowed<T: Data>(build: impl FnOnce(&Pipeline) -> PCollection<T>) -> Vec<WindowedValue<T>> {
    try_run_windowed(&RunOptions::threads(TEST_WORKERS), build).unwrap_or_else(|e| panic!("pipeline failed: {e}"))
}

/// The values of two outputs of one bounded pipeline.
///
/// # Panics
/// If the pipeline fails.
pub fn run_bounded2<A: Data, B: Data>(
    build: impl FnOnce(&Pipeline) -> (PCollection<A>, PCollection<B>),
) -> (Vec<A>, Vec<B>) {
    let p = Pipeline::new();
    let (a, b) = build(&p);
    let (a, b) = (collect(&a), collect(&b));
    crate::run(&p, &RunOptions::threads(TEST_WORKERS)).unwrap_or_else(|e| panic!("pipeline failed: {e}"));
    (values(a), values(b))
}

/// Options for a local cluster of `processes` x `workers` started from a test: each
/// process re-runs only the test called `test` (its full path, e.g. `mod::name`).
///
/// The test function runs in the launching process *and* in each process it starts; a
/// started process runs the job in [`crate::run`] and exits there, so the code after
/// `run` (reading output, asserting) runs only in the launcher.
pub fn local_cluster(processes: usize, workers: usize, test: &str) -> RunOptions {
    RunOptions {
        workers,
        processes,
        child_args: Some(vec![test.to_string(), "--exact".into(), "--nocapture".into(), "--test-threads=1".into()]),
        ..RunOptions::default()
    }
}

pub use crate::cluster::is_cluster_member;

/// A scratch directory that a test and the processes of the local cluster it starts
/// agree on (named after the launcher's process id), for output files.
pub fn cluster_scratch_dir(test: &str) -> std::path::PathBuf {
    let dir = crate::cluster::shared_scratch_dir(&format!("test-{}", test.replace("::", "-")));
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// One line for an element with everything a pane is compared on: value, window,
/// timestamp and pane info. Tests that run on a cluster write panes as these lines (the
/// processes cannot share memory) and compare them with a run's elements described alike.
pub fn describe<T: std::fmt::Debug>(wv: &WindowedValue<T>) -> String {
    format!("{:?} {:?} {:?} {:?}", wv.value, wv.window, wv.timestamp, wv.pane)
}

/// A DoFn that turns each element into its [`describe`] line.
pub struct Describe<T>(std::marker::PhantomData<fn(&T)>);

impl<T> Describe<T> {
    /// The DoFn.
    pub fn new() -> Self {
        Describe(std::marker::PhantomData)
    }
}

impl<T> Default for Describe<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Describe<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T: Data> riffle_engine::DoFn for Describe<T> {
    type In = T;
    type Out = String;
    fn process(&mut self, x: &T, ctx: &mut riffle_engine::ProcessContext<'_, String>) {
        let wv = WindowedValue { value: x.clone(), timestamp: ctx.timestamp(), window: ctx.window(), pane: ctx.pane() };
        ctx.output(describe(&wv));
    }
}

/// `(key, value, timestamp ms)` events as a stream: sorted by time in chunks cut at
/// `cuts`, each chunk shuffled (by `seed`), the watermark advanced to each chunk's earliest
/// timestamp before it, so that nothing is late, as a perfect watermark would have it.
pub fn as_stream(events: &[(u8, i64, i64)], cuts: &[usize], seed: u64) -> riffle_engine::TestStream<(u8, i64)> {
    use riffle_engine::EventTime;
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.2);
    let mut script = riffle_engine::TestStream::new();
    let mut rest: &[(u8, i64, i64)] = &sorted;
    let mut x = seed | 1;
    for &cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(cut.min(rest.len()));
        let mut chunk: Vec<_> = chunk.iter().map(|&(k, v, t)| ((k, v), EventTime::from_millis(t))).collect();
        for i in (1..chunk.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.swap(i, (x % (i as u64 + 1)) as usize);
        }
        script = script.advance_watermark_to(chunk.iter().map(|c| c.1).min().expect("a chunk")).add_elements(chunk);
        rest = tail;
    }
    script
}

/// A headless Chromium for tests of the web view: Debian's `chromium` package (which
/// `.ci/run` installs), or the binary `RIFFLE_CHROMIUM` names.
pub mod browser {
    use std::path::Path;
    use std::process::Command;

    fn chromium() -> Command {
        let bin = std::env::var("RIFFLE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = std::env::temp_dir().join(format!(
            "riffle-chromium-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut c = Command::new(bin);
        c.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]);
        c.arg(format!("--user-data-dir={}", profile.display()));
        c
    }

    fn run(mut c: Command) -> Vec<u8> {
        let out = c.output().unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}): install Debian's chromium package or set RIFFLE_CHROMIUM")
        });
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// The page at `url` as the browser has it after its script ran for a couple of
    /// seconds (of virtual time).
    pub fn dom(url: &str) -> String {
        let mut c = chromium();
        c.args(["--virtual-time-budget=2500", "--dump-dom", url]);
        String::from_utf8(run(c)).expect("a page in UTF-8")
    }

    /// Saves a screenshot of the page at `url` to `path` (PNG), in a laptop-sized window.
    pub fn screenshot(url: &str, path: &Path) {
        let mut c = chromium();
        c.args(["--virtual-time-budget=2500", "--window-size=1280,900"])
            .arg(format!("--screenshot={}", path.display()));
        c.arg(url);
        run(c);
    }

    /// The value of `attr` on the job graph's node of step `step`, in a page from [`dom`].
    pub fn node_attr(dom: &str, step: &str, attr: &str) -> Option<String> {
        let at = dom.find(&format!("data-step=\"{step}\" data-kind="))?;
        let tag = &dom[at..at + dom[at..].find('>')?];
        let start = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
        Some(tag[start..start + tag[start..].find('"')?].to_string())
    }
}

/// The completed checkpoints in a local checkpoint directory: the names of the folders
/// that hold a manifest, in order (oldest first).
pub fn checkpoint_manifests(dir: &std::path::Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("_MANIFEST.json").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}
