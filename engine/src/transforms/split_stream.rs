//! SplitStream: an unbounded source of several splits, each a script of elements with its
//! own watermark, read by whichever worker the split is dealt to. It is to a Kafka topic
//! with partitions what [`crate::TestStream`] is to one ordered stream: a test source for
//! many senders.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::batch::Batch;
use crate::clock::{Clock, ProcessingTime};
use crate::element::{Data, Elements};
use crate::error::Result;
use crate::graph::{NodeKind, OutputInfo, PortRef, Windowing};
use crate::pane::PaneInfo;
use crate::pipeline::{PCollection, Pipeline};
use crate::runtime::{SourceFn, SourcePoll, SourceReader, StepContext};
use crate::time::{EstimatorState, EventTime, Watermark, WatermarkEstimator, WatermarkStrategy};
use crate::window::Window;

/// One step of a split's script.
#[derive(Clone, Debug)]
pub enum SplitEvent<T> {
    /// Elements read in one poll, with their timestamps.
    Chunk(Vec<(T, EventTime)>),
    /// The split has nothing to read for this many milliseconds of processing time (the
    /// other splits of its reader go on).
    Pause(i64),
}

/// An unbounded stream of several splits, each a script of chunks and pauses.
///
/// Split `s` is read by worker `s % workers`, which reads its splits in turn, a chunk at a
/// time, so the interleaving of splits, and of the workers that read them, changes with
/// the worker count and from run to run. Each split has a watermark of its own, estimated
/// by the stream's [`WatermarkStrategy`] from the timestamps that split has read, and
/// each chunk is sent at its split's watermark from before it was read
/// ([`SourcePoll::SplitBatch`]): whether an element is late depends on its split's script
/// alone. A worker's watermark is the least over its splits that have more to read.
///
/// ```
/// use riffle_engine::prelude::*;
/// use riffle_engine::transforms::split_stream::{SplitEvent, SplitStream};
/// let ms = EventTime::from_millis;
/// let stream = SplitStream::new(WatermarkStrategy::bounded_out_of_orderness(0))
///     .split(vec![SplitEvent::Chunk(vec![(1u8, ms(1)), (1, ms(12))])])
///     .split(vec![SplitEvent::Pause(5), SplitEvent::Chunk(vec![(1u8, ms(3))])]);
/// let mut out = riffle_timely::testing::run_bounded(|p| {
///     p.split_stream(stream)
///         .map(|k| (k, 1u64))
///         .window_into(FixedWindows::of_millis(10))
///         .combine_per_key(Count::new())
/// });
/// out.sort();
/// // Each split's watermark holds for its own elements: the 3 is on time in [0, 10)
/// // although the other split read 12 first.
/// assert_eq!(out, [(1, 1), (1, 2)]);
/// ```
#[derive(Clone, Debug)]
pub struct SplitStream<T> {
    strategy: WatermarkStrategy,
    splits: Vec<Vec<SplitEvent<T>>>,
}

impl<T: Data> SplitStream<T> {
    /// A stream of no splits yet, whose splits estimate their watermarks with `strategy`.
    pub fn new(strategy: WatermarkStrategy) -> Self {
        SplitStream { strategy, splits: Vec::new() }
    }

    /// Adds a split with this script.
    pub fn split(mut self, script: Vec<SplitEvent<T>>) -> Self {
        self.splits.push(script);
        self
    }

    /// How many splits the stream has.
    pub fn len(&self) -> usize {
        self.splits.len()
    }

    /// Whether the stream has no split.
    pub fn is_empty(&self) -> bool {
        self.splits.is_empty()
    }
}

impl Pipeline {
    /// Reads a [`SplitStream`]: an unbounded collection from several splits, each with
    /// its own watermark.
    pub fn split_stream<T: Data>(&self, stream: SplitStream<T>) -> PCollection<T> {
        let info = OutputInfo {
            type_name: std::any::type_name::<T>(),
            bounded: false,
            windowing: Windowing::default(),
            tag: None,
        };
        let node =
            self.add_step("SplitStream", NodeKind::Source(Arc::new(SplitSource(Arc::new(stream)))), vec![], vec![info]);
        PCollection::from_port(self, PortRef { node, port: 0 })
    }
}

pub(crate) struct SplitSource<T>(pub(crate) Arc<SplitStream<T>>);

impl<T: Data> SourceFn for SplitSource<T> {
    fn is_bounded(&self) -> bool {
        false
    }

    fn open(&self, ctx: &StepContext) -> Result<Box<dyn SourceReader>> {
        self.open_from_positions(ctx, &[])
    }

    fn checkpoints(&self) -> bool {
        true
    }

    fn open_from(&self, ctx: &StepContext, saved: &[Vec<u8>]) -> Result<Box<dyn SourceReader>> {
        let saved: Vec<Vec<SplitPosition>> = crate::position::decode_all(&ctx.name, SPLIT_POSITION_VERSION, saved)?;
        let saved: Vec<SplitPosition> = saved.into_iter().flatten().collect();
        self.open_from_positions(ctx, &saved)
    }
}

impl<T: Data> SplitSource<T> {
    /// This worker's splits, each past the events `saved` says it had taken.
    fn open_from_positions(&self, ctx: &StepContext, saved: &[SplitPosition]) -> Result<Box<dyn SourceReader>> {
        let splits = (self.0.splits.iter().enumerate())
            .filter(|(s, _)| s % ctx.worker.peers == ctx.worker.index)
            .map(|(id, script)| {
                let at = saved.iter().find(|p| p.split == id);
                let taken = at.map_or(0, |p| p.taken);
                let estimator = self.0.strategy.estimator();
                SplitState {
                    id,
                    script: script.iter().skip(taken).cloned().collect(),
                    taken,
                    estimator: at.map_or(estimator, |p| estimator.restored(p.estimator)),
                    paused_until: at.and_then(|p| p.paused_until).map(ProcessingTime::from_millis),
                }
            })
            .collect();
        Ok(Box::new(SplitStreamReader { splits, next: 0, clock: ctx.clock.clone() }))
    }
}

/// Format version of a SplitStream reader's position: a [`SplitPosition`] per split.
const SPLIT_POSITION_VERSION: u8 = 1;

/// Where one split of a [`SplitStream`] was.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct SplitPosition {
    split: usize,
    /// Events of its script taken (chunks returned, pauses begun).
    taken: usize,
    estimator: EstimatorState,
    /// The processing time its pause ends, if one was under way (scripts run on a manual
    /// clock, which a restored job starts again at the same place).
    paused_until: Option<i64>,
}

struct SplitState<T> {
    /// The split's index in the stream.
    id: usize,
    script: VecDeque<SplitEvent<T>>,
    /// Events taken from the script since its start.
    taken: usize,
    estimator: WatermarkEstimator,
    paused_until: Option<ProcessingTime>,
}

struct SplitStreamReader<T> {
    splits: Vec<SplitState<T>>,
    /// The split to try first on the next poll: splits are read in turn.
    next: usize,
    clock: Arc<dyn Clock>,
}

impl<T: Data> SourceReader for SplitStreamReader<T> {
    fn poll(&mut self, _max_elements: usize) -> Result<SourcePoll> {
        if self.splits.iter().all(|s| s.script.is_empty()) {
            return Ok(SourcePoll::Done);
        }
        let now = self.clock.now();
        let n = self.splits.len();
        for i in (0..n).map(|i| (self.next + i) % n) {
            let split = &mut self.splits[i];
            if split.paused_until.is_some_and(|until| until > now) {
                continue;
            }
            split.paused_until = None;
            let event = split.script.pop_front();
            split.taken += usize::from(event.is_some());
            match event {
                None => {}
                Some(SplitEvent::Pause(ms)) => {
                    split.paused_until = Some(ProcessingTime::from_millis(now.millis() + ms))
                }
                Some(SplitEvent::Chunk(elements)) => {
                    let watermark = split.estimator.watermark(now);
                    let mut batch = Elements::with_capacity(elements.len());
                    for (v, t) in elements {
                        split.estimator.observe(t, now);
                        batch.push(v, t, Window::Global, PaneInfo::NO_FIRING);
                    }
                    self.next = i + 1;
                    return Ok(SourcePoll::SplitBatch(Batch::new(batch), watermark));
                }
            }
        }
        Ok(SourcePoll::Pending)
    }

    fn position(&self) -> Result<Vec<u8>> {
        let splits: Vec<SplitPosition> = (self.splits.iter())
            .map(|s| SplitPosition {
                split: s.id,
                taken: s.taken,
                estimator: s.estimator.state(),
                paused_until: s.paused_until.map(|t| t.millis()),
            })
            .collect();
        crate::position::encode(SPLIT_POSITION_VERSION, &splits)
    }

    /// The least watermark over the splits with more to read.
    fn watermark(&self) -> Watermark {
        let now = self.clock.now();
        (self.splits.iter())
            .filter(|s| !s.script.is_empty())
            .map(|s| s.estimator.clone().watermark(now))
            .min()
            .unwrap_or(Watermark::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::position::testing::across_checkpoint;

    #[test]
    fn a_split_stream_resumes_each_split_where_it_was_with_its_watermark() {
        let ms = EventTime::from_millis;
        let mut stream = SplitStream::new(WatermarkStrategy::bounded_out_of_orderness(0));
        for s in 0..5u64 {
            let chunks = (0..6).map(|c| SplitEvent::Chunk(vec![(s * 100 + c, ms((c * 10 + s) as i64))])).collect();
            stream = stream.split(chunks);
        }
        let source = SplitSource(Arc::new(stream));
        for (before, after) in [(2, 1), (2, 3), (1, 4), (3, 3)] {
            let run =
                across_checkpoint::<u64>(&source, Arc::new(ManualClock::new()), (before, after), 4, Duration::ZERO)
                    .unwrap();
            let mut got = run.union();
            got.sort();
            let want: Vec<u64> = (0..5).flat_map(|s| (0..6).map(move |c| s * 100 + c)).collect();
            assert_eq!(got, want, "{before} -> {after}");
            // Each split's first chunk after the restore goes out at its watermark from
            // before the checkpoint (in order, no delay: the latest time it had read).
            let split_of = |v: &u64| v / 100;
            for s in 0..5 {
                let seen = run.before.iter().flatten().filter(|(v, _, _)| split_of(v) == s).map(|e| e.1).max();
                let first_after = run.after.iter().flatten().find(|(v, _, _)| split_of(v) == s).map(|e| e.2);
                if let (Some(t), Some(w)) = (seen, first_after) {
                    assert_eq!(w, Watermark(t), "split {s}, {before} -> {after}");
                }
            }
        }
    }
}
