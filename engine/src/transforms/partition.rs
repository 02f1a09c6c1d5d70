//! Partition: several collections from one, chosen per element.

use std::sync::Arc;

use crate::element::Data;
use crate::pipeline::PCollection;
use crate::transforms::par_do::{AnyTupleTag, DoFn, ProcessContext, TupleTag, add_dofn};

struct PartitionFn<T, F> {
    f: Arc<F>,
    n: usize,
    tags: Arc<Vec<TupleTag<T>>>,
}

impl<T, F> Clone for PartitionFn<T, F> {
    fn clone(&self) -> Self {
        PartitionFn { f: self.f.clone(), n: self.n, tags: self.tags.clone() }
    }
}

impl<T: Data, F: Fn(&T, usize) -> usize + Send + Sync + 'static> DoFn for PartitionFn<T, F> {
    type In = T;
    type Out = T;
    fn process(&mut self, element: &T, ctx: &mut ProcessContext<'_, T>) {
        let i = (self.f)(element, self.n);
        match i {
            0 => ctx.output(element.clone()),
            i if i < self.n => ctx.output_to(&self.tags[i - 1], element.clone()),
            i => panic!("the partition function returned {i}, but there are only {} partitions", self.n),
        }
    }
}

impl<T: Data> PCollection<T> {
    /// Splits the collection into `n` by `f(element, n)`, which returns an index below
    /// `n` (Beam's `Partition`).
    ///
    /// ```
    /// let (mut evens, mut odds) = riffle_timely::testing::run_bounded2(|p| {
    ///     let parts = p.create(vec![1, 2, 3, 4, 5]).partition(2, |x, _| (*x % 2) as usize);
    ///     (parts[0].clone(), parts[1].clone())
    /// });
    /// evens.sort();
    /// odds.sort();
    /// assert_eq!((evens, odds), (vec![2, 4], vec![1, 3, 5]));
    /// ```
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn partition(&self, n: usize, f: impl Fn(&T, usize) -> usize + Send + Sync + 'static) -> Vec<PCollection<T>> {
        assert!(n > 0, "partition needs at least one partition");
        let tags: Vec<TupleTag<T>> = (1..n).map(|i| TupleTag::new(&format!("partition-{i}"))).collect();
        let boxed: Vec<Box<dyn AnyTupleTag>> =
            tags.iter().map(|t| Box::new(t.clone()) as Box<dyn AnyTupleTag>).collect();
        let dofn = PartitionFn { f: Arc::new(f), n, tags: Arc::new(tags.clone()) };
        let (first, rest) = add_dofn(self, "Partition", dofn, boxed, self.derived_info::<T>());
        std::iter::once(first).chain(tags.iter().map(|t| rest.get(t))).collect()
    }
}
