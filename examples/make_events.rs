//! Writes sample events for the `backfill` example: Parquet files of `user_id` (utf8),
//! `ts` (timestamp ms UTC) and `amount` (int64), one file per day in `date=` directories,
//! each sorted by time in row groups of `--row-group` rows.
//!
//! ```text
//! cargo run --release --example make_events -- --output /tmp/events --events 10000000 --days 30
//! ```
//!
//! The events are pseudo-random but the same for the same arguments.

use std::sync::Arc;

use clap::Parser;
use riffle_parquet::arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use riffle_parquet::arrow_schema::{DataType, Field, Schema, TimeUnit};

/// Writes sample events.
#[derive(Parser, Debug)]
struct Args {
    /// Directory to write (created).
    #[arg(long)]
    output: std::path::PathBuf,
    /// Events in all.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Days they span, from 2026-01-01.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Distinct users.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Rows per row group.
    #[arg(long, default_value_t = 100_000)]
    row_group: usize,
}

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAY: i64 = 86_400_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("amount", DataType::Int64, false),
    ]));
    let per_day = args.events.div_ceil(args.days.max(1));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut written = 0;
    for day in 0..args.days as i64 {
        let n = per_day.min(args.events - written);
        written += n;
        let date = chrono_free_date(day);
        let dir = args.output.join(format!("date={date}"));
        std::fs::create_dir_all(&dir)?;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(args.row_group))
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let file = std::fs::File::create(dir.join("events.parquet"))?;
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        let mut start = 0;
        while start < n {
            let len = (n - start).min(args.row_group as u64);
            let (mut users, mut ts, mut amounts) = (Vec::new(), Vec::new(), Vec::new());
            for i in start..start + len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                users.push(format!("user{:05}", x % args.users));
                ts.push(T0 + day * DAY + (i as i64 * DAY) / n as i64);
                amounts.push((x >> 32) as i64 % 10_000);
            }
            let cols: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(users)),
                Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
                Arc::new(Int64Array::from(amounts)),
            ];
            w.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
            start += len;
        }
        w.close()?;
    }
    eprintln!("wrote {written} events over {} days to {}", args.days, args.output.display());
    Ok(())
}

/// `YYYY-MM-DD` of 2026-01-01 plus `day` days (civil-from-days, Howard Hinnant's).
fn chrono_free_date(day: i64) -> String {
    let z = (T0 / DAY) + day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
