//! The "team score" examples of Tyler Akidau's *Streaming 102* and of *Streaming Systems*,
//! chapter 2, as tests: one team's scores summed per key, in batch, in 2-minute fixed
//! windows under perfect and heuristic watermarks, with allowed lateness, with early,
//! on-time and late firings in both accumulation modes, and in sessions.
//!
//! The data set is our own (below), and every expected pane is derived by hand from the
//! Beam model in the comment above it; none was copied from Riffle's output. Where Riffle
//! deliberately differs from Beam (`docs/semantics.md`), the comment says how that
//! changes the expected pane. The fixed-window cases run at 1 and 4 workers, and one at
//! 2 processes x 2 workers, with the same expected panes.
//!
//! Bug classes caught: panes fired at the wrong watermark (too early, or held back), late
//! data kept or dropped on the wrong side of the allowed-lateness boundary, wrong pane
//! metadata (timing, index, non-speculative index, first/last), discarding and
//! accumulating mixed up, session windows not merging through a late-arriving element,
//! and any of these changing with the number of workers or processes.
//!
//! Most early firings here are every two elements, which needs no clock; the book's own
//! early firings, a minute of processing time after each pane's first score, are in
//! `early_panes_a_minute_of_processing_time_after_the_first_score`.

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;
use riffle_timely::testing::{cluster_scratch_dir, local_cluster};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
/// 12:00:00 (on the first day of the Unix epoch): the scores are 12:00 to 12:10.
const NOON: i64 = 12 * 60 * MINUTE;
/// The fixed windows: two minutes, as in the book.
const WINDOW: i64 = 2 * MINUTE;

const TEAM: &str = "Blue";

/// Event time `12:mm:ss`.
fn at(mm: i64, ss: i64) -> EventTime {
    EventTime::from_millis(NOON + mm * MINUTE + ss * SECOND)
}

/// The team's ten scores, numbered in the order they arrive (processing time), with the
/// event time each was scored at:
///
/// | # | score | event time | window          |
/// |---|-------|------------|-----------------|
/// | 1 | 5     | 12:00:40   | [12:00, 12:02)  |
/// | 2 | 6     | 12:02:50   | [12:02, 12:04)  |
/// | 3 | 2     | 12:01:30   | [12:00, 12:02)  |
/// | 4 | 3     | 12:03:40   | [12:02, 12:04)  |
/// | 5 | 4     | 12:02:10   | [12:02, 12:04)  |
/// | 6 | 8     | 12:05:10   | [12:04, 12:06)  |
/// | 7 | 1     | 12:07:20   | [12:06, 12:08)  |
/// | 8 | 9     | 12:01:50   | [12:00, 12:02)  |  the straggler: arrives long after its peers
/// | 9 | 7     | 12:06:40   | [12:06, 12:08)  |
/// |10 | 3     | 12:09:10   | [12:08, 12:10)  |
///
/// Per window: [12:00, 12:02) 5 + 2 + 9 = 16; [12:02, 12:04) 6 + 3 + 4 = 13;
/// [12:04, 12:06) 8; [12:06, 12:08) 1 + 7 = 8; [12:08, 12:10) 3. In all, 48.
const SCORES: [(i64, (i64, i64)); 10] = [
    (5, (0, 40)),
    (6, (2, 50)),
    (2, (1, 30)),
    (3, (3, 40)),
    (4, (2, 10)),
    (8, (5, 10)),
    (1, (7, 20)),
    (9, (1, 50)),
    (7, (6, 40)),
    (3, (9, 10)),
];

/// Scores number `which` (1-based, as in the table), keyed by the team.
fn arrive(which: &[usize]) -> Vec<((String, i64), EventTime)> {
    which
        .iter()
        .map(|&n| {
            let (score, (mm, ss)) = SCORES[n - 1];
            ((TEAM.to_string(), score), at(mm, ss))
        })
        .collect()
}

/// Every score, for the batch runs.
fn all_scores() -> Vec<((String, i64), EventTime)> {
    arrive(&(1..=SCORES.len()).collect::<Vec<_>>())
}

/// A **perfect** watermark: after each arrival it is the earliest event time still to
/// come, so no score is ever behind it. It stalls at 12:01:50 until the straggler (#8)
/// arrives, which holds back every window's pane until then: perfect, but slow.
fn perfect_watermark(which: &[usize]) -> TestStream<(String, i64)> {
    let keep = |ns: &[usize]| arrive(&ns.iter().copied().filter(|n| which.contains(n)).collect::<Vec<_>>());
    TestStream::new()
        .advance_watermark_to(at(0, 40)) // the earliest score of all, #1
        .add_elements(keep(&[1]))
        .advance_watermark_to(at(1, 30)) // #3 is the earliest still to come
        .add_elements(keep(&[2, 3]))
        .advance_watermark_to(at(1, 50)) // #8, the straggler, is now the earliest to come
        .add_elements(keep(&[4, 5, 6, 7, 8]))
        .advance_watermark_to(at(6, 40)) // #9
        .add_elements(keep(&[9]))
        .advance_watermark_to(at(9, 10)) // #10
        .add_elements(keep(&[10]))
    // ...and +infinity: nothing more to come.
}

/// A **heuristic** watermark that moves on at each window boundary as if every score of
/// the window were in. It is right about every score but the 9 (#8), which arrives with
/// the watermark at 12:06, four minutes after its window [12:00, 12:02) ended: late.
fn heuristic_watermark() -> TestStream<(String, i64)> {
    heuristic_watermark_until_infinity().advance_watermark_to(at(10, 0))
}

/// The heuristic watermark's script up to the last score; ending there, the stream would
/// leap the watermark from 12:08 to +infinity.
fn heuristic_watermark_until_infinity() -> TestStream<(String, i64)> {
    TestStream::new()
        .add_elements(arrive(&[1, 2]))
        .advance_watermark_to(at(1, 0))
        .add_elements(arrive(&[3]))
        .advance_watermark_to(at(2, 0)) // passes [12:00, 12:02)'s max timestamp 12:01:59.999
        .add_elements(arrive(&[4]))
        // The 3 (#4) arrives before the 4 (#5), which the early pane every two scores
        // counts on. Riffle applies what is sent at one watermark in event-time order,
        // whatever the order of arrival (docs/semantics.md), so the watermark takes a step
        // between them, still behind every score to come.
        .advance_watermark_to(at(2, 5))
        .add_elements(arrive(&[5]))
        .advance_watermark_to(at(4, 0))
        .add_elements(arrive(&[6, 7]))
        .advance_watermark_to(at(6, 0))
        .add_elements(arrive(&[8, 9])) // the 9 (#8) is late; the 7 (#9) is not
        .advance_watermark_to(at(8, 0))
        .add_elements(arrive(&[10]))
}

/// A pane of a fixed window: (window start in minutes after 12:00, summed score, timing,
/// index, non-speculative index, is_first, is_last).
type Pane = (i64, i64, Timing, u64, i64, bool, bool);

/// The pane of a window under the default trigger without allowed lateness: on time,
/// first and last (Beam's `ON_TIME_AND_ONLY_FIRING`).
fn only(start_min: i64, score: i64) -> Pane {
    (start_min, score, Timing::OnTime, 0, 0, true, true)
}

/// Turns one output element into a [`Pane`], checking what every pane here shares: the
/// team's key, a 2-minute window, and the output timestamp at the window's max timestamp
/// (Beam's default END_OF_WINDOW timestamp combiner; late panes too).
fn to_pane(value: &(String, i64), window: Window, timestamp: EventTime, pane: PaneInfo) -> Pane {
    assert_eq!(value.0, TEAM);
    let Window::Interval { start, end } = window else { panic!("a fixed window, not {window:?}") };
    assert_eq!(end.millis() - start.millis(), WINDOW, "{window:?}");
    assert_eq!((start.millis() - NOON) % MINUTE, 0, "{window:?}");
    assert_eq!(timestamp, window.max_timestamp(), "the pane of {window:?} is stamped with its end");
    (
        (start.millis() - NOON) / MINUTE,
        value.1,
        pane.timing,
        pane.index,
        pane.non_speculative_index,
        pane.is_first,
        pane.is_last,
    )
}

/// How the team's scores are windowed and triggered.
#[derive(Clone)]
struct Strategy {
    lateness_ms: i64,
    trigger: Option<Trigger>,
    accumulating: bool,
}

impl Strategy {
    fn default_trigger(lateness_ms: i64) -> Self {
        Strategy { lateness_ms, trigger: None, accumulating: false }
    }

    /// 2-minute fixed windows, ready to group.
    fn apply(&self, input: PCollection<(String, i64)>) -> PCollection<(String, i64)> {
        let mut w = input.window_into(FixedWindows::of_millis(WINDOW)).with_allowed_lateness(self.lateness_ms);
        if self.accumulating {
            w = w.accumulating_fired_panes();
        }
        match &self.trigger {
            Some(t) => w.triggering(t.clone()),
            None => w,
        }
    }
}

/// The panes of one run, sorted by window and index, and how many scores the grouping
/// dropped as too late.
#[derive(Debug)]
struct Run {
    panes: Vec<Pane>,
    dropped: u64,
}

fn sorted(mut panes: Vec<Pane>) -> Vec<Pane> {
    panes.sort_by_key(|p| (p.0, p.3));
    panes
}

/// Sums the team's scores per window on `workers` worker threads.
fn team_score(script: Option<TestStream<(String, i64)>>, strategy: &Strategy, workers: usize) -> Run {
    let p = Pipeline::new();
    let input = match script {
        Some(s) => p.test_stream(s),
        None => p.create_timestamped(all_scores()),
    };
    let sums = strategy.apply(input).combine_per_key(Sum::new()).named("TeamScore");
    let out = riffle_connectors::memory::collect(&sums);
    let report = riffle_timely::run(&p, &RunOptions::threads(workers)).unwrap();
    let panes = out.lock().unwrap().iter().map(|wv| to_pane(&wv.value, wv.window, wv.timestamp, wv.pane)).collect();
    Run { panes: sorted(panes), dropped: report.late_dropped("TeamScore") }
}

/// Worker counts every fixed-window case runs at: the answer must not depend on them.
const WORKERS: [usize; 2] = [1, 4];

/// Runs `script` (None: the batch of all scores) at every worker count in [`WORKERS`] and
/// checks the panes and the count of dropped scores.
fn check(script: impl Fn() -> Option<TestStream<(String, i64)>>, strategy: &Strategy, want: &[Pane], dropped: u64) {
    for workers in WORKERS {
        let run = team_score(script(), strategy, workers);
        assert_eq!(run.panes, want, "panes at {workers} worker(s)");
        assert_eq!(run.dropped, dropped, "scores dropped at {workers} worker(s)");
    }
}

/// [`check`] for the cases with an explicit trigger.
fn check_triggered(script: impl Fn() -> TestStream<(String, i64)>, strategy: &Strategy, want: &[Pane], dropped: u64) {
    check(|| Some(script()), strategy, want, dropped);
}

// ---------------------------------------------------------------------------------------
// 1. Batch.
// ---------------------------------------------------------------------------------------

#[test]
fn classic_batch_sums_every_score_into_one_total() {
    // Bounded input in the global window: the watermark goes from -infinity to +infinity
    // once every score is read, so the one window fires once, on time, first and last,
    // stamped with the global window's max timestamp. Every score counts, the 9 too: in
    // batch nothing is late.
    for workers in WORKERS {
        let p = Pipeline::new();
        let sums = p.create_timestamped(all_scores()).combine_per_key(Sum::new());
        let out = riffle_connectors::memory::collect(&sums);
        riffle_timely::run(&p, &RunOptions::threads(workers)).unwrap();
        let got: Vec<_> =
            out.lock().unwrap().iter().map(|wv| (wv.value.clone(), wv.window, wv.timestamp, wv.pane)).collect();
        assert_eq!(
            got,
            [(
                (TEAM.to_string(), 48),
                Window::Global,
                EventTime::END_OF_GLOBAL_WINDOW,
                PaneInfo::ON_TIME_AND_ONLY_FIRING
            )],
            "{workers} worker(s)"
        );
    }
}

#[test]
fn fixed_windows_in_batch_give_one_pane_per_window() {
    // The same bounded input in 2-minute windows: each window fires once when the watermark
    // reaches +infinity, with all of its scores (the table's per-window sums).
    let want = [only(0, 16), only(2, 13), only(4, 8), only(6, 8), only(8, 3)];
    check(|| None, &Strategy::default_trigger(0), &want, 0);
}

// ---------------------------------------------------------------------------------------
// 2. Perfect watermark.
// ---------------------------------------------------------------------------------------

#[test]
fn a_perfect_watermark_fires_each_window_once_with_every_score() {
    // No score is ever behind the watermark, so nothing is late and each window fires once
    // when the watermark passes its max timestamp, with all of its scores: the batch panes.
    // The cost is in when they fire, which the panes themselves do not show: the watermark
    // stalls at 12:01:50 until the 9 arrives, then leaps to 12:06:40, so [12:00, 12:02),
    // [12:02, 12:04) and [12:04, 12:06) all fire together, only after the 9 (score #8)
    // arrived; [12:06, 12:08) at 12:09:10; [12:08, 12:10) at +infinity.
    let want = [only(0, 16), only(2, 13), only(4, 8), only(6, 8), only(8, 3)];
    check(|| Some(perfect_watermark(&(1..=10).collect::<Vec<_>>())), &Strategy::default_trigger(0), &want, 0);
}

// ---------------------------------------------------------------------------------------
// 3. Heuristic watermark: the 9 is late.
// ---------------------------------------------------------------------------------------

#[test]
fn a_heuristic_watermark_drops_the_late_9_without_allowed_lateness() {
    // The watermark passes 12:02 with the 5 and the 2 in [12:00, 12:02): its pane is 7, on
    // time, first and last (no lateness, so no pane can follow). The 9 arrives with the
    // watermark at 12:06, past 12:01:59.999 + 0: dropped and counted. The other windows
    // fire at the next boundary with all their scores, as under the perfect watermark.
    let want = [only(0, 7), only(2, 13), only(4, 8), only(6, 8), only(8, 3)];
    check(|| Some(heuristic_watermark()), &Strategy::default_trigger(0), &want, 1);
}

#[test]
fn the_dropped_9_comes_out_of_the_late_outputs() {
    // The same run, with the dropped scores routed to a collection of their own: exactly
    // the 9, with its own timestamp (12:01:50) and window ([12:00, 12:02)). The panes do
    // not change, and the 9 still counts as dropped.
    let late_9 = vec![((TEAM.to_string(), 9), at(1, 50), Window::Interval { start: at(0, 0), end: at(2, 0) })];
    for workers in WORKERS {
        let p = Pipeline::new();
        let windowed = Strategy::default_trigger(0).apply(p.test_stream(heuristic_watermark()));
        let (sums, late) = windowed.combine_per_key_with_late(Sum::new());
        let sums_out = riffle_connectors::memory::collect(&sums.named("TeamScore"));
        let late_out = riffle_connectors::memory::collect(&late);
        let report = riffle_timely::run(&p, &RunOptions::threads(workers)).unwrap();
        let panes: Vec<Pane> =
            sums_out.lock().unwrap().iter().map(|wv| to_pane(&wv.value, wv.window, wv.timestamp, wv.pane)).collect();
        assert_eq!(sorted(panes), [only(0, 7), only(2, 13), only(4, 8), only(6, 8), only(8, 3)]);
        let late: Vec<_> =
            late_out.lock().unwrap().iter().map(|wv| (wv.value.clone(), wv.timestamp, wv.window)).collect();
        assert_eq!(late, late_9, "combine_per_key_with_late at {workers} worker(s)");
        assert_eq!(report.late_dropped("TeamScore"), 1);

        // GroupByKey: each window's scores as a list, and the same late 9.
        let p = Pipeline::new();
        let windowed = Strategy::default_trigger(0).apply(p.test_stream(heuristic_watermark()));
        let (groups, late) = windowed.group_by_key_with_late();
        let groups_out = riffle_connectors::memory::collect(&groups.named("TeamScores"));
        let late_out = riffle_connectors::memory::collect(&late);
        let report = riffle_timely::run(&p, &RunOptions::threads(workers)).unwrap();
        let mut groups: Vec<(i64, Vec<i64>, PaneInfo)> = groups_out
            .lock()
            .unwrap()
            .iter()
            .map(|wv| {
                assert_eq!(wv.value.0, TEAM);
                let Window::Interval { start, .. } = wv.window else { panic!("a fixed window") };
                let mut scores = wv.value.1.clone();
                scores.sort();
                ((start.millis() - NOON) / MINUTE, scores, wv.pane)
            })
            .collect();
        groups.sort_by_key(|g| g.0);
        let once = PaneInfo::ON_TIME_AND_ONLY_FIRING;
        assert_eq!(
            groups,
            [
                (0, vec![2, 5], once),
                (2, vec![3, 4, 6], once),
                (4, vec![8], once),
                (6, vec![1, 7], once),
                (8, vec![3], once)
            ],
            "group_by_key_with_late at {workers} worker(s)"
        );
        let late: Vec<_> =
            late_out.lock().unwrap().iter().map(|wv| (wv.value.clone(), wv.timestamp, wv.window)).collect();
        assert_eq!(late, late_9, "group_by_key_with_late at {workers} worker(s)");
        assert_eq!(report.late_dropped("TeamScores"), 1);
    }
}

/// Five minutes of allowed lateness: [12:00, 12:02) takes data until the watermark passes
/// 12:01:59.999 + 5:00 = 12:06:59.999.
const FIVE_MINUTES: i64 = 5 * MINUTE;

/// The default trigger's panes under the heuristic watermark, with five minutes of
/// allowed lateness (derived in `with_allowed_lateness_the_late_9_fires_a_late_pane`).
const WITH_LATENESS: [Pane; 6] = [
    (0, 7, Timing::OnTime, 0, 0, true, false),
    (0, 9, Timing::Late, 1, 1, false, false),
    (2, 13, Timing::OnTime, 0, 0, true, false),
    (4, 8, Timing::OnTime, 0, 0, true, false),
    (6, 8, Timing::OnTime, 0, 0, true, false),
    (8, 3, Timing::OnTime, 0, 0, true, false),
];

#[test]
fn with_allowed_lateness_the_late_9_fires_a_late_pane() {
    // The 9 arrives at watermark 12:06, within [12:00, 12:02)'s lateness: kept. The
    // default trigger (Repeatedly(AfterWatermark)) fires it in a LATE pane of its own
    // (discarding), index 1, non-speculative index 1. Riffle fires it when the watermark
    // passes 12:06 (late panes are grouped by the watermark they arrived at), Beam as soon
    // as it arrives; the pane is the same. With lateness, no pane is last: each window
    // fires on time, before its expiry, and the late pane fired when it arrived, before
    // [12:00, 12:02) expired. ([12:08, 12:10) fires at 12:10, the script's last watermark
    // before +infinity, well before its expiry at 12:14:59.999.)
    check(|| Some(heuristic_watermark()), &Strategy::default_trigger(FIVE_MINUTES), &WITH_LATENESS, 0);
}

// ---------------------------------------------------------------------------------------
// 4. Early, on-time and late firings.
// ---------------------------------------------------------------------------------------

/// Early panes every two scores (the book: every minute of processing time, which Riffle
/// cannot express yet), the on-time pane, and a late pane for every late score.
fn early_on_time_late() -> Trigger {
    Trigger::after_watermark().with_early_firings(Trigger::after_count(2)).with_late_firings(Trigger::after_count(1))
}

fn triggered(accumulating: bool) -> Strategy {
    Strategy { lateness_ms: FIVE_MINUTES, trigger: Some(early_on_time_late()), accumulating }
}

/// The discarding panes under the heuristic watermark with early/on-time/late firings.
///
/// - [12:00, 12:02): the 5, then the 2 (at 12:01): two scores, an EARLY pane of 7
///   (index 0, non-speculative -1, first). The watermark passes 12:02 with nothing new:
///   the ON_TIME pane fires anyway (Beam's FIRE_ALWAYS), empty: 0 (index 1,
///   non-speculative 0). The late 9 fires a LATE pane of 9 at once (index 2,
///   non-speculative 1). No pane is last: the window expires at 12:06:59.999 with nothing
///   left unfired, so it closes without a final pane (FIRE_IF_NON_EMPTY).
/// - [12:02, 12:04): the 6, then the 3: EARLY 9; the 4 is left for the ON_TIME pane.
/// - [12:04, 12:06): only the 8, never two: no early pane; ON_TIME 8, first.
/// - [12:06, 12:08): the 1 (at 12:04), then the 7 (at 12:06, not late): EARLY 8; the
///   ON_TIME pane at 12:08 is empty: 0.
/// - [12:08, 12:10): only the 3: ON_TIME 3, first.
const DISCARDING: [Pane; 9] = [
    (0, 7, Timing::Early, 0, -1, true, false),
    (0, 0, Timing::OnTime, 1, 0, false, false),
    (0, 9, Timing::Late, 2, 1, false, false),
    (2, 9, Timing::Early, 0, -1, true, false),
    (2, 4, Timing::OnTime, 1, 0, false, false),
    (4, 8, Timing::OnTime, 0, 0, true, false),
    (6, 8, Timing::Early, 0, -1, true, false),
    (6, 0, Timing::OnTime, 1, 0, false, false),
    (8, 3, Timing::OnTime, 0, 0, true, false),
];

#[test]
fn early_on_time_and_late_panes_discarding() {
    // Each pane holds what arrived since the previous one (see DISCARDING). Summed, the
    // panes give every score once: 48.
    let want = &DISCARDING;
    assert_eq!(want.iter().map(|p| p.1).sum::<i64>(), 48);
    check_triggered(heuristic_watermark, &triggered(false), want, 0);
}

#[test]
fn early_on_time_and_late_panes_accumulating() {
    // The same firings (same timing and indices); each pane holds everything its window has
    // received so far: [12:00, 12:02) 7, 7, then 7 + 9 = 16; [12:02, 12:04) 9, then
    // 9 + 4 = 13; [12:06, 12:08) 8, then 8. Each window's last pane is its batch total.
    let want = [
        (0, 7, Timing::Early, 0, -1, true, false),
        (0, 7, Timing::OnTime, 1, 0, false, false),
        (0, 16, Timing::Late, 2, 1, false, false),
        (2, 9, Timing::Early, 0, -1, true, false),
        (2, 13, Timing::OnTime, 1, 0, false, false),
        (4, 8, Timing::OnTime, 0, 0, true, false),
        (6, 8, Timing::Early, 0, -1, true, false),
        (6, 8, Timing::OnTime, 1, 0, false, false),
        (8, 3, Timing::OnTime, 0, 0, true, false),
    ];
    check_triggered(heuristic_watermark, &triggered(true), &want, 0);
}

// ---------------------------------------------------------------------------------------
// 5. The allowed-lateness boundary.
// ---------------------------------------------------------------------------------------

// [12:00, 12:02)'s max timestamp is 12:01:59.999 and the 9 arrives at watermark 12:06:00,
// 4:00.001 later. Riffle drops an element when the watermark it arrived at is *past* its
// window's max timestamp plus the allowed lateness (W past t: W > t), as Beam's
// garbage-collection time is.

#[test]
fn the_9_is_kept_when_the_watermark_is_exactly_at_the_windows_expiry() {
    // Lateness 4:00.001: expiry 12:01:59.999 + 4:00.001 = 12:06:00, exactly the watermark
    // the 9 arrived at, which is not past it: kept, in a LATE pane (index 1).
    //
    // Riffle fires a late pane when the watermark passes the watermark its elements arrived
    // at (a deliberate difference: Beam fires at once). Here that is the window's expiry,
    // where Beam too would fire the final pane (its garbage-collection firing), so the
    // pane is the last. (Firing at arrival, Beam would mark it not last, then close the
    // window with nothing left.)
    let lateness = 4 * MINUTE + 1;
    let want = [
        (0, 7, Timing::OnTime, 0, 0, true, false),
        (0, 9, Timing::Late, 1, 1, false, true),
        (2, 13, Timing::OnTime, 0, 0, true, false),
        (4, 8, Timing::OnTime, 0, 0, true, false),
        (6, 8, Timing::OnTime, 0, 0, true, false),
        (8, 3, Timing::OnTime, 0, 0, true, false),
    ];
    check(|| Some(heuristic_watermark()), &Strategy::default_trigger(lateness), &want, 0);
}

#[test]
fn the_9_is_dropped_when_the_watermark_is_one_ms_past_the_windows_expiry() {
    // Lateness 4:00: expiry 12:05:59.999; the watermark 12:06:00 is 1 ms past it: the 9 is
    // dropped and counted. The on-time pane is still not last: with lateness, late data
    // could have come until the expiry.
    let want = [
        (0, 7, Timing::OnTime, 0, 0, true, false),
        (2, 13, Timing::OnTime, 0, 0, true, false),
        (4, 8, Timing::OnTime, 0, 0, true, false),
        (6, 8, Timing::OnTime, 0, 0, true, false),
        (8, 3, Timing::OnTime, 0, 0, true, false),
    ];
    check(|| Some(heuristic_watermark()), &Strategy::default_trigger(4 * MINUTE), &want, 1);
}

#[test]
fn at_the_boundary_the_same_holds_with_early_and_late_firings() {
    // The triggered path judges lateness the same way. At 4:00.001 the 9 fires its LATE
    // pane at once (late count of 1), before the window expires: not last. At 4:00 it is
    // dropped, and [12:00, 12:02) has only its EARLY 7 and empty ON_TIME pane.
    let at_expiry = Strategy { lateness_ms: 4 * MINUTE + 1, ..triggered(false) };
    check_triggered(heuristic_watermark, &at_expiry, &DISCARDING, 0);
    let past_expiry = Strategy { lateness_ms: 4 * MINUTE, ..triggered(false) };
    let want: Vec<Pane> = DISCARDING.iter().copied().filter(|p| p.2 != Timing::Late).collect();
    check_triggered(heuristic_watermark, &past_expiry, &want, 1);
}

// ---------------------------------------------------------------------------------------
// 6. Sessions.
// ---------------------------------------------------------------------------------------

/// A session pane: (start, end, summed score), with its pane info and timestamp checked.
type Session = (EventTime, EventTime, i64);

fn sessions(which: &[usize], workers: usize) -> (Vec<Session>, u64) {
    let p = Pipeline::new();
    let sums = p
        .test_stream(perfect_watermark(which))
        .window_into(Sessions::with_gap_millis(MINUTE))
        .combine_per_key(Sum::new())
        .named("TeamSessions");
    let out = riffle_connectors::memory::collect(&sums);
    let report = riffle_timely::run(&p, &RunOptions::threads(workers)).unwrap();
    let mut got: Vec<Session> = out
        .lock()
        .unwrap()
        .iter()
        .map(|wv| {
            assert_eq!(wv.value.0, TEAM);
            let Window::Interval { start, end } = wv.window else { panic!("a session window") };
            assert_eq!(wv.pane, PaneInfo::ON_TIME_AND_ONLY_FIRING, "{:?}", wv.window);
            assert_eq!(wv.timestamp, wv.window.max_timestamp(), "end-of-window timestamp");
            (start, end, wv.value.1)
        })
        .collect();
    got.sort();
    (got, report.late_dropped("TeamSessions"))
}

#[test]
fn sessions_merge_through_a_late_arriving_score() {
    // One-minute gap sessions: each score opens [t, t + 1:00); a key's overlapping windows
    // merge. Perfect watermark (nothing late), default trigger: each session fires once,
    // on time, when the watermark passes its end.
    //
    // Before the 4 (#5) arrives, the scores in 12:00-12:05 are 5 @ 0:40, 2 @ 1:30 and
    // 6 @ 2:50, 3 @ 3:40: sessions [0:40, 2:30) and [2:50, 4:40), 20 s apart. The 4 @ 2:10
    // arrives after the 6 and the 3, in processing time, but with the watermark at 12:01:50,
    // before either session's end: its [2:10, 3:10) overlaps both and bridges them into
    // [0:40, 4:40). The 9 @ 1:50 (#8) then falls inside. [0:40, 4:40) = 5+2+9+4+6+3 = 29.
    // Then 8 @ 5:10 alone: [5:10, 6:10); 7 @ 6:40 and 1 @ 7:20 overlap: [6:40, 8:20) = 8;
    // 3 @ 9:10 alone: [9:10, 10:10).
    let want = vec![
        (at(0, 40), at(4, 40), 29),
        (at(5, 10), at(6, 10), 8),
        (at(6, 40), at(8, 20), 8),
        (at(9, 10), at(10, 10), 3),
    ];
    for workers in WORKERS {
        assert_eq!(sessions(&(1..=10).collect::<Vec<_>>(), workers), (want.clone(), 0), "{workers} worker(s)");
    }

    // Without the 4, nothing bridges the gap: the 9's [1:50, 2:50) extends the first session
    // to [0:40, 2:50) = 5 + 2 + 9, which only touches [2:50, 4:40) = 6 + 3, and windows that
    // only touch do not merge (Beam's intervals are disjoint when one ends where the other
    // starts).
    let without_4: Vec<usize> = (1..=10).filter(|&n| n != 5).collect();
    let want = vec![
        (at(0, 40), at(2, 50), 16),
        (at(2, 50), at(4, 40), 9),
        (at(5, 10), at(6, 10), 8),
        (at(6, 40), at(8, 20), 8),
        (at(9, 10), at(10, 10), 3),
    ];
    for workers in WORKERS {
        assert_eq!(sessions(&without_4, workers), (want.clone(), 0), "{workers} worker(s)");
    }
}

// ---------------------------------------------------------------------------------------
// Two processes.
// ---------------------------------------------------------------------------------------

/// Formats a pane the way the two-process test compares them.
#[derive(Clone)]
struct DescribePane;

impl DoFn for DescribePane {
    type In = (String, i64);
    type Out = String;
    fn process(&mut self, x: &(String, i64), ctx: &mut ProcessContext<'_, String>) {
        let pane = to_pane(x, ctx.window(), ctx.timestamp(), ctx.pane());
        ctx.output(format!("{pane:?}"));
    }
}

#[test]
fn early_on_time_and_late_panes_on_two_processes_of_two_workers() {
    // The discarding early/on-time/late case on a real cluster of two processes on
    // loopback: the scores cross processes in the shuffle, the watermark is the slowest
    // process's, and the panes must be the same as on threads.
    const TEST: &str = "early_on_time_and_late_panes_on_two_processes_of_two_workers";
    let dir = cluster_scratch_dir(TEST);
    let out = dir.join("panes.txt");
    let p = Pipeline::new();
    let sums = triggered(false).apply(p.test_stream(heuristic_watermark())).combine_per_key(Sum::new());
    riffle_connectors::text::write_lines(&sums.par_do(DescribePane), &out, |l| l.clone());
    riffle_timely::run(&p, &local_cluster(2, 2, TEST)).unwrap();
    let mut got: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    std::fs::remove_dir_all(&dir).ok();
    got.sort();
    let mut want: Vec<String> = DISCARDING.iter().map(|p| format!("{p:?}")).collect();
    want.sort();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------
// Where Riffle disagrees with Beam. Each test below holds Beam's answer and fails today;
// none of these differences is among the deliberate ones in docs/semantics.md.
// ---------------------------------------------------------------------------------------

/// The heuristic script with twenty extra 1-ms watermark steps after 12:04. They change
/// nothing in the model (no score arrives between them, and the 8 and the 1 that follow are
/// on time at 12:04 and at 12:04:00.020 alike), but a source polls at most 16 script events
/// per activation, so with them the grouping gets to see the watermark part way.
fn heuristic_watermark_in_small_steps() -> TestStream<(String, i64)> {
    let mut script = TestStream::new()
        .add_elements(arrive(&[1, 2]))
        .advance_watermark_to(at(1, 0))
        .add_elements(arrive(&[3]))
        .advance_watermark_to(at(2, 0))
        .add_elements(arrive(&[4]))
        .advance_watermark_to(at(2, 5)) // the 3 (#4) before the 4 (#5): see heuristic_watermark
        .add_elements(arrive(&[5]))
        .advance_watermark_to(at(4, 0));
    for ms in 1..=20 {
        script = script.advance_watermark_to(at(4, 0).plus_millis(ms));
    }
    script
        .add_elements(arrive(&[6, 7]))
        .advance_watermark_to(at(6, 0))
        .add_elements(arrive(&[8, 9]))
        .advance_watermark_to(at(8, 0))
        .add_elements(arrive(&[10]))
        .advance_watermark_to(at(10, 0))
}

#[test]
fn triggered_on_time_panes_are_not_last_while_late_data_may_come() {
    // With late firings and five minutes of lateness, an on-time pane fired when the
    // watermark passes 12:02, 12:04, 12:06, 12:08 or 12:10 cannot be the last: the window
    // takes late data until its expiry, minutes later, and the trigger has not finished.
    //
    // Whether the grouping *sees* the watermark stop between a window's end and its expiry
    // depends on scheduling (a test stream's source emits up to 16 script events per
    // activation), so Riffle does not let it decide: an on-time pane is last only when the
    // trigger finished or there is no allowed lateness. The same panes with the watermark in
    // small steps and in leaps, at 1 and 4 workers.
    let padded = team_score(Some(heuristic_watermark_in_small_steps()), &triggered(false), 1);
    assert_eq!(padded.panes, DISCARDING, "with extra watermark steps, on one worker");
    check(|| Some(heuristic_watermark_in_small_steps()), &triggered(false), &DISCARDING, 0);
    check(|| Some(heuristic_watermark()), &triggered(false), &DISCARDING, 0);
}

#[test]
fn a_watermark_leap_past_expiry_leaves_the_on_time_pane_not_last() {
    // The heuristic script, ending after the last score: the watermark leaps from 12:08 to
    // +infinity, past [12:08, 12:10)'s end and its expiry (12:14:59.999) at once. Beam's
    // ReduceFnRunner then treats the end-of-window firing as the window's garbage
    // collection ("where both EOW and GC timers come in together and we need to GC and
    // emit the final pane"): ON_TIME, first *and last*.
    //
    // Riffle differs on purpose (docs/semantics.md, deliberate differences): whether the
    // two come "together" is a matter of how the grouping was scheduled, not of the input,
    // so an on-time pane is last only when the allowed lateness is 0 or the trigger has
    // finished. Here neither: not last, the same panes as when the script ends at 12:10.
    check(|| Some(heuristic_watermark_until_infinity()), &Strategy::default_trigger(FIVE_MINUTES), &WITH_LATENESS, 0);
}

/// The heuristic script without the 5 (#1) and the 2 (#3): [12:00, 12:02) gets only the
/// late 9.
fn heuristic_watermark_with_only_the_late_9_at_noon() -> TestStream<(String, i64)> {
    TestStream::new()
        .add_elements(arrive(&[2]))
        .advance_watermark_to(at(1, 0))
        .advance_watermark_to(at(2, 0))
        .add_elements(arrive(&[4]))
        .advance_watermark_to(at(2, 5)) // the 3 (#4) before the 4 (#5): see heuristic_watermark
        .add_elements(arrive(&[5]))
        .advance_watermark_to(at(4, 0))
        .add_elements(arrive(&[6, 7]))
        .advance_watermark_to(at(6, 0))
        .add_elements(arrive(&[8, 9]))
        .advance_watermark_to(at(8, 0))
        .add_elements(arrive(&[10]))
        .advance_watermark_to(at(10, 0))
}

#[test]
fn a_late_score_in_a_window_without_panes_fires_a_late_pane() {
    // If the 9 is [12:00, 12:02)'s only score, its first pane is fired by a score that
    // arrived four minutes after the watermark passed the window's end. Beam's
    // PaneInfoTracker calls it LATE (the output watermark is past the window, so no
    // timestamp could make it on time downstream): index 0, non-speculative 0, first, not
    // last. The other windows' panes are those of DISCARDING.
    //
    // Under both the default trigger and an explicit one: a key whose first element in a
    // window came after its end never held the watermark there, so it has no on-time pane.
    let default_want = [
        (0, 9, Timing::Late, 0, 0, true, false),
        (2, 13, Timing::OnTime, 0, 0, true, false),
        (4, 8, Timing::OnTime, 0, 0, true, false),
        (6, 8, Timing::OnTime, 0, 0, true, false),
        (8, 3, Timing::OnTime, 0, 0, true, false),
    ];
    check(
        || Some(heuristic_watermark_with_only_the_late_9_at_noon()),
        &Strategy::default_trigger(FIVE_MINUTES),
        &default_want,
        0,
    );
    let mut want = vec![(0, 9, Timing::Late, 0, 0, true, false)];
    want.extend(DISCARDING.iter().copied().filter(|p| p.0 != 0));
    check_triggered(heuristic_watermark_with_only_the_late_9_at_noon, &triggered(false), &want, 0);
}

/// The heuristic script with processing time: each group of arrivals a minute (or half a
/// minute) of processing time after the one before, as the book draws them.
fn heuristic_watermark_with_processing_time() -> TestStream<(String, i64)> {
    TestStream::new()
        .add_elements(arrive(&[1, 2])) // P = 0: [12:00) and [12:02) both start a pane, due at P = 60 s
        .advance_processing_time(30 * SECOND)
        .advance_watermark_to(at(1, 0))
        .add_elements(arrive(&[3])) // P = 30 s: the same [12:00) pane
        .advance_processing_time(30 * SECOND) // P = 60 s: EARLY 5 + 2 and EARLY 6
        .advance_watermark_to(at(2, 0)) // [12:00) ON_TIME, empty
        .add_elements(arrive(&[4, 5])) // a new [12:02) pane, due at P = 120 s
        .advance_processing_time(MINUTE) // P = 120 s: EARLY 3 + 4
        .advance_watermark_to(at(4, 0)) // [12:02) ON_TIME, empty
        .add_elements(arrive(&[6, 7])) // [12:04) and [12:06) panes, due at P = 180 s
        .advance_watermark_to(at(6, 0)) // [12:04) ON_TIME 8, before its timer
        .add_elements(arrive(&[8, 9])) // the late 9 fires LATE at once; the 7 joins [12:06)'s pane
        .advance_processing_time(MINUTE) // P = 180 s: [12:06) EARLY 1 + 7
        .advance_watermark_to(at(8, 0)) // [12:06) ON_TIME, empty
        .add_elements(arrive(&[10]))
        .advance_watermark_to(at(10, 0)) // [12:08) ON_TIME 3
}

#[test]
fn early_panes_a_minute_of_processing_time_after_the_first_score() {
    // The book's trigger: early panes one minute of processing time after the first score
    // of each pane, the on-time pane, and a late pane per late score; discarding, five
    // minutes of allowed lateness. No pane is last (the trigger never finishes, and every
    // window expires with nothing unfired).
    let trigger = Trigger::after_watermark()
        .with_early_firings(Trigger::after_processing_time(MINUTE))
        .with_late_firings(Trigger::after_count(1));
    let strategy = Strategy { lateness_ms: FIVE_MINUTES, trigger: Some(trigger), accumulating: false };
    let want = [
        (0, 7, Timing::Early, 0, -1, true, false),
        (0, 0, Timing::OnTime, 1, 0, false, false),
        (0, 9, Timing::Late, 2, 1, false, false),
        (2, 6, Timing::Early, 0, -1, true, false),
        (2, 7, Timing::Early, 1, -1, false, false),
        (2, 0, Timing::OnTime, 2, 0, false, false),
        (4, 8, Timing::OnTime, 0, 0, true, false),
        (6, 8, Timing::Early, 0, -1, true, false),
        (6, 0, Timing::OnTime, 1, 0, false, false),
        (8, 3, Timing::OnTime, 0, 0, true, false),
    ];
    check(|| Some(heuristic_watermark_with_processing_time()), &strategy, &want, 0);
}
