//! The job's metrics in Prometheus' text format, encoded by `prometheus-client` (the
//! Prometheus project's Rust client) from this process's counters at each scrape. They
//! are served at `http://ADDR/metrics` ([`crate::server`]).
//!
//! The counters are plain atomics the operators bump per batch; a scrape copies them into
//! a fresh registry, so the hot path never touches the client library.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::Metrics;
use crate::status::now_ms;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
    worker: String,
    process: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SplitLabels {
    step: String,
    worker: String,
    process: String,
    split: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    process: String,
}

type Gauges<L> = Family<L, Gauge>;
type Counters<L> = Family<L, Counter>;

/// What this process's metrics were at start, for liveness.
#[derive(Clone, Copy, Debug)]
pub struct ProcessInfo {
    /// The process's index.
    pub process: usize,
    /// Its worker threads.
    pub workers: usize,
    /// When it started (ms since the Unix epoch).
    pub started_ms: i64,
}

/// The metrics as Prometheus text exposition.
pub fn render(metrics: &Metrics, info: ProcessInfo) -> String {
    let mut registry = Registry::with_prefix("riffle");
    let process = info.process.to_string();
    let labels = |step: &str, worker: usize| StepLabels {
        step: step.to_string(),
        worker: worker.to_string(),
        process: process.clone(),
    };
    let elements_in = Counters::<StepLabels>::default();
    let elements_out = Counters::<StepLabels>::default();
    let late = Counters::<StepLabels>::default();
    let busy = Family::<StepLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    let waiting = Gauges::<StepLabels>::default();
    let watermark = Gauges::<StepLabels>::default();
    let lag = Gauges::<StepLabels>::default();
    let panes = Gauges::<StepLabels>::default();
    let entries = Gauges::<StepLabels>::default();
    let bytes = Gauges::<StepLabels>::default();
    let source_watermark = Gauges::<StepLabels>::default();
    let files = Gauges::<StepLabels>::default();
    let (read_bytes, total_bytes) = (Gauges::<StepLabels>::default(), Gauges::<StepLabels>::default());
    let (read_units, total_units) = (Gauges::<StepLabels>::default(), Gauges::<StepLabels>::default());
    let mut split_families: Vec<(String, Gauges<SplitLabels>)> = Vec::new();
    let now = now_ms();
    for s in metrics.report() {
        let l = labels(&s.step, s.worker);
        elements_in.get_or_create(&l).inc_by(s.elements_in);
        elements_out.get_or_create(&l).inc_by(s.elements_out);
        late.get_or_create(&l).inc_by(s.late_dropped);
        busy.get_or_create(&l).inc_by(s.busy.as_secs_f64());
        waiting.get_or_create(&l).set(s.waiting as i64);
        // A step's watermark: its input's (a source's: its own), while it is finite.
        if let Some(w) = s.input_watermark.or(s.watermark).filter(|w| *w != i64::MAX && *w > i64::MIN / 2) {
            watermark.get_or_create(&l).set(w);
            lag.get_or_create(&l).set((now - w).max(0));
        }
        if s.state.entries > 0 || s.state.panes > 0 {
            panes.get_or_create(&l).set(s.state.panes as i64);
            entries.get_or_create(&l).set(s.state.entries as i64);
            bytes.get_or_create(&l).set(s.state.bytes as i64);
        }
        if let Some(w) = s.watermark {
            source_watermark.get_or_create(&l).set(w);
        }
        if s.files_written > 0 {
            files.get_or_create(&l).set(s.files_written as i64);
        }
        if let Some(p) = s.progress {
            read_bytes.get_or_create(&l).set(p.bytes_done as i64);
            total_bytes.get_or_create(&l).set(p.bytes_total as i64);
            read_units.get_or_create(&l).set(p.units_done as i64);
            total_units.get_or_create(&l).set(p.units_total as i64);
        }
        for (metric, split, value) in s.splits {
            let family = match split_families.iter().position(|(m, _)| *m == metric) {
                Some(i) => &split_families[i].1,
                None => {
                    split_families.push((metric.clone(), Gauges::default()));
                    &split_families.last().expect("just pushed").1
                }
            };
            let sl =
                SplitLabels { step: s.step.clone(), worker: s.worker.to_string(), process: process.clone(), split };
            family.get_or_create(&sl).set(value);
        }
    }
    registry.register("step_elements_in", "Elements a step read, per worker", elements_in);
    registry.register("step_elements_out", "Elements a step emitted, per worker", elements_out);
    registry.register("step_late_dropped", "Elements a grouping dropped as later than its allowed lateness", late);
    registry.register("step_busy_seconds", "Time spent in a step's operators, per worker", busy);
    registry.register(
        "step_waiting_elements",
        "Elements a grouping holds until slower senders catch up (applied in watermark order)",
        waiting,
    );
    registry.register(
        "step_watermark_ms",
        "A step's input watermark (a source's own), event time in ms since the Unix epoch",
        watermark,
    );
    registry.register(
        "step_watermark_lag_ms",
        "How far a step's watermark trails the wall clock, in ms (alert on it for a live job)",
        lag,
    );
    registry.register("step_pending_panes", "Panes a grouping holds that have not fired yet", panes);
    registry.register("step_state_entries", "Accumulators a grouping holds (per key and pane)", entries);
    registry.register(
        "step_state_bytes",
        "Estimated bytes of a grouping's state (entries times key and accumulator size)",
        bytes,
    );
    registry.register(
        "source_watermark_ms",
        "A source's watermark (event time, ms since the Unix epoch), per worker",
        source_watermark,
    );
    registry.register("source_bytes_read", "Bytes a bounded source has read", read_bytes);
    registry.register("source_bytes_total", "Bytes a bounded source was dealt", total_bytes);
    registry.register("source_units_read", "Units (Parquet row groups) a bounded source has read", read_units);
    registry.register("source_units_total", "Units (Parquet row groups) a bounded source was dealt", total_units);
    for (metric, family) in split_families {
        let help = match metric.as_str() {
            "lag" => "A Kafka partition's lag: records between the reader's position and its end".to_string(),
            "offset" => "A Kafka partition's position: the next offset to read".to_string(),
            other => format!("A source's {other} per split (or per reader: split \"dealt\")"),
        };
        registry.register(format!("source_split_{metric}"), help, family);
    }
    registry.register("sink_files_written", "Files a sink has written (visible when the job ends)", files);
    let pl = ProcessLabels { process: process.clone() };
    if let Some(c) = metrics.last_checkpoint() {
        let family = |value: i64| {
            let g = Gauges::<ProcessLabels>::default();
            g.get_or_create(&pl).set(value);
            g
        };
        registry.register("checkpoint_last_id", "The id of the last completed checkpoint", family(c.id as i64));
        registry.register(
            "checkpoint_last_completed_seconds",
            "When the last checkpoint completed (its manifest was written), in seconds since the Unix epoch: \
             alert on time() minus this",
            family(c.written_ms / 1000),
        );
        registry.register(
            "checkpoint_last_duration_ms",
            "From process 0's first cut of the last checkpoint to its manifest",
            family(c.duration_ms as i64),
        );
        registry.register("checkpoint_last_bytes", "The bytes of the last checkpoint's parts", family(c.bytes as i64));
        registry.register("checkpoints_completed", "Checkpoints this run completed", family(c.completed as i64));
    }
    let up = Gauges::<ProcessLabels>::default();
    up.get_or_create(&pl).set(1);
    registry.register("process_up", "1 while the process runs its part of the job", up);
    let start = Gauges::<ProcessLabels>::default();
    start.get_or_create(&pl).set(info.started_ms / 1000);
    registry.register("process_start_time_seconds", "When the process started, in seconds since the Unix epoch", start);
    let workers = Gauges::<ProcessLabels>::default();
    workers.get_or_create(&pl).set(info.workers as i64);
    registry.register("process_workers", "Worker threads in the process", workers);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encoding into a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_engine::runtime::{SourceProgress, StateSize};

    #[test]
    fn the_exposition_has_counters_gauges_and_liveness() {
        let metrics = Metrics::default();
        let c = metrics.counter("Sums", 1);
        c.add_in(5);
        c.set_waiting(7);
        c.set_input_watermark(now_ms() - 2_000);
        c.set_state(StateSize { panes: 2, entries: 30, bytes: 960 });
        let info = ProcessInfo { process: 0, workers: 2, started_ms: 1_767_225_600_000 };
        let text = render(&metrics, info);
        assert!(text.contains("# TYPE riffle_step_elements_in counter"), "{text}");
        assert!(text.contains("riffle_step_elements_in_total{step=\"Sums\",worker=\"1\",process=\"0\"} 5"), "{text}");
        assert!(text.contains("# TYPE riffle_step_waiting_elements gauge"), "{text}");
        assert!(text.contains("riffle_step_waiting_elements{step=\"Sums\",worker=\"1\",process=\"0\"} 7"), "{text}");
        assert!(text.contains("riffle_step_state_bytes{step=\"Sums\",worker=\"1\",process=\"0\"} 960"), "{text}");
        let lag = text
            .lines()
            .find_map(|l| l.strip_prefix("riffle_step_watermark_lag_ms{step=\"Sums\",worker=\"1\",process=\"0\"} "))
            .and_then(|v| v.parse::<i64>().ok())
            .expect("a lag gauge");
        assert!((2_000..60_000).contains(&lag), "{lag}");
        assert!(text.contains("riffle_process_up{process=\"0\"} 1"), "{text}");
        assert!(text.contains("riffle_process_start_time_seconds{process=\"0\"} 1767225600"), "{text}");
        // A grouping has no source watermark; a source has one, its splits' gauges and progress.
        assert!(!text.contains("riffle_source_watermark_ms{step=\"Sums\""), "{text}");
        let source = metrics.counter("ReadKafka", 0);
        source.set_watermark(1_767_225_600_000);
        source.set_split_gauges(vec![("lag", "3".into(), 42), ("lag", "7".into(), 0)]);
        source.set_progress(Some(SourceProgress { bytes_done: 10, bytes_total: 40, ..SourceProgress::default() }));
        let text = render(&metrics, ProcessInfo { process: 1, ..info });
        assert!(text.contains("# TYPE riffle_source_watermark_ms gauge"), "{text}");
        assert!(
            text.contains("riffle_source_watermark_ms{step=\"ReadKafka\",worker=\"0\",process=\"1\"} 1767225600000"),
            "{text}"
        );
        assert!(text.contains("# TYPE riffle_source_split_lag gauge"), "{text}");
        assert!(
            text.contains("riffle_source_split_lag{step=\"ReadKafka\",worker=\"0\",process=\"1\",split=\"3\"} 42"),
            "{text}"
        );
        assert!(text.contains("riffle_source_bytes_total{step=\"ReadKafka\",worker=\"0\",process=\"1\"} 40"), "{text}");
    }
}
