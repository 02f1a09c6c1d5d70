//! The `live` example against a real Kafka-protocol broker (tansu) on loopback: the same
//! pipeline as `backfill`, computing on a topic while records keep arriving.
//!
//! Bug classes caught: a live job that only fires when its input ends; totals that differ
//! between the live stream and the Parquet backfill of the same events; a signal that
//! kills the job instead of stopping it cleanly; a web view (`--ui-addr`) that does not
//! show the live job's graph, rates, watermarks and partitions.

mod common;

use common::events::{Event, HOUR, START, Total, batch_totals, events, produce};
use common::example;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use riffle_kafka::testing::Tansu;

#[test]
fn live_computes_the_backfill_totals_while_records_arrive_and_stops_on_sigterm() {
    let broker = Tansu::start();
    broker.create_topic("events", 3);
    broker.create_sink_topic("totals", 1);
    let events = events(300);
    let want = batch_totals(&events);
    assert!(want.len() >= 10, "{want:?}");

    // Half the events are there at start; the rest arrive while the job runs.
    produce(&broker, "events", &events[..150]);
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("live.log")).unwrap();
    let ui = {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        format!("127.0.0.1:{port}")
    };
    let job = || -> Option<riffle_timely::status::JobSnapshot> {
        let body = ureq::get(&format!("http://{ui}/api/job")).call().ok()?.body_mut().read_to_string().ok()?;
        serde_json::from_str(&body).ok()
    };
    let mut live = example("live")
        .args(["--brokers", &broker.brokers(), "--topic", "events", "--output-topic", "totals"])
        .args(["--window", "1h", "--out-of-orderness", "5s", "--workers", "2", "--ui-addr", &ui])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // While records arrive, the web view shows the source reading them.
    let mut source_rate: f64 = 0.0;
    for chunk in events[150..].chunks(25) {
        std::thread::sleep(Duration::from_millis(100));
        produce(&broker, "events", chunk);
        if let Some(j) = job() {
            source_rate = source_rate.max(j.steps.iter().filter(|s| s.kind == "source").map(|s| s.out_per_s).sum());
        }
    }
    assert!(source_rate > 0.0, "the view showed records arriving: {:?}", job());
    // One record per partition two hours on moves every partition's watermark past the
    // last window (its own window stays open).
    let last = events.iter().map(|(_, e)| e.ts).max().unwrap();
    let pushers: Vec<_> = (0..3).map(|p| (p, Event { user_id: "zz".into(), ts: last + 2 * HOUR, amount: 0 })).collect();
    produce(&broker, "events", &pushers);

    // The totals arrive while the job still runs.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "test-totals")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("totals", 0, Offset::Offset(Tansu::FIRST_WRITTEN)).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want.len() && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let t: Total = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert_eq!(m.key(), Some(t.user_id.as_bytes()), "keyed by user");
            assert_eq!(m.timestamp().to_millis(), Some(t.window_end - 1), "at the pane's timestamp");
            if t.user_id != "zz" {
                got.push(format!("{}\t{}\t{}\t{}", t.user_id, t.window_start, t.window_end, t.total));
            }
        }
    }
    assert!(live.try_wait().unwrap().is_none(), "the totals came while the job ran");
    got.sort();
    assert_eq!(got, want, "live totals against backfill's");

    // In a browser: every step of the graph, the source's watermark, its partitions' lag.
    let snapshot = job().expect("the view answers while the job runs");
    assert_eq!(snapshot.state, "running");
    let page = riffle_timely::testing::browser::dom(&format!("http://{ui}/"));
    for node in &snapshot.graph {
        assert!(page.contains(&format!("data-step=\"{}\"", node.name)), "{} drawn: {page}", node.name);
    }
    let source = snapshot.graph.iter().find(|n| n.kind == "source").expect("a source");
    let watermark = riffle_timely::testing::browser::node_attr(&page, &source.name, "data-watermark");
    assert!(watermark.is_some_and(|w| w.parse::<i64>().is_ok_and(|w| w > last)), "the watermark passed the events");
    let partitions: std::collections::BTreeSet<&str> =
        snapshot.splits.iter().filter(|s| s.metric == "lag").map(|s| s.split.as_str()).collect();
    assert_eq!(partitions.len(), 3, "each partition's lag: {:?}", snapshot.splits);

    // SIGTERM stops it cleanly, soon.
    let stopped = Instant::now();
    let killed = Command::new("kill").args(["-TERM", &live.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(s) = live.try_wait().unwrap() {
            break s;
        }
        if stopped.elapsed() > Duration::from_secs(10) {
            let _ = live.kill();
            let _ = live.wait();
            panic!("live did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.path().join("live.log")).unwrap();
    assert!(status.success(), "live exited with {status}: {log}");
}

#[test]
fn with_early_firings_a_window_gives_accumulating_panes_while_it_is_open_then_one_on_time() {
    // One user's spend in one hour: 1 + 2 at start, 4 more seconds later, then every
    // partition's watermark past the hour. With --early 1s the open window fires what it
    // holds (3) before the 4 arrives, then (accumulating) 7, and 7 once more on time
    // (Beam fires the on-time pane always); without --early it would fire once, with 7.
    let broker = Tansu::start();
    broker.create_topic("spend", 2);
    broker.create_sink_topic("totals", 1);
    let at = |minutes: i64, amount: i64| Event { user_id: "ann".into(), ts: START + minutes * 60_000, amount };
    produce(&broker, "spend", &[(0, at(10, 1)), (1, at(20, 2))]);
    let dir = tempfile::tempdir().unwrap();
    let mut live = example("live")
        .args(["--brokers", &broker.brokers(), "--topic", "spend", "--output-topic", "totals", "--no-progress"])
        .args(["--window", "1h", "--out-of-orderness", "5s", "--early", "1s"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap())
        .spawn()
        .unwrap();
    // Ann's totals so far, in the order written.
    let written = || -> Vec<i64> {
        let records = riffle_kafka::testing::read_topic(
            &broker.brokers(),
            "totals",
            1,
            "read_uncommitted",
            Duration::from_secs(2),
        );
        let totals = records.iter().filter_map(|(_, v, _)| serde_json::from_str::<Total>(v).ok());
        totals
            .filter(|t| t.user_id == "ann")
            .inspect(|t| assert_eq!((t.window_start, t.window_end), (START, START + HOUR), "{t:?}"))
            .map(|t| t.total)
            .collect()
    };
    let wait_for = |enough: &dyn Fn(&[i64]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = written();
        while !enough(&got) && Instant::now() < deadline {
            got = written();
        }
        got
    };
    let log = || std::fs::read_to_string(dir.path().join("err.log")).unwrap_or_default();
    let got = wait_for(&|t| t.contains(&3));
    assert_eq!(got, [3], "an early pane of the open window\n{}", log());
    produce(&broker, "spend", &[(0, at(30, 4))]);
    let got = wait_for(&|t| t.contains(&7));
    assert_eq!(got, [3, 7], "an early pane with everything so far\n{}", log());
    let pushers: Vec<_> =
        (0..2).map(|p| (p, Event { user_id: "zz".into(), ts: START + 3 * HOUR, amount: 0 })).collect();
    produce(&broker, "spend", &pushers);
    let got = wait_for(&|t| t.len() >= 3);
    assert_eq!(got, [3, 7, 7], "the on-time pane, accumulating\n{}", log());
    assert!(live.try_wait().unwrap().is_none(), "every pane came while the job ran");
    assert!(Command::new("kill").args(["-TERM", &live.id().to_string()]).status().unwrap().success());
    assert!(live.wait().unwrap().success(), "{}", log());
}
