//! The source across a checkpoint, against a real broker (tansu): readers at one worker
//! count read part of a topic, save their positions, and readers at another count resume
//! from them. Bug classes caught: a record returned twice or never (a partition resumed
//! at the fetched offset rather than the returned one, or at its start, or by the wrong
//! worker); a partition's watermark that goes back across the restore; a bounded read that
//! takes in records written after the job first started; a partition picked up while
//! running that the position leaves out (read again from its start on resume), or one
//! added while the job was down that a resume starts at its end (its records lost).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use riffle_engine::position::testing::{AcrossCheckpoint, across_checkpoint};
use riffle_engine::{ManualClock, WatermarkStrategy};

use super::*;
use crate::testing::{Noida, Tansu};

const PARTITIONS: i32 = 4;
const PER_PARTITION: i64 = 30;
const PATIENCE: Duration = Duration::from_secs(3);

/// The source's step as worker `index` of `peers` sees it, on `clock`.
fn step_context(clock: &Arc<ManualClock>, index: usize, peers: usize) -> StepContext {
    StepContext {
        name: "ReadKafka".into(),
        worker: riffle_engine::runtime::WorkerInfo { index, peers },
        clock: clock.clone(),
    }
}

/// Partition `p`'s record `i`: at time `1_000_000 + i * 150 + p`, in order within its
/// partition.
fn produce(broker: &Tansu, topic: &str, from: i64, to: i64) {
    let records: Vec<_> = (0..PARTITIONS)
        .flat_map(|p| {
            (from..to)
                .map(move |i| (p, format!("k{i}"), format!("{p}-{i}").into_bytes(), 1_000_000 + i * 150 + i64::from(p)))
        })
        .collect();
    broker.produce(topic, &records);
}

/// (partition, offset) of every record read, before and after, sorted.
fn offsets(run: &AcrossCheckpoint<Read<KafkaRecord>>) -> Vec<(i32, i64)> {
    let mut got: Vec<_> = run
        .union()
        .into_iter()
        .map(|r| match r {
            Read::Ok(r) => (r.partition, r.offset),
            Read::Dead(d) => panic!("a dead letter: {d:?}"),
        })
        .collect();
    got.sort();
    got
}

/// Every partition's first batch after the restore goes out at no lower a watermark than
/// its records before had reached (in order, no delay: the latest time read, in steps).
fn assert_watermarks_carried(run: &AcrossCheckpoint<Read<KafkaRecord>>, case: &str) {
    let mut seen: BTreeMap<i32, i64> = BTreeMap::new();
    for (r, t, _) in run.before.iter().flatten() {
        let Read::Ok(r) = r else { continue };
        let max = seen.entry(r.partition).or_insert(i64::MIN);
        *max = (*max).max(t.millis());
    }
    for (p, max) in seen {
        let first_after = run.after.iter().flatten().find(|(r, _, _)| matches!(r, Read::Ok(r) if r.partition == p));
        if let Some((_, _, w)) = first_after {
            assert!(
                w.0.millis() >= step(Watermark(EventTime::from_millis(max))).0.millis(),
                "{case}: partition {p} resumed at {w:?}, had read {max} ms"
            );
        }
    }
}

#[test]
fn a_bounded_read_resumes_each_partition_where_it_was_at_any_worker_count() {
    let broker = Tansu::start();
    for (before, after) in [(2, 1), (2, 3), (1, 4)] {
        let topic = format!("ckpt-bounded-{before}-{after}");
        broker.create_topic(&topic, PARTITIONS as u32);
        produce(&broker, &topic, 0, PER_PARTITION);
        let source = ReadKafka::raw(&topic).brokers(&broker.brokers()).bounded(true);
        assert!(source.checkpoints());
        // Records written after the checkpoint are past the end the job started with.
        let run = {
            let clock = Arc::new(ManualClock::new());
            let ctx = |index, peers| step_context(&clock, index, peers);
            let mut readers: Vec<_> = (0..before).map(|w| source.open(&ctx(w, before)).unwrap()).collect();
            let mut first = Vec::new();
            for r in &mut readers {
                first.push(riffle_engine::position::testing::take(r.as_mut(), 25, 64, PATIENCE).unwrap().0);
            }
            let saved_watermarks = readers.iter().map(|r| r.watermark()).collect();
            let positions: Vec<_> = readers.iter().map(|r| r.position().unwrap()).collect();
            drop(readers);
            produce(&broker, &topic, PER_PARTITION, PER_PARTITION + 5);
            let mut readers: Vec<_> =
                (0..after).map(|w| source.open_from(&ctx(w, after), &positions).unwrap()).collect();
            let restored_watermarks = readers.iter().map(|r| r.watermark()).collect();
            let mut rest = Vec::new();
            for r in &mut readers {
                let (taken, done) = riffle_engine::position::testing::take_all(r.as_mut(), PATIENCE).unwrap();
                assert!(done, "a bounded reader ends");
                rest.push(taken);
            }
            AcrossCheckpoint { before: first, saved_watermarks, positions, restored_watermarks, after: rest }
        };
        let case = format!("{before} -> {after}");
        let want: Vec<(i32, i64)> = (0..PARTITIONS).flat_map(|p| (0..PER_PARTITION).map(move |o| (p, o))).collect();
        assert!(run.before.iter().all(|b| !b.is_empty()), "{case}: every reader read some before");
        assert_eq!(offsets(&run), want, "{case}");
        assert_watermarks_carried(&run, &case);
    }
}

#[test]
fn a_live_read_resumes_each_partition_with_its_watermark_at_any_worker_count() {
    let broker = Tansu::start();
    for (before, after) in [(2, 3), (3, 1)] {
        let topic = format!("ckpt-live-{before}-{after}");
        broker.create_topic(&topic, PARTITIONS as u32);
        produce(&broker, &topic, 0, PER_PARTITION);
        let source = ReadKafka::raw(&topic)
            .brokers(&broker.brokers())
            .watermarks(WatermarkStrategy::bounded_out_of_orderness(0));
        let run = across_checkpoint::<Read<KafkaRecord>>(
            &source,
            Arc::new(ManualClock::new()),
            (before, after),
            20,
            PATIENCE,
        )
        .unwrap();
        let case = format!("{before} -> {after}");
        let want: Vec<(i32, i64)> = (0..PARTITIONS).flat_map(|p| (0..PER_PARTITION).map(move |o| (p, o))).collect();
        assert_eq!(offsets(&run), want, "{case}");
        assert_watermarks_carried(&run, &case);
        let least = |w: &[Watermark]| w.iter().min().copied();
        assert!(least(&run.restored_watermarks) >= least(&run.saved_watermarks), "{case}: the watermark went back");
    }
}

/// Readers of a live read (starting at the latest offsets) read a topic of 2 partitions;
/// it grows to 4 while they run, and they read part of each added partition before their
/// positions are saved. It grows to 6 while they are down. Readers at another count
/// resume from the positions: every record of every partition is read exactly once (the
/// picked-up partitions from where they were, the ones added while down from their
/// earliest offset, not their end). noida-db: tansu cannot add partitions.
#[test]
fn a_live_read_saves_the_partitions_it_picked_up_and_reads_those_added_while_down() {
    let broker = Noida::start();
    for (before, after) in [(2, 3), (2, 1)] {
        let topic = format!("ckpt-added-{before}-{after}");
        broker.create_topic(&topic, 2);
        let write = |partitions: std::ops::Range<i32>, from: i64, to: i64| {
            let records: Vec<_> = partitions
                .flat_map(|p| (from..to).map(move |i| (p, format!("k{i}"), format!("{p}-{i}").into_bytes(), 1_000 + i)))
                .collect();
            broker.produce(&topic, &records);
        };
        let source = ReadKafka::raw(&topic)
            .brokers(&broker.brokers())
            .start_at(StartAt::Latest)
            .watermarks(WatermarkStrategy::bounded_out_of_orderness(0));
        let clock = Arc::new(ManualClock::new());
        let ctx = |index, peers| step_context(&clock, index, peers);
        let mut readers: Vec<_> = (0..before).map(|w| source.open(&ctx(w, before)).unwrap()).collect();
        write(0..2, 0, PER_PARTITION);
        broker.add_partitions(&topic, 4);
        write(2..4, 0, PER_PARTITION);
        // Each reader reads, a few records a poll, until it has some of its added
        // partition (2 on worker 0, 3 on worker 1), and stops there.
        let mut first = Vec::new();
        for (w, r) in readers.iter_mut().enumerate() {
            let added = 2 + w as i32;
            let mut taken: riffle_engine::position::testing::Taken<Read<KafkaRecord>> = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            let has_added = |t: &[(Read<KafkaRecord>, EventTime, Watermark)]| {
                t.iter().filter(|(r, _, _)| matches!(r, Read::Ok(r) if r.partition == added)).count() >= 5
            };
            while !has_added(&taken) && std::time::Instant::now() < deadline {
                taken.extend(riffle_engine::position::testing::take(r.as_mut(), 5, 5, PATIENCE).unwrap().0);
            }
            assert!(has_added(&taken), "{before} -> {after}: worker {w} did not pick up partition {added}");
            first.push(taken);
        }
        let saved_watermarks = readers.iter().map(|r| r.watermark()).collect();
        let positions: Vec<_> = readers.iter().map(|r| r.position().unwrap()).collect();
        drop(readers);
        broker.add_partitions(&topic, 6);
        write(0..6, PER_PARTITION, PER_PARTITION + 5);
        let mut readers: Vec<_> = (0..after).map(|w| source.open_from(&ctx(w, after), &positions).unwrap()).collect();
        let restored_watermarks = readers.iter().map(|r| r.watermark()).collect();
        let rest = readers
            .iter_mut()
            .map(|r| riffle_engine::position::testing::take_all(r.as_mut(), PATIENCE).unwrap().0)
            .collect();
        let run = AcrossCheckpoint { before: first, saved_watermarks, positions, restored_watermarks, after: rest };
        let case = format!("{before} -> {after}");
        let want: Vec<(i32, i64)> =
            (0..6).flat_map(|p| (0..if p < 4 { PER_PARTITION + 5 } else { 5 }).map(move |o| (p, o))).collect();
        assert_eq!(offsets(&run), want, "{case}");
        assert_watermarks_carried(&run, &case);
    }
}
