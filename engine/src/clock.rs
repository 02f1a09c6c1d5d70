//! Processing time: the wall clock, read in one place.
//!
//! Every read of the wall clock that can change what a pipeline outputs (processing-time
//! triggers, idle sources) goes through a [`Clock`]: the system clock when a job runs
//! live, a [`ManualClock`] when a [`crate::TestStream`] scripts processing time, so that
//! tests of processing-time behaviour are deterministic.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// An instant in processing time, in milliseconds since the Unix epoch (for the system
/// clock) or since the start of a test (for a manual clock).
///
/// A different type from [`crate::EventTime`]: the two clocks are never comparable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct ProcessingTime(i64);

impl ProcessingTime {
    /// The instant `millis` milliseconds after the clock's origin.
    pub const fn from_millis(millis: i64) -> Self {
        ProcessingTime(millis)
    }

    /// Milliseconds since the clock's origin.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// This instant moved by `delta` milliseconds, saturating.
    pub const fn plus_millis(self, delta: i64) -> Self {
        ProcessingTime(self.0.saturating_add(delta))
    }
}

impl fmt::Debug for ProcessingTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms (processing)", self.0)
    }
}

/// The source of processing time for one process of a job.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> ProcessingTime;
    /// Moves a manual clock forward to `t` (never back). The system clock cannot be moved:
    /// it returns false.
    fn advance_to(&self, t: ProcessingTime) -> bool;
    /// Whether a script moves this clock ([`crate::TestStream`]), between epochs, rather
    /// than the wall.
    fn is_scripted(&self) -> bool {
        false
    }
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> ProcessingTime {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        ProcessingTime(since.as_millis() as i64)
    }
    fn advance_to(&self, _t: ProcessingTime) -> bool {
        false
    }
}

/// A clock that moves only when told to: processing time in tests.
///
/// ```
/// use riffle_engine::clock::{Clock, ManualClock, ProcessingTime};
/// let clock = ManualClock::new();
/// assert_eq!(clock.now(), ProcessingTime::from_millis(0));
/// clock.advance_to(ProcessingTime::from_millis(60_000));
/// clock.advance_to(ProcessingTime::from_millis(5)); // never back
/// assert_eq!(clock.now().millis(), 60_000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at 0.
    pub fn new() -> Self {
        ManualClock::default()
    }
}

impl Clock for ManualClock {
    fn is_scripted(&self) -> bool {
        true
    }
    fn now(&self) -> ProcessingTime {
        ProcessingTime(self.0.load(Ordering::Acquire))
    }
    fn advance_to(&self, t: ProcessingTime) -> bool {
        self.0.fetch_max(t.0, Ordering::AcqRel);
        true
    }
}
