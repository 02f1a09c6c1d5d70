//! The sink operator: writes batches, and finishes the output once its input is complete.

use std::sync::Arc;

use riffle_engine::Batch;
use riffle_engine::runtime::SinkFn;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Exchange, Probe};

use super::{BatchStream, Env};
use crate::checkpoint::{self, PartKind};

/// What a sink hands on: what its writers staged, for the job's commit, at times whose
/// epoch follows the sink's input (so the checkpoint coordinator downstream sees every
/// generation its input has passed).
pub type Staged<'scope> = timely::dataflow::Stream<'scope, crate::time::Time, Vec<Vec<u8>>>;

/// Lowers a sink step, the `step`-th of its graph; a gathering sink first sends
/// everything to worker 0.
pub fn sink<'scope>(
    input: BatchStream<'scope>,
    step: usize,
    name: &str,
    f: &Arc<dyn SinkFn>,
    env: &Env,
) -> Staged<'scope> {
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
    // With checkpoints: the checkpoint whose generations the sink waits for next.
    let mut next_cut = env.checkpoints.as_ref().map(|c| c.start + 1);
    let checkpoints = env.checkpoints.clone();
    let two_phase = f.commits() && f.commits_at_checkpoints();
    let worker = env.worker.index;
    let mut aside: Vec<(u64, Batch)> = Vec::new();
    let commits = f.commits();
    let staged =
        input.unary_frontier::<CapacityContainerBuilder<Vec<Vec<u8>>>, _, _, _>(Pipeline, name, move |cap, _| {
            // Held until this worker's writer has finished and handed over what it staged.
            let mut cap = Some(cap);
            move |(input, frontier), output| {
                let _busy = counter.busy();
                if job.has_failed() {
                    // A failed job makes nothing visible: the writer aborts its staging when dropped.
                    writer = None;
                    cap = None;
                }
                input.for_each_stamp(|cap, containers| {
                    // A two-phase-commit sink holds input stamped after the checkpoint it
                    // precommits next aside: that checkpoint must not commit it.
                    let epoch = cap.stamp().iter().map(|t| t.epoch).min().unwrap_or(0);
                    let later = two_phase && next_cut.is_some_and(|n| checkpoint::generation(epoch) >= n);
                    for container in containers {
                        for batch in container.drain(..) {
                            counter.add_in(batch.len());
                            if later {
                                aside.push((epoch, batch));
                            } else if let Some(w) = writer.as_mut() {
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
                // A checkpoint whose generations have all come in: what was written is
                // made durable before it completes (the held capability keeps the
                // coordinator from seeing the generation pass until then).
                let times: Vec<crate::time::Time> = frontier.frontier().to_vec();
                if let (Some(n), Some(ck)) = (next_cut.as_mut(), checkpoints.as_ref()) {
                    while !times.is_empty() && checkpoint::passed_generation(&times, *n - 1) && !job.has_failed() {
                        // A two-phase-commit sink stages what came before the cut as its
                        // part of the checkpoint; the others write it out.
                        let done = match writer.as_mut() {
                            Some(w) if two_phase => {
                                w.precommit().and_then(|b| ck.write_part(*n, step, worker, PartKind::Cut, b))
                            }
                            Some(w) => w.flush(),
                            None => Ok(()),
                        };
                        if let Err(e) = done {
                            job.fail(e);
                            writer = None;
                        }
                        *n += 1;
                        // What was held aside for the next checkpoint is written now.
                        if let Err(e) = write_released(&mut aside, *n, writer.as_deref_mut()) {
                            job.fail(e);
                            writer = None;
                        }
                    }
                }
                // The held capability follows the input's epoch, not its event time, up to
                // the generation of the next checkpoint.
                let least = times.iter().map(|t| t.epoch).min();
                let least = match next_cut {
                    Some(n) => least.map(|e| e.min(checkpoint::last_epoch(n - 1))),
                    None => least,
                };
                if let (Some(c), Some(e)) = (cap.as_mut(), least) {
                    if c.time().epoch < e {
                        let t = crate::time::Time { epoch: e, event: c.time().event };
                        c.downgrade(&t);
                    }
                }
                if frontier.is_empty() && !job.has_failed() {
                    // The input is complete: a two-phase-commit sink precommits each
                    // checkpoint whose input it held aside, then its last part, good for
                    // every later checkpoint, with what came after the last cut.
                    if let (Some(n), Some(ck), true) = (next_cut.as_mut(), checkpoints.as_ref(), two_phase) {
                        let written = (|| {
                            while !aside.is_empty() {
                                if let Some(w) = writer.as_mut() {
                                    ck.write_part(*n, step, worker, PartKind::Cut, w.precommit()?)?;
                                }
                                *n += 1;
                                write_released(&mut aside, *n, writer.as_deref_mut())?;
                            }
                            match writer.as_mut() {
                                Some(w) => ck.write_part(*n, step, worker, PartKind::Final, w.precommit()?),
                                None => Ok(()),
                            }
                        })();
                        if let Err(e) = written {
                            job.fail(e);
                            writer = None;
                        }
                    }
                    if let Some(mut w) = writer.take() {
                        match w.finish() {
                            Ok(()) if commits => {
                                if let Some(c) = cap.as_ref() {
                                    output.session(c).give(w.staged());
                                }
                            }
                            Ok(()) => {}
                            Err(e) => job.fail(e),
                        }
                        counter.set_files(w.files_written());
                    }
                    cap = None;
                }
            }
        });
    if commits {
        commit(staged.clone(), name, f, env);
    }
    staged
}

/// Writes the input held aside that is before checkpoint `next`'s cut (stamped in an
/// earlier generation), keeping the rest aside.
fn write_released(
    aside: &mut Vec<(u64, Batch)>,
    next: u64,
    writer: Option<&mut (dyn riffle_engine::runtime::SinkWriter + 'static)>,
) -> riffle_engine::Result<()> {
    let (now, still): (Vec<_>, Vec<_>) = aside.drain(..).partition(|(e, _)| checkpoint::generation(*e) < next);
    *aside = still;
    if let Some(w) = writer {
        now.into_iter().try_for_each(|(_, batch)| w.write(batch))?;
    }
    Ok(())
}

/// The job's commit: what every writer staged goes to worker 0, which commits once every
/// writer has finished (the stream is complete) and every sink of the job has all its
/// input (so a job whose other branch fails later makes nothing visible), unless the job
/// failed.
fn commit(staged: Staged<'_>, name: &str, f: &Arc<dyn SinkFn>, env: &Env) {
    let job = env.job.clone();
    let f = f.clone();
    let first = env.worker.index == 0;
    let every_sink = env.sinks_progress.clone();
    let checkpoints = env.checkpoints.clone();
    let scope = staged.scope();
    let mut all = Vec::new();
    let mut committed = false;
    staged.exchange(|_: &Vec<u8>| 0).unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        &format!("{name}/commit"),
        move |cap, info| {
            let activator = scope.activator_for(info.address);
            // Held until the commit is done: the job does not end before it.
            let mut alive = Some(cap);
            move |(input, frontier), _output| {
                input.for_each_stamp(|_, containers| {
                    for container in containers {
                        all.append(container);
                    }
                });
                if !frontier.is_empty() || committed {
                    return;
                }
                // Other sinks still take input, or (with checkpoints) the job's last
                // checkpoint is not complete: its commit moves files this one's cleanup
                // would delete. Look again soon.
                let last_checkpoint = checkpoints.as_ref().is_none_or(|c| c.completed());
                if (!every_sink.done() || (first && !last_checkpoint)) && !job.has_failed() {
                    activator.activate_after(std::time::Duration::from_millis(20));
                    return;
                }
                committed = true;
                if first && !job.has_failed() {
                    if let Err(e) = f.commit(std::mem::take(&mut all)) {
                        job.fail(e);
                    }
                }
                drop(alive.take());
            }
        },
    );
}
