//! Element-wise transforms: map, flat_map, filter, and the key/value helpers.

use std::marker::PhantomData;
use std::sync::Arc;

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::batch::Batch;
use crate::element::{Data, Elements, Key, Stamps};
use crate::error::{Error, Result, truncated_debug};
use crate::graph::{NodeKind, PortRef};
use crate::pipeline::PCollection;
use crate::runtime::{ParDoFn, ParDoInstance, PortBatches, StepContext};
use crate::time::EventTime;
use crate::transforms::par_do::ELEMENT_IN_ERROR;
use crate::window::Window;

/// A whole-batch function of a batch's values: the element-wise transforms keep each
/// element's timestamp, window and pane, so they run over the values alone and hand the
/// metadata columns on as they are (a DoFn pushes every output's metadata one by one).
///
/// The values are the function's to consume: `map` and `flat_map` move each one into
/// user code, so a row's `String` goes on to the output instead of being cloned and the
/// input freed. `filter` and `with_timestamps` only borrow them, then move the values
/// they keep.
trait ValuesFn: Send + Sync + 'static {
    type In: Data;
    type Out: Data;
    /// What user code makes of the batch's values.
    type Made;
    /// Runs user code over `values`, whose metadata is `stamps`. A function that takes
    /// the values by value leaves `values` empty; one that borrows them leaves them for
    /// [`ValuesFn::finish`]. On a panic, `current` is the index of the element it was
    /// at, and that element is named by its value if it is still in `values`, else by
    /// its index, timestamp and window.
    fn make(&self, values: &mut Vec<Self::In>, stamps: &Stamps, current: &mut usize) -> Self::Made;
    /// The output batch, from what `make` left of the values, their metadata, and what
    /// was made of them.
    fn finish(values: Vec<Self::In>, stamps: Stamps, made: Self::Made) -> Elements<Self::Out>;
}

/// One output per element, the element moved into `f`: the output keeps the metadata
/// columns whole.
struct MapValues<I, O, F> {
    f: F,
    _types: PhantomData<fn(I) -> O>,
}

impl<I: Data, O: Data, F: Fn(I) -> O + Send + Sync + 'static> ValuesFn for MapValues<I, O, F> {
    type In = I;
    type Out = O;
    type Made = Vec<O>;
    fn make(&self, values: &mut Vec<I>, _: &Stamps, current: &mut usize) -> Vec<O> {
        // `Vec`'s in-place collect reuses the input's allocation where `O` fits in it.
        std::mem::take(values)
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                *current = i;
                (self.f)(x)
            })
            .collect()
    }
    fn finish(_: Vec<I>, stamps: Stamps, made: Vec<O>) -> Elements<O> {
        Elements::from_columns(made, stamps)
    }
}

/// Zero or more outputs per element, the element moved into `f`; every output of an
/// element gets that element's timestamp, window and pane.
struct FlatMapValues<I, O, F, It> {
    f: F,
    _types: PhantomData<fn(I) -> (O, It)>,
}

impl<I, O, F, It> ValuesFn for FlatMapValues<I, O, F, It>
where
    I: Data,
    O: Data,
    It: IntoIterator<Item = O> + 'static,
    F: Fn(I) -> It + Send + Sync + 'static,
{
    type In = I;
    type Out = O;
    type Made = Elements<O>;
    fn make(&self, values: &mut Vec<I>, stamps: &Stamps, current: &mut usize) -> Elements<O> {
        let values = std::mem::take(values);
        // Most batches have one timestamp, window and pane: then the outputs are values
        // alone, with no per-output bookkeeping.
        if let Some((timestamp, window, pane)) = stamps.uniform() {
            let mut out = Vec::with_capacity(values.len());
            for (i, x) in values.into_iter().enumerate() {
                *current = i;
                out.extend((self.f)(x));
            }
            return Elements::uniform(out, timestamp, window, pane);
        }
        let mut out = Elements::with_capacity(values.len());
        for (i, x) in values.into_iter().enumerate() {
            *current = i;
            let (timestamp, window, pane) = (stamps.timestamp(i), stamps.window(i), stamps.pane(i));
            for o in (self.f)(x) {
                out.push(o, timestamp, window, pane);
            }
        }
        out
    }
    fn finish(_: Vec<I>, _: Stamps, made: Elements<O>) -> Elements<O> {
        made
    }
}

/// `f` of each value, borrowed, noting in `current` the index it is at (for a panic's
/// error, which then names that value: the functions that borrow leave them in place).
fn each_borrowed<T, R>(values: &[T], current: &mut usize, f: impl Fn(&T) -> R) -> Vec<R> {
    let mut out = Vec::with_capacity(values.len());
    for (i, x) in values.iter().enumerate() {
        *current = i;
        out.push(f(x));
    }
    out
}

/// The elements `f` holds true of, moved, not cloned.
struct FilterValues<T, F> {
    f: F,
    _types: PhantomData<fn(&T)>,
}

impl<T: Data, F: Fn(&T) -> bool + Send + Sync + 'static> ValuesFn for FilterValues<T, F> {
    type In = T;
    type Out = T;
    type Made = Vec<bool>;
    fn make(&self, values: &mut Vec<T>, _: &Stamps, current: &mut usize) -> Vec<bool> {
        each_borrowed(values, current, &self.f)
    }
    fn finish(values: Vec<T>, stamps: Stamps, keep: Vec<bool>) -> Elements<T> {
        Elements::from_columns(values, stamps).retain_by(&keep)
    }
}

/// Each element with the timestamp `f` reads from it; the values are moved, not cloned,
/// and keep their windows and panes.
pub(crate) struct TimestampValues<T, F> {
    pub(crate) f: F,
    pub(crate) _types: PhantomData<fn(&T)>,
}

impl<T: Data, F: Fn(&T) -> EventTime + Send + Sync + 'static> ValuesFn for TimestampValues<T, F> {
    type In = T;
    type Out = T;
    type Made = Vec<EventTime>;
    fn make(&self, values: &mut Vec<T>, _: &Stamps, current: &mut usize) -> Vec<EventTime> {
        each_borrowed(values, current, &self.f)
    }
    fn finish(values: Vec<T>, stamps: Stamps, timestamps: Vec<EventTime>) -> Elements<T> {
        Elements::from_columns(values, stamps).with_timestamp_column(timestamps)
    }
}

/// Adds a step running `f` over each batch's values.
fn values_step<V: ValuesFn>(input: &PCollection<V::In>, transform: &str, f: V) -> PCollection<V::Out> {
    let info = input.derived_info::<V::Out>();
    let step = ValuesStep(Arc::new(f));
    let node = input.pipeline().add_step(transform, NodeKind::ParDo(Arc::new(step)), vec![input.port()], vec![info]);
    PCollection::from_port(input.pipeline(), PortRef { node, port: 0 })
}

/// A step named `transform` of one output per element, `f(element)`, the element moved
/// into `f`: `map` and the engine's own re-shapings (pairing with a key, tagging) alike.
pub(crate) fn map_step<I: Data, O: Data>(
    input: &PCollection<I>,
    transform: &str,
    f: impl Fn(I) -> O + Send + Sync + 'static,
) -> PCollection<O> {
    values_step(input, transform, MapValues { f, _types: PhantomData })
}

/// Like [`map_step`], for a ValuesFn other than a map (`with_timestamps`).
pub(crate) fn timestamps_step<T: Data>(
    input: &PCollection<T>,
    transform: &str,
    f: impl Fn(&T) -> EventTime + Send + Sync + 'static,
) -> PCollection<T> {
    values_step(input, transform, TimestampValues { f, _types: PhantomData })
}

/// How a panic's error names an element that user code took by value: the value is gone
/// (moved into the code that panicked, and dropped as it unwound), but where it was and
/// its timestamp and window are still known.
pub(crate) fn moved_element(index: usize, within: &str, timestamp: EventTime, window: Window) -> String {
    format!(
        "number {index} (from 0) of its {within}, at {timestamp} in {window:?} \
         (the step's code took it by value, so it cannot be shown)"
    )
}

/// The graph's face of a [`ValuesFn`] step.
struct ValuesStep<V>(Arc<V>);

impl<V: ValuesFn> ParDoFn for ValuesStep<V> {
    fn outputs(&self) -> usize {
        1
    }
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn ParDoInstance> {
        Box::new(ValuesInstance { step: ctx.name.clone(), f: self.0.clone(), out: Elements::new(), seen: 0 })
    }
}

struct ValuesInstance<V: ValuesFn> {
    step: Arc<str>,
    f: Arc<V>,
    out: Elements<V::Out>,
    /// Elements of the current bundle in the batches before this one: an element's
    /// index in its bundle, for an error.
    seen: usize,
}

impl<V: ValuesFn> ParDoInstance for ValuesInstance<V> {
    fn start_bundle(&mut self) -> Result<()> {
        self.seen = 0;
        Ok(())
    }

    fn process(&mut self, input: Batch) -> Result<()> {
        let input = input.try_into_elements::<V::In>()?;
        let len = input.len();
        let (mut values, stamps) = input.into_columns();
        let mut current = 0;
        let f = &self.f;
        match catch_unwind(AssertUnwindSafe(|| f.make(&mut values, &stamps, &mut current))) {
            Ok(made) => {
                self.out.append(V::finish(values, stamps, made));
                self.seen += len;
                Ok(())
            }
            Err(payload) => {
                let (ts, w) = (stamps.timestamp(current), stamps.window(current));
                let element = match values.get(current) {
                    Some(x) => format!("{} at {ts} in {w:?}", truncated_debug(x, ELEMENT_IN_ERROR)),
                    None => moved_element(self.seen + current, "bundle", ts, w),
                };
                Err(Error::from_panic(&self.step, payload, Some(element)))
            }
        }
    }

    fn take_outputs(&mut self) -> PortBatches {
        crate::runtime::take_main(&mut self.out)
    }
}

impl<T: Data> PCollection<T> {
    /// One output per element: `f` takes the element by value, as `Iterator::map` does,
    /// so an output can reuse its parts without a clone (`|e| (e.user_id, e.amount)`).
    /// The output keeps the element's timestamp, window and pane.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec![1, 2, 3]).map(|x| x * 10));
    /// out.sort();
    /// assert_eq!(out, [10, 20, 30]);
    /// ```
    ///
    /// # Errors
    /// A panic in `f` fails the job with [`Error::UserCode`], naming the step and the
    /// element by its index in the bundle, its timestamp and its window. It cannot name
    /// the value itself (its `Debug` form, as a [`DoFn`](crate::transforms::par_do::DoFn)'s
    /// error does): `f` owned it, and it was dropped as the panic unwound. To see the
    /// values that fail, check them first, e.g. with [`filter`](Self::filter), or use a
    /// DoFn, which borrows its element.
    pub fn map<O: Data>(&self, f: impl Fn(T) -> O + Send + Sync + 'static) -> PCollection<O> {
        map_step(self, "Map", f)
    }

    /// Zero or more outputs per element: `f` takes the element by value and returns
    /// anything iterable; each output keeps the element's timestamp, window and pane.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     p.create(vec!["a b".to_string(), "c".to_string()])
    ///         .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
    /// });
    /// out.sort();
    /// assert_eq!(out, ["a", "b", "c"]);
    /// ```
    ///
    /// # Errors
    /// As for [`map`](Self::map): a panic names the step and the element's index in the
    /// bundle, timestamp and window, not its value.
    pub fn flat_map<O: Data, I>(&self, f: impl Fn(T) -> I + Send + Sync + 'static) -> PCollection<O>
    where
        I: IntoIterator<Item = O> + 'static,
    {
        values_step(self, "FlatMap", FlatMapValues { f, _types: PhantomData })
    }

    /// The elements for which `f` is true. `f` borrows each element (the elements kept
    /// are moved on, not cloned), so a panic's error names the element's value.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec![1, 2, 3, 4]).filter(|x| x % 2 == 0));
    /// out.sort();
    /// assert_eq!(out, [2, 4]);
    /// ```
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> PCollection<T> {
        values_step(self, "Filter", FilterValues { f, _types: PhantomData })
    }
}

impl<K: Key, V: Data> PCollection<(K, V)> {
    /// The keys of a keyed collection (moved out of each pair).
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec![('a', 1), ('b', 2)]).keys());
    /// out.sort();
    /// assert_eq!(out, ['a', 'b']);
    /// ```
    pub fn keys(&self) -> PCollection<K> {
        map_step(self, "Keys", |(k, _): (K, V)| k)
    }

    /// The values of a keyed collection (moved out of each pair).
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec![('a', 1), ('b', 2)]).values());
    /// out.sort();
    /// assert_eq!(out, [1, 2]);
    /// ```
    pub fn values(&self) -> PCollection<V> {
        map_step(self, "Values", |(_, v): (K, V)| v)
    }

    /// Maps each value, keeping its key: `f` takes the value by value, and the key is
    /// moved to the output.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     p.create(vec![('a', 1), ('b', 2)]).map_values(|v| v * 100)
    /// });
    /// out.sort();
    /// assert_eq!(out, [('a', 100), ('b', 200)]);
    /// ```
    ///
    /// # Errors
    /// As for [`map`](PCollection::map): a panic names the step and the element's index in
    /// the bundle, timestamp and window, not its value.
    pub fn map_values<W: Data>(&self, f: impl Fn(V) -> W + Send + Sync + 'static) -> PCollection<(K, W)> {
        map_step(self, "MapValues", move |(k, v): (K, V)| (k, f(v)))
    }
}

#[cfg(test)]
mod tests {
    //! The values path against the metadata it must keep: each output with its own
    //! element's timestamp, window and pane, in batches whose columns are uniform or not,
    //! and a panic named by what is left of the element.

    use super::*;
    use crate::element::WindowedValue;
    use crate::pane::{PaneInfo, Timing};

    fn interval(start: i64) -> Window {
        Window::Interval { start: EventTime::from_millis(start), end: EventTime::from_millis(start + 10) }
    }

    /// Three elements, each with its own timestamp, window and pane.
    fn mixed() -> Elements<String> {
        let mut e = Elements::new();
        let late = PaneInfo { timing: Timing::Late, ..PaneInfo::NO_FIRING };
        e.push("a b".to_string(), EventTime::from_millis(1), interval(0), PaneInfo::NO_FIRING);
        e.push(String::new(), EventTime::from_millis(12), interval(10), PaneInfo::NO_FIRING);
        e.push("c".to_string(), EventTime::from_millis(25), interval(20), late);
        e
    }

    /// Runs `f` over `batches`, as one bundle.
    fn run<V: ValuesFn>(f: V, batches: Vec<Elements<V::In>>) -> Result<Vec<WindowedValue<V::Out>>> {
        let mut instance = ValuesInstance { step: "Step".into(), f: Arc::new(f), out: Elements::new(), seen: 0 };
        instance.start_bundle()?;
        for b in batches {
            instance.process(Batch::new(b))?;
        }
        Ok(std::mem::take(&mut instance.out).into_iter_windowed().collect())
    }

    fn words(s: String) -> Vec<String> {
        s.split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect()
    }

    #[test]
    fn map_keeps_each_elements_metadata() {
        let input: Vec<_> = mixed().into_iter_windowed().collect();
        let out = run(MapValues { f: |s: String| s.len(), _types: PhantomData }, vec![mixed()]).unwrap();
        assert_eq!(out.len(), 3);
        for (o, i) in out.iter().zip(&input) {
            assert_eq!(o.value, i.value.len());
            assert_eq!((o.timestamp, o.window, o.pane), (i.timestamp, i.window, i.pane));
        }
    }

    #[test]
    fn flat_map_gives_every_output_its_elements_metadata() {
        let input: Vec<_> = mixed().into_iter_windowed().collect();
        let out = run(FlatMapValues { f: words, _types: PhantomData }, vec![mixed()]).unwrap();
        let got: Vec<_> = out.iter().map(|o| (o.value.as_str(), o.timestamp, o.window, o.pane)).collect();
        let stamps = |i: usize| (input[i].timestamp, input[i].window, input[i].pane);
        let want = [("a", stamps(0)), ("b", stamps(0)), ("c", stamps(2))];
        let want: Vec<_> = want.iter().map(|(v, (t, w, p))| (*v, *t, *w, *p)).collect();
        assert_eq!(got, want);

        // One timestamp, window and pane for the batch: the outputs share them.
        let uniform = Elements::uniform(
            vec!["x y".to_string(), "z".to_string()],
            EventTime::from_millis(7),
            interval(0),
            PaneInfo::NO_FIRING,
        );
        let out = run(FlatMapValues { f: words, _types: PhantomData }, vec![uniform]).unwrap();
        assert_eq!(out.iter().map(|o| o.value.as_str()).collect::<Vec<_>>(), ["x", "y", "z"]);
        assert!(out.iter().all(|o| o.timestamp == EventTime::from_millis(7) && o.window == interval(0)));

        // Nothing out of a whole batch: an empty batch, not one with stray metadata.
        let none = run(FlatMapValues { f: |_: String| None::<u8>, _types: PhantomData }, vec![mixed()]).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn with_timestamps_replaces_only_the_timestamps() {
        let input: Vec<_> = mixed().into_iter_windowed().collect();
        let f = |s: &String| EventTime::from_millis(s.len() as i64);
        let out = run(TimestampValues { f, _types: PhantomData }, vec![mixed()]).unwrap();
        for (o, i) in out.iter().zip(&input) {
            assert_eq!(o.value, i.value);
            assert_eq!(o.timestamp, EventTime::from_millis(i.value.len() as i64));
            assert_eq!((o.window, o.pane), (i.window, i.pane));
        }
    }

    #[test]
    fn a_map_panic_names_the_elements_place_in_its_bundle_and_a_filter_panic_its_value() {
        let boom = |s: String| {
            assert!(s != "c", "no c");
            s
        };
        let err = run(MapValues { f: boom, _types: PhantomData }, vec![mixed(), mixed()]).unwrap_err().to_string();
        // The panic is at the first batch's "c", its third element.
        assert!(err.contains("step 'Step' panicked: no c"), "{err}");
        assert!(err.contains("number 2 (from 0) of its bundle, at 25ms in Interval"), "{err}");
        assert!(err.contains("cannot be shown"), "{err}");

        // A second batch of the bundle counts on from the first.
        let ok = Elements::uniform(vec!["a".to_string()], EventTime::from_millis(3), interval(0), PaneInfo::NO_FIRING);
        let err = run(MapValues { f: boom, _types: PhantomData }, vec![ok, mixed()]).unwrap_err().to_string();
        assert!(err.contains("number 3 (from 0) of its bundle"), "{err}");

        let f = |s: &String| {
            assert!(s != "c", "no c");
            true
        };
        let err = run(FilterValues { f, _types: PhantomData }, vec![mixed()]).unwrap_err().to_string();
        assert!(err.contains("element: \"c\" at 25ms in Interval"), "{err}");
    }
}
