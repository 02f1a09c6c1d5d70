//! The sink: records keyed and timestamped from the elements, written by one producer per
//! worker (at-least-once), or staged in the checkpoints and committed in one transaction
//! per checkpoint (exactly-once, [`WriteKafka::exactly_once`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use riffle_engine::runtime::{SinkFn, SinkWriter, StepContext};
use riffle_engine::{Batch, Data, EventTime, NodeKind, PCollection};
use serde::Serialize;

use crate::error::Error;

/// How long the end of a bounded job waits for the broker to acknowledge what was sent.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a transaction's steps (init, offsets, commit, abort) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// An element's record key.
type KeyFn<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Writes a collection to a Kafka-protocol topic: each element a record whose value is the
/// element as JSON, whose key is `key(element)` (so records of one key go to one
/// partition, by the producer's default partitioner), and whose timestamp is the
/// element's timestamp (for a grouping's output, the pane's).
///
/// By default each worker has its own producer; what it sent is flushed at each checkpoint
/// and when the input ends, and a record the broker does not acknowledge fails the job
/// with the topic and the reason. That is at-least-once: after a crash, what was sent
/// after the last checkpoint is sent again. [`WriteKafka::exactly_once`] makes it
/// exactly-once for consumers that read with `isolation.level=read_committed`.
pub struct WriteKafka<T> {
    topic: String,
    brokers: String,
    key: Option<KeyFn<T>>,
    exactly_once: bool,
    transactional_id: Option<String>,
    /// The committer of exactly-once output, made at its first commit and kept.
    committer: Mutex<Option<Committer>>,
}

impl<T: Data + Serialize> WriteKafka<T> {
    /// Writes to `topic`.
    pub fn topic(topic: &str) -> Self {
        WriteKafka {
            topic: topic.to_string(),
            brokers: "127.0.0.1:9092".into(),
            key: None,
            exactly_once: false,
            transactional_id: None,
            committer: Mutex::new(None),
        }
    }

    /// The bootstrap servers, `host:port[,host:port...]`.
    pub fn brokers(mut self, brokers: &str) -> Self {
        self.brokers = brokers.to_string();
        self
    }

    /// Each record's key; without it, records have no key.
    pub fn key(mut self, f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(f));
        self
    }

    /// Exactly-once output (off by default): records become visible to consumers that
    /// read with `isolation.level=read_committed` once the checkpoint after them is
    /// complete, each exactly once across crashes and resumes; a consumer that reads
    /// uncommitted may see records of a transaction that was aborted, and never sees a
    /// record twice only if it reads committed.
    ///
    /// This is Flink's write-ahead sink. Each writer encodes what it is given and keeps
    /// it; at each checkpoint its records are saved *in the checkpoint*, and once the
    /// checkpoint is complete worker 0 sends every writer's records in one transaction,
    /// with a commit marker: the offset, set to the checkpoint's id, of the consumer group
    /// `<transactional id>-commits` on the topic's partition 0, committed in the same
    /// transaction (`send_offsets_to_transaction`). A commit that finds the marker at the
    /// checkpoint's id or later does nothing, so a resumed run, which commits the
    /// checkpoint it resumes from again, never writes a record twice; a commit that
    /// crashed half-way is aborted by the next committer's `init_transactions` and done
    /// again whole. Records are sent after the checkpoint, not as they come: output lags
    /// by up to a checkpoint interval, a checkpoint holds a copy of the interval's output,
    /// and one process sends all of it.
    ///
    /// A job without checkpoints sends everything in one transaction at its end (and
    /// nothing if it fails). See docs/checkpoints.md, "Exactly-once Kafka output".
    pub fn exactly_once(mut self, on: bool) -> Self {
        self.exactly_once = on;
        self
    }

    /// The `transactional.id` of exactly-once output's committer (default
    /// `riffle-<topic>`), also the name of its commit marker's consumer group (with
    /// `-commits`). It must stay the same across runs that resume one job, and differ
    /// between jobs writing the same topic: a second job with the same id fences the
    /// first, and a fresh job refuses to start on an id an earlier one committed with.
    pub fn transactional_id(mut self, id: &str) -> Self {
        self.transactional_id = Some(id.to_string());
        self
    }

    /// Adds the sink to the pipeline of `input`.
    pub fn write(self, input: &PCollection<T>) {
        let p = input.pipeline();
        p.add_step("WriteKafka", NodeKind::Sink(Arc::new(self)), vec![input.port()], vec![]);
    }

    fn txn_id(&self) -> String {
        self.transactional_id.clone().unwrap_or_else(|| format!("riffle-{}", self.topic))
    }

    /// Runs `f` with the committer, making it first; a failed commit drops it, so the
    /// next one starts a new committer (whose `init_transactions` aborts what is open).
    fn with_committer(&self, f: impl FnOnce(&Committer) -> Result<(), String>) -> riffle_engine::Result<()> {
        let mut held = self.committer.lock().unwrap_or_else(|p| p.into_inner());
        let txn_err =
            |reason: String| Error::Transaction { topic: self.topic.clone(), transactional_id: self.txn_id(), reason };
        if held.is_none() {
            *held = Some(Committer::new(&self.brokers, &self.topic, &self.txn_id()).map_err(txn_err)?);
        }
        let committer = held.as_ref().expect("made above");
        let done = f(committer);
        if let Err(reason) = done {
            // Best effort: a new committer aborts it anyway.
            let _ = committer.producer.abort_transaction(TXN_TIMEOUT);
            *held = None;
            return Err(txn_err(reason).into());
        }
        Ok(())
    }
}

impl<T: Data + Serialize> SinkFn for WriteKafka<T> {
    fn gathers(&self) -> bool {
        false
    }

    /// With exactly-once output, a fresh job refuses a transactional id whose marker an
    /// earlier job moved ([`Error::MarkerInUse`]).
    fn check(&self) -> riffle_engine::Result<()> {
        if !self.exactly_once {
            return Ok(());
        }
        let group = marker_group(&self.txn_id());
        let committed = committed_marker(&self.brokers, &self.topic, &group)
            .map_err(|reason| Error::Client { topic: self.topic.clone(), reason })?;
        match committed {
            Some(checkpoint) => Err(Error::MarkerInUse {
                topic: self.topic.clone(),
                transactional_id: self.txn_id(),
                group,
                checkpoint,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// A resumed job's marker is its own.
    fn check_resuming(&self) -> riffle_engine::Result<()> {
        Ok(())
    }

    fn open(&self, _ctx: &StepContext) -> riffle_engine::Result<Box<dyn SinkWriter>> {
        if self.exactly_once {
            return Ok(Box::new(StagingWriter {
                topic: self.topic.clone(),
                key: self.key.clone(),
                staged: Vec::new(),
            }));
        }
        let failed = Arc::new(Mutex::new(None));
        let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("message.timeout.ms", "30000")
            .set("log_level", "3")
            .create_with_context(Deliveries { failed: failed.clone() })
            .map_err(|e| Error::Client { topic: self.topic.clone(), reason: e.to_string() })?;
        Ok(Box::new(KafkaWriter { topic: self.topic.clone(), key: self.key.clone(), producer, failed }))
    }

    fn commits(&self) -> bool {
        self.exactly_once
    }

    fn commits_at_checkpoints(&self) -> bool {
        self.exactly_once
    }

    /// Sends every writer's records of checkpoint `checkpoint` in one transaction with the
    /// marker, unless the marker says it was committed already.
    fn commit_checkpoint(&self, checkpoint: u64, staged: Vec<Vec<u8>>) -> riffle_engine::Result<()> {
        let records = decode_all(&self.topic, &staged)?;
        if records.is_empty() {
            return Ok(());
        }
        let group = marker_group(&self.txn_id());
        self.with_committer(|c| {
            if c.marker()?.is_some_and(|m| m >= checkpoint as i64) {
                tracing::info!(checkpoint, topic = %self.topic, "checkpoint {checkpoint}'s records were committed before");
                return Ok(());
            }
            c.producer.begin_transaction().map_err(|e| format!("beginning a transaction: {e}"))?;
            c.send(&records)?;
            let mut marker = TopicPartitionList::new();
            marker
                .add_partition_offset(&self.topic, 0, Offset::Offset(checkpoint as i64))
                .map_err(|e| format!("the commit marker: {e}"))?;
            let meta = c.consumer.group_metadata().ok_or_else(|| format!("no group metadata for {group}"))?;
            c.producer
                .send_offsets_to_transaction(&marker, &meta, TXN_TIMEOUT)
                .map_err(|e| format!("adding the commit marker of checkpoint {checkpoint}: {e}"))?;
            c.commit()?;
            tracing::info!(checkpoint, records = records.len(), topic = %self.topic, "committed a checkpoint's records");
            Ok(())
        })
    }

    /// A job without checkpoints: every writer's records in one transaction.
    fn commit(&self, staged: Vec<Vec<u8>>) -> riffle_engine::Result<()> {
        let records = decode_all(&self.topic, &staged)?;
        if records.is_empty() {
            return Ok(());
        }
        self.with_committer(|c| {
            c.producer.begin_transaction().map_err(|e| format!("beginning a transaction: {e}"))?;
            c.send(&records)?;
            c.commit()
        })
    }
}

/// The commit marker's consumer group for a transactional id.
fn marker_group(transactional_id: &str) -> String {
    format!("{transactional_id}-commits")
}

/// The checkpoint the marker of `group` says was committed last on `topic`, if any.
fn committed_marker(brokers: &str, topic: &str, group: &str) -> Result<Option<i64>, String> {
    let consumer = marker_consumer(brokers, group)?;
    read_marker(&consumer, topic)
}

fn marker_consumer(brokers: &str, group: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("log_level", "3")
        .create()
        .map_err(|e| format!("a consumer of group {group}: {e}"))
}

fn read_marker(consumer: &BaseConsumer, topic: &str) -> Result<Option<i64>, String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = consumer.committed_offsets(tpl, TXN_TIMEOUT).map_err(|e| format!("reading the commit marker: {e}"))?;
    Ok(got.elements().first().and_then(|e| match e.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }))
}

/// Worker 0's transactional producer, and a consumer of the marker's group (for its
/// group metadata and the marker).
struct Committer {
    topic: String,
    producer: ThreadedProducer<Deliveries>,
    failed: Arc<Mutex<Option<String>>>,
    consumer: BaseConsumer,
}

impl Committer {
    /// A producer with `transactional_id`, initialized: a transaction an earlier producer
    /// with the id left open (a crashed committer's) is aborted, and that producer fenced.
    fn new(brokers: &str, topic: &str, transactional_id: &str) -> Result<Committer, String> {
        let failed = Arc::new(Mutex::new(None));
        let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("transactional.id", transactional_id)
            .set("message.timeout.ms", "30000")
            .set("log_level", "3")
            .create_with_context(Deliveries { failed: failed.clone() })
            .map_err(|e| e.to_string())?;
        producer.init_transactions(TXN_TIMEOUT).map_err(|e| format!("initializing transactions: {e}"))?;
        let consumer = marker_consumer(brokers, &marker_group(transactional_id))?;
        Ok(Committer { topic: topic.to_string(), producer, failed, consumer })
    }

    fn marker(&self) -> Result<Option<i64>, String> {
        read_marker(&self.consumer, &self.topic)
    }

    fn send(&self, records: &[Record]) -> Result<(), String> {
        for r in records {
            send(&self.producer, &self.topic, r.key.as_deref(), &r.value, r.timestamp).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Commits the open transaction (which waits for every record's delivery).
    fn commit(&self) -> Result<(), String> {
        let done = self.producer.commit_transaction(TXN_TIMEOUT);
        if let Some(reason) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(format!("a record was not delivered: {reason}"));
        }
        done.map_err(|e| format!("committing: {e}"))
    }
}

/// Sends one record, waiting while the producer's local queue is full.
fn send(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    key: Option<&str>,
    value: &[u8],
    timestamp: Option<i64>,
) -> Result<(), KafkaError> {
    loop {
        let mut record = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(t) = timestamp {
            record = record.timestamp(t);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            // The local queue is full: let the producer's thread drain it.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Keeps the first delivery failure, for the writer to report.
struct Deliveries {
    failed: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.to_string());
        }
    }
}

/// What a record is made of: the element's key, its JSON, and its timestamp (none for
/// the ends of time).
fn to_record<T: Serialize>(
    topic: &str,
    key: &Option<KeyFn<T>>,
    value: &T,
    ts: EventTime,
) -> riffle_engine::Result<Record> {
    let json = serde_json::to_vec(value).map_err(|e| Error::Delivery {
        topic: topic.to_string(),
        reason: format!("an element does not encode as JSON: {e}"),
    })?;
    Ok(Record {
        key: key.as_ref().map(|f| f(value)),
        value: json,
        timestamp: (ts > EventTime::MIN && ts < EventTime::MAX).then(|| ts.millis()),
    })
}

/// At-least-once: sends as it goes, flushes at checkpoints and at the end.
struct KafkaWriter<T> {
    topic: String,
    key: Option<KeyFn<T>>,
    producer: ThreadedProducer<Deliveries>,
    failed: Arc<Mutex<Option<String>>>,
}

impl<T> KafkaWriter<T> {
    fn check(&self) -> riffle_engine::Result<()> {
        match self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(reason) => Err(Error::Delivery { topic: self.topic.clone(), reason }.into()),
            None => Ok(()),
        }
    }
}

impl<T: Data + Serialize> SinkWriter for KafkaWriter<T> {
    fn write(&mut self, input: Batch) -> riffle_engine::Result<()> {
        self.check()?;
        let elements = input.try_into_elements::<T>()?;
        for wv in elements.into_iter_windowed() {
            let r = to_record(&self.topic, &self.key, &wv.value, wv.timestamp)?;
            send(&self.producer, &self.topic, r.key.as_deref(), &r.value, r.timestamp)
                .map_err(|e| Error::Delivery { topic: self.topic.clone(), reason: e.to_string() })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> riffle_engine::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> riffle_engine::Result<()> {
        self.producer
            .flush(FLUSH_TIMEOUT)
            .map_err(|e| Error::Delivery { topic: self.topic.clone(), reason: format!("flushing: {e}") })?;
        self.check()
    }
}

/// Exactly-once: encodes what it is given and hands it to the next checkpoint (or, in a
/// job without checkpoints, to the job's commit), sending nothing itself.
struct StagingWriter<T> {
    topic: String,
    key: Option<KeyFn<T>>,
    /// Records since the last checkpoint, encoded ([`encode_record`]) after [`STAGED_FORMAT`].
    staged: Vec<u8>,
}

impl<T: Data + Serialize> SinkWriter for StagingWriter<T> {
    fn write(&mut self, input: Batch) -> riffle_engine::Result<()> {
        let elements = input.try_into_elements::<T>()?;
        for wv in elements.into_iter_windowed() {
            if self.staged.is_empty() {
                self.staged.push(STAGED_FORMAT);
            }
            encode_record(&to_record(&self.topic, &self.key, &wv.value, wv.timestamp)?, &mut self.staged);
        }
        Ok(())
    }

    fn finish(&mut self) -> riffle_engine::Result<()> {
        Ok(())
    }

    fn precommit(&mut self) -> riffle_engine::Result<Vec<u8>> {
        Ok(std::mem::take(&mut self.staged))
    }

    fn staged(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.staged)
    }
}

/// One record to send.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    key: Option<String>,
    value: Vec<u8>,
    timestamp: Option<i64>,
}

/// The version of the staged records' encoding, its first byte (an empty part holds no
/// byte at all). Then each record: a flags byte (1: a key follows, 2: a timestamp
/// follows), the key as a u32 little-endian length and UTF-8 bytes, the timestamp as an
/// i64 little-endian (ms), and the value as a u32 length and its bytes (the element's
/// JSON). Documented in docs/checkpoints.md.
const STAGED_FORMAT: u8 = 1;

fn encode_record(r: &Record, out: &mut Vec<u8>) {
    out.push(u8::from(r.key.is_some()) | (u8::from(r.timestamp.is_some()) << 1));
    if let Some(k) = &r.key {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
    }
    if let Some(t) = r.timestamp {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.value);
}

/// Every record of every writer's part, in part order, each part's in the order written.
fn decode_all(topic: &str, parts: &[Vec<u8>]) -> riffle_engine::Result<Vec<Record>> {
    let mut records = Vec::new();
    for part in parts {
        decode(part, &mut records).map_err(|reason| {
            riffle_engine::Error::Internal(format!(
                "the staged records of Kafka topic {topic:?} in a checkpoint do not decode ({reason}): a checkpoint \
                 written by another version of Riffle, or damaged"
            ))
        })?;
    }
    Ok(records)
}

fn decode(part: &[u8], out: &mut Vec<Record>) -> Result<(), String> {
    let Some((&format, mut rest)) = part.split_first() else { return Ok(()) };
    if format != STAGED_FORMAT {
        return Err(format!("format {format}, this build reads {STAGED_FORMAT}"));
    }
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if rest.len() < n {
            return Err("cut short".into());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn len(rest: &mut &[u8]) -> Result<usize, String> {
        Ok(u32::from_le_bytes(take(rest, 4)?.try_into().expect("4 bytes")) as usize)
    }
    while !rest.is_empty() {
        let flags = take(&mut rest, 1)?[0];
        let key = if flags & 1 != 0 {
            let n = len(&mut rest)?;
            Some(String::from_utf8(take(&mut rest, n)?.to_vec()).map_err(|_| "a key is not UTF-8".to_string())?)
        } else {
            None
        };
        let timestamp = if flags & 2 != 0 {
            Some(i64::from_le_bytes(take(&mut rest, 8)?.try_into().expect("8 bytes")))
        } else {
            None
        };
        let n = len(&mut rest)?;
        let value = take(&mut rest, n)?.to_vec();
        out.push(Record { key, value, timestamp });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_records_decode_as_encoded() {
        let records = vec![
            Record { key: Some("u1".into()), value: br#"{"a":1}"#.to_vec(), timestamp: Some(-5) },
            Record { key: None, value: Vec::new(), timestamp: None },
            Record { key: Some(String::new()), value: b"x".to_vec(), timestamp: None },
        ];
        let mut part = vec![STAGED_FORMAT];
        records.iter().for_each(|r| encode_record(r, &mut part));
        let got = decode_all("t", &[part.clone(), Vec::new(), part.clone()]).unwrap();
        assert_eq!(got, [records.clone(), records].concat());
        let e = decode_all("t", &[part[..part.len() - 1].to_vec()]).unwrap_err().to_string();
        assert!(e.contains("cut short"), "{e}");
        let e = decode_all("t", &[vec![2]]).unwrap_err().to_string();
        assert!(e.contains("format 2"), "{e}");
    }
}
