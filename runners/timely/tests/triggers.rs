//! Triggers, with expected panes written from the Beam model: each trigger and combinator,
//! early, on-time and late firings, both accumulation modes, and closing windows.

use riffle_engine::Timing;
use riffle_engine::prelude::*;
use riffle_timely::RunOptions;

fn ms(t: i64) -> EventTime {
    EventTime::from_millis(t)
}

/// (window start, sum, timing, index, non-speculative index, is_first, is_last), in order
/// of window and pane index.
type Pane = (i64, i64, Timing, u64, i64, bool, bool);

struct Run {
    panes: Vec<Pane>,
    dropped: u64,
}

fn run(script: TestStream<(char, i64)>, trigger: Trigger, lateness: i64, accumulating: bool) -> Run {
    let p = Pipeline::new();
    let mut windowed = p.test_stream(script).window_into(FixedWindows::of_millis(10)).with_allowed_lateness(lateness);
    if accumulating {
        windowed = windowed.accumulating_fired_panes();
    }
    let sums = windowed.triggering(trigger).combine_per_key(Sum::new()).named("Score");
    let out = riffle_connectors::memory::collect(&sums);
    let report = riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    let mut panes: Vec<Pane> = out
        .lock()
        .unwrap()
        .iter()
        .map(|wv| {
            let Window::Interval { start, .. } = wv.window else { panic!("fixed windows") };
            let pn = wv.pane;
            (start.millis(), wv.value.1, pn.timing, pn.index, pn.non_speculative_index, pn.is_first, pn.is_last)
        })
        .collect();
    panes.sort_by_key(|p| (p.0, p.3));
    Run { panes, dropped: report.late_dropped("Score") }
}

/// Scores 1, 2, 3 at 1, 2, 3 ms; the watermark passes 10 (the end of [0, 10)); a late 4
/// at 4 ms; the watermark passes 120.
fn scores() -> TestStream<(char, i64)> {
    TestStream::new()
        .add_elements(vec![(('A', 1), ms(1)), (('A', 2), ms(2)), (('A', 3), ms(3))])
        .advance_watermark_to(ms(10))
        .add_elements(vec![(('A', 4), ms(4))])
        .advance_watermark_to(ms(120))
}

fn early_on_time_late() -> Trigger {
    Trigger::after_watermark().with_early_firings(Trigger::after_count(2)).with_late_firings(Trigger::after_count(1))
}

#[test]
fn early_on_time_and_late_panes_discarding() {
    let r = run(scores(), early_on_time_late(), 100, false);
    assert_eq!(
        r.panes,
        [
            (0, 3, Timing::Early, 0, -1, true, false),  // 1 + 2: two elements, early
            (0, 3, Timing::OnTime, 1, 0, false, false), // the 3 left, at the end of the window
            (0, 4, Timing::Late, 2, 1, false, false),   // the late 4, fired by the late count
        ]
    );
    assert_eq!(r.dropped, 0);
}

#[test]
fn early_on_time_and_late_panes_accumulating() {
    let r = run(scores(), early_on_time_late(), 100, true);
    let sums: Vec<i64> = r.panes.iter().map(|p| p.1).collect();
    assert_eq!(sums, [3, 6, 10], "each pane holds everything so far");
}

#[test]
fn without_late_firings_the_window_closes_at_its_end() {
    let t = Trigger::after_watermark().with_early_firings(Trigger::after_count(2));
    let r = run(scores(), t, 100, false);
    // The on-time pane is the last: the trigger finished, and the late 4 is dropped.
    assert_eq!(r.panes, [(0, 3, Timing::Early, 0, -1, true, false), (0, 3, Timing::OnTime, 1, 0, false, true)]);
    assert_eq!(r.dropped, 1);
}

#[test]
fn repeated_counts_fire_and_the_rest_comes_out_when_the_window_expires() {
    let script = TestStream::new().add_elements((1..=5).map(|i| (('A', i), ms(i))).collect());
    let r = run(script, Trigger::repeatedly(Trigger::after_count(2)), 0, false);
    assert_eq!(
        r.panes,
        [
            (0, 3, Timing::Early, 0, -1, true, false),
            (0, 7, Timing::Early, 1, -1, false, false),
            (0, 5, Timing::OnTime, 2, 0, false, true), // the odd one out, at expiry
        ]
    );
}

#[test]
fn after_each_runs_its_triggers_in_turn_then_closes() {
    let script = TestStream::new().add_elements((1..=7).map(|i| (('A', i), ms(i))).collect());
    let t = Trigger::AfterEach(vec![Trigger::after_count(2), Trigger::after_count(3)]);
    let r = run(script, t, 0, false);
    // 1 + 2, then 3 + 4 + 5; the trigger is done, so 6 and 7 are dropped.
    assert_eq!(r.panes, [(0, 3, Timing::Early, 0, -1, true, false), (0, 12, Timing::Early, 1, -1, false, true)]);
    assert_eq!(r.dropped, 2);
}

#[test]
fn after_first_fires_once_on_whichever_comes_first() {
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1)), (('A', 2), ms(2))])
        .advance_watermark_to(ms(10))
        .add_elements(vec![(('A', 4), ms(4))]);
    let t = Trigger::AfterFirst(vec![Trigger::after_count(3), Trigger::after_watermark()]);
    let r = run(script, t, 100, false);
    assert_eq!(r.panes, [(0, 3, Timing::OnTime, 0, 0, true, true)]);
    assert_eq!(r.dropped, 1, "the late 4 arrives after the trigger finished");
}

#[test]
fn after_all_waits_for_every_trigger() {
    // One element by the end of the window: the count of 2 is not reached; the late
    // second element completes it.
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1))])
        .advance_watermark_to(ms(10))
        .add_elements(vec![(('A', 2), ms(2))]);
    let t = Trigger::AfterAll(vec![Trigger::after_count(2), Trigger::after_watermark()]);
    let r = run(script, t, 100, false);
    assert_eq!(r.panes, [(0, 3, Timing::OnTime, 0, 0, true, true)]);
}

#[test]
fn or_finally_stops_for_good_when_its_until_trigger_fires() {
    let script = TestStream::new().add_elements((1..=5).map(|i| (('A', i), ms(i))).collect());
    let t = Trigger::repeatedly(Trigger::after_count(1)).or_finally(Trigger::after_count(3));
    let r = run(script, t, 0, false);
    let sums: Vec<(i64, bool)> = r.panes.iter().map(|p| (p.1, p.6)).collect();
    assert_eq!(sums, [(1, false), (2, false), (3, true)]);
    assert_eq!(r.dropped, 2);
}

#[test]
fn never_fires_only_when_the_window_expires() {
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1)), (('A', 2), ms(2))])
        .advance_watermark_to(ms(10))
        .add_elements(vec![(('A', 4), ms(4))])
        .advance_watermark_to(ms(30));
    let r = run(script, Trigger::Never, 15, false);
    // Everything, including the late 4, in one final pane at 9 + 15.
    assert_eq!(r.panes, [(0, 7, Timing::OnTime, 0, 0, true, true)]);
}

#[test]
fn a_trigger_lets_a_global_window_group_an_unbounded_stream() {
    let script = TestStream::new().add_elements((1..=4).map(|i| (('A', i), ms(i))).collect());
    let p = Pipeline::new();
    let sums =
        p.test_stream(script).triggering(Trigger::repeatedly(Trigger::after_count(2))).combine_per_key(Sum::new());
    let out = riffle_connectors::memory::collect(&sums);
    riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    let mut got: Vec<i64> = out.lock().unwrap().iter().map(|wv| wv.value.1).collect();
    got.sort();
    assert_eq!(got, [3, 7]);
}

/// (window start, window end, sum, timing, index, is_last) of session windows, gap 10.
type SessionPane = (i64, i64, i64, Timing, u64, bool);

fn sessions(
    script: TestStream<(char, i64)>,
    trigger: Option<Trigger>,
    lateness: i64,
    accumulating: bool,
) -> Vec<SessionPane> {
    let mut panes: Vec<SessionPane> = session_panes(script, trigger, lateness, accumulating)
        .into_iter()
        .map(|(start, end, sum, pane)| (start, end, sum, pane.timing, pane.index, pane.is_last))
        .collect();
    panes.sort_by_key(|p| (p.0, p.4));
    panes
}

#[test]
fn counts_add_up_when_an_element_bridges_two_sessions() {
    // [1, 11) and [12, 22) hold one element each; the 3 at 8 makes [8, 18), which bridges
    // them into [1, 22) with three elements: the early count of 3 is reached.
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1)), (('A', 2), ms(12))])
        .add_elements(vec![(('A', 3), ms(8))])
        .add_elements(vec![(('A', 40), ms(40))])
        .advance_watermark_to(ms(100));
    let t = Trigger::after_watermark().with_early_firings(Trigger::after_count(3));
    assert_eq!(
        sessions(script, Some(t), 0, false),
        [
            (1, 22, 6, Timing::Early, 0, false),
            // The on-time pane always fires (Beam's FIRE_ALWAYS), here empty.
            (1, 22, 0, Timing::OnTime, 1, true),
            (40, 50, 40, Timing::OnTime, 0, true),
        ]
    );
}

/// (window start, window end, sum, pane) of session windows, gap 10.
fn session_panes(
    script: TestStream<(char, i64)>,
    trigger: Option<Trigger>,
    lateness: i64,
    accumulating: bool,
) -> Vec<(i64, i64, i64, PaneInfo)> {
    let p = Pipeline::new();
    let mut windowed = p.test_stream(script).window_into(Sessions::with_gap_millis(10)).with_allowed_lateness(lateness);
    if accumulating {
        windowed = windowed.accumulating_fired_panes();
    }
    if let Some(t) = trigger {
        windowed = windowed.triggering(t);
    }
    let out = riffle_connectors::memory::collect(&windowed.combine_per_key(Sum::new()));
    riffle_timely::run(&p, &RunOptions::threads(3)).unwrap();
    let mut panes: Vec<_> = out
        .lock()
        .unwrap()
        .iter()
        .map(|wv| {
            let Window::Interval { start, end } = wv.window else { panic!("sessions") };
            (start.millis(), end.millis(), wv.value.1, wv.pane)
        })
        .collect();
    panes.sort_by_key(|p| (p.0, p.1, p.3.index));
    panes
}

/// A pane's info as Beam describes it: timing, index, non-speculative index, first, last.
fn pane(timing: Timing, index: u64, non_speculative_index: i64, is_last: bool) -> PaneInfo {
    PaneInfo { timing, index, non_speculative_index, is_first: index == 0, is_last, retraction: false }
}

#[test]
fn a_late_element_bridging_two_fired_sessions_fires_a_late_pane_of_the_merged_session() {
    // Default trigger, allowed lateness 100: [1, 11) and [15, 25) fire on time; the late
    // 3 at 8 makes [8, 18), which overlaps both: the merged [1, 25) gets a late pane. The
    // merged session is a new window for pane info, as in Beam: its first pane has index
    // 0, non-speculative index 0, and is the first, whatever its parts had fired.
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1)), (('A', 2), ms(15))])
        .advance_watermark_to(ms(50))
        .add_elements(vec![(('A', 3), ms(8))])
        .advance_watermark_to(ms(500));
    for (accumulating, merged) in [(false, 3), (true, 6)] {
        assert_eq!(
            session_panes(script.clone(), None, 100, accumulating),
            [
                (1, 11, 1, pane(Timing::OnTime, 0, 0, false)),
                // Accumulating: the late pane holds both sessions and the bridge.
                (1, 25, merged, pane(Timing::Late, 0, 0, false)),
                (15, 25, 2, pane(Timing::OnTime, 0, 0, false)),
            ],
            "accumulating: {accumulating}"
        );
    }
}

#[test]
fn early_panes_of_merged_sessions_start_their_pane_count_afresh() {
    // An early pane after every element: [1, 11) and [12, 22) each fire one early pane;
    // the 3 at 8 bridges them into [1, 22), whose early pane is its first (index 0,
    // non-speculative index -1), and its on-time pane its second (index 1, 0).
    // (Watermark advances between them fix the order: elements sent at one watermark are
    // applied in timestamp order, docs/semantics.md.)
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1))])
        .advance_watermark_to(ms(2))
        .add_elements(vec![(('A', 2), ms(12))])
        .advance_watermark_to(ms(3))
        .add_elements(vec![(('A', 3), ms(8))])
        .advance_watermark_to(ms(100));
    let t = Trigger::after_watermark().with_early_firings(Trigger::after_count(1));
    for (accumulating, early, on_time) in [(false, 3, 0), (true, 6, 6)] {
        assert_eq!(
            session_panes(script.clone(), Some(t.clone()), 0, accumulating),
            [
                (1, 11, 1, pane(Timing::Early, 0, -1, false)),
                (1, 22, early, pane(Timing::Early, 0, -1, false)),
                (1, 22, on_time, pane(Timing::OnTime, 1, 0, true)),
                (12, 22, 2, pane(Timing::Early, 0, -1, false)),
            ],
            "accumulating: {accumulating}"
        );
    }
}

#[test]
fn without_allowed_lateness_a_bridging_element_that_is_late_is_dropped() {
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1)), (('A', 2), ms(20))])
        .advance_watermark_to(ms(50))
        .add_elements(vec![(('A', 3), ms(12))]);
    assert_eq!(
        sessions(script, None, 0, false),
        [(1, 11, 1, Timing::OnTime, 0, true), (20, 30, 2, Timing::OnTime, 0, true)]
    );
}

#[test]
fn a_closed_session_stays_closed_when_it_merges() {
    // After(count 1) fires once and finishes [1, 11); the 2 at 5 merges into it while the
    // window is still open in event time, and is dropped: the merged trigger is finished.
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1))])
        .add_elements(vec![(('A', 2), ms(5))])
        .advance_watermark_to(ms(100));
    assert_eq!(sessions(script, Some(Trigger::after_count(1)), 0, false), [(1, 11, 1, Timing::Early, 0, true)]);
}

#[test]
fn timestamp_combiners_hold_triggered_panes_at_their_elements() {
    // Early panes after two elements: the first pane (3 and 5) and the on-time pane (7).
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(3)), (('A', 2), ms(5))])
        .add_elements(vec![(('A', 4), ms(7))])
        .advance_watermark_to(ms(100));
    let stamps = |combiner: TimestampCombiner| {
        let p = Pipeline::new();
        let sums = p
            .test_stream(script.clone())
            .window_into(FixedWindows::of_millis(10))
            .with_timestamp_combiner(combiner)
            .triggering(Trigger::after_watermark().with_early_firings(Trigger::after_count(2)))
            .combine_per_key(Sum::new());
        // Downstream, re-windowed into 4 ms windows: a pane at its combined timestamp lands
        // in that timestamp's window, on time.
        let regrouped = sums
            .window_into(FixedWindows::of_millis(4))
            .triggering(Trigger::after_watermark())
            .map(|(k, v)| (k, v))
            .combine_per_key(Sum::new());
        let out = riffle_connectors::memory::collect(&sums);
        let down = riffle_connectors::memory::collect(&regrouped);
        let report = riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
        let mut got: Vec<(i64, i64)> =
            out.lock().unwrap().iter().map(|wv| (wv.value.1, wv.timestamp.millis())).collect();
        got.sort();
        let mut windows: Vec<(i64, i64)> = down
            .lock()
            .unwrap()
            .iter()
            .map(|wv| {
                let Window::Interval { start, .. } = wv.window else { panic!("fixed windows") };
                (start.millis(), wv.value.1)
            })
            .collect();
        windows.sort();
        assert_eq!(report.late_dropped("CombinePerKey"), 0);
        (got, windows)
    };
    assert_eq!(stamps(TimestampCombiner::EndOfWindow), (vec![(3, 9), (4, 9)], vec![(8, 7)]));
    assert_eq!(stamps(TimestampCombiner::Earliest), (vec![(3, 3), (4, 7)], vec![(0, 3), (4, 4)]));
    assert_eq!(stamps(TimestampCombiner::Latest), (vec![(3, 5), (4, 7)], vec![(4, 7)]));
}

#[test]
fn dropped_elements_go_to_the_late_output_with_their_timestamps_and_windows() {
    // Lateness 5: the 9 @ 4 sent at watermark 20 is too late for [0, 10); with a trigger
    // that closes after one pane, the 6 @ 16 arrives at a closed [10, 20).
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1)), (('A', 5), ms(15))])
        .advance_watermark_to(ms(20))
        .add_elements(vec![(('A', 9), ms(4)), (('A', 6), ms(16))]);
    let p = Pipeline::new();
    let keyed = p.test_stream(script).window_into(FixedWindows::of_millis(10)).with_allowed_lateness(5);
    let (sums, late) = keyed.triggering(Trigger::after_watermark()).combine_per_key_with_late(Sum::new());
    let sums_out = riffle_connectors::memory::collect(&sums.named("Score"));
    let late_out = riffle_connectors::memory::collect(&late);
    let report = riffle_timely::run(&p, &RunOptions::threads(3)).unwrap();
    let mut got: Vec<i64> = sums_out.lock().unwrap().iter().map(|wv| wv.value.1).collect();
    got.sort();
    assert_eq!(got, [1, 5]);
    let mut late: Vec<(i64, i64, i64)> = late_out
        .lock()
        .unwrap()
        .iter()
        .map(|wv| {
            let Window::Interval { start, .. } = wv.window else { panic!("fixed windows") };
            (wv.value.1, wv.timestamp.millis(), start.millis())
        })
        .collect();
    late.sort();
    assert_eq!(late, [(6, 16, 10), (9, 4, 0)]);
    assert_eq!(report.late_dropped("Score"), 2, "what goes to the late output is also counted");
}

#[test]
fn group_by_key_with_late_keeps_the_default_trigger() {
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1))])
        .advance_watermark_to(ms(10))
        .add_elements(vec![(('A', 2), ms(2))]);
    let p = Pipeline::new();
    let (groups, late) = p.test_stream(script).window_into(FixedWindows::of_millis(10)).group_by_key_with_late();
    let g = riffle_connectors::memory::collect(&groups);
    let l = riffle_connectors::memory::collect(&late);
    riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    assert_eq!(g.lock().unwrap().iter().map(|wv| wv.value.clone()).collect::<Vec<_>>(), [('A', vec![1])]);
    assert_eq!(l.lock().unwrap().iter().map(|wv| wv.value).collect::<Vec<_>>(), [('A', 2)]);
}
