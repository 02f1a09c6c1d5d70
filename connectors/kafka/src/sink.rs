//! The sink: one producer per worker, records keyed and timestamped from the elements.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use riffle_engine::runtime::{SinkFn, SinkWriter, StepContext};
use riffle_engine::{Batch, Data, EventTime, NodeKind, PCollection};
use serde::Serialize;

use crate::error::Error;

/// How long the end of a bounded job waits for the broker to acknowledge what was sent.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// An element's record key.
type KeyFn<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Writes a collection to a Kafka-protocol topic: each element a record whose value is the
/// element as JSON, whose key is `key(element)` (so records of one key go to one
/// partition, by the producer's default partitioner), and whose timestamp is the
/// element's timestamp (for a grouping's output, the pane's).
///
/// Each worker has its own producer; what it sent is flushed when the input ends, and a
/// record the broker does not acknowledge fails the job with the topic and the reason.
/// (One producer per worker is the shape a transaction per epoch needs, for exactly-once
/// output once checkpoints land.)
pub struct WriteKafka<T> {
    topic: String,
    brokers: String,
    key: Option<KeyFn<T>>,
}

impl<T: Data + Serialize> WriteKafka<T> {
    /// Writes to `topic`.
    pub fn topic(topic: &str) -> Self {
        WriteKafka { topic: topic.to_string(), brokers: "127.0.0.1:9092".into(), key: None }
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

    /// Adds the sink to the pipeline of `input`.
    pub fn write(self, input: &PCollection<T>) {
        let p = input.pipeline();
        p.add_step("WriteKafka", NodeKind::Sink(Arc::new(self)), vec![input.port()], vec![]);
    }
}

impl<T: Data + Serialize> SinkFn for WriteKafka<T> {
    fn gathers(&self) -> bool {
        false
    }

    fn open(&self, _ctx: &StepContext) -> riffle_engine::Result<Box<dyn SinkWriter>> {
        let failed = Arc::new(Mutex::new(None));
        let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("message.timeout.ms", "30000")
            .set("log_level", "3")
            .create_with_context(Deliveries { failed: failed.clone() })
            .map_err(|e| Error::Client { topic: self.topic.clone(), reason: e.to_string() })?;
        Ok(Box::new(KafkaWriter { topic: self.topic.clone(), key: self.key.clone(), producer, failed }))
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
            let value = serde_json::to_vec(&wv.value).map_err(|e| Error::Delivery {
                topic: self.topic.clone(),
                reason: format!("an element does not encode as JSON: {e}"),
            })?;
            let key = self.key.as_ref().map(|f| f(&wv.value));
            let ts = (wv.timestamp > EventTime::MIN && wv.timestamp < EventTime::MAX).then(|| wv.timestamp.millis());
            loop {
                let mut record = BaseRecord::to(&self.topic).payload(&value);
                if let Some(k) = &key {
                    record = record.key(k);
                }
                if let Some(t) = ts {
                    record = record.timestamp(t);
                }
                match self.producer.send(record) {
                    Ok(()) => break,
                    // The local queue is full: let the producer's thread drain it.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => {
                        return Err(Error::Delivery { topic: self.topic.clone(), reason: e.to_string() }.into());
                    }
                }
            }
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
