//! Serves the job's metrics in Prometheus' text format at `http://ADDR/metrics`.
//!
//! A plain thread and `std`'s TCP listener are enough for a scrape every few seconds; it
//! answers every request with the current counters and stops when the job ends.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use riffle_engine::{Error, Result};

use crate::metrics::Metrics;

/// Stops the server when dropped.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The metrics as Prometheus text exposition.
pub fn render(metrics: &Metrics, process: usize) -> String {
    let mut out = String::new();
    let report = metrics.report();
    for (name, help, kind, value) in [
        ("riffle_step_elements_in_total", "Elements a step read, per worker.", "counter", 0),
        ("riffle_step_elements_out_total", "Elements a step emitted, per worker.", "counter", 1),
        (
            "riffle_step_late_dropped_total",
            "Elements a grouping dropped as later than its allowed lateness.",
            "counter",
            2,
        ),
        (
            "riffle_step_waiting_elements",
            "Elements a grouping holds until slower senders catch up (applied in watermark order).",
            "gauge",
            3,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in &report {
            let v = [s.elements_in, s.elements_out, s.late_dropped, s.waiting][value];
            let step = s.step.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{name}{{step=\"{step}\",worker=\"{}\",process=\"{process}\"}} {v}", s.worker);
        }
    }
    let name = "riffle_source_watermark_ms";
    let _ = writeln!(out, "# HELP {name} A source's watermark (event time, ms since the Unix epoch), per worker.");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for s in report.iter().filter(|s| s.watermark.is_some()) {
        let step = s.step.replace('\\', "\\\\").replace('"', "\\\"");
        let v = s.watermark.unwrap_or_default();
        let _ = writeln!(out, "{name}{{step=\"{step}\",worker=\"{}\",process=\"{process}\"}} {v}", s.worker);
    }
    let mut metrics: Vec<&str> = report.iter().flat_map(|s| s.splits.iter().map(|g| g.0)).collect();
    metrics.sort_unstable();
    metrics.dedup();
    for metric in metrics {
        let name = format!("riffle_source_split_{metric}");
        let _ = writeln!(
            out,
            "# HELP {name} A source's {metric} per split (a Kafka partition's lag: records behind its end)."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for s in &report {
            let step = s.step.replace('\\', "\\\\").replace('"', "\\\"");
            for (_, split, v) in s.splits.iter().filter(|g| g.0 == metric) {
                let _ = writeln!(
                    out,
                    "{name}{{step=\"{step}\",worker=\"{}\",process=\"{process}\",split=\"{split}\"}} {v}",
                    s.worker
                );
            }
        }
    }
    out
}

/// Starts serving on `addr`.
///
/// # Errors
/// The address cannot be bound, naming it.
pub fn serve(addr: &str, metrics: Arc<Metrics>, process: usize) -> Result<MetricsServer> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::Config(format!("cannot serve metrics on {addr}: {e}; pick another --metrics-addr")))?;
    listener.set_nonblocking(true).map_err(|e| Error::Config(format!("metrics listener on {addr}: {e}")))?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("riffle:metrics".into())
        .spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut request = [0u8; 1024];
                        let n = stream.read(&mut request).unwrap_or(0);
                        let path_ok = request[..n].starts_with(b"GET /metrics");
                        let (status, body) = if path_ok {
                            ("200 OK", render(&metrics, process))
                        } else {
                            ("404 Not Found", "metrics are at /metrics\n".to_string())
                        };
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
        .map_err(|e| Error::Internal(format!("cannot start the metrics thread: {e}")))?;
    Ok(MetricsServer { stop, thread: Some(thread) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_counters_and_the_waiting_gauge() {
        let metrics = Metrics::default();
        let c = metrics.counter("Sums", 1);
        c.add_in(5);
        c.set_waiting(7);
        let text = render(&metrics, 0);
        assert!(text.contains("# TYPE riffle_step_elements_in_total counter"), "{text}");
        assert!(text.contains("riffle_step_elements_in_total{step=\"Sums\",worker=\"1\",process=\"0\"} 5"), "{text}");
        assert!(text.contains("# TYPE riffle_step_waiting_elements gauge"), "{text}");
        assert!(text.contains("riffle_step_waiting_elements{step=\"Sums\",worker=\"1\",process=\"0\"} 7"), "{text}");
        // A grouping has no watermark gauge; a source has one, and its splits' gauges.
        assert!(!text.contains("riffle_source_watermark_ms{step=\"Sums\""), "{text}");
        let source = metrics.counter("ReadKafka", 0);
        source.set_watermark(1_767_225_600_000);
        source.set_split_gauges(vec![("lag", "3".into(), 42), ("lag", "7".into(), 0)]);
        let text = render(&metrics, 1);
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
    }
}
