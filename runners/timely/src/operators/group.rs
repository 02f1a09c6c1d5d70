//! The grouping operator: keyed state fired by the watermark, holding a capability at
//! the output time of every pending pane (Beam's watermark hold). A second output, when
//! the step has one, carries the elements dropped as too late.

use std::sync::Arc;

use riffle_engine::arrival::{ArrivalOrder, InputFrontier};
use riffle_engine::keys::KeyGroup;
use riffle_engine::runtime::WorkerInfo;
use riffle_engine::runtime::{GroupFn, GroupState};
use riffle_engine::{Batch, Error, EventTime, Watermark};
use timely::PartialOrder;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};

use super::{BatchStream, Env, forward_to_epoch, shuffle::shuffle};
use crate::checkpoint::{self, Checkpoints, GroupPart, PartKind};
use crate::time::{Time, watermark};

/// How often a grouping publishes the size of its state (monitoring only; measuring a
/// merging state walks its keys).
const STATE_SIZE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Input stamped in a generation after the checkpoint a grouping writes next, held aside
/// unapplied until it has written it, with capabilities per output port at each time it
/// was sent at.
struct Aside {
    arrival: Watermark,
    epoch: u64,
    batch: Batch,
    caps: Vec<Vec<Capability<Time>>>,
}

/// A grouping's side of checkpoints.
struct GroupCut {
    ck: Arc<Checkpoints>,
    /// The checkpoint it writes next.
    next: u64,
    /// One capability per output port in the generation before `next`: nothing
    /// downstream passes that generation before this grouping has written its part.
    holds: Vec<Capability<Time>>,
    aside: Vec<Aside>,
    /// It wrote its final part (its input is complete).
    done: bool,
}

/// Lowers a GroupByKey or Combine step, the `step`-th of its graph: shuffle, then keyed
/// state. Returns the panes, and the late elements when the step routes them to an
/// output of their own.
pub fn group<'scope>(
    input: BatchStream<'scope>,
    step: usize,
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
    let checkpoints = env.checkpoints.clone();
    let worker = env.worker;
    builder.build(move |initial| {
        let mut state = g.instantiate(&ctx);
        let rule = state.same_watermark();
        // Input waiting to be applied in watermark order (riffle_engine::arrival), with a
        // capability per output port at each time it was sent at.
        let mut order: ArrivalOrder<Vec<Capability<Time>>> = ArrivalOrder::new();
        let start = checkpoints.as_ref().map_or(0, |c| c.start);
        if let Some(c) = checkpoints.as_ref().filter(|c| c.resumed.is_some()) {
            if let Err(e) = restore(c, step, g.as_ref(), state.as_mut(), &mut order, &initial, worker, start) {
                job.fail(e);
            }
        }
        // Capabilities held for pending panes: an antichain, one per epoch at most. A state
        // can start with a pane pending (combine_globally's default for an empty input, or
        // restored from a checkpoint), which needs the operator's initial capability.
        let mut holds: Vec<Capability<Time>> = Vec::new();
        if let Some(pending) = state.earliest_pending() {
            holds.push(initial[0].delayed(&Time { epoch: checkpoint::first_epoch(start), event: pending.millis() }));
        }
        let mut cut = checkpoints.map(|ck| GroupCut {
            ck,
            next: start + 1,
            holds: initial
                .iter()
                .map(|c| c.delayed(&Time { epoch: checkpoint::last_epoch(start), event: i64::MIN }))
                .collect(),
            aside: Vec::new(),
            done: false,
        });
        drop(initial);
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
                if let Some(cut) = cut.as_mut().filter(|c| checkpoint::generation(epoch) >= c.next) {
                    // After the checkpoint this grouping writes next: aside until it has.
                    for container in containers {
                        for batch in container.drain(..) {
                            counter.add_in(batch.len());
                            let caps = cap
                                .stamp()
                                .iter()
                                .map(|t| (0..handles.len()).map(|port| cap.delayed(t, port)).collect())
                                .collect();
                            cut.aside.push(Aside { arrival, epoch, batch, caps });
                        }
                    }
                    return;
                }
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
            let input_watermark = watermark(&frontiers[0]);
            counter.set_input_watermark(input_watermark.0.millis());
            let frontier_times: Vec<Time> = frontiers[0].frontier().to_vec();
            loop {
                // Input held aside for the next checkpoint has arrived at its watermark:
                // nothing fires past that before it is applied.
                let aside = cut.as_ref().and_then(|c| c.aside.iter().map(|a| (a.arrival, a.epoch)).min());
                let (frontier, input_frontier) = match aside {
                    Some((at, epoch)) if at < input_watermark => {
                        (at, InputFrontier { watermark: at, epoch: Some(epoch) })
                    }
                    _ => (
                        input_watermark,
                        InputFrontier {
                            watermark: input_watermark,
                            epoch: frontier_times
                                .iter()
                                .filter(|t| t.event == input_watermark.0.millis())
                                .map(|t| t.epoch)
                                .min(),
                        },
                    ),
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
                // A checkpoint whose generations have all arrived: write this grouping's part,
                // then apply what was held aside for the next one, and look again.
                let Some(c) =
                    cut.as_mut().filter(|c| !c.done && checkpoint::passed_generation(&frontier_times, c.next - 1))
                else {
                    break;
                };
                let is_final = frontier_times.is_empty() && c.aside.is_empty();
                let written = group_part(state.as_ref(), &order, g.as_ref()).and_then(|body| {
                    let kind = if is_final { PartKind::Final } else { PartKind::Cut };
                    c.ck.write_part(c.next, step, worker.index, kind, body)
                });
                if let Err(e) = written {
                    job.fail(e);
                    holds.clear();
                    order.clear();
                    return;
                }
                if is_final {
                    c.done = true;
                    c.holds.clear();
                    break;
                }
                c.next += 1;
                let next = c.next;
                // What fires from here on is after the cut: it goes out in the generation
                // the checkpoint begins, never before (a sink would commit it with the
                // checkpoint, and the restored state would fire it again).
                let first = checkpoint::first_epoch(next - 1);
                forward_to_epoch(holds.iter_mut(), first);
                for sent in order.holds_mut() {
                    forward_to_epoch(sent.iter_mut().flatten(), first);
                }
                let (now, later): (Vec<Aside>, Vec<Aside>) =
                    std::mem::take(&mut c.aside).into_iter().partition(|a| checkpoint::generation(a.epoch) < next);
                c.aside = later;
                for a in now {
                    let held = order.arrive(a.arrival, a.epoch, a.batch);
                    for caps in a.caps {
                        if !held.iter().any(|h| h[0].time().less_equal(caps[0].time())) {
                            held.push(caps);
                        }
                    }
                }
            }
            // The checkpoint holds follow the watermark, in the generation before the next cut.
            if let Some(c) = cut.as_mut().filter(|c| !c.done) {
                let at = c.aside.iter().map(|a| a.arrival).min().map_or(input_watermark, |a| a.min(input_watermark));
                let t = Time { epoch: checkpoint::last_epoch(c.next - 1), event: at.0.millis() };
                for h in &mut c.holds {
                    if h.time().less_equal(&t) && *h.time() != t {
                        h.downgrade(&t);
                    }
                }
            }
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
                    forward_to_epoch(sent.iter_mut().flatten(), e);
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

/// A grouping's part of a checkpoint: its state by key group, and what waits to be
/// applied, split by key group too.
fn group_part(
    state: &dyn GroupState,
    order: &ArrivalOrder<Vec<Capability<Time>>>,
    g: &dyn GroupFn,
) -> riffle_engine::Result<Vec<u8>> {
    let mut part = GroupPart { state: Default::default(), waiting: Vec::new() };
    state.snapshot(&mut part.state)?;
    for (arrival, batch) in order.batches() {
        for (group, b) in g.shuffle().split_by_key_group(batch.clone())? {
            part.waiting.push((group, arrival.0.millis(), b));
        }
    }
    bincode::serialize(&part).map_err(|e| Error::Internal(format!("a grouping's checkpoint does not encode: {e}")))
}

/// Restores what every part of step `step` in the checkpoint resumed from holds for the
/// key groups this worker owns: state, and input waiting for its watermark (held from
/// the start of this run's first generation).
#[allow(clippy::too_many_arguments)]
fn restore(
    ck: &Checkpoints,
    step: usize,
    g: &dyn GroupFn,
    state: &mut dyn GroupState,
    order: &mut ArrivalOrder<Vec<Capability<Time>>>,
    initial: &[Capability<Time>],
    worker: WorkerInfo,
    start: u64,
) -> riffle_engine::Result<()> {
    let _ = g;
    let mine = |group: &KeyGroup| group.worker(worker.peers) == worker.index;
    for body in ck.resumed_parts(step)? {
        let part: GroupPart = bincode::deserialize(&body)
            .map_err(|e| Error::Config(format!("a grouping's part of the checkpoint does not decode: {e}")))?;
        for (group, bytes) in part.state.iter().filter(|(g, _)| mine(g)) {
            state.restore(*group, bytes)?;
        }
        for (group, arrival, batch) in part.waiting {
            if mine(&group) {
                let at = Time { epoch: checkpoint::first_epoch(start), event: arrival };
                let held = order.arrive(Watermark(EventTime::from_millis(arrival)), at.epoch, batch);
                if held.is_empty() {
                    held.push(initial.iter().map(|c| c.delayed(&at)).collect());
                }
            }
        }
    }
    Ok(())
}
