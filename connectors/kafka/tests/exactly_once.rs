//! Exactly-once output (`WriteKafka::exactly_once`) against a real Kafka-protocol broker
//! that honours transactions: noida-db (tansu does not hide aborted records from
//! read-committed consumers, so it cannot show exactly-once).
//!
//! Bug classes caught: records visible before their checkpoint is complete; a checkpoint
//! committed again (as a resumed run does) writing its records twice; a committer that
//! crashed mid-transaction leaving records visible, or the records of its checkpoint lost
//! or doubled when committed again; a job that fails and resumes from its checkpoint
//! writing a pane twice or never; a fresh job silently reusing another job's marker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use riffle_engine::prelude::*;
use riffle_engine::runtime::{SinkFn, SinkWriter, StepContext, WorkerInfo};
use riffle_engine::{Batch, Elements, PaneInfo};
use riffle_kafka::WriteKafka;
use riffle_kafka::testing::Noida;
use riffle_timely::RunOptions;

/// Every record of `topic`'s partitions as (key, value, timestamp), read from the start
/// with `isolation` (`read_committed` or `read_uncommitted`) until nothing came for 2 s.
fn read_all(brokers: &str, topic: &str, partitions: i32, isolation: &str) -> Vec<(String, String, i64)> {
    let mut got = riffle_kafka::testing::read_topic(brokers, topic, partitions, isolation, Duration::from_secs(2));
    got.sort();
    got
}

fn sink(brokers: &str, topic: &str) -> WriteKafka<(String, i64)> {
    WriteKafka::topic(topic).brokers(brokers).key(|v: &(String, i64)| v.0.clone()).exactly_once(true)
}

fn open(sink: &WriteKafka<(String, i64)>, worker: usize) -> Box<dyn SinkWriter> {
    let ctx = StepContext {
        name: "WriteKafka".into(),
        worker: WorkerInfo { index: worker, peers: 2 },
        clock: Arc::new(riffle_engine::SystemClock),
    };
    sink.open(&ctx).unwrap()
}

/// `n` elements `("<tag>-i", i)` at timestamp `ts`.
fn rows(tag: &str, n: i64, ts: i64) -> Batch {
    Batch::new(Elements::uniform(
        (0..n).map(|i| (format!("{tag}-{i}"), i)).collect(),
        EventTime::from_millis(ts),
        Window::Global,
        PaneInfo::NO_FIRING,
    ))
}

/// The records `rows(tag, n, ts)` gives, sorted as `read_all` returns them.
fn records(tag: &str, n: i64, ts: i64) -> Vec<(String, String, i64)> {
    let mut r: Vec<_> = (0..n).map(|i| (format!("{tag}-{i}"), format!("[\"{tag}-{i}\",{i}]"), ts)).collect();
    r.sort();
    r
}

fn sorted(mut v: Vec<(String, String, i64)>) -> Vec<(String, String, i64)> {
    v.sort();
    v
}

#[test]
fn records_are_visible_once_their_checkpoint_commits_and_a_second_commit_writes_nothing() {
    let broker = Noida::start();
    let (brokers, topic) = (broker.brokers(), "eos-visible");
    broker.create_topic(topic, 2);
    let sink = sink(&brokers, topic);
    sink.check().expect("a fresh transactional id");
    let mut writers = [open(&sink, 0), open(&sink, 1)];
    writers[0].write(rows("a", 30, 1_000)).unwrap();
    writers[1].write(rows("b", 20, 2_000)).unwrap();
    let c1: Vec<Vec<u8>> = writers.iter_mut().map(|w| w.precommit().unwrap()).collect();
    // Staged in the checkpoint, not sent: no consumer sees anything yet.
    assert!(read_all(&brokers, topic, 2, "read_uncommitted").is_empty(), "records sent before the commit");

    sink.commit_checkpoint(1, c1.clone()).unwrap();
    let want1 = sorted([records("a", 30, 1_000), records("b", 20, 2_000)].concat());
    assert_eq!(read_all(&brokers, topic, 2, "read_committed"), want1, "checkpoint 1 committed");

    // A resumed run commits the checkpoint it resumes from again: the marker says it is done.
    sink.commit_checkpoint(1, c1.clone()).unwrap();
    let again = sink_again(&brokers, topic);
    again.commit_checkpoint(1, c1.clone()).unwrap();
    assert_eq!(read_all(&brokers, topic, 2, "read_uncommitted"), want1, "checkpoint 1 written twice");

    // The next checkpoint's records come after, once.
    writers[1].write(rows("c", 10, 3_000)).unwrap();
    let c2: Vec<Vec<u8>> = writers.iter_mut().map(|w| w.precommit().unwrap()).collect();
    again.commit_checkpoint(2, c2.clone()).unwrap();
    again.commit_checkpoint(2, c2).unwrap();
    let want2 = sorted([want1, records("c", 10, 3_000)].concat());
    assert_eq!(read_all(&brokers, topic, 2, "read_committed"), want2, "checkpoint 2 committed once");

    // A fresh job with the same transactional id would take its checkpoints 1 and 2 as done.
    let e = sink_again(&brokers, topic).check().unwrap_err().to_string();
    assert!(e.contains("was used by an earlier job") && e.contains("checkpoint 2"), "{e}");
}

/// The sink of a run resumed in another process: a new instance with the same settings.
fn sink_again(brokers: &str, topic: &str) -> WriteKafka<(String, i64)> {
    sink(brokers, topic)
}

#[test]
fn a_committer_that_crashed_mid_transaction_is_aborted_and_its_checkpoint_committed_once() {
    let broker = Noida::start();
    let (brokers, topic) = (broker.brokers(), "eos-crash");
    broker.create_topic(topic, 2);
    let first = sink(&brokers, topic);
    let mut writers = [open(&first, 0), open(&first, 1)];
    writers[0].write(rows("a", 25, 1_000)).unwrap();
    let c1: Vec<Vec<u8>> = writers.iter_mut().map(|w| w.precommit().unwrap()).collect();
    first.commit_checkpoint(1, c1).unwrap();
    writers[0].write(rows("b", 15, 2_000)).unwrap();
    writers[1].write(rows("c", 15, 2_000)).unwrap();
    let c2: Vec<Vec<u8>> = writers.iter_mut().map(|w| w.precommit().unwrap()).collect();
    drop(first);

    // The committer of checkpoint 2 began its transaction, sent part of it, and died.
    let crashed: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("transactional.id", format!("riffle-{topic}"))
        .create()
        .unwrap();
    crashed.init_transactions(Duration::from_secs(30)).unwrap();
    crashed.begin_transaction().unwrap();
    for i in 0..15 {
        let (k, v) = (format!("b-{i}"), format!("[\"b-{i}\",{i}]"));
        crashed.send(BaseRecord::to(topic).key(&k).payload(&v).timestamp(2_000)).map_err(|(e, _)| e).unwrap();
    }
    crashed.flush(Duration::from_secs(30)).unwrap();
    std::mem::forget(crashed);
    let want1 = records("a", 25, 1_000);
    assert_eq!(read_all(&brokers, topic, 2, "read_committed"), want1, "the open transaction is not visible");

    // The resumed run commits checkpoint 2 again: the open transaction is aborted first.
    sink(&brokers, topic).commit_checkpoint(2, c2).unwrap();
    let want2 = sorted([want1, records("b", 15, 2_000), records("c", 15, 2_000)].concat());
    assert_eq!(read_all(&brokers, topic, 2, "read_committed"), want2, "each record once");
    let uncommitted = read_all(&brokers, topic, 2, "read_uncommitted");
    assert_eq!(uncommitted.len(), want2.len() + 15, "the crashed transaction's records are in the log, aborted");
}

/// Events: one every 10 ms of event time, 5 keys, in order; sums per key per second.
const EVENTS: u64 = 200_000;
const KEYS: u64 = 5;
const FAIL_AT: u64 = 150_000;

fn sums(p: &Pipeline, fail: Arc<AtomicBool>) -> PCollection<(String, i64)> {
    p.generate_stream(
        EVENTS,
        |i| (i, EventTime::from_millis(i as i64 * 10)),
        WatermarkStrategy::bounded_out_of_orderness(0),
    )
    .map(move |i| {
        if i % 200 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!(i == FAIL_AT && fail.swap(false, Ordering::SeqCst)), "the injected failure at event {i}");
        (format!("k{}", i % KEYS), 1i64)
    })
    .window_into(FixedWindows::of_millis(1_000))
    .combine_per_key(Sum::new())
}

#[test]
fn a_job_that_fails_and_resumes_writes_each_pane_once_under_read_committed() {
    let broker = Noida::start();
    let (brokers, topic) = (broker.brokers(), "eos-job");
    broker.create_topic(topic, 3);
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        checkpoint_dir: Some(dir.path().display().to_string()),
        checkpoint_interval: Duration::from_millis(50),
        ..RunOptions::threads(2)
    };
    let run = |fail: bool| {
        let p = Pipeline::new();
        let out = sums(&p, Arc::new(AtomicBool::new(fail)));
        WriteKafka::topic(topic).brokers(&brokers).key(|v: &(String, i64)| v.0.clone()).exactly_once(true).write(&out);
        riffle_timely::run(&p, &opts).map(|_| ()).map_err(|e| e.to_string())
    };
    let err = run(true).expect_err("the injected failure stops the first run");
    assert!(err.contains("injected failure"), "{err}");
    let listing: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    let before = read_all(&brokers, topic, 3, "read_committed");
    assert!(!before.is_empty(), "the first run committed a checkpoint's panes before failing: {listing:?}");
    run(false).expect("the resumed run");

    // Each 1-second window holds 100 events, 20 per key: one pane each, once.
    let got = read_all(&brokers, topic, 3, "read_committed");
    let mut panes: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for (key, value, ts) in &got {
        panes.entry((key.clone(), ts - 999)).or_default().push(value.clone());
    }
    let windows = EVENTS as i64 * 10 / 1_000;
    assert_eq!(
        got.len() as i64,
        windows * KEYS as i64,
        "one record per pane, none twice: {} before the failure",
        before.len()
    );
    for w in 0..windows {
        for k in 0..KEYS {
            let key = (format!("k{k}"), w * 1_000);
            assert_eq!(panes.get(&key), Some(&vec![format!("[\"k{k}\",20]")]), "pane {key:?}");
        }
    }
}
