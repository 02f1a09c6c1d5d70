//! The source operator: polls a reader, emits batches, and carries its watermark as the
//! capability's event-time coordinate.

use std::sync::Arc;
use std::time::Duration;

use riffle_engine::Batch;
use riffle_engine::runtime::{SourceFn, SourcePoll};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::source as timely_source;

use super::{BatchStream, Env};
use crate::time::Time;

/// Elements per batch a source emits.
pub const BATCH_SIZE: usize = 1024;
/// Batches a source emits before yielding to the rest of the dataflow, so downstream
/// operators drain what it produced and queues stay short.
const BATCHES_PER_ACTIVATION: usize = 16;
/// How long a source with nothing to read waits before it polls again.
const IDLE_POLL: Duration = Duration::from_millis(1);

/// Lowers a source step.
pub fn source<'scope>(
    scope: Scope<'scope, Time>,
    name: &str,
    src: &Arc<dyn SourceFn>,
    env: &Env,
) -> BatchStream<'scope> {
    let ctx = env.step(name);
    let counter = env.counter(name);
    let job = env.job.clone();
    let src = src.clone();
    timely_source::<_, CapacityContainerBuilder<Vec<Batch>>, _, _>(scope, name, move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut reader = match src.open(&ctx) {
            Ok(r) => Some(r),
            Err(e) => {
                job.fail(e);
                None
            }
        };
        let mut cap = reader.as_ref().map(|_| cap);
        move |output| {
            let (Some(r), Some(c)) = (reader.as_mut(), cap.as_mut()) else {
                return;
            };
            let mut finished = job.has_failed();
            let mut pending = false;
            for _ in 0..BATCHES_PER_ACTIVATION {
                if finished {
                    break;
                }
                match r.poll(BATCH_SIZE) {
                    Ok(SourcePoll::Batch(b)) => {
                        // A batch is stamped with the reader's watermark as of producing
                        // it, so elements after a watermark advance carry the new one.
                        advance(c, r.watermark().0.millis());
                        counter.add_out(b.len());
                        output.session(&*c).give(b)
                    }
                    Ok(SourcePoll::Pending) => {
                        pending = true;
                        break;
                    }
                    Ok(SourcePoll::Done) => finished = true,
                    Err(e) => {
                        job.fail(e);
                        finished = true;
                    }
                }
            }
            if finished {
                // Dropping the capability is the end of input: the watermark jumps to +inf.
                cap = None;
                reader = None;
                return;
            }
            advance(c, r.watermark().0.millis());
            if pending { activator.activate_after(IDLE_POLL) } else { activator.activate() }
        }
    })
}

/// Moves the source's capability, and so the watermark, forward to `event`.
fn advance(cap: &mut Capability<Time>, event: i64) {
    if event > cap.time().event {
        cap.downgrade(&Time { epoch: cap.time().epoch, event });
    }
}
