//! The Kafka connector against a real Kafka-protocol broker on loopback: tansu, and
//! noida-db where a test adds partitions to a topic (tansu cannot).
//!
//! Bug classes caught: partitions added to a topic while a live job runs that are never
//! read, or not counted in the lag gauges, or that make records already on time late; a bounded read that stops early or late, or whose panes differ from
//! the batch of the same events, at any worker count; lateness judged against a worker's
//! watermark rather than the record's own partition's; a malformed record that stops the
//! job or vanishes instead of reaching the dead-letter output with where it was; a broker
//! that is down at start making the job hang; records written with the wrong key, value or
//! timestamp.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use riffle_engine::WatermarkStrategy;
use riffle_engine::prelude::*;
use riffle_kafka::testing::{Noida, Tansu, free_port};
use riffle_kafka::{ReadKafka, WriteKafka};
use riffle_timely::RunOptions;
use serde::{Deserialize, Serialize};

/// The `live` example's input record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Event {
    user_id: String,
    ts: i64,
    amount: i64,
}

fn ms(t: i64) -> EventTime {
    EventTime::from_millis(t)
}

/// 3 partitions of 200 events each, at most 500 ms out of order within a partition (the
/// bound below is 1 s, so none is late), 7 users, amounts 1 to 9.
fn events() -> Vec<(i32, Event)> {
    (0..600i64)
        .map(|i| {
            let partition = (i % 3) as i32;
            let ts = 1_000_000 + i * 50 - (i * 37 % 11) * 45;
            (partition, Event { user_id: format!("u{}", i % 7), ts, amount: i % 9 + 1 })
        })
        .collect()
}

fn produce_events(broker: &Tansu, topic: &str, events: &[(i32, Event)]) {
    let records: Vec<_> =
        events.iter().map(|(p, e)| (*p, e.user_id.clone(), serde_json::to_vec(e).unwrap(), e.ts)).collect();
    broker.produce(topic, &records);
}

/// Sums per user per 10-second window, as (user, window start, total), sorted.
fn sums(input: PCollection<Event>) -> PCollection<(String, i64)> {
    input
        .window_into(FixedWindows::of_millis(10_000))
        .map(|e| (e.user_id, e.amount))
        .combine_per_key(Sum::new())
        .named("Sums")
}

fn panes(out: &[WindowedValue<(String, i64)>]) -> Vec<(String, Window, i64, EventTime)> {
    let mut v: Vec<_> = out.iter().map(|wv| (wv.value.0.clone(), wv.window, wv.value.1, wv.timestamp)).collect();
    v.sort();
    v
}

#[test]
fn bounded_mode_gives_the_panes_of_the_batch_at_one_and_four_workers() {
    let broker = Tansu::start();
    broker.create_topic("events", 3);
    let events = events();
    produce_events(&broker, "events", &events);
    let batch = riffle_timely::testing::try_run_windowed(&RunOptions::threads(2), |p| {
        sums(p.create_timestamped(events.iter().map(|(_, e)| (e.clone(), ms(e.ts))).collect()))
    })
    .unwrap();
    let want = panes(&batch);
    assert!(want.len() > 20, "the case has many panes");
    for workers in [1, 4] {
        let brokers = broker.brokers();
        let p = Pipeline::new();
        let (read, dead) = ReadKafka::<Event>::topic("events")
            .brokers(&brokers)
            .bounded(true)
            .event_time(|e| ms(e.ts))
            .watermarks(WatermarkStrategy::bounded_out_of_orderness(1_000))
            .read(&p);
        let out = riffle_connectors::memory::collect(&sums(read));
        let dead = riffle_connectors::memory::collect(&dead);
        let report = riffle_timely::run(&p, &RunOptions::threads(workers)).unwrap();
        assert_eq!(report.late_dropped("Sums"), 0, "{workers} workers");
        assert!(dead.lock().unwrap().is_empty(), "{workers} workers");
        assert_eq!(panes(&out.lock().unwrap()), want, "{workers} workers");
    }
}

#[test]
fn a_record_is_late_against_its_own_partitions_watermark_at_any_worker_count() {
    // Partition 0 reads 20 s, then 0 s: 0 s is 20 s behind its partition (bound 1 s), late
    // and dropped. Partition 1 is far behind (it reads 0 s and 1 s): that must not make
    // partition 0's record on time when both partitions are read by one worker.
    let broker = Tansu::start();
    broker.create_topic("lateness", 2);
    let e = |ts: i64| Event { user_id: "u".into(), ts, amount: 1 };
    produce_events(&broker, "lateness", &[(0, e(20_000)), (1, e(0)), (1, e(1_000))]);
    produce_events(&broker, "lateness", &[(0, e(0))]);
    for workers in [1, 2] {
        let p = Pipeline::new();
        let (read, _) = ReadKafka::<Event>::topic("lateness")
            .brokers(&broker.brokers())
            .bounded(true)
            .event_time(|e| ms(e.ts))
            .watermarks(WatermarkStrategy::bounded_out_of_orderness(1_000))
            .read(&p);
        let out = riffle_connectors::memory::collect(&sums(read));
        let report = riffle_timely::run(&p, &RunOptions::threads(workers)).unwrap();
        let total: i64 = out.lock().unwrap().iter().map(|wv| wv.value.1).sum();
        assert_eq!((total, report.late_dropped("Sums")), (3, 1), "{workers} workers");
    }
}

#[test]
fn a_malformed_record_reaches_the_dead_letters_with_its_partition_and_offset() {
    let broker = Tansu::start();
    broker.create_topic("mixed", 1);
    let good = Event { user_id: "ana".into(), ts: 5, amount: 3 };
    broker.produce(
        "mixed",
        &[
            (0, "ana".into(), serde_json::to_vec(&good).unwrap(), 5),
            (0, "bo".into(), b"{not json".to_vec(), 6),
            (0, "ana".into(), serde_json::to_vec(&good).unwrap(), 7),
        ],
    );
    let p = Pipeline::new();
    let (read, dead) = ReadKafka::<Event>::topic("mixed").brokers(&broker.brokers()).bounded(true).read(&p);
    let out = riffle_connectors::memory::collect(&read);
    let dead = riffle_connectors::memory::collect(&dead);
    riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    assert_eq!(out.lock().unwrap().len(), 2, "the good records are read past the bad one");
    let dead = dead.lock().unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0].value;
    assert_eq!((d.topic.as_str(), d.partition, d.offset, d.value.as_deref()), ("mixed", 0, 1, Some(&b"{not json"[..])));
    assert!(d.reason.contains("not JSON"), "{}", d.reason);
}

#[test]
fn a_broker_that_is_down_at_start_is_a_clear_error_soon() {
    let brokers = format!("127.0.0.1:{}", free_port());
    let p = Pipeline::new();
    let (read, _) = ReadKafka::<Event>::topic("events").brokers(&brokers).bounded(true).read(&p);
    riffle_connectors::memory::discard(&read);
    let start = Instant::now();
    let err = riffle_timely::run(&p, &RunOptions::threads(1)).unwrap_err().to_string();
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    assert!(err.contains(&brokers) && err.contains("did not answer"), "{err}");
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let broker = Tansu::start();
    let p = Pipeline::new();
    let (read, _) = ReadKafka::<Event>::topic("nowhere").brokers(&broker.brokers()).bounded(true).read(&p);
    riffle_connectors::memory::discard(&read);
    let err = riffle_timely::run(&p, &RunOptions::threads(1)).unwrap_err().to_string();
    assert!(err.contains("\"nowhere\"") && err.contains("does not exist"), "{err}");
}

#[test]
fn the_sink_writes_keys_json_values_and_pane_timestamps() {
    let broker = Tansu::start();
    broker.create_sink_topic("totals", 2);
    let p = Pipeline::new();
    let input = p.create_timestamped(vec![
        (("ana".to_string(), 3i64), ms(1_000)),
        (("bo".to_string(), 4), ms(2_000)),
        (("ana".to_string(), 5), ms(12_000)),
    ]);
    let totals = input.window_into(FixedWindows::of_millis(10_000)).combine_per_key(Sum::new());
    WriteKafka::topic("totals").brokers(&broker.brokers()).key(|(user, _): &(String, i64)| user.clone()).write(&totals);
    riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();

    // Read the topic back with a plain consumer.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for partition in 0..2 {
        tpl.add_partition_offset("totals", partition, Offset::Offset(Tansu::FIRST_WRITTEN)).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 3 && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let value: (String, i64) = serde_json::from_slice(m.payload().unwrap()).unwrap();
            got.push((key, value, m.timestamp().to_millis()));
        }
    }
    got.sort();
    // Each pane's timestamp is its window's end (the default timestamp combiner).
    assert_eq!(
        got,
        [
            ("ana".to_string(), ("ana".to_string(), 3), Some(9_999)),
            ("ana".to_string(), ("ana".to_string(), 5), Some(19_999)),
            ("bo".to_string(), ("bo".to_string(), 4), Some(9_999)),
        ]
    );
}

#[test]
fn a_record_the_producer_cannot_deliver_fails_the_job_naming_the_topic_and_reason() {
    // A value over the producer's message.max.bytes (1 MB by default) is refused: the job
    // fails with the topic and librdkafka's reason rather than dropping the record.
    let broker = Tansu::start();
    broker.create_sink_topic("big", 1);
    let p = Pipeline::new();
    let input = p.create(vec![("small".to_string(), "x".repeat(10)), ("huge".to_string(), "x".repeat(2_000_000))]);
    WriteKafka::topic("big").brokers(&broker.brokers()).key(|(k, _): &(String, String)| k.clone()).write(&input);
    let err = riffle_timely::run(&p, &RunOptions::threads(1)).unwrap_err().to_string();
    assert!(err.contains("\"big\""), "names the topic: {err}");
    assert!(err.to_lowercase().contains("too large"), "says why: {err}");
}

#[test]
fn a_broker_that_goes_away_while_running_fails_the_job_loudly() {
    let _one = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Tansu::start();
    broker.create_topic("events", 2);
    produce_events(&broker, "events", &events()[..20]);
    let brokers = broker.brokers();
    let job = std::thread::spawn(move || {
        let p = Pipeline::new();
        let (read, _) = ReadKafka::<Event>::topic("events").brokers(&brokers).read(&p);
        riffle_connectors::memory::discard(&read);
        riffle_timely::run(&p, &RunOptions::threads(2))
    });
    // Let it read, then take the broker away.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!job.is_finished(), "an unbounded job runs until stopped");
    drop(broker);
    let lost = Instant::now();
    while !job.is_finished() && lost.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(job.is_finished(), "the job still runs 60 s after its broker went away");
    // Not at the first error (librdkafka reports passing trouble the same way), but
    // once errors have gone on for 10 s.
    assert!(lost.elapsed() >= Duration::from_secs(9), "failed after {:?}", lost.elapsed());
    let err = job.join().unwrap().unwrap_err().to_string();
    assert!(err.contains("events") && err.contains("127.0.0.1") && err.contains("without a break"), "{err}");
}

/// Runs an unbounded windowed sum of `topic` in a thread and returns its output and the
/// job; stop it with `riffle_timely::request_stop`.
type Panes = std::sync::Arc<std::sync::Mutex<Vec<WindowedValue<(String, i64)>>>>;

fn live_sums(
    brokers: String,
    topic: &'static str,
    strategy: WatermarkStrategy,
) -> (Panes, std::thread::JoinHandle<riffle_engine::Result<riffle_timely::RunReport>>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let job = std::thread::spawn(move || {
        let p = Pipeline::new();
        let (read, _) =
            ReadKafka::<Event>::topic(topic).brokers(&brokers).event_time(|e| ms(e.ts)).watermarks(strategy).read(&p);
        tx.send(riffle_connectors::memory::collect(&sums(read))).unwrap();
        riffle_timely::run(&p, &RunOptions::threads(2))
    });
    (rx.recv().unwrap(), job)
}

/// Waits up to `wait` for a pane of window [start, start + 10 s); returns whether one came.
fn pane_fires(out: &Panes, start: i64, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if out
            .lock()
            .unwrap()
            .iter()
            .any(|wv| wv.window == Window::Interval { start: ms(start), end: ms(start + 10_000) })
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// One job at a time may use the process-wide stop request.
static LIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_partition_far_behind_holds_the_watermark_and_an_idle_one_stops_holding_it() {
    let _one = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let e = |ts: i64| Event { user_id: "u".into(), ts, amount: 1 };
    for idle_timeout in [None, Some(500)] {
        let broker = Tansu::start();
        broker.create_topic("events", 2);
        // Partition 0 is past [0, 10 s); partition 1 has one record at 1 s and then idles.
        produce_events(&broker, "events", &[(0, e(2_000)), (0, e(30_000)), (1, e(1_000))]);
        let strategy = match idle_timeout {
            None => WatermarkStrategy::bounded_out_of_orderness(1_000),
            Some(ms) => WatermarkStrategy::bounded_out_of_orderness(1_000).with_idle_timeout(ms),
        };
        let (out, job) = live_sums(broker.brokers(), "events", strategy);
        let fired = pane_fires(&out, 0, Duration::from_secs(if idle_timeout.is_some() { 20 } else { 3 }));
        riffle_timely::request_stop();
        let report = job.join().unwrap().unwrap();
        riffle_timely::reset_stop();
        match idle_timeout {
            // Partition 1's watermark (1 s less the bound) holds [0, 10 s) open.
            None => assert!(!fired, "a window fired past a partition that is behind"),
            // Once partition 1 is idle it follows the clock, far past 10 s.
            Some(_) => assert!(fired, "an idle partition still held the watermark: {:?}", out.lock().unwrap()),
        }
        assert_eq!(report.late_dropped("Sums"), 0);
    }
}

#[test]
fn records_within_the_bound_are_on_time_and_beyond_it_late() {
    let _one = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Tansu::start();
    broker.create_topic("events", 1);
    let e = |ts: i64, amount: i64| Event { user_id: "u".into(), ts, amount };
    // Bound 2 s. After 11 s the partition's watermark is 9 s: 9.5 s is on time in
    // [0, 10 s) (behind 11 s by less than the bound). After 13 s it is 11 s, past the
    // window's end: 9.9 s is late, and dropped.
    produce_events(&broker, "events", &[(0, e(1_000, 1)), (0, e(11_000, 10)), (0, e(9_500, 100))]);
    produce_events(&broker, "events", &[(0, e(13_000, 1_000)), (0, e(9_900, 10_000))]);
    let p = Pipeline::new();
    let (read, _) = ReadKafka::<Event>::topic("events")
        .brokers(&broker.brokers())
        .bounded(true)
        .event_time(|e| ms(e.ts))
        .watermarks(WatermarkStrategy::bounded_out_of_orderness(2_000))
        .read(&p);
    let out = riffle_connectors::memory::collect(&sums(read));
    let report = riffle_timely::run(&p, &RunOptions::threads(1)).unwrap();
    let mut got: Vec<(Window, i64)> = out.lock().unwrap().iter().map(|wv| (wv.window, wv.value.1)).collect();
    got.sort();
    let w = |s: i64| Window::Interval { start: ms(s), end: ms(s + 10_000) };
    assert_eq!(got, [(w(0), 101), (w(10_000), 1_010)]);
    assert_eq!(report.late_dropped("Sums"), 1, "9.9 s after 13 s");
}

#[test]
fn a_live_job_serves_each_partitions_lag_and_the_source_watermark() {
    use std::io::{Read, Write};
    let _one = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Tansu::start();
    broker.create_topic("events", 2);
    let two: Vec<(i32, Event)> = events().into_iter().filter(|(p, _)| *p < 2).take(40).collect();
    produce_events(&broker, "events", &two);
    let addr = format!("127.0.0.1:{}", free_port());
    let (brokers, metrics_addr) = (broker.brokers(), addr.clone());
    let job = std::thread::spawn(move || {
        let p = Pipeline::new();
        let (read, _) = ReadKafka::<Event>::topic("events").brokers(&brokers).event_time(|e| ms(e.ts)).read(&p);
        riffle_connectors::memory::discard(&read);
        let opts = RunOptions { workers: 2, metrics_addr: Some(metrics_addr), ..RunOptions::default() };
        riffle_timely::run(&p, &opts)
    });
    let scrape = || -> Option<String> {
        let mut s = std::net::TcpStream::connect(&addr).ok()?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    while Instant::now() < deadline && seen.is_none() {
        // Read to the end: both partitions' lag 0, and a watermark from the events.
        seen = scrape().filter(|b| {
            b.contains("riffle_source_split_lag{step=\"ReadKafka\",worker=\"0\",process=\"0\",split=\"0\"} 0")
                && b.contains("riffle_source_split_lag{step=\"ReadKafka\",worker=\"1\",process=\"0\",split=\"1\"} 0")
                && b.contains("riffle_source_watermark_ms{step=\"ReadKafka\",worker=\"0\"")
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    riffle_timely::request_stop();
    job.join().unwrap().unwrap();
    riffle_timely::reset_stop();
    let body = seen.expect("the lag and watermark gauges of a live Kafka job");
    // The watermark is the greatest event time read less the bound (0), at most.
    let wm_line =
        body.lines().find(|l| l.starts_with("riffle_source_watermark_ms{step=\"ReadKafka\",worker=\"0\"")).unwrap();
    let wm: i64 = wm_line.rsplit(' ').next().unwrap().parse().unwrap();
    let max_ts = two.iter().filter(|(p, _)| *p == 0).map(|(_, e)| e.ts).max().unwrap();
    assert!(wm > 0 && wm <= max_ts, "{wm_line}");
}

#[test]
fn bounded_mode_gives_the_panes_of_the_batch_on_two_processes_of_two_workers() {
    use riffle_timely::testing::{Describe, cluster_scratch_dir, describe, is_cluster_member, local_cluster};
    const TEST: &str = "bounded_mode_gives_the_panes_of_the_batch_on_two_processes_of_two_workers";
    const BROKERS: &str = "RIFFLE_TEST_KAFKA_BROKERS";
    // The launcher starts the broker and fills the topic; the processes it starts run this
    // function again, and find the broker in the environment they inherit.
    let broker = (!is_cluster_member()).then(|| {
        let broker = Tansu::start();
        broker.create_topic("events", 3);
        produce_events(&broker, "events", &events());
        broker
    });
    let brokers = match &broker {
        Some(b) => b.brokers(),
        None => std::env::var(BROKERS).expect("the launcher's broker"),
    };
    let dir = cluster_scratch_dir(TEST);
    let out = dir.join("panes.txt");
    let p = Pipeline::new();
    let (read, _) = ReadKafka::<Event>::topic("events")
        .brokers(&brokers)
        .bounded(true)
        .event_time(|e| ms(e.ts))
        .watermarks(WatermarkStrategy::bounded_out_of_orderness(1_000))
        .read(&p);
    riffle_connectors::text::write_lines(&sums(read).par_do(Describe::new()), &out, |l| l.clone());
    let opts = RunOptions { child_env: vec![(BROKERS.to_string(), brokers.clone())], ..local_cluster(2, 2, TEST) };
    riffle_timely::run(&p, &opts).unwrap();
    let got: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    std::fs::remove_dir_all(&dir).ok();
    let batch = riffle_timely::testing::try_run_windowed(&RunOptions::threads(1), |p| {
        sums(p.create_timestamped(events().iter().map(|(_, e)| (e.clone(), ms(e.ts))).collect()))
    })
    .unwrap();
    let mut want: Vec<String> = batch.iter().map(describe).collect();
    want.sort();
    assert!(want.len() > 20);
    assert_eq!(got, want);
}

#[test]
fn committed_offsets_let_a_second_job_start_where_the_first_stopped() {
    let broker = Tansu::start();
    broker.create_topic("events", 2);
    let two: Vec<(i32, Event)> = events().into_iter().filter(|(p, _)| *p < 2).take(30).collect();
    produce_events(&broker, "events", &two);
    let count = |commit: bool| {
        let p = Pipeline::new();
        let (read, _) = ReadKafka::<Event>::topic("events")
            .brokers(&broker.brokers())
            .group_id("totals-job")
            .start_at(riffle_kafka::StartAt::Committed)
            .commit_offsets(commit)
            .bounded(true)
            .read(&p);
        let out = riffle_connectors::memory::collect(&read);
        riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
        out.lock().unwrap().len()
    };
    // Without commits, a job from the group's (absent) offsets reads everything, twice.
    assert_eq!(count(false), 30);
    assert_eq!(count(false), 30);
    // With them, the first reads everything and the second finds nothing new.
    assert_eq!(count(true), 30);
    assert_eq!(count(true), 0);
    produce_events(&broker, "events", &[(1, Event { user_id: "late".into(), ts: 9, amount: 1 })]);
    assert_eq!(count(true), 1, "only what came after the commit");
}

#[test]
fn a_worker_with_no_partition_does_not_hold_the_watermark_back() {
    let _one = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Tansu::start();
    // One partition, two workers: worker 1 reads nothing, and no idle timeout is set.
    broker.create_topic("events", 1);
    let e = |ts: i64| Event { user_id: "u".into(), ts, amount: 1 };
    produce_events(&broker, "events", &[(0, e(2_000)), (0, e(30_000))]);
    let (out, job) = live_sums(broker.brokers(), "events", WatermarkStrategy::bounded_out_of_orderness(1_000));
    let fired = pane_fires(&out, 0, Duration::from_secs(20));
    riffle_timely::request_stop();
    job.join().unwrap().unwrap();
    riffle_timely::reset_stop();
    assert!(fired, "[0, 10 s) did not fire while the job ran: a worker without partitions held it");
}

/// A topic written in a transaction ends in a commit marker: an offset below the end that
/// no consumer is handed. A bounded read must still end (it used to wait for a record at
/// the last offset forever), with every record, at 1 and 2 workers.
#[test]
fn bounded_mode_ends_on_a_topic_written_in_transactions() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let broker = Tansu::start();
    broker.create_topic("tx", 2);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("transactional.id", "riffle-test-tx")
        .create()
        .expect("a transactional producer");
    producer.init_transactions(Duration::from_secs(10)).expect("init_transactions");
    producer.begin_transaction().unwrap();
    let events: Vec<(i32, Event)> = (0..10i64)
        .map(|i| ((i % 2) as i32, Event { user_id: format!("u{}", i % 3), ts: 1_000 + i, amount: i }))
        .collect();
    for (partition, e) in &events {
        let value = serde_json::to_vec(e).unwrap();
        let record = BaseRecord::to("tx").partition(*partition).key(&e.user_id).payload(&value).timestamp(e.ts);
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.commit_transaction(Duration::from_secs(10)).expect("commit_transaction");
    for workers in [1, 2] {
        let (done, ended) = std::sync::mpsc::channel();
        let brokers = broker.brokers();
        std::thread::spawn(move || {
            let p = Pipeline::new();
            let (read, _) = ReadKafka::<Event>::topic("tx").brokers(&brokers).bounded(true).read(&p);
            let out = riffle_connectors::memory::collect(&read);
            let run = riffle_timely::run(&p, &RunOptions::threads(workers)).map_err(|e| e.to_string());
            let mut got: Vec<i64> = out.lock().unwrap().iter().map(|wv| wv.value.amount).collect();
            got.sort_unstable();
            let _ = done.send(run.map(|_report| got));
        });
        let got = ended.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("a bounded read of a transactional topic did not end in 30 s ({workers} workers)")
        });
        assert_eq!(got, Ok((0..10).collect::<Vec<_>>()), "{workers} workers");
    }
}

/// The Prometheus text served at `addr`, if it answers.
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Whether `body` has worker `worker`'s gauge `metric` (lag, offset) of partition `split`
/// at `value`.
fn split_gauge(body: &str, metric: &str, worker: usize, split: i32, value: i64) -> bool {
    body.contains(&format!(
        "riffle_source_split_{metric}{{step=\"ReadKafka\",worker=\"{worker}\",process=\"0\",split=\"{split}\"}} {value}"
    ))
}

/// A live job at 2 workers reads a topic of 2 partitions; while it runs the topic grows
/// to 4 and records go into the new ones. Worker 0 picks up partition 2 and worker 1
/// partition 3 within seconds (their lag and offset gauges appear, read to the end), from
/// their earliest offset, and their records count in the window the old partitions then
/// close: on time, in the one pane. Without discovery the new partitions' gauges never
/// appear and the pane lacks their amounts.
#[test]
fn partitions_added_while_a_live_job_runs_are_read_and_counted_in_its_lag() {
    let _one = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Noida::start();
    broker.create_topic("growing", 2);
    let e = |ts: i64, amount: i64| Event { user_id: "u".into(), ts, amount };
    let produce = |records: &[(i32, Event)]| {
        let records: Vec<_> =
            records.iter().map(|(p, e)| (*p, e.user_id.clone(), serde_json::to_vec(e).unwrap(), e.ts)).collect();
        broker.produce("growing", &records);
    };
    // Both partitions at 2 s: [0, 10 s) stays open (bound 1 s, no idle timeout).
    produce(&[(0, e(2_000, 1)), (1, e(2_000, 10))]);
    let addr = format!("127.0.0.1:{}", free_port());
    let (tx, rx) = std::sync::mpsc::channel();
    let (brokers, metrics_addr) = (broker.brokers(), addr.clone());
    let job = std::thread::spawn(move || {
        let p = Pipeline::new();
        let (read, _) = ReadKafka::<Event>::topic("growing")
            .brokers(&brokers)
            .event_time(|e| ms(e.ts))
            .watermarks(WatermarkStrategy::bounded_out_of_orderness(1_000))
            .read(&p);
        tx.send(riffle_connectors::memory::collect(&sums(read))).unwrap();
        let opts = RunOptions { workers: 2, metrics_addr: Some(metrics_addr), ..RunOptions::default() };
        riffle_timely::run(&p, &opts)
    });
    let out = rx.recv().unwrap();
    let wait_for = |ok: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if scrape(&addr).is_some_and(|b| ok(&b)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    let stop = |job: std::thread::JoinHandle<riffle_engine::Result<riffle_timely::RunReport>>| {
        riffle_timely::request_stop();
        let ran = job.join().unwrap();
        riffle_timely::reset_stop();
        ran
    };
    if !wait_for(&|b| split_gauge(b, "offset", 0, 0, 1) && split_gauge(b, "offset", 1, 1, 1)) {
        let last: Vec<String> = (scrape(&addr).unwrap_or_default().lines())
            .filter(|l| l.starts_with("riffle_source_split"))
            .map(str::to_string)
            .collect();
        let ran = stop(job).map(|_| ());
        panic!("the job did not read its two partitions within 20 s ({ran:?}); the split gauges: {last:#?}");
    }
    broker.add_partitions("growing", 4);
    produce(&[(2, e(5_000, 100)), (2, e(6_000, 100)), (3, e(7_000, 1_000))]);
    let added = Instant::now();
    let read_added = |b: &str| {
        split_gauge(b, "lag", 0, 2, 0)
            && split_gauge(b, "offset", 0, 2, 2)
            && split_gauge(b, "lag", 1, 3, 0)
            && split_gauge(b, "offset", 1, 3, 1)
    };
    if !wait_for(&read_added) {
        let last: Vec<String> = (scrape(&addr).unwrap_or_default().lines())
            .filter(|l| l.starts_with("riffle_source_split"))
            .map(str::to_string)
            .collect();
        let ran = stop(job).map(|_| ());
        panic!("the added partitions were not read within 20 s ({ran:?}); the split gauges: {last:#?}");
    }
    let picked_up = added.elapsed();
    // Close [0, 10 s) on every partition.
    produce(&(0..4).map(|p| (p, e(30_000, 0))).collect::<Vec<_>>());
    let fired = pane_fires(&out, 0, Duration::from_secs(20));
    let report = stop(job).unwrap();
    assert!(fired, "[0, 10 s) did not fire once every partition was past it");
    assert!(picked_up < Duration::from_secs(10), "picked up after {picked_up:?}");
    let w = Window::Interval { start: ms(0), end: ms(10_000) };
    let first: Vec<i64> = out.lock().unwrap().iter().filter(|wv| wv.window == w).map(|wv| wv.value.1).collect();
    assert_eq!(first, [1_211], "one pane with the old partitions' and the added ones' amounts");
    assert_eq!(report.late_dropped("Sums"), 0);
}

#[test]
fn a_job_with_checkpoints_commits_their_offsets_to_its_consumer_group() {
    // Offsets go to the group when a checkpoint has passed every sink (for monitoring:
    // resumes read the checkpoint): after every record was read and a checkpoint taken,
    // the group's committed offsets are each partition's end.
    let _one = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Tansu::start();
    broker.create_topic("watched", 2);
    let records: Vec<_> = (0..10i64)
        .map(|i| {
            let e = Event { user_id: format!("u{}", i % 3), ts: 1_000 * i, amount: i };
            ((i % 2) as i32, e.user_id.clone(), serde_json::to_vec(&e).unwrap(), e.ts)
        })
        .collect();
    broker.produce("watched", &records);
    let dir = tempfile::tempdir().unwrap();
    let (brokers, ck) = (broker.brokers(), dir.path().display().to_string());
    let job = std::thread::spawn(move || {
        let p = Pipeline::new();
        let (read, _) = ReadKafka::<Event>::topic("watched").brokers(&brokers).group_id("watchers").read(&p);
        riffle_connectors::memory::discard(&sums(read));
        let opts = RunOptions {
            workers: 2,
            checkpoint_dir: Some(ck),
            checkpoint_interval: Duration::from_millis(200),
            ..RunOptions::default()
        };
        riffle_timely::run(&p, &opts)
    });
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "watchers")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let committed = || -> Vec<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("watched", 0);
        tpl.add_partition("watched", 1);
        let got = consumer.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
        got.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1)).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = committed();
    while seen != [5, 5] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        seen = committed();
    }
    riffle_timely::request_stop();
    let ran = job.join().unwrap();
    riffle_timely::reset_stop();
    ran.unwrap();
    assert_eq!(seen, [5, 5], "each partition's end, committed with a checkpoint");
}
