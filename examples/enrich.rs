//! Enriches events with a user table read from Parquet as a map side input: each event
//! gets its user's name and country, and events of unknown users go to a dead-letter
//! output with the reason.
//!
//! ```text
//! cargo run --release --example enrich                       # embedded data
//! cargo run --release --example enrich -- --processes 2 --workers 2
//! ```
//!
//! Every worker receives the whole user table; an event waits until the table is read (the
//! side input is in the global window, so it is complete when its source ends).

use riffle_engine::prelude::*;
use riffle_parquet::{ReadParquet, WriteParquet};
use serde::{Deserialize, Serialize};

/// `user_id,name,country`.
const USERS: &str = "\
u1,Ana,PT
u2,Bo,SE
u3,Cy,KE
";

/// `user_id,amount`: purchases.
const EVENTS: &str = "\
u1,1250
u2,399
u9,10
u3,2500
u1,800
";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct User {
    user_id: String,
    name: String,
    country: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Event {
    user_id: String,
    amount: i64,
}

/// Writes the embedded tables as Parquet under `dir`; returns (users, events) locations.
fn write_tables(dir: &std::path::Path) -> anyhow::Result<(String, String)> {
    let (users, events) = (dir.join("users").display().to_string(), dir.join("events").display().to_string());
    let p = Pipeline::new();
    let user_rows: Vec<User> = USERS
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            User { user_id: f[0].into(), name: f[1].into(), country: f[2].into() }
        })
        .collect();
    let event_rows: Vec<Event> = EVENTS
        .lines()
        .map(|l| {
            let (id, amount) = l.split_once(',').expect("user,amount");
            Event { user_id: id.into(), amount: amount.parse().expect("an amount") }
        })
        .collect();
    WriteParquet::to(&users).write(&p.create(user_rows));
    WriteParquet::to(&events).write(&p.create(event_rows));
    riffle_timely::run(&p, &riffle_timely::RunOptions::threads(1))?;
    Ok((users, events))
}

fn main() -> anyhow::Result<()> {
    let cli = <riffle_timely::Cli as clap::Parser>::parse();
    let scratch = riffle_timely::shared_scratch_dir("enrich");
    let (users_url, events_url) = if riffle_timely::is_cluster_member() {
        (scratch.join("users").display().to_string(), scratch.join("events").display().to_string())
    } else {
        write_tables(&scratch)?
    };
    let p = Pipeline::new();
    let users = ReadParquet::<User>::from(&users_url).read(&p).named("ReadUsers");
    let by_id = users.map(|u| (u.user_id, (u.name, u.country))).as_map();
    let events = ReadParquet::<Event>::from(&events_url).read(&p).named("ReadEvents");
    let enriched = events
        .map_with(&by_id, |e, users| match users.get(&e.user_id) {
            Some((name, country)) => Ok(format!("{name}\t{country}\t{}", e.amount)),
            None => Err(format!("unknown user {:?} (amount {})", e.user_id, e.amount)),
        })
        .named("Enrich");
    let rows = enriched.flat_map(|r: Result<String, String>| r.ok()).named("Enriched");
    let dead_letters = enriched.flat_map(|r: Result<String, String>| r.err()).named("DeadLetters");
    riffle_connectors::stdout::print_lines(&rows, |line| line.clone());
    riffle_connectors::stdout::print_lines(&dead_letters, |why| format!("dead letter: {why}"));
    let ran = riffle_timely::run(&p, &cli.run);
    if !riffle_timely::is_cluster_member() {
        std::fs::remove_dir_all(&scratch).ok();
    }
    ran?;
    Ok(())
}
