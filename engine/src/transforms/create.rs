//! Create: a bounded collection from values in the pipeline itself.

use std::sync::Arc;

use crate::batch::Batch;
use crate::element::{Data, Elements};
use crate::error::Result;
use crate::graph::{NodeKind, OutputInfo, PortRef, Windowing};
use crate::pane::PaneInfo;
use crate::pipeline::{PCollection, Pipeline};
use crate::runtime::{SourceFn, SourcePoll, SourceReader, StepContext};
use crate::time::EventTime;
use crate::window::Window;

impl Pipeline {
    /// A bounded collection of `values`, each at timestamp [`EventTime::MIN`] as in Beam.
    ///
    /// Element `i` is read by worker `i % workers`, so the split is the same in every run.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create(vec!['x', 'y']));
    /// out.sort();
    /// assert_eq!(out, ['x', 'y']);
    /// ```
    pub fn create<T: Data>(&self, values: Vec<T>) -> PCollection<T> {
        self.create_timestamped(values.into_iter().map(|v| (v, EventTime::MIN)).collect())
    }

    /// A bounded collection of values with their event timestamps.
    ///
    /// ```
    /// use riffle_engine::prelude::*;
    /// let out = riffle_timely::testing::run_bounded_windowed(|p| {
    ///     p.create_timestamped(vec![('a', EventTime::from_millis(5))])
    /// });
    /// assert_eq!(out[0].timestamp, EventTime::from_millis(5));
    /// ```
    pub fn create_timestamped<T: Data>(&self, values: Vec<(T, EventTime)>) -> PCollection<T> {
        let info = OutputInfo {
            type_name: std::any::type_name::<T>(),
            bounded: true,
            windowing: Windowing::default(),
            tag: None,
        };
        let source = CreateSource { values: Arc::new(values) };
        let node = self.add_step("Create", NodeKind::Source(Arc::new(source)), vec![], vec![info]);
        PCollection::from_port(self, PortRef { node, port: 0 })
    }
}

struct CreateSource<T> {
    values: Arc<Vec<(T, EventTime)>>,
}

impl<T: Data> SourceFn for CreateSource<T> {
    fn is_bounded(&self) -> bool {
        true
    }
    fn open(&self, ctx: &StepContext) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(CreateReader { values: self.values.clone(), next: ctx.worker.index, stride: ctx.worker.peers }))
    }
}

struct CreateReader<T> {
    values: Arc<Vec<(T, EventTime)>>,
    next: usize,
    stride: usize,
}

impl<T: Data> SourceReader for CreateReader<T> {
    fn poll(&mut self, max_elements: usize) -> Result<SourcePoll> {
        if self.next >= self.values.len() {
            return Ok(SourcePoll::Done);
        }
        let mut batch = Elements::with_capacity(max_elements.min(self.values.len()));
        while self.next < self.values.len() && batch.len() < max_elements {
            let (v, t) = &self.values[self.next];
            batch.push(v.clone(), *t, Window::Global, PaneInfo::NO_FIRING);
            self.next += self.stride;
        }
        Ok(SourcePoll::Batch(Batch::new(batch)))
    }
}
