//! The Kafka connector's error: each variant names the broker or topic and says who must
//! act.

use riffle_engine::Error as EngineError;

/// The result of anything in this crate that can fail.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading or writing a Kafka-protocol topic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The brokers did not answer within the connect timeout.
    #[error(
        "Kafka brokers {brokers} did not answer within {timeout_ms} ms ({reason}); is a broker running there, and is \
         --brokers right?"
    )]
    Unreachable {
        /// The bootstrap servers as given.
        brokers: String,
        /// The timeout waited.
        timeout_ms: u64,
        /// librdkafka's words.
        reason: String,
    },
    /// The topic does not exist on the brokers.
    #[error("topic {topic:?} does not exist on {brokers}; create it first (Riffle does not create topics)")]
    NoTopic {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
    /// The client could not be configured (a bad setting).
    #[error("Kafka client for topic {topic:?}: {reason}")]
    Client {
        /// The topic.
        topic: String,
        /// What librdkafka said.
        reason: String,
    },
    /// A read failed while the job ran (the broker went away, a partition was lost).
    #[error("reading topic {topic:?} from {brokers}: {reason}")]
    Read {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// What librdkafka said.
        reason: String,
    },
    /// A hybrid read's switch point is older than what a partition still holds: events
    /// after the switch may have been deleted by retention.
    #[error(
        "topic {topic:?} partition {partition} no longer holds the switch point{}: {holds}; the events between would \
         be missed. Switch later (--switch-at auto picks the earliest point every partition still holds), with \
         history files that reach it",
        .switch_at_ms.map(|t| format!(" ({t} ms)")).unwrap_or_default()
    )]
    Gap {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The switch point asked for, ms (`None`: the one `auto` was to find).
        switch_at_ms: Option<i64>,
        /// What the partition holds instead.
        holds: String,
    },
    /// A checkpoint resumes a partition at an offset it no longer holds: retention
    /// deleted records the job had not read.
    #[error(
        "topic {topic:?} partition {partition} no longer holds offset {offset}, where the checkpoint resumes it (its \
         earliest is now {earliest}): the records between were deleted before the job read them. Keep records longer \
         than a job may be down, or start the job afresh"
    )]
    DeletedUnread {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset the checkpoint resumes at.
        offset: i64,
        /// The partition's earliest offset now.
        earliest: i64,
    },
    /// Records could not be delivered.
    #[error("writing to topic {topic:?}: {reason}")]
    Delivery {
        /// The topic.
        topic: String,
        /// What librdkafka said about the first record that failed.
        reason: String,
    },
    /// A transaction of exactly-once output failed (the broker went away, the committer was
    /// fenced by another with the same transactional id): nothing of it is visible, and
    /// a resumed run commits it again.
    #[error("committing to topic {topic:?} in a transaction (transactional.id {transactional_id:?}): {reason}")]
    Transaction {
        /// The topic.
        topic: String,
        /// The committer's transactional id.
        transactional_id: String,
        /// What librdkafka said.
        reason: String,
    },
    /// A fresh job found the commit marker of an earlier job with the same transactional id:
    /// its checkpoints, numbered from 1 again, would be taken as committed and skipped.
    #[error(
        "exactly-once output to topic {topic:?}: transactional id {transactional_id:?} was used by an earlier job, \
         which committed up to checkpoint {checkpoint} (consumer group {group:?}); a fresh job with it would skip its \
         own first checkpoints as committed. Give this job its own transactional id (WriteKafka::transactional_id, \
         --transactional-id), resume the earlier job from its checkpoint dir, or delete the consumer group {group:?}"
    )]
    MarkerInUse {
        /// The topic.
        topic: String,
        /// The transactional id.
        transactional_id: String,
        /// The marker's consumer group.
        group: String,
        /// The checkpoint the marker says was committed last.
        checkpoint: i64,
    },
}

impl Error {
    /// Whether the user must fix something (a setting, a missing topic) rather than an
    /// external system being down.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::NoTopic { .. }
                | Error::Client { .. }
                | Error::Gap { .. }
                | Error::DeletedUnread { .. }
                | Error::MarkerInUse { .. }
        )
    }
}

impl From<Error> for EngineError {
    fn from(e: Error) -> Self {
        if e.is_user_error() {
            EngineError::Config(e.to_string())
        } else {
            EngineError::Io { step: "kafka".into(), message: e.to_string(), source: None }
        }
    }
}
