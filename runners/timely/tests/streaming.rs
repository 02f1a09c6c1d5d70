//! Streaming semantics with a TestStream, with expected panes written from the Beam model,
//! and the promise that a stream and a batch of the same elements give the same panes.

use proptest::prelude::*;
use riffle_engine::prelude::*;
use riffle_engine::{Error, TimestampCombiner, Timing};
use riffle_timely::RunOptions;
use riffle_timely::testing::{Describe, as_stream, cluster_scratch_dir, describe, local_cluster, try_run_windowed};

fn ms(t: i64) -> EventTime {
    EventTime::from_millis(t)
}

/// (window start, sum, timing, pane index, is_first, is_last, output timestamp), sorted.
type Pane = (i64, i64, Timing, u64, bool, bool, i64);

fn team_scores(script: TestStream<(char, i64)>, lateness: i64) -> (Vec<Pane>, u64) {
    team_scores_in(script, lateness, false)
}

fn team_scores_in(script: TestStream<(char, i64)>, lateness: i64, accumulating: bool) -> (Vec<Pane>, u64) {
    let p = Pipeline::new();
    let mut windowed = p.test_stream(script).window_into(FixedWindows::of_millis(10)).with_allowed_lateness(lateness);
    if accumulating {
        windowed = windowed.accumulating_fired_panes();
    }
    let sums = windowed.combine_per_key(Sum::new()).named("TeamScore");
    let out = riffle_connectors::memory::collect(&sums);
    let report = riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    let mut panes: Vec<Pane> = out
        .lock()
        .unwrap()
        .iter()
        .map(|wv| {
            let Window::Interval { start, .. } = wv.window else { panic!("fixed windows") };
            let pn = wv.pane;
            (start.millis(), wv.value.1, pn.timing, pn.index, pn.is_first, pn.is_last, wv.timestamp.millis())
        })
        .collect();
    panes.sort();
    (panes, report.late_dropped("TeamScore"))
}

/// Team A scores 5 and 7 in [0, 10) and 3 in [10, 20); the watermark passes 10; then a 9
/// for [0, 10) arrives (late), and a 1 for [10, 20); the watermark passes 20.
fn heuristic_watermark() -> TestStream<(char, i64)> {
    TestStream::new()
        .add_elements(vec![(('A', 5), ms(2)), (('A', 7), ms(8)), (('A', 3), ms(13))])
        .advance_watermark_to(ms(10))
        .add_elements(vec![(('A', 9), ms(4)), (('A', 1), ms(15))])
        .advance_watermark_to(ms(20))
}

#[test]
fn without_allowed_lateness_a_late_element_is_dropped_and_counted() {
    let (panes, dropped) = team_scores(heuristic_watermark(), 0);
    // Each window fires once, on time, at its end (9 and 19): first and last pane.
    assert_eq!(panes, [(0, 12, Timing::OnTime, 0, true, true, 9), (10, 4, Timing::OnTime, 0, true, true, 19)]);
    assert_eq!(dropped, 1, "the 9 scored in [0, 10) after the watermark passed 10");
}

#[test]
fn within_allowed_lateness_a_late_element_fires_a_late_pane() {
    let (panes, dropped) = team_scores(heuristic_watermark(), 10);
    // Discarding mode: the late pane holds only the late 9. With lateness, the on-time pane
    // is not the last: a late one may follow until the window expires at 9 + 10.
    assert_eq!(
        panes,
        [
            (0, 9, Timing::Late, 1, false, false, 9),
            (0, 12, Timing::OnTime, 0, true, false, 9),
            (10, 4, Timing::OnTime, 0, true, false, 19),
        ]
    );
    assert_eq!(dropped, 0);
}

#[test]
fn accumulating_late_panes_repeat_the_on_time_pane() {
    // Two late scores for [0, 10) at different watermarks: each late pane holds everything
    // so far (12, then 12 + 9, then 12 + 9 + 2).
    let script = heuristic_watermark().add_elements(vec![(('A', 2), ms(6))]).advance_watermark_to(ms(25));
    let (panes, dropped) = team_scores_in(script, 100, true);
    assert_eq!(
        panes,
        [
            (0, 12, Timing::OnTime, 0, true, false, 9),
            (0, 21, Timing::Late, 1, false, false, 9),
            (0, 23, Timing::Late, 2, false, false, 9),
            (10, 4, Timing::OnTime, 0, true, false, 19),
        ]
    );
    assert_eq!(dropped, 0);
}

/// Panes of `[0, 10)` and `[10, 20)` with a timestamp combiner: (window start, sum, timestamp).
fn combined(combiner: TimestampCombiner, script: TestStream<(char, i64)>) -> Vec<(i64, i64, i64)> {
    let p = Pipeline::new();
    let sums = p
        .test_stream(script)
        .window_into(FixedWindows::of_millis(10))
        .with_allowed_lateness(100)
        .with_timestamp_combiner(combiner)
        .combine_per_key(Sum::new());
    // A second grouping in 5 ms windows downstream: a pane stamped early must not be
    // late there.
    let again = sums.window_into(FixedWindows::of_millis(5)).combine_per_key(Sum::new());
    let out = riffle_connectors::memory::collect(&sums);
    let downstream = riffle_connectors::memory::collect(&again);
    let report = riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    assert_eq!(report.late_dropped("CombinePerKey#2"), 0, "nothing is late downstream");
    let total = |c: &riffle_connectors::memory::Collected<(char, i64)>| {
        c.lock().unwrap().iter().map(|wv| wv.value.1).sum::<i64>()
    };
    assert_eq!(total(&out), total(&downstream));
    let mut panes: Vec<(i64, i64, i64)> = out
        .lock()
        .unwrap()
        .iter()
        .map(|wv| {
            let Window::Interval { start, .. } = wv.window else { panic!() };
            (start.millis(), wv.value.1, wv.timestamp.millis())
        })
        .collect();
    panes.sort();
    panes
}

#[test]
fn timestamp_combiners_stamp_panes_from_on_time_elements_only() {
    // Scores 5 @ 2 and 7 @ 8 in [0, 10), 3 @ 13 and 1 @ 15 in [10, 20); 4 @ 6 arrives with
    // the watermark at 5 (behind it, so it cannot hold the watermark and does not count);
    // 9 @ 4 arrives late.
    let script = || {
        TestStream::new()
            .add_elements(vec![(('A', 5), ms(2)), (('A', 7), ms(8)), (('A', 3), ms(13))])
            .advance_watermark_to(ms(7))
            .add_elements(vec![(('A', 4), ms(6))])
            .advance_watermark_to(ms(10))
            .add_elements(vec![(('A', 9), ms(4)), (('A', 1), ms(15))])
            .advance_watermark_to(ms(20))
    };
    // Late panes are stamped with the window's end, whatever the combiner (Beam's rule).
    assert_eq!(combined(TimestampCombiner::Earliest, script()), [(0, 9, 9), (0, 16, 2), (10, 4, 13)]);
    assert_eq!(combined(TimestampCombiner::Latest, script()), [(0, 9, 9), (0, 16, 8), (10, 4, 15)]);
    assert_eq!(combined(TimestampCombiner::EndOfWindow, script()), [(0, 9, 9), (0, 16, 9), (10, 4, 19)]);
}

#[test]
fn lateness_exactly_at_the_boundary_is_accepted_and_one_past_is_dropped() {
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1))])
        .advance_watermark_to(ms(19)) // 9 + 10: the last watermark at which [0, 10) takes data
        .add_elements(vec![(('A', 2), ms(2))])
        .advance_watermark_to(ms(20))
        .add_elements(vec![(('A', 4), ms(3))]);
    let (panes, dropped) = team_scores(script, 10);
    // The late pane fires at the window's expiry, so it is the last.
    assert_eq!(panes, [(0, 1, Timing::OnTime, 0, true, false, 9), (0, 2, Timing::Late, 1, false, true, 9)]);
    assert_eq!(dropped, 1);
}

#[test]
fn an_element_behind_the_watermark_but_in_an_open_window_is_on_time() {
    // The watermark is at 5; an element at 3 is behind it but its window [0, 10) is open.
    let script = TestStream::new().advance_watermark_to(ms(5)).add_elements(vec![(('A', 3), ms(3)), (('A', 4), ms(7))]);
    let (panes, dropped) = team_scores(script, 0);
    assert_eq!(panes, [(0, 7, Timing::OnTime, 0, true, true, 9)]);
    assert_eq!(dropped, 0);
}

#[test]
fn a_global_grouping_of_a_test_stream_is_rejected_at_build_time() {
    let err = try_run_windowed(&RunOptions::default(), |p| {
        p.test_stream(TestStream::new().add_elements(vec![((1u8, 1u8), ms(1))])).group_by_key()
    })
    .unwrap_err();
    assert!(matches!(err, Error::Validation { .. }), "{err}");
}

#[derive(Clone, Copy, Debug)]
enum Windows {
    Fixed(i64),
    Sliding(i64, i64),
    Sessions(i64),
}

fn windowed_sums(p: &Pipeline, input: PCollection<(u8, i64)>, windows: Windows) -> PCollection<(u8, i64)> {
    let _ = p;
    let w = match windows {
        Windows::Fixed(s) => input.window_into(FixedWindows::of_millis(s)),
        Windows::Sliding(s, period) => input.window_into(SlidingWindows::of_millis(s, period)),
        Windows::Sessions(gap) => input.window_into(Sessions::with_gap_millis(gap)),
    };
    w.combine_per_key(Sum::new())
}

type Out = Vec<WindowedValue<(u8, i64)>>;

fn sorted(mut v: Out) -> Out {
    v.sort();
    v
}

fn batch(events: &[(u8, i64, i64)], windows: Windows, workers: usize) -> Out {
    let input: Vec<((u8, i64), EventTime)> = events.iter().map(|&(k, v, t)| ((k, v), ms(t))).collect();
    sorted(
        try_run_windowed(&RunOptions::threads(workers), |p| windowed_sums(p, p.create_timestamped(input), windows))
            .unwrap(),
    )
}

fn stream(script: TestStream<(u8, i64)>, windows: Windows, workers: usize) -> Out {
    sorted(
        try_run_windowed(&RunOptions::threads(workers), |p| windowed_sums(p, p.test_stream(script), windows)).unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// P2: the same elements give the same panes (values, windows, timestamps and pane
    /// info) as a batch and as a stream with any watermark schedule that makes nothing
    /// late, at any worker count.
    #[test]
    fn a_stream_gives_the_same_panes_as_a_batch(
        events in prop::collection::vec((0u8..6, -100i64..100, 0i64..2_000), 1..150),
        cuts in prop::collection::vec(1usize..40, 0..12),
        seed in any::<u64>(),
        windows in prop_oneof![
            (1i64..500).prop_map(Windows::Fixed),
            (1i64..400, 1i64..400).prop_map(|(s, p)| Windows::Sliding(s, p)),
            (1i64..200).prop_map(Windows::Sessions),
        ],
        workers in prop_oneof![Just(1usize), Just(3usize), Just(4usize)],
    ) {
        let want = batch(&events, windows, 1);
        prop_assert_eq!(stream(as_stream(&events, &cuts, seed), windows, workers), want);
    }

    /// With a count trigger in accumulating mode, panes come at points that depend on how
    /// elements are batched, but each window's last pane holds everything: the same sum
    /// as the batch, at any worker count and watermark schedule.
    #[test]
    fn a_triggered_stream_ends_with_the_batch_totals(
        events in prop::collection::vec((0u8..6, -100i64..100, 0i64..2_000), 1..150),
        cuts in prop::collection::vec(1usize..40, 0..12),
        seed in any::<u64>(),
        size in 1i64..500,
        count in 1u64..6,
        workers in prop_oneof![Just(1usize), Just(3usize), Just(4usize)],
    ) {
        let want = batch(&events, Windows::Fixed(size), 1);
        let script = as_stream(&events, &cuts, seed);
        let panes = try_run_windowed(&RunOptions::threads(workers), |p| {
            p.test_stream(script)
                .window_into(FixedWindows::of_millis(size))
                .accumulating_fired_panes()
                .triggering(Trigger::repeatedly(Trigger::after_count(count)))
                .combine_per_key(Sum::new())
        })
        .unwrap();
        let mut last: std::collections::BTreeMap<(u8, Window), (u64, i64)> = Default::default();
        for wv in &panes {
            let e = last.entry((wv.value.0, wv.window)).or_insert((0, 0));
            if wv.pane.index >= e.0 {
                *e = (wv.pane.index, wv.value.1);
            }
        }
        let got: Vec<(u8, Window, i64)> = last.into_iter().map(|((k, w), (_, v))| (k, w, v)).collect();
        let mut want: Vec<(u8, Window, i64)> = want.iter().map(|wv| (wv.value.0, wv.window, wv.value.1)).collect();
        want.sort();
        prop_assert_eq!(got, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Retractions undo exactly what they retract: with sessions merging under an
    /// element-count trigger in accumulating-and-retracting mode, applying every
    /// retraction to the output leaves the batch's session sums, at any worker count.
    #[test]
    fn retracting_sessions_consolidate_to_the_batch_panes(
        events in prop::collection::vec((0u8..4, -100i64..100, 0i64..1_000), 1..100),
        cuts in prop::collection::vec(1usize..20, 0..12),
        seed in any::<u64>(),
        gap in 1i64..150,
        count in 1u64..4,
        workers in prop_oneof![Just(1usize), Just(4usize)],
    ) {
        let want = batch(&events, Windows::Sessions(gap), 1);
        let script = as_stream(&events, &cuts, seed);
        let out = try_run_windowed(&RunOptions::threads(workers), |p| {
            p.test_stream(script)
                .window_into(Sessions::with_gap_millis(gap))
                .triggering(Trigger::after_watermark().with_early_firings(Trigger::after_count(count)))
                .accumulating_and_retracting_fired_panes()
                .combine_per_key(Sum::new())
        })
        .unwrap();
        let mut net: std::collections::BTreeMap<(u8, Window, i64, u64), i64> = Default::default();
        for wv in &out {
            *net.entry((wv.value.0, wv.window, wv.value.1, wv.pane.index)).or_default() +=
                if wv.pane.retraction { -1 } else { 1 };
        }
        prop_assert!(net.values().all(|n| *n == 0 || *n == 1), "a retraction without its pane: {:?}", net);
        let got: Vec<(u8, Window, i64)> =
            net.into_iter().filter(|(_, n)| *n == 1).map(|((k, w, v, _), _)| (k, w, v)).collect();
        let mut want: Vec<(u8, Window, i64)> = want.iter().map(|wv| (wv.value.0, wv.window, wv.value.1)).collect();
        want.sort();
        prop_assert_eq!(got, want);
    }
}

/// The stream of the two-process test: fixed, so the launcher and its processes agree.
fn fixed_events() -> Vec<(u8, i64, i64)> {
    (0..500i64).map(|i| ((i % 7) as u8, i % 13 - 6, (i * 37) % 3_000)).collect()
}

#[test]
fn a_stream_gives_the_same_panes_on_two_processes_of_two_workers() {
    let windows = Windows::Sessions(40);
    let dir = cluster_scratch_dir("a_stream_gives_the_same_panes_on_two_processes_of_two_workers");
    let out = dir.join("panes.txt");
    let p = Pipeline::new();
    let script = as_stream(&fixed_events(), &[17, 50, 3, 90, 41], 7);
    let sums = windowed_sums(&p, p.test_stream(script), windows).par_do(Describe::new());
    riffle_connectors::text::write_lines(&sums, &out, |l| l.clone());
    let opts = local_cluster(2, 2, "a_stream_gives_the_same_panes_on_two_processes_of_two_workers");
    riffle_timely::run(&p, &opts).unwrap();
    let got: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    std::fs::remove_dir_all(&dir).ok();
    let mut want: Vec<String> = batch(&fixed_events(), windows, 1).iter().map(describe).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_lifted_combine_counts_each_late_element_it_drops_not_each_partial() {
    // Three late elements of one key, sent together: a lifted combine would fold them
    // into one partial; each is dropped and counted.
    let script = TestStream::new()
        .add_elements(vec![(('k', 1i64), ms(1))])
        .advance_watermark_to(ms(50))
        .add_elements(vec![(('k', 2), ms(2)), (('k', 3), ms(3)), (('k', 4), ms(4))]);
    for workers in [1, 3] {
        let p = Pipeline::new();
        let sums = p.test_stream(script.clone()).window_into(FixedWindows::of_millis(10)).combine_per_key(Sum::new());
        let out = riffle_connectors::memory::collect(&sums.named("Sums"));
        let report = riffle_timely::run(&p, &RunOptions::threads(workers)).unwrap();
        let got: Vec<i64> = out.lock().unwrap().iter().map(|wv| wv.value.1).collect();
        assert_eq!(got, [1], "{workers} workers");
        assert_eq!(report.late_dropped("Sums"), 3, "{workers} workers: three elements dropped");
    }
}
