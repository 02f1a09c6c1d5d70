//! The side-input operator: every worker receives the whole side input; a main batch
//! waits, holding its capability, until the side windows it reads are complete.

use std::sync::Arc;

use riffle_engine::Batch;
use riffle_engine::runtime::SideParDoFn;
use riffle_engine::window::Window;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::{Capability, Exchange, Probe};

use super::{BatchStream, Env};
use crate::time::{Time, watermark};

/// Sends a copy of every batch to every worker.
fn broadcast<'scope>(side: BatchStream<'scope>, name: &str, peers: usize) -> BatchStream<'scope> {
    if peers == 1 {
        return side;
    }
    side.unary::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(Pipeline, &format!("{name}/broadcast"), move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, containers| {
                let mut session = output.session(&cap);
                for container in containers {
                    for batch in container.drain(..) {
                        for w in 1..peers {
                            session.give(batch.clone().with_target(w));
                        }
                        session.give(batch.with_target(0));
                    }
                }
            });
        }
    })
    .exchange(|b: &Batch| b.target() as u64)
}

/// Lowers a side-input step: `main` transformed with the value of `side`.
pub fn side_par_do<'scope>(
    main: BatchStream<'scope>,
    side: BatchStream<'scope>,
    name: &str,
    f: &Arc<dyn SideParDoFn>,
    env: &Env,
) -> BatchStream<'scope> {
    // The side input ends here: a processing-time barrier waits for it as for a sink.
    let side = broadcast(side, name, env.worker.peers).probe_with(&env.sinks_progress);
    let mut builder = OperatorBuilder::new(name.to_string(), main.scope());
    let mut main_in = builder.new_input(main, Pipeline);
    // The side input does not hold the output: only main batches waiting for their side
    // windows do, through their capabilities (a live side input in the global window would
    // otherwise hold every main window back for ever).
    let mut side_in = builder.new_input_connection(side, Pipeline, []);
    let (output, stream) = builder.new_output::<Vec<Batch>>();
    let mut output = OutputBuilder::<Time, CapacityContainerBuilder<Vec<Batch>>>::from(output);
    let ctx = env.step(name);
    let counter = env.counter(name);
    let job = env.job.clone();
    let f = f.clone();
    builder.build(move |capabilities| {
        drop(capabilities);
        let mut instance = f.instantiate(&ctx);
        // Main batches waiting for their side windows: capability, batch, the side windows.
        let mut waiting: Vec<(Capability<Time>, Batch, Vec<Window>)> = Vec::new();
        move |frontiers| {
            let _busy = counter.busy();
            counter.set_input_watermark(watermark(&frontiers[0]).0.millis());
            let mut out = output.activate();
            side_in.for_each_stamp(|_, containers| {
                for container in containers {
                    for batch in container.drain(..) {
                        if !job.has_failed() {
                            if let Err(e) = instance.add_side(batch) {
                                job.fail(e);
                            }
                        }
                    }
                }
            });
            main_in.for_each_stamp(|cap, containers| {
                for container in containers {
                    for batch in container.drain(..) {
                        if job.has_failed() {
                            continue;
                        }
                        counter.add_in(batch.len());
                        let mut needs = Vec::new();
                        match instance.needs(batch, &mut needs) {
                            Ok(batch) => {
                                let t = *cap.stamp().iter().next().expect("a stamp has a time");
                                waiting.push((cap.delayed(&t, 0), batch, needs));
                            }
                            Err(e) => job.fail(e),
                        }
                    }
                }
            });
            if job.has_failed() {
                waiting.clear();
                return;
            }
            // A side window is complete once the side input's watermark passed its end, or
            // the side input ended; a triggered one is ready at its first firing.
            let side_done = frontiers[1].frontier().is_empty();
            let side_at = watermark(&frontiers[1]);
            let (ready, still): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|(_, _, needs)| {
                side_done || needs.iter().all(|w| instance.ready(*w, side_at.is_past(w.max_timestamp())))
            });
            waiting = still;
            for (cap, batch, _) in ready {
                match instance.process(batch) {
                    Ok(Some(b)) => {
                        counter.add_out(b.len());
                        out.session(&cap).give(b);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        job.fail(e);
                        waiting.clear();
                        return;
                    }
                }
            }
            counter.set_waiting(waiting.iter().map(|(_, b, _)| b.len()).sum());
        }
    });
    stream
}
