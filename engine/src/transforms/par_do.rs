//! ParDo: the general per-element transform, with a [`DoFn`].

use std::any::Any;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::batch::Batch;
use crate::element::{Data, Elements};
use crate::error::{Error, Result, truncated_debug};
use crate::graph::{NodeKind, OutputInfo, PortRef};
use crate::pane::PaneInfo;
use crate::pipeline::PCollection;
use crate::runtime::{ParDoFn, ParDoInstance, PortBatches, StepContext};
use crate::time::EventTime;
use crate::window::Window;

/// How many characters of an element an error message shows.
pub(crate) const ELEMENT_IN_ERROR: usize = 200;

/// Per-element processing with setup, bundles and side outputs (Beam's `DoFn`).
///
/// A pipeline holds one `DoFn` value; every worker gets its own clone, so fields are
/// per-worker state (a parser, a connection opened in `setup`, a buffer flushed in
/// `finish_bundle`). The element is borrowed, as in Beam and Flink, so a failure can name
/// it; clone what you move into the output.
pub trait DoFn: Clone + Send + Sync + 'static {
    /// Input element type.
    type In: Data;
    /// Main output element type.
    type Out: Data;

    /// Called once per worker before the first bundle.
    fn setup(&mut self) {}
    /// Called before each bundle.
    fn start_bundle(&mut self) {}
    /// Called for each element.
    fn process(&mut self, element: &Self::In, ctx: &mut ProcessContext<'_, Self::Out>);
    /// Called after each bundle; outputs here need an explicit timestamp and window.
    fn finish_bundle(&mut self, _ctx: &mut FinishBundleContext<'_, Self::Out>) {}
    /// Called once per worker after the last bundle.
    fn teardown(&mut self) {}
}

/// Names an additional output of a ParDo (Beam's `TupleTag`): a dead-letter output, for
/// one.
pub struct TupleTag<T> {
    name: Arc<str>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for TupleTag<T> {
    fn clone(&self) -> Self {
        TupleTag { name: self.name.clone(), _type: PhantomData }
    }
}

impl<T: Data> TupleTag<T> {
    /// A tag called `name`, unique among one ParDo's outputs.
    pub fn new(name: &str) -> Self {
        TupleTag { name: name.into(), _type: PhantomData }
    }

    /// The tag's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A [`TupleTag`] of any element type, as `par_do_with_outputs` takes them.
pub trait AnyTupleTag: Send + Sync {
    /// The tag's name.
    fn name(&self) -> &str;
    /// A description of the tagged output for the graph.
    fn output_info(&self, like: &OutputInfo) -> OutputInfo;
    /// An empty buffer for this tag's outputs.
    fn buffer(&self) -> TagBuffer;
}

impl<T: Data> AnyTupleTag for TupleTag<T> {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_info(&self, like: &OutputInfo) -> OutputInfo {
        OutputInfo { type_name: std::any::type_name::<T>(), tag: Some(self.name.to_string()), ..like.clone() }
    }
    fn buffer(&self) -> TagBuffer {
        TagBuffer {
            name: self.name.clone(),
            elements: Box::new(Elements::<T>::new()),
            take: |b| {
                let e = std::mem::take(b.downcast_mut::<Elements<T>>().expect("tag buffer type"));
                (!e.is_empty()).then(|| Batch::new(e))
            },
        }
    }
}

/// The outputs of one tag, typed only at the tag's own call sites.
pub struct TagBuffer {
    name: Arc<str>,
    elements: Box<dyn Any + Send>,
    take: fn(&mut Box<dyn Any + Send>) -> Option<Batch>,
}

impl TagBuffer {
    fn push<T: Data>(&mut self, value: T, ts: EventTime, window: Window, pane: PaneInfo) {
        match self.elements.downcast_mut::<Elements<T>>() {
            Some(e) => e.push(value, ts, window, pane),
            None => panic!(
                "output to tag '{}' with type {}, but the tag was declared with another type",
                self.name,
                std::any::type_name::<T>()
            ),
        }
    }
}

fn push_tagged<T: Data>(tags: &mut [TagBuffer], tag: &TupleTag<T>, value: T, ts: EventTime, w: Window, p: PaneInfo) {
    match tags.iter_mut().find(|b| b.name == tag.name) {
        Some(buffer) => buffer.push(value, ts, w, p),
        None => panic!(
            "output to tag '{}', which was not declared in par_do_with_outputs; add it to the list of tags",
            tag.name
        ),
    }
}

/// Runs `f` with a context for one element that outputs into `main` (no tagged outputs):
/// for steps other than a ParDo that run a DoFn-like callback (a side-input DoFn).
pub(crate) fn with_context<O: Data, R>(
    main: &mut Elements<O>,
    timestamp: EventTime,
    window: Window,
    pane: PaneInfo,
    f: impl FnOnce(&mut ProcessContext<'_, O>) -> R,
) -> R {
    f(&mut ProcessContext { main, tags: &mut [], timestamp, window, pane })
}

/// What [`DoFn::process`] sees of the current element, and where it writes outputs.
pub struct ProcessContext<'a, O> {
    main: &'a mut Elements<O>,
    tags: &'a mut [TagBuffer],
    timestamp: EventTime,
    window: Window,
    pane: PaneInfo,
}

impl<O: Data> ProcessContext<'_, O> {
    /// The current element's event timestamp.
    pub fn timestamp(&self) -> EventTime {
        self.timestamp
    }
    /// The current element's window.
    pub fn window(&self) -> Window {
        self.window
    }
    /// The pane the current element came from.
    pub fn pane(&self) -> PaneInfo {
        self.pane
    }
    /// Outputs to the main output, with the current element's timestamp, window and pane.
    #[inline]
    pub fn output(&mut self, value: O) {
        self.main.push(value, self.timestamp, self.window, self.pane);
    }
    /// Outputs to the main output with another timestamp.
    ///
    /// Unlike Beam, an earlier timestamp is allowed: the element may then be late
    /// downstream (see `docs/semantics.md`).
    pub fn output_with_timestamp(&mut self, value: O, timestamp: EventTime) {
        self.main.push(value, timestamp, self.window, self.pane);
    }
    /// Outputs to a tagged output declared in `par_do_with_outputs`.
    ///
    /// # Panics
    /// If the tag was not declared there (a bug in the pipeline, reported with the step).
    pub fn output_to<T: Data>(&mut self, tag: &TupleTag<T>, value: T) {
        push_tagged(self.tags, tag, value, self.timestamp, self.window, self.pane);
    }
}

/// Where [`DoFn::finish_bundle`] writes outputs: there is no current element, so each
/// output names its timestamp and window.
pub struct FinishBundleContext<'a, O> {
    main: &'a mut Elements<O>,
    tags: &'a mut [TagBuffer],
}

impl<O: Data> FinishBundleContext<'_, O> {
    /// Outputs to the main output.
    pub fn output(&mut self, value: O, timestamp: EventTime, window: Window) {
        self.main.push(value, timestamp, window, PaneInfo::NO_FIRING);
    }
    /// Outputs to a tagged output.
    pub fn output_to<T: Data>(&mut self, tag: &TupleTag<T>, value: T, timestamp: EventTime, window: Window) {
        push_tagged(self.tags, tag, value, timestamp, window, PaneInfo::NO_FIRING);
    }
}

/// The graph's face of a DoFn step: a prototype DoFn and its tags.
struct DoFnStep<D> {
    dofn: D,
    tags: Vec<Box<dyn AnyTupleTag>>,
}

impl<D: DoFn> ParDoFn for DoFnStep<D> {
    fn outputs(&self) -> usize {
        1 + self.tags.len()
    }
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn ParDoInstance> {
        Box::new(DoFnInstance {
            step: ctx.name.clone(),
            dofn: self.dofn.clone(),
            main: Elements::new(),
            tags: self.tags.iter().map(|t| t.buffer()).collect(),
        })
    }
}

struct DoFnInstance<D: DoFn> {
    step: Arc<str>,
    dofn: D,
    main: Elements<D::Out>,
    tags: Vec<TagBuffer>,
}

impl<D: DoFn> DoFnInstance<D> {
    /// Runs user code, turning a panic into an error that names this step.
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) -> Result<()> {
        catch_unwind(AssertUnwindSafe(|| f(self))).map_err(|p| Error::from_panic(&self.step, p, None))
    }
}

impl<D: DoFn> ParDoInstance for DoFnInstance<D> {
    fn setup(&mut self) -> Result<()> {
        self.guarded(|s| s.dofn.setup())
    }

    fn start_bundle(&mut self) -> Result<()> {
        self.guarded(|s| s.dofn.start_bundle())
    }

    fn process(&mut self, input: Batch) -> Result<()> {
        let input = input.try_into_elements::<D::In>()?;
        // Most DoFns output about one element per input: size the output once.
        self.main.reserve(input.len());
        let mut current = 0;
        let (dofn, main, tags) = (&mut self.dofn, &mut self.main, &mut self.tags[..]);
        let run = catch_unwind(AssertUnwindSafe(|| {
            for i in 0..input.len() {
                current = i;
                let mut ctx = ProcessContext {
                    main: &mut *main,
                    tags: &mut *tags,
                    timestamp: input.timestamp(i),
                    window: input.window(i),
                    pane: input.pane(i),
                };
                dofn.process(input.value(i), &mut ctx);
            }
        }));
        run.map_err(|payload| {
            let element = format!(
                "{} at {} in {:?}",
                truncated_debug(input.value(current), ELEMENT_IN_ERROR),
                input.timestamp(current),
                input.window(current)
            );
            Error::from_panic(&self.step, payload, Some(element))
        })
    }

    fn finish_bundle(&mut self) -> Result<()> {
        self.guarded(|s| {
            let mut ctx = FinishBundleContext { main: &mut s.main, tags: &mut s.tags };
            s.dofn.finish_bundle(&mut ctx);
        })
    }

    fn take_outputs(&mut self) -> PortBatches {
        let mut out = Vec::with_capacity(1 + self.tags.len());
        let main = std::mem::take(&mut self.main);
        out.push((!main.is_empty()).then(|| Batch::new(main)));
        for t in &mut self.tags {
            out.push((t.take)(&mut t.elements));
        }
        out
    }

    fn teardown(&mut self) {
        // A panic in teardown must not hide the job's result; it is reported, not raised.
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| self.dofn.teardown())) {
            eprintln!("riffle: teardown of step '{}' panicked: {}", self.step, crate::error::panic_message(&p));
        }
    }
}

/// The collections of a ParDo's tagged outputs, looked up by tag.
pub struct TaggedOutputs {
    pipeline: crate::Pipeline,
    node: crate::graph::NodeId,
    names: Vec<String>,
}

impl TaggedOutputs {
    /// The collection of `tag`'s outputs.
    ///
    /// # Panics
    /// If `tag` was not among the declared tags: a mistake in building the pipeline.
    pub fn get<T: Data>(&self, tag: &TupleTag<T>) -> PCollection<T> {
        let i = self
            .names
            .iter()
            .position(|n| n == tag.name())
            .unwrap_or_else(|| panic!("tag '{}' was not declared in par_do_with_outputs", tag.name()));
        PCollection::from_port(&self.pipeline, PortRef { node: self.node, port: i + 1 })
    }
}

/// Adds a DoFn-backed step; the building block of every per-element transform.
pub(crate) fn add_dofn<D: DoFn>(
    input: &PCollection<D::In>,
    transform: &str,
    dofn: D,
    tags: Vec<Box<dyn AnyTupleTag>>,
    main_info: OutputInfo,
) -> (PCollection<D::Out>, TaggedOutputs) {
    let p = input.pipeline();
    let in_info = input.info();
    let mut outputs = vec![main_info];
    outputs.extend(tags.iter().map(|t| t.output_info(&in_info)));
    let mut names: Vec<String> = Vec::new();
    for t in &tags {
        if names.iter().any(|n| n == t.name()) {
            p.defer_error(transform, format!("tag '{}' is declared twice", t.name()));
        }
        names.push(t.name().to_string());
    }
    let step = DoFnStep { dofn, tags };
    let node = p.add_step(transform, NodeKind::ParDo(Arc::new(step)), vec![input.port()], outputs);
    let main = PCollection::from_port(p, PortRef { node, port: 0 });
    (main, TaggedOutputs { pipeline: p.clone(), node, names })
}

/// Hands each element on as it is (a copy, for a runner that runs the step).
struct Identity<T>(PhantomData<fn() -> T>);

impl<T> Clone for Identity<T> {
    fn clone(&self) -> Self {
        Identity(PhantomData)
    }
}

impl<T: Data> DoFn for Identity<T> {
    type In = T;
    type Out = T;
    fn process(&mut self, element: &T, ctx: &mut ProcessContext<'_, T>) {
        ctx.output(element.clone());
    }
}

/// The step of [`add_windowing_step`]: an identity DoFn that says runners may skip it.
struct Passthrough<T>(DoFnStep<Identity<T>>);

impl<T: Data> ParDoFn for Passthrough<T> {
    fn outputs(&self) -> usize {
        1
    }
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn ParDoInstance> {
        self.0.instantiate(ctx)
    }
    fn is_passthrough(&self) -> bool {
        true
    }
}

/// Adds a step that changes nothing but its collection's windowing metadata (`info`:
/// its trigger, accumulation mode, allowed lateness, timestamp combiner). Its elements
/// pass through unchanged, and runners run nothing for it ([`ParDoFn::is_passthrough`]).
pub(crate) fn add_windowing_step<T: Data>(input: &PCollection<T>, transform: &str, info: OutputInfo) -> PCollection<T> {
    let p = input.pipeline();
    let step = Passthrough(DoFnStep { dofn: Identity::<T>(PhantomData), tags: Vec::new() });
    let node = p.add_step(transform, NodeKind::ParDo(Arc::new(step)), vec![input.port()], vec![info]);
    PCollection::from_port(p, PortRef { node, port: 0 })
}

/// Adds a single-output DoFn step whose output keeps the input's windowing.
pub(crate) fn add_simple<D: DoFn>(input: &PCollection<D::In>, transform: &str, dofn: D) -> PCollection<D::Out> {
    let info = input.derived_info::<D::Out>();
    add_dofn(input, transform, dofn, Vec::new(), info).0
}

impl<T: Data> PCollection<T> {
    /// Applies a [`DoFn`] to every element (Beam's `ParDo.of`).
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    ///
    /// #[derive(Clone)]
    /// struct Words;
    /// impl DoFn for Words {
    ///     type In = String;
    ///     type Out = String;
    ///     fn process(&mut self, line: &String, ctx: &mut ProcessContext<'_, String>) {
    ///         for w in line.split_whitespace() {
    ///             ctx.output(w.to_string());
    ///         }
    ///     }
    /// }
    ///
    /// let mut words = riffle_timely::testing::run_bounded(|p| {
    ///     p.create(vec!["a b".to_string(), "c".to_string()]).par_do(Words)
    /// });
    /// words.sort();
    /// assert_eq!(words, ["a", "b", "c"]);
    /// ```
    pub fn par_do<D: DoFn<In = T>>(&self, dofn: D) -> PCollection<D::Out> {
        add_simple(self, "ParDo", dofn)
    }

    /// Applies a [`DoFn`] that also writes to tagged outputs, such as a dead-letter
    /// output for records it cannot parse.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    ///
    /// #[derive(Clone)]
    /// struct Parse { bad: TupleTag<String> }
    /// impl DoFn for Parse {
    ///     type In = String;
    ///     type Out = i64;
    ///     fn process(&mut self, s: &String, ctx: &mut ProcessContext<'_, i64>) {
    ///         match s.parse() {
    ///             Ok(n) => ctx.output(n),
    ///             Err(e) => ctx.output_to(&self.bad, format!("{s:?}: {e}")),
    ///         }
    ///     }
    /// }
    ///
    /// let bad = TupleTag::<String>::new("dead-letter");
    /// let (good, dead) = riffle_timely::testing::run_bounded2(|p| {
    ///     let input = p.create(vec!["1".to_string(), "x".to_string(), "3".to_string()]);
    ///     let (good, tagged) = input.par_do_with_outputs(Parse { bad: bad.clone() }, &[&bad]);
    ///     (good, tagged.get(&bad))
    /// });
    /// assert_eq!(good.iter().sum::<i64>(), 4);
    /// assert_eq!(dead, ["\"x\": invalid digit found in string"]);
    /// ```
    pub fn par_do_with_outputs<D: DoFn<In = T>>(
        &self,
        dofn: D,
        tags: &[&dyn CloneTupleTag],
    ) -> (PCollection<D::Out>, TaggedOutputs) {
        let info = self.derived_info::<D::Out>();
        let tags = tags.iter().map(|t| t.clone_tag()).collect();
        add_dofn(self, "ParDo", dofn, tags, info)
    }
}

/// A tag that can be copied into the graph; every [`TupleTag`] is one.
pub trait CloneTupleTag {
    /// A boxed copy of the tag.
    fn clone_tag(&self) -> Box<dyn AnyTupleTag>;
}

impl<T: Data> CloneTupleTag for TupleTag<T> {
    fn clone_tag(&self) -> Box<dyn AnyTupleTag> {
        Box::new(self.clone())
    }
}
