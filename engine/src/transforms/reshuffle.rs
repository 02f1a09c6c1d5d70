//! Reshuffle: spreads elements evenly over workers.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::batch::Batch;
use crate::element::Data;
use crate::error::Result;
use crate::graph::{NodeKind, PortRef};
use crate::pipeline::PCollection;
use crate::runtime::{Shuffle, ShuffleFn, StepContext};

/// Deals whole batches round-robin, starting at a different worker on each worker so that
/// small inputs still spread.
struct RoundRobin<T> {
    next: usize,
    _t: PhantomData<fn() -> T>,
}

struct RoundRobinFn<T>(PhantomData<fn() -> T>);

impl<T: Data> ShuffleFn for RoundRobinFn<T> {
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn Shuffle> {
        Box::new(RoundRobin::<T> { next: ctx.worker.index, _t: PhantomData })
    }
}

impl<T: Data> Shuffle for RoundRobin<T> {
    fn route(&mut self, input: Batch, peers: usize, out: &mut Vec<Batch>) -> Result<()> {
        out.push(input.with_target(self.next % peers));
        self.next = self.next.wrapping_add(1);
        Ok(())
    }
    fn flush(&mut self, _peers: usize, _out: &mut Vec<Batch>) -> Result<()> {
        Ok(())
    }
}

impl<T: Data> PCollection<T> {
    /// Moves elements between workers to even out load, keeping timestamps and windows
    /// (Beam's `Reshuffle`). Whole batches move, so the balance is by batch.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| p.create((0..100).collect()).reshuffle());
    /// out.sort();
    /// assert_eq!(out, (0..100).collect::<Vec<_>>());
    /// ```
    pub fn reshuffle(&self) -> PCollection<T> {
        let p = self.pipeline();
        let kind = NodeKind::Exchange(Arc::new(RoundRobinFn::<T>(PhantomData)));
        let node = p.add_step("Reshuffle", kind, vec![self.port()], vec![self.derived_info::<T>()]);
        PCollection::from_port(p, PortRef { node, port: 0 })
    }

    /// Writes the collection to `sink`, as a step named `name`. Connectors build their
    /// sinks on this (see `riffle_connectors::text::write_lines`).
    ///
    /// ```
    /// use riffle_engine::Pipeline;
    /// let p = Pipeline::new();
    /// let out = riffle_connectors::memory::collect(&p.create(vec![1]));
    /// assert!(p.explain().contains("Collect"));
    /// # riffle_timely::run(&p, &riffle_timely::RunOptions::default()).unwrap();
    /// # assert_eq!(out.lock().unwrap().len(), 1);
    /// ```
    pub fn write_to(&self, name: &str, sink: Arc<dyn crate::runtime::SinkFn>) {
        self.pipeline().add_step(name, NodeKind::Sink(sink), vec![self.port()], vec![]);
    }
}
