//! The events the Kafka example tests produce, and the totals a batch run gives for them.
#![allow(dead_code)]

use riffle_engine::prelude::*;
use riffle_kafka::testing::Broker;
use serde::{Deserialize, Serialize};

use super::example;

/// An input event of the `live` and `backfill` examples.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub user_id: String,
    pub ts: i64,
    pub amount: i64,
}

/// An output record of the `live` example.
#[derive(Clone, Debug, Deserialize)]
pub struct Total {
    pub user_id: String,
    pub window_start: i64,
    pub window_end: i64,
    pub total: i64,
}

pub const HOUR: i64 = 3_600_000;
pub const START: i64 = 1_767_225_600_000; // 2026-01-01 00:00 UTC

/// `n` events 36 s apart from [`START`], 5 users, on 3 partitions, each at most 3 s out of
/// order within its partition (the jobs allow 5 s): nothing is late.
pub fn events(n: i64) -> Vec<(i32, Event)> {
    (0..n)
        .map(|i| {
            let ts = START + i * 36_000 - (i * 7 % 5) * 600;
            ((i % 3) as i32, Event { user_id: format!("u{}", i % 5), ts, amount: i % 13 + 1 })
        })
        .collect()
}

/// Produces `events` to `topic`, keyed by user, at their event times.
pub fn produce(broker: &dyn Broker, topic: &str, events: &[(i32, Event)]) {
    let records: Vec<_> =
        events.iter().map(|(p, e)| (*p, e.user_id.clone(), serde_json::to_vec(e).unwrap(), e.ts)).collect();
    broker.produce(topic, &records);
}

/// Writes `rows` as Parquet at `url` with Riffle's own sink.
pub fn write_parquet(url: &str, rows: Vec<Event>, store: Option<riffle_parquet::StoreOptions>) {
    let p = Pipeline::new();
    let mut sink = riffle_parquet::WriteParquet::to(url).timestamp_millis("ts");
    if let Some(store) = store {
        sink = sink.options(store);
    }
    sink.write(&p.create(rows));
    riffle_timely::run(&p, &riffle_timely::RunOptions::threads(1)).unwrap();
}

/// The hourly totals `backfill` computes over every event once, as the `live` example
/// prints them, sorted.
pub fn batch_totals(events: &[(i32, Event)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("all").display().to_string();
    write_parquet(&url, events.iter().map(|(_, e)| e.clone()).collect(), None);
    let out = example("backfill").args(["--input", &url, "--window", "1h", "--mode", "backfill"]).output().unwrap();
    assert!(out.status.success(), "backfill: {}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    lines.sort();
    lines
}
