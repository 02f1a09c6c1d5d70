//! Progress on the terminal: a bar with events per second, where the watermark is in event
//! time, row groups and bytes read, panes fired, files written and an ETA, drawn by
//! indicatif when stderr is a terminal. Otherwise a plain line every ten seconds, for
//! bounded jobs only (a live job's log is not flooded).
//!
//! It reads the job's [`JobView`], so a local cluster's launcher shows the job's total.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use riffle_engine::runtime::Phase;

use crate::status::{JobSnapshot, JobView};

/// How often the bar is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(200);
/// How often a plain progress line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(10);
/// Steps of the bar: the fraction done, in thousandths.
const STEPS: u64 = 1000;

/// Draws progress until dropped, then draws the end.
pub struct ProgressDisplay {
    /// Dropped to stop the thread at once (it waits on the channel, not in a sleep).
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl ProgressDisplay {
    /// Starts drawing `view`'s progress.
    pub fn start(view: Arc<JobView>) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let terminal = std::io::stderr().is_terminal();
        let thread = std::thread::Builder::new()
            .name("riffle:progress".into())
            .spawn(move || {
                let bar = terminal.then(|| {
                    let bar = ProgressBar::with_draw_target(Some(STEPS), ProgressDrawTarget::stderr_with_hz(5));
                    bar.set_style(style(true));
                    bar
                });
                let mut line_at = Instant::now();
                let mut bounded = None;
                let mut stopping = false;
                loop {
                    let snap = view.snapshot();
                    match &bar {
                        Some(bar) => draw(bar, &snap, &mut bounded),
                        None if snap.progress.bounded && (stopping || line_at.elapsed() >= LINE_EVERY) => {
                            line_at = Instant::now();
                            eprintln!("riffle: {}", line(&snap));
                        }
                        None => {}
                    }
                    if stopping {
                        if let Some(bar) = &bar {
                            bar.finish();
                            // indicatif leaves the cursor on the bar's line.
                            eprintln!();
                        }
                        break;
                    }
                    stopping = !matches!(stopped.recv_timeout(DRAW_EVERY), Err(RecvTimeoutError::Timeout));
                }
            })
            .expect("spawn the progress thread");
        ProgressDisplay { stop: Some(stop), thread: Some(thread) }
    }
}

fn style(bounded: bool) -> ProgressStyle {
    let template = if bounded {
        "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}%\n  {wide_msg}"
    } else {
        "{spinner} [{elapsed_precise}] {msg}"
    };
    ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> ")
}

fn draw(bar: &ProgressBar, snap: &JobSnapshot, bounded: &mut Option<bool>) {
    // A job is known to be bounded once a source reports progress.
    if *bounded != Some(snap.progress.bounded) {
        *bounded = Some(snap.progress.bounded);
        bar.set_style(style(snap.progress.bounded));
    }
    if let Some(f) = snap.progress.fraction {
        bar.set_position((f * STEPS as f64).round() as u64);
    }
    // The bar shows the share done: the message says the rest.
    bar.set_message(text(snap, false));
    bar.tick();
}

/// The progress as one line: what is known of rate, event time, input, output and ETA.
pub fn line(snap: &JobSnapshot) -> String {
    text(snap, true)
}

/// [`line`], with or without the share done.
fn text(snap: &JobSnapshot, share: bool) -> String {
    let p = &snap.progress;
    let mut parts = Vec::new();
    match p.phase {
        Some(Phase::History) => parts.push("replaying history".to_string()),
        Some(Phase::Live) => parts.push("live (history replayed)".to_string()),
        None => {}
    }
    if let Some(f) = p.fraction.filter(|_| share) {
        parts.push(format!("{:.0}%", f * 100.0));
    }
    match p.eta_s {
        Some(s) if s.is_finite() => parts.push(format!("ETA {}", duration(s))),
        _ => {}
    }
    parts.push(format!("{} ev/s", human(p.elements_per_s)));
    match (p.watermark_ms, p.event_time_end) {
        (Some(w), Some(end)) => parts.push(format!("event time {} of {}", at(w), at(end))),
        (Some(w), None) => parts.push(format!("event time {}", at(w))),
        _ => {}
    }
    if p.units_total > 0 {
        parts.push(format!("{}/{} row groups", p.units_done, p.units_total));
    }
    if p.bytes_total > 0 {
        parts.push(format!("{}/{}", bytes(p.bytes_done), bytes(p.bytes_total)));
    }
    parts.push(format!("{} panes", human(p.panes_fired as f64)));
    if p.files_written > 0 {
        parts.push(format!("{} files", p.files_written));
    }
    if snap.processes > 1 {
        parts.push(format!("{}/{} processes", snap.reporting, snap.processes));
    }
    parts.join(" · ")
}

/// An event time as `YYYY-MM-DD HH:MM` (UTC).
fn at(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map_or_else(|_| format!("{ms} ms"), |t| t.strftime("%Y-%m-%d %H:%M").to_string())
}

fn human(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.1}G", x / 1e9),
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

fn duration(s: f64) -> String {
    indicatif::HumanDuration(Duration::from_secs_f64(s.max(0.0))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Progress;

    #[test]
    fn the_line_says_where_event_time_is_and_what_is_left() {
        let snap = JobSnapshot {
            processes: 2,
            reporting: 2,
            progress: Progress {
                bounded: true,
                units_done: 12,
                units_total: 40,
                bytes_done: 3 << 20,
                bytes_total: 10 << 20,
                watermark_ms: Some(1_768_626_000_000),
                event_time_end: Some(1_769_817_600_000),
                fraction: Some(0.3),
                elements_per_s: 2_500_000.0,
                panes_fired: 1234,
                files_written: 5,
                eta_s: Some(21.0),
                ..Progress::default()
            },
            ..JobSnapshot::default()
        };
        let l = line(&snap);
        for part in [
            "30%",
            "2.5M ev/s",
            "event time 2026-01-17 05:00 of 2026-01-31 00:00",
            "12/40 row groups",
            "3.00 MiB/10.00 MiB",
            "1.2k panes",
            "5 files",
            "ETA 21 seconds",
            "2/2 processes",
        ] {
            assert!(l.contains(part), "{part:?} in {l:?}");
        }
    }

    #[test]
    fn a_hybrid_job_says_which_phase_it_is_in_before_the_rest() {
        let mut snap = JobSnapshot::default();
        snap.progress.phase = Some(Phase::History);
        snap.progress.fraction = Some(0.5);
        assert!(line(&snap).starts_with("replaying history · 50%"), "{}", line(&snap));
        assert!(text(&snap, false).starts_with("replaying history · "), "the bar's message keeps the phase");
        assert!(!text(&snap, false).contains("50%"), "the bar shows the share itself");
        snap.progress.phase = Some(Phase::Live);
        assert!(line(&snap).starts_with("live (history replayed)"), "{}", line(&snap));
    }
}
