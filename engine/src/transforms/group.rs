//! GroupByKey and Combine: the shuffle, keyed state per window, and firing by watermark.
//!
//! Both are one mechanism: elements are routed to the worker owning their key's key
//! group, folded into an accumulator per key and window, and emitted once the watermark
//! passes the window's end. GroupByKey's accumulator is the list of values; a combine
//! folds inputs into its `CombineFn`'s accumulator *before* the shuffle too (combiner
//! lifting), so only one partial result per key and window leaves each worker per bundle.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::batch::Batch;
use crate::clock::{Clock, ProcessingTime};
use crate::element::{Data, Elements, Key, WindowedValue};
use crate::error::{Error, Result, truncated_debug};
use crate::graph::{AccumulationMode, NodeKind, OutputInfo, PortRef, TimestampCombiner, Windowing};
use crate::keys::KeyGroup;
use crate::pane::{PaneInfo, Timing};
use crate::pipeline::PCollection;
use crate::runtime::{GroupFn, GroupState, SameWatermark, Shuffle, ShuffleFn, StepContext};
use crate::time::{EventTime, Watermark};
use crate::transforms::combine_fns::{CombineFn, Count};
use crate::trigger::{Trigger, TriggerState};
use crate::window::{Window, WindowFn};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Most elements in one emitted batch.
const OUTPUT_BATCH: usize = 4096;

/// What is folded per key and window after the shuffle, and how it becomes output.
trait Grouping: Send + Sync + 'static {
    type K: Key;
    /// What crosses the shuffle per key.
    type Shuffled: Data;
    type Acc: Send + Clone;
    type Out: Data;
    fn create(&self) -> Self::Acc;
    fn fold(&self, acc: &mut Self::Acc, x: Self::Shuffled);
    /// Folds `other` into `acc`: when merging windows merge.
    fn merge_acc(&self, acc: &mut Self::Acc, other: Self::Acc);
    fn extract(&self, acc: Self::Acc) -> Self::Out;
    /// Whether an empty global window still outputs `extract(create())`.
    fn default_on_empty(&self) -> bool {
        false
    }
    /// Takes `x` back out (a retraction). Only the groupings of retracting collections
    /// get retractions.
    fn retract(&self, _acc: &mut Self::Acc, _x: Self::Shuffled) {
        panic!(
            "a retraction reached a grouping whose input is not in accumulating-and-retracting mode; \
             keep the mode of a retracting collection downstream of it"
        );
    }
}

/// GroupByKey: the accumulator is the list of values.
struct ListGrouping<K, V>(PhantomData<fn() -> (K, V)>);

impl<K: Key, V: Data> Grouping for ListGrouping<K, V> {
    type K = K;
    type Shuffled = V;
    type Acc = Vec<V>;
    type Out = Vec<V>;
    fn create(&self) -> Vec<V> {
        Vec::new()
    }
    #[inline]
    fn fold(&self, acc: &mut Vec<V>, x: V) {
        acc.push(x);
    }
    fn merge_acc(&self, acc: &mut Vec<V>, other: Vec<V>) {
        acc.extend(other);
    }
    fn extract(&self, acc: Vec<V>) -> Vec<V> {
        acc
    }
}

/// Combine after lifting: partial accumulators cross the shuffle and are merged.
struct MergeGrouping<K, C> {
    combine: Arc<C>,
    default_on_empty: bool,
    _k: PhantomData<fn() -> K>,
}

impl<K: Key, C: CombineFn> Grouping for MergeGrouping<K, C> {
    type K = K;
    type Shuffled = C::Accum;
    type Acc = C::Accum;
    type Out = C::Output;
    fn create(&self) -> C::Accum {
        self.combine.create_accumulator()
    }
    #[inline]
    fn fold(&self, acc: &mut C::Accum, x: C::Accum) {
        self.combine.merge_accumulators(acc, x);
    }
    fn merge_acc(&self, acc: &mut C::Accum, other: C::Accum) {
        self.combine.merge_accumulators(acc, other);
    }
    fn extract(&self, acc: C::Accum) -> C::Output {
        self.combine.extract_output(acc)
    }
    fn default_on_empty(&self) -> bool {
        self.default_on_empty
    }
}

/// Combine without lifting: raw inputs cross the shuffle and are added after it, so
/// element-count triggers count elements, not partial accumulators.
struct AddGrouping<K, C> {
    combine: Arc<C>,
    _k: PhantomData<fn() -> K>,
}

impl<K: Key, C: CombineFn> Grouping for AddGrouping<K, C> {
    type K = K;
    type Shuffled = C::Input;
    type Acc = C::Accum;
    type Out = C::Output;
    fn create(&self) -> C::Accum {
        self.combine.create_accumulator()
    }
    fn fold(&self, acc: &mut C::Accum, x: C::Input) {
        self.combine.add_input(acc, &x);
    }
    fn merge_acc(&self, acc: &mut C::Accum, other: C::Accum) {
        self.combine.merge_accumulators(acc, other);
    }
    fn extract(&self, acc: C::Accum) -> C::Output {
        self.combine.extract_output(acc)
    }
}

/// A multiset of values with signed multiplicities, keyed by their encoding (every `Data`
/// serializes, so values need no `Eq`): what a grouping of a retracting collection keeps,
/// so that a retraction takes out exactly what an earlier pane put in. Multiplicities may
/// go below zero for a while (a retraction can arrive before what it retracts, from
/// another worker); only positive ones are output.
#[derive(Clone)]
struct Multiset<V>(BTreeMap<Vec<u8>, (V, i64)>);

impl<V: Data> Multiset<V> {
    fn add(&mut self, v: V, n: i64) {
        let key = bitcode::serialize(&v).expect("internal error: encoding a value for a multiset failed");
        let entry = self.0.entry(key).or_insert((v, 0));
        entry.1 += n;
        if entry.1 == 0 {
            let key = bitcode::serialize(&entry.0).expect("internal error: encoding a value for a multiset failed");
            self.0.remove(&key);
        }
    }

    fn merge(&mut self, other: Multiset<V>) {
        for (v, n) in other.0.into_values() {
            self.add(v, n);
        }
    }

    /// Every value, as many times as it is in the set, in the order of their encodings.
    fn values(self) -> impl Iterator<Item = V> {
        self.0.into_values().flat_map(|(v, n)| std::iter::repeat_n(v, n.max(0) as usize))
    }
}

/// Groupings of a retracting collection (accumulating-and-retracting mode).
struct MultisetGrouping;

impl MultisetGrouping {
    /// GroupByKey: the values in the set.
    fn values<K: Key, V: Data>() -> MultisetValues<K, V> {
        MultisetValues(PhantomData)
    }
    /// Combine: the combiner applied to the values in the set, when a pane fires.
    fn combined<K: Key, C: CombineFn>(combine: Arc<C>) -> MultisetCombine<K, C> {
        MultisetCombine { combine, _k: PhantomData }
    }
}

/// GroupByKey over a retracting collection.
struct MultisetValues<K, V>(PhantomData<fn() -> (K, V)>);

impl<K: Key, V: Data> Grouping for MultisetValues<K, V> {
    type K = K;
    type Shuffled = V;
    type Acc = Multiset<V>;
    type Out = Vec<V>;
    fn create(&self) -> Multiset<V> {
        Multiset(BTreeMap::new())
    }
    fn fold(&self, acc: &mut Multiset<V>, x: V) {
        acc.add(x, 1);
    }
    fn retract(&self, acc: &mut Multiset<V>, x: V) {
        acc.add(x, -1);
    }
    fn merge_acc(&self, acc: &mut Multiset<V>, other: Multiset<V>) {
        acc.merge(other);
    }
    fn extract(&self, acc: Multiset<V>) -> Vec<V> {
        acc.values().collect()
    }
}

/// Combine over a retracting collection.
struct MultisetCombine<K, C> {
    combine: Arc<C>,
    _k: PhantomData<fn() -> K>,
}

impl<K: Key, C: CombineFn> Grouping for MultisetCombine<K, C> {
    type K = K;
    type Shuffled = C::Input;
    type Acc = Multiset<C::Input>;
    type Out = C::Output;
    fn create(&self) -> Multiset<C::Input> {
        Multiset(BTreeMap::new())
    }
    fn fold(&self, acc: &mut Multiset<C::Input>, x: C::Input) {
        acc.add(x, 1);
    }
    fn retract(&self, acc: &mut Multiset<C::Input>, x: C::Input) {
        acc.add(x, -1);
    }
    fn merge_acc(&self, acc: &mut Multiset<C::Input>, other: Multiset<C::Input>) {
        acc.merge(other);
    }
    fn extract(&self, acc: Multiset<C::Input>) -> C::Output {
        let mut out = self.combine.create_accumulator();
        for v in acc.values() {
            self.combine.add_input(&mut out, &v);
        }
        self.combine.extract_output(out)
    }
}

/// Splits keyed elements by the worker that owns each key's group.
struct KeyShuffle<K, V>(PhantomData<fn() -> (K, V)>);

impl<K: Key, V: Data> ShuffleFn for KeyShuffle<K, V> {
    fn instantiate(&self, _ctx: &StepContext) -> Box<dyn Shuffle> {
        Box::new(KeyShuffle::<K, V>(PhantomData))
    }
}

impl<K: Key, V: Data> Shuffle for KeyShuffle<K, V> {
    fn route(&mut self, input: Batch, peers: usize, _arrival: Watermark, out: &mut Vec<Batch>) -> Result<()> {
        if peers == 1 {
            out.push(input.with_target(0));
            return Ok(());
        }
        let parts = input.into_elements::<(K, V)>().split_by(peers, |(k, _)| KeyGroup::of(k).worker(peers));
        out.extend(Batch::per_worker(parts));
        Ok(())
    }
}

/// Accumulators per key, each with the combined timestamp of the elements that count
/// towards an output timestamp (`None`: none did).
type Stamped<K, Acc> = FastMap<K, (Acc, Option<EventTime>)>;

/// Combiner lifting: folds inputs into per-key, per-window accumulators for a bundle,
/// and sends those instead of the inputs.
struct LiftedShuffle<K, C: CombineFn> {
    step: Arc<str>,
    combine: Arc<C>,
    /// Few windows are live in one bundle, so a short list searched from the most
    /// recently used beats a map keyed by (window, key) that clones every key. Each
    /// partial carries the combined timestamp of its elements that count towards a pane's
    /// output timestamp (see [`TimestampCombiner`]).
    partials: Vec<(Window, Stamped<K, C::Accum>)>,
    combiner: TimestampCombiner,
}

struct LiftedShuffleFn<K, C> {
    combine: Arc<C>,
    combiner: TimestampCombiner,
    _k: PhantomData<fn() -> K>,
}

impl<K: Key, C: CombineFn> ShuffleFn for LiftedShuffleFn<K, C> {
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn Shuffle> {
        Box::new(LiftedShuffle::<K, C> {
            step: ctx.name.clone(),
            combine: self.combine.clone(),
            partials: Vec::new(),
            combiner: self.combiner,
        })
    }
}

impl<K: Key, C: CombineFn> Shuffle for LiftedShuffle<K, C> {
    fn route(&mut self, input: Batch, _peers: usize, arrival: Watermark, _out: &mut Vec<Batch>) -> Result<()> {
        let input = input.into_elements::<(K, C::Input)>();
        let mut current = 0;
        let (combine, partials, combiner) = (&self.combine, &mut self.partials, self.combiner);
        catch_unwind(AssertUnwindSafe(|| {
            let mut slot = 0;
            for i in 0..input.len() {
                current = i;
                let w = input.window(i);
                if partials.get(slot).is_none_or(|(pw, _)| *pw != w) {
                    slot = match partials.iter().position(|(pw, _)| *pw == w) {
                        Some(s) => s,
                        None => {
                            partials.push((w, FastMap::default()));
                            partials.len() - 1
                        }
                    };
                }
                let map = &mut partials[slot].1;
                let (k, v) = input.value(i);
                let (acc, combined) = match map.get_mut(k) {
                    Some(entry) => entry,
                    None => map.entry(k.clone()).or_insert_with(|| (combine.create_accumulator(), None)),
                };
                combine.add_input(acc, v);
                combiner.fold(combined, input.timestamp(i), w.max_timestamp(), arrival);
            }
        }))
        .map_err(|p| Error::from_panic(&self.step, p, Some(truncated_debug(input.value(current), 200))))
    }

    fn flush(&mut self, peers: usize, out: &mut Vec<Batch>) -> Result<()> {
        let mut parts: Vec<Elements<(K, C::Accum)>> = (0..peers).map(|_| Elements::new()).collect();
        for (w, map) in self.partials.drain(..) {
            for (k, (acc, combined)) in map {
                let target = if peers == 1 { 0 } else { KeyGroup::of(&k).worker(peers) };
                // A partial none of whose elements count is stamped past its window's end,
                // so the keyed state leaves it out of the output timestamp.
                let ts = match self.combiner {
                    TimestampCombiner::EndOfWindow => w.max_timestamp(),
                    _ => combined.unwrap_or(EventTime::MAX),
                };
                parts[target].push((k, acc), ts, w, PaneInfo::NO_FIRING);
            }
        }
        out.extend(Batch::per_worker(parts));
        Ok(())
    }
}

/// The graph's face of a grouping step.
struct GroupStep<G: Grouping> {
    grouping: Arc<G>,
    shuffle: Box<dyn ShuffleFn>,
    /// For `combine_globally`: the one key, whose owner emits the default.
    default_key: Option<G::K>,
    /// The input's window function, when its windows merge (sessions).
    merging: Option<Arc<dyn WindowFn>>,
    /// The input's allowed lateness.
    lateness_ms: i64,
    /// Whether later panes repeat earlier ones.
    accumulating: bool,
    /// Whether each pane is preceded by a retraction of the previous one.
    retracting: bool,
    /// How panes get their output timestamps.
    combiner: TimestampCombiner,
    /// The trigger, when not the default.
    trigger: Option<Arc<Trigger>>,
    /// Whether dropped late elements go to a second output.
    late_output: bool,
}

impl<G: Grouping> GroupStep<G> {
    /// A grouping of input windowed as `w`, shuffled by key.
    fn keyed(grouping: G, w: &Windowing) -> Self {
        GroupStep {
            grouping: Arc::new(grouping),
            shuffle: Box::new(KeyShuffle::<G::K, G::Shuffled>(PhantomData)),
            default_key: None,
            merging: w.merging.clone(),
            lateness_ms: w.allowed_lateness_ms,
            accumulating: w.accumulation != AccumulationMode::Discarding,
            retracting: w.accumulation == AccumulationMode::AccumulatingAndRetracting,
            combiner: w.timestamp_combiner,
            trigger: w.trigger.clone(),
            late_output: false,
        }
    }
}

/// What a grouping dropped as too late: counted always, and kept for the late output when
/// the step has one. Every state drops through this, so counting and keeping cannot drift.
struct Dropped<G: Grouping> {
    count: u64,
    kept: Option<Elements<(G::K, G::Shuffled)>>,
}

impl<G: Grouping> Dropped<G> {
    fn new(keep: bool) -> Self {
        Dropped { count: 0, kept: keep.then(Elements::new) }
    }

    /// Drops one element.
    fn one(&mut self, wv: WindowedValue<(G::K, G::Shuffled)>) {
        self.count += 1;
        if let Some(kept) = &mut self.kept {
            kept.push_windowed(wv);
        }
    }

    /// Drops a whole batch.
    fn all(&mut self, input: Elements<(G::K, G::Shuffled)>) {
        match &mut self.kept {
            Some(kept) => input.into_iter_windowed().for_each(|wv| {
                self.count += 1;
                kept.push_windowed(wv);
            }),
            None => self.count += input.len() as u64,
        }
    }

    /// What was kept since the last call, as a batch.
    fn take(&mut self) -> Option<Batch> {
        let kept = self.kept.as_mut().map(std::mem::take)?;
        (!kept.is_empty()).then(|| Batch::new(kept))
    }
}

impl<G: Grouping> GroupFn for GroupStep<G> {
    fn shuffle(&self) -> &dyn ShuffleFn {
        self.shuffle.as_ref()
    }
    fn late_output(&self) -> bool {
        self.late_output
    }
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn GroupState> {
        // Merging windows with allowed lateness keep fired sessions, so a late element can
        // merge with them: the default trigger runs as the state machine it is in Beam,
        // an on-time pane and then a late pane per late element.
        // Retractions need every pane to know the one before it: the trigger machinery too.
        let machine = (self.merging.is_some() && self.lateness_ms > 0) || self.retracting;
        let trigger = self.trigger.clone().or_else(|| {
            machine.then(|| {
                let on_time = Trigger::after_watermark();
                Arc::new(if self.lateness_ms > 0 {
                    on_time.with_late_firings(Trigger::after_count(1))
                } else {
                    on_time
                })
            })
        });
        if let Some(trigger) = trigger {
            return Box::new(TriggeredState {
                step: ctx.name.clone(),
                grouping: self.grouping.clone(),
                trigger,
                clock: ctx.clock.clone(),
                lateness_ms: self.lateness_ms,
                accumulating: self.accumulating,
                retracting: self.retracting,
                combiner: self.combiner,
                dropped: Dropped::new(self.late_output),
                windows: BTreeMap::new(),
                merging: self.merging.clone().map(|f| (f, FastMap::default())),
                timers: BTreeMap::new(),
                ready: BTreeMap::new(),
            });
        }
        if let Some(window_fn) = &self.merging {
            return Box::new(MergingState {
                step: ctx.name.clone(),
                grouping: self.grouping.clone(),
                lateness_ms: self.lateness_ms,
                dropped: Dropped::new(self.late_output),
                window_fn: window_fn.clone(),
                sessions: FastMap::default(),
                due: BTreeMap::new(),
            });
        }
        let owns_default = self
            .default_key
            .as_ref()
            .filter(|k| KeyGroup::of(*k).worker(ctx.worker.peers) == ctx.worker.index)
            .cloned();
        Box::new(KeyedState {
            step: ctx.name.clone(),
            grouping: self.grouping.clone(),
            pending: BTreeMap::new(),
            combiner: self.combiner,
            fired: BTreeMap::new(),
            lateness_ms: self.lateness_ms,
            accumulating: self.accumulating,
            dropped: Dropped::new(self.late_output),
            owns_default,
            saw_global: false,
        })
    }
}

/// Per key of one window: how many panes it has fired, and (accumulating) what they held.
type FiredPanes<K, Acc> = FastMap<K, (u64, Option<Acc>)>;

/// When a pending pane fires, and which window it is for: an on-time pane fires when the
/// watermark passes the window's end, a late pane when it passes the watermark its
/// elements arrived at. Ordered by firing time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct PaneKey {
    fire_at: EventTime,
    window: Window,
    late: bool,
}

/// A pending pane: per key, the accumulator and the combined timestamp of the elements
/// that count towards the output timestamp (`None`: none did); and the earliest of those
/// timestamps, where the pane holds the watermark (its end, for end-of-window).
struct PaneState<K, Acc> {
    keys: Stamped<K, Acc>,
    hold: EventTime,
}

impl<K, Acc> PaneState<K, Acc> {
    fn new(hold: EventTime) -> Self {
        PaneState { keys: FastMap::default(), hold }
    }
}

/// One worker's state: pending panes (ordered by when they fire) with accumulators per
/// key, and, while a window may still get late data, how many panes each key has had.
struct KeyedState<G: Grouping> {
    step: Arc<str>,
    grouping: Arc<G>,
    pending: BTreeMap<PaneKey, PaneState<G::K, G::Acc>>,
    combiner: TimestampCombiner,
    /// Panes fired per key, by (expiry, window), with everything fired so far when
    /// accumulating; only kept with allowed lateness.
    fired: BTreeMap<(EventTime, Window), FiredPanes<G::K, G::Acc>>,
    accumulating: bool,
    lateness_ms: i64,
    dropped: Dropped<G>,
    owns_default: Option<G::K>,
    saw_global: bool,
}

impl<G: Grouping> KeyedState<G> {
    /// Where an element of window `w` that arrived at `arrival` goes, or None if too late.
    #[inline]
    fn pane_for(&self, w: Window, arrival: Watermark) -> Option<PaneKey> {
        let end = w.max_timestamp();
        if arrival.is_past(end.plus_millis(self.lateness_ms)) {
            return None;
        }
        let late = arrival.is_past(end);
        Some(PaneKey { fire_at: if late { arrival.0 } else { end }, window: w, late })
    }
}

impl<G: Grouping> KeyedState<G> {
    /// Adds one element of window `w`, timestamp `ts`, that arrived at `arrival`.
    #[inline]
    fn add(&mut self, w: Window, ts: EventTime, k: G::K, x: G::Shuffled, arrival: Watermark) {
        let Some(pane) = self.pane_for(w, arrival) else {
            self.dropped.one(WindowedValue { value: (k, x), timestamp: ts, window: w, pane: PaneInfo::NO_FIRING });
            return;
        };
        let g = &self.grouping;
        let state = self.pending.entry(pane).or_insert_with(|| PaneState::new(pane.fire_at));
        let (acc, combined) = state.keys.entry(k).or_insert_with(|| (g.create(), None));
        g.fold(acc, x);
        if self.combiner.fold(combined, ts, w.max_timestamp(), arrival) {
            state.hold = state.hold.min(ts);
        }
    }
}

impl<G: Grouping> GroupState for KeyedState<G> {
    fn insert(&mut self, input: Batch, arrival: Watermark) -> Result<()> {
        let input = input.try_into_elements::<(G::K, G::Shuffled)>()?;
        let step = self.step.clone();
        catch_unwind(AssertUnwindSafe(|| {
            // The common case: one window, end-of-window timestamps: one lookup per batch.
            if let (Some(w), TimestampCombiner::EndOfWindow) = (input.uniform_window(), self.combiner) {
                self.saw_global |= w == Window::Global;
                let Some(pane) = self.pane_for(w, arrival) else {
                    self.dropped.all(input);
                    return;
                };
                let g = &self.grouping;
                let state = self.pending.entry(pane).or_insert_with(|| PaneState::new(pane.fire_at));
                for (k, x) in input.into_values() {
                    g.fold(&mut state.keys.entry(k).or_insert_with(|| (g.create(), None)).0, x);
                }
            } else {
                for wv in input.into_iter_windowed() {
                    self.saw_global |= wv.window == Window::Global;
                    let (k, x) = wv.value;
                    self.add(wv.window, wv.timestamp, k, x, arrival);
                }
            }
        }))
        .map_err(|p| Error::from_panic(&step, p, None))
    }

    fn late_dropped(&self) -> u64 {
        self.dropped.count
    }

    fn take_late(&mut self) -> Option<Batch> {
        self.dropped.take()
    }

    fn earliest_pending(&self) -> Option<EventTime> {
        let first = match self.combiner {
            TimestampCombiner::EndOfWindow => self.pending.keys().next().map(|p| p.fire_at),
            // Few panes are pending at once; their holds are not ordered like their keys.
            _ => self.pending.values().map(|p| p.hold).min(),
        };
        match (&self.owns_default, self.saw_global) {
            (Some(_), false) => {
                Some(first.map_or(EventTime::END_OF_GLOBAL_WINDOW, |t| t.min(EventTime::END_OF_GLOBAL_WINDOW)))
            }
            _ => first,
        }
    }

    fn fire(&mut self, watermark: Watermark, out: &mut Vec<(EventTime, Batch)>) -> Result<()> {
        let g = &self.grouping;
        let step = &self.step;
        let lateness = self.lateness_ms;
        while let Some(entry) = self.pending.first_entry() {
            let pane_key = *entry.key();
            if !watermark.is_past(pane_key.fire_at) {
                break;
            }
            let accs = entry.remove().keys;
            let (window, end) = (pane_key.window, pane_key.window.max_timestamp());
            let expiry = end.plus_millis(lateness);
            // Without allowed lateness no pane can follow the on-time one: no bookkeeping.
            let mut counts = (lateness > 0).then(|| self.fired.entry((expiry, window)).or_default());
            // Output batches by output timestamp; one, at the window's end, by default.
            let mut batches = BTreeMap::new();
            for (k, (mut acc, combined)) in accs {
                let index = match counts.as_mut() {
                    Some(c) => {
                        let (n, total) = c.entry(k.clone()).or_insert((0, None));
                        if self.accumulating {
                            // This pane holds the earlier panes' elements too.
                            if let Some(earlier) = total.take() {
                                g.merge_acc(&mut acc, earlier);
                            }
                            *total = Some(acc.clone());
                        }
                        *n += 1;
                        *n - 1
                    }
                    None => 0,
                };
                let pane = PaneInfo {
                    timing: if pane_key.late { Timing::Late } else { Timing::OnTime },
                    index,
                    non_speculative_index: index as i64,
                    is_first: index == 0,
                    // Last when no more panes can come: no lateness, or fired at expiry.
                    is_last: lateness == 0 || pane_key.fire_at >= expiry,
                    retraction: false,
                };
                let v = catch_unwind(AssertUnwindSafe(|| g.extract(acc)))
                    .map_err(|p| Error::from_panic(step, p, Some(truncated_debug(&k, 200))))?;
                let ts = combined.unwrap_or(end);
                let batch: &mut Elements<_> = batches.entry(ts).or_default();
                batch.push((k, v), ts, window, pane);
                if batch.len() == OUTPUT_BATCH {
                    out.push((if pane_key.late { pane_key.fire_at } else { ts }, Batch::new(std::mem::take(batch))));
                }
            }
            for (ts, batch) in batches {
                if !batch.is_empty() {
                    out.push((if pane_key.late { pane_key.fire_at } else { ts }, Batch::new(batch)));
                }
            }
        }
        // Windows past their allowed lateness will get no more panes: forget their counts.
        while let Some(entry) = self.fired.first_entry() {
            if !watermark.is_past(entry.key().0) {
                break;
            }
            entry.remove();
        }
        if watermark.is_past(EventTime::END_OF_GLOBAL_WINDOW) && !self.saw_global {
            if let Some(k) = self.owns_default.take() {
                if g.default_on_empty() {
                    let v = catch_unwind(AssertUnwindSafe(|| g.extract(g.create())))
                        .map_err(|p| Error::from_panic(step, p, None))?;
                    let mut batch = Elements::new();
                    let end = EventTime::END_OF_GLOBAL_WINDOW;
                    batch.push((k, v), end, Window::Global, PaneInfo::ON_TIME_AND_ONLY_FIRING);
                    out.push((end, Batch::new(batch)));
                }
            }
        }
        Ok(())
    }
}

/// An output element of a grouping: a key and its pane's value.
type Output<G> = (<G as Grouping>::K, <G as Grouping>::Out);

/// One key's state in one window under an explicit trigger.
struct Cell<Acc, Out> {
    acc: Acc,
    /// Elements arrived since the last pane.
    fresh: bool,
    trigger: TriggerState,
    panes: u64,
    non_speculative: i64,
    on_time_done: bool,
    /// The combined timestamp of the pane's elements that count towards its output
    /// timestamp (on time, not behind the watermark they came at); `None`: none did, or
    /// the combiner is end-of-window.
    hold: Option<EventTime>,
    /// Retracting: the last pane output (value, timestamp, pane), to retract before the next.
    last: Option<(Out, EventTime, PaneInfo)>,
}

impl<Acc, Out> Cell<Acc, Out> {
    fn new(acc: Acc, trigger: TriggerState) -> Self {
        Cell { acc, fresh: false, trigger, panes: 0, non_speculative: 0, on_time_done: false, hold: None, last: None }
    }
}

/// One window's cells under an explicit trigger. Cells go in and out only through
/// [`TriggeredWindow::take`] and [`TriggeredWindow::put`], which keep the counts and
/// holds that summarize them.
struct TriggeredWindow<K, Acc, Out> {
    cells: FastMap<K, Cell<Acc, Out>>,
    /// Whether the firing at the end of the window has been evaluated.
    evaluated: bool,
    /// Cells with elements no pane has held yet, and whose trigger has not finished:
    /// they need a final pane when the window expires.
    unfired: usize,
    /// The cells' holds, as a multiset: the window holds the watermark at the least.
    holds: BTreeMap<EventTime, usize>,
}

impl<K: Key, Acc, Out> TriggeredWindow<K, Acc, Out> {
    fn new() -> Self {
        TriggeredWindow { cells: FastMap::default(), evaluated: false, unfired: 0, holds: BTreeMap::new() }
    }

    fn take(&mut self, k: &K) -> Option<Cell<Acc, Out>> {
        let cell = self.cells.remove(k)?;
        if cell.fresh && !cell.trigger.finished {
            self.unfired -= 1;
        }
        if let Some(h) = cell.hold {
            match self.holds.get_mut(&h) {
                Some(n) if *n > 1 => *n -= 1,
                _ => {
                    self.holds.remove(&h);
                }
            }
        }
        Some(cell)
    }

    fn put(&mut self, k: K, cell: Cell<Acc, Out>) {
        if cell.fresh && !cell.trigger.finished {
            self.unfired += 1;
        }
        if let Some(h) = cell.hold {
            *self.holds.entry(h).or_default() += 1;
        }
        self.cells.insert(k, cell);
    }

    /// Runs `f` on key `k`'s cell where it lies (None: the key has no cell here), and
    /// brings the counts and holds that summarize the cells up to date with what `f` did:
    /// the same bookkeeping as a [`TriggeredWindow::take`] and a
    /// [`TriggeredWindow::put`], without moving the cell out and back.
    fn update<R>(&mut self, k: &K, f: impl FnOnce(&mut Cell<Acc, Out>) -> R) -> Option<R> {
        let cell = self.cells.get_mut(k)?;
        let (was_unfired, old_hold) = (cell.fresh && !cell.trigger.finished, cell.hold);
        let r = f(cell);
        let (unfired, hold) = (cell.fresh && !cell.trigger.finished, cell.hold);
        match (was_unfired, unfired) {
            (false, true) => self.unfired += 1,
            (true, false) => self.unfired -= 1,
            _ => {}
        }
        if old_hold != hold {
            if let Some(h) = old_hold {
                match self.holds.get_mut(&h) {
                    Some(n) if *n > 1 => *n -= 1,
                    _ => {
                        self.holds.remove(&h);
                    }
                }
            }
            if let Some(h) = hold {
                *self.holds.entry(h).or_default() += 1;
            }
        }
        Some(r)
    }

    /// Where this window (of end `end`, expiring at `expiry`) holds the watermark.
    fn hold(&self, end: EventTime, expiry: EventTime) -> Option<EventTime> {
        let at_end = (!self.evaluated).then_some(end);
        let at_expiry = (self.unfired > 0).then_some(expiry);
        [at_end, at_expiry, self.holds.keys().next().copied()].into_iter().flatten().min()
    }
}

/// Windows by (end, window).
type WindowKey = (EventTime, Window);

/// A grouping's windows under a trigger, by (end, window).
type Windows<G> = BTreeMap<WindowKey, TriggeredWindow<<G as Grouping>::K, <G as Grouping>::Acc, <G as Grouping>::Out>>;

/// A merging window function, and each key's live windows.
type Merging<K> = (Arc<dyn WindowFn>, FastMap<K, Vec<Window>>);

/// One worker's state under an explicit trigger: a trigger state machine, accumulator and
/// pane counts per key and window. Triggers are evaluated after every element (on the
/// watermark the element was sent at), when the watermark passes a window's end, and when
/// the clock reaches a processing-time trigger's timer; a window's cells with unfired
/// elements fire a final pane when it expires (its end plus the allowed lateness), and its
/// state is freed. Under a merging window function (sessions), a key's windows merge as
/// elements arrive, with their accumulators, pane counts and trigger states
/// ([`Trigger::merge_states`]).
struct TriggeredState<G: Grouping> {
    step: Arc<str>,
    grouping: Arc<G>,
    trigger: Arc<Trigger>,
    clock: Arc<dyn Clock>,
    lateness_ms: i64,
    accumulating: bool,
    retracting: bool,
    combiner: TimestampCombiner,
    dropped: Dropped<G>,
    windows: Windows<G>,
    /// Merging windows: the window function and each key's live windows.
    merging: Option<Merging<G::K>>,
    /// Processing-time timers: when, and which cell. Entries go stale when a cell fires or
    /// merges; firing checks the cell's trigger again.
    timers: BTreeMap<ProcessingTime, Vec<(WindowKey, G::K)>>,
    /// Panes fired, waiting for `fire` to hand them out, by emission time.
    ready: BTreeMap<EventTime, Elements<Output<G>>>,
}

impl<G: Grouping> TriggeredState<G> {
    /// Makes a pane of `cell` and queues it; `watermark`: the input watermark now;
    /// `expiring`: no more panes can follow.
    fn pane(
        &mut self,
        k: &G::K,
        cell: &mut Cell<G::Acc, G::Out>,
        w: Window,
        watermark: Watermark,
        expiring: bool,
    ) -> Result<()> {
        let g = &self.grouping;
        let end = w.max_timestamp();
        let past_end = watermark.is_past(end);
        let timing = if !past_end {
            Timing::Early
        } else if !cell.on_time_done {
            cell.on_time_done = true;
            Timing::OnTime
        } else {
            Timing::Late
        };
        let index = cell.panes;
        cell.panes += 1;
        let non_speculative_index = if timing == Timing::Early {
            -1
        } else {
            cell.non_speculative += 1;
            cell.non_speculative - 1
        };
        let acc = if self.accumulating { cell.acc.clone() } else { std::mem::replace(&mut cell.acc, g.create()) };
        cell.fresh = false;
        let v = catch_unwind(AssertUnwindSafe(|| g.extract(acc)))
            .map_err(|p| Error::from_panic(&self.step, p, Some(truncated_debug(k, 200))))?;
        let is_last = cell.trigger.finished || expiring;
        let pane = PaneInfo { timing, index, non_speculative_index, is_first: index == 0, is_last, retraction: false };
        // Early and on-time panes go out at their timestamp, where the window held the
        // watermark; late ones at the watermark they fired at.
        let ts = cell.hold.take().unwrap_or(end);
        let at = if timing == Timing::Late { watermark.0.max(ts) } else { ts };
        let ready = self.ready.entry(at).or_default();
        if self.retracting {
            // The previous pane is taken back first, in the same batch, so a grouping
            // downstream never holds both.
            if let Some((old, old_ts, old_pane)) = cell.last.take() {
                ready.push((k.clone(), old), old_ts, w, PaneInfo { retraction: true, ..old_pane });
            }
            cell.last = Some((v.clone(), ts, pane));
        }
        ready.push((k.clone(), v), ts, w, pane);
        Ok(())
    }

    /// Fires `cell` if its trigger says so at processing time `now` (read once per batch:
    /// a clock read per element costs more than the rest of the trigger); the cell is out
    /// of its window meanwhile.
    fn maybe_fire(
        &mut self,
        k: &G::K,
        cell: &mut Cell<G::Acc, G::Out>,
        w: Window,
        watermark: Watermark,
        now: ProcessingTime,
    ) -> Result<bool> {
        let past_end = watermark.is_past(w.max_timestamp());
        if !self.trigger.should_fire(&cell.trigger, past_end, now) {
            return Ok(false);
        }
        self.trigger.on_fire(&mut cell.trigger, past_end, now);
        self.pane(k, cell, w, watermark, false)?;
        Ok(true)
    }

    /// Registers the cell's processing-time timer, if its trigger has one.
    fn schedule(&mut self, key: WindowKey, k: &G::K, cell: &Cell<G::Acc, G::Out>, now: ProcessingTime) {
        if let Some(t) = self.trigger.next_timer(&cell.trigger, now) {
            let due = self.timers.entry(t).or_default();
            if due.last().is_none_or(|(wk, dk)| *wk != key || dk != k) {
                due.push((key, k.clone()));
            }
        }
    }

    /// Evaluates the firing at the end of window `key` once: every key whose trigger fires
    /// when the watermark passes the end.
    fn end_of_window(&mut self, key: WindowKey, watermark: Watermark) -> Result<()> {
        let Some(window) = self.windows.get_mut(&key) else { return Ok(()) };
        if window.evaluated {
            return Ok(());
        }
        window.evaluated = true;
        let keys: Vec<G::K> = window.cells.keys().cloned().collect();
        let now = self.clock.now();
        for k in keys {
            let mut cell = self.windows.get_mut(&key).and_then(|win| win.take(&k)).expect("a listed cell");
            self.maybe_fire(&k, &mut cell, key.1, watermark, now)?;
            self.windows.get_mut(&key).expect("a live window").put(k, cell);
        }
        Ok(())
    }

    /// Merges key `k`'s windows after window `w` was added to them; returns the window
    /// `w` is now part of.
    fn merge_windows(&mut self, k: &G::K, w: Window, arrival: Watermark) -> Window {
        let Some((window_fn, by_key)) = &mut self.merging else { return w };
        let live = by_key.entry(k.clone()).or_default();
        if !live.contains(&w) {
            live.push(w);
        }
        let merges = window_fn.merge(live);
        let mut target = w;
        for (from, to) in merges {
            live.retain(|x| !from.contains(x));
            live.push(to);
            if from.contains(&w) {
                target = to;
            }
            let mut cells = Vec::new();
            for f in &from {
                let fk = (f.max_timestamp(), *f);
                if let Some(win) = self.windows.get_mut(&fk) {
                    if let Some(mut cell) = win.take(k) {
                        // A merged-away window's last pane no longer stands: take it back.
                        if let Some((old, old_ts, old_pane)) = cell.last.take() {
                            let retraction = PaneInfo { retraction: true, ..old_pane };
                            self.ready.entry(arrival.0.max(old_ts)).or_default().push(
                                (k.clone(), old),
                                old_ts,
                                *f,
                                retraction,
                            );
                        }
                        cells.push(cell);
                    }
                    if win.cells.is_empty() {
                        self.windows.remove(&fk);
                    }
                }
            }
            let key = (to.max_timestamp(), to);
            let existing = self.windows.get_mut(&key).and_then(|win| win.take(k));
            cells.extend(existing);
            let g = &self.grouping;
            let states: Vec<&TriggerState> = cells.iter().map(|c| &c.trigger).collect();
            let past_end = arrival.is_past(to.max_timestamp());
            let trigger = self.trigger.merge_states(&states, past_end);
            let mut merged = Cell::new(g.create(), trigger);
            // The merged window has had its on-time pane only if every part had, and the
            // watermark has passed the merged window's end too.
            merged.on_time_done = past_end && cells.iter().all(|c| c.on_time_done);
            for c in cells {
                g.merge_acc(&mut merged.acc, c.acc);
                merged.fresh |= c.fresh;
                merged.panes = merged.panes.max(c.panes);
                merged.non_speculative = merged.non_speculative.max(c.non_speculative);
                merged.hold = [merged.hold, c.hold].into_iter().flatten().min();
            }
            self.windows.entry(key).or_insert_with(TriggeredWindow::new).put(k.clone(), merged);
        }
        target
    }

    /// Forgets window `w` of key `k` (merging windows only).
    fn forget(&mut self, k: &G::K, w: Window) {
        if let Some((_, by_key)) = &mut self.merging {
            if let Some(live) = by_key.get_mut(k) {
                live.retain(|x| *x != w);
                if live.is_empty() {
                    by_key.remove(k);
                }
            }
        }
    }
}

impl<G: Grouping> GroupState for TriggeredState<G> {
    fn insert(&mut self, input: Batch, arrival: Watermark) -> Result<()> {
        let input = input.try_into_elements::<(G::K, G::Shuffled)>()?;
        let now = self.clock.now();
        // These elements were sent at `arrival`: the firings at the ends of the windows it
        // has passed hold only what came before them, so they happen first.
        let passed: Vec<WindowKey> = self
            .windows
            .iter()
            .take_while(|((end, _), _)| arrival.is_past(*end))
            .filter(|(_, win)| !win.evaluated)
            .map(|(key, _)| *key)
            .collect();
        for key in passed {
            self.end_of_window(key, arrival)?;
        }
        let (g, step) = (self.grouping.clone(), self.step.clone());
        let timed = self.trigger.uses_processing_time();
        for wv in input.into_iter_windowed() {
            let (w, ts) = (wv.window, wv.timestamp);
            // Lateness is judged on the element's own window, before any merging, as Beam does.
            if arrival.is_past(w.max_timestamp().plus_millis(self.lateness_ms)) {
                self.dropped.one(wv);
                continue;
            }
            let (k, x) = wv.value;
            let retraction = wv.pane.retraction;
            // The common case, without merging: the key's cell exists and this element does
            // not make it fire, so it is updated where it lies.
            let mut x = Some(x);
            let key = (w.max_timestamp(), w);
            if let (None, Some(window)) = (&self.merging, self.windows.get_mut(&key)) {
                let (trigger, combiner) = (&*self.trigger, self.combiner);
                let applied = window.update(&k, |cell| {
                    if cell.trigger.finished {
                        return Ok(false);
                    }
                    let x = x.take().expect("the element");
                    catch_unwind(AssertUnwindSafe(|| {
                        if retraction { g.retract(&mut cell.acc, x) } else { g.fold(&mut cell.acc, x) }
                    }))
                    .map_err(|p| Error::from_panic(&step, p, None))?;
                    cell.fresh = true;
                    combiner.fold(&mut cell.hold, ts, key.0, arrival);
                    trigger.on_element(&mut cell.trigger, 1, now);
                    Ok(trigger.should_fire(&cell.trigger, arrival.is_past(key.0), now))
                });
                match applied {
                    Some(Err(e)) => return Err(e),
                    Some(Ok(false)) if x.is_some() => {
                        // The trigger is done: the window is closed for this key.
                        let x = x.take().expect("the element");
                        self.dropped.one(WindowedValue { value: (k, x), timestamp: ts, window: w, pane: wv.pane });
                        continue;
                    }
                    Some(Ok(false)) => {
                        if timed {
                            let cell = &window.cells[&k];
                            if let Some(t) = trigger.next_timer(&cell.trigger, now) {
                                let due = self.timers.entry(t).or_default();
                                if due.last().is_none_or(|(wk, dk)| *wk != key || *dk != k) {
                                    due.push((key, k));
                                }
                            }
                        }
                        continue;
                    }
                    Some(Ok(true)) => {
                        // It fires: out of the window, as below, for the pane.
                        let mut cell = window.take(&k).expect("the cell just updated");
                        self.maybe_fire(&k, &mut cell, w, arrival, now)?;
                        self.schedule(key, &k, &cell, now);
                        self.windows.get_mut(&key).expect("the window just used").put(k, cell);
                        continue;
                    }
                    None => {}
                }
            }
            let x = x.take().expect("an element not yet applied");
            let target = self.merge_windows(&k, w, arrival);
            let key = (target.max_timestamp(), target);
            let window = self.windows.entry(key).or_insert_with(TriggeredWindow::new);
            let mut cell = window.take(&k).unwrap_or_else(|| {
                let mut cell = Cell::new(g.create(), self.trigger.new_state());
                // A cell whose first element came after the end never held the watermark
                // there, so it can have no on-time pane: its first pane is late (Beam's
                // PaneInfoTracker, which sees the output watermark past the window).
                cell.on_time_done = arrival.is_past(key.0);
                cell
            });
            if cell.trigger.finished {
                // The trigger is done: the window is closed for this key.
                window.put(k.clone(), cell);
                self.dropped.one(WindowedValue { value: (k, x), timestamp: ts, window: w, pane: wv.pane });
                continue;
            }
            catch_unwind(AssertUnwindSafe(|| {
                if retraction { g.retract(&mut cell.acc, x) } else { g.fold(&mut cell.acc, x) }
            }))
            .map_err(|p| Error::from_panic(&step, p, None))?;
            cell.fresh = true;
            self.combiner.fold(&mut cell.hold, ts, key.0, arrival);
            self.trigger.on_element(&mut cell.trigger, 1, now);
            self.maybe_fire(&k, &mut cell, target, arrival, now)?;
            self.schedule(key, &k, &cell, now);
            self.windows.get_mut(&key).expect("the window just used").put(k, cell);
        }
        Ok(())
    }

    /// A trigger that counts elements (early panes every n, a late pane per late
    /// element) makes which pane an element lands in depend on the order of the elements
    /// sent at one watermark; one that waits only on the watermark and the clock does not,
    /// over fixed and sliding windows.
    ///
    /// On the wall clock a processing-time trigger fires on what has arrived by then,
    /// which no order of application can make deterministic: such a state takes elements
    /// as they come, like Beam's runners. A scripted clock moves between epochs, so the
    /// state takes each complete epoch in turn and its panes are deterministic.
    ///
    /// Merging windows depend on the order too: an element can merge into a session whose
    /// trigger has finished (and be dropped with it) or, if another element came first,
    /// start a session of its own.
    fn same_watermark(&self) -> SameWatermark {
        let ordered = self.trigger.counts_elements() || self.merging.is_some();
        match (ordered, self.trigger.uses_processing_time(), self.clock.is_scripted()) {
            (false, _, _) | (true, true, false) => SameWatermark::AsTheyCome,
            (true, false, _) => SameWatermark::Whole,
            (true, true, true) => SameWatermark::WholePerEpoch,
        }
    }

    /// Adds the elements sent at `arrival` in a canonical order (timestamp, window,
    /// retraction first, then the value's encoding), so that the panes do not depend on
    /// which sender's batch came first, nor on how many workers the senders were.
    fn insert_all(&mut self, input: Vec<Batch>, arrival: Watermark) -> Result<()> {
        if self.same_watermark() == SameWatermark::AsTheyCome {
            return input.into_iter().try_for_each(|b| self.insert(b, arrival));
        }
        let mut all: Vec<WindowedValue<(G::K, G::Shuffled)>> = Vec::new();
        for b in input {
            all.extend(b.try_into_elements::<(G::K, G::Shuffled)>()?.into_iter_windowed());
        }
        all.sort_by_cached_key(|wv| {
            let bytes = bitcode::serialize(&wv.value).expect("internal error: encoding a value to order it failed");
            (wv.timestamp, wv.window, !wv.pane.retraction, bytes)
        });
        self.insert(Batch::new(all.into_iter().collect::<Elements<_>>()), arrival)
    }

    fn late_dropped(&self) -> u64 {
        self.dropped.count
    }

    fn take_late(&mut self) -> Option<Batch> {
        self.dropped.take()
    }

    fn earliest_pending(&self) -> Option<EventTime> {
        let ready = self.ready.keys().next().copied();
        // Few windows are live at once.
        let windows = self.windows.iter().filter_map(|((end, _), w)| w.hold(*end, end.plus_millis(self.lateness_ms)));
        ready.into_iter().chain(windows).min()
    }

    fn next_timer(&self) -> Option<ProcessingTime> {
        self.timers.keys().next().copied()
    }

    fn fire(&mut self, watermark: Watermark, out: &mut Vec<(EventTime, Batch)>) -> Result<()> {
        // Processing-time timers that are due.
        let now = self.clock.now();
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > now {
                break;
            }
            for (key, k) in entry.remove() {
                let Some(mut cell) = self.windows.get_mut(&key).and_then(|win| win.take(&k)) else { continue };
                self.maybe_fire(&k, &mut cell, key.1, watermark, now)?;
                self.schedule(key, &k, &cell, now);
                self.windows.get_mut(&key).expect("a live window").put(k, cell);
            }
        }
        let keys: Vec<WindowKey> =
            self.windows.keys().take_while(|(end, _)| watermark.is_past(*end)).copied().collect();
        for key in keys {
            self.end_of_window(key, watermark)?;
            if watermark.is_past(key.0.plus_millis(self.lateness_ms)) {
                // The window closes: what no pane has held yet fires as the final pane.
                let mut window = self.windows.remove(&key).expect("a listed window");
                for (k, mut cell) in window.cells.drain() {
                    if cell.fresh && !cell.trigger.finished {
                        self.pane(&k, &mut cell, key.1, watermark, true)?;
                    }
                    self.forget(&k, key.1);
                }
            }
        }
        for (at, batch) in std::mem::take(&mut self.ready) {
            out.push((at, Batch::new(batch)));
        }
        Ok(())
    }
}

/// One worker's state under a merging window function: each key's disjoint windows with
/// their accumulators, and an index of window ends so firing need not scan every key.
struct MergingState<G: Grouping> {
    step: Arc<str>,
    grouping: Arc<G>,
    lateness_ms: i64,
    dropped: Dropped<G>,
    window_fn: Arc<dyn WindowFn>,
    sessions: FastMap<G::K, Vec<(Window, G::Acc)>>,
    /// Keys by the end (max timestamp) of one of their windows. Entries go stale when a
    /// window merges into a later one; firing skips those.
    due: BTreeMap<EventTime, Vec<G::K>>,
}

impl<G: Grouping> MergingState<G> {
    fn add(&mut self, k: G::K, window: Window, x: G::Shuffled) {
        let g = &self.grouping;
        let windows = self.sessions.entry(k.clone()).or_default();
        let mut acc = g.create();
        g.fold(&mut acc, x);
        match windows.iter_mut().find(|(w, _)| *w == window) {
            Some((_, existing)) => g.merge_acc(existing, acc),
            None => windows.push((window, acc)),
        }
        let current: Vec<Window> = windows.iter().map(|(w, _)| *w).collect();
        let mut ends = vec![window.max_timestamp()];
        for (from, to) in self.window_fn.merge(&current) {
            let mut merged = g.create();
            windows.retain_mut(|(w, a)| {
                if from.contains(w) {
                    g.merge_acc(&mut merged, std::mem::replace(a, g.create()));
                    false
                } else {
                    true
                }
            });
            windows.push((to, merged));
            ends.push(to.max_timestamp());
        }
        for end in ends {
            if windows.iter().any(|(w, _)| w.max_timestamp() == end) {
                let keys = self.due.entry(end).or_default();
                if keys.last() != Some(&k) {
                    keys.push(k.clone());
                }
            }
        }
    }
}

impl<G: Grouping> GroupState for MergingState<G> {
    fn insert(&mut self, input: Batch, arrival: Watermark) -> Result<()> {
        let input = input.try_into_elements::<(G::K, G::Shuffled)>()?;
        let step = self.step.clone();
        catch_unwind(AssertUnwindSafe(|| {
            for wv in input.into_iter_windowed() {
                // Lateness is judged on the element's own window, before merging, as Beam does.
                if arrival.is_past(wv.window.max_timestamp().plus_millis(self.lateness_ms)) {
                    self.dropped.one(wv);
                    continue;
                }
                let (k, x) = wv.value;
                self.add(k, wv.window, x);
            }
        }))
        .map_err(|p| Error::from_panic(&step, p, None))
    }

    fn late_dropped(&self) -> u64 {
        self.dropped.count
    }

    fn take_late(&mut self) -> Option<Batch> {
        self.dropped.take()
    }

    fn earliest_pending(&self) -> Option<EventTime> {
        self.due.keys().next().copied()
    }

    fn fire(&mut self, watermark: Watermark, out: &mut Vec<(EventTime, Batch)>) -> Result<()> {
        while let Some(entry) = self.due.first_entry() {
            let end = *entry.key();
            if !watermark.is_past(end) {
                break;
            }
            let keys = entry.remove();
            let mut batch = Elements::new();
            for k in keys {
                let Some(windows) = self.sessions.get_mut(&k) else { continue };
                let mut i = 0;
                while i < windows.len() {
                    if windows[i].0.max_timestamp() == end {
                        let (w, acc) = windows.swap_remove(i);
                        let g = &self.grouping;
                        let v = catch_unwind(AssertUnwindSafe(|| g.extract(acc)))
                            .map_err(|p| Error::from_panic(&self.step, p, Some(truncated_debug(&k, 200))))?;
                        batch.push((k.clone(), v), end, w, PaneInfo::ON_TIME_AND_ONLY_FIRING);
                    } else {
                        i += 1;
                    }
                }
                if windows.is_empty() {
                    self.sessions.remove(&k);
                }
            }
            if !batch.is_empty() {
                out.push((end, Batch::new(batch)));
            }
        }
        Ok(())
    }
}

/// A grouping's results and the elements it dropped as too late.
pub type WithLate<T, L> = (PCollection<T>, PCollection<L>);

/// Adds a grouping step with a second output for the elements it drops as too late.
fn add_group_with_late<G: Grouping>(
    input: &PCollection<(G::K, G::Shuffled)>,
    transform: &str,
    mut step: GroupStep<G>,
) -> WithLate<Output<G>, (G::K, G::Shuffled)> {
    step.late_output = true;
    let p = input.pipeline();
    let main = input.derived_info::<(G::K, G::Out)>();
    let late = OutputInfo { tag: Some("late".into()), ..input.derived_info::<(G::K, G::Shuffled)>() };
    let node = p.add_step(transform, NodeKind::Group(Arc::new(step)), vec![input.port()], vec![main, late]);
    (PCollection::from_port(p, PortRef { node, port: 0 }), PCollection::from_port(p, PortRef { node, port: 1 }))
}

fn add_group<G: Grouping, I: Data>(
    input: &PCollection<I>,
    transform: &str,
    step: GroupStep<G>,
) -> PCollection<(G::K, G::Out)> {
    let p = input.pipeline();
    let info = input.derived_info::<(G::K, G::Out)>();
    let node = p.add_step(transform, NodeKind::Group(Arc::new(step)), vec![input.port()], vec![info]);
    PCollection::from_port(p, PortRef { node, port: 0 })
}

impl<K: Key, V: Data> PCollection<(K, V)> {
    /// Groups the values of each key, per window (Beam's `GroupByKey`).
    ///
    /// # Watermarks
    /// A window's groups are emitted once the watermark passes the window's end, with the
    /// window's end as their timestamp; batch input fires every window once, at the end.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     p.create(vec![('a', 1), ('b', 2), ('a', 3)]).group_by_key()
    /// });
    /// out.iter_mut().for_each(|(_, vs)| vs.sort());
    /// out.sort();
    /// assert_eq!(out, [('a', vec![1, 3]), ('b', vec![2])]);
    /// ```
    pub fn group_by_key(&self) -> PCollection<(K, Vec<V>)> {
        let w = self.info().windowing;
        if w.accumulation == AccumulationMode::AccumulatingAndRetracting {
            return add_group(self, "GroupByKey", GroupStep::keyed(MultisetGrouping::values::<K, V>(), &w));
        }
        add_group(self, "GroupByKey", GroupStep::keyed(ListGrouping::<K, V>(PhantomData), &w))
    }

    /// Combines the values of each key, per window, with a [`CombineFn`]; inputs are
    /// pre-combined on each worker before the shuffle.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     p.create(vec![('a', 1), ('b', 2), ('a', 3)]).combine_per_key(Sum::new())
    /// });
    /// out.sort();
    /// assert_eq!(out, [('a', 4), ('b', 2)]);
    /// ```
    pub fn combine_per_key<C: CombineFn<Input = V>>(&self, combine: C) -> PCollection<(K, C::Output)> {
        self.combine_per_key_as("CombinePerKey", combine)
    }

    fn combine_per_key_as<C: CombineFn<Input = V>>(&self, transform: &str, combine: C) -> PCollection<(K, C::Output)> {
        add_combine(self, transform, combine, None, false)
    }

    /// [`group_by_key`](Self::group_by_key), with a second collection of the elements
    /// dropped as later than the allowed lateness (or arriving after a trigger closed their
    /// window), with their timestamps and windows (Flink's `sideOutputLateData`).
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let ms = EventTime::from_millis;
    /// let script = TestStream::new()
    ///     .add_elements(vec![((1u8, 'a'), ms(5))])
    ///     .advance_watermark_to(ms(20))
    ///     .add_elements(vec![((1u8, 'b'), ms(6))]); // too late for [0, 10)
    /// let (groups, late) = riffle_timely::testing::run_bounded2(|p| {
    ///     p.test_stream(script).window_into(FixedWindows::of_millis(10)).group_by_key_with_late()
    /// });
    /// assert_eq!(groups, [(1, vec!['a'])]);
    /// assert_eq!(late, [(1, 'b')]);
    /// ```
    pub fn group_by_key_with_late(&self) -> WithLate<(K, Vec<V>), (K, V)> {
        let w = self.info().windowing;
        if w.accumulation == AccumulationMode::AccumulatingAndRetracting {
            return add_group_with_late(self, "GroupByKey", GroupStep::keyed(MultisetGrouping::values::<K, V>(), &w));
        }
        add_group_with_late(self, "GroupByKey", GroupStep::keyed(ListGrouping::<K, V>(PhantomData), &w))
    }

    /// [`combine_per_key`](Self::combine_per_key), with a second collection of the inputs
    /// dropped as too late, as [`group_by_key_with_late`](Self::group_by_key_with_late).
    /// The inputs cross the shuffle unlifted, so that the late ones can be handed back.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let ms = EventTime::from_millis;
    /// let script = TestStream::new()
    ///     .add_elements(vec![((1u8, 2i64), ms(5))])
    ///     .advance_watermark_to(ms(20))
    ///     .add_elements(vec![((1u8, 40i64), ms(6))]);
    /// let (sums, late) = riffle_timely::testing::run_bounded2(|p| {
    ///     p.test_stream(script).window_into(FixedWindows::of_millis(10)).combine_per_key_with_late(Sum::new())
    /// });
    /// assert_eq!((sums, late), (vec![(1, 2)], vec![(1, 40)]));
    /// ```
    pub fn combine_per_key_with_late<C: CombineFn<Input = V>>(&self, combine: C) -> WithLate<(K, C::Output), (K, V)> {
        let w = self.info().windowing;
        let combine = Arc::new(combine);
        if w.accumulation == AccumulationMode::AccumulatingAndRetracting {
            return add_group_with_late(
                self,
                "CombinePerKey",
                GroupStep::keyed(MultisetGrouping::combined::<K, C>(combine), &w),
            );
        }
        add_group_with_late(self, "CombinePerKey", GroupStep::keyed(AddGrouping { combine, _k: PhantomData }, &w))
    }
}

/// A combine step: lifted before the shuffle unless something counts elements; then raw
/// inputs cross the shuffle so element-count triggers count elements; with retractions,
/// the inputs are kept as a multiset so that retracted ones can be taken out.
fn add_combine<K: Key, C: CombineFn>(
    input: &PCollection<(K, C::Input)>,
    transform: &str,
    combine: C,
    default_key: Option<K>,
    default_on_empty: bool,
) -> PCollection<(K, C::Output)> {
    let w = input.info().windowing;
    let combine = Arc::new(combine);
    if w.accumulation == AccumulationMode::AccumulatingAndRetracting {
        return add_group(input, transform, GroupStep::keyed(MultisetGrouping::combined::<K, C>(combine), &w));
    }
    // A lifted combine folds what a worker has of one bundle into one partial per key and
    // window, so a trigger that counts elements would count partials, whose makeup depends
    // on bundling. So does the default trigger on sessions with allowed lateness, which
    // fires a late pane per late element. Triggers that wait only on the watermark and
    // the clock see the same panes either way, and are lifted.
    let counts = match &w.trigger {
        Some(t) => t.counts_elements(),
        None => w.merging.is_some() && w.allowed_lateness_ms > 0,
    };
    if counts {
        return add_group(input, transform, GroupStep::keyed(AddGrouping { combine, _k: PhantomData }, &w));
    }
    let grouping = MergeGrouping { combine: combine.clone(), default_on_empty, _k: PhantomData };
    let shuffle = LiftedShuffleFn::<K, C> { combine, combiner: w.timestamp_combiner, _k: PhantomData };
    let step = GroupStep { shuffle: Box::new(shuffle), default_key, ..GroupStep::keyed(grouping, &w) };
    add_group(input, transform, step)
}

impl<T: Data> PCollection<T> {
    /// Combines all elements of each window into one value (Beam's `Combine.globally`).
    /// In the global window, an empty input still gives the combiner's empty result
    /// (0 for a sum) where [`CombineFn::has_default`] says so.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let out = riffle_timely::testing::run_bounded(|p| p.create(vec![3, 4, 5]).combine_globally(Sum::new()));
    /// assert_eq!(out, [12]);
    /// let empty = riffle_timely::testing::run_bounded(|p| p.create(Vec::<i64>::new()).combine_globally(Sum::new()));
    /// assert_eq!(empty, [0]);
    /// ```
    pub fn combine_globally<C: CombineFn<Input = T>>(&self, combine: C) -> PCollection<C::Output> {
        let default_on_empty = combine.has_default() && self.info().windowing.is_global;
        let keyed =
            crate::transforms::map::closure_step(self, "KeyForCombine", |x: &T, ctx| ctx.output(((), x.clone())));
        add_combine(&keyed, "CombineGlobally", combine, Some(()), default_on_empty).values()
    }
}

impl<T: Key> PCollection<T> {
    /// How often each distinct element occurs (Beam's `Count.perElement`).
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec!['a', 'b', 'a']).count_per_element());
    /// out.sort();
    /// assert_eq!(out, [('a', 2), ('b', 1)]);
    /// ```
    pub fn count_per_element(&self) -> PCollection<(T, u64)> {
        crate::transforms::map::closure_step(self, "PairWithUnit", |x: &T, ctx| ctx.output((x.clone(), ())))
            .combine_per_key_as("CountPerElement", Count::new())
    }

    /// Each distinct element once per window (Beam's `Distinct`).
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec![3, 1, 3, 3, 1]).distinct());
    /// out.sort();
    /// assert_eq!(out, [1, 3]);
    /// ```
    pub fn distinct(&self) -> PCollection<T> {
        crate::transforms::map::closure_step(self, "PairWithUnit", |x: &T, ctx| ctx.output((x.clone(), ())))
            .combine_per_key_as("Distinct", Count::new())
            .keys()
    }
}
