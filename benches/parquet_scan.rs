//! Scanning a multi-file Parquet dataset into typed rows: Riffle's Parquet source
//! against arrow-rs's own reader on the same files, in the same run.
//!
//! ```text
//! cargo bench -p riffle-benches --bench parquet_scan                # 8 files x 500k rows
//! cargo bench -p riffle-benches --bench parquet_scan -- 1000000 3   # rows per file, repetitions
//! ```
//!
//! The dataset: 8 snappy files of `user_id` (utf8), `ts` (timestamp ms), `amount`
//! (int64) and a `note` column the row type does not read, in row groups of 128k rows,
//! written to a temporary directory. Riffle reads them with `ReadParquet::<Event>` (event
//! time from `ts`) into a sink that sums `amount` per batch; the baseline opens each
//! file with `ParquetRecordBatchReader` (same projection, batches of 1024 rows),
//! converts every batch to `Vec<Event>` with serde_arrow and sums `amount`, on as many
//! threads as Riffle has workers, each taking every n-th file. Both sums must agree.
//! Each figure is the median wall time over the repetitions; the ratio is Riffle's
//! throughput over the baseline's (goal: 0.8 or better).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use riffle_engine::Batch;
use riffle_engine::prelude::*;
use riffle_engine::runtime::{SinkFn, SinkWriter, StepContext};
use riffle_parquet::ReadParquet;
use riffle_timely::RunOptions;
use serde::{Deserialize, Serialize};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FILES: usize = 8;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Event {
    user_id: String,
    ts: i64,
    amount: i64,
}

fn write_dataset(dir: &std::path::Path, rows_per_file: usize) -> i64 {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("amount", DataType::Int64, false),
        Field::new("note", DataType::Utf8, false),
    ]));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut total = 0;
    for f in 0..FILES {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(128 * 1024))
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let file = std::fs::File::create(dir.join(format!("part-{f}.parquet"))).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
        for chunk in (0..rows_per_file).collect::<Vec<_>>().chunks(65_536) {
            let (mut u, mut t, mut a, mut n) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for &i in chunk {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                u.push(format!("user{:05}", x % 10_000));
                t.push(1_767_225_600_000 + (f * rows_per_file + i) as i64);
                let amount = (x >> 40) as i64 % 10_000;
                total += amount;
                a.push(amount);
                n.push("a note the row type does not read");
            }
            let cols: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(u)),
                Arc::new(TimestampMillisecondArray::from(t).with_timezone("UTC")),
                Arc::new(Int64Array::from(a)),
                Arc::new(StringArray::from(n)),
            ];
            w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap()).unwrap();
        }
        w.close().unwrap();
    }
    total
}

/// Sums `amount` as rows arrive, per worker: the least a pipeline can do with them.
struct SumSink(Arc<AtomicI64>);

struct SumWriter(Arc<AtomicI64>);

impl SinkFn for SumSink {
    fn gathers(&self) -> bool {
        false
    }
    fn open(&self, _ctx: &StepContext) -> riffle_engine::Result<Box<dyn SinkWriter>> {
        Ok(Box::new(SumWriter(self.0.clone())))
    }
}

impl SinkWriter for SumWriter {
    fn write(&mut self, input: Batch) -> riffle_engine::Result<()> {
        let sum: i64 = input.into_elements::<Event>().values().iter().map(|e| e.amount).sum();
        self.0.fetch_add(sum, Ordering::Relaxed);
        Ok(())
    }
    fn finish(&mut self) -> riffle_engine::Result<()> {
        Ok(())
    }
}

fn riffle(dir: &str, workers: usize) -> i64 {
    let p = Pipeline::new();
    let total = Arc::new(AtomicI64::new(0));
    ReadParquet::<Event>::from(dir).timestamp_column("ts").read(&p).write_to("Sum", Arc::new(SumSink(total.clone())));
    riffle_timely::run(&p, &RunOptions::threads(workers)).expect("riffle job");
    total.load(Ordering::Relaxed)
}

fn arrow_rs(dir: &std::path::Path, threads: usize) -> i64 {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<_> = files.iter().skip(t).step_by(threads).cloned().collect();
                s.spawn(move || {
                    let mut sum = 0;
                    for path in mine {
                        let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
                        let mask = ProjectionMask::roots(b.parquet_schema(), [0, 1, 2]);
                        for batch in b.with_projection(mask).with_batch_size(1024).build().unwrap() {
                            let rows: Vec<Event> = serde_arrow::from_record_batch(&batch.unwrap()).unwrap();
                            sum += rows.iter().map(|e| e.amount).sum::<i64>();
                        }
                    }
                    sum
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

fn median(reps: usize, mut f: impl FnMut() -> i64) -> (Duration, i64) {
    let mut times = Vec::new();
    let mut result = 0;
    for _ in 0..reps {
        let t = Instant::now();
        result = f();
        times.push(t.elapsed());
    }
    times.sort();
    (times[reps / 2], result)
}

fn main() {
    let nums: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rows_per_file = nums.first().copied().unwrap_or(500_000);
    let reps = nums.get(1).copied().unwrap_or(3).max(1);
    let dir = tempfile::tempdir().unwrap();
    let want = write_dataset(dir.path(), rows_per_file);
    let n = (rows_per_file * FILES) as f64;
    let bytes: u64 = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "Parquet scan into typed rows: {FILES} files, {} rows, {:.0} MiB, median of {reps} runs, {cores} cores",
        n as u64,
        bytes as f64 / (1 << 20) as f64
    );
    println!("{:>8} {:>14} {:>16} {:>8}", "workers", "riffle Mrow/s", "arrow-rs Mrow/s", "ratio");
    let url = dir.path().display().to_string();
    for w in [1, 2] {
        let (rt, rs) = median(reps, || riffle(&url, w));
        let (at, asum) = median(reps, || arrow_rs(dir.path(), w));
        assert_eq!(rs, want, "Riffle read every row once");
        assert_eq!(asum, want, "the baseline read every row once");
        let (rr, ar) = (n / rt.as_secs_f64() / 1e6, n / at.as_secs_f64() / 1e6);
        println!("{w:>8} {rr:>14.2} {ar:>16.2} {:>7.2}x", rr / ar);
    }
}
