//! Stopping a live job on request: SIGINT or SIGTERM (or [`request_stop`]) ends every
//! unbounded source, so the job drains as a bounded one does at its end: the watermark
//! goes to +infinity, every window in flight fires with what it has, the sinks flush and
//! the job returns (Flink's `stop --drain`). Bounded sources read on to their end.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Makes SIGINT and SIGTERM stop the job in this process cleanly instead of killing it.
/// Call it once, in a pipeline binary's `main`, before [`crate::run`].
///
/// # Errors
/// When a handler is already installed, naming the problem.
pub fn stop_on_signals() -> riffle_engine::Result<()> {
    ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            // A second signal: the user insists.
            std::process::exit(130);
        }
        eprintln!(
            "riffle: stopping: unbounded sources end, windows in flight fire, sinks flush (signal again to quit now)"
        );
    })
    .map_err(|e| riffle_engine::Error::Config(format!("cannot handle SIGINT/SIGTERM: {e}")))
}

/// Asks the job in this process to stop as a signal would.
pub fn request_stop() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Forgets a stop request, so that a process can run another job (tests that run several).
pub fn reset_stop() {
    REQUESTED.store(false, Ordering::SeqCst);
}
