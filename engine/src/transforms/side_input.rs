//! Side inputs: a collection seen whole, as a singleton, a list, a map or a multimap, by
//! a step over another collection (Beam's `View.asSingleton` and friends).
//!
//! The side collection goes to every worker. A main element reads the side input's value
//! for the side window that contains its own window's end (Beam's default window mapping;
//! a side input in the global window serves every main window), and waits until that side
//! window is complete: the side input's watermark has passed its end (for the global window:
//! the side input has ended). Waiting main elements hold the step's output watermark.
//!
//! A side collection with a trigger other than the default updates while the job runs
//! (a slowly changing table, a value recomputed every minute). As Beam's runners do, its
//! elements are first gathered per window under one key with the collection's own
//! windowing and trigger: each firing of that gathering is the whole view, a side window
//! is ready at its first firing, and later main elements read the latest firing (Beam's
//! programming guide: "If the side input has multiple trigger firings, Beam uses the
//! value from the latest trigger firing"). With discarding panes a firing holds what came
//! since the last one; with accumulating panes, everything so far.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::batch::Batch;
use crate::element::{Data, Elements, Key};
use crate::error::{Error, Result, truncated_debug};
use crate::graph::{NodeKind, PortRef};
use crate::pane::PaneInfo;
use crate::pipeline::PCollection;
use crate::runtime::{SideParDoFn, SideParDoInstance, StepContext};
use crate::time::EventTime;
use crate::transforms::map::moved_element;
use crate::transforms::par_do::ProcessContext;
use crate::window::{Window, WindowFn};

/// How a side collection's elements in one window become the value a step reads.
pub trait View: Send + Sync + 'static {
    /// The side collection's element.
    type Elem: Data;
    /// What the step reads.
    type Value: Send + Sync + 'static;
    /// The value of one side window's elements (in a canonical order); `Err`: why there
    /// is none (an empty singleton without a default, a repeated map key).
    fn build(&self, elements: Vec<Self::Elem>) -> std::result::Result<Self::Value, String>;
}

/// One value ([`PCollection::as_singleton`]).
pub struct Singleton<T> {
    default: Option<T>,
}

impl<T: Data + Sync> View for Singleton<T> {
    type Elem = T;
    type Value = T;
    fn build(&self, mut elements: Vec<T>) -> std::result::Result<T, String> {
        match (elements.len(), &self.default) {
            (1, _) => Ok(elements.pop().expect("one element")),
            (0, Some(d)) => Ok(d.clone()),
            (0, None) => Err("the singleton side input is empty; give a default with as_singleton_or(..)".into()),
            (n, _) => Err(format!("the singleton side input has {n} elements in one window, not one")),
        }
    }
}

/// Every element ([`PCollection::as_list`]).
pub struct List<T>(PhantomData<fn() -> T>);

impl<T: Data + Sync> View for List<T> {
    type Elem = T;
    type Value = Vec<T>;
    fn build(&self, elements: Vec<T>) -> std::result::Result<Vec<T>, String> {
        Ok(elements)
    }
}

/// A value per key ([`PCollection::as_map`]).
pub struct Map<K, V>(PhantomData<fn() -> (K, V)>);

impl<K: Key + Sync, V: Data + Sync> View for Map<K, V> {
    type Elem = (K, V);
    type Value = HashMap<K, V>;
    fn build(&self, elements: Vec<(K, V)>) -> std::result::Result<HashMap<K, V>, String> {
        let mut map = HashMap::with_capacity(elements.len());
        for (k, v) in elements {
            if map.contains_key(&k) {
                return Err(format!(
                    "the map side input has key {} more than once; use as_multimap() for many values per key",
                    truncated_debug(&k, 100)
                ));
            }
            map.insert(k, v);
        }
        Ok(map)
    }
}

/// Every value per key ([`PCollection::as_multimap`]).
pub struct MultiMap<K, V>(PhantomData<fn() -> (K, V)>);

impl<K: Key + Sync, V: Data + Sync> View for MultiMap<K, V> {
    type Elem = (K, V);
    type Value = HashMap<K, Vec<V>>;
    fn build(&self, elements: Vec<(K, V)>) -> std::result::Result<HashMap<K, Vec<V>>, String> {
        let mut map: HashMap<K, Vec<V>> = HashMap::new();
        for (k, v) in elements {
            map.entry(k).or_default().push(v);
        }
        Ok(map)
    }
}

/// A side input: a collection, the view to read it through, and its window function.
pub struct SideInput<W: View> {
    port: PortRef,
    window_fn: Arc<dyn WindowFn>,
    view: Arc<W>,
    /// Whether `port` carries firings of the gathered view, `((), Vec<Elem>)`, each one
    /// replacing the last (a triggered side collection), rather than the elements.
    gathered: bool,
}

impl<W: View> Clone for SideInput<W> {
    fn clone(&self) -> Self {
        SideInput {
            port: self.port,
            window_fn: self.window_fn.clone(),
            view: self.view.clone(),
            gathered: self.gathered,
        }
    }
}

impl<T: Data + Sync> PCollection<T> {
    fn view<W: View<Elem = T>>(&self, view: W) -> SideInput<W> {
        let windowing = self.info().windowing;
        let (port, gathered) = if windowing.default_trigger {
            (self.port(), false)
        } else {
            let keyed = crate::transforms::map::map_step(self, "SideInputKey", |x: T| ((), x));
            (keyed.group_by_key().port(), true)
        };
        SideInput { port, window_fn: windowing.assign, view: Arc::new(view), gathered }
    }

    /// This collection as one value per window (Beam's `View.asSingleton`); an empty
    /// window is an error naming the step that reads it.
    pub fn as_singleton(&self) -> SideInput<Singleton<T>> {
        self.view(Singleton { default: None })
    }

    /// This collection as one value per window, `default` where it is empty.
    pub fn as_singleton_or(&self, default: T) -> SideInput<Singleton<T>> {
        self.view(Singleton { default: Some(default) })
    }

    /// This collection as a list per window, in a canonical order (timestamp, then value).
    pub fn as_list(&self) -> SideInput<List<T>> {
        self.view(List(PhantomData))
    }
}

impl<K: Key + Sync, V: Data + Sync> PCollection<(K, V)> {
    /// This collection as a map per window (Beam's `View.asMap`); a key seen twice is an
    /// error naming the step that reads it.
    pub fn as_map(&self) -> SideInput<Map<K, V>> {
        self.view(Map(PhantomData))
    }

    /// This collection as a map of every value per key, per window (`View.asMultimap`).
    pub fn as_multimap(&self) -> SideInput<MultiMap<K, V>> {
        self.view(MultiMap(PhantomData))
    }
}

impl<T: Data> PCollection<T> {
    /// `f(element, side value)` for every element, with `side` read for the element's
    /// window (see [`crate::transforms::side_input`]). Like [`map`](PCollection::map), `f`
    /// takes the element by value, so a panic's error names the element by its index in
    /// the batch, its timestamp and its window, not by its value.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     let names = p.create(vec![(1u32, "ana".to_string()), (2, "bo".to_string())]).as_map();
    ///     p.create(vec![(1u32, 10i64), (2, 5), (3, 1)]).map_with(&names, |(id, amount), names| {
    ///         (names.get(&id).cloned().unwrap_or_else(|| "?".into()), amount)
    ///     })
    /// });
    /// out.sort();
    /// assert_eq!(out, [("?".to_string(), 1), ("ana".to_string(), 10), ("bo".to_string(), 5)]);
    /// ```
    pub fn map_with<W: View, U: Data>(
        &self,
        side: &SideInput<W>,
        f: impl Fn(T, &W::Value) -> U + Send + Sync + 'static,
    ) -> PCollection<U> {
        let f = Arc::new(f);
        add_side_step(self, side, "MapWithSide", move || {
            let f = f.clone();
            ElementFn::ByValue(Box::new(move |x: T, v: &W::Value, (ts, w, pane): Stamp, out: &mut Elements<U>| {
                out.push(f(x, v), ts, w, pane)
            }))
        })
    }

    /// The elements for which `f(element, side value)` holds; `f` borrows the element, so
    /// a panic's error names its value.
    pub fn filter_with<W: View>(
        &self,
        side: &SideInput<W>,
        f: impl Fn(&T, &W::Value) -> bool + Send + Sync + 'static,
    ) -> PCollection<T> {
        let f = Arc::new(f);
        add_side_step(self, side, "FilterWithSide", move || {
            let f = f.clone();
            ElementFn::Borrowing(Box::new(move |x: &T, v: &W::Value, (ts, w, pane): Stamp, out: &mut Elements<T>| {
                if f(x, v) {
                    out.push(x.clone(), ts, w, pane);
                }
            }))
        })
    }

    /// Zero or more outputs per element, from `f(element, side value)`; as with
    /// [`map_with`](PCollection::map_with), `f` takes the element by value.
    pub fn flat_map_with<W: View, U: Data, I: IntoIterator<Item = U>>(
        &self,
        side: &SideInput<W>,
        f: impl Fn(T, &W::Value) -> I + Send + Sync + 'static,
    ) -> PCollection<U> {
        let f = Arc::new(f);
        add_side_step(self, side, "FlatMapWithSide", move || {
            let f = f.clone();
            ElementFn::ByValue(Box::new(move |x: T, v: &W::Value, (ts, w, pane): Stamp, out: &mut Elements<U>| {
                for u in f(x, v) {
                    out.push(u, ts, w, pane);
                }
            }))
        })
    }

    /// Runs a [`SideDoFn`] over every element, with `side` read for its window: a DoFn
    /// with a side input (Beam's `ParDo.of(..).withSideInputs(..)`).
    pub fn par_do_with_side<W: View, D: SideDoFn<W::Value, In = T>>(
        &self,
        side: &SideInput<W>,
        dofn: D,
    ) -> PCollection<D::Out> {
        add_side_step(self, side, "ParDoWithSide", move || {
            let mut dofn = dofn.clone();
            ElementFn::Borrowing(Box::new(
                move |x: &T, v: &W::Value, (ts, w, pane): Stamp, out: &mut Elements<D::Out>| {
                    crate::transforms::par_do::with_context(out, ts, w, pane, |ctx| dofn.process(x, v, ctx));
                },
            ))
        })
    }
}

/// A DoFn that reads a side input's value beside each element.
pub trait SideDoFn<V>: Clone + Send + Sync + 'static {
    /// The main input's element.
    type In: Data;
    /// What it outputs.
    type Out: Data;
    /// Called for each element, with the side input's value for its window.
    fn process(&mut self, element: &Self::In, side: &V, ctx: &mut ProcessContext<'_, Self::Out>);
}

/// One worker's per-element function of a side-input step: element, side value,
/// timestamp, window, pane, and where its outputs go.
enum ElementFn<T, V, U> {
    /// Takes the element by value (`map_with`, `flat_map_with`, as `map` does): a panic's
    /// error can name only where the element was.
    ByValue(ByValueFn<T, V, U>),
    /// Borrows the element (`filter_with`, a DoFn): a panic's error names its value.
    Borrowing(BorrowingFn<T, V, U>),
}

/// An element's timestamp, window and pane, which its outputs keep.
type Stamp = (EventTime, Window, PaneInfo);

/// [`ElementFn::ByValue`]'s function.
type ByValueFn<T, V, U> = Box<dyn FnMut(T, &V, Stamp, &mut Elements<U>)>;

/// [`ElementFn::Borrowing`]'s function.
type BorrowingFn<T, V, U> = Box<dyn FnMut(&T, &V, Stamp, &mut Elements<U>)>;

/// Makes a worker's [`ElementFn`].
type Factory<T, V, U> = Arc<dyn Fn() -> ElementFn<T, V, U> + Send + Sync>;

fn add_side_step<T: Data, W: View, U: Data>(
    main: &PCollection<T>,
    side: &SideInput<W>,
    transform: &str,
    make: impl Fn() -> ElementFn<T, W::Value, U> + Send + Sync + 'static,
) -> PCollection<U> {
    let p = main.pipeline();
    let step = SideStep::<T, W, U> { side: side.clone(), make: Arc::new(make) };
    let info = main.derived_info::<U>();
    let node = p.add_step(transform, NodeKind::SideParDo(Arc::new(step)), vec![main.port(), side.port], vec![info]);
    PCollection::from_port(p, PortRef { node, port: 0 })
}

struct SideStep<T, W: View, U> {
    side: SideInput<W>,
    make: Factory<T, W::Value, U>,
}

impl<T: Data, W: View, U: Data> SideParDoFn for SideStep<T, W, U> {
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn SideParDoInstance> {
        Box::new(SideInstance::<T, W, U> {
            step: ctx.name.clone(),
            side: self.side.clone(),
            f: (self.make)(),
            elements: HashMap::new(),
            firings: HashMap::new(),
            built: HashMap::new(),
            scratch: Vec::new(),
        })
    }
}

/// A side element with what orders it: its timestamp and its encoding.
type Stamped<E> = (EventTime, Vec<u8>, E);

/// The version of [`SavedView`] this build writes and reads.
const SAVED_VIEW_VERSION: u32 = 1;

/// A side view as a checkpoint holds it ([`SideParDoInstance::save_view`]): its windows in
/// order, each with its elements' timestamps and encodings (the bytes the instance already
/// orders them by, so nothing is encoded twice), sorted.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedView {
    version: u32,
    windows: Vec<SavedWindow>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedWindow {
    window: Window,
    /// For a gathered side input: the index of the firing the window holds.
    firing: Option<u64>,
    elements: Vec<(EventTime, Vec<u8>)>,
}

struct SideInstance<T, W: View, U> {
    step: Arc<str>,
    side: SideInput<W>,
    f: ElementFn<T, W::Value, U>,
    /// The side input's elements by window: (timestamp, encoding, element).
    elements: HashMap<Window, Vec<Stamped<W::Elem>>>,
    /// For a gathered side input: the index of the firing each window holds.
    firings: HashMap<Window, u64>,
    /// Values built, by side window; dropped when more elements come for it.
    built: HashMap<Window, Arc<W::Value>>,
    scratch: Vec<Window>,
}

impl<T: Data, W: View, U: Data> SideInstance<T, W, U> {
    /// The side window for main window `w`: the one containing its end, the latest if
    /// several (sliding windows).
    fn side_window(&mut self, w: Window) -> Window {
        self.scratch.clear();
        self.side.window_fn.assign(w.max_timestamp(), &mut self.scratch);
        self.scratch.iter().copied().max_by_key(|sw| sw.max_timestamp()).unwrap_or(Window::Global)
    }

    fn value(&mut self, sw: Window) -> Result<Arc<W::Value>> {
        if let Some(v) = self.built.get(&sw) {
            return Ok(v.clone());
        }
        let mut elements = self.elements.get(&sw).cloned().unwrap_or_default();
        elements.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let gathered = self.side.gathered;
        let built = self.side.view.build(elements.into_iter().map(|(_, _, e)| e).collect()).map_err(|why| {
            let hint = if gathered {
                " (a triggered side input reads its latest firing: with accumulating panes that holds every value so far; discarding panes, the default, hold what came since the last firing)"
            } else {
                ""
            };
            Error::Validation { step: self.step.to_string(), message: format!("side input, window {sw:?}: {why}{hint}") }
        })?;
        let v = Arc::new(built);
        self.built.insert(sw, v.clone());
        Ok(v)
    }
}

impl<T: Data, W: View, U: Data> SideParDoInstance for SideInstance<T, W, U> {
    fn add_side(&mut self, batch: Batch) -> Result<()> {
        if self.side.gathered {
            for wv in batch.try_into_elements::<((), Vec<W::Elem>)>()?.into_iter_windowed() {
                // The latest firing is the view; a retraction only takes back an older one.
                let held = self.firings.get(&wv.window).copied();
                if wv.pane.retraction || held.is_some_and(|i| i > wv.pane.index) {
                    continue;
                }
                self.firings.insert(wv.window, wv.pane.index);
                self.built.remove(&wv.window);
                let firing = self.elements.entry(wv.window).or_default();
                firing.clear();
                for e in wv.value.1 {
                    let bytes = bitcode::serialize(&e).expect("internal error: encoding a side element failed");
                    firing.push((wv.timestamp, bytes, e));
                }
            }
            return Ok(());
        }
        for wv in batch.try_into_elements::<W::Elem>()?.into_iter_windowed() {
            let bytes = bitcode::serialize(&wv.value).expect("internal error: encoding a side element failed");
            self.built.remove(&wv.window);
            self.elements.entry(wv.window).or_default().push((wv.timestamp, bytes, wv.value));
        }
        Ok(())
    }

    fn needs(&mut self, main: Batch, windows: &mut Vec<Window>) -> Result<Batch> {
        let elements = main.try_into_elements::<T>()?;
        windows.clear();
        let mut last = None;
        for i in 0..elements.len() {
            let w = elements.window(i);
            if last == Some(w) {
                continue;
            }
            last = Some(w);
            let sw = self.side_window(w);
            if !windows.contains(&sw) {
                windows.push(sw);
            }
        }
        Ok(Batch::new(elements))
    }

    fn ready(&self, window: Window, side_watermark_past_end: bool) -> bool {
        side_watermark_past_end || (self.side.gathered && self.firings.contains_key(&window))
    }

    fn process(&mut self, main: Batch) -> Result<Option<Batch>> {
        let input = main.try_into_elements::<T>()?;
        let mut out = Elements::<U>::with_capacity(input.len());
        let mut current: Option<(Window, Arc<W::Value>)> = None;
        for (i, wv) in input.into_iter_windowed().enumerate() {
            let value = match &current {
                Some((w, v)) if *w == wv.window => v.clone(),
                _ => {
                    let sw = self.side_window(wv.window);
                    let v = self.value(sw)?;
                    current = Some((wv.window, v.clone()));
                    v
                }
            };
            let (ts, w, pane) = (wv.timestamp, wv.window, wv.pane);
            match &mut self.f {
                ElementFn::ByValue(f) => {
                    catch_unwind(AssertUnwindSafe(|| f(wv.value, &value, (ts, w, pane), &mut out)))
                        .map_err(|p| Error::from_panic(&self.step, p, Some(moved_element(i, "batch", ts, w))))?
                }
                ElementFn::Borrowing(f) => {
                    catch_unwind(AssertUnwindSafe(|| f(&wv.value, &value, (ts, w, pane), &mut out)))
                        .map_err(|p| Error::from_panic(&self.step, p, Some(truncated_debug(&wv.value, 200))))?
                }
            }
        }
        Ok((!out.is_empty()).then(|| Batch::new(out)))
    }

    fn save_view(&self) -> Result<Vec<u8>> {
        let mut windows: Vec<SavedWindow> = self
            .elements
            .iter()
            .map(|(w, elements)| {
                let mut elements: Vec<(EventTime, Vec<u8>)> =
                    elements.iter().map(|(t, b, _)| (*t, b.clone())).collect();
                elements.sort();
                SavedWindow { window: *w, firing: self.firings.get(w).copied(), elements }
            })
            .collect();
        // A gathered window's firing can be empty: its index still says which firing it is.
        for (w, firing) in &self.firings {
            if !self.elements.contains_key(w) {
                windows.push(SavedWindow { window: *w, firing: Some(*firing), elements: Vec::new() });
            }
        }
        windows.sort_by_key(|w| w.window);
        bitcode::serialize(&SavedView { version: SAVED_VIEW_VERSION, windows })
            .map_err(|e| Error::Internal(format!("step '{}': saving the side view: {e}", self.step)))
    }

    fn restore_view(&mut self, saved: &[u8]) -> Result<()> {
        let does_not_read = |why: String| {
            Error::Config(format!(
                "step '{}': the saved side view does not read as this step's ({why}); was the checkpoint taken by \
                 another version of the pipeline?",
                self.step
            ))
        };
        let view: SavedView = bitcode::deserialize(saved).map_err(|e| does_not_read(e.to_string()))?;
        if view.version != SAVED_VIEW_VERSION {
            return Err(does_not_read(format!(
                "version {}; this build reads version {SAVED_VIEW_VERSION}",
                view.version
            )));
        }
        self.elements.clear();
        self.firings.clear();
        self.built.clear();
        for saved in view.windows {
            if let Some(firing) = saved.firing {
                self.firings.insert(saved.window, firing);
            }
            let mut elements = Vec::with_capacity(saved.elements.len());
            for (t, bytes) in saved.elements {
                let e: W::Elem = bitcode::deserialize(&bytes).map_err(|e| does_not_read(e.to_string()))?;
                elements.push((t, bytes, e));
            }
            self.elements.insert(saved.window, elements);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! A side view saved for a checkpoint and restored into a fresh instance reads as the
    //! one saved, for elements and for the firings of a triggered side input.

    use super::*;
    use crate::Pipeline;
    use crate::runtime::WorkerInfo;
    use crate::trigger::Trigger;

    /// A fresh instance of the side-input step of `p`.
    fn instance(p: &Pipeline) -> Box<dyn SideParDoInstance> {
        let graph = p.graph();
        let f = graph
            .nodes()
            .iter()
            .find_map(|n| match &n.kind {
                NodeKind::SideParDo(f) => Some(f.clone()),
                _ => None,
            })
            .expect("a side-input step");
        f.instantiate(&StepContext {
            name: "S".into(),
            worker: WorkerInfo { index: 0, peers: 1 },
            clock: Arc::new(crate::ManualClock::new()),
        })
    }

    fn batch<T: Data>(values: impl IntoIterator<Item = (T, PaneInfo)>) -> Batch {
        let mut e = Elements::new();
        for (v, pane) in values {
            e.push(v, EventTime::from_millis(0), Window::Global, pane);
        }
        Batch::new(e)
    }

    /// What main element `x` reads.
    fn read(instance: &mut dyn SideParDoInstance, x: i64) -> Vec<(i64, i64)> {
        let out = instance.process(batch([(x, PaneInfo::NO_FIRING)])).unwrap().expect("an output");
        out.into_elements::<(i64, i64)>().into_iter_windowed().map(|wv| wv.value).collect()
    }

    #[test]
    fn a_restored_side_view_reads_as_the_saved_one_and_saves_the_same_bytes() {
        let p = Pipeline::new();
        let side = p.create(vec![0i64]).as_list();
        p.create(vec![0i64]).map_with(&side, |x, list| (x, list.iter().sum::<i64>()));
        let mut before = instance(&p);
        before.add_side(batch([3i64, 1, 2].map(|v| (v, PaneInfo::NO_FIRING)))).unwrap();
        let saved = before.save_view().unwrap();
        let mut after = instance(&p);
        after.restore_view(&saved).unwrap();
        assert_eq!(after.save_view().unwrap(), saved);
        assert_eq!(read(after.as_mut(), 10), [(10, 6)]);
        // Restoring replaces what an instance held.
        after.add_side(batch([(100i64, PaneInfo::NO_FIRING)])).unwrap();
        after.restore_view(&saved).unwrap();
        assert_eq!(read(after.as_mut(), 10), [(10, 6)]);
    }

    #[test]
    fn a_triggered_side_view_keeps_its_latest_firing_across_a_restore() {
        let p = Pipeline::new();
        let side =
            p.create(vec![0i64]).triggering(Trigger::repeatedly(Trigger::after_processing_time(1_000))).as_singleton();
        p.create(vec![0i64]).map_with(&side, |x, latest| (x, *latest));
        let firing = |index| PaneInfo { index, ..PaneInfo::NO_FIRING };
        let mut before = instance(&p);
        before.add_side(batch([(((), vec![1i64]), firing(0)), (((), vec![5i64]), firing(2))])).unwrap();
        let mut after = instance(&p);
        assert!(!after.ready(Window::Global, false), "no firing yet");
        after.restore_view(&before.save_view().unwrap()).unwrap();
        assert!(after.ready(Window::Global, false), "the window fired before the cut");
        // A firing older than the one restored does not replace it.
        after.add_side(batch([(((), vec![9i64]), firing(1))])).unwrap();
        assert_eq!(read(after.as_mut(), 10), [(10, 5)]);
    }

    #[test]
    fn a_view_of_another_version_is_an_error_naming_the_step() {
        let p = Pipeline::new();
        let side = p.create(vec![0i64]).as_list();
        p.create(vec![0i64]).map_with(&side, |x, list| (x, list.len() as i64));
        let saved = bitcode::serialize(&SavedView { version: 99, windows: Vec::new() }).unwrap();
        let err = instance(&p).restore_view(&saved).unwrap_err().to_string();
        assert!(err.contains("'S'") && err.contains("version 99"), "{err}");
    }
}
