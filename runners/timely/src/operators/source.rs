//! The source operator: polls a reader, emits batches, and carries its watermark as the
//! capability's event-time coordinate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle_engine::runtime::{SourceFn, SourcePoll, SourceReader};
use riffle_engine::{Batch, ProcessingTime};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::source as timely_source;

use super::{BatchStream, Env};
use crate::checkpoint::{self, Checkpoints, PartKind};
use crate::time::Time;

/// Elements per batch a source emits.
pub const BATCH_SIZE: usize = 1024;
/// Batches a source emits before yielding to the rest of the dataflow, so downstream
/// operators drain what it produced and queues stay short.
const BATCHES_PER_ACTIVATION: usize = 16;
/// How long a source with nothing to read waits before it polls again.
const IDLE_POLL: Duration = Duration::from_millis(1);
/// How many distinct times a source may have emitted at that the sinks have not yet
/// passed. Timely has no backpressure: without a bound, a source that is cheaper than
/// the keyed state it feeds fills the queues between them, and memory grows with the
/// length of a stream. Only *distinct* times count, so a bounded source (all at one time
/// until it ends) is never held back, and nothing can wait on itself.
const TIMES_IN_FLIGHT: usize = 32;
/// How long a paced source waits before looking at the sinks' progress again.
const PACE_POLL: Duration = Duration::from_micros(200);
/// A source moves to the next epoch after this many batches. A bounded source's watermark
/// stays at -infinity until it ends, so without epochs all it emits is at one time and
/// cannot be paced; epochs give its batches distinct times the pacing can count. (They are
/// also where checkpoints will cut.)
const BATCHES_PER_EPOCH: usize = 16;

/// How often a stopping source cuts a checkpoint, until the job stops at one.
const STOP_CUT_EVERY: Duration = Duration::from_millis(20);

/// How often a source publishes its reader's per-split gauges (for monitoring only, so
/// the wall clock, not the job's `Clock`).
const GAUGE_EVERY: Duration = Duration::from_millis(250);

/// Where a source is in moving processing time for a [`SourcePoll::AdvanceProcessingTime`].
#[derive(Clone, Copy, Debug)]
enum Barrier {
    /// Everything emitted before `epoch` ended must reach the sinks everywhere; then the
    /// clock moves to `to`.
    Drain { epoch: u64, to: ProcessingTime },
    /// Every source of every worker must have moved its clock (and so left `epoch`)
    /// before this one reads on.
    Publish { epoch: u64 },
}

/// Whether the sinks have passed every time of `epoch` and before.
fn passed(sinks: &timely::dataflow::ProbeHandle<Time>, epoch: u64) -> bool {
    !sinks.less_equal(&Time { epoch, event: i64::MAX })
}

/// A source's side of checkpoints: when it cuts the next one, and what it writes.
struct Cutter {
    ck: Arc<Checkpoints>,
    step: usize,
    worker: usize,
    /// The checkpoint it cuts next.
    next: u64,
    at: Instant,
    /// A stop was asked for: it reads no more.
    stopping: bool,
    /// When it saw the last checkpoint it cut pass every sink.
    passed_at: Option<Instant>,
    /// The reader's position at the last cut, until that checkpoint has passed every sink.
    cut_at: Option<Vec<u8>>,
}

impl Cutter {
    /// Cuts the next checkpoint if it is due: writes the reader's position, then moves
    /// the capability into the checkpoint's generation. One checkpoint at a time: not
    /// before the last one has passed every sink (every grouping has written its part of
    /// it), so that a checkpoint slower than the interval does not pile up others behind
    /// it, each a whole copy of the state (Flink's one concurrent checkpoint).
    fn cut_if_due(
        &mut self,
        r: &mut dyn SourceReader,
        cap: &mut Capability<Time>,
        sinks: &timely::dataflow::ProbeHandle<Time>,
    ) -> riffle_engine::Result<()> {
        let last_cut = self.next - 1;
        if last_cut > self.ck.start {
            let passed = !sinks.less_equal(&Time { epoch: checkpoint::last_epoch(last_cut - 1), event: i64::MAX });
            if !passed {
                return Ok(());
            }
            // The next cut is due an interval after the last checkpoint passed every sink:
            // a worker writes its part of a checkpoint in its own thread, so with a large
            // state a checkpoint can take longer than the interval, and cuts spaced from
            // cut to cut would leave no time for the work itself.
            if self.passed_at.is_none() {
                let now = Instant::now();
                self.passed_at = Some(now);
                if let Some(position) = self.cut_at.take() {
                    r.checkpoint_passed(&position)?;
                }
                if !self.stopping {
                    self.at = self.at.max(now + self.ck.interval);
                }
            }
        }
        if Instant::now() < self.at {
            return Ok(());
        }
        let kind = if self.stopping { PartKind::Stop } else { PartKind::Cut };
        self.ck.note_cut(self.next);
        let position = r.position()?;
        self.ck.write_part(self.next, self.step, self.worker, kind, position.clone())?;
        self.cut_at = Some(position);
        cap.downgrade(&Time { epoch: checkpoint::first_epoch(self.next), event: cap.time().event });
        self.next += 1;
        self.passed_at = None;
        self.at = Instant::now() + if self.stopping { STOP_CUT_EVERY } else { self.ck.interval };
        Ok(())
    }

    /// A stop was asked for: cut now, and then often, until the job stops at a checkpoint.
    fn stopping(&mut self) {
        if !self.stopping {
            self.stopping = true;
            self.at = Instant::now();
        }
    }

    /// The reader is done: its position holds for every checkpoint from the next on.
    fn finish(&self, r: &dyn SourceReader) -> riffle_engine::Result<()> {
        self.ck.write_part(self.next, self.step, self.worker, PartKind::Final, r.position()?)
    }
}

/// Lowers a source step, the `step`-th of its graph.
pub fn source<'scope>(
    scope: Scope<'scope, Time>,
    step: usize,
    name: &str,
    src: &Arc<dyn SourceFn>,
    env: &Env,
) -> BatchStream<'scope> {
    let ctx = env.step(name);
    let counter = env.counter(name);
    let job = env.job.clone();
    let src = src.clone();
    // Every sink, for the processing-time barrier; the sinks this source feeds, to pace on.
    let sinks = env.sinks_progress.clone();
    let fed = env.pacing.first().cloned().unwrap_or_default();
    let clock = env.clock.clone();
    let bounded = src.is_bounded();
    let mut cutter = env.checkpoints.clone().map(|ck| Cutter {
        next: ck.start + 1,
        at: Instant::now() + ck.interval,
        stopping: false,
        passed_at: None,
        cut_at: None,
        ck,
        step,
        worker: ctx.worker.index,
    });
    timely_source::<_, CapacityContainerBuilder<Vec<Batch>>, _, _>(scope, name, move |mut cap, info| {
        let activator = scope.activator_for(info.address);
        let opened = match &cutter {
            Some(c) if c.ck.resumed.is_some() => c.ck.resumed_parts(step).and_then(|saved| src.open_from(&ctx, &saved)),
            _ => src.open(&ctx),
        };
        let mut reader = match opened {
            Ok(r) => Some(r),
            Err(e) => {
                job.fail(e);
                None
            }
        };
        if let Some(c) = &cutter {
            // This run's generations come after every checkpoint the directory holds.
            cap.downgrade(&Time { epoch: checkpoint::first_epoch(c.ck.start), event: cap.time().event });
        }
        let mut cap = reader.as_ref().map(|_| cap);
        let mut in_flight: std::collections::VecDeque<Time> = std::collections::VecDeque::new();
        let mut batches_in_epoch = 0;
        let mut barrier = None;
        let mut gauges_at = std::time::Instant::now() - GAUGE_EVERY;
        move |output| {
            let _busy = counter.busy();
            let (Some(r), Some(c)) = (reader.as_mut(), cap.as_mut()) else {
                return;
            };
            // Processing time moves in two rounds of epochs, so that it is the same for
            // every element wherever it is processed: elements read before the advance are
            // all processed before any clock moves, and none read after it is emitted before
            // every clock has moved.
            match barrier {
                Some(Barrier::Drain { epoch, to }) if passed(&sinks, epoch) => {
                    clock.advance_to(to);
                    next_epoch(c);
                    barrier = Some(Barrier::Publish { epoch: epoch + 1 });
                }
                Some(Barrier::Publish { epoch }) if passed(&sinks, epoch) => barrier = None,
                _ => {}
            }
            if barrier.is_some() && !job.has_failed() {
                activator.activate_after(PACE_POLL);
                return;
            }
            if let Some(cutter) = cutter.as_mut().filter(|_| !job.has_failed()) {
                if let Err(e) = cutter.cut_if_due(r.as_mut(), c, &sinks) {
                    job.fail(e);
                }
            }
            // A stop asked for (SIGTERM) ends an unbounded source as its end would; with
            // checkpoints, the source stops reading and cuts until the job stops at one.
            if let Some(cutter) = cutter.as_mut().filter(|_| crate::stop::stop_requested() && !job.has_failed()) {
                cutter.stopping();
                if let Err(e) = cutter.cut_if_due(r.as_mut(), c, &sinks) {
                    job.fail(e);
                }
                counter.set_watermark(c.time().event);
                activator.activate_after(STOP_CUT_EVERY);
                return;
            }
            let mut finished = job.has_failed() || (!bounded && crate::stop::stop_requested());
            let mut pending = false;
            let mut paced = false;
            for _ in 0..BATCHES_PER_ACTIVATION {
                if finished {
                    break;
                }
                // Split stamps need not come in order: forget every time the sinks passed.
                in_flight.retain(|t| fed.less_equal(t));
                if in_flight.len() >= TIMES_IN_FLIGHT || too_far_ahead(r.as_ref(), &fed) {
                    paced = true;
                    break;
                }
                // A batch is stamped with the reader's watermark from before the poll that
                // produced it: its elements are judged against what came before them.
                advance(c, r.watermark().0.millis());
                let (batch, split_watermark) = match r.poll(BATCH_SIZE) {
                    Ok(SourcePoll::Batch(b)) => (b, None),
                    Ok(SourcePoll::SplitBatch(b, w)) => (b, Some(w)),
                    Ok(SourcePoll::Advanced) => continue,
                    Ok(SourcePoll::AdvanceProcessingTime(to)) => {
                        barrier = Some(Barrier::Drain { epoch: c.time().epoch, to });
                        next_epoch(c);
                        batches_in_epoch = 0;
                        break;
                    }
                    Ok(SourcePoll::Pending) => {
                        pending = true;
                        break;
                    }
                    Ok(SourcePoll::Done) => {
                        finished = true;
                        continue;
                    }
                    Err(e) => {
                        job.fail(e);
                        finished = true;
                        continue;
                    }
                };
                if batches_in_epoch == BATCHES_PER_EPOCH {
                    next_epoch(c);
                    batches_in_epoch = 0;
                }
                batches_in_epoch += 1;
                // A split's batch goes out at its split's watermark, which is never behind
                // the capability (the least over the reader's splits).
                let at = match split_watermark {
                    Some(w) => Time { epoch: c.time().epoch, event: w.0.millis().max(c.time().event) },
                    None => *c.time(),
                };
                if !in_flight.contains(&at) {
                    in_flight.push_back(at);
                }
                counter.add_out(batch.len());
                output.session(&c.delayed(&at)).give(batch);
            }
            if finished {
                if let Some(cutter) = cutter.as_ref().filter(|_| !job.has_failed()) {
                    if let Err(e) = cutter.finish(r.as_ref()) {
                        job.fail(e);
                    }
                }
                // Dropping the capability is the end of input: the watermark jumps to +inf.
                counter.set_progress(r.progress());
                counter.set_watermark(i64::MAX);
                cap = None;
                reader = None;
                return;
            }
            advance(c, r.watermark().0.millis());
            counter.set_watermark(c.time().event);
            if gauges_at.elapsed() >= GAUGE_EVERY {
                gauges_at = std::time::Instant::now();
                counter.set_split_gauges(r.split_gauges());
                counter.set_progress(r.progress());
            }
            if pending || barrier.is_some() {
                activator.activate_after(IDLE_POLL)
            } else if paced {
                activator.activate_after(PACE_POLL)
            } else {
                activator.activate()
            }
        }
    })
}

/// Moves the source's capability to the next epoch.
fn next_epoch(cap: &mut Capability<Time>) {
    let t = *cap.time();
    cap.downgrade(&Time { epoch: t.epoch + 1, event: t.event });
}

/// Whether the reader's watermark is further past the sinks' than it allows.
fn too_far_ahead(r: &dyn SourceReader, sinks: &timely::dataflow::ProbeHandle<Time>) -> bool {
    let Some(limit) = r.read_ahead_millis() else { return false };
    let sinks_at = sinks.with_frontier(|f| f.iter().map(|t| t.event).min());
    sinks_at.is_some_and(|at| r.watermark().0.millis() > at.saturating_add(limit))
}

/// Moves the source's capability, and so the watermark, forward to `event`.
fn advance(cap: &mut Capability<Time>, event: i64) {
    if event > cap.time().event {
        cap.downgrade(&Time { epoch: cap.time().epoch, event });
    }
}
