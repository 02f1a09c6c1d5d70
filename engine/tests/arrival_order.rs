//! The grouping kernel (a grouping step's state fed through an [`ArrivalOrder`], as the
//! timely runner feeds it) replays the same batches from three senders in every arrival
//! order and must give the same panes every time.
//!
//! Bug class caught: panes that depend on which sender's batch arrived first, such as a
//! window fired by one sender's watermark while another sender's on-time elements are
//! still on their way, or a count trigger that counts elements in arrival order. The last
//! test shows the replay can tell: applied as they arrive, the same batches give
//! different panes.

use std::sync::Arc;

use riffle_engine::arrival::{ArrivalOrder, InputFrontier};
use riffle_engine::prelude::*;
use riffle_engine::runtime::{GroupFn, GroupState, StepContext, WorkerInfo};
use riffle_engine::{Batch, Elements, NodeKind, PaneInfo, SystemClock, Watermark};

const WINDOW: i64 = 10;

fn ms(t: i64) -> EventTime {
    EventTime::from_millis(t)
}

/// A batch of key "k" elements at these timestamps, each with the value 1, in its fixed
/// window, as the grouping receives them after windowing and the shuffle.
fn batch(timestamps: &[i64]) -> Batch {
    let mut e = Elements::new();
    for &t in timestamps {
        let start = t.div_euclid(WINDOW) * WINDOW;
        let window = Window::Interval { start: ms(start), end: ms(start + WINDOW) };
        e.push(("k".to_string(), 1i64), ms(t), window, PaneInfo::NO_FIRING);
    }
    Batch::new(e)
}

/// What three senders send: (the watermark each batch was sent at, its timestamps).
/// Sender A sends 12 at 10 while sender B's 8, sent at 5, may still be on its way; the
/// 3 that A sends at 10, and the 4 that B sends at 20, are late.
fn messages() -> Vec<(i64, Vec<i64>)> {
    vec![
        (0, vec![1, 5]),     // A
        (10, vec![12, 3]),   // A
        (5, vec![8, 14, 6]), // B
        (20, vec![4, 21]),   // B
        (0, vec![2, 9]),     // C
        (5, vec![7]),        // C
    ]
}

/// The grouping step of `pipeline`'s only grouping, its state on one worker.
fn state(strategy: impl FnOnce(PCollection<(String, i64)>) -> PCollection<(String, i64)>) -> Box<dyn GroupState> {
    let p = Pipeline::new();
    let input = p.create_timestamped(vec![(("k".to_string(), 1i64), ms(0))]);
    let _ = strategy(input.window_into(FixedWindows::of_millis(WINDOW)));
    let graph = p.graph();
    let g: Arc<dyn GroupFn> = graph
        .nodes()
        .iter()
        .find_map(|n| match &n.kind {
            NodeKind::Group(g) => Some(g.clone()),
            _ => None,
        })
        .expect("a grouping step");
    let ctx =
        StepContext { name: "Sum".into(), worker: WorkerInfo { index: 0, peers: 1 }, clock: Arc::new(SystemClock) };
    g.instantiate(&ctx)
}

/// A pane as the test compares it: (window start, sum, timing, index, last, output timestamp).
type Pane = (i64, i64, Timing, u64, bool, i64);

fn panes(fired: Vec<(EventTime, Batch)>) -> Vec<Pane> {
    let mut out = Vec::new();
    for (_, b) in fired {
        for wv in b.into_elements::<(String, i64)>().into_iter_windowed() {
            let Window::Interval { start, .. } = wv.window else { panic!("fixed windows") };
            out.push((
                start.millis(),
                wv.value.1,
                wv.pane.timing,
                wv.pane.index,
                wv.pane.is_last,
                wv.timestamp.millis(),
            ));
        }
    }
    out
}

/// Delivers `messages` in the order `order`, the input frontier after each delivery being
/// the least watermark still in flight, as timely's progress tracking guarantees; applies
/// what the order allows, as the runner does. With `ordered` false, applies each batch as
/// it comes instead.
fn replay(
    strategy: impl FnOnce(PCollection<(String, i64)>) -> PCollection<(String, i64)>,
    order: &[usize],
    ordered: bool,
) -> Vec<Pane> {
    let msgs = messages();
    let mut state = state(strategy);
    let rule = state.same_watermark();
    let mut arrivals = ArrivalOrder::<()>::new();
    let mut fired = Vec::new();
    for (i, &m) in order.iter().enumerate() {
        let (sent_at, ts) = &msgs[m];
        let in_flight = order[i + 1..].iter().map(|&n| msgs[n].0).min();
        let frontier = Watermark(in_flight.map_or(EventTime::MAX, ms));
        if ordered {
            arrivals.arrive(Watermark(ms(*sent_at)), 0, batch(ts));
            let input = InputFrontier { watermark: frontier, epoch: in_flight.map(|_| 0) };
            while let Some((at, arrived)) = arrivals.next_ready(input, rule) {
                state.fire(at, &mut fired).unwrap();
                state.insert_all(arrived.batches, at).unwrap();
            }
        } else {
            state.insert(batch(ts), Watermark(ms(*sent_at))).unwrap();
        }
        state.fire(frontier, &mut fired).unwrap();
    }
    assert!(arrivals.is_empty());
    panes(fired)
}

/// Every order of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut all = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            all.push(q);
        }
    }
    all
}

fn every_order_gives(
    strategy: impl Fn(PCollection<(String, i64)>) -> PCollection<(String, i64)>,
    want: &[Pane],
) -> usize {
    let orders = permutations(messages().len());
    for order in &orders {
        let mut got = replay(&strategy, order, true);
        got.sort();
        assert_eq!(got, want, "arrival order {order:?}");
    }
    orders.len()
}

/// Early panes every two elements, the on-time pane, a late pane per late element, with
/// lateness; accumulating.
fn counted(input: PCollection<(String, i64)>) -> PCollection<(String, i64)> {
    input
        .triggering(
            Trigger::after_watermark()
                .with_early_firings(Trigger::after_count(2))
                .with_late_firings(Trigger::after_count(1)),
        )
        .with_allowed_lateness(100)
        .accumulating_fired_panes()
        .combine_per_key(Sum::new())
}

#[test]
fn a_triggered_grouping_gives_the_same_panes_in_every_arrival_order() {
    // The expected panes are derived from the model in `model_panes`, then checked for
    // every one of the 720 orders.
    let want = model_panes();
    let n = every_order_gives(counted, &want);
    assert_eq!(n, 720);
}

/// The panes of [`counted`] over [`messages`], derived from the Beam model step by step
/// with the watermark at each value it takes (every element applied in timestamp order
/// within what was sent at one watermark, Riffle's canonical order).
fn model_panes() -> Vec<Pane> {
    let (early, on, late) = (Timing::Early, Timing::OnTime, Timing::Late);
    let mut want = vec![
        // Watermark 0: 1, 2, 5, 9 into [0, 10): early panes after 2 and after 4 elements.
        (0, 2, early, 0, false, 9),
        (0, 4, early, 1, false, 9),
        // Watermark 5: 6, 7, 8 into [0, 10): an early pane after 6 and 7 (count 2), 8
        // waits; 14 into [10, 20), alone.
        (0, 6, early, 2, false, 9),
        // Watermark 10 passes 9: [0, 10) fires on time with 8: 7.
        (0, 7, on, 3, false, 9),
        // Sent at 10: 3 (late, fires at once: 8, stamped with the window's end as every pane
        // here) and 12 ([10, 20) has 14 and 12: early 2).
        (0, 8, late, 4, false, 9),
        (10, 2, early, 0, false, 19),
        // Watermark 20 passes 19: [10, 20) fires on time, empty (FIRE_ALWAYS): 2.
        (10, 2, on, 1, false, 19),
        // Sent at 20: 4 (late: 9) and 21 ([20, 30), alone).
        (0, 9, late, 5, false, 9),
        // The end: [20, 30) on time with 21: 1. Nothing fires at expiry: every cell fired.
        (20, 1, on, 0, false, 29),
    ];
    want.sort();
    want
}

#[test]
fn applied_as_they_arrive_the_same_batches_give_different_panes() {
    let orders = permutations(messages().len());
    let mut seen = std::collections::BTreeSet::new();
    for order in &orders {
        let mut got = replay(counted, order, false);
        got.sort();
        seen.insert(got);
    }
    assert!(seen.len() > 1, "the replay cannot tell orders apart");
}

#[test]
fn the_default_trigger_gives_the_same_panes_in_every_arrival_order() {
    // Without lateness: [0, 10) fires on time with 1 2 5 9 6 7 8 (3 and 4 are dropped),
    // [10, 20) with 14 12, [20, 30) with 21.
    let want: Vec<Pane> = vec![
        (0, 7, Timing::OnTime, 0, true, 9),
        (10, 2, Timing::OnTime, 0, true, 19),
        (20, 1, Timing::OnTime, 0, true, 29),
    ];
    every_order_gives(|i| i.combine_per_key(Sum::new()), &want);
}

#[test]
fn a_frame_that_does_not_decode_fails_the_grouping_with_an_error() {
    // A batch as it arrives from another process, with bytes that are no frame: the
    // state's insert returns an error naming the element type (the runner fails the job
    // with it) instead of panicking its worker.
    let wire = bincode::serialize(&(0u32, 2u32, serde_bytes::Bytes::new(&[1, 0xde, 0xad]))).unwrap();
    let garbage: Batch = bincode::deserialize(&wire).unwrap();
    for strategy in [counted as fn(_) -> _, |i: PCollection<(String, i64)>| i.combine_per_key(Sum::new())] {
        let err = state(strategy).insert_all(vec![garbage.clone()], Watermark::MIN).unwrap_err();
        assert!(err.to_string().contains("did not decode"), "{err}");
    }
}
