//! The job's status as one view: every process's counters, gathered in one place and
//! summed per step, with rates, watermarks and progress. The terminal progress bar, the
//! web view and its JSON API all read a [`JobView`].
//!
//! Each process samples its own counters ([`ProcessStatus::sample`]). In a single process
//! the view reads them directly; in a cluster each process sends its sample, twice a
//! second, to the process that holds the view (the launcher of a local cluster, or
//! process 0 of a cluster across hosts when it serves the web view), over HTTP.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use riffle_engine::Graph;
use riffle_engine::runtime::Phase;
use serde::{Deserialize, Serialize};

use crate::metrics::{Metrics, StepReport};

/// How often a process samples its counters for the view.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// The window rates are measured over.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What one process reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessStatus {
    /// Its index.
    pub process: usize,
    /// When it sampled (ms since the Unix epoch).
    pub at_ms: i64,
    /// When its workers started (ms); `None` while the cluster forms.
    pub started_ms: Option<i64>,
    /// Whether its job has ended.
    pub finished: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Every step on every worker of the process.
    pub steps: Vec<StepReport>,
}

impl ProcessStatus {
    /// Samples `metrics`, process `process`'s counters.
    pub fn sample(metrics: &Metrics, process: usize, started_ms: Option<i64>) -> Self {
        ProcessStatus { process, at_ms: now_ms(), started_ms, finished: false, error: None, steps: metrics.report() }
    }
}

/// A step of the job graph, for drawing it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GraphNode {
    /// Its index in the graph (topological order).
    pub id: usize,
    /// Its name.
    pub name: String,
    /// The transform it came from.
    pub transform: String,
    /// source, pardo, exchange, group, flatten, side-pardo or sink.
    pub kind: String,
    /// The steps it reads.
    pub inputs: Vec<usize>,
}

/// One step, summed over every worker of every process.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepView {
    /// Its name.
    pub name: String,
    /// Its kind (see [`GraphNode::kind`]).
    pub kind: String,
    /// Elements read.
    pub elements_in: u64,
    /// Elements emitted.
    pub elements_out: u64,
    /// Elements read per second, over the last few seconds.
    pub in_per_s: f64,
    /// Elements emitted per second, over the last few seconds.
    pub out_per_s: f64,
    /// The least watermark over its workers (a source's own; another step's input), in
    /// ms since the Unix epoch; `None` before there is one or once the input is done.
    pub watermark_ms: Option<i64>,
    /// Whether its input (a source: its reading) is complete everywhere.
    pub done: bool,
    /// How far the watermark trails the wall clock, in ms (for a live job).
    pub watermark_lag_ms: Option<i64>,
    /// Seconds spent in its operators, over every worker.
    pub busy_s: f64,
    /// Its share of the workers' time since the start (0 to 1).
    pub busy_share: f64,
    /// Pending panes (groupings).
    pub panes: u64,
    /// State entries (groupings).
    pub state_entries: u64,
    /// Estimated state bytes (groupings).
    pub state_bytes: u64,
    /// Elements dropped as later than the allowed lateness.
    pub late_dropped: u64,
    /// Elements held for slower senders.
    pub waiting: u64,
    /// Files written (sinks).
    pub files_written: u64,
}

/// One split (a Kafka partition) of a source on one worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SplitView {
    /// The source step.
    pub step: String,
    /// The split's name (a partition number).
    pub split: String,
    /// The worker reading it.
    pub worker: usize,
    /// The metric ("lag": records behind the end).
    pub metric: String,
    /// Its value.
    pub value: i64,
}

/// How far the job's bounded sources have come, and what that means for the end.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Whether some source reports progress (a bounded one).
    pub bounded: bool,
    /// Units done (row groups) and in all.
    pub units_done: u64,
    /// Units dealt to every reader.
    pub units_total: u64,
    /// Bytes read.
    pub bytes_done: u64,
    /// Bytes dealt to every reader.
    pub bytes_total: u64,
    /// The least watermark over the sources (ms), `None` before there is one.
    pub watermark_ms: Option<i64>,
    /// The first watermark seen (ms): where event time started.
    pub event_time_start: Option<i64>,
    /// The latest event time in the input (ms), when the sources know it.
    pub event_time_end: Option<i64>,
    /// Done, from 0 to 1, when it can be said.
    pub fraction: Option<f64>,
    /// Elements read by the sources per second, over the last few seconds.
    pub elements_per_s: f64,
    /// Elements read by the sources so far.
    pub elements_read: u64,
    /// Panes fired: elements out of the groupings.
    pub panes_fired: u64,
    /// Files written by the sinks.
    pub files_written: u64,
    /// Seconds left at the pace so far, when it can be said.
    pub eta_s: Option<f64>,
    /// For a job reading history then a live source: `History` while some reader still
    /// replays its history, then `Live` (`"history"`, `"live"` in JSON).
    pub phase: Option<Phase>,
}

/// The whole job at one moment: what `/api/job` serves.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JobSnapshot {
    /// The program's name.
    pub job: String,
    /// "forming" (the cluster), "running", "finished" or "failed".
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Processes in the job.
    pub processes: usize,
    /// Processes that have reported.
    pub reporting: usize,
    /// Worker threads per process.
    pub workers_per_process: usize,
    /// When the workers started (ms since the Unix epoch).
    pub started_ms: Option<i64>,
    /// Now (ms since the Unix epoch).
    pub now_ms: i64,
    /// Seconds since the workers started.
    pub elapsed_s: f64,
    /// The job graph.
    pub graph: Vec<GraphNode>,
    /// Every step, in graph order.
    pub steps: Vec<StepView>,
    /// Every source's splits.
    pub splits: Vec<SplitView>,
    /// Progress of the bounded sources.
    pub progress: Progress,
}

/// Totals per step at one moment, for rates.
struct Totals {
    at_ms: i64,
    /// (in, out) per step.
    steps: BTreeMap<String, (u64, u64)>,
}

/// Gathers the processes' reports and answers with [`JobSnapshot`]s.
pub struct JobView {
    job: String,
    graph: Vec<GraphNode>,
    processes: usize,
    workers: usize,
    latest: Mutex<Latest>,
}

#[derive(Default)]
struct Latest {
    by_process: BTreeMap<usize, ProcessStatus>,
    history: VecDeque<Totals>,
    event_time_start: Option<i64>,
    /// The sources' least watermark when last seen finite: where event time got to.
    last_watermark: Option<i64>,
}

impl JobView {
    /// A view of `graph` run on `processes` processes of `workers` workers.
    pub fn new(graph: &Graph, processes: usize, workers: usize) -> Arc<Self> {
        let job = std::env::args()
            .next()
            .and_then(|a| std::path::Path::new(&a).file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "riffle".into());
        let graph = graph
            .nodes()
            .iter()
            .map(|n| GraphNode {
                id: n.id.0,
                name: n.name.clone(),
                transform: n.transform.clone(),
                kind: n.kind.label().into(),
                inputs: n.inputs.iter().map(|p| p.node.0).collect(),
            })
            .collect();
        Arc::new(JobView { job, graph, processes, workers, latest: Mutex::new(Latest::default()) })
    }

    /// Takes in a process's report.
    pub fn update(&self, status: ProcessStatus) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.by_process.insert(status.process, status);
        let mut steps: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for s in latest.by_process.values().flat_map(|p| &p.steps) {
            let t = steps.entry(s.step.clone()).or_default();
            t.0 += s.elements_in;
            t.1 += s.elements_out;
        }
        let at_ms = now_ms();
        latest.history.push_back(Totals { at_ms, steps });
        while latest.history.len() > 2
            && latest.history.front().is_some_and(|t| at_ms - t.at_ms > RATE_WINDOW.as_millis() as i64)
        {
            latest.history.pop_front();
        }
        let watermark = source_watermark(&latest.by_process, &self.graph);
        if latest.event_time_start.is_none() {
            latest.event_time_start = watermark;
        }
        latest.last_watermark = watermark.or(latest.last_watermark);
    }

    /// The job now.
    pub fn snapshot(&self) -> JobSnapshot {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let started_ms = latest.by_process.values().filter_map(|p| p.started_ms).min();
        let error = latest.by_process.values().find_map(|p| p.error.clone());
        let reporting = latest.by_process.len();
        let finished = reporting == self.processes && latest.by_process.values().all(|p| p.finished);
        // A finished job's clock stops at its last report.
        let ended = latest.by_process.values().map(|p| p.at_ms).max().filter(|_| finished || error.is_some());
        let elapsed_s = started_ms.map_or(0.0, |s| (ended.unwrap_or(now) - s).max(0) as f64 / 1e3);
        let state = match (&error, finished, started_ms) {
            (Some(_), _, _) => "failed",
            (None, true, _) => "finished",
            (None, false, None) => "forming",
            (None, false, Some(_)) => "running",
        };
        // Rates over the window the history covers.
        let rate = |step: &str, out: bool| -> f64 {
            let (Some(first), Some(last)) = (latest.history.front(), latest.history.back()) else { return 0.0 };
            let secs = (last.at_ms - first.at_ms) as f64 / 1e3;
            // Nothing reported lately (the job ended): nothing moves.
            let stale = now - last.at_ms > 4 * SAMPLE_EVERY.as_millis() as i64;
            if secs <= 0.0 || stale || finished {
                return 0.0;
            }
            let pick = |t: &Totals| t.steps.get(step).map_or(0, |v| if out { v.1 } else { v.0 });
            pick(last).saturating_sub(pick(first)) as f64 / secs
        };
        let samples: Vec<&StepReport> = latest.by_process.values().flat_map(|p| &p.steps).collect();
        let worker_secs = elapsed_s * (self.processes * self.workers) as f64;
        let steps: Vec<StepView> = self
            .graph
            .iter()
            .map(|node| {
                let mine: Vec<&&StepReport> = samples.iter().filter(|s| s.step == node.name).collect();
                let sum = |f: fn(&StepReport) -> u64| mine.iter().map(|s| f(s)).sum::<u64>();
                let marks: Vec<i64> = mine
                    .iter()
                    .filter_map(|s| if node.kind == "source" { s.watermark } else { s.input_watermark })
                    .collect();
                let done = !mine.is_empty() && marks.len() == mine.len() && marks.iter().all(|w| *w == i64::MAX);
                let watermark_ms = (marks.len() == mine.len() && !done)
                    .then(|| marks.iter().copied().filter(|w| *w != i64::MAX).min())
                    .flatten()
                    .filter(|w| *w > i64::MIN / 2);
                let busy_s = mine.iter().map(|s| s.busy.as_secs_f64()).sum::<f64>();
                StepView {
                    name: node.name.clone(),
                    kind: node.kind.clone(),
                    elements_in: sum(|s| s.elements_in),
                    elements_out: sum(|s| s.elements_out),
                    in_per_s: rate(&node.name, false),
                    out_per_s: rate(&node.name, true),
                    watermark_ms,
                    done,
                    watermark_lag_ms: watermark_ms.map(|w| (now - w).max(0)),
                    busy_s,
                    busy_share: if worker_secs > 0.0 { (busy_s / worker_secs).min(1.0) } else { 0.0 },
                    panes: sum(|s| s.state.panes),
                    state_entries: sum(|s| s.state.entries),
                    state_bytes: sum(|s| s.state.bytes),
                    late_dropped: sum(|s| s.late_dropped),
                    waiting: sum(|s| s.waiting),
                    files_written: sum(|s| s.files_written),
                }
            })
            .collect();
        let splits = samples
            .iter()
            .flat_map(|s| {
                s.splits.iter().map(|(metric, split, value)| SplitView {
                    step: s.step.clone(),
                    split: split.clone(),
                    worker: s.worker,
                    metric: metric.clone(),
                    value: *value,
                })
            })
            .collect();
        let progress = self.progress(&latest, &samples, &steps, elapsed_s, finished);
        JobSnapshot {
            job: self.job.clone(),
            state: state.into(),
            error,
            processes: self.processes,
            reporting,
            workers_per_process: self.workers,
            started_ms,
            now_ms: now,
            elapsed_s,
            graph: self.graph.clone(),
            steps,
            splits,
            progress,
        }
    }

    fn progress(
        &self,
        latest: &Latest,
        samples: &[&StepReport],
        steps: &[StepView],
        elapsed_s: f64,
        finished: bool,
    ) -> Progress {
        fn of<'a>(steps: &'a [StepView], k: &'static str) -> impl Iterator<Item = &'a StepView> {
            steps.iter().filter(move |s| s.kind == k)
        }
        let of_kind = |k: &'static str| of(steps, k);
        let mut p = Progress {
            watermark_ms: latest.last_watermark,
            event_time_start: latest.event_time_start,
            elements_per_s: of_kind("source").map(|s| s.out_per_s).sum(),
            elements_read: of_kind("source").map(|s| s.elements_out).sum(),
            panes_fired: of_kind("group").map(|s| s.elements_out).sum(),
            files_written: of_kind("sink").map(|s| s.files_written).sum(),
            ..Progress::default()
        };
        for r in samples.iter().filter_map(|s| s.progress) {
            p.bounded = true;
            p.units_done += r.units_done;
            p.units_total += r.units_total;
            p.bytes_done += r.bytes_done;
            p.bytes_total += r.bytes_total;
            p.event_time_end = p.event_time_end.max(r.event_time_end);
            // History while any hybrid reader still replays it; live once every one is.
            p.phase = match (p.phase, r.phase) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if finished {
            p.watermark_ms = p.event_time_end.or(p.watermark_ms);
            // Over the whole run, once it is over.
            p.elements_per_s = if elapsed_s > 0.0 { p.elements_read as f64 / elapsed_s } else { 0.0 };
        }
        // Done by bytes read, else by units, else by event time.
        let by_event_time = match (p.event_time_start, p.watermark_ms, p.event_time_end) {
            (Some(a), Some(w), Some(b)) if b > a => Some(((w - a) as f64 / (b - a) as f64).clamp(0.0, 1.0)),
            _ => None,
        };
        p.fraction = if finished {
            Some(1.0)
        } else if p.bytes_total > 0 {
            Some(p.bytes_done as f64 / p.bytes_total as f64)
        } else if p.units_total > 0 {
            Some(p.units_done as f64 / p.units_total as f64)
        } else {
            by_event_time
        };
        p.eta_s = match p.fraction {
            Some(f) if f >= 1.0 => Some(0.0),
            Some(f) if f > 0.0 && p.bounded => Some(elapsed_s * (1.0 - f) / f),
            _ => None,
        };
        p
    }
}

/// The least watermark of the sources that are still reading (ms), if every one has one.
fn source_watermark(by_process: &BTreeMap<usize, ProcessStatus>, graph: &[GraphNode]) -> Option<i64> {
    let sources: Vec<&str> = graph.iter().filter(|n| n.kind == "source").map(|n| n.name.as_str()).collect();
    let marks: Vec<i64> = by_process
        .values()
        .flat_map(|p| &p.steps)
        .filter(|s| sources.contains(&s.step.as_str()))
        .filter_map(|s| s.watermark)
        .filter(|w| *w != i64::MAX && *w > i64::MIN / 2)
        .collect();
    marks.into_iter().min()
}

/// Where a process's samples go: into the view it holds, or to the process holding it.
pub enum Deliver {
    /// This process holds the view.
    Local(Arc<JobView>),
    /// Another process does, at this URL (`http://HOST:PORT/api/push`).
    Remote(String),
}

/// Samples this process's counters twice a second and delivers them, until
/// [`Sampler::finish`] delivers the last one.
pub struct Sampler {
    /// Dropped to stop the thread at once (it waits on the channel, not in a sleep).
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    last: Box<dyn Fn(Option<String>) + Send>,
}

impl Sampler {
    /// Starts sampling `metrics` of process `process`, whose workers started at
    /// `started` (read at each sample: unknown while the cluster forms).
    pub fn start(
        metrics: Arc<Metrics>,
        process: usize,
        started: impl Fn() -> Option<i64> + Send + Sync + 'static,
        deliver: Deliver,
    ) -> Self {
        let agent = crate::server::push_agent();
        let send = Arc::new(move |finished: bool, error: Option<String>| {
            let mut status = ProcessStatus::sample(&metrics, process, started());
            status.finished = finished;
            status.error = error;
            match &deliver {
                Deliver::Local(view) => view.update(status),
                Deliver::Remote(url) => crate::server::push_status(&agent, url, &status),
            }
        });
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let sending = send.clone();
        let thread = std::thread::Builder::new()
            .name("riffle:status".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(SAMPLE_EVERY) {
                    sending(false, None);
                }
            })
            .expect("spawn the status thread");
        // The first sample goes out at once, so a view knows the process from the start.
        send(false, None);
        Sampler { stop: Some(stop), thread: Some(thread), last: Box::new(move |error| send(true, error)) }
    }

    /// Stops sampling and delivers the final sample: the job ended, with `error` if it failed.
    pub fn finish(mut self, error: Option<String>) {
        self.halt();
        (self.last)(error);
    }

    fn halt(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_engine::prelude::*;
    use riffle_engine::runtime::SourceProgress;

    fn sample(step: &str, worker: usize, out: u64, watermark: Option<i64>) -> StepReport {
        StepReport {
            step: step.into(),
            worker,
            elements_in: 0,
            elements_out: out,
            late_dropped: 0,
            waiting: 0,
            watermark,
            splits: Vec::new(),
            input_watermark: None,
            busy: std::time::Duration::ZERO,
            state: riffle_engine::runtime::StateSize::default(),
            files_written: 0,
            progress: None,
        }
    }

    #[test]
    fn the_view_sums_processes_and_reports_the_least_watermark_and_progress() {
        let p = Pipeline::new();
        let xs = p.create(vec![1u32, 2, 3]);
        riffle_connectors::memory::discard(&xs);
        let graph = p.graph();
        let source = graph.nodes()[0].name.clone();
        let view = JobView::new(&graph, 2, 1);
        assert_eq!(view.snapshot().state, "forming");
        let progress = |done, total| SourceProgress {
            units_done: done,
            units_total: total,
            bytes_done: 10 * done,
            bytes_total: 10 * total,
            event_time_end: Some(10_000),
            phase: None,
        };
        let mut a = ProcessStatus { process: 0, started_ms: Some(now_ms() - 2_000), ..ProcessStatus::default() };
        a.steps.push(StepReport { progress: Some(progress(1, 4)), ..sample(&source, 0, 100, Some(5_000)) });
        view.update(a.clone());
        let mut b = ProcessStatus { process: 1, started_ms: Some(now_ms() - 1_000), ..ProcessStatus::default() };
        b.steps.push(StepReport { progress: Some(progress(3, 4)), ..sample(&source, 1, 50, Some(3_000)) });
        view.update(b.clone());
        let s = view.snapshot();
        assert_eq!(s.state, "running");
        assert_eq!(s.reporting, 2);
        assert_eq!(s.steps[0].elements_out, 150);
        assert_eq!(s.steps[0].watermark_ms, Some(3_000), "the least over the workers");
        assert_eq!((s.progress.units_done, s.progress.units_total), (4, 8));
        assert_eq!(s.progress.fraction, Some(0.5), "by bytes: 40 of 80");
        let eta = s.progress.eta_s.expect("an ETA at half way");
        assert!((1.5..3.0).contains(&eta), "as long again as the 2 s so far: {eta}");
        for mut p in [a, b] {
            p.finished = true;
            view.update(p);
        }
        let s = view.snapshot();
        assert_eq!((s.state.as_str(), s.progress.fraction, s.progress.eta_s), ("finished", Some(1.0), Some(0.0)));
    }
}
