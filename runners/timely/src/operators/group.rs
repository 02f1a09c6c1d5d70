//! The grouping operator: keyed state fired by the watermark, holding a capability at
//! the output time of every pending pane (Beam's watermark hold). A second output, when
//! the step has one, carries the elements dropped as too late.

use std::sync::Arc;

use riffle_engine::runtime::GroupFn;
use riffle_engine::{Batch, EventTime};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::{BatchStream, Env, shuffle::shuffle};
use crate::time::{Time, watermark};

/// Lowers a GroupByKey or Combine step: shuffle, then keyed state. Returns the panes, and
/// the late elements when the step routes them to an output of their own.
pub fn group<'scope>(
    input: BatchStream<'scope>,
    name: &str,
    g: &Arc<dyn GroupFn>,
    env: &Env,
) -> Vec<BatchStream<'scope>> {
    let ctx = env.step(name);
    let exchanged = shuffle(input, name, g.shuffle().instantiate(&ctx), env);
    let exchanged_scope = exchanged.scope();
    let mut builder = OperatorBuilder::new(name.to_string(), exchanged.scope());
    let mut input = builder.new_input(exchanged, Pipeline);
    let mut outputs = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..if g.late_output() { 2 } else { 1 } {
        let (output, stream) = builder.new_output::<Vec<Batch>>();
        outputs.push(OutputBuilder::<Time, CapacityContainerBuilder<Vec<Batch>>>::from(output));
        streams.push(stream);
    }
    let job = env.job.clone();
    let clock = env.clock.clone();
    let activator = exchanged_scope.activator_for(builder.operator_info().address);
    let counter = env.counter(name);
    let g = g.clone();
    builder.build(move |mut initial| {
        let mut state = g.instantiate(&ctx);
        // Capabilities held for pending panes: an antichain, one per epoch at most. A state
        // can start with a pane pending (combine_globally's default for an empty input),
        // which needs the operator's initial capability.
        let mut holds: Vec<Capability<Time>> = Vec::new();
        let first = initial.swap_remove(0);
        if let Some(pending) = state.earliest_pending() {
            holds.push(first.delayed(&Time { epoch: first.time().epoch, event: pending.millis() }));
        }
        drop((first, initial));
        let mut fired: Vec<(EventTime, Batch)> = Vec::new();
        move |frontiers| {
            let mut handles: Vec<_> = outputs.iter_mut().map(|o| o.activate()).collect();
            input.for_each_stamp(|cap, containers| {
                // The watermark these elements were sent at; lateness is judged against it.
                let arrival = crate::time::stamp_watermark(cap.stamp());
                if job.has_failed() {
                    containers.for_each(|c| c.clear());
                    return;
                }
                for container in containers {
                    for batch in container.drain(..) {
                        counter.add_in(batch.len());
                        if let Err(e) = state.insert(batch, arrival) {
                            job.fail(e);
                            return;
                        }
                    }
                }
                counter.set_late_dropped(state.late_dropped());
                // Late elements leave at the time they arrived at.
                if let (Some(late), Some(out)) = (state.take_late(), handles.get_mut(1)) {
                    out.session(&cap).give(late);
                }
                if let Some(pending) = state.earliest_pending() {
                    for t in cap.stamp().iter() {
                        let want = Time { epoch: t.epoch, event: t.event.max(pending.millis()) };
                        if !holds.iter().any(|h| h.time().epoch == t.epoch && h.time().event <= want.event) {
                            holds.retain(|h| h.time().epoch != t.epoch);
                            holds.push(cap.delayed(&want, 0));
                        }
                    }
                }
            });
            if job.has_failed() {
                holds.clear();
                return;
            }
            if let Err(e) = state.fire(watermark(&frontiers[0]), &mut fired) {
                job.fail(e);
                holds.clear();
                return;
            }
            for (t, batch) in fired.drain(..) {
                counter.add_out(batch.len());
                let hold =
                    holds.iter().min_by_key(|h| (h.time().event, h.time().epoch)).expect("a pane fired without a hold");
                let at = Time { epoch: hold.time().epoch, event: hold.time().event.max(t.millis()) };
                handles[0].session(&hold.delayed(&at)).give(batch);
            }
            // Processing-time triggers wait on the clock: look again when the next is due
            // (a manual clock moves only between epochs, which wakes the operator anyway).
            if let Some(t) = state.next_timer() {
                let wait = (t.millis() - clock.now().millis()).clamp(1, 1000) as u64;
                activator.activate_after(std::time::Duration::from_millis(wait));
            }
            match state.earliest_pending() {
                None => holds.clear(),
                Some(p) => {
                    // Holds move forward in event time to the earliest pending pane, and in
                    // epoch to the least epoch the input can still bring: once the input has
                    // passed an epoch, a hold there only blocks later ones (DESIGN.md 3).
                    let epoch = frontiers[0].frontier().iter().map(|t| t.epoch).min();
                    for h in &mut holds {
                        let t = Time {
                            epoch: epoch.map_or(h.time().epoch, |e| e.max(h.time().epoch)),
                            event: h.time().event.max(p.millis()),
                        };
                        if t != *h.time() {
                            h.downgrade(&t);
                        }
                    }
                    // Holds that now share an epoch: the earliest covers the others.
                    holds.sort_by_key(|h| (h.time().epoch, h.time().event));
                    holds.dedup_by_key(|h| h.time().epoch);
                }
            }
        }
    });
    streams
}
