//! GroupByKey and Combine: the shuffle, keyed state per window, and firing by watermark.
//!
//! Both are one mechanism: elements are routed to the worker owning their key's key
//! group, folded into an accumulator per key and window, and emitted once the watermark
//! passes the window's end. GroupByKey's accumulator is the list of values; a combine
//! folds inputs into its `CombineFn`'s accumulator *before* the shuffle too (combiner
//! lifting), so only one partial result per key and window leaves each worker per bundle.
//!
//! Here: the graph's step and the transforms (`mod.rs`); what is folded (`groupings.rs`);
//! the routing before the exchange (`shuffle.rs`); and one worker's state under the
//! default trigger (`keyed.rs`), an explicit trigger (`triggered.rs`), and merging windows
//! with the default trigger (`merging.rs`); saving any of those by key group for a
//! checkpoint, and restoring it at another worker count (`saved.rs`).

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::clock::{Clock, ProcessingTime};
use crate::element::{Data, Elements, Key, Stamps, WindowedValue};
use crate::error::{Error, Result, truncated_debug};
use crate::graph::{AccumulationMode, NodeKind, OutputInfo, PortRef, TimestampCombiner, Windowing};
use crate::keys::KeyGroup;
use crate::pane::{PaneInfo, Timing};
use crate::pipeline::PCollection;
use crate::runtime::{GroupFn, GroupState, SameWatermark, Shuffle, ShuffleFn, StateSize, StepContext};
use crate::time::{EventTime, Watermark};
use crate::transforms::combine_fns::{CombineFn, Count};
use crate::trigger::{Trigger, TriggerState};
use crate::window::{Window, WindowFn};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Most elements in one emitted batch.
const OUTPUT_BATCH: usize = 4096;

mod groupings;
mod keyed;
mod merging;
mod saved;
mod shuffle;
mod triggered;

use groupings::*;
use keyed::*;
use merging::*;
pub(crate) use shuffle::KeyShuffle;
use shuffle::*;
use triggered::*;

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
                spare: Vec::new(),
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
            default_settled: false,
        })
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
    // A trigger that finishes while its window may still get elements drops those as
    // its window closes for the key: per partial, when lifted. Such combines are not
    // lifted either, so that every dropped element is counted.
    let counts = match &w.trigger {
        Some(t) => t.counts_elements() || (t.may_finish() && w.allowed_lateness_ms > 0),
        None => w.merging.is_some() && w.allowed_lateness_ms > 0,
    };
    if counts {
        return add_group(input, transform, GroupStep::keyed(AddGrouping { combine, _k: PhantomData }, &w));
    }
    let grouping = MergeGrouping { combine: combine.clone(), default_on_empty, _k: PhantomData };
    let shuffle = LiftedShuffleFn::<K, C> {
        combine,
        combiner: w.timestamp_combiner,
        lateness_ms: w.allowed_lateness_ms,
        _k: PhantomData,
    };
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
        let keyed = crate::transforms::map::map_step(self, "KeyForCombine", |x: T| ((), x));
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
        crate::transforms::map::map_step(self, "PairWithUnit", |x: T| (x, ()))
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
        crate::transforms::map::map_step(self, "PairWithUnit", |x: T| (x, ()))
            .combine_per_key_as("Distinct", Count::new())
            .keys()
    }
}

#[cfg(test)]
mod tests;
