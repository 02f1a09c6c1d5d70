//! Collects a collection into memory, for tests and small results.

use std::sync::{Arc, Mutex};

use riffle_engine::runtime::{SinkFn, SinkWriter, StepContext};
use riffle_engine::{Batch, Data, PCollection, Result, WindowedValue};

/// Where [`collect`] puts the elements, once the pipeline has run.
pub type Collected<T> = Arc<Mutex<Vec<WindowedValue<T>>>>;

/// Adds a sink that gathers every element of `input`, with its metadata, into the
/// returned vector. Every worker of the *process* appends to it, so in a cluster each
/// process holds only its own workers' share: use a file sink there.
///
/// ```
/// use riffle_engine::Pipeline;
/// let p = Pipeline::new();
/// let out = riffle_connectors::memory::collect(&p.create(vec![1, 2, 3]).map(|x| x * 2));
/// riffle_timely::run(&p, &riffle_timely::RunOptions::threads(2)).unwrap();
/// let mut got: Vec<i32> = out.lock().unwrap().iter().map(|wv| wv.value).collect();
/// got.sort();
/// assert_eq!(got, [2, 4, 6]);
/// ```
pub fn collect<T: Data>(input: &PCollection<T>) -> Collected<T> {
    let out: Collected<T> = Arc::default();
    input.write_to("Collect", Arc::new(CollectSink { out: out.clone() }));
    out
}

struct CollectSink<T> {
    out: Collected<T>,
}

impl<T: Data> SinkFn for CollectSink<T> {
    fn gathers(&self) -> bool {
        false
    }
    fn open(&self, _ctx: &StepContext) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(CollectSink { out: self.out.clone() }))
    }
}

impl<T: Data> SinkWriter for CollectSink<T> {
    fn write(&mut self, input: Batch) -> Result<()> {
        let e = input.try_into_elements::<T>()?;
        self.out.lock().expect("collect sink").extend(e.into_iter_windowed());
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Adds a sink that drops every element: for benchmarks, where only the run report's
/// counts matter.
///
/// ```
/// use riffle_engine::Pipeline;
/// let p = Pipeline::new();
/// riffle_connectors::memory::discard(&p.create(vec![1, 2, 3]));
/// let report = riffle_timely::run(&p, &riffle_timely::RunOptions::threads(2)).unwrap();
/// assert_eq!(report.elements_in("Discard").iter().sum::<u64>(), 3);
/// ```
pub fn discard<T: Data>(input: &PCollection<T>) {
    input.write_to("Discard", Arc::new(Discard));
}

struct Discard;

impl SinkFn for Discard {
    fn gathers(&self) -> bool {
        false
    }
    fn open(&self, _ctx: &StepContext) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(Discard))
    }
}

impl SinkWriter for Discard {
    fn write(&mut self, _input: Batch) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
