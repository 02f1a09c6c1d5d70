//! Riffle's quickstart: hourly spend per user from a small embedded sales log.
//!
//! Run it with `cargo run --release --example quickstart` (add `-- --workers 2`, or
//! `-- --processes 2 --workers 2` for a local two-process cluster: the answer is the same).
//!
//! It shows the shape of every Riffle pipeline: a source, a ParDo that parses records and
//! sends the malformed ones to a dead-letter output with the reason, event timestamps,
//! fixed windows, a combine per key, and sinks. Then the same sales go through Parquet:
//! written to a temporary directory with Riffle's Parquet sink, and read back in backfill
//! mode (row groups in event-time order, the watermark following them), giving the same
//! hourly totals. `cargo run --example backfill` is that job on any Parquet URL.

use clap::Parser;
use riffle_connectors::stdout::print_lines;
use riffle_engine::prelude::*;
use riffle_parquet::{ReadParquet, WriteParquet};

/// `timestamp_ms,user,amount_cents`, as a sales system might log them; two lines are bad.
const SALES: &str = "\
1767225600000,ana,1250
1767225900000,bo,399
1767226500000,ana,800
1767227000000,cy,oops
1767229200000,bo,1500
1767229500000,ana,200
1767230000000,cy,2500
not-a-timestamp,ana,100
1767232800000,bo,50
";

/// One parsed sale.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Sale {
    user: String,
    cents: i64,
}

/// Parses a log line; a line that does not parse goes to the dead-letter output with why.
#[derive(Clone)]
struct ParseSale {
    dead_letter: TupleTag<String>,
}

impl DoFn for ParseSale {
    type In = String;
    type Out = Sale;
    fn process(&mut self, line: &String, ctx: &mut ProcessContext<'_, Sale>) {
        let fields: Vec<&str> = line.split(',').collect();
        let parsed = match fields[..] {
            [ts, user, cents] => ts
                .parse::<i64>()
                .map_err(|e| format!("bad timestamp {ts:?}: {e}"))
                .and_then(|ts| Ok((ts, user, cents.parse::<i64>().map_err(|e| format!("bad amount {cents:?}: {e}"))?))),
            _ => Err(format!("expected 3 fields, got {}", fields.len())),
        };
        match parsed {
            Ok((ts, user, cents)) => {
                ctx.output_with_timestamp(Sale { user: user.to_string(), cents }, EventTime::from_millis(ts))
            }
            Err(why) => ctx.output_to(&self.dead_letter, format!("{line:?}: {why}")),
        }
    }
}

/// A sale as a Parquet row: `user_id` (utf8), `ts` (timestamp ms), `amount` (int64).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct SaleRow {
    user_id: String,
    ts: i64,
    amount: i64,
}

/// Parses the log and splits off the dead letters.
fn parse(p: &Pipeline) -> (PCollection<Sale>, PCollection<String>) {
    let lines = p.create(SALES.lines().map(str::to_string).collect());
    let dead_letter = TupleTag::<String>::new("dead-letter");
    let (sales, rejected) = lines.par_do_with_outputs(ParseSale { dead_letter: dead_letter.clone() }, &[&dead_letter]);
    (sales.named("ParseSales"), rejected.get(&dead_letter))
}

/// Hourly spend per user, formatted with its window, each line starting with `from`.
fn hourly(sales: &PCollection<(String, i64)>, from: &'static str) -> PCollection<String> {
    let totals = sales.window_into(FixedWindows::of_millis(3_600_000)).combine_per_key(Sum::new());
    // A DoFn sees the window of its element.
    totals.par_do(WithWindow { from })
}

/// Writes the parsed sales as Parquet to `dir/sales` (one small job on this process).
fn write_parquet(dir: &std::path::Path) -> anyhow::Result<()> {
    let url = dir.join("sales").display().to_string();
    let p = Pipeline::new();
    let rows = parse(&p).0.par_do(ToRow);
    WriteParquet::to(&url).timestamp_millis("ts").write(&rows);
    riffle_timely::run(&p, &riffle_timely::RunOptions::threads(1))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = riffle_timely::Cli::parse();
    // Every process of a local cluster reads the sample the launcher wrote.
    let scratch = riffle_timely::shared_scratch_dir("quickstart");
    if !riffle_timely::is_cluster_member() {
        write_parquet(&scratch)?;
    }
    let parquet = scratch.join("sales").display().to_string();

    let p = Pipeline::new();
    let (sales, rejected) = parse(&p);
    let from_log = hourly(&sales.map(|s| (s.user, s.cents)), "log    ");
    print_lines(&rejected, |bad| format!("dead letter: {bad}"));

    // The same sales from Parquet, in backfill mode: the same totals.
    let rows = ReadParquet::<SaleRow>::from(&parquet).timestamp_column("ts").backfill(true).read(&p);
    let from_parquet = hourly(&rows.map(|r| (r.user_id, r.amount)), "parquet");
    print_lines(&PCollection::flatten(&[from_log, from_parquet]), |line| line.clone());

    let ran = riffle_timely::run(&p, &cli.run);
    std::fs::remove_dir_all(&scratch).ok();
    ran?;
    Ok(())
}

/// A parsed sale as a Parquet row, its event timestamp as the `ts` column.
#[derive(Clone)]
struct ToRow;

impl DoFn for ToRow {
    type In = Sale;
    type Out = SaleRow;
    fn process(&mut self, sale: &Sale, ctx: &mut ProcessContext<'_, SaleRow>) {
        let ts = ctx.timestamp().millis();
        ctx.output(SaleRow { user_id: sale.user.clone(), ts, amount: sale.cents });
    }
}

/// Formats a total with its window and where it came from, e.g.
/// `log     hour starting 2026-01-01 00:00  ana    20.50`.
#[derive(Clone)]
struct WithWindow {
    from: &'static str,
}

impl DoFn for WithWindow {
    type In = (String, i64);
    type Out = String;
    fn process(&mut self, (user, cents): &(String, i64), ctx: &mut ProcessContext<'_, String>) {
        let start = match ctx.window() {
            Window::Interval { start, .. } => start.millis(),
            Window::Global => 0,
        };
        let hour = (start / 3_600_000) % 24;
        let day = start / 86_400_000 - 20_454; // days since 2026-01-01
        ctx.output(format!(
            "{} hour starting 2026-01-{:02} {hour:02}:00  {user:<4} {:>4}.{:02}",
            self.from,
            day + 1,
            cents / 100,
            cents % 100
        ));
    }
}
