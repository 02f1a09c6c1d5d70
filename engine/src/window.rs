//! Windows: the finite slices of event time that grouping operates within.

use serde::{Deserialize, Serialize};

use crate::time::EventTime;

/// A window an element belongs to.
///
/// Grouping and combining happen per key *and window*; a window's result is emitted once
/// the watermark passes [`Window::max_timestamp`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Window {
    /// The single window spanning all of time; the default.
    Global,
    /// The half-open interval `[start, end)` of event time.
    Interval {
        /// The first instant in the window.
        start: EventTime,
        /// The first instant after the window.
        end: EventTime,
    },
}

impl Window {
    /// The latest timestamp an element of this window can have; a window's on-time pane
    /// fires once the watermark passes it.
    pub fn max_timestamp(&self) -> EventTime {
        match self {
            Window::Global => EventTime::END_OF_GLOBAL_WINDOW,
            Window::Interval { end, .. } => end.plus_millis(-1),
        }
    }
}

/// Assigns elements to windows by their timestamps (Beam's `WindowFn`).
///
/// Merging window functions (sessions) arrive with the windowing issue; this trait is the
/// non-merging part, and is all that [`crate::PCollection::window_into`] needs.
pub trait WindowFn: Send + Sync + 'static {
    /// The windows an element with timestamp `t` belongs to, pushed into `into`.
    fn assign(&self, t: EventTime, into: &mut Vec<Window>);
    /// A short human description for `explain`.
    fn describe(&self) -> String;
    /// Whether this is the global window function (validation treats it specially).
    fn is_global(&self) -> bool {
        false
    }
    /// Whether windows of one key merge once assigned (sessions do).
    fn is_merging(&self) -> bool {
        false
    }
    /// For a merging function: given one key's windows, the merges to make, each as the
    /// windows merged and the window they become. Windows not named stay as they are.
    fn merge(&self, _windows: &[Window]) -> Vec<(Vec<Window>, Window)> {
        Vec::new()
    }
}

/// Windows of activity per key, separated by gaps of at least `gap` (Beam's `Sessions`).
///
/// Each element starts as the window `[t, t + gap)`; a key's windows that overlap merge
/// into their span. Windows that only touch (`[0, 10)` and `[10, 20)`) do not merge, as in
/// Beam, whose interval windows are disjoint when one ends where the other starts.
///
/// ```
/// use riffle_engine::prelude::*;
/// let mut out = riffle_timely::testing::run_bounded_windowed(|p| {
///     p.create_timestamped(vec![('a', EventTime::from_millis(0)), ('a', EventTime::from_millis(5)), ('a', EventTime::from_millis(30))])
///         .map(|k| (k, 1u64))
///         .window_into(Sessions::with_gap_millis(10))
///         .combine_per_key(Sum::new())
/// });
/// out.sort_by_key(|wv| wv.timestamp);
/// let ms = EventTime::from_millis;
/// assert_eq!(out[0].value, ('a', 2));
/// assert_eq!(out[0].window, Window::Interval { start: ms(0), end: ms(15) });
/// assert_eq!(out[1].value, ('a', 1));
/// assert_eq!(out[1].window, Window::Interval { start: ms(30), end: ms(40) });
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Sessions {
    gap_ms: i64,
}

impl Sessions {
    /// Sessions closed by `gap_ms` of inactivity.
    ///
    /// # Panics
    /// If `gap_ms` is not positive.
    pub fn with_gap_millis(gap_ms: i64) -> Self {
        assert!(gap_ms > 0, "Sessions gap must be positive, got {gap_ms}");
        Sessions { gap_ms }
    }
}

impl WindowFn for Sessions {
    fn assign(&self, t: EventTime, into: &mut Vec<Window>) {
        into.push(Window::Interval { start: t, end: t.plus_millis(self.gap_ms) });
    }
    fn describe(&self) -> String {
        format!("Sessions(gap {}ms)", self.gap_ms)
    }
    fn is_merging(&self) -> bool {
        true
    }
    fn merge(&self, windows: &[Window]) -> Vec<(Vec<Window>, Window)> {
        merge_overlapping(windows)
    }
}

/// Merges overlapping interval windows into their spans (Beam's
/// `MergeOverlappingIntervalWindows`); the building block of merging window functions.
pub fn merge_overlapping(windows: &[Window]) -> Vec<(Vec<Window>, Window)> {
    let mut spans: Vec<(EventTime, EventTime, Window)> = windows
        .iter()
        .filter_map(|w| match *w {
            Window::Interval { start, end } => Some((start, end, *w)),
            Window::Global => None,
        })
        .collect();
    spans.sort();
    let mut merges = Vec::new();
    let mut group: Vec<Window> = Vec::new();
    let (mut start, mut end) = (EventTime::MIN, EventTime::MIN);
    let mut flush = |group: &mut Vec<Window>, start, end| {
        if group.len() > 1 {
            merges.push((std::mem::take(group), Window::Interval { start, end }));
        }
        group.clear();
    };
    for (s, e, w) in spans {
        if !group.is_empty() && s < end {
            end = end.max(e);
        } else {
            flush(&mut group, start, end);
            (start, end) = (s, e);
        }
        group.push(w);
    }
    flush(&mut group, start, end);
    merges
}

/// Every element in the one global window.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalWindows;

impl WindowFn for GlobalWindows {
    fn assign(&self, _t: EventTime, into: &mut Vec<Window>) {
        into.push(Window::Global);
    }
    fn describe(&self) -> String {
        "GlobalWindows".into()
    }
    fn is_global(&self) -> bool {
        true
    }
}

/// Tumbling windows of a fixed size, aligned to the epoch plus an offset.
#[derive(Clone, Copy, Debug)]
pub struct FixedWindows {
    size_ms: i64,
    offset_ms: i64,
}

impl FixedWindows {
    /// Windows `[k*size, (k+1)*size)` for every integer `k`.
    ///
    /// # Panics
    /// If `size_ms` is not positive.
    pub fn of_millis(size_ms: i64) -> Self {
        assert!(size_ms > 0, "FixedWindows size must be positive, got {size_ms}");
        FixedWindows { size_ms, offset_ms: 0 }
    }

    /// Shifts every window boundary by `offset_ms` (taken modulo the size).
    pub fn with_offset_millis(mut self, offset_ms: i64) -> Self {
        self.offset_ms = offset_ms.rem_euclid(self.size_ms);
        self
    }
}

impl WindowFn for FixedWindows {
    fn assign(&self, t: EventTime, into: &mut Vec<Window>) {
        let ms = t.millis();
        let start = ms - (ms - self.offset_ms).rem_euclid(self.size_ms);
        into.push(Window::Interval {
            start: EventTime::from_millis(start),
            end: EventTime::from_millis(start.saturating_add(self.size_ms)),
        });
    }
    fn describe(&self) -> String {
        format!("FixedWindows({}ms, offset {}ms)", self.size_ms, self.offset_ms)
    }
}

/// Overlapping windows of a fixed size starting every `period` (Beam's `SlidingWindows`):
/// an element belongs to `size / period` windows (rounded up).
///
/// ```
/// use riffle_engine::prelude::*;
/// // Each element counts in every 30 ms window that holds it, one starting every 10 ms.
/// let mut out = riffle_timely::testing::run_bounded(|p| {
///     p.create_timestamped(vec![('k', EventTime::from_millis(25))])
///         .map(|k| (k, 1u64))
///         .window_into(SlidingWindows::of_millis(30, 10))
///         .combine_per_key(Count::new())
/// });
/// assert_eq!(out.len(), 3);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SlidingWindows {
    size_ms: i64,
    period_ms: i64,
    offset_ms: i64,
}

impl SlidingWindows {
    /// Windows `[k*period, k*period + size)` for every integer `k`.
    ///
    /// # Panics
    /// If `size_ms` or `period_ms` is not positive.
    pub fn of_millis(size_ms: i64, period_ms: i64) -> Self {
        assert!(
            size_ms > 0 && period_ms > 0,
            "SlidingWindows size and period must be positive, got {size_ms} and {period_ms}"
        );
        SlidingWindows { size_ms, period_ms, offset_ms: 0 }
    }

    /// Shifts every window start by `offset_ms` (taken modulo the period).
    pub fn with_offset_millis(mut self, offset_ms: i64) -> Self {
        self.offset_ms = offset_ms.rem_euclid(self.period_ms);
        self
    }
}

impl WindowFn for SlidingWindows {
    fn assign(&self, t: EventTime, into: &mut Vec<Window>) {
        let ms = t.millis();
        // The last window starting at or before `t`, then earlier ones while they still
        // contain `t`; pushed earliest first, as Beam lists them.
        let last_start = ms - (ms - self.offset_ms).rem_euclid(self.period_ms);
        let first = into.len();
        let mut start = last_start;
        while start > ms - self.size_ms {
            into.push(Window::Interval {
                start: EventTime::from_millis(start),
                end: EventTime::from_millis(start.saturating_add(self.size_ms)),
            });
            start -= self.period_ms;
        }
        into[first..].reverse();
    }
    fn describe(&self) -> String {
        format!("SlidingWindows({}ms every {}ms, offset {}ms)", self.size_ms, self.period_ms, self.offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(w: &impl WindowFn, t: i64) -> Window {
        let mut v = Vec::new();
        w.assign(EventTime::from_millis(t), &mut v);
        assert_eq!(v.len(), 1);
        v[0]
    }

    fn interval(start: i64, end: i64) -> Window {
        Window::Interval { start: EventTime::from_millis(start), end: EventTime::from_millis(end) }
    }

    #[test]
    fn fixed_windows_align_to_size_and_offset() {
        let w = FixedWindows::of_millis(10);
        assert_eq!(assign(&w, 0), interval(0, 10));
        assert_eq!(assign(&w, 9), interval(0, 10));
        assert_eq!(assign(&w, 10), interval(10, 20));
        assert_eq!(assign(&w, -1), interval(-10, 0));
        let w = w.with_offset_millis(3);
        assert_eq!(assign(&w, 2), interval(-7, 3));
        assert_eq!(assign(&w, 3), interval(3, 13));
    }

    #[test]
    fn sliding_windows_cover_each_instant_size_over_period_times() {
        let w = SlidingWindows::of_millis(30, 10);
        let mut got = Vec::new();
        w.assign(EventTime::from_millis(25), &mut got);
        assert_eq!(got, [interval(0, 30), interval(10, 40), interval(20, 50)]);
        got.clear();
        w.assign(EventTime::from_millis(-1), &mut got);
        assert_eq!(got, [interval(-30, 0), interval(-20, 10), interval(-10, 20)]);
        // A period longer than the size leaves gaps: some instants are in no window.
        let gappy = SlidingWindows::of_millis(5, 10);
        got.clear();
        gappy.assign(EventTime::from_millis(7), &mut got);
        assert!(got.is_empty());
        gappy.assign(EventTime::from_millis(12), &mut got);
        assert_eq!(got, [interval(10, 15)]);
        // Offsets shift every start.
        got.clear();
        SlidingWindows::of_millis(20, 10).with_offset_millis(3).assign(EventTime::from_millis(14), &mut got);
        assert_eq!(got, [interval(3, 23), interval(13, 33)]);
    }

    #[test]
    fn sessions_merge_overlapping_windows_but_not_touching_ones() {
        let s = Sessions::with_gap_millis(10);
        let mut ws = Vec::new();
        for t in [0, 5, 30, 14, 50, 60] {
            s.assign(EventTime::from_millis(t), &mut ws);
        }
        // [0,10) [5,15) [14,24) chain into [0,24); [30,40) alone; [50,60) and [60,70) touch.
        let merges = s.merge(&ws);
        assert_eq!(merges.len(), 1, "{merges:?}");
        let (from, to) = &merges[0];
        assert_eq!(to, &interval(0, 24));
        assert_eq!(from.len(), 3);
        assert!(merge_overlapping(&[interval(50, 60), interval(60, 70)]).is_empty());
    }

    #[test]
    fn max_timestamp_is_last_instant_inside() {
        assert_eq!(interval(0, 10).max_timestamp(), EventTime::from_millis(9));
        assert!(Window::Global.max_timestamp() < EventTime::MAX);
    }
}
