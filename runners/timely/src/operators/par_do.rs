//! The ParDo operator: one bundle per stamp, outputs under the input's capability.

use std::sync::Arc;

use riffle_engine::Batch;
use riffle_engine::runtime::ParDoFn;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::{BatchStream, Env};
use crate::time::Time;

/// Lowers a ParDo step; returns one stream per output port.
pub fn par_do<'scope>(
    input: BatchStream<'scope>,
    name: &str,
    f: &Arc<dyn ParDoFn>,
    env: &Env,
) -> Vec<BatchStream<'scope>> {
    let mut builder = OperatorBuilder::new(name.to_string(), input.scope());
    let mut input = builder.new_input(input, Pipeline);
    let mut outputs = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..f.outputs() {
        let (output, stream) = builder.new_output::<Vec<Batch>>();
        outputs.push(OutputBuilder::<Time, CapacityContainerBuilder<Vec<Batch>>>::from(output));
        streams.push(stream);
    }
    let ctx = env.step(name);
    let counter = env.counter(name);
    let job = env.job.clone();
    let f = f.clone();
    builder.build(move |capabilities| {
        drop(capabilities);
        let mut instance = f.instantiate(&ctx);
        let mut live = match instance.setup() {
            Ok(()) => true,
            Err(e) => {
                job.fail(e);
                false
            }
        };
        move |frontiers| {
            let _busy = counter.busy();
            counter.set_input_watermark(crate::time::watermark(&frontiers[0]).0.millis());
            let mut handles: Vec<_> = outputs.iter_mut().map(|o| o.activate()).collect();
            input.for_each_stamp(|cap, containers| {
                if !live || job.has_failed() {
                    containers.for_each(|c| c.clear());
                    return;
                }
                let bundle = (|| {
                    instance.start_bundle()?;
                    for container in containers {
                        for batch in container.drain(..) {
                            counter.add_in(batch.len());
                            instance.process(batch)?;
                        }
                    }
                    instance.finish_bundle()
                })();
                if let Err(e) = bundle {
                    job.fail(e);
                    live = false;
                    return;
                }
                for (port, batch) in instance.take_outputs().into_iter().enumerate() {
                    if let Some(batch) = batch {
                        counter.add_out(batch.len());
                        handles[port].session(&cap).give(batch);
                    }
                }
            });
            if live && frontiers[0].is_empty() {
                instance.teardown();
                live = false;
            }
        }
    });
    streams
}
