//! Riffle's quickstart: hourly spend per user from a small embedded sales log.
//!
//! Run it with `cargo run --release --example quickstart` (add `-- --workers 2`, or
//! `-- --processes 2 --workers 2` for a local two-process cluster: the answer is the same).
//!
//! It shows the shape of every Riffle pipeline: a source, a ParDo that parses records and
//! sends the malformed ones to a dead-letter output with the reason, event timestamps,
//! fixed windows, a combine per key, and sinks. `cargo run --example backfill` runs the
//! same sales through Parquet (written, then read back in backfill mode).

use clap::Parser;
use riffle_connectors::stdout::print_lines;
use riffle_engine::prelude::*;

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

fn main() -> anyhow::Result<()> {
    let cli = riffle_timely::Cli::parse();
    let p = Pipeline::new();

    let lines = p.create(SALES.lines().map(str::to_string).collect());
    let dead_letter = TupleTag::<String>::new("dead-letter");
    let (sales, rejected) = lines.par_do_with_outputs(ParseSale { dead_letter: dead_letter.clone() }, &[&dead_letter]);
    let sales = sales.named("ParseSales");

    let hourly = sales
        .window_into(FixedWindows::of_millis(3_600_000))
        .map(|s| (s.user.clone(), s.cents))
        .combine_per_key(Sum::new())
        .named("SpendPerUserPerHour");

    // Print the window with each total: a DoFn sees the window of its element.
    let report = hourly.par_do(WithWindow);
    print_lines(&report, |line| line.clone());
    print_lines(&rejected.get(&dead_letter), |bad| format!("dead letter: {bad}"));

    riffle_timely::run(&p, &cli.run)?;
    Ok(())
}

/// Formats a total with its window, e.g. `[2026-01-01 00:00, +1h) ana  20.50`.
#[derive(Clone)]
struct WithWindow;

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
            "hour starting 2026-01-{:02} {hour:02}:00  {user:<4} {:>4}.{:02}",
            day + 1,
            cents / 100,
            cents % 100
        ));
    }
}
