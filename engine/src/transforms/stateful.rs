//! Stateful processing: a DoFn over a keyed collection that keeps state per key and
//! window and sets timers (Beam's `@StateId` and `@TimerId`).
//!
//! A [`StatefulDoFn`] declares its state as a type of its own (a struct of
//! [`ValueState`], [`BagState`], [`CombiningState`], [`MapState`] and
//! [`OrderedListState`] cells, or anything `Default`), one per key and window. Elements of
//! a key go to the worker owning its key group, as for a grouping, and run there in a
//! canonical order per watermark (timestamp, then the value's encoding), so the output is
//! the same at any worker count. Timers:
//!
//! - **event time**: fires once the input watermark passes its time; it holds the output
//!   watermark at its output timestamp (its time, unless set with another) until it fires;
//! - **processing time**: fires once the job's [`crate::Clock`] reaches its time (a
//!   `TestStream` scripts it);
//!
//! set, reset (setting a timer of the same name again) and cleared per key and window;
//! `on_timer` can read and write state, set timers (a looping timer sets the next) and
//! output. When the watermark passes a window's end plus the allowed lateness, the key's
//! state and timers in that window are dropped (Beam's garbage collection), and elements
//! later than that are dropped and counted.
//!
//! It runs as a grouping step (shuffle by key, then this state), so runners need nothing
//! new for it, and its state sits by key and window as the groupings' does (DESIGN.md 4).
//! The state is serializable (as Beam's state needs a coder, and Flink's a serializer), and
//! [`GroupState::snapshot`] writes it by key group, so a snapshot taken at one worker count
//! restores at another.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::batch::Batch;
use crate::clock::{Clock, ProcessingTime};
use crate::element::{Data, Elements, Key};
use crate::error::{Error, Result, truncated_debug};
use crate::graph::{NodeKind, PortRef};
use crate::keys::KeyGroup;
use crate::pane::PaneInfo;
use crate::pipeline::PCollection;
use crate::runtime::{GroupFn, GroupState, SameWatermark, ShuffleFn, StateSize, StepContext};
use crate::time::{EventTime, Watermark};
use crate::transforms::combine_fns::CombineFn;
use crate::transforms::group::KeyShuffle;
use crate::window::Window;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A DoFn with state and timers per key and window.
pub trait StatefulDoFn: Clone + Send + Sync + 'static {
    /// The key.
    type K: Key;
    /// The value.
    type V: Data;
    /// What it outputs.
    type Out: Data;
    /// Its state for one key in one window; `Default` is the empty state. It is saved in
    /// snapshots, so it serializes (derive `Serialize` and `Deserialize` on your own).
    type State: Default + Send + Serialize + DeserializeOwned + 'static;

    /// Called for each element.
    fn process(
        &mut self,
        key: &Self::K,
        value: &Self::V,
        state: &mut Self::State,
        ctx: &mut StateContext<'_, Self::Out>,
    );

    /// Called when timer `timer` of `key` fires.
    fn on_timer(&mut self, key: &Self::K, timer: &str, state: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
        let _ = (key, timer, state, ctx);
    }
}

/// A single value (Beam's `ValueState`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueState<T>(Option<T>);

impl<T: Clone> ValueState<T> {
    /// The value, if one was written.
    pub fn read(&self) -> Option<&T> {
        self.0.as_ref()
    }
    /// Writes the value.
    pub fn write(&mut self, v: T) {
        self.0 = Some(v);
    }
    /// Clears it.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// An unordered bag of values (Beam's `BagState`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BagState<T>(Vec<T>);

impl<T> BagState<T> {
    /// Adds a value.
    pub fn add(&mut self, v: T) {
        self.0.push(v);
    }
    /// The values added since the last clear.
    pub fn read(&self) -> &[T] {
        &self.0
    }
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Takes the values out, leaving it empty.
    pub fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.0)
    }
    /// Clears it.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Values folded by a [`CombineFn`] as they are added (Beam's `CombiningState`).
pub struct CombiningState<C: CombineFn> {
    combine: C,
    acc: Option<C::Accum>,
}

impl<C: CombineFn + Default> Default for CombiningState<C> {
    fn default() -> Self {
        CombiningState { combine: C::default(), acc: None }
    }
}

/// Saved as its accumulator: the combine is code, made again by `Default`.
impl<C: CombineFn> Serialize for CombiningState<C> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.acc.serialize(s)
    }
}

impl<'de, C: CombineFn + Default> Deserialize<'de> for CombiningState<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(CombiningState { combine: C::default(), acc: Option::deserialize(d)? })
    }
}

impl<C: CombineFn> CombiningState<C> {
    /// Adds an input.
    pub fn add(&mut self, input: &C::Input) {
        let acc = self.acc.get_or_insert_with(|| self.combine.create_accumulator());
        self.combine.add_input(acc, input);
    }
    /// The combined value of what was added (the combine's empty result if nothing was).
    pub fn read(&self) -> C::Output {
        match &self.acc {
            Some(acc) => self.combine.extract_output(acc.clone()),
            None => self.combine.extract_output(self.combine.create_accumulator()),
        }
    }
    /// Clears it.
    pub fn clear(&mut self) {
        self.acc = None;
    }
}

/// A map from keys to values (Beam's `MapState`), iterated in key order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapState<K: Ord, V>(BTreeMap<K, V>);

impl<K: Ord, V> Default for MapState<K, V> {
    fn default() -> Self {
        MapState(BTreeMap::new())
    }
}

impl<K: Ord, V> MapState<K, V> {
    /// Puts `v` at `k`, returning what was there.
    pub fn put(&mut self, k: K, v: V) -> Option<V> {
        self.0.insert(k, v)
    }
    /// The value at `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.0.get(k)
    }
    /// Removes `k`.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.0.remove(k)
    }
    /// Every entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter()
    }
    /// Clears it.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Values ordered by timestamp (Beam's `OrderedListState`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderedListState<T>(BTreeMap<EventTime, Vec<T>>);

impl<T> Default for OrderedListState<T> {
    fn default() -> Self {
        OrderedListState(BTreeMap::new())
    }
}

impl<T> OrderedListState<T> {
    /// Adds `v` at timestamp `t`.
    pub fn add(&mut self, t: EventTime, v: T) {
        self.0.entry(t).or_default().push(v);
    }
    /// Every value with its timestamp, in timestamp order (in the order added at one time).
    pub fn read(&self) -> impl Iterator<Item = (EventTime, &T)> {
        self.0.iter().flat_map(|(t, vs)| vs.iter().map(move |v| (*t, v)))
    }
    /// The values in `[from, to)`, in order.
    pub fn read_range(&self, from: EventTime, to: EventTime) -> impl Iterator<Item = (EventTime, &T)> {
        self.0.range(from..to).flat_map(|(t, vs)| vs.iter().map(move |v| (*t, v)))
    }
    /// Removes the values in `[from, to)`.
    pub fn clear_range(&mut self, from: EventTime, to: EventTime) {
        let keep = self.0.split_off(&to);
        self.0.retain(|t, _| *t < from);
        self.0.extend(keep);
    }
    /// Clears it.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// What `process` and `on_timer` see and do: the element's (or timer's) timestamp and
/// window, output, and the key's timers in this window.
pub struct StateContext<'a, O> {
    out: &'a mut Vec<(EventTime, O)>,
    /// (The window goes with every output: the element's or the timer's.)
    timers: &'a mut Timers,
    timestamp: EventTime,
    window: Window,
    watermark: Watermark,
    now: ProcessingTime,
}

impl<O> StateContext<'_, O> {
    /// The element's timestamp (in `on_timer`: the timer's output timestamp).
    pub fn timestamp(&self) -> EventTime {
        self.timestamp
    }
    /// The window.
    pub fn window(&self) -> Window {
        self.window
    }
    /// The input watermark the element was sent at (in `on_timer`: the watermark that
    /// fired it).
    pub fn watermark(&self) -> Watermark {
        self.watermark
    }
    /// Now, by the job's clock.
    pub fn now(&self) -> ProcessingTime {
        self.now
    }
    /// Outputs `value` at the current timestamp.
    pub fn output(&mut self, value: O) {
        self.out.push((self.timestamp, value));
    }
    /// Outputs `value` at `timestamp`, which must not be before the current one.
    pub fn output_with_timestamp(&mut self, value: O, timestamp: EventTime) {
        self.out.push((timestamp.max(self.timestamp), value));
    }
    /// Sets (or resets) event-time timer `name` to fire once the watermark passes `at`;
    /// what it outputs is stamped `at`, and it holds the output watermark there.
    pub fn set_event_timer(&mut self, name: &str, at: EventTime) {
        self.set_event_timer_with_output(name, at, at);
    }
    /// Sets (or resets) event-time timer `name` to fire at `at`, holding the output
    /// watermark at `output` (Beam's `withOutputTimestamp`; at most `at`).
    pub fn set_event_timer_with_output(&mut self, name: &str, at: EventTime, output: EventTime) {
        self.timers.insert(name.to_string(), Timer::Event { at, output: output.min(at) });
    }
    /// Sets (or resets) processing-time timer `name` to fire once the clock reaches `at`;
    /// what it outputs is stamped with the current timestamp, where it holds the output
    /// watermark until it fires.
    pub fn set_processing_timer(&mut self, name: &str, at: ProcessingTime) {
        let output = self.timestamp.min(self.window.max_timestamp());
        self.timers.insert(name.to_string(), Timer::Processing { at, output });
    }
    /// Clears timer `name`.
    pub fn clear_timer(&mut self, name: &str) {
        self.timers.remove(name);
    }
}

/// A timer as set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Timer {
    Event { at: EventTime, output: EventTime },
    Processing { at: ProcessingTime, output: EventTime },
}

/// A key's timers in one window, by name.
type Timers = BTreeMap<String, Timer>;

/// One key's state and timers in one window.
struct Cell<S> {
    state: S,
    timers: Timers,
}

/// The step: shuffled by key like a grouping.
struct StatefulStep<F: StatefulDoFn> {
    dofn: F,
    lateness_ms: i64,
    shuffle: KeyShuffle<F::K, F::V>,
}

impl<F: StatefulDoFn> GroupFn for StatefulStep<F> {
    fn shuffle(&self) -> &dyn ShuffleFn {
        &self.shuffle
    }
    fn outputs_before_window_end(&self) -> bool {
        true
    }
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn GroupState> {
        Box::new(Stateful::<F> {
            step: ctx.name.clone(),
            dofn: self.dofn.clone(),
            clock: ctx.clock.clone(),
            lateness_ms: self.lateness_ms,
            cells: FastMap::default(),
            event: BTreeSet::new(),
            processing: BTreeSet::new(),
            holds: BTreeMap::new(),
            expiry: BTreeSet::new(),
            out: BTreeMap::new(),
            dropped: 0,
        })
    }
}

/// One cell as a snapshot writes it: the key's encoding (to order by), key, window, state
/// and timers.
type SavedCell<'a, F> = (Vec<u8>, &'a <F as StatefulDoFn>::K, Window, &'a <F as StatefulDoFn>::State, &'a Timers);

/// A timer's place in the firing order: time, window, the key's encoding, its name.
type Due<T> = (T, Window, Vec<u8>, String);

/// A window of a key with state, by when it expires; the key's encoding orders.
type Expiring<K> = (EventTime, Window, Vec<u8>, KeyRef<K>);

/// One worker's state of a stateful step.
struct Stateful<F: StatefulDoFn> {
    step: Arc<str>,
    dofn: F,
    clock: Arc<dyn Clock>,
    lateness_ms: i64,
    /// State and timers by key and window.
    cells: FastMap<(F::K, Window), Cell<F::State>>,
    /// Event-time timers in firing order, with the key to find the cell by.
    event: BTreeSet<(Due<EventTime>, KeyRef<F::K>)>,
    processing: BTreeSet<(Due<ProcessingTime>, KeyRef<F::K>)>,
    /// The output timestamps event timers hold, as a multiset.
    holds: BTreeMap<EventTime, usize>,
    /// Windows with state, by when they expire (end plus lateness).
    expiry: BTreeSet<Expiring<F::K>>,
    /// Output waiting for `fire`, by timestamp, each in its window.
    out: BTreeMap<EventTime, Vec<(Window, F::Out)>>,
    dropped: u64,
}

/// A key, ordered by nothing (the encoding beside it orders): lets keys of any type sit
/// in ordered sets.
#[derive(Clone, Debug)]
struct KeyRef<K>(K);

impl<K> PartialEq for KeyRef<K> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<K> Eq for KeyRef<K> {}
impl<K> PartialOrd for KeyRef<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for KeyRef<K> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

fn encode<K: Key>(k: &K) -> Vec<u8> {
    bitcode::serialize(k).expect("internal error: encoding a key to order it failed")
}

impl<F: StatefulDoFn> Stateful<F> {
    /// Takes one hold at `output` away.
    fn release(&mut self, output: EventTime) {
        if let Some(n) = self.holds.get_mut(&output) {
            *n -= 1;
            if *n == 0 {
                self.holds.remove(&output);
            }
        }
    }

    /// Replaces the timers registered for `(k, w)` by `after`, given what they were.
    fn retime(&mut self, k: &F::K, w: Window, kenc: &[u8], before: &Timers, after: &Timers) {
        for (name, t) in before {
            if after.get(name) == Some(t) {
                continue;
            }
            match *t {
                Timer::Event { at, output } => {
                    self.event.remove(&((at, w, kenc.to_vec(), name.clone()), KeyRef(k.clone())));
                    self.release(output);
                }
                Timer::Processing { at, output } => {
                    self.processing.remove(&((at, w, kenc.to_vec(), name.clone()), KeyRef(k.clone())));
                    self.release(output);
                }
            }
        }
        for (name, t) in after {
            if before.get(name) == Some(t) {
                continue;
            }
            match *t {
                Timer::Event { at, output } => {
                    self.event.insert(((at, w, kenc.to_vec(), name.clone()), KeyRef(k.clone())));
                    *self.holds.entry(output).or_default() += 1;
                }
                Timer::Processing { at, output } => {
                    self.processing.insert(((at, w, kenc.to_vec(), name.clone()), KeyRef(k.clone())));
                    *self.holds.entry(output).or_default() += 1;
                }
            }
        }
    }

    /// Runs `f` on the cell of `(k, w)` (created empty if missing), with a context whose
    /// timestamp is `ts`, then registers the timers it changed.
    #[allow(clippy::too_many_arguments)]
    fn with_cell(
        &mut self,
        k: &F::K,
        w: Window,
        ts: EventTime,
        watermark: Watermark,
        now: ProcessingTime,
        what: &str,
        f: impl FnOnce(&mut F, &mut F::State, &mut StateContext<'_, F::Out>),
    ) -> Result<()> {
        let kenc = encode(k);
        let key = (k.clone(), w);
        if !self.cells.contains_key(&key) {
            let expires = w.max_timestamp().plus_millis(self.lateness_ms);
            self.expiry.insert((expires, w, kenc.clone(), KeyRef(k.clone())));
        }
        let cell = self.cells.entry(key).or_insert_with(|| Cell { state: F::State::default(), timers: Timers::new() });
        let before = cell.timers.clone();
        let mut out = Vec::new();
        let dofn = &mut self.dofn;
        let ran = catch_unwind(AssertUnwindSafe(|| {
            let mut ctx =
                StateContext { out: &mut out, timers: &mut cell.timers, timestamp: ts, window: w, watermark, now };
            f(dofn, &mut cell.state, &mut ctx);
        }));
        let after = cell.timers.clone();
        ran.map_err(|p| Error::from_panic(&self.step, p, Some(format!("{} ({what})", truncated_debug(k, 200)))))?;
        for (t, v) in out {
            self.out.entry(t).or_default().push((w, v));
        }
        self.retime(k, w, &kenc, &before, &after);
        Ok(())
    }

    /// Fires the earliest due timer, if one is: event timers the watermark passed first,
    /// then processing timers the clock reached. Returns whether one fired.
    fn fire_one(&mut self, watermark: Watermark, now: ProcessingTime) -> Result<bool> {
        let output = |cells: &FastMap<(F::K, Window), Cell<F::State>>, k: &F::K, w: Window, name: &str| match cells
            .get(&(k.clone(), w))
            .and_then(|c| c.timers.get(name))
        {
            Some(Timer::Event { output, .. } | Timer::Processing { output, .. }) => *output,
            None => w.max_timestamp(),
        };
        let event = self.event.first().filter(|((at, ..), _)| watermark.is_past(*at)).cloned();
        if let Some(((_, w, kenc, name), KeyRef(k))) = event {
            let ts = output(&self.cells, &k, w, &name);
            self.fire_timer(k, w, kenc, name, ts, watermark, now)?;
            return Ok(true);
        }
        let processing = self.processing.first().filter(|((at, ..), _)| *at <= now).cloned();
        if let Some(((_, w, kenc, name), KeyRef(k))) = processing {
            let ts = output(&self.cells, &k, w, &name);
            self.fire_timer(k, w, kenc, name, ts, watermark, now)?;
            return Ok(true);
        }
        Ok(false)
    }

    #[allow(clippy::too_many_arguments)]
    fn fire_timer(
        &mut self,
        k: F::K,
        w: Window,
        kenc: Vec<u8>,
        name: String,
        ts: EventTime,
        watermark: Watermark,
        now: ProcessingTime,
    ) -> Result<()> {
        // The timer is spent before its callback runs, which may set it again.
        let Some(cell) = self.cells.get_mut(&(k.clone(), w)) else { return Ok(()) };
        let before = cell.timers.clone();
        cell.timers.remove(&name);
        let after = cell.timers.clone();
        self.retime(&k, w, &kenc, &before, &after);
        self.with_cell(&k, w, ts, watermark, now, &format!("timer {name:?}"), |dofn, state, ctx| {
            dofn.on_timer(&k, &name, state, ctx);
        })
    }
}

impl<F: StatefulDoFn> GroupState for Stateful<F> {
    fn insert(&mut self, input: Batch, arrival: Watermark) -> Result<()> {
        let input = input.try_into_elements::<(F::K, F::V)>()?;
        let now = self.clock.now();
        for wv in input.into_iter_windowed() {
            let w = wv.window;
            // Past the window's expiry its state is gone: the element is dropped.
            if arrival.is_past(w.max_timestamp().plus_millis(self.lateness_ms)) {
                self.dropped += 1;
                continue;
            }
            let (k, v) = wv.value;
            self.with_cell(&k, w, wv.timestamp, arrival, now, "processing an element", |dofn, state, ctx| {
                dofn.process(&k, &v, state, ctx);
            })?;
        }
        Ok(())
    }

    /// A stateful DoFn sees elements one by one: they go in in a canonical order. On a
    /// scripted clock, what was sent in each epoch goes in once the epoch is complete, so
    /// that elements see the processing time they were sent at.
    fn same_watermark(&self) -> SameWatermark {
        if self.clock.is_scripted() { SameWatermark::WholePerEpoch } else { SameWatermark::Whole }
    }

    fn insert_all(&mut self, input: Vec<Batch>, arrival: Watermark) -> Result<()> {
        let mut all = Vec::new();
        for b in input {
            all.extend(b.try_into_elements::<(F::K, F::V)>()?.into_iter_windowed());
        }
        all.sort_by_cached_key(|wv| {
            (wv.timestamp, wv.window, encode(&wv.value.0), bitcode::serialize(&wv.value.1).ok())
        });
        self.insert(Batch::new(all.into_iter().collect::<Elements<_>>()), arrival)
    }

    fn late_dropped(&self) -> u64 {
        self.dropped
    }

    fn earliest_pending(&self) -> Option<EventTime> {
        let out = self.out.keys().next().copied();
        let held = self.holds.keys().next().copied();
        [out, held].into_iter().flatten().min()
    }

    fn next_timer(&self) -> Option<ProcessingTime> {
        self.processing.first().map(|((at, ..), _)| *at)
    }

    fn fire(&mut self, watermark: Watermark, out: &mut Vec<(EventTime, Batch)>) -> Result<()> {
        let now = self.clock.now();
        // Timers in order; a looping timer may set one that is due too.
        while self.fire_one(watermark, now)? {}
        // Windows past their expiry: state and timers go.
        while let Some((expires, w, kenc, KeyRef(k))) = self.expiry.first().cloned() {
            if !watermark.is_past(expires) {
                break;
            }
            self.expiry.pop_first();
            if let Some(cell) = self.cells.remove(&(k.clone(), w)) {
                self.retime(&k, w, &kenc, &cell.timers, &Timers::new());
            }
        }
        for (t, values) in std::mem::take(&mut self.out) {
            let mut batch = Elements::with_capacity(values.len());
            for (w, v) in values {
                batch.push(v, t, w, PaneInfo::NO_FIRING);
            }
            out.push((t, Batch::new(batch)));
        }
        Ok(())
    }

    fn snapshot(&self, out: &mut BTreeMap<KeyGroup, Vec<u8>>) -> Result<()> {
        if !self.out.is_empty() {
            return Err(Error::Internal(format!("step '{}': a snapshot with output still waiting", self.step)));
        }
        // Per key group, its cells in the key's encoding's order: the same state gives the
        // same bytes. Timers, holds and expiries follow from the cells.
        let mut groups: BTreeMap<KeyGroup, Vec<SavedCell<'_, F>>> = BTreeMap::new();
        for ((k, w), cell) in &self.cells {
            groups.entry(KeyGroup::of(k)).or_default().push((encode(k), k, *w, &cell.state, &cell.timers));
        }
        for (group, mut cells) in groups {
            cells.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
            let saved: Vec<_> = cells.into_iter().map(|(_, k, w, state, timers)| (k, w, state, timers)).collect();
            let bytes = bitcode::serialize(&saved)
                .map_err(|e| Error::Internal(format!("step '{}': saving the state of {group:?}: {e}", self.step)))?;
            out.entry(group).or_default().extend(bytes);
        }
        Ok(())
    }

    fn restore(&mut self, group: KeyGroup, bytes: &[u8]) -> Result<()> {
        let saved: Vec<(F::K, Window, F::State, Timers)> = bitcode::deserialize(bytes).map_err(|e| {
            Error::Config(format!(
                "step '{}': the saved state of {group:?} does not read as this step's state ({e}); \
                 was the snapshot taken of another version of the pipeline?",
                self.step
            ))
        })?;
        for (k, w, state, timers) in saved {
            let kenc = encode(&k);
            let expires = w.max_timestamp().plus_millis(self.lateness_ms);
            self.expiry.insert((expires, w, kenc.clone(), KeyRef(k.clone())));
            self.retime(&k, w, &kenc, &Timers::new(), &timers);
            self.cells.insert((k, w), Cell { state, timers });
        }
        Ok(())
    }

    fn size(&self) -> StateSize {
        let entries = self.cells.len() as u64;
        let bytes = entries * std::mem::size_of::<((F::K, Window), Cell<F::State>)>() as u64;
        StateSize { panes: (self.event.len() + self.processing.len()) as u64, entries, bytes }
    }
}

impl<K: Key, V: Data> PCollection<(K, V)> {
    /// Runs a [`StatefulDoFn`] over each key's elements, with state and timers per key and
    /// window (Beam's stateful `ParDo`). See [`crate::transforms::stateful`].
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    ///
    /// /// Outputs each key's first value only.
    /// #[derive(Clone)]
    /// struct First;
    /// impl StatefulDoFn for First {
    ///     type K = char;
    ///     type V = i32;
    ///     type Out = (char, i32);
    ///     type State = ValueState<bool>;
    ///     fn process(&mut self, k: &char, v: &i32, seen: &mut ValueState<bool>, ctx: &mut StateContext<'_, (char, i32)>) {
    ///         if seen.read().is_none() {
    ///             seen.write(true);
    ///             ctx.output((*k, *v));
    ///         }
    ///     }
    /// }
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     p.create_timestamped(vec![(('a', 1), EventTime::from_millis(1)), (('a', 2), EventTime::from_millis(2)), (('b', 3), EventTime::from_millis(3))])
    ///         .par_do_stateful(First)
    /// });
    /// out.sort();
    /// assert_eq!(out, [('a', 1), ('b', 3)]);
    /// ```
    pub fn par_do_stateful<F: StatefulDoFn<K = K, V = V>>(&self, dofn: F) -> PCollection<F::Out> {
        let p = self.pipeline();
        let w = self.info().windowing;
        let step = StatefulStep { dofn, lateness_ms: w.allowed_lateness_ms, shuffle: KeyShuffle(PhantomData) };
        // Outputs are in the window of the element or timer that made them.
        let info = self.derived_info::<F::Out>();
        let node = p.add_step("StatefulParDo", NodeKind::Group(Arc::new(step)), vec![self.port()], vec![info]);
        if w.merging.is_some() {
            // A key's state cannot follow its windows as they merge (Beam refuses it too,
            // for state that cannot be merged).
            p.defer_error(
                &p.step_name(node),
                "a stateful DoFn needs windows that do not merge (not Sessions); group the sessions first, \
                 or keep the state in the global window",
            );
        }
        PCollection::from_port(p, PortRef { node, port: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::WorkerInfo;

    /// Counts a key's elements in a window and outputs the count at the window's end.
    #[derive(Clone)]
    struct CountAtEnd;

    impl StatefulDoFn for CountAtEnd {
        type K = u8;
        type V = ();
        type Out = (u8, u64);
        type State = CombiningState<crate::transforms::combine_fns::Count<()>>;
        fn process(&mut self, _: &u8, v: &(), n: &mut Self::State, ctx: &mut StateContext<'_, (u8, u64)>) {
            n.add(v);
            ctx.set_event_timer("end", ctx.window().max_timestamp());
        }
        fn on_timer(&mut self, k: &u8, _: &str, n: &mut Self::State, ctx: &mut StateContext<'_, (u8, u64)>) {
            ctx.output((*k, n.read()));
        }
    }

    #[test]
    fn state_size_returns_to_zero_when_the_watermark_passes_the_windows_expiry() {
        let step = StatefulStep { dofn: CountAtEnd, lateness_ms: 5, shuffle: KeyShuffle(PhantomData) };
        let ctx = StepContext {
            name: "S".into(),
            worker: WorkerInfo { index: 0, peers: 1 },
            clock: Arc::new(crate::ManualClock::new()),
        };
        let mut state = step.instantiate(&ctx);
        let t = EventTime::from_millis;
        let w = Window::Interval { start: t(0), end: t(10) };
        let input = Elements::uniform(vec![(1u8, ()), (2, ()), (1, ())], t(3), w, PaneInfo::NO_FIRING);
        state.insert(Batch::new(input), Watermark(t(0))).unwrap();
        assert_eq!(state.size().entries, 2, "two keys in one window");
        assert_eq!(state.earliest_pending(), Some(t(9)), "the timers hold at the window's end");
        let mut out = Vec::new();
        state.fire(Watermark(t(10)), &mut out).unwrap();
        let fired: usize = out.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(fired, 2, "a count per key at the end of the window");
        assert_eq!(state.size().entries, 2, "kept within the allowed lateness");
        assert_eq!(state.earliest_pending(), None, "no timer holds anything now");
        state.fire(Watermark(t(15)), &mut out).unwrap();
        assert_eq!(state.size(), StateSize::default(), "past the expiry (9 + 5): nothing left");
    }

    /// Sums a key's values per window in state, keeps them in a bag too, and outputs both
    /// at the window's end (an event-time timer).
    #[derive(Clone)]
    struct SumAtEnd;

    impl StatefulDoFn for SumAtEnd {
        type K = u32;
        type V = i64;
        type Out = (u32, i64, i64, usize);
        type State = (CombiningState<crate::transforms::combine_fns::Sum<i64>>, BagState<i64>);
        fn process(&mut self, _: &u32, v: &i64, s: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
            s.0.add(v);
            s.1.add(*v);
            ctx.set_event_timer("end", ctx.window().max_timestamp());
        }
        fn on_timer(&mut self, k: &u32, _: &str, s: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
            ctx.output((*k, ctx.window().max_timestamp().millis(), s.0.read(), s.1.read().len()));
        }
    }

    fn instances(peers: usize) -> Vec<Box<dyn GroupState>> {
        let step = StatefulStep { dofn: SumAtEnd, lateness_ms: 0, shuffle: KeyShuffle(PhantomData) };
        let clock: Arc<dyn Clock> = Arc::new(crate::ManualClock::new());
        (0..peers)
            .map(|index| {
                step.instantiate(&StepContext {
                    name: "S".into(),
                    worker: WorkerInfo { index, peers },
                    clock: clock.clone(),
                })
            })
            .collect()
    }

    /// Elements of 40 keys over 4 windows of 10 ms, handed over per watermark 0, 10, 20, 30:
    /// each worker gets its keys' elements, then every worker fires.
    fn feed(workers: &mut [Box<dyn GroupState>], rounds: std::ops::Range<i64>, out: &mut Vec<(u32, i64, i64, usize)>) {
        let t = EventTime::from_millis;
        for round in rounds {
            let w = Window::Interval { start: t(round * 10), end: t(round * 10 + 10) };
            let peers = workers.len();
            for (i, state) in workers.iter_mut().enumerate() {
                let mut input = Elements::with_capacity(120);
                for k in 0..40u32 {
                    if KeyGroup::of(&k).worker(peers) != i {
                        continue;
                    }
                    for j in 0..=(i64::from(k) + round) % 3 {
                        input.push((k, i64::from(k) * 100 + round * 10 + j), t(round * 10 + j), w, PaneInfo::NO_FIRING);
                    }
                }
                state.insert(Batch::new(input), Watermark(t(round * 10))).unwrap();
                let mut fired = Vec::new();
                state.fire(Watermark(t(round * 10)), &mut fired).unwrap();
                for (_, b) in fired {
                    out.extend(
                        b.try_into_elements::<(u32, i64, i64, usize)>()
                            .unwrap()
                            .into_iter_windowed()
                            .map(|wv| wv.value),
                    );
                }
            }
        }
    }

    #[test]
    fn state_saved_by_key_group_at_two_workers_restores_at_one_and_three() {
        let mut want = Vec::new();
        feed(&mut instances(1), 0..5, &mut want);
        want.sort_unstable();
        assert_eq!(want.len(), 4 * 40, "a sum per key for windows 0..4, fired by watermarks 10..40");

        for restored_at in [1, 3] {
            let mut got = Vec::new();
            let mut before = instances(2);
            feed(&mut before, 0..2, &mut got);
            let mut saved = BTreeMap::new();
            for state in &before {
                state.snapshot(&mut saved).unwrap();
            }
            assert!(saved.len() > 1, "the state is split into key groups");
            let mut after = instances(restored_at);
            for (group, bytes) in &saved {
                after[group.worker(restored_at)].restore(*group, bytes).unwrap();
            }
            let held: u64 = after.iter().map(|s| s.size().entries).sum();
            assert_eq!(held, 40, "window 1's state of every key came over");
            feed(&mut after, 2..5, &mut got);
            got.sort_unstable();
            assert_eq!(got, want, "saved at 2 workers, restored at {restored_at}");
        }
    }

    #[test]
    fn state_that_does_not_decode_is_an_error_that_names_the_step() {
        let mut state = instances(1).pop().unwrap();
        let err = state.restore(KeyGroup(7), b"not a snapshot").unwrap_err().to_string();
        assert!(err.contains("'S'") && err.contains("KeyGroup(7)"), "{err}");
    }
}
