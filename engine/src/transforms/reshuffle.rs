//! Reshuffle: spreads elements evenly over workers.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::batch::Batch;
use crate::element::{Data, Key};
use crate::error::Result;
use crate::graph::{NodeKind, PortRef};
use crate::keys::KeyGroup;
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
    fn route(
        &mut self,
        input: Batch,
        peers: usize,
        _arrival: crate::time::Watermark,
        out: &mut Vec<Batch>,
    ) -> Result<()> {
        out.push(input.with_target(self.next % peers));
        self.next = self.next.wrapping_add(1);
        Ok(())
    }
}

/// Routes each element to the worker owning its key's key group.
struct ByKey<T, K, F> {
    key: Arc<F>,
    _t: PhantomData<fn(&T) -> K>,
}

impl<T, K, F> Clone for ByKey<T, K, F> {
    fn clone(&self) -> Self {
        ByKey { key: self.key.clone(), _t: PhantomData }
    }
}

impl<T: Data, K: Key, F: Fn(&T) -> K + Send + Sync + 'static> ShuffleFn for ByKey<T, K, F> {
    fn instantiate(&self, _ctx: &StepContext) -> Box<dyn Shuffle> {
        Box::new(self.clone())
    }
    fn split_by_key_group(&self, exchanged: Batch) -> Result<Vec<(KeyGroup, Batch)>> {
        let key = &self.key;
        Ok(Batch::per_key_group(exchanged.try_into_elements::<T>()?, |x| KeyGroup::of(&key(x))))
    }
}

impl<T: Data, K: Key, F: Fn(&T) -> K + Send + Sync + 'static> Shuffle for ByKey<T, K, F> {
    fn route(
        &mut self,
        input: Batch,
        peers: usize,
        _arrival: crate::time::Watermark,
        out: &mut Vec<Batch>,
    ) -> Result<()> {
        if peers == 1 {
            out.push(input.with_target(0));
            return Ok(());
        }
        let key = &self.key;
        let parts = input.into_elements::<T>().split_by(peers, |x| KeyGroup::of(&key(x)).worker(peers));
        out.extend(Batch::per_worker(parts));
        Ok(())
    }
}

impl<T: Data> PCollection<T> {
    /// Moves each element to the worker that owns `key(element)`, without grouping
    /// (Beam's `Redistribute.byKey`): elements with equal keys end up on one worker. The
    /// plain keyed exchange, which the shuffle benchmark measures.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     p.create((0..100u32).collect()).redistribute_by_key(|x| x % 7)
    /// });
    /// out.sort();
    /// assert_eq!(out, (0..100).collect::<Vec<_>>());
    /// ```
    pub fn redistribute_by_key<K: Key>(&self, key: impl Fn(&T) -> K + Send + Sync + 'static) -> PCollection<T> {
        let p = self.pipeline();
        let kind = NodeKind::Exchange(Arc::new(ByKey { key: Arc::new(key), _t: PhantomData }));
        let node = p.add_step("RedistributeByKey", kind, vec![self.port()], vec![self.derived_info::<T>()]);
        PCollection::from_port(p, PortRef { node, port: 0 })
    }

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
