//! Stateful processing: state per key and window, event-time and processing-time timers,
//! garbage collection at window expiry. Expected outputs are written from the Beam model
//! (the programming guide's "State and Timers" section and its examples), not from a run.

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;
use riffle_timely::testing::{Describe, cluster_scratch_dir, describe, local_cluster, try_run_windowed};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn ms(t: i64) -> EventTime {
    EventTime::from_millis(t)
}

/// Drops repeated ids within a day of the first: state remembers the id, and an event-time
/// timer a day later clears it (the issue's `dedupe`).
#[derive(Clone)]
struct Dedupe;

impl StatefulDoFn for Dedupe {
    type K = String;
    type V = i64;
    type Out = (String, i64);
    type State = ValueState<bool>;
    fn process(
        &mut self,
        id: &String,
        v: &i64,
        seen: &mut ValueState<bool>,
        ctx: &mut StateContext<'_, (String, i64)>,
    ) {
        if seen.read().is_none() {
            seen.write(true);
            ctx.output((id.clone(), *v));
            ctx.set_event_timer("forget", ctx.timestamp().plus_millis(DAY));
        }
    }
    fn on_timer(
        &mut self,
        _: &String,
        timer: &str,
        seen: &mut ValueState<bool>,
        _: &mut StateContext<'_, (String, i64)>,
    ) {
        assert_eq!(timer, "forget");
        seen.clear();
    }
}

fn dedupe_script() -> TestStream<(String, i64)> {
    let e = |id: &str, v: i64, t: i64| ((id.to_string(), v), ms(t));
    TestStream::new()
        .add_elements(vec![e("a", 1, 0), e("b", 2, HOUR)])
        .advance_watermark_to(ms(2 * HOUR))
        // Within the day: dropped.
        .add_elements(vec![e("a", 3, 3 * HOUR), e("b", 4, 20 * HOUR)])
        .advance_watermark_to(ms(DAY + 2 * HOUR))
        // "a"'s timer (at 24 h) has fired, "b"'s (at 25 h) too: both are new again.
        .add_elements(vec![e("a", 5, DAY + 3 * HOUR), e("b", 6, DAY + 4 * HOUR)])
        .advance_watermark_to(ms(DAY + 5 * HOUR))
        // "a" again within a day of 27 h: dropped.
        .add_elements(vec![e("a", 7, DAY + 6 * HOUR)])
}

fn dedupe(opts: &RunOptions) -> Vec<WindowedValue<(String, i64)>> {
    let mut out =
        try_run_windowed(opts, |p| p.test_stream(dedupe_script()).par_do_stateful(Dedupe)).expect("the job runs");
    out.sort_by_key(|wv| wv.value.clone());
    out
}

#[test]
fn dedupe_drops_repeats_within_a_day_and_forgets_after_it() {
    for workers in [1, 4] {
        let got: Vec<(String, i64, i64)> = dedupe(&RunOptions::threads(workers))
            .into_iter()
            .map(|wv| (wv.value.0, wv.value.1, wv.timestamp.millis()))
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), 1, 0),
                ("a".into(), 5, DAY + 3 * HOUR),
                ("b".into(), 2, HOUR),
                ("b".into(), 6, DAY + 4 * HOUR)
            ],
            "{workers} workers: each output at its element's timestamp"
        );
    }
}

#[test]
fn dedupe_is_the_same_on_two_processes_of_two_workers() {
    const TEST: &str = "dedupe_is_the_same_on_two_processes_of_two_workers";
    let dir = cluster_scratch_dir(TEST);
    let out = dir.join("out.txt");
    let p = Pipeline::new();
    let lines = p.test_stream(dedupe_script()).par_do_stateful(Dedupe).par_do(Describe::new());
    riffle_connectors::text::write_lines(&lines, &out, |l| l.clone());
    riffle_timely::run(&p, &local_cluster(2, 2, TEST)).unwrap();
    let mut got: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    std::fs::remove_dir_all(&dir).ok();
    got.sort();
    let mut want: Vec<String> = dedupe(&RunOptions::threads(1)).iter().map(describe).collect();
    want.sort();
    assert_eq!(got, want);
}

/// Beam's "batched RPC" example: buffer a key's elements and flush them in batches of
/// `MAX`, or when the watermark passes the end of the window (an event-time timer there),
/// so nothing is left behind.
#[derive(Clone)]
struct Batched;

const MAX: usize = 3;

impl StatefulDoFn for Batched {
    type K = char;
    type V = i64;
    type Out = (char, Vec<i64>);
    type State = (BagState<i64>, CombiningState<Count<i64>>);
    fn process(&mut self, k: &char, v: &i64, state: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
        let (buffer, count) = state;
        buffer.add(*v);
        count.add(v);
        ctx.set_event_timer("end", ctx.window().max_timestamp());
        if count.read() as usize >= MAX {
            ctx.output((*k, buffer.take()));
            count.clear();
        }
    }
    fn on_timer(&mut self, k: &char, _: &str, state: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
        let (buffer, count) = state;
        if !buffer.is_empty() {
            ctx.output((*k, buffer.take()));
        }
        count.clear();
    }
}

#[test]
fn batched_rpc_flushes_full_batches_then_the_rest_at_the_end_of_the_window() {
    // Fixed 10 ms windows. Key 'x': 1..5 in [0, 10): a batch of 3, then 2 left for the
    // end-of-window timer (at 9, output at 9). Key 'y': 6 in [10, 20), flushed at 19.
    let script = TestStream::new()
        .add_elements(vec![(('x', 1), ms(1)), (('x', 2), ms(2)), (('x', 3), ms(3))])
        .advance_watermark_to(ms(4))
        .add_elements(vec![(('x', 4), ms(5)), (('x', 5), ms(6)), (('y', 6), ms(12))])
        .advance_watermark_to(ms(30));
    for workers in [1, 4] {
        let mut got: Vec<(char, Vec<i64>, i64, Window)> = try_run_windowed(&RunOptions::threads(workers), |p| {
            p.test_stream(script.clone()).window_into(FixedWindows::of_millis(10)).par_do_stateful(Batched)
        })
        .unwrap()
        .into_iter()
        .map(|wv| (wv.value.0, wv.value.1, wv.timestamp.millis(), wv.window))
        .collect();
        got.sort();
        let w = |s: i64| Window::Interval { start: ms(s), end: ms(s + 10) };
        assert_eq!(
            got,
            [('x', vec![1, 2, 3], 3, w(0)), ('x', vec![4, 5], 9, w(0)), ('y', vec![6], 19, w(10))],
            "{workers} workers"
        );
    }
}

/// A looping timer: every 10 ms of event time from a key's first element, it outputs how
/// many elements came since the last tick, until a tick with none.
#[derive(Clone)]
struct Ticker;

impl StatefulDoFn for Ticker {
    type K = u8;
    type V = ();
    type Out = (u8, i64);
    type State = (ValueState<i64>, CombiningState<Count<()>>);
    fn process(&mut self, _: &u8, _: &(), state: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
        let (next, count) = state;
        count.add(&());
        if next.read().is_none() {
            let at = ctx.timestamp().plus_millis(10);
            next.write(at.millis());
            ctx.set_event_timer("tick", at);
        }
    }
    fn on_timer(&mut self, k: &u8, _: &str, state: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
        let (next, count) = state;
        let n = count.read() as i64;
        ctx.output((*k, n));
        count.clear();
        if n > 0 {
            let at = EventTime::from_millis(*next.read().expect("a tick was set") + 10);
            next.write(at.millis());
            ctx.set_event_timer("tick", at);
        } else {
            next.clear();
        }
    }
}

#[test]
fn a_looping_timer_fires_in_order_until_it_stops_setting_itself() {
    // 0 and 1, then the watermark passes 11: the tick at 10 counts 2 and sets 20. 12 comes;
    // the watermark jumps to 33: the tick at 20 counts 1 and sets 30, which is due too and
    // counts 0: stop. 35 starts again: 45 (1), 55 (0: stop).
    let script = TestStream::new()
        .add_elements(vec![((7u8, ()), ms(0)), ((7, ()), ms(1))])
        .advance_watermark_to(ms(11))
        .add_elements(vec![((7, ()), ms(12))])
        .advance_watermark_to(ms(33))
        .add_elements(vec![((7, ()), ms(35))])
        .advance_watermark_to(ms(100));
    let mut got: Vec<(i64, i64)> =
        try_run_windowed(&RunOptions::threads(2), |p| p.test_stream(script).par_do_stateful(Ticker))
            .unwrap()
            .into_iter()
            .map(|wv| (wv.timestamp.millis(), wv.value.1))
            .collect();
    got.sort();
    assert_eq!(got, [(10, 2), (20, 1), (30, 0), (45, 1), (55, 0)]);
    // Sent at one watermark, elements all go in before any timer the watermark passes
    // next: 0, 1 and 12 together make one tick of 3 (as in Beam, where they share a bundle).
    let together = TestStream::new()
        .add_elements(vec![((7u8, ()), ms(0)), ((7, ()), ms(1)), ((7, ()), ms(12))])
        .advance_watermark_to(ms(100));
    let mut got: Vec<(i64, i64)> =
        try_run_windowed(&RunOptions::threads(2), |p| p.test_stream(together).par_do_stateful(Ticker))
            .unwrap()
            .into_iter()
            .map(|wv| (wv.timestamp.millis(), wv.value.1))
            .collect();
    got.sort();
    assert_eq!(got, [(10, 3), (20, 0)]);
}

/// A timer's output timestamp holds the watermark: a downstream grouping sees its output
/// on time even though the timer fires later than that timestamp.
#[derive(Clone)]
struct Delayed;

impl StatefulDoFn for Delayed {
    type K = u8;
    type V = i64;
    type Out = (u8, i64);
    type State = ValueState<i64>;
    fn process(&mut self, _: &u8, v: &i64, state: &mut ValueState<i64>, ctx: &mut StateContext<'_, (u8, i64)>) {
        state.write(*v);
        // Fire 50 ms later, but stamp the output at the element's timestamp.
        ctx.set_event_timer_with_output("later", ctx.timestamp().plus_millis(50), ctx.timestamp());
    }
    fn on_timer(&mut self, k: &u8, _: &str, state: &mut ValueState<i64>, ctx: &mut StateContext<'_, (u8, i64)>) {
        ctx.output((*k, *state.read().expect("a value")));
    }
}

#[test]
fn a_timer_output_timestamp_holds_the_watermark_for_the_groupings_downstream() {
    let script =
        TestStream::new().add_elements(vec![((1u8, 5i64), ms(3)), ((2, 6), ms(4))]).advance_watermark_to(ms(200));
    let (sums, dropped) = {
        let p = Pipeline::new();
        let sums = p
            .test_stream(script)
            .par_do_stateful(Delayed)
            .window_into(FixedWindows::of_millis(10))
            .map(|(_, v)| ((), v))
            .combine_per_key(Sum::new())
            .named("Sums");
        let out = riffle_connectors::memory::collect(&sums);
        let report = riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
        let got: Vec<(i64, Timing)> = out.lock().unwrap().iter().map(|wv| (wv.value.1, wv.pane.timing)).collect();
        (got, report.late_dropped("Sums"))
    };
    assert_eq!(sums, [(11, Timing::OnTime)], "both outputs in [0, 10), on time");
    assert_eq!(dropped, 0);
}

/// A processing-time timer, on the clock a TestStream scripts: it flushes a key's buffer
/// 100 ms of processing time after the first element.
#[derive(Clone)]
struct Flush;

impl StatefulDoFn for Flush {
    type K = u8;
    type V = i64;
    type Out = (u8, i64);
    type State = CombiningState<Sum<i64>>;
    fn process(&mut self, _: &u8, v: &i64, sum: &mut CombiningState<Sum<i64>>, ctx: &mut StateContext<'_, (u8, i64)>) {
        sum.add(v);
        let at = ctx.now().plus_millis(100);
        ctx.set_processing_timer("flush", at);
    }
    fn on_timer(&mut self, k: &u8, _: &str, sum: &mut CombiningState<Sum<i64>>, ctx: &mut StateContext<'_, (u8, i64)>) {
        ctx.output((*k, sum.read()));
        sum.clear();
    }
}

#[test]
fn a_processing_time_timer_fires_when_the_scripted_clock_reaches_it() {
    // 1 and 2 arrive at clock 0: the timer is at 100. The clock moves to 50; 3 arrives and
    // resets it to 150. The clock moves to 120 (not yet); 10 arrives and resets it to 220.
    // The clock moves to 320: one flush of 1 + 2 + 3 + 10.
    let script = TestStream::new()
        .add_elements(vec![((1u8, 1i64), ms(1)), ((1, 2), ms(2))])
        .advance_processing_time(50)
        .add_elements(vec![((1, 3), ms(3))])
        .advance_processing_time(70)
        .add_elements(vec![((1, 10), ms(4))])
        .advance_processing_time(200);
    let got: Vec<(u8, i64)> =
        try_run_windowed(&RunOptions::threads(2), |p| p.test_stream(script).par_do_stateful(Flush))
            .unwrap()
            .into_iter()
            .map(|wv| wv.value)
            .collect();
    assert_eq!(got, [(1, 16)]);
}

/// A key's state in a window is dropped when the watermark passes the window's end plus
/// the allowed lateness: the step ends with no state, and later elements are dropped.
#[test]
fn state_is_dropped_at_window_expiry_and_later_elements_with_it() {
    let script = TestStream::new()
        .add_elements(vec![(('a', 5i64), ms(1)), (('b', 6), ms(15))])
        .advance_watermark_to(ms(40))
        .add_elements(vec![(('a', 7), ms(2))]); // [0, 10) expired at 9 + 20: dropped
    let p = Pipeline::new();
    let out = p
        .test_stream(script)
        .window_into(FixedWindows::of_millis(10))
        .with_allowed_lateness(20)
        .par_do_stateful(Batched)
        .named("Batched");
    let collected = riffle_connectors::memory::collect(&out);
    let report = riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    let mut got: Vec<(char, Vec<i64>)> = collected.lock().unwrap().iter().map(|wv| wv.value.clone()).collect();
    got.sort();
    assert_eq!(got, [('a', vec![5]), ('b', vec![6])]);
    assert_eq!(report.late_dropped("Batched"), 1);
    let state: u64 = report.steps.iter().filter(|s| s.step == "Batched").map(|s| s.state.entries).sum();
    assert_eq!(state, 0, "no state left");
}

/// Sessions written with state and timers: open sessions by start (end, sum) in a
/// `MapState`; an element opens `[t, t + gap)` and merges every session it overlaps; each
/// session has a timer at its last millisecond, which outputs it.
#[derive(Clone)]
struct StateSessions {
    gap: i64,
}

impl StatefulDoFn for StateSessions {
    type K = u8;
    type V = i64;
    type Out = (u8, i64, i64, i64);
    type State = MapState<i64, (i64, i64)>;
    fn process(&mut self, k: &u8, v: &i64, open: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
        let _ = k;
        let t = ctx.timestamp().millis();
        let (mut start, mut end, mut sum) = (t, t + self.gap, *v);
        let overlapping: Vec<i64> =
            open.entries().filter(|(s, (e, _))| **s < end && start < *e).map(|(s, _)| *s).collect();
        for s in overlapping {
            let (e, x) = open.remove(&s).expect("an open session");
            ctx.clear_timer(&format!("{s}"));
            (start, end, sum) = (start.min(s), end.max(e), sum + x);
        }
        open.put(start, (end, sum));
        ctx.set_event_timer(&format!("{start}"), EventTime::from_millis(end - 1));
    }
    fn on_timer(&mut self, k: &u8, timer: &str, open: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
        let start: i64 = timer.parse().expect("a session's start");
        let (end, sum) = open.remove(&start).expect("the timer's session");
        ctx.output((*k, start, end, sum));
    }
}

mod sessions_by_state {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// The same sessions as the built-in `Sessions` window with a sum, on streams with
        /// nothing late, at 1 and 3 workers.
        #[test]
        fn sessions_by_state_and_timers_match_the_built_in_sessions(
            events in prop::collection::vec((0u8..4, -5i64..20, 0i64..400), 1..60),
            cuts in prop::collection::vec(1usize..15, 0..6),
            seed in any::<u64>(),
            gap in 5i64..40,
            workers in prop::sample::select(vec![1usize, 3]),
        ) {
            let script = riffle_timely::testing::as_stream(&events, &cuts, seed);
            let opts = RunOptions::threads(workers);
            let mut ours: Vec<(u8, i64, i64, i64)> =
                try_run_windowed(&opts, |p| p.test_stream(script.clone()).par_do_stateful(StateSessions { gap }))
                    .unwrap()
                    .into_iter()
                    .map(|wv| wv.value)
                    .collect();
            ours.sort();
            let mut built_in: Vec<(u8, i64, i64, i64)> = try_run_windowed(&opts, |p| {
                p.test_stream(script).window_into(Sessions::with_gap_millis(gap)).combine_per_key(Sum::new())
            })
            .unwrap()
            .into_iter()
            .map(|wv| {
                let Window::Interval { start, end } = wv.window else { panic!("a session") };
                (wv.value.0, start.millis(), end.millis(), wv.value.1)
            })
            .collect();
            built_in.sort();
            prop_assert_eq!(ours, built_in);
        }
    }
}

#[test]
fn a_stateful_dofn_over_merging_windows_is_refused_at_start_naming_the_step() {
    let err = try_run_windowed(&RunOptions::threads(1), |p| {
        p.create_timestamped(vec![(('a', 1i64), ms(1))])
            .window_into(Sessions::with_gap_millis(10))
            .par_do_stateful(Batched)
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("StatefulParDo") && err.contains("do not merge"), "{err}");
}
