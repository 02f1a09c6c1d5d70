//! Kafka consume throughput: Riffle's `ReadKafka` (bounded, JSON into a struct, into a
//! discarding sink) against a plain rdkafka consumer that reads and decodes the same
//! partitions in the same run, both from a tansu broker on loopback.
//!
//! ```text
//! cargo bench -p riffle-benches --bench kafka                 # 400,000 records
//! cargo bench -p riffle-benches --bench kafka -- 1000000      # records
//! ```
//!
//! Then latency: records produced at a fixed rate for 10 s, event time = the wall clock at
//! produce, into 2-second windows (out-of-orderness 200 ms) whose panes carry their newest
//! record's time (a `Max` combine) to an output topic; a consumer notes when each pane
//! arrives. A pane's latency is its arrival less the production of the newest record in
//! it: on-time panes only, and with early panes every second of processing time.
//!
//! Last, memory under a slow sink: a bounded read of the whole topic into a sink that
//! sleeps 2 ms per batch, with this process's resident memory sampled every 50 ms. The
//! source paces itself on the sink, so the backlog waits in the broker, not in memory.
//!
//! The broker runs on the same 2 cores, so both figures include its cost; the ratio is
//! the point. tansu reports a partition's end as its last batch's base offset plus one
//! (Kafka: its last offset plus one), so both readers stop there, a little before the
//! true end; they read the same records.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use riffle_engine::prelude::*;
use riffle_kafka::testing::Tansu;
use riffle_kafka::{ReadKafka, WriteKafka};
use riffle_timely::RunOptions;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Event {
    user_id: String,
    ts: i64,
    amount: i64,
}

const PARTITIONS: i32 = 4;

/// The same fetch settings for both readers: answers as soon as there is data.
const FETCH: &[(&str, &str)] = &[("fetch.wait.max.ms", "10")];

fn produce(broker: &Tansu, n: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    for i in 0..n {
        let e = Event { user_id: format!("u{}", i % 1000), ts: 1_767_225_600_000 + i as i64, amount: (i % 97) as i64 };
        let value = serde_json::to_vec(&e).unwrap();
        let mut record =
            BaseRecord::to("events").partition((i % PARTITIONS as u64) as i32).key(&e.user_id).payload(&value);
        record = record.timestamp(e.ts);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

/// The plain consumer: every partition from the beginning to its end, decoding each value.
fn plain(broker: &Tansu) -> (u64, Duration) {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.brokers()).set("group.id", "bench-plain").set("enable.auto.commit", "false");
    for (k, v) in FETCH {
        config.set(*k, *v);
    }
    let c: BaseConsumer = config.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..PARTITIONS {
        let (_, high) = c.fetch_watermarks("events", p, Duration::from_secs(5)).unwrap();
        ends.push(high);
        tpl.add_partition_offset("events", p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let start = Instant::now();
    let mut done = vec![false; PARTITIONS as usize];
    let mut n = 0u64;
    while !done.iter().all(|d| *d) {
        let Some(m) = c.poll(Duration::from_millis(100)) else { continue };
        let m = m.unwrap();
        let p = m.partition() as usize;
        if done[p] || m.offset() >= ends[p] {
            continue;
        }
        let e: Event = serde_json::from_slice(m.payload().unwrap()).unwrap();
        std::hint::black_box(e);
        n += 1;
        if m.offset() + 1 >= ends[p] {
            done[p] = true;
        }
    }
    (n, start.elapsed())
}

fn riffle(broker: &Tansu, workers: usize) -> (u64, Duration) {
    let p = Pipeline::new();
    let mut read = ReadKafka::<Event>::topic("events").brokers(&broker.brokers()).bounded(true);
    for (k, v) in FETCH {
        read = read.client_config(k, v);
    }
    let (events, _) = read.read(&p);
    riffle_connectors::memory::discard(&events);
    let report = riffle_timely::run(&p, &RunOptions::threads(workers)).unwrap();
    (report.elements_in("Discard").iter().sum(), report.elapsed)
}

/// Latency of panes (ms) at `rate` records/s for `secs` seconds; `early`: early panes
/// every second.
fn latency(rate: u64, secs: u64, early: bool) -> Vec<i64> {
    let broker = Tansu::start();
    broker.create_topic("live", PARTITIONS as u32);
    broker.create_topic("panes", 1);
    let brokers = broker.brokers();
    let job = std::thread::spawn(move || {
        let p = Pipeline::new();
        let mut read = ReadKafka::<Event>::topic("live")
            .brokers(&brokers)
            .event_time(|e| EventTime::from_millis(e.ts))
            .watermarks(riffle_engine::WatermarkStrategy::bounded_out_of_orderness(200));
        for (k, v) in FETCH {
            read = read.client_config(k, v);
        }
        let (events, _) = read.read(&p);
        let windowed = events.map(|e| (e.user_id, e.ts)).window_into(FixedWindows::of_millis(2_000));
        let windowed = if early {
            windowed
                .triggering(Trigger::after_watermark().with_early_firings(Trigger::after_processing_time(1_000)))
                .accumulating_fired_panes()
        } else {
            windowed
        };
        let newest = windowed.combine_per_key(Max::new());
        WriteKafka::topic("panes").brokers(&brokers).key(|(u, _): &(String, i64)| u.clone()).write(&newest);
        riffle_timely::run(&p, &RunOptions::threads(2))
    });
    // Arrivals, read by a consumer thread until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seen, brokers) = (stop.clone(), broker.brokers());
    let reader = std::thread::spawn(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "bench-latency")
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("panes", 0, Offset::Beginning).unwrap();
        c.assign(&tpl).unwrap();
        let mut latencies = Vec::new();
        while !seen.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(10)) {
                let (_, newest): (String, i64) = serde_json::from_slice(m.payload().unwrap()).unwrap();
                latencies.push(now_ms() - newest);
            }
        }
        latencies
    });
    // The input, at a fixed rate, one record per batch (tansu's high watermark is per batch).
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", broker.brokers()).set("linger.ms", "0").create().unwrap();
    let start = Instant::now();
    for i in 0..rate * secs {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let e = Event { user_id: format!("u{}", i % 10), ts: now_ms(), amount: 1 };
        let value = serde_json::to_vec(&e).unwrap();
        let record = BaseRecord::to("live").partition((i % PARTITIONS as u64) as i32).key(&e.user_id).payload(&value);
        producer.send(record.timestamp(e.ts)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    // Panes of the last windows still come on time (their watermark passes with the clock
    // only through new records): leave them out, and stop the job.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut latencies = reader.join().unwrap();
    riffle_timely::request_stop();
    job.join().unwrap().unwrap();
    riffle_timely::reset_stop();
    latencies.sort_unstable();
    latencies
}

/// A sink that takes 2 ms per batch.
struct SlowSink;

impl riffle_engine::runtime::SinkFn for SlowSink {
    fn gathers(&self) -> bool {
        false
    }
    fn open(
        &self,
        _ctx: &riffle_engine::runtime::StepContext,
    ) -> riffle_engine::Result<Box<dyn riffle_engine::runtime::SinkWriter>> {
        Ok(Box::new(SlowSink))
    }
}

impl riffle_engine::runtime::SinkWriter for SlowSink {
    fn write(&mut self, input: riffle_engine::Batch) -> riffle_engine::Result<()> {
        std::hint::black_box(input);
        std::thread::sleep(Duration::from_millis(2));
        Ok(())
    }
    fn finish(&mut self) -> riffle_engine::Result<()> {
        Ok(())
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory (KiB) sampled while the topic is read into the slow sink, and how long
/// the read took.
fn slow_sink(broker: &Tansu) -> (Vec<u64>, Duration) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            samples.push(rss_kib());
            std::thread::sleep(Duration::from_millis(50));
        }
        samples
    });
    let p = Pipeline::new();
    let (events, _) = ReadKafka::<Event>::topic("events").brokers(&broker.brokers()).bounded(true).read(&p);
    events.write_to("SlowSink", std::sync::Arc::new(SlowSink));
    let report = riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    (sampler.join().unwrap(), report.elapsed)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(400_000);
    let broker = Tansu::start();
    broker.create_topic("events", PARTITIONS as u32);
    produce(&broker, n);
    let rate = |(k, d): (u64, Duration)| k as f64 / d.as_secs_f64() / 1e6;
    println!(
        "Kafka consume, {n} JSON records on {PARTITIONS} partitions (tansu on loopback), median of 3 interleaved rounds"
    );
    println!("{:<26} {:>10} {:>10} {:>8}", "reader", "records", "Mrec/s", "spread");
    // Interleaved rounds, so that the broker's own warm-up and drift fall on every reader.
    let readers = [("plain rdkafka consumer", 0), ("riffle, 1 worker", 1), ("riffle, 2 workers", 2)];
    let mut runs: Vec<Vec<(u64, Duration)>> = vec![Vec::new(); readers.len()];
    for _ in 0..3 {
        for (i, (_, workers)) in readers.iter().enumerate() {
            runs[i].push(if *workers == 0 { plain(&broker) } else { riffle(&broker, *workers) });
        }
    }
    let mut results = Vec::new();
    for ((name, _), mut r) in readers.iter().zip(runs) {
        r.sort_by_key(|x| x.1);
        let spread = r[2].1.as_secs_f64() / r[0].1.as_secs_f64();
        println!("{name:<26} {:>10} {:>10.3} {spread:>7.2}x", r[1].0, rate(r[1]));
        results.push(r[1]);
    }
    assert_eq!(results[0].0, results[2].0, "both read the same records");
    println!("riffle at 2 workers / plain consumer: {:.2}x (goal 0.8x or better)", rate(results[2]) / rate(results[0]));
    println!("riffle at 1 worker / plain consumer: {:.2}x", rate(results[1]) / rate(results[0]));
    println!();
    println!("Kafka end-to-end latency: 1,000 records/s for 10 s, 2 s windows, out-of-orderness 200 ms, 2 workers");
    println!("{:<28} {:>7} {:>9} {:>9}", "panes", "count", "p50 ms", "p99 ms");
    for (name, early) in [("on time only", false), ("early every 1 s", true)] {
        let l = latency(1_000, 10, early);
        assert!(!l.is_empty(), "no pane arrived");
        println!("{name:<28} {:>7} {:>9} {:>9}", l.len(), percentile(&l, 0.5), percentile(&l, 0.99));
    }
    println!();
    let before = rss_kib();
    let (samples, took) = slow_sink(&broker);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1024.0;
    println!(
        "memory under a slow sink (2 ms a batch), {} s to drain the topic, 2 workers: RSS MiB at 10% / 25% / 50% / 75% / 100% of the run",
        took.as_secs()
    );
    println!(
        "  {:.1} / {:.1} / {:.1} / {:.1} / {:.1} (before the job: {:.1}; 90% over 10% of the run: {:.2}x, goal flat)",
        at(0.1),
        at(0.25),
        at(0.5),
        at(0.75),
        at(1.0),
        before as f64 / 1024.0,
        at(0.9) / at(0.1)
    );
}
