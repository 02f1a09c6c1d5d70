//! What the Parquet tests share: sample events, files written with arrow-rs's own writer
//! (so the source is tested against files it did not write), a plain-Rust oracle for
//! the windowed sum, and the windowed-sum pipeline under test.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use riffle_engine::prelude::*;
use serde::{Deserialize, Serialize};

/// One event as the row type of the tests.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    pub user_id: String,
    pub ts: i64,
    pub amount: i64,
}

/// One output row of the windowed sum.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Total {
    pub user_id: String,
    pub window_start: i64,
    pub window_end: i64,
    pub total: i64,
}

pub const HOUR: i64 = 3_600_000;
pub const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// `n` deterministic pseudo-random events over `hours` hours, in time order.
pub fn events(n: usize, hours: i64) -> Vec<Event> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out: Vec<Event> = (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Event {
                user_id: format!("u{}", x % 13),
                ts: T0 + (i as i64 * hours * HOUR) / n as i64 + (x >> 40) as i64 % 1000,
                amount: (x >> 20) as i64 % 1000 - 200,
            }
        })
        .collect();
    out.sort_by_key(|e| e.ts);
    out
}

/// The Arrow schema of the input files: ts as a UTC millisecond timestamp.
pub fn event_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("amount", DataType::Int64, false),
    ]))
}

pub fn event_batch(events: &[Event]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(events.iter().map(|e| e.user_id.as_str()))),
        Arc::new(TimestampMillisecondArray::from_iter_values(events.iter().map(|e| e.ts)).with_timezone("UTC")),
        Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.amount))),
    ];
    RecordBatch::try_new(event_schema(), cols).unwrap()
}

/// `events` as one Parquet file in memory, `rows_per_group` rows per row group.
pub fn parquet_bytes(events: &[Event], rows_per_group: usize) -> Vec<u8> {
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(rows_per_group)).build();
    let mut w = ArrowWriter::try_new(Vec::new(), event_schema(), Some(props)).unwrap();
    for chunk in events.chunks(rows_per_group) {
        w.write(&event_batch(chunk)).unwrap();
    }
    w.into_inner().unwrap()
}

/// Writes `events` as `files` local files of several row groups each, under `dir`.
pub fn write_files(dir: &std::path::Path, events: &[Event], files: usize, rows_per_group: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, chunk) in events.chunks(events.len().div_ceil(files)).enumerate() {
        std::fs::write(dir.join(format!("events-{i:03}.parquet")), parquet_bytes(chunk, rows_per_group)).unwrap();
    }
}

/// The windowed sum, computed directly.
pub fn oracle(events: &[Event], window: i64) -> Vec<Total> {
    let mut sums: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for e in events {
        *sums.entry((e.user_id.clone(), e.ts - e.ts.rem_euclid(window))).or_default() += e.amount;
    }
    sums.into_iter()
        .map(|((user_id, start), total)| Total { user_id, window_start: start, window_end: start + window, total })
        .collect()
}

/// Turns a (user, total) pane into an output row with its window; asserts it is the
/// only, on-time pane (nothing may be late in batch or backfill mode).
#[derive(Clone)]
pub struct ToTotal;

impl DoFn for ToTotal {
    type In = (String, i64);
    type Out = Total;
    fn process(&mut self, (user_id, total): &(String, i64), ctx: &mut ProcessContext<'_, Total>) {
        let Window::Interval { start, end } = ctx.window() else { panic!("expected a fixed window") };
        assert_eq!(ctx.pane(), PaneInfo::ON_TIME_AND_ONLY_FIRING, "every pane is the on-time one");
        ctx.output(Total {
            user_id: user_id.clone(),
            window_start: start.millis(),
            window_end: end.millis(),
            total: *total,
        });
    }
}

/// The pipeline under test: sum of amount per user per fixed window.
pub fn windowed_sum(events: &PCollection<Event>, window: i64) -> PCollection<Total> {
    events
        .window_into(FixedWindows::of_millis(window))
        .map(|e| (e.user_id, e.amount))
        .combine_per_key(Sum::new())
        .par_do(ToTotal)
}
