//! The backfill job side by side with Polars and DataFusion: the same query on the same
//! files, in the same run, every output checked equal row for row.
//!
//! ```text
//! cargo bench -p riffle-benches --bench backfill_peers                 # 10M events, 3 runs each
//! cargo bench -p riffle-benches --bench backfill_peers -- 2000000 1    # events, runs
//! ```
//!
//! Data: `events` over 30 days of hive-partitioned Parquet (`date=YYYY-MM-DD/`), `user_id`
//! utf8 of 2,000 users with Zipf-skewed popularity (s = 1.1), `ts` timestamp ms, `amount`
//! int64; rows in random order within each day, row groups of 5,000 rows. Written once
//! under `target/bench-data/` and reused.
//!
//! Query: sum of `amount` per user per hour, written as Parquet. **Riffle**: the `backfill`
//! example's pipeline (`examples/shared/user_totals.rs`) in backfill mode at 2 workers.
//! **Polars** and **DataFusion** (2 partitions): their Python wheels, in a venv this
//! program creates under `target/bench-venv/` (pip, from PyPI), running
//! `benches/peers/backfill.py`. Each engine runs in its own process, so its peak RSS is
//! its own; job time is from the start of reading to the output written (Riffle: the run
//! report's; the peers: measured in the script), median of the runs with the spread
//! (slowest / fastest).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

#[path = "../examples/shared/user_totals.rs"]
#[allow(dead_code)]
mod user_totals;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use riffle_engine::prelude::*;
use riffle_parquet::{OutputMode, ReadParquet, WriteParquet};
use user_totals::{Event, user_totals};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
const DAYS: i64 = 30;
const USERS: u64 = 2_000;
const ROW_GROUP: usize = 5_000;
const WORKERS: usize = 2;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--child") {
        let (input, output) = (&args[1], &args[2]);
        return riffle_child(input, output);
    }
    let events: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("target");
    let data = target.join(format!("bench-data/backfill-{events}"));
    if !data.join("_complete").exists() {
        eprintln!("writing {events} events to {} ...", data.display());
        write_events(&data, events);
    }
    let python = venv(&target.join("bench-venv"));
    let out_root = tempfile::tempdir().expect("a temporary directory");
    let mut rows: Vec<(&str, Vec<Run>)> = Vec::new();
    let mut reference: Option<Vec<Row>> = None;
    for engine in ["riffle", "datafusion", "polars"] {
        let mut measured = Vec::new();
        for r in 0..runs {
            let out = out_root.path().join(format!("{engine}-{r}"));
            let run = match engine {
                "riffle" => run_riffle(&data, &out),
                peer => run_peer(&python, peer, &data, &out),
            };
            // Every output, of every run, equal row for row to the first.
            let got = read_totals(&out);
            match &reference {
                None => reference = Some(got),
                Some(want) => assert!(got == *want, "{engine} run {r}: its output differs from riffle's"),
            }
            measured.push(run);
        }
        rows.push((engine, measured));
    }
    let totals = reference.map_or(0, |r| r.len());
    println!("backfill: {events} events, 30 days, {USERS} users (Zipf), sum per user per hour -> Parquet");
    println!("every output equal row for row ({totals} rows); median of {runs} runs (spread: slowest/fastest)");
    println!(
        "{:<26} {:>8} {:>8} {:>9} {:>12} {:>15} {:>13}",
        "engine", "job s", "spread", "Mev/s", "peak RSS MiB", "time / riffle", "RSS / riffle"
    );
    let median = |v: &[Run], f: fn(&Run) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let riffle = (median(&rows[0].1, |r| r.seconds), median(&rows[0].1, |r| r.peak_mib));
    for (engine, measured) in &rows {
        let (secs, mib) = (median(measured, |r| r.seconds), median(measured, |r| r.peak_mib));
        let spread = measured.iter().map(|r| r.seconds).fold(0.0, f64::max)
            / measured.iter().map(|r| r.seconds).fold(f64::INFINITY, f64::min);
        let name = match *engine {
            "riffle" => format!("riffle backfill, {WORKERS} workers"),
            "datafusion" => format!("datafusion, {WORKERS} partitions"),
            other => other.to_string(),
        };
        println!(
            "{name:<26} {secs:>8.2} {spread:>7.2}x {:>9.2} {mib:>12.1} {:>14.2}x {:>12.2}x",
            events as f64 / secs / 1e6,
            secs / riffle.0,
            mib / riffle.1
        );
    }
    println!("(time / riffle above 1: the engine is slower than Riffle; goal: Riffle no slower than either peer)");
}

/// One engine's run.
struct Run {
    seconds: f64,
    peak_mib: f64,
}

/// Runs Riffle's backfill job in a child process (this program, `--child`).
fn run_riffle(data: &Path, out: &Path) -> Run {
    let exe = std::env::current_exe().expect("this program");
    let o = Command::new(exe).arg("--child").arg(data).arg(out).output().expect("run the riffle child");
    assert!(o.status.success(), "riffle failed: {}", String::from_utf8_lossy(&o.stderr));
    parse_run(&o.stdout)
}

fn riffle_child(input: &str, output: &str) {
    let p = Pipeline::new();
    let events = ReadParquet::<Event>::from(input).timestamp_column("ts").backfill(true).read(&p).named("ReadEvents");
    let totals = user_totals(&events, HOUR, None);
    WriteParquet::to(output)
        .mode(OutputMode::Overwrite)
        .timestamp_millis("window_start")
        .timestamp_millis("window_end")
        .write(&totals);
    let opts = riffle_timely::RunOptions { no_progress: true, ..riffle_timely::RunOptions::threads(WORKERS) };
    let report = riffle_timely::run(&p, &opts).expect("the backfill runs");
    println!("{{\"seconds\":{},\"peak_rss_kib\":{}}}", report.elapsed.as_secs_f64(), peak_rss_kib());
}

/// Runs a peer engine's script in the venv.
fn run_peer(python: &Path, engine: &str, data: &Path, out: &Path) -> Run {
    std::fs::create_dir_all(out).expect("an output directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/backfill.py");
    let o = Command::new(python)
        .arg(script)
        .args([engine, &data.display().to_string(), &out.join("totals.parquet").display().to_string()])
        .args([HOUR.to_string(), WORKERS.to_string()])
        .env("POLARS_MAX_THREADS", WORKERS.to_string())
        .env("RAYON_NUM_THREADS", WORKERS.to_string())
        .output()
        .expect("run the peer's script");
    assert!(o.status.success(), "{engine} failed: {}", String::from_utf8_lossy(&o.stderr));
    parse_run(&o.stdout)
}

fn parse_run(stdout: &[u8]) -> Run {
    let line = String::from_utf8_lossy(stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or_default()).expect("a JSON line");
    Run {
        seconds: v["seconds"].as_f64().expect("seconds"),
        peak_mib: v["peak_rss_kib"].as_f64().expect("peak RSS") / 1024.0,
    }
}

/// A venv with Polars and DataFusion, created on first use.
fn venv(dir: &Path) -> PathBuf {
    let python = dir.join("bin/python");
    let ready = dir.join("_ready");
    if !ready.exists() {
        eprintln!("creating {} with polars, datafusion and pyarrow (pip) ...", dir.display());
        let ok = Command::new("python3").args(["-m", "venv"]).arg(dir).status().is_ok_and(|s| s.success());
        assert!(ok, "python3 -m venv {} failed: install python3-venv", dir.display());
        let ok = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "polars", "datafusion", "pyarrow"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pip install polars datafusion pyarrow failed");
        std::fs::write(&ready, "").expect("mark the venv ready");
    }
    python
}

/// Writes the data set: a directory per day, one file each, rows in random order.
fn write_events(dir: &Path, events: u64) {
    let _ = std::fs::remove_dir_all(dir);
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("amount", DataType::Int64, false),
    ]));
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let zipf = rand_distr::Zipf::new(USERS as f64, 1.1).expect("a Zipf distribution");
    let per_day = events.div_ceil(DAYS as u64);
    let mut written = 0;
    for day in 0..DAYS {
        let n = per_day.min(events - written);
        written += n;
        let day_dir = dir.join(format!("date={}", date(day)));
        std::fs::create_dir_all(&day_dir).expect("a day's directory");
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let file = std::fs::File::create(day_dir.join("part-0.parquet")).expect("a file");
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props)).expect("a writer");
        let mut left = n;
        while left > 0 {
            let len = left.min(ROW_GROUP as u64);
            left -= len;
            let users: Vec<String> = (0..len).map(|_| format!("user{:05}", zipf.sample(&mut rng) as u64)).collect();
            let ts: Vec<i64> = (0..len).map(|_| T0 + day * DAY + rng.random_range(0..DAY)).collect();
            let amounts: Vec<i64> = (0..len).map(|_| rng.random_range(0..10_000)).collect();
            let cols: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(users)),
                Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
                Arc::new(Int64Array::from(amounts)),
            ];
            w.write(&RecordBatch::try_new(schema.clone(), cols).expect("a batch")).expect("a row group");
        }
        w.close().expect("the file's footer");
    }
    std::fs::write(dir.join("_complete"), "").expect("mark the data complete");
}

/// `YYYY-MM-DD` of 2026-01-01 plus `day` days.
fn date(day: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(T0 + day * DAY).expect("a date in range");
    t.strftime("%Y-%m-%d").to_string()
}

/// (user, window start, total), sorted.
type Row = (String, i64, i64);

/// Every row of every Parquet file under `dir` (names starting with `_` or `.` skipped).
fn read_totals(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("an output directory") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".parquet") {
                read_file(&path, &mut rows);
            }
        }
    }
    rows.sort();
    rows
}

fn read_file(path: &Path, rows: &mut Vec<Row>) {
    let file = std::fs::File::open(path).expect("an output file");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("a Parquet file")
        .build()
        .expect("a reader");
    for batch in reader {
        let batch = batch.expect("a batch");
        let col = |name: &str| batch.column_by_name(name).unwrap_or_else(|| panic!("{name} in {}", path.display()));
        let users = strings(col("user_id"));
        let starts = ints(col("window_start"));
        let totals = ints(col("total"));
        rows.extend(users.into_iter().zip(starts).zip(totals).map(|((u, s), t)| (u, s, t)));
    }
}

/// A string column, whichever string type the engine wrote.
fn strings(a: &ArrayRef) -> Vec<String> {
    use arrow_array::cast::AsArray;
    match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()).collect(),
        DataType::LargeUtf8 => a.as_string::<i64>().iter().map(|s| s.unwrap_or_default().to_string()).collect(),
        DataType::Utf8View => a.as_string_view().iter().map(|s| s.unwrap_or_default().to_string()).collect(),
        other => panic!("user_id is {other}"),
    }
}

/// An integer or millisecond-timestamp column as i64.
fn ints(a: &ArrayRef) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMillisecondType};
    match a.data_type() {
        DataType::Int64 => a.as_primitive::<Int64Type>().values().to_vec(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => a.as_primitive::<TimestampMillisecondType>().values().to_vec(),
        other => panic!("expected int64 or timestamp(ms), got {other} ({} rows)", a.len()),
    }
}

/// Peak resident memory of this process, from /proc (Linux).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
