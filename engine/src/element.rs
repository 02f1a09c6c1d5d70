//! Elements in flight: values with their timestamp, window and pane.

use std::fmt::Debug;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::pane::PaneInfo;
use crate::time::EventTime;
use crate::window::Window;

/// What an element type needs: it is cloned between steps, printed in error messages,
/// shared between worker threads and serialized between processes. Elements are owned
/// values: use `String`, not `&str`.
pub trait Data: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static> Data for T {}

/// What a grouping key needs on top of [`Data`]: equality, and a hash that Riffle turns
/// into a stable key group (see [`crate::keys`]).
pub trait Key: Data + Hash + Eq {}
impl<T: Data + Hash + Eq> Key for T {}

/// One element with its event timestamp, window and pane (Beam's `WindowedValue`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowedValue<T> {
    /// The element itself.
    pub value: T,
    /// When it happened, in event time.
    pub timestamp: EventTime,
    /// The window it belongs to.
    pub window: Window,
    /// The firing it came from, if it came out of a grouping.
    pub pane: PaneInfo,
}

/// A column whose entries are usually all equal: the window and pane of a batch.
///
/// Most batches carry one window and one pane for every element (everything before the
/// first grouping is in the global window with no firing), so storing them once per batch
/// keeps an element as small in memory and on the wire as its value and timestamp.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Column<X> {
    pub(crate) first: Option<X>,
    /// Empty while every entry equals `first`.
    pub(crate) each: Vec<X>,
}

impl<X: Copy + PartialEq> Column<X> {
    fn new() -> Self {
        Column { first: None, each: Vec::new() }
    }

    fn uniform(first: Option<X>) -> Self {
        Column { first, each: Vec::new() }
    }

    /// Appends `x` after `len_before` entries; `room` is how many the batch has room for,
    /// so a column that stops being uniform is allocated once, at the batch's size.
    #[inline]
    fn push(&mut self, x: X, len_before: usize, room: usize) {
        match self.first {
            None => self.first = Some(x),
            Some(f) if self.each.is_empty() => {
                if f != x {
                    self.each = Vec::with_capacity(room.max(len_before + 1));
                    self.each.resize(len_before, f);
                    self.each.push(x);
                }
            }
            Some(_) => self.each.push(x),
        }
    }

    /// A column of `xs`, stored once if they are all equal.
    fn from_vec(xs: Vec<X>) -> Self {
        let Some(&first) = xs.first() else { return Column::new() };
        let uniform = xs.iter().all(|x| *x == first);
        Column { first: Some(first), each: if uniform { Vec::new() } else { xs } }
    }

    #[inline]
    fn get(&self, i: usize) -> X {
        if self.each.is_empty() { self.first.expect("Column::get on an empty column") } else { self.each[i] }
    }

    /// Appends `other` (of `len_other` entries) to this column of `len` entries.
    fn append(&mut self, other: Column<X>, len: usize, len_other: usize) {
        match (self.first, other.first) {
            (_, None) => {}
            (None, Some(_)) => *self = other,
            (Some(a), Some(b)) if a == b && self.each.is_empty() && other.each.is_empty() => {}
            (Some(a), Some(b)) => {
                if self.each.is_empty() {
                    self.each = vec![a; len];
                }
                if other.each.is_empty() {
                    self.each.resize(len + len_other, b);
                } else {
                    self.each.extend(other.each);
                }
            }
        }
    }
}

/// A batch of elements of one type, stored by column.
///
/// This is the unit every Riffle operator works on: transforms loop over a batch with
/// statically typed code, and only the batch as a whole crosses a type-erased boundary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Elements<T> {
    pub(crate) values: Vec<T>,
    pub(crate) timestamps: Column<EventTime>,
    pub(crate) windows: Column<Window>,
    pub(crate) panes: Column<PaneInfo>,
}

impl<T> Default for Elements<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Elements<T> {
    /// An empty batch.
    pub fn new() -> Self {
        Elements { values: Vec::new(), timestamps: Column::new(), windows: Column::new(), panes: Column::new() }
    }

    /// An empty batch with room for `n` elements.
    pub fn with_capacity(n: usize) -> Self {
        Elements {
            values: Vec::with_capacity(n),
            timestamps: Column::new(),
            windows: Column::new(),
            panes: Column::new(),
        }
    }

    /// A batch of `values` that share one timestamp, window and pane: how sources build
    /// batches, with no per-element bookkeeping.
    pub fn uniform(values: Vec<T>, timestamp: EventTime, window: Window, pane: PaneInfo) -> Self {
        let any = !values.is_empty();
        Elements {
            timestamps: Column::uniform(any.then_some(timestamp)),
            windows: Column::uniform(any.then_some(window)),
            panes: Column::uniform(any.then_some(pane)),
            values,
        }
    }

    /// A batch of `values`, each at its own timestamp, sharing one window and pane: how
    /// a source that reads event times builds batches, without per-element bookkeeping.
    ///
    /// # Panics
    /// If `values` and `timestamps` differ in length.
    pub fn with_timestamps(values: Vec<T>, timestamps: Vec<EventTime>, window: Window, pane: PaneInfo) -> Self {
        assert_eq!(values.len(), timestamps.len(), "one timestamp per value");
        let Some(&first) = timestamps.first() else { return Elements::new() };
        let uniform = timestamps.iter().all(|t| *t == first);
        Elements {
            timestamps: Column { first: Some(first), each: if uniform { Vec::new() } else { timestamps } },
            windows: Column::uniform(Some(window)),
            panes: Column::uniform(Some(pane)),
            values,
        }
    }

    /// Makes room for `n` more elements.
    pub fn reserve(&mut self, n: usize) {
        self.values.reserve(n);
    }

    /// The batch of `values`, one for one with `stamps` (from [`Elements::into_columns`],
    /// with the values replaced, consumed or kept): each value gets the timestamp, window
    /// and pane at its index, and the columns are moved, not copied.
    pub(crate) fn from_columns(values: Vec<T>, stamps: Stamps) -> Elements<T> {
        let Stamps { timestamps, windows, panes } = stamps;
        Elements { values, timestamps, windows, panes }
    }

    /// The batch with each element's timestamp replaced by `timestamps`' entry at its
    /// index; windows and panes stay.
    pub(crate) fn with_timestamp_column(self, timestamps: Vec<EventTime>) -> Elements<T> {
        assert_eq!(timestamps.len(), self.values.len(), "one new timestamp per element");
        Elements { timestamps: Column::from_vec(timestamps), ..self }
    }

    /// Keeps the elements whose `keep` entry is true, metadata and all, in order.
    pub(crate) fn retain_by(self, keep: &[bool]) -> Elements<T> {
        let kept = keep.iter().filter(|k| **k).count();
        if kept == self.values.len() {
            return self;
        }
        let uniform = self.is_uniform();
        let Elements { values, timestamps, windows, panes } = self;
        let mut out = Elements::with_capacity(kept);
        for (i, value) in values.into_iter().enumerate() {
            if keep[i] {
                if uniform {
                    out.values.push(value);
                } else {
                    out.push(value, timestamps.get(i), windows.get(i), panes.get(i));
                }
            }
        }
        if uniform && !out.values.is_empty() {
            (out.timestamps.first, out.windows.first, out.panes.first) = (timestamps.first, windows.first, panes.first);
        }
        out
    }

    /// Moves `other`'s elements to the end of this batch, metadata and all.
    pub fn append(&mut self, other: Elements<T>) {
        if self.values.is_empty() {
            *self = other;
            return;
        }
        let (len, len_other) = (self.values.len(), other.values.len());
        let Elements { mut values, timestamps, windows, panes } = other;
        self.values.append(&mut values);
        self.timestamps.append(timestamps, len, len_other);
        self.windows.append(windows, len, len_other);
        self.panes.append(panes, len, len_other);
    }

    /// Gives each element the window `window(i, timestamp)` says, in place: the values
    /// are not moved. `None` from `window` (an element with other than one window)
    /// leaves the batch as it was and returns `false`.
    pub(crate) fn rewindow(&mut self, mut window: impl FnMut(EventTime) -> Option<Window>) -> bool {
        let n = self.values.len();
        let mut windows = Column::new();
        for i in 0..n {
            match window(self.timestamps.get(i)) {
                Some(w) => windows.push(w, i, n),
                None => return false,
            }
        }
        self.windows = windows;
        true
    }

    fn is_uniform(&self) -> bool {
        self.timestamps.each.is_empty() && self.windows.each.is_empty() && self.panes.each.is_empty()
    }

    /// Splits the batch into `parts` batches by `route(value)`, keeping each element's
    /// metadata; a batch with one window and pane keeps it per part without per-element
    /// checks. This is the shuffle's inner loop.
    pub fn split_by(self, parts: usize, mut route: impl FnMut(&T) -> usize) -> Vec<Elements<T>> {
        let expect = self.len() / parts.max(1) + self.len() / (4 * parts.max(1)) + 16;
        let mut out: Vec<Elements<T>> = (0..parts).map(|_| Elements::with_capacity(expect)).collect();
        let uniform = self.is_uniform();
        let Elements { values, timestamps, windows, panes } = self;
        if uniform {
            for value in values {
                out[route(&value)].values.push(value);
            }
            for part in &mut out {
                if !part.is_empty() {
                    part.timestamps.first = timestamps.first;
                    part.windows.first = windows.first;
                    part.panes.first = panes.first;
                }
            }
        } else {
            for (i, value) in values.into_iter().enumerate() {
                let p = route(&value);
                out[p].push(value, timestamps.get(i), windows.get(i), panes.get(i));
            }
        }
        out
    }

    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no elements.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Appends one element.
    #[inline]
    pub fn push(&mut self, value: T, timestamp: EventTime, window: Window, pane: PaneInfo) {
        // (A `Vec` of a zero-sized type has room for `usize::MAX`: no hint from it.)
        let room = if std::mem::size_of::<T>() == 0 { 0 } else { self.values.capacity() };
        let n = self.values.len();
        self.timestamps.push(timestamp, n, room);
        self.windows.push(window, n, room);
        self.panes.push(pane, n, room);
        self.values.push(value);
    }

    /// Appends a [`WindowedValue`].
    pub fn push_windowed(&mut self, wv: WindowedValue<T>) {
        self.push(wv.value, wv.timestamp, wv.window, wv.pane);
    }

    /// The `i`th value.
    #[inline]
    pub fn value(&self, i: usize) -> &T {
        &self.values[i]
    }

    /// The `i`th timestamp.
    #[inline]
    pub fn timestamp(&self, i: usize) -> EventTime {
        self.timestamps.get(i)
    }

    /// The `i`th window.
    #[inline]
    pub fn window(&self, i: usize) -> Window {
        self.windows.get(i)
    }

    /// The `i`th pane.
    #[inline]
    pub fn pane(&self, i: usize) -> PaneInfo {
        self.panes.get(i)
    }

    /// The window shared by every element, if there is one.
    pub fn uniform_window(&self) -> Option<Window> {
        if self.windows.each.is_empty() { self.windows.first } else { None }
    }

    /// The values alone, in order.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    /// Consumes the batch, yielding each element with its metadata.
    pub fn into_iter_windowed(self) -> impl Iterator<Item = WindowedValue<T>> {
        let Elements { values, timestamps, windows, panes } = self;
        values.into_iter().enumerate().map(move |(i, value)| WindowedValue {
            value,
            timestamp: timestamps.get(i),
            window: windows.get(i),
            pane: panes.get(i),
        })
    }

    /// Consumes the batch into its values and their timestamps, windows and panes, for a
    /// loop that walks the values by index and reads only the metadata it needs.
    pub(crate) fn into_columns(self) -> (Vec<T>, Stamps) {
        let Elements { values, timestamps, windows, panes } = self;
        (values, Stamps { timestamps, windows, panes })
    }

    /// Consumes the batch, yielding the values alone.
    pub fn into_values(self) -> Vec<T> {
        self.values
    }
}

/// The timestamps, windows and panes of a batch's values, by index (from
/// [`Elements::into_columns`]).
pub(crate) struct Stamps {
    timestamps: Column<EventTime>,
    windows: Column<Window>,
    panes: Column<PaneInfo>,
}

impl Stamps {
    /// The `i`th timestamp.
    #[inline]
    pub(crate) fn timestamp(&self, i: usize) -> EventTime {
        self.timestamps.get(i)
    }

    /// The `i`th window.
    #[inline]
    pub(crate) fn window(&self, i: usize) -> Window {
        self.windows.get(i)
    }

    /// The `i`th pane.
    #[inline]
    pub(crate) fn pane(&self, i: usize) -> PaneInfo {
        self.panes.get(i)
    }

    /// The one timestamp, window and pane of every element, where the batch has one of
    /// each (and at least one element).
    pub(crate) fn uniform(&self) -> Option<(EventTime, Window, PaneInfo)> {
        let uniform = self.timestamps.each.is_empty() && self.windows.each.is_empty() && self.panes.each.is_empty();
        if !uniform {
            return None;
        }
        Some((self.timestamps.first?, self.windows.first?, self.panes.first?))
    }

    /// Runs of consecutive elements in one window, `len` elements in all: the window and
    /// how many. A grouping looks a window up once per run rather than once per element.
    pub(crate) fn window_runs(&self, len: usize) -> Vec<(Window, usize)> {
        match self.windows.first {
            None => Vec::new(),
            Some(w) if self.windows.each.is_empty() => vec![(w, len)],
            Some(_) => {
                let mut runs: Vec<(Window, usize)> = Vec::new();
                for &w in &self.windows.each {
                    match runs.last_mut() {
                        Some((last, n)) if *last == w => *n += 1,
                        _ => runs.push((w, 1)),
                    }
                }
                runs
            }
        }
    }
}

impl<T> FromIterator<WindowedValue<T>> for Elements<T> {
    fn from_iter<I: IntoIterator<Item = WindowedValue<T>>>(iter: I) -> Self {
        let mut e = Elements::new();
        for wv in iter {
            e.push_windowed(wv);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pane::Timing;

    #[test]
    fn elements_of_a_zero_sized_type_keep_their_metadata() {
        // A `Vec<()>` says it has room for usize::MAX: that must not size the columns.
        let mut e = Elements::<()>::with_capacity(2);
        e.push((), EventTime::from_millis(1), Window::Global, PaneInfo::NO_FIRING);
        e.push((), EventTime::from_millis(2), Window::Global, PaneInfo::NO_FIRING);
        assert_eq!((e.timestamp(0), e.timestamp(1)), (EventTime::from_millis(1), EventTime::from_millis(2)));
    }

    #[test]
    fn uniform_columns_stay_uniform_and_split_on_difference() {
        let mut e = Elements::new();
        let t = EventTime::from_millis;
        e.push("a", t(1), Window::Global, PaneInfo::NO_FIRING);
        e.push("b", t(2), Window::Global, PaneInfo::NO_FIRING);
        assert_eq!(e.uniform_window(), Some(Window::Global));
        let w = Window::Interval { start: t(0), end: t(10) };
        let late = PaneInfo { timing: Timing::Late, ..PaneInfo::NO_FIRING };
        e.push("c", t(3), w, late);
        assert_eq!(e.uniform_window(), None);
        let all: Vec<_> = e.into_iter_windowed().collect();
        assert_eq!(all[0].window, Window::Global);
        assert_eq!(all[1].pane, PaneInfo::NO_FIRING);
        assert_eq!(all[2].window, w);
        assert_eq!(all[2].pane, late);
        assert_eq!(all[2].timestamp, t(3));
    }

    #[test]
    fn with_timestamps_keeps_each_timestamp_and_stores_equal_ones_once() {
        let t = EventTime::from_millis;
        let e =
            Elements::with_timestamps(vec!['a', 'b', 'c'], vec![t(3), t(1), t(2)], Window::Global, PaneInfo::NO_FIRING);
        let got: Vec<_> = e.into_iter_windowed().map(|wv| (wv.value, wv.timestamp)).collect();
        assert_eq!(got, [('a', t(3)), ('b', t(1)), ('c', t(2))]);
        let same = Elements::with_timestamps(vec![1, 2], vec![t(5), t(5)], Window::Global, PaneInfo::NO_FIRING);
        assert!(same.timestamps.each.is_empty());
        assert_eq!(same.timestamp(1), t(5));
        assert!(Elements::<u8>::with_timestamps(vec![], vec![], Window::Global, PaneInfo::NO_FIRING).is_empty());
    }

    #[test]
    fn split_keeps_metadata_in_both_uniform_and_mixed_batches() {
        let t = EventTime::from_millis;
        let w = Window::Interval { start: t(0), end: t(10) };
        let mut uniform = Elements::new();
        let mut mixed = Elements::new();
        for i in 0..10u32 {
            uniform.push(i, t(i as i64), w, PaneInfo::NO_FIRING);
            mixed.push(i, t(i as i64), if i % 3 == 0 { w } else { Window::Global }, PaneInfo::NO_FIRING);
        }
        for batch in [uniform, mixed] {
            let before: Vec<_> = batch.clone().into_iter_windowed().collect();
            let parts = batch.split_by(3, |v| (*v % 3) as usize);
            for (p, part) in parts.into_iter().enumerate() {
                let got: Vec<_> = part.into_iter_windowed().collect();
                let want: Vec<_> = before.iter().filter(|wv| wv.value % 3 == p as u32).cloned().collect();
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn append_keeps_each_elements_metadata_uniform_or_not() {
        let t = EventTime::from_millis;
        let w = |s: i64| Window::Interval { start: t(s), end: t(s + 10) };
        let mut a = Elements::uniform(vec![1, 2], t(1), w(0), PaneInfo::NO_FIRING);
        a.append(Elements::uniform(vec![3], t(1), w(0), PaneInfo::NO_FIRING));
        assert!(a.is_uniform(), "equal metadata stays stored once");
        a.append(Elements::uniform(vec![4, 5], t(12), w(10), PaneInfo::NO_FIRING));
        let mut mixed = Elements::new();
        mixed.push(6, t(3), w(0), PaneInfo::NO_FIRING);
        mixed.push(7, t(25), w(20), PaneInfo::NO_FIRING);
        a.append(mixed);
        let got: Vec<(i32, i64, Window)> =
            a.into_iter_windowed().map(|e| (e.value, e.timestamp.millis(), e.window)).collect();
        assert_eq!(
            got,
            [(1, 1, w(0)), (2, 1, w(0)), (3, 1, w(0)), (4, 12, w(10)), (5, 12, w(10)), (6, 3, w(0)), (7, 25, w(20))]
        );
        let mut empty = Elements::new();
        empty.append(Elements::uniform(vec![8], t(1), w(0), PaneInfo::NO_FIRING));
        assert_eq!(empty.len(), 1);
    }

    #[test]
    fn rewindow_changes_windows_in_place_or_nothing() {
        let t = EventTime::from_millis;
        let mut e = Elements::with_timestamps(
            vec!['a', 'b', 'c'],
            vec![t(1), t(12), t(13)],
            Window::Global,
            PaneInfo::NO_FIRING,
        );
        let tens = |ts: EventTime| {
            let s = ts.millis() / 10 * 10;
            Some(Window::Interval { start: t(s), end: t(s + 10) })
        };
        assert!(e.rewindow(tens));
        assert_eq!((e.window(0), e.window(2)), (tens(t(1)).unwrap(), tens(t(13)).unwrap()));
        assert!(!e.rewindow(|ts| (ts.millis() < 10).then_some(Window::Global)), "the second has no single window");
        assert_eq!(e.window(1), tens(t(12)).unwrap(), "left as it was");
    }
}
