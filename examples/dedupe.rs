//! Drops repeated event ids within a day of the first: a stateful DoFn keeps, per id, when
//! it was first seen, and an event-time timer a day later forgets it, so the state does not
//! grow with the number of ids ever seen.
//!
//! ```text
//! cargo run --release --example dedupe                       # embedded events
//! cargo run --release --example dedupe -- --processes 2 --workers 2
//! ```
//!
//! The events are written as Parquet and read back in backfill mode, so the watermark
//! moves through them as it would on a stream, and a timer fires between the events
//! before and after it (a bounded read in batch mode holds the watermark until the end, so
//! every timer would fire after every event). The output is the same at any worker or
//! process count: an id's events go to one worker, in timestamp order.

use riffle_engine::prelude::*;
use riffle_parquet::{ReadParquet, WriteParquet};
use serde::{Deserialize, Serialize};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01 00:00 UTC

/// `id,minutes since 2026-01-01 00:00`: an order system that sometimes sends twice.
const EVENTS: &str = "\
order-1,0
order-2,5
order-1,7
order-3,60
order-2,1400
order-1,1445
order-3,1501
order-4,1502
order-3,1600
";

/// One event as a Parquet row.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Event {
    id: String,
    ts: i64,
}

/// Keeps the first event of an id within a day of it.
#[derive(Clone)]
struct FirstWithinADay;

impl StatefulDoFn for FirstWithinADay {
    type K = String;
    type V = i64;
    type Out = (String, i64);
    type State = ValueState<EventTime>;

    fn process(
        &mut self,
        id: &String,
        ts: &i64,
        seen: &mut ValueState<EventTime>,
        ctx: &mut StateContext<'_, Self::Out>,
    ) {
        if seen.read().is_none() {
            seen.write(ctx.timestamp());
            ctx.output((id.clone(), *ts));
            ctx.set_event_timer("forget", ctx.timestamp().plus_millis(DAY));
        }
    }

    fn on_timer(&mut self, _: &String, _: &str, seen: &mut ValueState<EventTime>, _: &mut StateContext<'_, Self::Out>) {
        seen.clear();
    }
}

/// Writes the embedded events as Parquet under `dir`, a row group per event.
fn write_events(dir: &std::path::Path) -> anyhow::Result<String> {
    let url = dir.join("events").display().to_string();
    let events: Vec<Event> = EVENTS
        .lines()
        .map(|l| {
            let (id, minute) = l.split_once(',').expect("id,minute");
            Event { id: id.to_string(), ts: T0 + minute.parse::<i64>().expect("a minute") * 60_000 }
        })
        .collect();
    let p = Pipeline::new();
    WriteParquet::to(&url).timestamp_millis("ts").row_group_size(1).write(&p.create(events));
    riffle_timely::run(&p, &riffle_timely::RunOptions::threads(1))?;
    Ok(url)
}

fn main() -> anyhow::Result<()> {
    let cli = <riffle_timely::Cli as clap::Parser>::parse();
    // Every process of a local cluster reads what the launcher wrote.
    let scratch = riffle_timely::shared_scratch_dir("dedupe");
    let url = if riffle_timely::is_cluster_member() {
        scratch.join("events").display().to_string()
    } else {
        write_events(&scratch)?
    };
    let p = Pipeline::new();
    let events = ReadParquet::<Event>::from(&url).timestamp_column("ts").backfill(true).read(&p);
    let firsts = events.map(|e| (e.id, e.ts)).par_do_stateful(FirstWithinADay).named("Dedupe");
    riffle_connectors::stdout::print_lines(&firsts, |(id, ts)| format!("{id}\tminute {}", (ts - T0) / 60_000));
    let ran = riffle_timely::run(&p, &cli.run);
    if !riffle_timely::is_cluster_member() {
        std::fs::remove_dir_all(&scratch).ok();
    }
    ran?;
    Ok(())
}
