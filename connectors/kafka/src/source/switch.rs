//! Where a read of history then a topic switches over: the point, what each partition
//! still holds, and the gap check.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use riffle_engine::Data;
use riffle_engine::prelude::*;

use crate::error::{Error, Result};

use super::*;

/// Where a read of history then a topic switches over ([`ReadKafka::switch_point`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchAt {
    /// At this event time.
    At(EventTime),
    /// At the earliest time every partition still holds (its earliest retained record's
    /// time plus the out-of-orderness), rounded up to a whole minute.
    Auto,
}

impl<T: Data> ReadKafka<T> {
    /// The event time `at` stands for, asking the brokers for [`SwitchAt::Auto`]: the
    /// earliest time every partition still holds, plus the out-of-orderness, rounded up to
    /// a whole minute (so that processes starting seconds apart agree).
    pub fn switch_point(&self, at: SwitchAt) -> riffle_engine::Result<EventTime> {
        let t = match at {
            SwitchAt::At(t) => t,
            SwitchAt::Auto => {
                let consumer = self.consumer()?;
                let (mut held, mut probe) = (Vec::new(), None);
                for p in self.partitions(&consumer)? {
                    held.push((p, self.earliest_held(&consumer, &mut probe, p)?));
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

    /// What partition `p` still holds. `probe` is the consumer that reads earliest records,
    /// made at the first partition that needs it and reused for the others.
    fn earliest_held(&self, consumer: &BaseConsumer, probe: &mut Option<BaseConsumer>, p: i32) -> Result<Held> {
        let read_err = |e: rdkafka::error::KafkaError| Error::Read {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            reason: e.to_string(),
        };
        let (low, high) = consumer.fetch_watermarks(&self.topic, p, CONNECT_TIMEOUT).map_err(read_err)?;
        if low >= high {
            return Ok(if low <= 0 { Held::Empty } else { Held::Nothing { deleted_before: low } });
        }
        let first = match probe {
            Some(c) => c,
            None => probe.insert(self.consumer()?),
        };
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
    pub(super) fn check_no_gap(&self, consumer: &BaseConsumer, partitions: &[i32]) -> Result<()> {
        let Some((_, switch_at)) = &self.history else { return Ok(()) };
        let from = switch_at.millis().saturating_sub(self.strategy.max_delay_ms);
        let mut probe = None;
        for &p in partitions {
            if let Some(holds) = gap(&self.earliest_held(consumer, &mut probe, p)?, from) {
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
