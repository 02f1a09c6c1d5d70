//! A partition picked up while running, on a worker that had none, against a real broker
//! (noida-db: tansu cannot add partitions). Bug class caught: a new partition whose
//! watermark starts at the beginning of time and drags its worker's back (a worker with
//! no partition follows the clock, so its watermark may be far ahead of the new
//! partition's records).

use std::sync::Arc;
use std::time::Duration;

use riffle_engine::position::testing::take;
use riffle_engine::{Clock, ManualClock, ProcessingTime, WatermarkStrategy};

use super::*;
use crate::testing::Noida;

#[test]
fn a_partition_picked_up_by_a_worker_with_none_does_not_move_its_watermark_back() {
    let broker = Noida::start();
    broker.create_topic("late-partition", 1);
    let clock = Arc::new(ManualClock::new());
    clock.advance_to(ProcessingTime::from_millis(60_000));
    let source = ReadKafka::raw("late-partition")
        .brokers(&broker.brokers())
        .watermarks(WatermarkStrategy::bounded_out_of_orderness(1_000));
    let ctx = StepContext {
        name: "ReadKafka".into(),
        worker: riffle_engine::runtime::WorkerInfo { index: 1, peers: 2 },
        clock: clock.clone(),
    };
    // Worker 1 of 2 has no partition of 1: it follows the clock, less the bound.
    let mut reader = source.open(&ctx).unwrap();
    let followed = reader.watermark();
    assert_eq!(followed, Watermark(EventTime::from_millis(59_000)));
    broker.add_partitions("late-partition", 2);
    // Partition 1 is dealt to worker 1: a record from long before its watermark, and one
    // after it.
    broker.produce(
        "late-partition",
        &[(1, "k".into(), b"old".to_vec(), 10_000), (1, "k".into(), b"new".to_vec(), 70_000)],
    );
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while got.len() < 2 && std::time::Instant::now() < deadline {
        let (taken, _) = take::<Read<KafkaRecord>>(reader.as_mut(), 1, 1, Duration::from_millis(200)).unwrap();
        // Never behind what the worker had emitted, before or after the pick-up.
        assert!(reader.watermark() >= followed, "the watermark went back to {:?}", reader.watermark());
        for (r, t, w) in taken {
            assert!(w >= followed, "a record of the new partition went out at {w:?}, behind {followed:?}");
            let Read::Ok(r) = r else { panic!("a dead letter") };
            got.push((r.partition, r.offset, t.millis()));
        }
    }
    assert_eq!(got, [(1, 0, 10_000), (1, 1, 70_000)], "read from its earliest offset");
    // From its own records on, the partition moves the worker's watermark.
    assert_eq!(reader.watermark(), Watermark(EventTime::from_millis(69_000)));
}
