//! Event time: the time at which something happened, as opposed to when Riffle saw it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::ProcessingTime;

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
///
/// ```
/// use riffle_engine::{EventTime, ProcessingTime, WatermarkStrategy};
/// let strategy = WatermarkStrategy::bounded_out_of_orderness(50).with_idle_timeout(1_000);
/// let mut estimator = strategy.estimator();
/// estimator.observe(EventTime::from_millis(10_000), ProcessingTime::from_millis(0));
/// assert_eq!(estimator.watermark(ProcessingTime::from_millis(500)).0, EventTime::from_millis(9_950));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkStrategy {
    /// How far behind the greatest timestamp an element may be and still be on time.
    pub max_delay_ms: i64,
    /// After this long (processing time) with nothing read, the input is idle and stops
    /// holding the watermark back.
    pub idle_timeout_ms: Option<i64>,
}

impl WatermarkStrategy {
    /// The watermark trails the greatest timestamp seen by `max_delay_ms`, so elements at
    /// most that far out of order are on time (Flink's `forBoundedOutOfOrderness`).
    pub fn bounded_out_of_orderness(max_delay_ms: i64) -> Self {
        WatermarkStrategy { max_delay_ms, idle_timeout_ms: None }
    }

    /// An input (a partition, a whole reader) that has read nothing for `ms` of processing
    /// time is idle: instead of holding the watermark where its last element left it, its
    /// watermark follows the clock, at the processing time minus the allowed delay (as
    /// Beam's Kafka `CustomTimestampPolicyWithLimitedDelay` does), until it reads again.
    /// This is Flink's `withIdleness` for timely, where a capability cannot be left out of
    /// the minimum but can move forward.
    pub fn with_idle_timeout(self, ms: i64) -> Self {
        WatermarkStrategy { idle_timeout_ms: Some(ms.max(0)), ..self }
    }

    /// The watermark after seeing timestamps up to `max_seen`, ignoring idleness.
    pub fn watermark(&self, max_seen: EventTime) -> Watermark {
        if max_seen == EventTime::MIN { Watermark::MIN } else { Watermark(max_seen.plus_millis(-self.max_delay_ms)) }
    }

    /// A fresh estimator for one input.
    pub fn estimator(&self) -> WatermarkEstimator {
        WatermarkEstimator { strategy: *self, max_seen: EventTime::MIN, last_read: None, current: Watermark::MIN }
    }
}

/// The watermark of one input (a partition, a reader) under a [`WatermarkStrategy`]:
/// never goes back.
#[derive(Clone, Copy, Debug)]
pub struct WatermarkEstimator {
    strategy: WatermarkStrategy,
    max_seen: EventTime,
    last_read: Option<ProcessingTime>,
    current: Watermark,
}

impl WatermarkEstimator {
    /// An element with timestamp `t` was read at processing time `now`.
    pub fn observe(&mut self, t: EventTime, now: ProcessingTime) {
        self.max_seen = self.max_seen.max(t);
        self.last_read = Some(now);
    }

    /// The input has more to read (a backlog) at processing time `now`, though nothing was
    /// read just now: it is not idle. A reader that knows its lag calls this, so that a
    /// partition catching up on history never counts as idle and jumps to the clock.
    pub fn active(&mut self, now: ProcessingTime) {
        self.last_read = Some(now);
    }

    /// What a checkpoint keeps of the estimator: the greatest timestamp seen and the
    /// watermark reached, not when it last read (processing time does not carry across a
    /// restart; a restored input counts as having just been assigned).
    pub fn state(&self) -> EstimatorState {
        EstimatorState { max_seen: self.max_seen, watermark: self.current.0 }
    }

    /// This estimator, carried on from `state` (its strategy stays this one's): its
    /// watermark starts where the saved one was and never goes below it.
    pub fn restored(mut self, state: EstimatorState) -> Self {
        self.max_seen = self.max_seen.max(state.max_seen);
        self.current = self.current.max(Watermark(state.watermark));
        self
    }

    /// The watermark at processing time `now`.
    pub fn watermark(&mut self, now: ProcessingTime) -> Watermark {
        let mut w = self.strategy.watermark(self.max_seen);
        if let Some(idle) = self.strategy.idle_timeout_ms {
            let idle = self.last_read.is_none_or(|at| now.millis().saturating_sub(at.millis()) >= idle);
            if idle {
                w = w.max(Watermark(EventTime::from_millis(now.millis().saturating_sub(self.strategy.max_delay_ms))));
            }
        }
        self.current = self.current.max(w);
        self.current
    }
}

/// A [`WatermarkEstimator`]'s state as a source saves it in a checkpoint
/// ([`WatermarkEstimator::state`], [`WatermarkEstimator::restored`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EstimatorState {
    /// The greatest event time the input had read.
    pub max_seen: EventTime,
    /// The watermark it had reached (by its data or, idle, by the clock).
    pub watermark: EventTime,
}

impl EstimatorState {
    /// The state of an input that has read nothing.
    pub const FRESH: EstimatorState = EstimatorState { max_seen: EventTime::MIN, watermark: EventTime::MIN };

    /// The state that holds no input back further than any of `states` did: the least
    /// of each field. For an input restored from several saved ones (a reader's share at
    /// a new worker count), so that its watermark is never ahead of an element it will
    /// still read; `FRESH` when there are none.
    pub fn least(states: impl IntoIterator<Item = EstimatorState>) -> EstimatorState {
        states
            .into_iter()
            .reduce(|a, b| EstimatorState {
                max_seen: a.max_seen.min(b.max_seen),
                watermark: a.watermark.min(b.watermark),
            })
            .unwrap_or(EstimatorState::FRESH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_out_of_orderness_trails_the_greatest_timestamp() {
        let s = WatermarkStrategy::bounded_out_of_orderness(50);
        assert_eq!(s.watermark(EventTime::MIN), Watermark::MIN);
        assert_eq!(s.watermark(EventTime::from_millis(1_000)), Watermark(EventTime::from_millis(950)));
    }

    #[test]
    fn an_idle_input_follows_the_clock_and_a_busy_one_does_not() {
        let (et, pt) = (EventTime::from_millis, ProcessingTime::from_millis);
        let wm = |t| Watermark(et(t));
        let mut busy = WatermarkStrategy::bounded_out_of_orderness(100).estimator();
        let mut idle = WatermarkStrategy::bounded_out_of_orderness(100).with_idle_timeout(1_000).estimator();
        for e in [&mut busy, &mut idle] {
            e.observe(et(5_000), pt(10_000));
        }
        // Within the timeout both hold at the data: 5 000 - 100.
        assert_eq!(idle.watermark(pt(10_999)), wm(4_900));
        // Past it, the idle one moves with the clock: 11 000 - 100; the other stays.
        assert_eq!(idle.watermark(pt(11_000)), wm(10_900));
        assert_eq!(busy.watermark(pt(11_000)), wm(4_900));
        // Reading again: the clock no longer counts, but the watermark never goes back.
        idle.observe(et(6_000), pt(11_500));
        assert_eq!(idle.watermark(pt(11_600)), wm(10_900));
        // An input that never read anything is idle from the start.
        let mut never = WatermarkStrategy::bounded_out_of_orderness(0).with_idle_timeout(10).estimator();
        assert_eq!(never.watermark(pt(3)), wm(3));
    }
}
