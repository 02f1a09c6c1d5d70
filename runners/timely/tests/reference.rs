//! Random pipelines against a reference computed without the runner (differential's
//! `reduce_reference` idea).
//!
//! Inputs are random keyed values with random, unordered timestamps; the pipeline is a
//! random filter, random windows (global, fixed, sliding or sessions) and a random
//! aggregation.
//! The reference computes the same thing with a `BTreeMap`, sharing no code with Riffle.
//!
//! Bug classes caught: wrong window assignment at boundaries and for negative times,
//! combiner lifting that double-counts or drops partial accumulators, elements lost
//! between workers, aggregations that depend on arrival order.

use std::collections::BTreeMap;

use proptest::prelude::*;
use riffle_engine::prelude::*;
use riffle_timely::RunOptions;
use riffle_timely::testing::try_run_windowed;

#[derive(Clone, Copy, Debug)]
enum Agg {
    Sum,
    Count,
    Max,
    Mean,
    Group,
    Top2,
}

#[derive(Clone, Copy, Debug)]
enum Windows {
    Global,
    /// (size, period): fixed when equal.
    Sliding(i64, i64),
    /// The gap.
    Sessions(i64),
}

#[derive(Clone, Debug)]
struct Case {
    input: Vec<(u8, i32, i64)>,
    keep_above: i32,
    window: Windows,
    agg: Agg,
    workers: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((0u8..12, -500i32..500, -5_000i64..5_000), 0..300),
        -600i32..400,
        prop_oneof![
            Just(Windows::Global),
            (1i64..3_000).prop_map(|s| Windows::Sliding(s, s)),
            (1i64..2_000, 1i64..2_000).prop_map(|(s, p)| Windows::Sliding(s, p)),
            (1i64..800).prop_map(Windows::Sessions),
        ],
        prop_oneof![
            Just(Agg::Sum),
            Just(Agg::Count),
            Just(Agg::Max),
            Just(Agg::Mean),
            Just(Agg::Group),
            Just(Agg::Top2)
        ],
        prop_oneof![Just(1usize), Just(3usize)],
    )
        .prop_map(|(input, keep_above, window, agg, workers)| Case { input, keep_above, window, agg, workers })
}

/// A result line: key, window start (or None for global), and the aggregate as text.
type Row = (u8, Option<i64>, String);

fn reference(c: &Case) -> Vec<Row> {
    let mut groups: BTreeMap<(u8, Option<i64>), Vec<i32>> = BTreeMap::new();
    let kept: Vec<(u8, i32, i64)> = c.input.iter().copied().filter(|(_, v, _)| *v > c.keep_above).collect();
    match c.window {
        Windows::Global => kept.iter().for_each(|&(k, v, _)| groups.entry((k, None)).or_default().push(v)),
        // Beam's definition: every window [j*period, j*period + size) holding ts.
        Windows::Sliding(size, period) => {
            for &(k, v, ts) in &kept {
                for j in (ts - size).div_euclid(period) + 1..=ts.div_euclid(period) {
                    groups.entry((k, Some(j * period))).or_default().push(v);
                }
            }
        }
        // Per key, in time order: a session goes on while the next element starts before
        // the session's end (t + gap of its latest element).
        Windows::Sessions(gap) => {
            let mut by_key: BTreeMap<u8, Vec<(i64, i32)>> = BTreeMap::new();
            kept.iter().for_each(|&(k, v, ts)| by_key.entry(k).or_default().push((ts, v)));
            for (k, mut events) in by_key {
                events.sort();
                let (mut start, mut end) = (i64::MIN, i64::MIN);
                for (ts, v) in events {
                    if ts >= end {
                        start = ts;
                    }
                    end = end.max(ts + gap);
                    groups.entry((k, Some(start))).or_default().push(v);
                }
            }
        }
    }
    groups.into_iter().map(|((k, w), mut vs)| (k, w, render(c.agg, &mut vs))).collect()
}

fn render(agg: Agg, vs: &mut [i32]) -> String {
    vs.sort();
    match agg {
        Agg::Sum => vs.iter().map(|v| *v as i64).sum::<i64>().to_string(),
        Agg::Count => vs.len().to_string(),
        Agg::Max => vs.last().unwrap().to_string(),
        Agg::Mean => format!("{:.6}", vs.iter().map(|v| *v as f64).sum::<f64>() / vs.len() as f64),
        Agg::Group => format!("{vs:?}"),
        Agg::Top2 => format!("{:?}", vs.iter().rev().take(2).collect::<Vec<_>>()),
    }
}

fn riffle(c: &Case) -> Vec<Row> {
    let opts = RunOptions::threads(c.workers);
    let case = c.clone();
    let out = try_run_windowed(&opts, move |p| {
        let keep = case.keep_above;
        let mut kv = p
            .create(case.input.clone())
            .with_timestamps(|(_, _, ts)| EventTime::from_millis(*ts))
            .filter(move |(_, v, _)| *v > keep)
            .map(|(k, v, _)| (k, v));
        match case.window {
            Windows::Sliding(size, period) if size == period => kv = kv.window_into(FixedWindows::of_millis(size)),
            Windows::Sliding(size, period) => kv = kv.window_into(SlidingWindows::of_millis(size, period)),
            Windows::Sessions(gap) => kv = kv.window_into(Sessions::with_gap_millis(gap)),
            Windows::Global => {}
        }
        match case.agg {
            Agg::Sum => kv.map_values(|v| v as i64).combine_per_key(Sum::new()).map_values(|s| s.to_string()),
            Agg::Count => kv.combine_per_key(Count::new()).map_values(|n| n.to_string()),
            Agg::Max => kv.combine_per_key(Max::new()).map_values(|m| m.to_string()),
            Agg::Mean => kv.combine_per_key(Mean::new()).map_values(|m| format!("{m:.6}")),
            Agg::Group => kv.group_by_key().map_values(|mut vs| {
                vs.sort();
                format!("{vs:?}")
            }),
            Agg::Top2 => {
                kv.combine_per_key(Top::largest(2)).map_values(|t| format!("{:?}", t.iter().collect::<Vec<_>>()))
            }
        }
    })
    .expect("pipeline runs");
    let mut rows: Vec<Row> = out
        .into_iter()
        .map(|wv| {
            let w = match wv.window {
                Window::Global => None,
                Window::Interval { start, .. } => Some(start.millis()),
            };
            (wv.value.0, w, wv.value.1)
        })
        .collect();
    rows.sort();
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_pipelines_match_the_reference(c in case()) {
        prop_assert_eq!(riffle(&c), reference(&c));
    }
}
