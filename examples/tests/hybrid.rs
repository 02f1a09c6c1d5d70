//! Backfill, then live: the `live` example replays Parquet history (local and on a real S3
//! API server) and goes on with a real Kafka-protocol topic (tansu), both on loopback.
//!
//! Bug classes caught: events of the overlap between files and topic counted twice, or
//! neither; a window that spans the switch firing twice or with one part; the topic's
//! records before the switch (there for the out-of-orderness) counted; `auto` switching
//! where a partition holds nothing yet; a hybrid job that gives other totals at another
//! scale. (A topic whose retention deleted the switch point is refused at start: the rule
//! is unit-tested in riffle-kafka, since tansu's in-memory engine deletes no records.)

mod common;

use common::events::{Event, HOUR, START, Total, batch_totals, events, produce, write_parquet};
use common::example;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use riffle_kafka::testing::Tansu;
use riffle_parquet::testing::Moto;

/// The switch, inside the window [2h, 3h): that window gets both parts.
const SWITCH: i64 = START + 5 * HOUR / 2;

/// History: the events before 3h, an hour past the switch (the overlap).
fn history(events: &[(i32, Event)]) -> Vec<Event> {
    events.iter().filter(|(_, e)| e.ts < START + 3 * HOUR).map(|(_, e)| e.clone()).collect()
}

/// What the topic holds at start: from 1h30 (an hour before the switch) to 3h; the rest of
/// its records arrive while the job runs.
fn topic_at_start(events: &[(i32, Event)]) -> Vec<(i32, Event)> {
    events.iter().filter(|(_, e)| (START + 3 * HOUR / 2..START + 3 * HOUR).contains(&e.ts)).cloned().collect()
}

/// Reads `topic` until `n` totals came (but the watermark pushers'), or a minute passed.
fn read_totals(broker: &Tansu, topic: &str, n: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", format!("test-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(Tansu::FIRST_WRITTEN)).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let t: Total = serde_json::from_slice(m.unwrap().payload().unwrap()).unwrap();
            if t.user_id != "zz" {
                got.push(format!("{}\t{}\t{}\t{}", t.user_id, t.window_start, t.window_end, t.total));
            }
        }
    }
    got.sort();
    got
}

/// SIGTERM, then the exit status within 10 s (`None`: it was killed after that).
fn stop(mut job: Child) -> Option<std::process::ExitStatus> {
    let killed = Command::new("kill").args(["-TERM", &job.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let stopped = Instant::now();
    loop {
        if let Some(s) = job.try_wait().unwrap() {
            return Some(s);
        }
        if stopped.elapsed() > Duration::from_secs(10) {
            let _ = job.kill();
            let _ = job.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `live` over `history_url` then topic `topic`, with the records after 3h arriving
/// while it runs, and returns its totals.
fn run_hybrid(
    broker: &Tansu,
    events: &[(i32, Event)],
    history_url: &str,
    env: &[(&'static str, String)],
    topic: &str,
    scale: &[&str],
    want: usize,
) -> (Vec<String>, String) {
    broker.create_topic(topic, 3);
    let output = format!("{topic}-totals");
    broker.create_sink_topic(&output, 1);
    produce(broker, topic, &topic_at_start(events));
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("live.log");
    let job = example("live")
        .args(["--brokers", &broker.brokers(), "--topic", topic, "--output-topic", &output])
        .args(["--window", "1h", "--out-of-orderness", "5s", "--no-progress"])
        .args(["--history", history_url, "--switch-at", &SWITCH.to_string()])
        .args(scale)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // The live part goes on while the job runs; then one record per partition two hours
    // on moves every partition's watermark past the last window.
    let live: Vec<_> = events.iter().filter(|(_, e)| e.ts >= START + 3 * HOUR).cloned().collect();
    for chunk in live.chunks(25) {
        std::thread::sleep(Duration::from_millis(100));
        produce(broker, topic, chunk);
    }
    let last = events.iter().map(|(_, e)| e.ts).max().unwrap();
    let pushers: Vec<_> = (0..3).map(|p| (p, Event { user_id: "zz".into(), ts: last + 2 * HOUR, amount: 0 })).collect();
    produce(broker, topic, &pushers);
    let got = read_totals(broker, &output, want);
    let status = stop(job);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let status = status.unwrap_or_else(|| panic!("{scale:?}: the job did not stop within 10 s of SIGTERM: {log}"));
    assert!(status.success(), "{scale:?}: live exited with {status}: {log}");
    (got, log)
}

#[test]
fn history_then_topic_gives_the_batch_totals_at_every_scale_with_the_overlap_counted_once() {
    let broker = Tansu::start();
    let events = events(400);
    let want = batch_totals(&events);
    assert!(want.len() >= 15, "{want:?}");
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("history").display().to_string();
    write_parquet(&url, history(&events), None);
    for (i, scale) in
        [&["--workers", "1"][..], &["--workers", "4"], &["--processes", "2", "--workers", "2"]].into_iter().enumerate()
    {
        let (got, log) = run_hybrid(&broker, &events, &url, &[], &format!("events-{i}"), scale, want.len());
        assert_eq!(got, want, "{scale:?}: history then topic against one batch run over every event\n{log}");
        assert!(log.contains("switching to the live source"), "{scale:?}: the switch is logged: {log}");
        assert!(log.contains("reading (partition, from offset)"), "{scale:?}: the offsets chosen are logged: {log}");
    }
}

#[test]
fn history_on_s3_then_topic_gives_the_batch_totals() {
    let broker = Tansu::start();
    let moto = Moto::start(false);
    moto.create_bucket("lake");
    let events = events(400);
    let want = batch_totals(&events);
    let env = moto.env();
    write_parquet("s3://lake/history", history(&events), Some(moto.options()));
    let (got, log) =
        run_hybrid(&broker, &events, "s3://lake/history", &env, "events-s3", &["--workers", "2"], want.len());
    assert_eq!(got, want, "history on S3 then topic against one batch run\n{log}");
}

#[test]
fn auto_switches_at_the_earliest_time_every_partition_holds() {
    // The topic holds the events from 1h30 on; the files hold everything before 3h.
    let broker = Tansu::start();
    let events = events(400);
    broker.create_topic("recent", 3);
    let recent: Vec<_> = events.iter().filter(|(_, e)| e.ts >= START + 3 * HOUR / 2).cloned().collect();
    produce(&broker, "recent", &recent);
    let latest_first = (0..3).map(|p| recent.iter().find(|(q, _)| *q == p).unwrap().1.ts).max().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("history").display().to_string();
    write_parquet(&url, history(&events), None);
    let out = example("live")
        .args(["--brokers", &broker.brokers(), "--topic", "recent", "--bounded", "--no-progress"])
        .args(["--window", "1h", "--out-of-orderness", "5s"])
        .args(["--history", &url, "--switch-at", "auto"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "auto: {log}");
    // The latest partition's first record, plus the 5 s, rounded up to a minute.
    let auto = (latest_first + 5_000 + 59_999) / 60_000 * 60_000;
    let shown = jiff::Timestamp::from_millisecond(auto).unwrap().to_string();
    assert!(log.contains(&format!("before {shown}")), "switches at {shown}: {log}");
    let mut got: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, batch_totals(&events), "auto: history before the switch, topic after");
}
