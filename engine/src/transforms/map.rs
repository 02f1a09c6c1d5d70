//! Element-wise transforms: map, flat_map, filter, and the key/value helpers.

use std::marker::PhantomData;
use std::sync::Arc;

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::batch::Batch;
use crate::element::{Data, Elements, Key};
use crate::error::{Error, Result, truncated_debug};
use crate::graph::{NodeKind, PortRef};
use crate::pipeline::PCollection;
use crate::runtime::{ParDoFn, ParDoInstance, PortBatches, StepContext};
use crate::transforms::par_do::{DoFn, ELEMENT_IN_ERROR, ProcessContext, add_simple};

/// A DoFn calling a closure `f(&element, ctx)`; each convenience transform is one.
struct ClosureFn<I, O, F> {
    f: Arc<F>,
    _types: PhantomData<fn(&I) -> O>,
}

impl<I, O, F> Clone for ClosureFn<I, O, F> {
    fn clone(&self) -> Self {
        ClosureFn { f: self.f.clone(), _types: PhantomData }
    }
}

impl<I: Data, O: Data, F> DoFn for ClosureFn<I, O, F>
where
    F: Fn(&I, &mut ProcessContext<'_, O>) + Send + Sync + 'static,
{
    type In = I;
    type Out = O;
    #[inline]
    fn process(&mut self, element: &I, ctx: &mut ProcessContext<'_, O>) {
        (self.f)(element, ctx)
    }
}

/// Like [`closure_step`], with the output's info given (windowing changes).
pub(crate) fn closure_step<I: Data, O: Data>(
    input: &PCollection<I>,
    transform: &str,
    f: impl Fn(&I, &mut ProcessContext<'_, O>) + Send + Sync + 'static,
) -> PCollection<O> {
    add_simple(input, transform, ClosureFn { f: Arc::new(f), _types: PhantomData })
}

/// A whole-batch function of a batch's values: `map` and `filter` keep each element's
/// timestamp, window and pane, so they run over the values alone and hand the metadata
/// columns on as they are (a DoFn pushes every output's metadata one by one), and
/// `filter` moves what it keeps instead of cloning it.
trait ValuesFn: Send + Sync + 'static {
    type In: Data;
    type Out: Data;
    /// What user code makes of the batch's values, borrowed (on a panic, `current` is
    /// the index of the element it was at, still there to be named).
    type Made;
    /// Runs user code over the values.
    fn make(&self, input: &Elements<Self::In>, current: &mut usize) -> Self::Made;
    /// The output batch, from the input and what was made of it.
    fn finish(input: Elements<Self::In>, made: Self::Made) -> Elements<Self::Out>;
}

struct MapValues<I, O, F> {
    f: F,
    _types: PhantomData<fn(&I) -> O>,
}

impl<I: Data, O: Data, F: Fn(&I) -> O + Send + Sync + 'static> ValuesFn for MapValues<I, O, F> {
    type In = I;
    type Out = O;
    type Made = Vec<O>;
    fn make(&self, input: &Elements<I>, current: &mut usize) -> Vec<O> {
        let mut out = Vec::with_capacity(input.len());
        for (i, x) in input.values().iter().enumerate() {
            *current = i;
            out.push((self.f)(x));
        }
        out
    }
    fn finish(input: Elements<I>, made: Vec<O>) -> Elements<O> {
        input.with_values(made)
    }
}

struct FilterValues<T, F> {
    f: F,
    _types: PhantomData<fn(&T)>,
}

impl<T: Data, F: Fn(&T) -> bool + Send + Sync + 'static> ValuesFn for FilterValues<T, F> {
    type In = T;
    type Out = T;
    type Made = Vec<bool>;
    fn make(&self, input: &Elements<T>, current: &mut usize) -> Vec<bool> {
        let mut keep = Vec::with_capacity(input.len());
        for (i, x) in input.values().iter().enumerate() {
            *current = i;
            keep.push((self.f)(x));
        }
        keep
    }
    fn finish(input: Elements<T>, keep: Vec<bool>) -> Elements<T> {
        input.retain_by(&keep)
    }
}

/// The graph's face of a [`ValuesFn`] step.
struct ValuesStep<V>(Arc<V>);

impl<V: ValuesFn> ParDoFn for ValuesStep<V> {
    fn outputs(&self) -> usize {
        1
    }
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn ParDoInstance> {
        Box::new(ValuesInstance { step: ctx.name.clone(), f: self.0.clone(), out: Elements::new() })
    }
}

struct ValuesInstance<V: ValuesFn> {
    step: Arc<str>,
    f: Arc<V>,
    out: Elements<V::Out>,
}

impl<V: ValuesFn> ParDoInstance for ValuesInstance<V> {
    fn process(&mut self, input: Batch) -> Result<()> {
        let input = input.try_into_elements::<V::In>()?;
        let mut current = 0;
        let f = &self.f;
        match catch_unwind(AssertUnwindSafe(|| f.make(&input, &mut current))) {
            Ok(made) => {
                self.out.append(V::finish(input, made));
                Ok(())
            }
            Err(payload) => {
                let (x, ts, w) = (input.value(current), input.timestamp(current), input.window(current));
                let element = format!("{} at {ts} in {w:?}", truncated_debug(x, ELEMENT_IN_ERROR));
                Err(Error::from_panic(&self.step, payload, Some(element)))
            }
        }
    }

    fn take_outputs(&mut self) -> PortBatches {
        crate::runtime::take_main(&mut self.out)
    }
}

impl<T: Data> PCollection<T> {
    /// One output per element.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec![1, 2, 3]).map(|x| x * 10));
    /// out.sort();
    /// assert_eq!(out, [10, 20, 30]);
    /// ```
    pub fn map<O: Data>(&self, f: impl Fn(&T) -> O + Send + Sync + 'static) -> PCollection<O> {
        let info = self.derived_info::<O>();
        let step = ValuesStep(Arc::new(MapValues { f, _types: PhantomData }));
        let node = self.pipeline().add_step("Map", NodeKind::ParDo(Arc::new(step)), vec![self.port()], vec![info]);
        PCollection::from_port(self.pipeline(), PortRef { node, port: 0 })
    }

    /// Zero or more outputs per element.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     p.create(vec!["a b".to_string(), "c".to_string()])
    ///         .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
    /// });
    /// out.sort();
    /// assert_eq!(out, ["a", "b", "c"]);
    /// ```
    pub fn flat_map<O: Data, I>(&self, f: impl Fn(&T) -> I + Send + Sync + 'static) -> PCollection<O>
    where
        I: IntoIterator<Item = O>,
    {
        closure_step(self, "FlatMap", move |x, ctx| {
            for o in f(x) {
                ctx.output(o);
            }
        })
    }

    /// The elements for which `f` is true.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec![1, 2, 3, 4]).filter(|x| x % 2 == 0));
    /// out.sort();
    /// assert_eq!(out, [2, 4]);
    /// ```
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> PCollection<T> {
        let info = self.derived_info::<T>();
        let step = ValuesStep(Arc::new(FilterValues { f, _types: PhantomData }));
        let node = self.pipeline().add_step("Filter", NodeKind::ParDo(Arc::new(step)), vec![self.port()], vec![info]);
        PCollection::from_port(self.pipeline(), PortRef { node, port: 0 })
    }
}

impl<K: Key, V: Data> PCollection<(K, V)> {
    /// The keys of a keyed collection.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec![('a', 1), ('b', 2)]).keys());
    /// out.sort();
    /// assert_eq!(out, ['a', 'b']);
    /// ```
    pub fn keys(&self) -> PCollection<K> {
        closure_step(self, "Keys", |(k, _): &(K, V), ctx| ctx.output(k.clone()))
    }

    /// The values of a keyed collection.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec![('a', 1), ('b', 2)]).values());
    /// out.sort();
    /// assert_eq!(out, [1, 2]);
    /// ```
    pub fn values(&self) -> PCollection<V> {
        closure_step(self, "Values", |(_, v): &(K, V), ctx| ctx.output(v.clone()))
    }

    /// Maps each value, keeping its key.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     p.create(vec![('a', 1), ('b', 2)]).map_values(|v| v * 100)
    /// });
    /// out.sort();
    /// assert_eq!(out, [('a', 100), ('b', 200)]);
    /// ```
    pub fn map_values<W: Data>(&self, f: impl Fn(&V) -> W + Send + Sync + 'static) -> PCollection<(K, W)> {
        closure_step(self, "MapValues", move |(k, v): &(K, V), ctx| ctx.output((k.clone(), f(v))))
    }
}
