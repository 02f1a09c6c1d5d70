//! Accumulating-and-retracting mode, with expected output written from the model: each
//! new pane of a window is preceded by a retraction of the previous one, merged-away
//! sessions are retracted, and groupings downstream take retractions out, so what they
//! hold is the latest panes only.

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;

fn ms(t: i64) -> EventTime {
    EventTime::from_millis(t)
}

/// (window start, index, retraction, value) of a keyed pane, sorted.
type Out = (i64, u64, bool, i64);

fn outputs(out: &riffle_connectors::memory::Collected<(char, i64)>) -> Vec<Out> {
    let mut got: Vec<Out> = out
        .lock()
        .unwrap()
        .iter()
        .map(|wv| {
            let Window::Interval { start, .. } = wv.window else { panic!("interval windows") };
            (start.millis(), wv.pane.index, wv.pane.retraction, wv.value.1)
        })
        .collect();
    got.sort();
    got
}

fn every_element() -> Trigger {
    Trigger::after_watermark().with_early_firings(Trigger::after_count(1))
}

#[test]
fn a_downstream_sum_of_retracting_panes_counts_only_the_latest() {
    for workers in [1, 4] {
        // A: 1, 2, 3 and B: 10 in [0, 10), a pane after every element.
        let script = TestStream::new()
            .add_elements(vec![(('A', 1), ms(1)), (('B', 10), ms(5))])
            .add_elements(vec![(('A', 2), ms(2))])
            .add_elements(vec![(('A', 3), ms(3))]);
        let p = Pipeline::new();
        let per_key = p
            .test_stream(script)
            .window_into(FixedWindows::of_millis(10))
            .triggering(every_element())
            .accumulating_and_retracting_fired_panes()
            .combine_per_key(Sum::new())
            .named("PerKey");
        // Downstream: the total of the keys' latest sums, once, at the window's end.
        let total = per_key
            .map(|(_, v)| ('T', v))
            .triggering(Trigger::after_watermark())
            .combine_per_key(Sum::new())
            .named("Total");
        let lists = per_key.map(|(_, v)| ('L', v)).triggering(Trigger::after_watermark()).group_by_key();
        let per_key_out = riffle_connectors::memory::collect(&per_key);
        let total_out = riffle_connectors::memory::collect(&total);
        let lists_out = riffle_connectors::memory::collect(&lists);
        riffle_timely::run(&p, &RunOptions::threads(workers)).unwrap();

        // A: early 1; -1, early 3; -3, early 6; -6, on time 6. B: early 10; -10, on time 10.
        let a = outputs(&per_key_out);
        let mut expected = vec![
            (0, 0, false, 1),
            (0, 0, false, 10),
            (0, 0, true, 1),
            (0, 0, true, 10),
            (0, 1, false, 3),
            (0, 1, false, 10),
            (0, 1, true, 3),
            (0, 2, false, 6),
            (0, 2, true, 6),
            (0, 3, false, 6),
        ];
        expected.sort();
        assert_eq!(a, expected, "{workers} workers");
        // Without taking retractions out the total would be 1 + 3 + 6 + 6 + 10 + 10 = 36.
        assert_eq!(outputs(&total_out), [(0, 0, false, 16)], "{workers} workers");
        let lists: Vec<Vec<i64>> = lists_out.lock().unwrap().iter().map(|wv| wv.value.1.clone()).collect();
        assert_eq!(lists, [vec![6, 10]], "{workers} workers: the latest pane of each key, once");
    }
}

#[test]
fn merged_sessions_retract_the_panes_of_the_sessions_they_replace() {
    // Gap 10: 1 @ 1 and 2 @ 15 make [1, 11) and [15, 25), each with an early pane; 3 @ 8,
    // sent after the watermark moved (elements sent at one watermark are applied in a
    // canonical order, not the script's), bridges them into [1, 25), whose panes replace theirs.
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1)), (('A', 2), ms(15))])
        .advance_watermark_to(ms(5))
        .add_elements(vec![(('A', 3), ms(8))]);
    let p = Pipeline::new();
    let sessions = p
        .test_stream(script)
        .window_into(Sessions::with_gap_millis(10))
        .triggering(every_element())
        .accumulating_and_retracting_fired_panes()
        .combine_per_key(Sum::new());
    let total = sessions
        .window_into(GlobalWindows)
        .triggering(Trigger::after_watermark())
        .map(|(k, v)| (k, v))
        .combine_per_key(Sum::new());
    let sessions_out = riffle_connectors::memory::collect(&sessions);
    let total_out = riffle_connectors::memory::collect(&total);
    riffle_timely::run(&p, &RunOptions::threads(3)).unwrap();
    let got = outputs(&sessions_out);
    assert_eq!(
        got,
        [
            (1, 0, false, 1),  // [1, 11) early
            (1, 0, false, 6),  // [1, 25) early: 1 + 2 + 3, a new window's first pane (Beam)
            (1, 0, true, 1),   // [1, 11) retracted when it merged
            (1, 0, true, 6),   // [1, 25)'s early pane retracted by its on-time pane
            (1, 1, false, 6),  // [1, 25) on time
            (15, 0, false, 2), // [15, 25) early
            (15, 0, true, 2),  // retracted when it merged
        ]
    );
    let totals: Vec<i64> = total_out.lock().unwrap().iter().map(|wv| wv.value.1).collect();
    assert_eq!(totals, [6], "one session of 6, not 1 + 2 + 6");
}
