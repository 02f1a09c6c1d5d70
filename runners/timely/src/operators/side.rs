//! The side-input operator: every worker receives the whole side input; a main batch
//! waits, holding its capability, until the side windows it reads are complete.
//!
//! In a job that takes checkpoints it saves, at checkpoint `n`'s cut, the side view (every
//! side element of the generations before `n`) and the main batches still waiting, the
//! way a grouping saves its state (see `group.rs` and docs/checkpoints.md): side input
//! stamped in generation `n` or later is held aside, unapplied, until the part is written.

use std::sync::Arc;

use riffle_engine::runtime::{SideParDoFn, SideParDoInstance, WorkerInfo};
use riffle_engine::window::Window;
use riffle_engine::{Batch, EventTime, Watermark};
use timely::PartialOrder;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::{Capability, Exchange, Probe};

use super::{BatchStream, Env, forward_to_epoch};
use crate::checkpoint::{self, Checkpoints, PartKind, SidePart};
use crate::time::{Time, stamp_watermark, watermark};

/// A main batch waiting for its side windows: its capability, the batch, the side windows.
type Waiting = Vec<(Capability<Time>, Batch, Vec<Window>)>;

/// A side-input step's side of checkpoints.
struct SideCut {
    ck: Arc<Checkpoints>,
    /// The checkpoint it writes next.
    next: u64,
    /// A capability in the generation before `next`: its output cannot pass that
    /// generation before this step has written its part, even when no main batch waits
    /// (the side input is not connected to the output, and may pass the cut last).
    hold: Option<Capability<Time>>,
    /// Side input stamped in `next`'s generation or later, unapplied until the part is
    /// written: the least time of its stamp, the batch.
    aside: Vec<(Time, Batch)>,
    /// It wrote its final part (both inputs are complete).
    done: bool,
}

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

/// Lowers a side-input step, the `step`-th of its graph: `main` transformed with the value
/// of `side`.
pub fn side_par_do<'scope>(
    main: BatchStream<'scope>,
    side: BatchStream<'scope>,
    step: usize,
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
    let checkpoints = env.checkpoints.clone();
    let worker = env.worker;
    builder.build(move |mut capabilities| {
        let initial = capabilities.pop().expect("one output");
        let mut instance = f.instantiate(&ctx);
        let mut waiting: Waiting = Vec::new();
        let start = checkpoints.as_ref().map_or(0, |c| c.start);
        if let Some(c) = checkpoints.as_ref().filter(|c| c.resumed.is_some()) {
            if let Err(e) = restore(c, step, instance.as_mut(), &mut waiting, &initial, worker, start) {
                job.fail(e);
            }
        }
        let mut cut = checkpoints.map(|ck| SideCut {
            ck,
            next: start + 1,
            hold: Some(initial.delayed(&Time { epoch: checkpoint::last_epoch(start), event: i64::MIN })),
            aside: Vec::new(),
            done: false,
        });
        drop(initial);
        move |frontiers| {
            let _busy = counter.busy();
            counter.set_input_watermark(watermark(&frontiers[0]).0.millis());
            let mut out = output.activate();
            side_in.for_each_stamp(|cap, containers| {
                let at = Time {
                    epoch: cap.stamp().iter().map(|t| t.epoch).min().unwrap_or(0),
                    event: stamp_watermark(cap.stamp()).0.millis(),
                };
                let later = cut.as_mut().filter(|c| checkpoint::generation(at.epoch) >= c.next);
                if let Some(c) = later {
                    // After the checkpoint this step writes next: aside until it has.
                    c.aside.extend(containers.flat_map(|c| c.drain(..)).map(|b| (at, b)));
                    return;
                }
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
                cut = None;
                return;
            }
            let main_frontier: Vec<Time> = frontiers[0].frontier().to_vec();
            let side_frontier: Vec<Time> = frontiers[1].frontier().to_vec();
            // Releasing what is ready and writing checkpoint parts, until neither can go on;
            // any failure stops the step the same way.
            let stepped = (|| -> riffle_engine::Result<()> {
                loop {
                    // A side window is complete once the side input's watermark passed its end,
                    // or the side input ended; a triggered one is ready at its first firing. Side
                    // input held aside has arrived at its watermark: nothing is complete past that
                    // before it is applied.
                    let aside = cut.as_ref().map_or(&[][..], |c| &c.aside[..]);
                    let side_done = side_frontier.is_empty() && aside.is_empty();
                    let mut side_at = watermark(&frontiers[1]);
                    if let Some(at) = aside.iter().map(|(t, _)| t.event).min() {
                        side_at = side_at.min(Watermark(EventTime::from_millis(at)));
                    }
                    release(&mut waiting, instance.as_mut(), side_done, side_at, &mut |cap, b| {
                        counter.add_out(b.len());
                        out.session(&cap).give(b);
                    })?;
                    // Both inputs have passed the generations before the next checkpoint: every
                    // side element and main batch before the cut has arrived, and no side element
                    // after it was applied. Write the part, then apply what was held aside.
                    let Some(c) = cut.as_mut().filter(|c| {
                        !c.done
                            && checkpoint::passed_generation(&main_frontier, c.next - 1)
                            && checkpoint::passed_generation(&side_frontier, c.next - 1)
                    }) else {
                        break;
                    };
                    let is_final = main_frontier.is_empty() && side_frontier.is_empty() && c.aside.is_empty();
                    let body = side_part(instance.as_ref(), &waiting, c.next, worker)?;
                    let kind = if is_final { PartKind::Final } else { PartKind::Cut };
                    c.ck.write_part(c.next, step, worker.index, kind, body)?;
                    if is_final {
                        c.done = true;
                        c.hold = None;
                        break;
                    }
                    c.next += 1;
                    let next = c.next;
                    // A batch saved in the part goes out, once its side windows are complete, in
                    // the generation the checkpoint begins, never before (a sink would commit it
                    // with the checkpoint, and the restored batch would go out again).
                    let first = checkpoint::first_epoch(next - 1);
                    forward_to_epoch(waiting.iter_mut().map(|(cap, _, _)| cap), first);
                    let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut c.aside)
                        .into_iter()
                        .partition(|(t, _)| checkpoint::generation(t.epoch) < next);
                    c.aside = later;
                    for (_, batch) in now {
                        instance.add_side(batch)?;
                    }
                }
                Ok(())
            })();
            if let Err(e) = stepped {
                job.fail(e);
                waiting.clear();
                cut = None;
                return;
            }
            // The checkpoint hold follows the main input's watermark, in the generation
            // before the next cut.
            if let Some(c) = cut.as_mut().filter(|c| !c.done) {
                let t = Time { epoch: checkpoint::last_epoch(c.next - 1), event: watermark(&frontiers[0]).0.millis() };
                if let Some(h) = c.hold.as_mut().filter(|h| h.time().less_equal(&t) && *h.time() != t) {
                    h.downgrade(&t);
                }
            }
            counter.set_waiting(waiting.iter().map(|(_, b, _)| b.len()).sum());
        }
    });
    stream
}

/// Processes the waiting main batches whose side windows are complete, handing each
/// output to `give` with its batch's capability.
fn release(
    waiting: &mut Waiting,
    instance: &mut dyn SideParDoInstance,
    side_done: bool,
    side_at: Watermark,
    give: &mut dyn FnMut(Capability<Time>, Batch),
) -> riffle_engine::Result<()> {
    let (ready, still): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|(_, _, needs)| {
        side_done || needs.iter().all(|w| instance.ready(*w, side_at.is_past(w.max_timestamp())))
    });
    *waiting = still;
    for (cap, batch, _) in ready {
        if let Some(b) = instance.process(batch)? {
            give(cap, b);
        }
    }
    Ok(())
}

/// This worker's part of checkpoint `next`: the side view (worker 0's alone: every worker
/// holds the same), and the main batches of the generations before `next` still waiting.
fn side_part(
    instance: &dyn SideParDoInstance,
    waiting: &Waiting,
    next: u64,
    worker: WorkerInfo,
) -> riffle_engine::Result<Vec<u8>> {
    let view = if worker.index == 0 { Some(instance.save_view()?) } else { None };
    let waiting = waiting
        .iter()
        .filter(|(cap, _, _)| checkpoint::generation(cap.time().epoch) < next)
        .map(|(cap, batch, _)| (cap.time().event, batch.clone()))
        .collect();
    SidePart { view, waiting }.encode()
}

/// Restores the side view of the checkpoint resumed from (every worker, from worker 0's
/// part) and the main batches that waited in it: those a worker of that run held go to
/// the worker of the same index modulo this run's count, each held from the start of this
/// run's first generation at the event time it was sent at. Which side windows are
/// complete is not saved: the side input's frontier says it again.
fn restore(
    ck: &Checkpoints,
    step: usize,
    instance: &mut dyn SideParDoInstance,
    waiting: &mut Waiting,
    initial: &Capability<Time>,
    worker: WorkerInfo,
    start: u64,
) -> riffle_engine::Result<()> {
    let mut views = 0;
    for (saved_by, body) in ck.resumed_parts_by_worker(step)? {
        let part = SidePart::decode(&body)?;
        if let Some(view) = &part.view {
            instance.restore_view(view)?;
            views += 1;
        }
        if saved_by % worker.peers != worker.index {
            continue;
        }
        for (event, batch) in part.waiting {
            let mut needs = Vec::new();
            let batch = instance.needs(batch, &mut needs)?;
            waiting.push((initial.delayed(&Time { epoch: checkpoint::first_epoch(start), event }), batch, needs));
        }
    }
    if views != 1 {
        return Err(riffle_engine::Error::Config(format!(
            "checkpoint {}: step {step} has {views} saved side views, not one: is the checkpoint damaged?",
            ck.resumed.as_ref().map_or(0, |m| m.id)
        )));
    }
    Ok(())
}
