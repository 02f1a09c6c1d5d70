//! How Riffle's time maps onto timely's (DESIGN.md section 3).
//!
//! A timely timestamp is [`Time`]: an epoch and an event time, ordered as a product.
//! Timely's progress tracking already computes, across threads and processes, the least
//! time anything upstream can still produce: its event-time coordinate *is* the
//! watermark, so Riffle writes no watermark protocol of its own. The epoch coordinate is
//! for checkpoints (an operator whose frontier passed epoch `e` has seen all of it) and,
//! until they land, for pacing and processing time: a source moves to the next epoch
//! every 16 batches, so a bounded source's batches have distinct times to count, and at
//! a `TestStream`'s processing-time barriers (ADR 0001's update). Operators move what they
//! hold forward in epoch to the least epoch their input can still bring.
//!
//! It is Riffle's own type rather than timely's `Product<u64, i64>` because a top-level
//! dataflow's time must refine `()`, which `Product` does not, and because named fields
//! (`epoch`, `event`) read better than `outer`/`inner` in every operator.

use riffle_engine::{EventTime, Watermark};
use serde::{Deserialize, Serialize};
use timely::order::PartialOrder;
use timely::progress::frontier::MutableAntichain;
use timely::progress::timestamp::{PathSummary, Refines, Timestamp};

/// Riffle's timely timestamp: (epoch, event-time watermark in milliseconds), ordered as a
/// product: `a <= b` when both coordinates are.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize)]
pub struct Time {
    /// The checkpoint epoch.
    pub epoch: u64,
    /// Event time in milliseconds: a source's watermark, a pane's output timestamp.
    pub event: i64,
}

impl Time {
    /// The time at `epoch` and event time `t`.
    pub fn new(epoch: u64, t: EventTime) -> Self {
        Time { epoch, event: t.millis() }
    }
}

impl PartialOrder for Time {
    #[inline]
    fn less_equal(&self, other: &Self) -> bool {
        self.epoch <= other.epoch && self.event <= other.event
    }
}

/// The only path summary a Riffle dataflow needs: it has no loops, so every path leaves
/// time as it is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize)]
pub struct Unchanged;

impl PartialOrder for Unchanged {
    fn less_equal(&self, _other: &Self) -> bool {
        true
    }
}

impl PathSummary<Time> for Unchanged {
    fn results_in(&self, src: &Time) -> Option<Time> {
        Some(*src)
    }
    fn followed_by(&self, _other: &Self) -> Option<Self> {
        Some(Unchanged)
    }
}

impl Timestamp for Time {
    type Summary = Unchanged;
    fn minimum() -> Self {
        Time { epoch: 0, event: i64::MIN }
    }
}

impl Refines<()> for Time {
    fn to_inner(_outer: ()) -> Self {
        Time::minimum()
    }
    fn to_outer(self) {}
    fn summarize(_path: Unchanged) {}
}

/// The watermark an input frontier implies: the least event-time coordinate over the
/// frontier's elements, or +infinity when the frontier is empty (the input is complete).
pub fn watermark(frontier: &MutableAntichain<Time>) -> Watermark {
    frontier.frontier().iter().map(|t| t.event).min().map_or(Watermark::MAX, |ms| Watermark(EventTime::from_millis(ms)))
}

/// The watermark a message was sent at: the least event time of its stamp. Deterministic,
/// and never ahead of the receiving input's frontier while the message is in flight, so
/// lateness is judged against it (see `docs/semantics.md`).
pub fn stamp_watermark(stamp: &timely::progress::Stamp<Time>) -> Watermark {
    Watermark(EventTime::from_millis(stamp.iter().map(|t| t.event).min().unwrap_or(i64::MIN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_order() {
        let t = |epoch, event| Time { epoch, event };
        assert!(t(0, 5).less_equal(&t(1, 5)));
        assert!(t(0, 5).less_equal(&t(0, 6)));
        assert!(!t(1, 5).less_equal(&t(2, 4)));
        assert!(!t(2, 4).less_equal(&t(1, 5)));
        assert!(Time::minimum().less_equal(&t(0, i64::MIN)));
    }
}
