//! Event time: the time at which something happened, as opposed to when Riffle saw it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An instant in event time, in milliseconds since the Unix epoch.
///
/// It is a newtype rather than an `i64` so that an event timestamp can never be mixed up
/// with a count, an offset or a processing-time reading. [`EventTime::MIN`] and
/// [`EventTime::MAX`] are sentinels for "before everything" and "after everything";
/// a watermark at `MAX` means the input is complete.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct EventTime(i64);

impl EventTime {
    /// Earlier than any real timestamp: the watermark of an input that has promised nothing yet.
    pub const MIN: EventTime = EventTime(i64::MIN);
    /// Later than any real timestamp: the watermark of a finished input.
    pub const MAX: EventTime = EventTime(i64::MAX);
    /// The last timestamp of the global window, one day before [`EventTime::MAX`] as in Beam,
    /// so that a pane emitted at the end of the global window still has a timestamp a
    /// downstream window function can assign.
    pub const END_OF_GLOBAL_WINDOW: EventTime = EventTime(i64::MAX - 86_400_000);

    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        EventTime(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// This instant moved by `delta` milliseconds, saturating at the sentinels.
    pub const fn plus_millis(self, delta: i64) -> Self {
        EventTime(self.0.saturating_add(delta))
    }
}

impl fmt::Debug for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EventTime::MIN => write!(f, "-inf"),
            EventTime::MAX => write!(f, "+inf"),
            EventTime::END_OF_GLOBAL_WINDOW => write!(f, "end-of-global-window"),
            EventTime(ms) => write!(f, "{ms}ms"),
        }
    }
}

/// "No more on-time elements with a timestamp before this will arrive at this input."
///
/// A separate type from [`EventTime`] because the two answer different questions: an
/// element *has* an event time, an input *is at* a watermark.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Watermark(pub EventTime);

impl Watermark {
    /// Nothing is known yet.
    pub const MIN: Watermark = Watermark(EventTime::MIN);
    /// The input is complete.
    pub const MAX: Watermark = Watermark(EventTime::MAX);

    /// Whether every element at or before `t` has been seen.
    pub fn is_past(self, t: EventTime) -> bool {
        self.0 > t
    }
}

/// How an unbounded source estimates its watermark from the timestamps it has seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatermarkStrategy {
    /// The watermark trails the greatest timestamp seen by `max_delay_ms`, so elements at
    /// most that far out of order are on time (Flink's `forBoundedOutOfOrderness`).
    BoundedOutOfOrderness {
        /// How far behind the greatest timestamp an element may be and still be on time.
        max_delay_ms: i64,
    },
}

impl WatermarkStrategy {
    /// The watermark after seeing timestamps up to `max_seen`.
    pub fn watermark(&self, max_seen: EventTime) -> Watermark {
        match *self {
            WatermarkStrategy::BoundedOutOfOrderness { max_delay_ms } => {
                if max_seen == EventTime::MIN {
                    Watermark::MIN
                } else {
                    Watermark(max_seen.plus_millis(-max_delay_ms))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_out_of_orderness_trails_the_greatest_timestamp() {
        let s = WatermarkStrategy::BoundedOutOfOrderness { max_delay_ms: 50 };
        assert_eq!(s.watermark(EventTime::MIN), Watermark::MIN);
        assert_eq!(s.watermark(EventTime::from_millis(1_000)), Watermark(EventTime::from_millis(950)));
    }
}
