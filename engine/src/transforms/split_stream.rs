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
use crate::time::{EventTime, Watermark, WatermarkEstimator, WatermarkStrategy};
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
///         .map(|k| (*k, 1u64))
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

struct SplitSource<T>(Arc<SplitStream<T>>);

impl<T: Data> SourceFn for SplitSource<T> {
    fn is_bounded(&self) -> bool {
        false
    }

    fn open(&self, ctx: &StepContext) -> Result<Box<dyn SourceReader>> {
        let splits = (self.0.splits.iter().enumerate())
            .filter(|(s, _)| s % ctx.worker.peers == ctx.worker.index)
            .map(|(_, script)| SplitState {
                script: script.iter().cloned().collect(),
                estimator: self.0.strategy.estimator(),
                paused_until: None,
            })
            .collect();
        Ok(Box::new(SplitStreamReader { splits, next: 0, clock: ctx.clock.clone() }))
    }
}

struct SplitState<T> {
    script: VecDeque<SplitEvent<T>>,
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
            match split.script.pop_front() {
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
