//! Stopping a live job on request: SIGINT or SIGTERM (or [`request_stop`]) ends every
//! unbounded source, so the job drains as a bounded one does at its end: the watermark
//! goes to +infinity, every window in flight fires with what it has, the sinks flush and
//! the job returns (Flink's `stop --drain`). Bounded sources read on to their end.
//!
//! A job that takes checkpoints stops at one instead (Flink's stop with a savepoint):
//! sources stop reading and cut at once, and once a checkpoint is complete the job ends
//! without firing what is in flight; run again, it resumes from that checkpoint, so
//! windows open at the stop fire once, whole.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The job in this process takes checkpoints: a stop ends it at the next one.
static CHECKPOINTING: AtomicBool = AtomicBool::new(false);
/// A checkpoint was completed after a stop was asked for: the job ends now.
static STOPPED_AT_CHECKPOINT: AtomicBool = AtomicBool::new(false);

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
        if CHECKPOINTING.load(Ordering::SeqCst) {
            eprintln!("riffle: stopping at the next checkpoint; a run with the same --checkpoint-dir resumes from it");
        } else {
            eprintln!(
                "riffle: stopping: unbounded sources end, windows in flight fire, sinks flush (signal again to quit now)"
            );
        }
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
    STOPPED_AT_CHECKPOINT.store(false, Ordering::SeqCst);
}

/// Says whether the job in this process takes checkpoints (a stop then ends it at one).
pub(crate) fn set_checkpointing(on: bool) {
    CHECKPOINTING.store(on, Ordering::SeqCst);
}

/// Whether the job in this process takes checkpoints.
pub(crate) fn checkpointing() -> bool {
    CHECKPOINTING.load(Ordering::SeqCst)
}

/// Marks that a checkpoint completed after a stop was asked for.
pub(crate) fn mark_stopped_at_checkpoint() {
    STOPPED_AT_CHECKPOINT.store(true, Ordering::SeqCst);
}

/// Whether the job stopped at a checkpoint: its workers end without draining.
pub fn stopped_at_checkpoint() -> bool {
    STOPPED_AT_CHECKPOINT.load(Ordering::Relaxed)
}
