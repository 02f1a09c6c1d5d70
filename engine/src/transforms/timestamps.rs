//! Assigning event timestamps and windows.

use std::sync::Arc;

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::batch::Batch;
use crate::element::{Data, Elements};
use crate::error::{Error, Result};
use crate::graph::{NodeKind, OutputInfo, PortRef, Windowing};
use crate::pipeline::PCollection;
use crate::runtime::{ParDoFn, ParDoInstance, PortBatches, StepContext};
use crate::time::EventTime;
use crate::transforms::map::timestamps_step;
use crate::window::{Window, WindowFn};

impl<T: Data> PCollection<T> {
    /// Sets each element's event timestamp to `f(element)` (Beam's `WithTimestamps`).
    /// `f` borrows the element, which goes on unchanged (moved, not cloned) with its new
    /// timestamp, its window and its pane; a panic's error names the element's value.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let out = riffle_timely::testing::run_bounded_windowed(|p| {
    ///     p.create(vec![1_000i64, 2_000]).with_timestamps(|ms| EventTime::from_millis(*ms))
    /// });
    /// assert!(out.iter().all(|wv| wv.timestamp.millis() == wv.value));
    /// ```
    pub fn with_timestamps(&self, f: impl Fn(&T) -> EventTime + Send + Sync + 'static) -> PCollection<T> {
        timestamps_step(self, "WithTimestamps", f)
    }

    /// Assigns each element to windows by its timestamp (Beam's `Window.into`); the
    /// groupings downstream then group per key *and window*.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     p.create(vec![('k', 1_000i64), ('k', 1_500), ('k', 2_500)])
    ///         .with_timestamps(|(_, ms)| EventTime::from_millis(*ms))
    ///         .window_into(FixedWindows::of_millis(1_000))
    ///         .map_values(|_| 1u64)
    ///         .combine_per_key(Count::new())
    /// });
    /// out.sort();
    /// assert_eq!(out, [('k', 1), ('k', 2)]);
    /// ```
    pub fn window_into(&self, window_fn: impl WindowFn) -> PCollection<T> {
        let window_fn = Arc::new(window_fn);
        let merging = window_fn.is_merging().then(|| window_fn.clone() as Arc<dyn WindowFn>);
        let windowing = Windowing {
            window_fn: window_fn.describe(),
            is_global: window_fn.is_global(),
            default_trigger: true,
            merging,
            assign: window_fn.clone(),
            allowed_lateness_ms: self.info().windowing.allowed_lateness_ms,
            accumulation: self.info().windowing.accumulation,
            timestamp_combiner: self.info().windowing.timestamp_combiner,
            trigger: self.info().windowing.trigger,
        };
        let info = OutputInfo { windowing, ..self.derived_info::<T>() };
        let p = self.pipeline();
        let step = AssignWindows::<T, _> { window_fn, _t: std::marker::PhantomData };
        let node = p.add_step("WindowInto", NodeKind::ParDo(Arc::new(step)), vec![self.port()], vec![info]);
        PCollection::from_port(p, PortRef { node, port: 0 })
    }
}

impl<T: Data> PCollection<T> {
    /// Sets how panes of the groupings downstream get their output timestamps (Beam's
    /// `withTimestampCombiner`); the default is the end of the window.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let ms = EventTime::from_millis;
    /// let out = riffle_timely::testing::run_bounded_windowed(|p| {
    ///     p.create_timestamped(vec![(1u8, ms(3)), (1, ms(7))])
    ///         .map(|k| (k, 1u64))
    ///         .window_into(FixedWindows::of_millis(10))
    ///         .with_timestamp_combiner(TimestampCombiner::Earliest)
    ///         .combine_per_key(Count::new())
    /// });
    /// assert_eq!(out[0].timestamp, ms(3));
    /// ```
    pub fn with_timestamp_combiner(&self, combiner: crate::graph::TimestampCombiner) -> PCollection<T> {
        let mut info = self.derived_info::<T>();
        info.windowing.timestamp_combiner = combiner;
        crate::transforms::par_do::add_windowing_step(self, "TimestampCombiner", info)
    }

    /// Sets when the groupings downstream fire panes (Beam's `Window.triggering`),
    /// instead of the default (once when the watermark passes the window's end, then for
    /// late data). Triggers are evaluated after every element; a finished trigger closes
    /// the window for its key, and its later elements are dropped and counted.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let ms = EventTime::from_millis;
    /// let script = TestStream::new().add_elements((1..=5).map(|i| (7u8, ms(i))).collect());
    /// let out = riffle_timely::testing::run_bounded_windowed(|p| {
    ///     p.test_stream(script)
    ///         .map(|k| (k, 1u64))
    ///         .window_into(FixedWindows::of_millis(10))
    ///         .triggering(Trigger::after_watermark().with_early_firings(Trigger::after_count(2)))
    ///         .combine_per_key(Count::new())
    /// });
    /// let mut panes: Vec<_> = out.iter().map(|wv| (wv.pane.index, wv.pane.timing, wv.value.1)).collect();
    /// panes.sort();
    /// assert_eq!(panes, [(0, Timing::Early, 2), (1, Timing::Early, 2), (2, Timing::OnTime, 1)]);
    /// ```
    pub fn triggering(&self, trigger: crate::trigger::Trigger) -> PCollection<T> {
        let mut info = self.derived_info::<T>();
        info.windowing.trigger = Some(Arc::new(trigger));
        info.windowing.default_trigger = false;
        crate::transforms::par_do::add_windowing_step(self, "Triggering", info)
    }

    /// Makes each later pane of a window hold everything the window has received so far
    /// (Beam's `accumulatingFiredPanes`), instead of only what arrived since the previous
    /// pane. Under the default trigger that changes the late panes.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let ms = EventTime::from_millis;
    /// let script = TestStream::new()
    ///     .add_elements(vec![(1u8, ms(5))])
    ///     .advance_watermark_to(ms(15))
    ///     .add_elements(vec![(1u8, ms(6))]);
    /// let out = riffle_timely::testing::run_bounded_windowed(|p| {
    ///     p.test_stream(script)
    ///         .map(|k| (k, 1u64))
    ///         .window_into(FixedWindows::of_millis(10))
    ///         .with_allowed_lateness(10)
    ///         .accumulating_fired_panes()
    ///         .combine_per_key(Count::new())
    /// });
    /// let mut panes: Vec<_> = out.iter().map(|wv| (wv.pane.timing, wv.value.1)).collect();
    /// panes.sort();
    /// assert_eq!(panes, [(Timing::OnTime, 1), (Timing::Late, 2)]);
    /// ```
    pub fn accumulating_fired_panes(&self) -> PCollection<T> {
        let mut info = self.derived_info::<T>();
        info.windowing.accumulation = crate::graph::AccumulationMode::Accumulating;
        crate::transforms::par_do::add_windowing_step(self, "AccumulatingFiredPanes", info)
    }

    /// Each pane holds everything the window has received so far, and is preceded by a
    /// retraction of the previous pane of its window and key (a copy of it with
    /// [`PaneInfo::retraction`](crate::PaneInfo) set); when session windows merge, the
    /// merged-away windows' last panes are retracted too. Groupings and combines
    /// downstream take retractions out, so what they hold is always the latest panes.
    /// Beam designed this mode and never shipped it.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let ms = EventTime::from_millis;
    /// let script = TestStream::new().add_elements(vec![((1u8, 2i64), ms(1)), ((1u8, 3i64), ms(2))]);
    /// let out = riffle_timely::testing::run_bounded_windowed(|p| {
    ///     p.test_stream(script)
    ///         .window_into(FixedWindows::of_millis(10))
    ///         .triggering(Trigger::after_watermark().with_early_firings(Trigger::after_count(1)))
    ///         .accumulating_and_retracting_fired_panes()
    ///         .combine_per_key(Sum::new())
    /// });
    /// let mut panes: Vec<_> = out.iter().map(|wv| (wv.pane.index, wv.pane.retraction, wv.value.1)).collect();
    /// panes.sort();
    /// // Early 2, then (2 retracted) early 5, then (5 retracted) the on-time 5.
    /// assert_eq!(panes, [(0, false, 2), (0, true, 2), (1, false, 5), (1, true, 5), (2, false, 5)]);
    /// ```
    pub fn accumulating_and_retracting_fired_panes(&self) -> PCollection<T> {
        let mut info = self.derived_info::<T>();
        info.windowing.accumulation = crate::graph::AccumulationMode::AccumulatingAndRetracting;
        crate::transforms::par_do::add_windowing_step(self, "AccumulatingAndRetractingFiredPanes", info)
    }

    /// Accepts elements up to `ms` milliseconds after their window's end (Beam's
    /// `withAllowedLateness`); later ones are dropped and counted. Applies to the groupings
    /// downstream of this collection. The default is 0: every element that arrives after
    /// the watermark passed its window's end is dropped.
    ///
    /// # Watermarks
    /// An element is late when the watermark it was sent at (its timely time) is past its
    /// window's end; see `docs/semantics.md`.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let ms = EventTime::from_millis;
    /// let script = TestStream::new()
    ///     .add_elements(vec![(1u8, ms(5))])
    ///     .advance_watermark_to(ms(15))
    ///     .add_elements(vec![(1u8, ms(6))]) // 6 ms after the window's end: within the lateness
    ///     .advance_watermark_to(ms(30))
    ///     .add_elements(vec![(1u8, ms(7))]); // 21 ms after: dropped
    /// let out = riffle_timely::testing::run_bounded_windowed(|p| {
    ///     p.test_stream(script)
    ///         .map(|k| (k, 1u64))
    ///         .window_into(FixedWindows::of_millis(10))
    ///         .with_allowed_lateness(10)
    ///         .combine_per_key(Count::new())
    /// });
    /// let mut panes: Vec<_> = out.iter().map(|wv| (wv.pane.timing, wv.value.1)).collect();
    /// panes.sort();
    /// assert_eq!(panes, [(Timing::OnTime, 1), (Timing::Late, 1)]);
    /// ```
    pub fn with_allowed_lateness(&self, ms: i64) -> PCollection<T> {
        let mut info = self.derived_info::<T>();
        info.windowing.allowed_lateness_ms = ms.max(0);
        crate::transforms::par_do::add_windowing_step(self, "AllowedLateness", info)
    }
}

/// The step of `window_into`: assigns each element to its windows by its timestamp. It
/// takes each batch whole and moves its elements into the output (a copy only for the
/// second and later windows of an element, under sliding windows), rather than going
/// through a `DoFn`, which borrows every element and so must clone it.
struct AssignWindows<T, W> {
    window_fn: Arc<W>,
    _t: std::marker::PhantomData<fn(&T)>,
}

impl<T: Data, W: WindowFn> ParDoFn for AssignWindows<T, W> {
    fn outputs(&self) -> usize {
        1
    }
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn ParDoInstance> {
        Box::new(AssignInstance::<T, W> {
            step: ctx.name.clone(),
            window_fn: self.window_fn.clone(),
            scratch: Vec::new(),
            out: Elements::new(),
        })
    }
}

struct AssignInstance<T, W> {
    step: Arc<str>,
    window_fn: Arc<W>,
    scratch: Vec<Window>,
    out: Elements<T>,
}

impl<T: Data, W: WindowFn> ParDoInstance for AssignInstance<T, W> {
    fn process(&mut self, input: Batch) -> Result<()> {
        let mut elements = input.try_into_elements::<T>()?;
        let (window_fn, scratch) = (&*self.window_fn, &mut self.scratch);
        // One window per element (fixed windows, sessions, the global window): only the
        // windows column changes, and the values stay where they are.
        let one_each = catch_unwind(AssertUnwindSafe(|| {
            elements.rewindow(|ts| {
                scratch.clear();
                window_fn.assign(ts, scratch);
                (scratch.len() == 1).then(|| scratch[0])
            })
        }))
        .map_err(|p| Error::from_panic(&self.step, p, None))?;
        if one_each {
            self.out.append(elements);
            return Ok(());
        }
        let (values, stamps) = elements.into_columns();
        self.out.reserve(values.len());
        let (window_fn, scratch, out) = (&*self.window_fn, &mut self.scratch, &mut self.out);
        // A window function is user code too: a panic names the step.
        catch_unwind(AssertUnwindSafe(|| {
            for (i, value) in values.into_iter().enumerate() {
                // The pane goes along: a retraction re-windowed is still one.
                let (ts, pane) = (stamps.timestamp(i), stamps.pane(i));
                scratch.clear();
                window_fn.assign(ts, scratch);
                if let Some((last, rest)) = scratch.split_last() {
                    for w in rest {
                        out.push(value.clone(), ts, *w, pane);
                    }
                    out.push(value, ts, *last, pane);
                }
            }
        }))
        .map_err(|p| Error::from_panic(&self.step, p, None))
    }

    fn take_outputs(&mut self) -> PortBatches {
        crate::runtime::take_main(&mut self.out)
    }
}
