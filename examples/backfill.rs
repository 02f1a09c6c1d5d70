//! Sums amount per user per fixed window over Parquet events, writing Parquet totals.
//!
//! ```text
//! cargo run --release --example backfill -- --mode backfill     # embedded sample, to stdout
//! cargo run --release --example make_events -- --output /tmp/events --events 1000000 --days 30
//! cargo run --release --example backfill -- --input /tmp/events --output /tmp/totals --window 1h --mode backfill
//! ```
//!
//! Input columns: `user_id` (utf8), `ts` (timestamp ms UTC), `amount` (int64); any
//! other columns (such as `date=` partitions) are not read. Output columns: `user_id`,
//! `window_start` and `window_end` (timestamp ms UTC), `total` (int64), one file per
//! worker per day of windows, in `date=YYYY-MM-DD/` folders.
//!
//! `--mode batch` holds the watermark until everything is read, so every window's
//! state is held at once; `--mode backfill` reads row groups in event-time order and
//! moves the watermark with them, so windows fire and are freed as the read goes. The
//! rows written are the same. The peak memory of this process (VmHWM) is printed to
//! stderr at the end.

#[path = "shared/user_totals.rs"]
mod user_totals;

use clap::{Parser, ValueEnum};
use riffle_engine::prelude::*;
use riffle_parquet::{OutputMode, ReadParquet, WriteParquet};
use user_totals::{Event, parse_duration_ms, user_totals};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Read everything, then fire every window (Beam's batch).
    Batch,
    /// Read in event-time order, firing windows as the watermark passes them.
    Backfill,
}

/// Sums amount per user per fixed window.
#[derive(Parser, Debug)]
#[command(about = "Sums amount per user per fixed window over Parquet events, writing Parquet.")]
struct Args {
    /// Input: a path, file://, s3:// or hdfs:// URL; a file, a directory/prefix or a glob.
    /// Without it, a small embedded sample is written as Parquet to a temporary directory
    /// and read from there.
    #[arg(long, value_name = "URL")]
    input: Option<String>,
    /// Output directory or prefix (file://, s3://, hdfs://). Without it, the totals are
    /// printed, sorted.
    #[arg(long, value_name = "URL")]
    output: Option<String>,
    /// What to do with files already at --output: error-if-exists (refuse to start),
    /// overwrite (replace them at the commit), overwrite-partitions (replace the `date=`
    /// folders this run writes), append (add beside them).
    #[arg(long, value_name = "MODE", default_value = "error-if-exists")]
    output_mode: OutputMode,
    /// Window length: a number with a unit, s, m, h or d (e.g. 15m, 1h, 1d).
    #[arg(long, default_value = "1h", value_parser = parse_duration_ms)]
    window: i64,
    /// How the source moves the watermark.
    #[arg(long, value_enum, default_value_t = Mode::Batch)]
    mode: Mode,
    #[command(flatten)]
    run: riffle_timely::RunOptions,
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `timestamp_ms,user,amount`: the quickstart's sales, as events.
const SAMPLE: &str = "\
1767225600000,ana,1250
1767225900000,bo,399
1767226500000,ana,800
1767229200000,bo,1500
1767229500000,ana,200
1767230000000,cy,2500
1767232800000,bo,50
";

/// Writes the embedded sample as Parquet under `dir` (with Riffle's own sink) and
/// returns its location.
fn write_sample(dir: &std::path::Path) -> anyhow::Result<String> {
    let events: Vec<Event> = SAMPLE
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Event { user_id: f[1].to_string(), ts: f[0].parse().unwrap(), amount: f[2].parse().unwrap() }
        })
        .collect();
    let url = dir.join("events").display().to_string();
    let p = Pipeline::new();
    WriteParquet::to(&url).timestamp_millis("ts").write(&p.create(events));
    riffle_timely::run(&p, &riffle_timely::RunOptions::threads(1))?;
    Ok(url)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Without --input, the launcher writes the sample where every process of a local
    // cluster finds it.
    let scratch = riffle_timely::shared_scratch_dir("backfill-sample");
    let input = match &args.input {
        Some(url) => url.clone(),
        None if riffle_timely::is_cluster_member() => scratch.join("events").display().to_string(),
        None => write_sample(&scratch)?,
    };
    let p = Pipeline::new();
    let events = ReadParquet::<Event>::from(&input)
        .timestamp_column("ts")
        .backfill(args.mode == Mode::Backfill)
        .read(&p)
        .named("ReadEvents");
    let totals = user_totals(&events, args.window, None);
    match &args.output {
        Some(url) => WriteParquet::to(url)
            .mode(args.output_mode)
            .timestamp_millis("window_start")
            .timestamp_millis("window_end")
            .write(&totals),
        None => riffle_connectors::stdout::print_lines(&totals, |t| {
            format!("{}\t{}\t{}\t{}", t.user_id, t.window_start, t.window_end, t.total)
        }),
    }
    let ran = riffle_timely::run(&p, &args.run);
    if args.input.is_none() {
        std::fs::remove_dir_all(&scratch).ok();
    }
    let report = ran?;
    if let Some(mib) = peak_rss_mib() {
        eprintln!(
            "backfill example: mode {:?}, {:.2} s, peak RSS {mib:.1} MiB (this process)",
            args.mode,
            report.elapsed.as_secs_f64()
        );
    }
    Ok(())
}
