//! The grouping operator: keyed state fired by the watermark, holding a capability at
//! the output time of every pending pane (Beam's watermark hold). A second output, when
//! the step has one, carries the elements dropped as too late.

use std::sync::Arc;

use riffle_engine::arrival::{ArrivalOrder, InputFrontier};
use riffle_engine::runtime::GroupFn;
use riffle_engine::{Batch, EventTime};
use timely::PartialOrder;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};

use super::{BatchStream, Env, shuffle::shuffle};
use crate::time::{Time, watermark};

/// How often a grouping publishes the size of its state (monitoring only; measuring a
/// merging state walks its keys).
const STATE_SIZE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

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
        let rule = state.same_watermark();
        // Capabilities held for pending panes: an antichain, one per epoch at most. A state
        // can start with a pane pending (combine_globally's default for an empty input),
        // which needs the operator's initial capability.
        let mut holds: Vec<Capability<Time>> = Vec::new();
        let first = initial.swap_remove(0);
        if let Some(pending) = state.earliest_pending() {
            holds.push(first.delayed(&Time { epoch: first.time().epoch, event: pending.millis() }));
        }
        drop((first, initial));
        // Input waiting to be applied in watermark order (riffle_engine::arrival), with a
        // capability per output port at each time it was sent at.
        let mut order: ArrivalOrder<Vec<Capability<Time>>> = ArrivalOrder::new();
        let mut fired: Vec<(EventTime, Batch)> = Vec::new();
        let mut sized_at = std::time::Instant::now() - STATE_SIZE_EVERY;
        move |frontiers| {
            let _busy = counter.busy();
            let mut handles: Vec<_> = outputs.iter_mut().map(|o| o.activate()).collect();
            input.for_each_stamp(|cap, containers| {
                if job.has_failed() {
                    containers.for_each(|c| c.clear());
                    return;
                }
                // The watermark these elements were sent at; lateness is judged against it.
                let arrival = crate::time::stamp_watermark(cap.stamp());
                let epoch = cap.stamp().iter().map(|t| t.epoch).min().unwrap_or(0);
                for container in containers {
                    for batch in container.drain(..) {
                        counter.add_in(batch.len());
                        let held = order.arrive(arrival, epoch, batch);
                        for t in cap.stamp().iter() {
                            if !held.iter().any(|h| h[0].time().less_equal(t)) {
                                held.push((0..handles.len()).map(|port| cap.delayed(t, port)).collect());
                            }
                        }
                    }
                }
            });
            if job.has_failed() {
                holds.clear();
                order.clear();
                return;
            }
            let frontier = watermark(&frontiers[0]);
            counter.set_input_watermark(frontier.0.millis());
            let input_frontier = InputFrontier {
                watermark: frontier,
                epoch: frontiers[0].frontier().iter().filter(|t| t.event == frontier.0.millis()).map(|t| t.epoch).min(),
            };
            let applied = (|| {
                while let Some((at, arrived)) = order.next_ready(input_frontier, rule) {
                    // Firings up to `at` see exactly what was sent before it, from any sender.
                    state.fire(at, &mut fired)?;
                    emit(&mut fired, &holds, &mut handles[0], &counter);
                    state.insert_all(arrived.batches, at)?;
                    counter.set_late_dropped(state.late_dropped());
                    // Late elements leave at the time they were sent at.
                    if let (Some(late), Some(out)) = (state.take_late(), handles.get_mut(1)) {
                        out.session(&arrived.holds[0][1]).give(late);
                    }
                    if let Some(pending) = state.earliest_pending() {
                        for sent in &arrived.holds {
                            let t = *sent[0].time();
                            let want = Time { epoch: t.epoch, event: t.event.max(pending.millis()) };
                            if !holds.iter().any(|h| h.time().epoch == t.epoch && h.time().event <= want.event) {
                                holds.retain(|h| h.time().epoch != t.epoch);
                                holds.push(sent[0].delayed(&want));
                            }
                        }
                    }
                }
                state.fire(frontier, &mut fired)
            })();
            if let Err(e) = applied {
                job.fail(e);
                holds.clear();
                order.clear();
                return;
            }
            emit(&mut fired, &holds, &mut handles[0], &counter);
            counter.set_waiting(order.waiting_elements());
            if sized_at.elapsed() >= STATE_SIZE_EVERY || frontiers[0].is_empty() {
                sized_at = std::time::Instant::now();
                counter.set_state(state.size());
            }
            // Processing-time triggers wait on the clock: look again when the next is due
            // (a manual clock moves only between epochs, which wakes the operator anyway).
            if let Some(t) = state.next_timer() {
                let wait = (t.millis() - clock.now().millis()).clamp(1, 1000) as u64;
                activator.activate_after(std::time::Duration::from_millis(wait));
            }
            // Everything held moves forward in epoch to the least epoch the input can still
            // bring: once the input has passed an epoch, a hold there only blocks later
            // ones (DESIGN.md 3).
            let epoch = frontiers[0].frontier().iter().map(|t| t.epoch).min();
            if let Some(e) = epoch {
                for sent in order.holds_mut() {
                    for caps in sent.iter_mut() {
                        for c in caps.iter_mut().filter(|c| c.time().epoch < e) {
                            c.downgrade(&Time { epoch: e, event: c.time().event });
                        }
                    }
                    // Holds of one watermark that now share an epoch: one covers the others.
                    sent.dedup_by_key(|caps| caps[0].time().epoch);
                }
            }
            match state.earliest_pending() {
                None => holds.clear(),
                Some(p) => {
                    // Pane holds move forward in event time to the earliest pending pane.
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

/// Emits fired panes, each at its output timestamp under the earliest hold (a pane is
/// never emitted before its hold, so it is never late downstream).
fn emit(
    fired: &mut Vec<(EventTime, Batch)>,
    holds: &[Capability<Time>],
    out: &mut OutputBuilderSession<'_, Time, CapacityContainerBuilder<Vec<Batch>>>,
    counter: &crate::metrics::StepCounter,
) {
    for (t, batch) in fired.drain(..) {
        counter.add_out(batch.len());
        let hold = holds.iter().min_by_key(|h| (h.time().event, h.time().epoch)).expect("a pane fired without a hold");
        let at = Time { epoch: hold.time().epoch, event: hold.time().event.max(t.millis()) };
        out.session(&hold.delayed(&at)).give(batch);
    }
}
