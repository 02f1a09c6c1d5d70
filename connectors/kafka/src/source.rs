//! The source: a topic's partitions as splits, each with its own watermark.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use riffle_engine::prelude::*;
use riffle_engine::runtime::{SourceFn, SourcePoll, SourceReader, StepContext};
use riffle_engine::transforms::hybrid::HybridSource;
use riffle_engine::{
    Batch, Clock, Data, Elements, NodeKind, OutputInfo, PaneInfo, PortRef, Watermark, WatermarkEstimator, Windowing,
};
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
/// backlog from idleness), and how long it waits for the answer.
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

/// Where a read of history then a topic switches over ([`ReadKafka::switch_point`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchAt {
    /// At this event time.
    At(EventTime),
    /// At the earliest time every partition still holds (its earliest retained record's
    /// time plus the out-of-orderness), rounded up to a whole minute.
    Auto,
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
/// In **bounded** mode each partition is read up to the offset that was its end when the
/// job started, and then the source ends: a topic's history run as a batch, with the
/// panes of the same events read any other way (Flink's `setBounded(latest)`).
///
/// Offsets are not committed: until checkpoints land, a restarted job reads again from
/// its start position.
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
    /// flight when it stopped. Checkpoints will commit offsets with the output instead.
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

    /// The event time `at` stands for, asking the brokers for [`SwitchAt::Auto`]: the
    /// earliest time every partition still holds, plus the out-of-orderness, rounded up to
    /// a whole minute (so that processes starting seconds apart agree).
    pub fn switch_point(&self, at: SwitchAt) -> riffle_engine::Result<EventTime> {
        let t = match at {
            SwitchAt::At(t) => t,
            SwitchAt::Auto => {
                let consumer = self.consumer()?;
                let mut held = Vec::new();
                for p in self.partitions(&consumer)? {
                    held.push((p, self.earliest_held(&consumer, p)?));
                }
                auto_switch(&held, self.strategy.max_delay_ms).map_err(|(partition, holds)| Error::Gap {
                    topic: self.topic.clone(),
                    partition,
                    switch_at_ms: None,
                    holds,
                })?
            }
        };
        tracing::info!(topic = %self.topic, switch_at = t.millis(), "history hands over to the topic");
        Ok(t)
    }

    /// What partition `p` still holds.
    fn earliest_held(&self, consumer: &BaseConsumer, p: i32) -> Result<Held> {
        let read_err = |e: rdkafka::error::KafkaError| Error::Read {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            reason: e.to_string(),
        };
        let (low, high) = consumer.fetch_watermarks(&self.topic, p, CONNECT_TIMEOUT).map_err(read_err)?;
        if low >= high {
            return Ok(if low <= 0 { Held::Empty } else { Held::Nothing { deleted_before: low } });
        }
        let first: BaseConsumer =
            self.config().create().map_err(|e| Error::Client { topic: self.topic.clone(), reason: e.to_string() })?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, p, Offset::Offset(low)).map_err(read_err)?;
        first.assign(&tpl).map_err(read_err)?;
        let deadline = std::time::Instant::now() + CONNECT_TIMEOUT;
        while std::time::Instant::now() < deadline {
            match first.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if m.partition() == p => {
                    return Ok(Held::From { time: self.event_time_of(&m).millis(), deleted_before: low });
                }
                Some(Err(KafkaError::PartitionEOF(_)) | Ok(_)) | None => {}
                Some(Err(e)) => return Err(read_err(e)),
            }
        }
        Err(Error::Read {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            reason: format!("partition {p}: no record at offset {low}, its earliest, within {CONNECT_TIMEOUT:?}"),
        })
    }

    /// A record's event time: the element's, when it decodes and the read has an
    /// event-time function, else the record's timestamp.
    fn event_time_of(&self, m: &BorrowedMessage<'_>) -> EventTime {
        let record_time = m.timestamp().to_millis().map(EventTime::from_millis).unwrap_or(EventTime::MIN);
        match (&self.event_time, (self.decode)(m)) {
            (Some(f), Ok(v)) => f(&v),
            _ => record_time,
        }
    }

    /// A hybrid read: every partition must still hold the switch point (less the
    /// out-of-orderness), or records after it may be gone.
    fn check_no_gap(&self, consumer: &BaseConsumer, partitions: &[i32]) -> Result<()> {
        let Some((_, switch_at)) = &self.history else { return Ok(()) };
        let from = switch_at.millis().saturating_sub(self.strategy.max_delay_ms);
        for &p in partitions {
            if let Some(holds) = gap(&self.earliest_held(consumer, p)?, from) {
                return Err(Error::Gap {
                    topic: self.topic.clone(),
                    partition: p,
                    switch_at_ms: Some(switch_at.millis()),
                    holds,
                });
            }
        }
        Ok(())
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

    /// The offset to start `partition` at, its end now, and (bounded) the offset to stop
    /// before.
    fn range(&self, consumer: &BaseConsumer, partition: i32) -> Result<(i64, i64, Option<i64>)> {
        let read_err = |e: rdkafka::error::KafkaError| Error::Read {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            reason: e.to_string(),
        };
        let (low, high) = consumer.fetch_watermarks(&self.topic, partition, CONNECT_TIMEOUT).map_err(read_err)?;
        // A hybrid read starts at the switch point less the out-of-orderness.
        let start_at = match &self.history {
            Some((_, t)) => StartAt::Timestamp(t.millis().saturating_sub(self.strategy.max_delay_ms)),
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
        let consumer = self.consumer()?;
        let (index, peers) = (ctx.worker.index, ctx.worker.peers);
        let mine: Vec<i32> = self.partitions(&consumer)?.into_iter().filter(|p| *p as usize % peers == index).collect();
        // A hybrid read opens the topic when its history is read, maybe hours after the
        // start: retention may have deleted the switch point since.
        self.check_no_gap(&consumer, &mine)?;
        let mut tpl = TopicPartitionList::new();
        let mut partitions = Vec::new();
        for p in mine {
            let (start, high, end) = self.range(&consumer, p)?;
            let done = end.is_some_and(|end| start >= end);
            if !done {
                tpl.add_partition_offset(&self.topic, p, Offset::Offset(start))
                    .map_err(|e| Error::Client { topic: self.topic.clone(), reason: e.to_string() })?;
            }
            // The idle clock starts at assignment, not at the epoch: a partition is idle
            // when it has read nothing for the timeout since it was assigned.
            let mut estimator = self.strategy.estimator();
            estimator.active(ctx.clock.now());
            partitions.push(Partition {
                id: p,
                end,
                next: start,
                known_end: high,
                done,
                estimator,
                pending: Vec::new(),
                emitted: start,
            });
        }
        consumer.assign(&tpl).map_err(|e| Error::Client { topic: self.topic.clone(), reason: e.to_string() })?;
        let watcher = match self.bounded {
            true => None,
            false => Some(EndWatcher::start(self.consumer()?, &self.topic, partitions.iter().map(|p| p.id).collect())?),
        };
        tracing::info!(
            topic = %self.topic,
            worker = index,
            partitions = ?partitions.iter().map(|p| (p.id, p.next)).collect::<Vec<_>>(),
            "reading (partition, from offset)"
        );
        Ok(Box::new(KafkaReader {
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
        }))
    }
}

/// What a partition still holds ([`ReadKafka::earliest_held`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// Nothing, and nothing was ever deleted: it never had a record.
    Empty,
    /// Records from its earliest one's event time (ms) on; the offsets before
    /// `deleted_before` were deleted (none when it is 0).
    From { time: i64, deleted_before: i64 },
    /// Nothing now: every record before this offset was deleted.
    Nothing { deleted_before: i64 },
}

/// Why a partition that holds `held` cannot give every record from `from` (ms) on, if it
/// cannot. Records deleted from before its earliest one may have been from any time up to
/// it, so a partition that lost records holds `from` only if its earliest record is not
/// after it; one that lost none holds everything it ever had.
fn gap(held: &Held, from: i64) -> Option<String> {
    match *held {
        Held::Empty | Held::From { deleted_before: 0, .. } => None,
        Held::From { time, .. } if time <= from => None,
        Held::From { time, deleted_before } => Some(format!(
            "its earliest record (offset {deleted_before}) is at {time} ms, after the switch less the out-of-orderness \
             ({from} ms), and older records were deleted"
        )),
        Held::Nothing { deleted_before } => Some(format!("no records (offsets before {deleted_before} were deleted)")),
    }
}

/// [`SwitchAt::Auto`]: the least time every partition holds, given what each holds, plus
/// the out-of-orderness, rounded up to a whole minute; `Err((partition, why))` for a
/// partition that holds nothing after deleting records. A topic with no records at all
/// switches at once: the history gives nothing.
fn auto_switch(held: &[(i32, Held)], out_of_orderness_ms: i64) -> std::result::Result<EventTime, (i32, String)> {
    let mut latest_first = None;
    for (p, h) in held {
        match *h {
            Held::Empty => {}
            Held::From { time, .. } => latest_first = latest_first.max(Some(time)),
            Held::Nothing { .. } => return Err((*p, gap(h, i64::MIN).expect("nothing held is a gap"))),
        }
    }
    let Some(first) = latest_first else { return Ok(EventTime::MIN) };
    let t = first.saturating_add(out_of_orderness_ms);
    let minutes = t.div_euclid(60_000).saturating_add(i64::from(t.rem_euclid(60_000) != 0));
    Ok(EventTime::from_millis(minutes.saturating_mul(60_000)))
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

/// One partition of a reader.
struct Partition<T> {
    id: i32,
    /// Bounded mode: the offset to stop before.
    end: Option<i64>,
    /// The offset of the next record to read.
    next: i64,
    /// The partition's end as last fetched from the broker: while `next` is behind it, the
    /// partition has a backlog and is not idle.
    known_end: i64,
    done: bool,
    estimator: WatermarkEstimator,
    /// Records read and not yet emitted, with their event times.
    pending: Vec<(Read<T>, EventTime, i64)>,
    /// The offset after the last record emitted into the dataflow (what a commit stores).
    emitted: i64,
}

struct KafkaReader<T> {
    topic: String,
    brokers: String,
    consumer: BaseConsumer,
    partitions: Vec<Partition<T>>,
    /// Partitions with pending records, in the order they got them.
    ready: VecDeque<usize>,
    decode: DecodeFn<T>,
    event_time: Option<TimeFn<T>>,
    clock: Arc<dyn Clock>,
    strategy: WatermarkStrategy,
    bounded: bool,
    /// The first and the latest read error of the current run of errors.
    errors: Option<(std::time::Instant, std::time::Instant)>,
    /// A live reader's watcher of its partitions' ends.
    watcher: Option<EndWatcher>,
    /// Commit offsets: when they were last committed, if at all.
    committed: Option<std::time::Instant>,
}

impl<T: Data> KafkaReader<T> {
    /// Commits the offset after each partition's last emitted record.
    fn commit(&mut self, mode: CommitMode) -> Result<()> {
        self.committed = Some(std::time::Instant::now());
        let mut tpl = TopicPartitionList::new();
        for p in &self.partitions {
            tpl.add_partition_offset(&self.topic, p.id, Offset::Offset(p.emitted))
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
        if let Some(watcher) = &self.watcher {
            let ends = watcher.ends.lock().unwrap_or_else(|p| p.into_inner());
            for part in &mut self.partitions {
                if let Some(high) = ends.get(&part.id) {
                    part.known_end = *high;
                }
            }
        }
        for part in &mut self.partitions {
            if part.next < part.known_end {
                part.estimator.active(now);
            }
        }
        if self.committed.is_some_and(|at| at.elapsed() >= COMMIT_EVERY) {
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

/// Asks the broker where a live reader's partitions end, every [`END_REFRESH`], on a
/// thread of its own with a client of its own: a round trip per partition must not stall
/// the worker. The thread stops soon after the watcher is dropped.
struct EndWatcher {
    ends: Arc<std::sync::Mutex<std::collections::HashMap<i32, i64>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EndWatcher {
    fn start(client: BaseConsumer, topic: &str, partitions: Vec<i32>) -> Result<Self> {
        let ends = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ends_topic = topic.to_string();
        let (found, stopped, topic) = (ends.clone(), stop.clone(), topic.to_string());
        std::thread::Builder::new()
            .name(format!("riffle-kafka-ends-{topic}"))
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    for &p in &partitions {
                        if let Ok((_, high)) = client.fetch_watermarks(&topic, p, END_FETCH_TIMEOUT) {
                            found.lock().unwrap_or_else(|e| e.into_inner()).insert(p, high);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_holds_the_switch_unless_it_lost_records_from_after_it() {
        let from = 10_000;
        assert_eq!(gap(&Held::Empty, from), None, "never had a record");
        assert_eq!(gap(&Held::From { time: 50_000, deleted_before: 0 }, from), None, "lost nothing");
        assert_eq!(gap(&Held::From { time: 10_000, deleted_before: 7 }, from), None, "holds the point itself");
        let lost = gap(&Held::From { time: 10_001, deleted_before: 7 }, from).expect("a gap");
        assert!(lost.contains("offset 7") && lost.contains("10001 ms") && lost.contains("10000 ms"), "{lost}");
        let gone = gap(&Held::Nothing { deleted_before: 9 }, from).expect("a gap");
        assert!(gone.contains("before 9"), "{gone}");
    }

    #[test]
    fn auto_switches_at_the_latest_first_record_plus_the_out_of_orderness_on_a_minute() {
        let held = [
            (0, Held::From { time: 120_000, deleted_before: 0 }),
            (1, Held::Empty),
            (2, Held::From { time: 61_000, deleted_before: 4 }),
        ];
        assert_eq!(auto_switch(&held, 5_000), Ok(EventTime::from_millis(180_000)), "125 s, up to 3 min");
        assert_eq!(auto_switch(&held, 0), Ok(EventTime::from_millis(120_000)), "on a minute already");
        assert_eq!(auto_switch(&[(0, Held::Empty)], 5_000), Ok(EventTime::MIN), "an empty topic: no history");
        let refused = auto_switch(&[(0, Held::Empty), (3, Held::Nothing { deleted_before: 2 })], 0);
        assert!(matches!(refused, Err((3, _))), "{refused:?}");
        // Whatever auto picks, no partition has a gap there.
        let t = auto_switch(&held, 5_000).unwrap().millis();
        assert!(held.iter().all(|(_, h)| gap(h, t - 5_000).is_none()));
    }
}
