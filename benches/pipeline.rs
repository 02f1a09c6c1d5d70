//! map -> group_by_key -> count: Riffle against a hand-written timely program doing the
//! same work on the same data, in the same run.
//!
//! ```text
//! cargo bench -p riffle-benches --bench pipeline                 # 10M records
//! cargo bench -p riffle-benches --bench pipeline -- 2000000 3    # records, repetitions
//! ```
//!
//! Both programs generate record `i` as `(splitmix(i) % KEYS, i)` on worker `i % workers`,
//! map it to `(key, value * 2)`, exchange by key, collect every key's values into a
//! `Vec`, and emit `(key, number of values)` once the input is complete. Each figure is
//! the median wall time of the whole job (start to finish) over the repetitions; the
//! ratio is Riffle's throughput over timely's (goal: 0.8 or better).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Inspect, Probe};

const KEYS: u64 = 100_000;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn record(i: u64) -> (u64, u64) {
    (splitmix(i) % KEYS, i)
}

/// Returns the number of output keys and their total count, to check both agree.
fn riffle(n: u64, workers: usize) -> (usize, u64) {
    let p = Pipeline::new();
    let counts =
        p.generate_sequence(n, record).map(|(k, v)| (k, v * 2)).group_by_key().map(|(k, vs)| (k, vs.len() as u64));
    let out = riffle_connectors::memory::collect(&counts);
    riffle_timely::run(&p, &RunOptions::threads(workers)).expect("riffle job");
    let out = out.lock().unwrap();
    (out.len(), out.iter().map(|wv| wv.value.1).sum())
}

fn timely_baseline(n: u64, workers: usize) -> (usize, u64) {
    let results: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let sink = results.clone();
    let config = timely::Config::process(workers);
    timely::execute(config, move |worker| {
        let (index, peers) = (worker.index() as u64, worker.peers() as u64);
        let sink = sink.clone();
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let generated = source(scope, "Generate", move |cap, info| {
                let activator = scope.activator_for(info.address);
                let mut cap = Some(cap);
                let mut next = index;
                move |output| {
                    let Some(c) = cap.as_ref() else { return };
                    let mut session = output.session(c);
                    for _ in 0..16 * 1024 {
                        if next >= n {
                            break;
                        }
                        session.give(record(next));
                        next += peers;
                    }
                    drop(session);
                    if next >= n { cap = None } else { activator.activate() }
                }
            });
            generated
                .container::<Vec<(u64, u64)>>()
                .map(|(k, v)| (k, v * 2))
                .unary_frontier(ExchangePact::new(|r: &(u64, u64)| splitmix(r.0)), "GroupCount", |_cap, _info| {
                    // The same fast hasher Riffle's grouping uses, so the comparison is of the engine.
                    let mut groups: HashMap<u64, Vec<u64>, foldhash::fast::RandomState> = HashMap::default();
                    let mut hold = None;
                    move |(input, frontier), output| {
                        input.for_each_stamp(|cap, data| {
                            if hold.is_none() {
                                hold = cap.retain_least(0);
                            }
                            for batch in data {
                                for (k, v) in batch.drain(..) {
                                    groups.entry(k).or_default().push(v);
                                }
                            }
                        });
                        if frontier.is_empty() {
                            if let Some(cap) = hold.take() {
                                let mut session = output.session(&cap);
                                for (k, vs) in groups.drain() {
                                    session.give((k, vs.len() as u64));
                                }
                            }
                        }
                    }
                })
                .container::<Vec<(u64, u64)>>()
                .inspect_core(move |event| {
                    if let Ok((_stamp, batch)) = event {
                        sink.lock().unwrap().extend_from_slice(batch)
                    }
                })
                .probe()
                .0
        });
        while !probe.done() {
            worker.step_or_park(None);
        }
    })
    .expect("timely job")
    .join()
    .into_iter()
    .for_each(|r| r.expect("timely worker"));
    let out = results.lock().unwrap();
    (out.len(), out.iter().map(|r| r.1).sum())
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time<R: PartialEq + std::fmt::Debug>(reps: usize, mut f: impl FnMut() -> R) -> (Duration, R) {
    let mut times = Vec::new();
    let mut result = None;
    for _ in 0..reps {
        let t = Instant::now();
        let r = f();
        times.push(t.elapsed());
        if let Some(prev) = &result {
            assert_eq!(prev, &r, "a repetition gave another answer");
        }
        result = Some(r);
    }
    (median(times), result.expect("at least one repetition"))
}

fn main() {
    // `cargo bench` passes --bench; ignore flags, take positional numbers.
    let nums: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = nums.first().copied().unwrap_or(10_000_000);
    let reps = nums.get(1).copied().unwrap_or(3) as usize;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("map -> group_by_key -> count, {n} records, {KEYS} keys, median of {reps} runs, {cores} cores");
    println!("{:>8} {:>14} {:>14} {:>8}", "workers", "riffle Mrec/s", "timely Mrec/s", "ratio");
    let mut w = 1;
    while w <= cores.max(2) {
        let (rt, rr) = time(reps, || riffle(n, w));
        let (tt, tr) = time(reps, || timely_baseline(n, w));
        assert_eq!(rr, tr, "Riffle and timely disagree");
        assert_eq!(rr.1, n, "every record counted once");
        let (rate_r, rate_t) = (n as f64 / rt.as_secs_f64() / 1e6, n as f64 / tt.as_secs_f64() / 1e6);
        println!("{w:>8} {rate_r:>14.2} {rate_t:>14.2} {:>7.2}x", rate_r / rate_t);
        w *= 2;
    }
}
