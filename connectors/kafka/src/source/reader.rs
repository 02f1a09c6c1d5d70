//! One worker's reader: its partitions, each with its own watermark, and the thread that
//! watches where they end and finds partitions added to the topic.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use riffle_engine::prelude::*;
use riffle_engine::runtime::{SourcePoll, SourceReader};
use riffle_engine::{Batch, Clock, Data, Elements, PaneInfo, Watermark, WatermarkEstimator};

use crate::error::{Error, Result};

use super::*;

/// One partition of a reader.
pub(super) struct Partition<T> {
    pub(super) id: i32,
    /// Bounded mode: the offset to stop before.
    pub(super) end: Option<i64>,
    /// The offset of the next record to read.
    pub(super) next: i64,
    /// The partition's end as last fetched from the broker: while `next` is behind it, the
    /// partition has a backlog and is not idle.
    pub(super) known_end: i64,
    pub(super) done: bool,
    pub(super) estimator: WatermarkEstimator,
    /// Records read and not yet emitted, with their event times.
    pub(super) pending: Vec<(Read<T>, EventTime, i64)>,
    /// The offset after the last record emitted into the dataflow (what a commit stores).
    pub(super) emitted: i64,
}

impl<T> Partition<T> {
    /// Partition `id`, read from offset `start` (to `end`, in bounded mode), whose end the
    /// broker last gave as `known_end`.
    pub(super) fn new(id: i32, start: i64, end: Option<i64>, known_end: i64, estimator: WatermarkEstimator) -> Self {
        let done = end.is_some_and(|end| start >= end);
        Partition { id, end, next: start, known_end, done, estimator, pending: Vec::new(), emitted: start }
    }
}

pub(super) struct KafkaReader<T> {
    pub(super) topic: String,
    pub(super) brokers: String,
    pub(super) consumer: BaseConsumer,
    pub(super) partitions: Vec<Partition<T>>,
    /// Partitions with pending records, in the order they got them.
    pub(super) ready: VecDeque<usize>,
    pub(super) decode: DecodeFn<T>,
    pub(super) event_time: Option<TimeFn<T>>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) strategy: WatermarkStrategy,
    pub(super) bounded: bool,
    /// The first and the latest read error of the current run of errors.
    pub(super) errors: Option<(std::time::Instant, std::time::Instant)>,
    /// A live reader's watcher of its partitions' ends.
    pub(super) watcher: Option<EndWatcher>,
    /// Commit offsets: when they were last committed, if at all.
    pub(super) committed: Option<std::time::Instant>,
    /// Commit each checkpoint's offsets to the consumer group once it has passed every
    /// sink (a group id was given, or offsets are committed): for monitoring.
    pub(super) commit_checkpoints: bool,
    /// A checkpoint has passed: offsets are committed with checkpoints from then on, not
    /// every second.
    pub(super) checkpointed: bool,
}

impl<T: Data> KafkaReader<T> {
    /// Commits the offset after each partition's last emitted record.
    fn commit(&mut self, mode: CommitMode) -> Result<()> {
        self.committed = Some(std::time::Instant::now());
        let offsets: Vec<(i32, i64)> = self.partitions.iter().map(|p| (p.id, p.emitted)).collect();
        self.commit_offsets(&offsets, mode)
    }

    /// Commits `(partition, next offset)`s to the consumer group.
    fn commit_offsets(&self, offsets: &[(i32, i64)], mode: CommitMode) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (p, next) in offsets {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*next))
                .map_err(|e| Error::Client { topic: self.topic.clone(), reason: e.to_string() })?;
        }
        self.consumer.commit(&tpl, mode).map_err(|e| Error::Read {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            reason: format!("committing offsets: {e}"),
        })
    }

    /// Bounded mode, at the end of partition `p` as the broker has it now: `p` is done
    /// when the consumer's position there (which passes control records, such as a
    /// transaction's commit marker, that are never handed out) has reached its end.
    fn reached_end(&mut self, p: i32) {
        let Some(part) = self.partitions.iter_mut().find(|part| part.id == p) else { return };
        let Some(end) = part.end else { return };
        let position = self.consumer.position().ok().and_then(|tpl| {
            tpl.find_partition(&self.topic, p).and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
        });
        if position.is_some_and(|o| o >= end) {
            part.done = true;
        }
    }

    /// Starts reading partition `id`, which the watcher found in the topic (added while
    /// the job runs), at its earliest offset `low` (Flink's partition discovery does too:
    /// a partition added while running holds only records written since). Its watermark
    /// starts at this worker's watermark now, so it moves the worker's neither back nor
    /// on: it holds the worker there until its own records (or the idle timeout) move it
    /// past, as Flink's does. Its records before that watermark are late (the worker's
    /// capability has passed them; no watermark ever moves back).
    fn pick_up(&mut self, id: i32, low: i64, high: i64) -> Result<()> {
        let floor = self.watermark();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, id, Offset::Offset(low))
            .map_err(|e| Error::Client { topic: self.topic.clone(), reason: e.to_string() })?;
        self.consumer.incremental_assign(&tpl).map_err(|e| Error::Client {
            topic: self.topic.clone(),
            reason: format!("assigning partition {id}: {e}"),
        })?;
        let now = self.clock.now();
        let held = riffle_engine::EstimatorState { max_seen: EventTime::MIN, watermark: floor.0 };
        let mut estimator = self.strategy.estimator().restored(held);
        estimator.active(now);
        self.partitions.push(Partition::new(id, low, None, high, estimator));
        tracing::info!(
            topic = %self.topic,
            partition = id,
            from = low,
            watermark = floor.0.millis(),
            "picked up a partition added while running"
        );
        Ok(())
    }

    /// Takes what the consumer has, up to `max` records, into the partitions' pending lists.
    fn fetch(&mut self, max: usize) -> Result<()> {
        for _ in 0..max {
            let Some(m) = self.consumer.poll(Duration::ZERO) else { break };
            let m = match m {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(p)) => {
                    self.reached_end(p);
                    continue;
                }
                Err(e) => {
                    // librdkafka reports passing trouble (a connection reset) the same way
                    // as a broker that is gone: the job fails when errors go on for
                    // BROKER_LOSS_TIMEOUT, not at the first.
                    let now = std::time::Instant::now();
                    let continuing = self.errors.is_some_and(|(_, last)| now - last < BROKER_LOSS_TIMEOUT);
                    let since = if continuing { self.errors.expect("continuing").0 } else { now };
                    self.errors = Some((since, now));
                    if now - since >= BROKER_LOSS_TIMEOUT {
                        return Err(Error::Read {
                            topic: self.topic.clone(),
                            brokers: self.brokers.clone(),
                            reason: format!("{e}, for {} s without a break", BROKER_LOSS_TIMEOUT.as_secs()),
                        });
                    }
                    tracing::warn!(topic = %self.topic, error = %e, "reading");
                    break;
                }
            };
            let Some(i) = self.partitions.iter().position(|p| p.id == m.partition()) else { continue };
            let part = &mut self.partitions[i];
            if part.done || part.end.is_some_and(|end| m.offset() >= end) {
                continue;
            }
            let record_time = m.timestamp().to_millis().map(EventTime::from_millis);
            let read = match (self.decode)(&m) {
                Ok(v) => Read::Ok(v),
                Err(reason) => Read::Dead(DeadLetter {
                    topic: self.topic.clone(),
                    partition: m.partition(),
                    offset: m.offset(),
                    reason,
                    value: m.payload().map(<[u8]>::to_vec),
                }),
            };
            let t = match (&read, &self.event_time) {
                (Read::Ok(v), Some(f)) => f(v),
                _ => record_time.unwrap_or(EventTime::MIN),
            };
            part.next = m.offset() + 1;
            if part.pending.is_empty() {
                self.ready.push_back(i);
            }
            part.pending.push((read, t, m.offset()));
            if part.end.is_some_and(|end| m.offset() + 1 >= end) {
                part.done = true;
            }
        }
        Ok(())
    }
}

impl<T: Data> SourceReader for KafkaReader<T> {
    fn poll(&mut self, max_elements: usize) -> riffle_engine::Result<SourcePoll> {
        if self.ready.is_empty() {
            self.fetch(max_elements)?;
        }
        // A partition behind its end is not idle, however long its fetches take: its
        // backlog must not turn late. A live reader learns the ends from its watcher
        // thread; a bounded one knows where it stops.
        let now = self.clock.now();
        let mut added = Vec::new();
        if let Some(watcher) = &self.watcher {
            let ends = watcher.ends.lock().unwrap_or_else(|p| p.into_inner());
            for (&id, &(low, high)) in ends.iter() {
                match self.partitions.iter_mut().find(|part| part.id == id) {
                    Some(part) => part.known_end = high,
                    None => added.push((id, low, high)),
                }
            }
        }
        added.sort_unstable();
        for (id, low, high) in added {
            self.pick_up(id, low, high)?;
        }
        for part in &mut self.partitions {
            if part.next < part.known_end {
                part.estimator.active(now);
            }
        }
        if !self.checkpointed && self.committed.is_some_and(|at| at.elapsed() >= COMMIT_EVERY) {
            self.commit(CommitMode::Async)?;
        }
        let Some(i) = self.ready.pop_front() else {
            let finished = self.bounded && self.partitions.iter().all(|p| p.done);
            if finished && self.committed.is_some() {
                self.commit(CommitMode::Sync)?;
            }
            return Ok(if finished { SourcePoll::Done } else { SourcePoll::Pending });
        };
        // One partition's records at a time, each sent at its partition's watermark from
        // before it, in steps of WATERMARK_STEP_MS: a run of records with the same step
        // goes out as one batch. Which records a fetch happened to bring together then
        // changes nothing: a record's lateness depends on its partition's records before
        // it alone.
        let now = self.clock.now();
        let part = &mut self.partitions[i];
        let watermark = step(part.estimator.watermark(now));
        let mut n = 0;
        for (_, t, _) in &part.pending {
            if n > 0 && step(part.estimator.watermark(now)) != watermark {
                break;
            }
            part.estimator.observe(*t, now);
            n += 1;
        }
        let mut batch = Elements::with_capacity(n);
        for (read, t, offset) in part.pending.drain(..n) {
            batch.push(read, t, Window::Global, PaneInfo::NO_FIRING);
            part.emitted = offset + 1;
        }
        if !part.pending.is_empty() {
            self.ready.push_front(i);
        }
        Ok(SourcePoll::SplitBatch(Batch::new(batch), watermark))
    }

    /// Per partition: the offset after the last record returned, the bounded end, and
    /// the watermark estimator (which observes a record when it is returned, not when
    /// it is fetched).
    fn position(&self) -> riffle_engine::Result<Vec<u8>> {
        let partitions = (self.partitions.iter())
            .map(|p| PartitionPosition { partition: p.id, next: p.emitted, end: p.end, estimator: p.estimator.state() })
            .collect();
        riffle_engine::position::encode(POSITION_VERSION, &KafkaPosition { partitions })
    }

    /// Commits the offsets the checkpoint saved (the offset after the last record
    /// returned before its cut), when asked to ([`ReadKafka::group_id`] or
    /// [`ReadKafka::commit_offsets`]): the group's lag then shows how far the job's last
    /// checkpoint is behind the topic. A resume reads the checkpoint, not these.
    fn checkpoint_passed(&mut self, position: &[u8]) -> riffle_engine::Result<()> {
        self.checkpointed = true;
        if !self.commit_checkpoints {
            return Ok(());
        }
        let saved: KafkaPosition = riffle_engine::position::decode(&self.topic, POSITION_VERSION, position)?;
        let offsets: Vec<(i32, i64)> = saved.partitions.iter().map(|p| (p.partition, p.next)).collect();
        Ok(self.commit_offsets(&offsets, CommitMode::Async)?)
    }

    /// Each partition's lag (records between the next to read and its end as last
    /// fetched) and position (the next offset to read).
    fn split_gauges(&self) -> Vec<(&'static str, String, i64)> {
        let lag = self.partitions.iter().map(|p| ("lag", p.id.to_string(), (p.known_end - p.next).max(0)));
        let offset = self.partitions.iter().map(|p| ("offset", p.id.to_string(), p.next));
        lag.chain(offset).collect()
    }

    /// The least watermark over this worker's partitions that may still bring records. A
    /// worker with none holds nothing back: its watermark is the clock's, less the allowed
    /// delay, as an idle partition's is.
    fn watermark(&self) -> Watermark {
        let now = self.clock.now();
        let live = self.partitions.iter().filter(|p| !(p.done && p.pending.is_empty()));
        let least = live.map(|p| step(p.estimator.clone().watermark(now))).min();
        match least {
            Some(w) => w,
            None if self.bounded => Watermark::MAX,
            None => Watermark(EventTime::from_millis(now.millis().saturating_sub(self.strategy.max_delay_ms))),
        }
    }
}

/// Asks the broker, every [`END_REFRESH`], which partitions the topic has (for those
/// added while the job runs that this worker is dealt, `p % workers`) and where each of
/// this worker's partitions begins and ends (to tell a backlog from idleness), on a
/// thread of its own with a client of its own: round trips must not stall the worker.
/// The thread stops soon after the watcher is dropped.
pub(super) struct EndWatcher {
    /// Per partition of this worker's share, the topic's as last seen: its earliest
    /// offset and its end.
    pub(super) ends: Arc<std::sync::Mutex<std::collections::HashMap<i32, (i64, i64)>>>,
    pub(super) stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EndWatcher {
    /// Watches `partitions`, and every partition of `topic` that worker `index` of
    /// `peers` is dealt.
    pub(super) fn start(
        client: BaseConsumer,
        topic: &str,
        (index, peers): (usize, usize),
        mut partitions: Vec<i32>,
    ) -> Result<Self> {
        let ends = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ends_topic = topic.to_string();
        let (found, stopped, topic) = (ends.clone(), stop.clone(), topic.to_string());
        std::thread::Builder::new()
            .name(format!("riffle-kafka-ends-{topic}"))
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(md) = client.fetch_metadata(Some(&topic), END_FETCH_TIMEOUT) {
                        let listed = md.topics().iter().find(|t| t.name() == topic && t.error().is_none());
                        for p in listed.map(|t| t.partitions()).unwrap_or_default() {
                            if p.id() as usize % peers == index && !partitions.contains(&p.id()) {
                                partitions.push(p.id());
                            }
                        }
                    }
                    for &p in &partitions {
                        if let Ok(range) = client.fetch_watermarks(&topic, p, END_FETCH_TIMEOUT) {
                            found.lock().unwrap_or_else(|e| e.into_inner()).insert(p, range);
                        }
                    }
                    // Sleep in short steps, so a dropped watcher's thread ends soon.
                    let slept = std::time::Instant::now();
                    while slept.elapsed() < END_REFRESH && !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
            .map_err(|e| Error::Client { topic: ends_topic, reason: format!("starting a thread: {e}") })?;
        Ok(EndWatcher { ends, stop })
    }
}

impl Drop for EndWatcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
