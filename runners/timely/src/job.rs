//! A running job's shared state: the first failure, and whether workers have started.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use riffle_engine::Error;

/// Shared by every worker of one process: the first error stops them all.
#[derive(Default)]
pub struct JobState {
    failed: AtomicBool,
    started: AtomicBool,
    started_at: std::sync::OnceLock<(std::time::Instant, std::time::SystemTime)>,
    state: Mutex<Outcome>,
    changed: Condvar,
}

#[derive(Default)]
struct Outcome {
    error: Option<Error>,
    finished: bool,
}

impl JobState {
    /// Records a failure; the first one is the one reported.
    pub fn fail(&self, error: Error) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.error.is_none() {
            tracing::error!("{error}");
            s.error = Some(error);
        }
        self.failed.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Whether any worker has failed.
    #[inline]
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Marks that workers are running (the cluster is connected).
    pub fn mark_started(&self) {
        self.started_at.get_or_init(|| (std::time::Instant::now(), std::time::SystemTime::now()));
        self.started.store(true, Ordering::SeqCst);
    }

    /// When the first worker started: monotonic, and by the wall clock (to line up
    /// processes of one host).
    pub fn started_at(&self) -> Option<(std::time::Instant, std::time::SystemTime)> {
        self.started_at.get().copied()
    }

    /// Whether workers are running.
    pub fn has_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Marks that every worker returned.
    pub fn mark_finished(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).finished = true;
        self.changed.notify_all();
    }

    /// Waits until the job fails or every worker returned; `true` if it failed.
    pub fn wait(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.error.is_none() && !s.finished {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.error.is_some()
    }

    /// Takes the recorded error.
    pub fn take_error(&self) -> Option<Error> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).error.take()
    }
}
