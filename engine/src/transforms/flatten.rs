//! Flatten: one collection from several of the same type.

use crate::element::Data;
use crate::graph::{NodeKind, OutputInfo, PortRef};
use crate::pipeline::PCollection;

impl<T: Data> PCollection<T> {
    /// The union of `inputs` (Beam's `Flatten`). All inputs must have the same windowing.
    ///
    /// ```
    /// use riffle_engine::PCollection;
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     PCollection::flatten(&[p.create(vec![1, 2]), p.create(vec![3])])
    /// });
    /// out.sort();
    /// assert_eq!(out, [1, 2, 3]);
    /// ```
    ///
    /// # Panics
    /// If `inputs` is empty: there is no pipeline to add the step to.
    pub fn flatten(inputs: &[PCollection<T>]) -> PCollection<T> {
        let first = inputs.first().expect("flatten needs at least one input");
        let p = first.pipeline();
        let mut info: OutputInfo = first.info();
        for other in &inputs[1..] {
            let o = other.info();
            info.bounded &= o.bounded;
            if !other.pipeline().same_as(p) {
                p.defer_error("Flatten", "an input belongs to another pipeline");
            } else if o.windowing != info.windowing {
                p.defer_error(
                    "Flatten",
                    format!(
                        "inputs have different windowing ({} and {}); apply the same window_into to each",
                        info.windowing.window_fn, o.windowing.window_fn
                    ),
                );
            }
        }
        let ports = inputs.iter().map(|c| c.port()).collect();
        let node = p.add_step("Flatten", NodeKind::Flatten, ports, vec![info]);
        PCollection::from_port(p, PortRef { node, port: 0 })
    }
}
