//! One expected answer, many ways of computing it (DESIGN.md P2).
//!
//! A pipeline that uses every grouping path (windowed combine, GroupByKey, CoGroupByKey,
//! Flatten, Partition, Distinct, combine_globally, reshuffle) runs at 1 worker, 4
//! workers and 2 processes x 2 workers (two real OS processes on loopback), and each
//! run's output must equal an answer computed directly from the input with plain Rust
//! collections, sharing no code with the engine.
//!
//! Bug classes caught: keys routed to different workers on different processes (an
//! unstable hash), lost or duplicated elements in the exchange, panes fired before all
//! input arrived (a broken watermark or hold), windows assigned differently per worker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use riffle_connectors::text::write_lines;
use riffle_engine::prelude::*;
use riffle_timely::RunOptions;
use riffle_timely::testing::{cluster_scratch_dir, local_cluster};

/// (user, amount, timestamp ms): deterministic pseudo-random events over ~3 hours.
fn events() -> Vec<(u32, i64, i64)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..6000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let user = (x % 37) as u32;
            let amount = ((x >> 8) % 1000) as i64 - 100;
            let ts = 1_700_000_000_000 + ((x >> 20) % 10_800_000) as i64;
            (user, amount, ts)
        })
        .collect()
}

const HOUR: i64 = 3_600_000;

/// The pipeline under test; every branch writes tagged lines to one sorted file.
fn pipeline(p: &Pipeline, out: &Path) {
    let input = p.create(events()).with_timestamps(|(_, _, ts)| EventTime::from_millis(*ts)).named("Events");

    let hourly = input
        .window_into(FixedWindows::of_millis(HOUR))
        .map(|(u, a, _)| (u, a))
        .combine_per_key(Sum::new())
        .par_do(FormatWindowed);

    let by_user = input.map(|(u, a, _)| (u, a)).group_by_key().map(|(u, mut amounts)| {
        amounts.sort();
        format!("gbk\t{u}\t{}\t{}\t{}", amounts.len(), amounts[0], amounts[amounts.len() - 1])
    });

    let parts = input.reshuffle().partition(2, |(_, a, _), _| usize::from(*a < 0));
    let (credits, debits) = (parts[0].map(|(u, a, _)| (u, a)), parts[1].map(|(u, a, _)| (u, a)));
    let joined = credits.co_group_by_key(&debits).map(|(u, (c, d))| format!("cogbk\t{u}\t{}\t{}", c.len(), d.len()));

    let distinct = input.map(|(_, a, _)| a.rem_euclid(7)).distinct().map(|r| format!("distinct\t{r}"));
    let max = input.map(|(_, a, _)| a).combine_globally(Max::new()).map(|m| format!("max\t{m}"));
    let counts = input.map(|(u, _, _)| u % 5).count_per_element().map(|(r, n)| format!("count\t{r}\t{n}"));

    let sessions = input
        .map(|(u, a, _)| (u, a))
        .window_into(Sessions::with_gap_millis(SESSION_GAP))
        .combine_per_key(Count::new())
        .par_do(FormatSession)
        .window_into(GlobalWindows);

    let all = PCollection::flatten(&[by_user, joined, distinct, max, counts, sessions]);
    let all = PCollection::flatten(&[all.window_into(GlobalWindows), hourly.window_into(GlobalWindows)]);
    write_lines(&all, out, |l| l.clone());
}

const SESSION_GAP: i64 = 60_000;

#[derive(Clone)]
struct FormatSession;

impl DoFn for FormatSession {
    type In = (u32, u64);
    type Out = String;
    fn process(&mut self, (u, n): &(u32, u64), ctx: &mut ProcessContext<'_, String>) {
        let Window::Interval { start, end } = ctx.window() else { panic!("expected a session window") };
        ctx.output(format!("session\t{u}\t{}\t{}\t{n}", start.millis(), end.millis()));
    }
}

#[derive(Clone)]
struct FormatWindowed;

impl DoFn for FormatWindowed {
    type In = (u32, i64);
    type Out = String;
    fn process(&mut self, (u, sum): &(u32, i64), ctx: &mut ProcessContext<'_, String>) {
        let Window::Interval { start, .. } = ctx.window() else { panic!("expected a fixed window") };
        assert_eq!(ctx.pane(), PaneInfo::ON_TIME_AND_ONLY_FIRING);
        assert_eq!(ctx.timestamp().millis(), start.millis() + HOUR - 1, "end-of-window timestamp");
        ctx.output(format!("hourly\t{u}\t{}\t{sum}", start.millis()));
    }
}

/// The same answer, computed without Riffle.
fn expected() -> Vec<String> {
    let ev = events();
    let mut lines = Vec::new();
    let mut hourly: BTreeMap<(u32, i64), i64> = BTreeMap::new();
    let mut by_user: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    let mut cogbk: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for &(u, a, ts) in &ev {
        *hourly.entry((u, ts - ts.rem_euclid(HOUR))).or_default() += a;
        by_user.entry(u).or_default().push(a);
        let e = cogbk.entry(u).or_default();
        if a < 0 {
            e.1 += 1
        } else {
            e.0 += 1
        }
        *counts.entry(u % 5).or_default() += 1;
    }
    for ((u, start), s) in hourly {
        lines.push(format!("hourly\t{u}\t{start}\t{s}"));
    }
    for (u, mut v) in by_user {
        v.sort();
        lines.push(format!("gbk\t{u}\t{}\t{}\t{}", v.len(), v[0], v[v.len() - 1]));
    }
    for (u, (c, d)) in cogbk {
        lines.push(format!("cogbk\t{u}\t{c}\t{d}"));
    }
    let distinct: BTreeSet<i64> = ev.iter().map(|(_, a, _)| a.rem_euclid(7)).collect();
    lines.extend(distinct.iter().map(|r| format!("distinct\t{r}")));
    lines.push(format!("max\t{}", ev.iter().map(|e| e.1).max().unwrap()));
    lines.extend(counts.iter().map(|(r, n)| format!("count\t{r}\t{n}")));
    // Sessions: per user in time order, a session goes on while the next event starts
    // before the last one's timestamp plus the gap.
    let mut by_user: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    ev.iter().for_each(|&(u, _, ts)| by_user.entry(u).or_default().push(ts));
    for (u, mut times) in by_user {
        times.sort();
        let (mut start, mut end, mut n) = (times[0], times[0] + SESSION_GAP, 0);
        for ts in times {
            if ts >= end {
                lines.push(format!("session\t{u}\t{start}\t{end}\t{n}"));
                (start, n) = (ts, 0);
            }
            end = end.max(ts + SESSION_GAP);
            n += 1;
        }
        lines.push(format!("session\t{u}\t{start}\t{end}\t{n}"));
    }
    lines.sort();
    lines
}

fn run_and_read(opts: &RunOptions, dir: &Path) -> Vec<String> {
    let out = dir.join("out.txt");
    let p = Pipeline::new();
    pipeline(&p, &out);
    riffle_timely::run(&p, opts).expect("the pipeline runs");
    let text = std::fs::read_to_string(&out).expect("the output file exists");
    text.lines().map(str::to_string).collect()
}

fn check(got: Vec<String>) {
    let want = expected();
    assert_eq!(got.len(), want.len(), "line count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
}

#[test]
fn one_worker() {
    let dir = tempfile::tempdir().unwrap();
    check(run_and_read(&RunOptions::threads(1), dir.path()));
}

#[test]
fn four_workers() {
    let dir = tempfile::tempdir().unwrap();
    check(run_and_read(&RunOptions::threads(4), dir.path()));
}

#[test]
fn two_processes_of_two_workers() {
    let dir = cluster_scratch_dir("two_processes_of_two_workers");
    let got = run_and_read(&local_cluster(2, 2, "two_processes_of_two_workers"), &dir);
    std::fs::remove_dir_all(&dir).ok();
    check(got);
}
