//! Side inputs: singleton, list, map and multimap views read by map/filter steps, per
//! window by Beam's default window mapping, waiting for the side window to be complete.
//! Expected outputs are written from the Beam model.

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;
use riffle_timely::testing::{Describe, cluster_scratch_dir, describe, local_cluster, try_run_windowed};

fn ms(t: i64) -> EventTime {
    EventTime::from_millis(t)
}

fn values<T: Clone + Ord>(out: Vec<WindowedValue<T>>) -> Vec<T> {
    let mut v: Vec<T> = out.into_iter().map(|wv| wv.value).collect();
    v.sort();
    v
}

#[test]
fn a_computed_singleton_filters_the_main_input_at_any_worker_count() {
    // The mean of the amounts (computed by a combine) as a threshold.
    for workers in [1, 4] {
        let got = try_run_windowed(&RunOptions::threads(workers), |p| {
            let amounts = p.create(vec![1i64, 5, 9, 2, 8]);
            let mean = amounts.map(|x| x as f64).combine_globally(Mean::new()).as_singleton();
            amounts.filter_with(&mean, |x, mean| *x as f64 > *mean)
        })
        .unwrap();
        assert_eq!(values(got), [8, 9], "{workers} workers: above the mean of 5");
    }
}

#[test]
fn list_map_and_multimap_views() {
    let s = |x: &str| x.to_string();
    let got = try_run_windowed(&RunOptions::threads(3), |p| {
        let tags = p.create(vec![(s("u1"), s("vip")), (s("u2"), s("new")), (s("u1"), s("eu"))]).as_multimap();
        let users = p.create(vec![(s("u1"), s("Ana")), (s("u2"), s("Bo"))]).as_map();
        let all = p.create(vec![3i64, 1, 2]).as_list();
        p.create(vec![s("u1"), s("u2"), s("u3")])
            .map_with(&users, |id, users| {
                let name = users.get(&id).cloned().unwrap_or_else(|| "?".into());
                (id, name)
            })
            .map_with(&tags, |(id, name), tags| {
                let mut t = tags.get(&id).cloned().unwrap_or_default();
                t.sort();
                (name, t.join("+"))
            })
            .map_with(&all, |(name, tags), all| format!("{name} {tags} {all:?}"))
    })
    .unwrap();
    // The list in a canonical order (timestamp, then value): 1, 2, 3.
    assert_eq!(values(got), ["?  [1, 2, 3]", "Ana eu+vip [1, 2, 3]", "Bo new [1, 2, 3]"]);
}

/// Main elements in 5 ms windows read the side window (10 ms) that contains their window's
/// end: `[0, 5)` and `[5, 10)` read side `[0, 10)`, `[10, 15)` reads `[10, 20)`.
fn windowed(opts: &RunOptions) -> Vec<WindowedValue<(i64, i64)>> {
    try_run_windowed(opts, |p| {
        let side = p
            .create_timestamped(vec![(100i64, ms(1)), (20, ms(7)), (3, ms(12))])
            .window_into(FixedWindows::of_millis(10))
            .combine_globally(Sum::new())
            .as_singleton_or(0);
        p.create_timestamped(vec![(1i64, ms(2)), (2, ms(6)), (3, ms(11)), (4, ms(23))])
            .window_into(FixedWindows::of_millis(5))
            .map_with(&side, |x, total| (x, *total))
    })
    .unwrap()
}

#[test]
fn a_main_window_reads_the_side_window_containing_its_end() {
    for workers in [1, 4] {
        // [20, 25) reads side [20, 30), which has no element: the default, 0.
        assert_eq!(values(windowed(&RunOptions::threads(workers))), [(1, 120), (2, 120), (3, 3), (4, 0)]);
    }
}

#[test]
fn side_inputs_are_the_same_on_two_processes_of_two_workers() {
    const TEST: &str = "side_inputs_are_the_same_on_two_processes_of_two_workers";
    let dir = cluster_scratch_dir(TEST);
    let out = dir.join("out.txt");
    let p = Pipeline::new();
    let side = p
        .create_timestamped(vec![(100i64, ms(1)), (20, ms(7)), (3, ms(12))])
        .window_into(FixedWindows::of_millis(10))
        .combine_globally(Sum::new())
        .as_singleton_or(0);
    let lines = p
        .create_timestamped(vec![(1i64, ms(2)), (2, ms(6)), (3, ms(11)), (4, ms(23))])
        .window_into(FixedWindows::of_millis(5))
        .map_with(&side, |x, total| (x, *total))
        .par_do(Describe::new());
    riffle_connectors::text::write_lines(&lines, &out, |l| l.clone());
    riffle_timely::run(&p, &local_cluster(2, 2, TEST)).unwrap();
    let mut got: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    std::fs::remove_dir_all(&dir).ok();
    got.sort();
    let mut want: Vec<String> = windowed(&RunOptions::threads(1)).iter().map(describe).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_main_element_waits_for_a_side_input_that_arrives_after_it() {
    // The main stream is all there at once; the side stream's value comes after a
    // watermark advance. The main elements wait for it (and hold their output).
    let main = TestStream::new().add_elements(vec![((), ms(1)), ((), ms(2))]).advance_watermark_to(ms(500));
    let side = TestStream::new()
        .advance_watermark_to(ms(100))
        .add_elements(vec![(7i64, ms(150))])
        .advance_watermark_to(ms(200));
    for workers in [1, 3] {
        let got = try_run_windowed(&RunOptions::threads(workers), |p| {
            let threshold = p.test_stream(side.clone()).as_singleton();
            p.test_stream(main.clone()).map_with(&threshold, |_, t| *t)
        })
        .unwrap();
        assert_eq!(values(got), [7, 7], "{workers} workers: both read the side value");
    }
}

#[test]
fn an_empty_singleton_without_a_default_is_an_error_naming_the_step() {
    let err = try_run_windowed(&RunOptions::threads(2), |p| {
        let none = p.create(Vec::<i64>::new()).as_singleton();
        p.create(vec![1i64]).map_with(&none, |x, t| x + t).named("AddThreshold")
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("AddThreshold") && err.contains("as_singleton_or"), "{err}");
    let err = try_run_windowed(&RunOptions::threads(2), |p| {
        let twice = p.create(vec![("k".to_string(), 1i64), ("k".to_string(), 2)]).as_map();
        p.create(vec!["k".to_string()]).map_with(&twice, |k, m| m[&k]).named("Lookup")
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("Lookup") && err.contains("as_multimap"), "{err}");
}

/// A DoFn that reads a side input: scales each element by the side's factor, stamping the
/// output with the element's timestamp.
#[derive(Clone)]
struct Scale;

impl SideDoFn<i64> for Scale {
    type In = i64;
    type Out = (i64, i64);
    fn process(&mut self, x: &i64, factor: &i64, ctx: &mut ProcessContext<'_, (i64, i64)>) {
        let ts = ctx.timestamp().millis();
        ctx.output((x * factor, ts));
    }
}

#[test]
fn a_dofn_reads_a_side_input_through_its_context() {
    for workers in [1, 3] {
        let got = try_run_windowed(&RunOptions::threads(workers), |p| {
            let factor = p.create(vec![10i64]).as_singleton();
            p.create_timestamped(vec![(1i64, ms(5)), (2, ms(6))]).par_do_with_side(&factor, Scale)
        })
        .unwrap();
        assert_eq!(values(got), [(10, 5), (20, 6)], "{workers} workers");
    }
}

/// One script for both inputs, tagged: 0 for the side input, 1 for the main one. Side
/// values 10 then 20, each fired by a processing-time trigger; main elements 1 and 2
/// come after the first firing, 3 after the second. The processing-time advances are
/// barriers: everything before one is processed, side input included, before anything
/// after it is read.
fn updating_script() -> TestStream<(u8, i64)> {
    TestStream::new()
        .add_elements(vec![((0, 10), ms(1))])
        .advance_processing_time(1_000)
        .add_elements(vec![((1, 1), ms(2)), ((1, 2), ms(3))])
        .advance_processing_time(1_000)
        .add_elements(vec![((0, 20), ms(4))])
        .advance_processing_time(1_000)
        .add_elements(vec![((1, 3), ms(5))])
}

/// The side values (global window, a pane a second after each first element) and the
/// main elements of [`updating_script`].
fn split(p: &Pipeline, accumulating: bool) -> (PCollection<i64>, PCollection<i64>) {
    let input = p.test_stream(updating_script());
    let side = input
        .filter(|(tag, _)| *tag == 0)
        .map(|(_, v)| v)
        .triggering(Trigger::repeatedly(Trigger::after_processing_time(1_000)));
    let side = if accumulating { side.accumulating_fired_panes() } else { side };
    (side, input.filter(|(tag, _)| *tag == 1).map(|(_, v)| v))
}

#[test]
fn a_triggered_singleton_side_input_gives_later_elements_its_latest_firing() {
    // Beam: a side input with many trigger firings reads the latest one; a main element
    // waits for the first. Discarding panes: each firing is the one new value.
    for workers in [1, 3] {
        let got = try_run_windowed(&RunOptions::threads(workers), |p| {
            let (side, main) = split(p, false);
            let latest = side.as_singleton();
            main.map_with(&latest, |x, v| (x, *v))
        })
        .unwrap();
        assert_eq!(values(got), [(1, 10), (2, 10), (3, 20)], "{workers} workers");
    }
}

#[test]
fn a_triggered_list_side_input_with_accumulating_panes_holds_everything_so_far() {
    for workers in [1, 3] {
        let got = try_run_windowed(&RunOptions::threads(workers), |p| {
            let (side, main) = split(p, true);
            let all = side.as_list();
            main.map_with(&all, |x, v| (x, v.clone()))
        })
        .unwrap();
        assert_eq!(values(got), [(1, vec![10]), (2, vec![10]), (3, vec![10, 20])], "{workers} workers");
    }
}

#[test]
fn a_triggered_singleton_with_accumulating_panes_is_an_error_that_says_why() {
    let err = try_run_windowed(&RunOptions::threads(2), |p| {
        let (side, main) = split(p, true);
        let latest = side.as_singleton();
        main.map_with(&latest, |x, v| (x, *v))
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("MapWithSide") && err.contains("2 elements") && err.contains("discarding"), "{err}");
}

#[test]
fn a_triggered_side_input_updates_the_same_on_two_processes_of_two_workers() {
    const TEST: &str = "a_triggered_side_input_updates_the_same_on_two_processes_of_two_workers";
    let dir = cluster_scratch_dir(TEST);
    let out = dir.join("out.txt");
    let p = Pipeline::new();
    let (side, main) = split(&p, false);
    let latest = side.as_singleton();
    let lines = main.map_with(&latest, |x, v| (x, *v));
    riffle_connectors::text::write_lines(&lines, &out, |(x, v)| format!("{x} {v}"));
    riffle_timely::run(&p, &local_cluster(2, 2, TEST)).unwrap();
    let mut got: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    std::fs::remove_dir_all(&dir).ok();
    got.sort();
    assert_eq!(got, ["1 10", "2 10", "3 20"]);
}
