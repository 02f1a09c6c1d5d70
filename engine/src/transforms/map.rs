//! Element-wise transforms: map, flat_map, filter, and the key/value helpers.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::element::{Data, Key};
use crate::pipeline::PCollection;
use crate::transforms::par_do::{DoFn, ProcessContext, add_simple};

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

impl<T: Data> PCollection<T> {
    /// One output per element.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec![1, 2, 3]).map(|x| x * 10));
    /// out.sort();
    /// assert_eq!(out, [10, 20, 30]);
    /// ```
    pub fn map<O: Data>(&self, f: impl Fn(&T) -> O + Send + Sync + 'static) -> PCollection<O> {
        closure_step(self, "Map", move |x, ctx| ctx.output(f(x)))
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
        closure_step(self, "Filter", move |x: &T, ctx| {
            if f(x) {
                ctx.output(x.clone())
            }
        })
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
