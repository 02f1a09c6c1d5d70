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
use serde::{Deserialize, Serialize};

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
        let key = (k.clone(), w);
        // The key's encoding orders the expiry and timer sets: made only when they change.
        let kenc = (!self.cells.contains_key(&key)).then(|| encode(k));
        if let Some(kenc) = &kenc {
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
        let after = (cell.timers != before).then(|| cell.timers.clone());
        ran.map_err(|p| Error::from_panic(&self.step, p, Some(format!("{} ({what})", truncated_debug(k, 200)))))?;
        for (t, v) in out {
            self.out.entry(t).or_default().push((w, v));
        }
        if let Some(after) = after {
            let kenc = kenc.unwrap_or_else(|| encode(k));
            self.retime(k, w, &kenc, &before, &after);
        }
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

mod state;

pub use state::{BagState, CombiningState, MapState, OrderedListState, ValueState};

#[cfg(test)]
mod tests;
