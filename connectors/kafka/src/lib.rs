//! Kafka-protocol topics for Riffle, on rdkafka (librdkafka).
//!
//! ```text
//! topic partitions ──> ReadKafka (partition p on worker p % workers, a watermark per
//!                      partition, bounded or live) ──> elements + dead letters
//! collection ──> WriteKafka (a producer per worker; key, JSON value, the pane's timestamp;
//!                or, exactly-once, staged in checkpoints and sent in one transaction each)
//! ```
//!
//! [`ReadKafka`] reads a topic's partitions as splits, each with its own watermark, so a
//! record's lateness depends on its partition alone; in bounded mode it reads to the end
//! each partition had when the job started and then ends, so a topic's history gives the
//! panes of a batch. [`WriteKafka`] writes elements as JSON records, at-least-once, or
//! exactly-once for `read_committed` consumers. Tested against real Kafka-protocol brokers
//! (tansu, and noida-db for transactions) on loopback.

mod error;
mod sink;
mod source;
pub mod testing;

pub use error::{Error, Result};
pub use sink::WriteKafka;
pub use source::{DeadLetter, KafkaRecord, ReadKafka, StartAt, SwitchAt};
