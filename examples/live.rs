//! The `backfill` example's pipeline, live: sums amount per user per fixed window over a
//! Kafka-protocol topic, writing a record per pane to another topic.
//!
//! ```text
//! cargo run --release --example live -- --brokers 127.0.0.1:9092 --topic events \
//!     --output-topic totals --window 1h --out-of-orderness 5s [--idle-timeout 30s] \
//!     [--early 10s] [--bounded] [--group-id ID] [--output URL] \
//!     [--checkpoint-dir DIR] [--transactional-id ID]
//! ```
//!
//! Input records: key `user_id`, value JSON `{"user_id": str, "ts": int ms UTC, "amount":
//! int}`. Output records: key `user_id`, value JSON `{"user_id", "window_start",
//! "window_end", "total"}` (ms UTC), one per pane, at the pane's timestamp. Without
//! `--early` each window fires once, on time, when every partition's watermark (its
//! greatest `ts` less `--out-of-orderness`) has passed its end; `--early` adds early panes
//! by processing time. `--output URL` writes Parquet (as `backfill` does) instead of a
//! topic; with neither, totals are printed. Records whose value is not such JSON are
//! printed as dead letters with their partition and offset.
//!
//! With `--output-topic` and `--checkpoint-dir`, output is exactly-once: records are
//! saved in each checkpoint and written in one transaction once it is complete, so a
//! consumer that reads with `isolation.level=read_committed` sees each pane once, across
//! kills and resumes (docs/checkpoints.md, "Exactly-once Kafka output"); output then lags
//! by up to a checkpoint interval. Without `--checkpoint-dir` it is written as it fires.
//!
//! Unbounded by default: it runs until SIGINT or SIGTERM, which stop it cleanly (windows
//! in flight fire with what they have, the sink flushes, exit 0). `--bounded` reads each
//! partition to the end it had at start, then stops: the topic's history as a batch.
//!
//! **Backfill, then live**: `--history URL --switch-at TIME` first replays the Parquet
//! files at URL (as `backfill --mode backfill` reads them), then goes on with the topic, as
//! one source: events before TIME come from the files, events at or after it from the
//! topic, each partition starting at the offset for TIME less the out-of-orderness. TIME
//! is ISO-8601 (`2026-01-03T00:00:00Z`), milliseconds since the epoch, or `auto`: the
//! earliest time every partition still holds. Windows that span the switch fire once,
//! with both parts. See docs/connectors.md, "Backfill, then live".

#[path = "shared/user_totals.rs"]
mod user_totals;

use clap::Parser;
use riffle_engine::WatermarkStrategy;
use riffle_engine::prelude::*;
use riffle_kafka::{ReadKafka, StartAt, SwitchAt, WriteKafka};
use riffle_parquet::{OutputMode, ReadParquet, WriteParquet};
use user_totals::{Event, parse_duration_ms, user_totals};

/// Sums amount per user per fixed window over a Kafka-protocol topic, live.
#[derive(Parser, Debug)]
#[command(
    about = "Sums amount per user per fixed window over a Kafka-protocol topic. Runs until SIGINT or SIGTERM, which stop it cleanly (windows in flight fire, the sink flushes, exit 0); with --bounded, until each partition's end at start."
)]
struct Args {
    /// Bootstrap servers, host:port[,host:port...].
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The topic of events to read.
    #[arg(long, default_value = "events")]
    topic: String,
    /// The topic to write a record per pane to. With --checkpoint-dir, exactly-once:
    /// each checkpoint's records are written in one transaction once it is complete, so
    /// consumers that read with isolation.level=read_committed see each pane once, across
    /// kills and resumes (output lags by up to --checkpoint-interval).
    #[arg(long, value_name = "TOPIC")]
    output_topic: Option<String>,
    /// The transactional id of the exactly-once output (default riffle-<output topic>):
    /// the same for every run that resumes one job, another for another job.
    #[arg(long, value_name = "ID", requires = "output_topic")]
    transactional_id: Option<String>,
    /// Write Parquet here instead (a path, file://, s3:// or hdfs:// URL).
    #[arg(long, value_name = "URL", conflicts_with = "output_topic")]
    output: Option<String>,
    /// What to do with files already at --output: error-if-exists (refuse to start),
    /// overwrite, overwrite-partitions or append.
    #[arg(long, value_name = "MODE", default_value = "error-if-exists")]
    output_mode: OutputMode,
    /// Window length: a number with a unit, ms, s, m, h or d.
    #[arg(long, default_value = "1h", value_parser = parse_duration_ms)]
    window: i64,
    /// How far out of order an event may be within its partition and still be on time.
    #[arg(long, default_value = "5s", value_parser = parse_duration_ms)]
    out_of_orderness: i64,
    /// A partition that has read nothing for this long stops holding the watermark back.
    #[arg(long, value_parser = parse_duration_ms)]
    idle_timeout: Option<i64>,
    /// Early panes this often (processing time) while a window is open.
    #[arg(long, value_parser = parse_duration_ms)]
    early: Option<i64>,
    /// Read each partition to its end at start, then stop.
    #[arg(long)]
    bounded: bool,
    /// Start from this consumer group's committed offsets (default: the earliest).
    #[arg(long, conflicts_with = "history")]
    group_id: Option<String>,
    /// Replay these Parquet files first (a path, file://, s3:// or hdfs:// URL), then go on
    /// with the topic from --switch-at.
    #[arg(long, value_name = "URL", requires = "switch_at")]
    history: Option<String>,
    /// Where history hands over to the topic: ISO-8601 (2026-01-03T00:00:00Z),
    /// milliseconds since the epoch, or `auto` (the earliest time every partition still
    /// holds). Events before it come from --history, events at or after it from the topic.
    #[arg(long, value_name = "TIME", requires = "history", value_parser = parse_switch_at)]
    switch_at: Option<SwitchAt>,
    #[command(flatten)]
    run: riffle_timely::RunOptions,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    riffle_timely::stop_on_signals()?;
    let mut strategy = WatermarkStrategy::bounded_out_of_orderness(args.out_of_orderness);
    if let Some(ms) = args.idle_timeout {
        strategy = strategy.with_idle_timeout(ms);
    }
    let mut read = ReadKafka::<Event>::topic(&args.topic)
        .brokers(&args.brokers)
        .bounded(args.bounded)
        .watermarks(strategy)
        .event_time(|e| EventTime::from_millis(e.ts));
    if let Some(group) = &args.group_id {
        read = read.group_id(group).start_at(StartAt::Committed);
    }
    if let (Some(url), Some(at)) = (&args.history, args.switch_at) {
        let switch_at = read.switch_point(at)?;
        eprintln!("live example: history from {url} before {}, then topic {}", show_time(switch_at), args.topic);
        let history = ReadParquet::<Event>::from(url)
            .timestamp_column("ts")
            .backfill(true)
            .time_range(EventTime::MIN, switch_at)
            .source()?;
        read = read.after_history(history, switch_at);
    }
    let p = Pipeline::new();
    let (events, dead) = read.read(&p);
    let totals = user_totals(&events, args.window, args.early);
    riffle_connectors::stdout::print_lines(&dead, |d| {
        format!("dead letter: partition {} offset {}: {}", d.partition, d.offset, d.reason)
    });
    match (&args.output_topic, &args.output) {
        (Some(topic), _) => {
            let mut sink = WriteKafka::topic(topic)
                .brokers(&args.brokers)
                .key(|t: &user_totals::Total| t.user_id.clone())
                .exactly_once(args.run.checkpoint_dir.is_some());
            if let Some(id) = &args.transactional_id {
                sink = sink.transactional_id(id);
            }
            sink.write(&totals)
        }
        (None, Some(url)) => WriteParquet::to(url)
            .mode(args.output_mode)
            .timestamp_millis("window_start")
            .timestamp_millis("window_end")
            .write(&totals),
        (None, None) => riffle_connectors::stdout::print_lines(&totals, |t| {
            format!("{}\t{}\t{}\t{}", t.user_id, t.window_start, t.window_end, t.total)
        }),
    }
    let report = riffle_timely::run(&p, &args.run)?;
    eprintln!("live example: stopped after {:.2} s", report.elapsed.as_secs_f64());
    Ok(())
}

/// `--switch-at`: `auto`, ISO-8601, or milliseconds since the epoch.
fn parse_switch_at(s: &str) -> Result<SwitchAt, String> {
    if s == "auto" {
        return Ok(SwitchAt::Auto);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(SwitchAt::At(EventTime::from_millis(ms)));
    }
    let t: jiff::Timestamp = s.parse().map_err(|e| {
        format!("{s:?}: expected `auto`, an ISO-8601 time such as 2026-01-03T00:00:00Z, or milliseconds ({e})")
    })?;
    Ok(SwitchAt::At(EventTime::from_millis(t.as_millisecond())))
}

/// An event time as ISO-8601, for the log.
fn show_time(t: EventTime) -> String {
    jiff::Timestamp::from_millisecond(t.millis()).map_or_else(|_| format!("{} ms", t.millis()), |ts| ts.to_string())
}
