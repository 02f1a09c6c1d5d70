//! The source: a topic's partitions as splits, each with its own watermark.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use riffle_engine::prelude::*;
use riffle_engine::runtime::{SourceFn, SourceReader, StepContext};
use riffle_engine::transforms::hybrid::HybridSource;
use riffle_engine::{Data, NodeKind, OutputInfo, PortRef, Watermark, Windowing};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Partition watermarks move in steps of this many milliseconds: each step is a distinct
/// timely time (progress traffic), and a record is judged against its partition's
/// watermark from before it, rounded down to a step.
const WATERMARK_STEP_MS: i64 = 100;

/// `w` rounded down to a [`WATERMARK_STEP_MS`] step.
fn step(w: Watermark) -> Watermark {
    if w == Watermark::MIN || w == Watermark::MAX {
        return w;
    }
    Watermark(EventTime::from_millis(w.0.millis().div_euclid(WATERMARK_STEP_MS) * WATERMARK_STEP_MS))
}

/// How long read errors may go on without a break before the job fails: a broker that is
/// gone stops the job (never a hang), a connection that drops and comes back does not.
const BROKER_LOSS_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a live reader's watcher asks the broker where its partitions end (to tell a
/// backlog from idleness) and which partitions the topic has (to pick up those added while
/// running), and how long it waits for each answer.
const END_REFRESH: Duration = Duration::from_secs(1);
const END_FETCH_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a reader that commits offsets commits them.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// How long `check` and `open` wait for the brokers at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A record as the broker holds it, for users who decode values themselves
/// ([`ReadKafka::raw`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRecord {
    /// The record's key, if it has one.
    pub key: Option<Vec<u8>>,
    /// The record's value, if it has one.
    pub value: Option<Vec<u8>>,
    /// The record's headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its timestamp (create or log-append time), ms since the Unix epoch.
    pub timestamp: Option<i64>,
}

/// A record that could not be decoded, with where it was and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset in the partition.
    pub offset: i64,
    /// Why it could not be decoded.
    pub reason: String,
    /// The raw value.
    pub value: Option<Vec<u8>>,
}

/// Where reading starts in each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The earliest offset the broker still has.
    Earliest,
    /// The offset after the last record at the time the job starts.
    Latest,
    /// The first record at or after this time (ms since the Unix epoch): offsets for times.
    Timestamp(i64),
    /// The consumer group's committed offsets (the earliest where it has none).
    Committed,
}

/// How a record becomes an element.
type DecodeFn<T> = Arc<dyn Fn(&BorrowedMessage<'_>) -> std::result::Result<T, String> + Send + Sync>;
/// An element's event time; `None`: the record's timestamp.
type TimeFn<T> = Arc<dyn Fn(&T) -> EventTime + Send + Sync>;

/// Reads a Kafka-protocol topic (DESIGN.md section 6).
///
/// Partitions are splits: partition `p` is read by worker `p % workers`, the same on
/// every process. Each partition has its own watermark (the greatest event time it has
/// read less the out-of-orderness, or the clock once it has been idle longer than the idle
/// timeout), and records go out at their own partition's watermark, so whether a record
/// is late depends on its partition alone (docs/semantics.md). A worker's watermark is
/// the least over its partitions.
///
/// A live read finds partitions added to the topic while it runs within about a second
/// (it asks for them every second): the worker dealt one (`p % workers`) reads it from
/// its earliest offset, with a watermark of its own that starts at the worker's (so it
/// moves the worker's neither back nor on), and saves it in checkpoints with the others.
///
/// In **bounded** mode each partition is read up to the offset that was its end when the
/// job started, and then the source ends: a topic's history run as a batch, with the
/// panes of the same events read any other way (Flink's `setBounded(latest)`).
///
/// Offsets are not committed unless asked ([`ReadKafka::commit_offsets`]). A job with
/// checkpoints saves, per partition, the offset after the last record returned and the
/// partition's watermark state, and resumes each partition there on whichever worker is
/// dealt it at the new worker count.
pub struct ReadKafka<T> {
    topic: String,
    brokers: String,
    group_id: Option<String>,
    start: StartAt,
    bounded: bool,
    strategy: WatermarkStrategy,
    decode: DecodeFn<T>,
    event_time: Option<TimeFn<T>>,
    /// librdkafka settings the user adds (security, fetch sizes).
    settings: Vec<(String, String)>,
    /// Whether to commit the offsets of what was read to the consumer group.
    commit: bool,
    /// History to read first, and the switch point ([`ReadKafka::after_history`]).
    history: Option<(Arc<dyn SourceFn>, EventTime)>,
}

impl<T: Data + DeserializeOwned> ReadKafka<T> {
    /// Reads `topic`, decoding each record's value as JSON into `T`; a value that does not
    /// decode goes to the dead-letter output.
    pub fn topic(topic: &str) -> Self {
        let decode: DecodeFn<T> = Arc::new(|m| {
            let value = m.payload().ok_or("the record has no value")?;
            serde_json::from_slice(value).map_err(|e| format!("not JSON of {}: {e}", std::any::type_name::<T>()))
        });
        Self::with_decoder(topic, decode)
    }
}

impl ReadKafka<KafkaRecord> {
    /// Reads `topic` as raw records, for users who decode values themselves.
    pub fn raw(topic: &str) -> Self {
        Self::with_decoder(
            topic,
            Arc::new(|m| {
                let headers = m
                    .headers()
                    .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
                    .unwrap_or_default();
                Ok(KafkaRecord {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                })
            }),
        )
    }
}

impl<T: Data> ReadKafka<T> {
    fn with_decoder(topic: &str, decode: DecodeFn<T>) -> Self {
        ReadKafka {
            topic: topic.to_string(),
            brokers: "127.0.0.1:9092".into(),
            group_id: None,
            start: StartAt::Earliest,
            bounded: false,
            strategy: WatermarkStrategy::bounded_out_of_orderness(0),
            decode,
            event_time: None,
            settings: Vec::new(),
            commit: false,
            history: None,
        }
    }

    /// Commits to the consumer group, once a second and when a bounded read ends, the
    /// offset after the last record each partition has handed to the dataflow. Off by
    /// default: a record is committed once read, not once its panes are written, so a job
    /// restarted from its committed offsets ([`StartAt::Committed`]) can miss what was in
    /// flight when it stopped. In a job with checkpoints, offsets are committed once a
    /// checkpoint has passed every sink instead (as with a [`ReadKafka::group_id`]): the
    /// offsets it saved, for monitoring.
    pub fn commit_offsets(mut self, commit: bool) -> Self {
        self.commit = commit;
        self
    }

    /// Sets a librdkafka consumer setting (`security.protocol`, `sasl.*`,
    /// `fetch.wait.max.ms`, ...); it overrides Riffle's own.
    pub fn client_config(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_string(), value.to_string()));
        self
    }

    /// The bootstrap servers, `host:port[,host:port...]`.
    pub fn brokers(mut self, brokers: &str) -> Self {
        self.brokers = brokers.to_string();
        self
    }

    /// The consumer group (for [`StartAt::Committed`]); default `riffle-<topic>`.
    pub fn group_id(mut self, id: &str) -> Self {
        self.group_id = Some(id.to_string());
        self
    }

    /// Where to start in each partition; default [`StartAt::Earliest`].
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// Reads up to the end each partition had when the job started, then ends.
    pub fn bounded(mut self, bounded: bool) -> Self {
        self.bounded = bounded;
        self
    }

    /// How each partition estimates its watermark; default: in order (no out-of-orderness).
    pub fn watermarks(mut self, strategy: WatermarkStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Takes an element's event time from the element instead of the record's timestamp.
    pub fn event_time(mut self, f: impl Fn(&T) -> EventTime + Send + Sync + 'static) -> Self {
        self.event_time = Some(Arc::new(f));
        self
    }

    /// Reads `history` first (a source of the same elements: Parquet files in backfill
    /// mode), then this topic, as one source: the history's elements before `switch_at`,
    /// the topic's at or after it (`riffle_engine::transforms::hybrid`). Each partition
    /// starts at the offset for `switch_at` less the out-of-orderness, so that no record at
    /// or after the switch is missed; a partition that no longer holds that point (its
    /// older records deleted) is an error at start that names it. Records that do not
    /// decode are dead letters when their record time is at or after the switch.
    pub fn after_history(mut self, history: Arc<dyn SourceFn>, switch_at: EventTime) -> Self {
        self.history = Some((history, switch_at));
        self
    }

    /// Adds the source to `p`: the decoded elements, and the records that did not decode.
    pub fn read(mut self, p: &Pipeline) -> (PCollection<T>, PCollection<DeadLetter>) {
        let info = OutputInfo {
            type_name: std::any::type_name::<Read<T>>(),
            bounded: self.bounded,
            windowing: Windowing::default(),
            tag: None,
        };
        let (name, source): (&str, Arc<dyn SourceFn>) = match self.history.take() {
            Some((history, switch_at)) => {
                self.history = Some((history.clone(), switch_at));
                let live = Arc::new(self);
                ("ReadHistoryThenKafka", Arc::new(HybridSource::<T, Read<T>>::new(history, live, switch_at, Read::Ok)))
            }
            None => ("ReadKafka", Arc::new(self)),
        };
        let node = p.add_step(name, NodeKind::Source(source), vec![], vec![info]);
        let read: PCollection<Read<T>> = PCollection::from_port(p, PortRef { node, port: 0 });
        let dead = TupleTag::<DeadLetter>::new("dead-letter");
        let (good, tagged) = read.par_do_with_outputs(Split { dead: dead.clone(), _t: PhantomData }, &[&dead]);
        (good.named("Decoded"), tagged.get(&dead))
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", self.group_id.clone().unwrap_or_else(|| format!("riffle-{}", self.topic)))
            .set("enable.auto.commit", "false")
            // Bounded mode learns from the end-of-partition event that a partition has
            // nothing more below its end: the last offsets before the end may hold no
            // record a consumer sees (a transaction's commit marker, a compacted-away
            // record), so waiting for a record at `end - 1` could wait forever.
            .set("enable.partition.eof", if self.bounded { "true" } else { "false" })
            .set("auto.offset.reset", "earliest")
            .set("socket.connection.setup.timeout.ms", "5000")
            // A broker that is gone keeps reporting errors at least this often, inside
            // BROKER_LOSS_TIMEOUT (the default backoff grows to 10 s).
            .set("reconnect.backoff.max.ms", "2000")
            .set("log_level", "3");
        for (k, v) in &self.settings {
            c.set(k, v);
        }
        c
    }

    fn consumer(&self) -> Result<BaseConsumer> {
        self.config().create().map_err(|e| Error::Client { topic: self.topic.clone(), reason: e.to_string() })
    }

    /// The topic's partitions, or a clear error when the brokers or the topic are missing.
    fn partitions(&self, consumer: &BaseConsumer) -> Result<Vec<i32>> {
        let md = consumer.fetch_metadata(Some(&self.topic), CONNECT_TIMEOUT).map_err(|e| Error::Unreachable {
            brokers: self.brokers.clone(),
            timeout_ms: CONNECT_TIMEOUT.as_millis() as u64,
            reason: e.to_string(),
        })?;
        let topic = md.topics().iter().find(|t| t.name() == self.topic);
        match topic {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                ps.sort_unstable();
                Ok(ps)
            }
            _ => Err(Error::NoTopic { topic: self.topic.clone(), brokers: self.brokers.clone() }),
        }
    }

    /// The offset to start `partition` at (its earliest when it was `added` to the topic
    /// while the job ran), its end now, and (bounded) the offset to stop before.
    fn range(&self, consumer: &BaseConsumer, partition: i32, added: bool) -> Result<(i64, i64, Option<i64>)> {
        let read_err = |e: rdkafka::error::KafkaError| Error::Read {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            reason: e.to_string(),
        };
        let (low, high) = consumer.fetch_watermarks(&self.topic, partition, CONNECT_TIMEOUT).map_err(read_err)?;
        // A hybrid read starts at the switch point less the out-of-orderness.
        let start_at = match &self.history {
            Some((_, t)) => StartAt::Timestamp(t.millis().saturating_sub(self.strategy.max_delay_ms)),
            None if added => StartAt::Earliest,
            None => self.start,
        };
        let start = match start_at {
            StartAt::Earliest => low,
            StartAt::Latest => high,
            StartAt::Timestamp(ms) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&self.topic, partition, Offset::Offset(ms)).map_err(read_err)?;
                let found = consumer.offsets_for_times(tpl, CONNECT_TIMEOUT).map_err(read_err)?;
                match found.find_partition(&self.topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => high,
                }
            }
            StartAt::Committed => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&self.topic, partition);
                let found = consumer.committed_offsets(tpl, CONNECT_TIMEOUT).map_err(read_err)?;
                match found.find_partition(&self.topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => low,
                }
            }
        };
        Ok((start.max(low), high, self.bounded.then_some(high)))
    }
}

impl<T: Data> SourceFn for ReadKafka<T> {
    fn is_bounded(&self) -> bool {
        self.bounded
    }

    fn check(&self) -> riffle_engine::Result<()> {
        let consumer = self.consumer()?;
        let partitions = self.partitions(&consumer)?;
        self.check_no_gap(&consumer, &partitions)?;
        Ok(())
    }

    fn open(&self, ctx: &StepContext) -> riffle_engine::Result<Box<dyn SourceReader>> {
        Ok(Box::new(self.open_at(ctx, &[])?))
    }

    fn checkpoints(&self) -> bool {
        true
    }

    /// Each partition of this worker's share (dealt as `open` deals them) that a saved
    /// position names starts at the offset after the last record returned, with its
    /// watermark estimator as it was and, bounded, the end it had; the others start as
    /// `open` starts them.
    fn open_from(&self, ctx: &StepContext, saved: &[Vec<u8>]) -> riffle_engine::Result<Box<dyn SourceReader>> {
        let saved: Vec<KafkaPosition> = riffle_engine::position::decode_all(&ctx.name, POSITION_VERSION, saved)?;
        let saved: Vec<PartitionPosition> = saved.into_iter().flat_map(|p| p.partitions).collect();
        Ok(Box::new(self.open_at(ctx, &saved)?))
    }
}

impl<T: Data> ReadKafka<T> {
    /// This worker's reader, its partitions that `saved` names resumed from there.
    fn open_at(&self, ctx: &StepContext, saved: &[PartitionPosition]) -> Result<KafkaReader<T>> {
        let consumer = self.consumer()?;
        let (index, peers) = (ctx.worker.index, ctx.worker.peers);
        let mine: Vec<i32> = self.partitions(&consumer)?.into_iter().filter(|p| *p as usize % peers == index).collect();
        let (resumed, fresh): (Vec<i32>, Vec<i32>) =
            mine.iter().partition(|p| saved.iter().any(|s| s.partition == **p));
        // A live read resumed from a checkpoint saved every partition its readers had: one
        // that no saved position names was added to the topic since, and is read from its
        // earliest offset, as one picked up while running is. (A hybrid read's live
        // positions may come from some workers only: its unnamed partitions start at the
        // switch, which loses nothing either.)
        let added_since = !saved.is_empty() && !self.bounded && self.history.is_none();
        // A hybrid read opens the topic when its history is read, maybe hours after the
        // start: retention may have deleted the switch point since. A resumed partition
        // must still hold the offset it resumes at.
        self.check_no_gap(&consumer, &fresh)?;
        let mut tpl = TopicPartitionList::new();
        let mut partitions = Vec::new();
        for p in mine {
            let resume = saved.iter().find(|s| s.partition == p);
            let (start, high, end) = match resume {
                Some(s) => self.resumed_range(&consumer, s)?,
                None => self.range(&consumer, p, added_since)?,
            };
            // The idle clock starts at assignment, not at the epoch: a partition is idle
            // when it has read nothing for the timeout since it was assigned.
            let estimator = self.strategy.estimator();
            let mut estimator = resume.map_or(estimator, |s| estimator.restored(s.estimator));
            estimator.active(ctx.clock.now());
            let partition = Partition::new(p, start, end, high, estimator);
            if !partition.done {
                tpl.add_partition_offset(&self.topic, p, Offset::Offset(start))
                    .map_err(|e| Error::Client { topic: self.topic.clone(), reason: e.to_string() })?;
            }
            partitions.push(partition);
        }
        consumer.assign(&tpl).map_err(|e| Error::Client { topic: self.topic.clone(), reason: e.to_string() })?;
        let watcher = match self.bounded {
            true => None,
            false => Some(EndWatcher::start(
                self.consumer()?,
                &self.topic,
                (index, peers),
                partitions.iter().map(|p| p.id).collect(),
            )?),
        };
        tracing::info!(
            topic = %self.topic,
            worker = index,
            resumed = ?resumed,
            partitions = ?partitions.iter().map(|p| (p.id, p.next)).collect::<Vec<_>>(),
            "reading (partition, from offset)"
        );
        Ok(KafkaReader {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            consumer,
            partitions,
            ready: VecDeque::new(),
            decode: self.decode.clone(),
            event_time: self.event_time.clone(),
            clock: ctx.clock.clone(),
            strategy: self.strategy,
            bounded: self.bounded,
            errors: None,
            watcher,
            committed: self.commit.then(std::time::Instant::now),
            commit_checkpoints: self.commit || self.group_id.is_some(),
            checkpointed: false,
        })
    }

    /// Where a resumed partition starts, its end now, and (bounded) where it stops: the
    /// saved offset, which the partition must still hold (else records were deleted
    /// unread), and the saved end, so that a bounded read still ends where it would have.
    fn resumed_range(&self, consumer: &BaseConsumer, saved: &PartitionPosition) -> Result<(i64, i64, Option<i64>)> {
        let p = saved.partition;
        let (low, high) = consumer.fetch_watermarks(&self.topic, p, CONNECT_TIMEOUT).map_err(|e| Error::Read {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            reason: e.to_string(),
        })?;
        if saved.next < low {
            return Err(Error::DeletedUnread {
                topic: self.topic.clone(),
                partition: p,
                offset: saved.next,
                earliest: low,
            });
        }
        let end = match self.bounded {
            true => Some(saved.end.unwrap_or(high)),
            false => None,
        };
        Ok((saved.next, high, end))
    }
}

/// Format version of [`KafkaPosition`].
const POSITION_VERSION: u8 = 1;

/// A reader's position: per partition it was dealt, where it resumes.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KafkaPosition {
    partitions: Vec<PartitionPosition>,
}

/// Where one partition resumes: saved by partition, so that it resumes on whichever
/// worker is dealt it at the new count.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PartitionPosition {
    partition: i32,
    /// The offset after the last record returned (records fetched but not returned are
    /// read again).
    next: i64,
    /// Bounded mode: the offset the read stops before, fixed when the job first started.
    end: Option<i64>,
    /// The partition's watermark estimator, which has seen the records returned.
    estimator: riffle_engine::EstimatorState,
}

/// What the source emits: a decoded element, or why a record was not.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Read<T> {
    Ok(T),
    Dead(DeadLetter),
}

/// Splits the source's output into elements and dead letters.
struct Split<T> {
    dead: TupleTag<DeadLetter>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Split<T> {
    fn clone(&self) -> Self {
        Split { dead: self.dead.clone(), _t: PhantomData }
    }
}

impl<T: Data> DoFn for Split<T> {
    type In = Read<T>;
    type Out = T;
    fn process(&mut self, r: &Read<T>, ctx: &mut ProcessContext<'_, T>) {
        match r {
            Read::Ok(v) => ctx.output(v.clone()),
            Read::Dead(d) => ctx.output_to(&self.dead, d.clone()),
        }
    }
}

mod reader;
mod switch;

use reader::{EndWatcher, KafkaReader, Partition};

#[cfg(test)]
mod checkpoint_tests;
#[cfg(test)]
mod discovery_tests;
pub use switch::SwitchAt;
