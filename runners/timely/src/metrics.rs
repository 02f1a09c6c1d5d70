//! Per-step, per-worker counters, read into the [`crate::RunReport`].
//!
//! Operators add to their counters once per batch with relaxed atomics, so counting costs
//! nothing measurable; the report reads them once the job has finished.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use riffle_engine::runtime::{SourceProgress, StateSize};

/// The counters of one step on one worker.
#[derive(Debug)]
pub struct StepCounter {
    elements_in: AtomicU64,
    elements_out: AtomicU64,
    late_dropped: AtomicU64,
    /// Elements a lifted combine dropped as too late before its shuffle.
    late_dropped_before_shuffle: AtomicU64,
    waiting: AtomicU64,
    /// A source's watermark (event-time ms); i64::MIN until it has one.
    watermark: AtomicI64,
    /// A source's per-split gauges: (metric, split, value).
    splits: std::sync::Mutex<Vec<(&'static str, String, i64)>>,
    /// The step's input watermark (event-time ms); i64::MIN until it has one.
    input_watermark: AtomicI64,
    /// Nanoseconds spent in the step's operators.
    busy_ns: AtomicU64,
    /// A grouping's state: panes pending, entries, estimated bytes.
    panes: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
    /// A sink's files written.
    files: AtomicU64,
    /// A bounded source's progress.
    progress: std::sync::Mutex<Option<SourceProgress>>,
}

impl Default for StepCounter {
    fn default() -> Self {
        StepCounter {
            elements_in: AtomicU64::new(0),
            elements_out: AtomicU64::new(0),
            late_dropped: AtomicU64::new(0),
            late_dropped_before_shuffle: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            splits: std::sync::Mutex::new(Vec::new()),
            input_watermark: AtomicI64::new(i64::MIN),
            busy_ns: AtomicU64::new(0),
            panes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
            progress: std::sync::Mutex::new(None),
        }
    }
}

/// Adds the time from its creation to its drop to a step's busy time.
pub struct Busy<'a> {
    counter: &'a StepCounter,
    since: Instant,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.counter.busy_ns.fetch_add(self.since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl StepCounter {
    /// Counts elements read.
    #[inline]
    pub fn add_in(&self, n: usize) {
        self.elements_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Counts elements written.
    #[inline]
    pub fn add_out(&self, n: usize) {
        self.elements_out.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Records how many elements a grouping has dropped as too late, in all.
    #[inline]
    pub fn set_late_dropped(&self, n: u64) {
        self.late_dropped.store(n, Ordering::Relaxed);
    }
    /// Records how many elements a lifted combine dropped as too late before its shuffle.
    #[inline]
    pub fn set_late_dropped_before_shuffle(&self, n: u64) {
        self.late_dropped_before_shuffle.store(n, Ordering::Relaxed);
    }
    /// Records a source's watermark.
    #[inline]
    pub fn set_watermark(&self, ms: i64) {
        self.watermark.store(ms, Ordering::Relaxed);
    }
    /// Records a source's per-split gauges (a Kafka reader's lag per partition).
    pub fn set_split_gauges(&self, gauges: Vec<(&'static str, String, i64)>) {
        *self.splits.lock().unwrap_or_else(|p| p.into_inner()) = gauges;
    }
    /// Counts the time until the returned guard drops as time spent in the step (one
    /// clock read each way per operator activation).
    #[inline]
    pub fn busy(&self) -> Busy<'_> {
        Busy { counter: self, since: Instant::now() }
    }
    /// Records the step's input watermark (its input frontier's event time).
    #[inline]
    pub fn set_input_watermark(&self, ms: i64) {
        self.input_watermark.store(ms, Ordering::Relaxed);
    }
    /// Records what a grouping's state holds.
    pub fn set_state(&self, size: StateSize) {
        self.panes.store(size.panes, Ordering::Relaxed);
        self.entries.store(size.entries, Ordering::Relaxed);
        self.bytes.store(size.bytes, Ordering::Relaxed);
    }
    /// Records how many files a sink has written.
    pub fn set_files(&self, n: u64) {
        self.files.store(n, Ordering::Relaxed);
    }
    /// Records a bounded source's progress.
    pub fn set_progress(&self, p: Option<SourceProgress>) {
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = p;
    }
    /// Records how many elements a grouping holds until nothing sent before them can
    /// still arrive (input from faster senders: `riffle_engine::arrival`).
    #[inline]
    pub fn set_waiting(&self, n: usize) {
        self.waiting.store(n as u64, Ordering::Relaxed);
    }
}

/// What one step did on one worker (also what a process of a cluster sends to the one
/// holding the job's view, [`crate::status`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepReport {
    /// The step's name.
    pub step: String,
    /// The worker's global index.
    pub worker: usize,
    /// Elements the step read on this worker (for a grouping, after the shuffle).
    pub elements_in: u64,
    /// Elements the step emitted on this worker.
    pub elements_out: u64,
    /// Elements a grouping dropped on this worker as later than its allowed lateness.
    pub late_dropped: u64,
    /// Elements a grouping holds on this worker, now, waiting for slower senders.
    pub waiting: u64,
    /// A source's watermark on this worker (event-time ms); `None` for other steps.
    pub watermark: Option<i64>,
    /// A source's per-split gauges on this worker: (metric, split, value).
    pub splits: Vec<(String, String, i64)>,
    /// The step's input watermark on this worker (event-time ms); `None` for a source
    /// or before it has one.
    pub input_watermark: Option<i64>,
    /// Time spent in the step's operators on this worker.
    pub busy: std::time::Duration,
    /// A grouping's state on this worker.
    pub state: StateSize,
    /// Files a sink has written on this worker.
    pub files_written: u64,
    /// A bounded source's progress on this worker.
    pub progress: Option<SourceProgress>,
}

/// Every counter of the workers of one process.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Vec<(String, usize, Arc<StepCounter>)>>,
    /// The last checkpoint this process completed (process 0's coordinator writes them).
    checkpoint: Mutex<Option<CheckpointFigures>>,
}

/// What the last completed checkpoint was, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointFigures {
    /// Its id.
    pub id: u64,
    /// Checkpoints completed by this run.
    pub completed: u64,
    /// When its manifest was written, ms since the Unix epoch.
    pub written_ms: i64,
    /// From this process's first cut of it to its manifest, ms.
    pub duration_ms: u64,
    /// The bytes of its parts.
    pub bytes: u64,
}

impl Metrics {
    /// The counter of `step` on `worker`, created on first use.
    pub fn counter(&self, step: &str, worker: usize) -> Arc<StepCounter> {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, counter)) = c.iter().find(|(s, w, _)| s == step && *w == worker) {
            return counter.clone();
        }
        let counter = Arc::new(StepCounter::default());
        c.push((step.to_string(), worker, counter.clone()));
        counter
    }

    /// Records a completed checkpoint.
    pub fn checkpoint_completed(&self, id: u64, written_ms: i64, duration_ms: u64, bytes: u64) {
        let mut c = self.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
        let completed = c.map_or(0, |f| f.completed) + 1;
        *c = Some(CheckpointFigures { id, completed, written_ms, duration_ms, bytes });
    }

    /// The last completed checkpoint, if any.
    pub fn last_checkpoint(&self) -> Option<CheckpointFigures> {
        *self.checkpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot of every counter, by step then worker.
    pub fn report(&self) -> Vec<StepReport> {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<StepReport> = c
            .iter()
            .map(|(step, worker, counter)| StepReport {
                step: step.clone(),
                worker: *worker,
                elements_in: counter.elements_in.load(Ordering::Relaxed),
                elements_out: counter.elements_out.load(Ordering::Relaxed),
                late_dropped: counter.late_dropped.load(Ordering::Relaxed)
                    + counter.late_dropped_before_shuffle.load(Ordering::Relaxed),
                waiting: counter.waiting.load(Ordering::Relaxed),
                watermark: Some(counter.watermark.load(Ordering::Relaxed)).filter(|w| *w != i64::MIN),
                splits: (counter.splits.lock().unwrap_or_else(|p| p.into_inner()).iter())
                    .map(|(m, split, v)| (m.to_string(), split.clone(), *v))
                    .collect(),
                input_watermark: Some(counter.input_watermark.load(Ordering::Relaxed)).filter(|w| *w != i64::MIN),
                busy: std::time::Duration::from_nanos(counter.busy_ns.load(Ordering::Relaxed)),
                state: StateSize {
                    panes: counter.panes.load(Ordering::Relaxed),
                    entries: counter.entries.load(Ordering::Relaxed),
                    bytes: counter.bytes.load(Ordering::Relaxed),
                },
                files_written: counter.files.load(Ordering::Relaxed),
                progress: *counter.progress.lock().unwrap_or_else(|p| p.into_inner()),
            })
            .collect();
        out.sort_by(|a, b| (&a.step, a.worker).cmp(&(&b.step, b.worker)));
        out
    }
}
