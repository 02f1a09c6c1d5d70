//! The sink operator: writes batches, and finishes the output once its input is complete.

use std::sync::Arc;

use riffle_engine::Batch;
use riffle_engine::runtime::SinkFn;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Exchange, Probe};

use super::{BatchStream, Env};

/// Lowers a sink step; a gathering sink first sends everything to worker 0.
pub fn sink(input: BatchStream<'_>, name: &str, f: &Arc<dyn SinkFn>, env: &Env) {
    let job = env.job.clone();
    let counter = env.counter(name);
    let input = if f.gathers() && env.worker.peers > 1 { input.exchange(|_: &Batch| 0) } else { input };
    let mut writer = match f.open(&env.step(name)) {
        Ok(w) => Some(w),
        Err(e) => {
            job.fail(e);
            None
        }
    };
    // Sources pace themselves on how far the sinks they feed have got; a scripted
    // processing-time advance waits for every sink.
    let mut input = input.probe_with(&env.sinks_progress);
    for probe in &env.pacing {
        input = input.probe_with(probe);
    }
    let mut last_watermark = riffle_engine::Watermark::MIN;
    input.sink(Pipeline, name, move |(input, frontier)| {
        let _busy = counter.busy();
        input.for_each_stamp(|_cap, containers| {
            for container in containers {
                for batch in container.drain(..) {
                    counter.add_in(batch.len());
                    if let Some(w) = writer.as_mut() {
                        if let Err(e) = w.write(batch) {
                            job.fail(e);
                            writer = None;
                        }
                    }
                }
            }
        });
        // Tell the writer how far its input is complete, so it can seal finished windows.
        let watermark = crate::time::watermark(frontier);
        counter.set_input_watermark(watermark.0.millis());
        if let Some(w) = writer.as_ref() {
            counter.set_files(w.files_written());
        }
        if watermark > last_watermark && watermark < riffle_engine::Watermark::MAX && !job.has_failed() {
            last_watermark = watermark;
            if let Some(w) = writer.as_mut() {
                if let Err(e) = w.advance(watermark) {
                    job.fail(e);
                    writer = None;
                }
            }
        }
        if frontier.is_empty() && !job.has_failed() {
            if let Some(mut w) = writer.take() {
                if let Err(e) = w.finish() {
                    job.fail(e);
                }
                counter.set_files(w.files_written());
            }
        }
    });
}
