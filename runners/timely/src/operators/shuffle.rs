//! The shuffle: route batches by destination worker, then timely's exchange.

use riffle_engine::Batch;
use riffle_engine::runtime::Shuffle;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::{BatchStream, Env};

/// Routes each batch with `shuffle` (one bundle per stamp, flushed at its end) and
/// exchanges the results to the workers they name.
pub fn shuffle<'scope>(
    input: BatchStream<'scope>,
    name: &str,
    mut shuffle: Box<dyn Shuffle>,
    env: &Env,
) -> BatchStream<'scope> {
    let peers = env.worker.peers;
    let job = env.job.clone();
    let counter = env.counter(name);
    let routed = input.unary::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        Pipeline,
        &format!("{name}/route"),
        move |_cap, _info| {
            let mut out = Vec::new();
            move |input, output| {
                let _busy = counter.busy();
                input.for_each_stamp(|cap, containers| {
                    let arrival = crate::time::stamp_watermark(cap.stamp());
                    if job.has_failed() {
                        containers.for_each(|c| c.clear());
                        return;
                    }
                    let routed = (|| {
                        for container in containers {
                            for batch in container.drain(..) {
                                shuffle.route(batch, peers, arrival, &mut out)?;
                            }
                        }
                        shuffle.flush(peers, &mut out)
                    })();
                    counter.set_late_dropped_before_shuffle(shuffle.late_dropped());
                    if let Err(e) = routed {
                        job.fail(e);
                        out.clear();
                        return;
                    }
                    output.session(&cap).give_iterator(out.drain(..));
                });
            }
        },
    );
    if peers == 1 { routed } else { routed.exchange(|b: &Batch| b.target() as u64) }
}
