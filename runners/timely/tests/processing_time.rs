//! Processing-time triggers on a scripted clock, with expected panes written from the
//! Beam model: a TestStream moves processing time, and every worker of every process sees
//! it move at the same point of the stream, so the panes are the same at 1 worker, 4
//! workers and 2 processes x 2 workers.

use std::path::Path;

use riffle_connectors::text::write_lines;
use riffle_engine::prelude::*;
use riffle_timely::RunOptions;
use riffle_timely::testing::{cluster_scratch_dir, local_cluster};

fn ms(t: i64) -> EventTime {
    EventTime::from_millis(t)
}

const MINUTE: i64 = 60_000;

/// Runs `script` into 10 ms fixed windows under `trigger`, summing per key, and returns
/// the panes as "window-start sum timing index non-speculative-index first last" lines,
/// sorted by window and index.
fn panes(
    script: TestStream<(char, i64)>,
    trigger: Trigger,
    lateness: i64,
    opts: &RunOptions,
    dir: &Path,
) -> Vec<String> {
    let p = Pipeline::new();
    let sums = p
        .test_stream(script)
        .window_into(FixedWindows::of_millis(10))
        .with_allowed_lateness(lateness)
        .triggering(trigger)
        .combine_per_key(Sum::new());
    let lines = sums.par_do(FormatPane);
    let out = dir.join("panes.txt");
    write_lines(&lines, &out, |l| l.clone());
    riffle_timely::run(&p, opts).unwrap();
    let mut got: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    let field = |l: &str, i: usize| l.split(' ').nth(i).and_then(|f| f.parse::<i64>().ok());
    got.sort_by_key(|l| (field(l, 0), field(l, 3)));
    got
}

#[derive(Clone)]
struct FormatPane;

impl DoFn for FormatPane {
    type In = (char, i64);
    type Out = String;
    fn process(&mut self, (_, sum): &(char, i64), ctx: &mut ProcessContext<'_, String>) {
        let Window::Interval { start, .. } = ctx.window() else { panic!("fixed windows") };
        let p = ctx.pane();
        let line = format!(
            "{} {sum} {:?} {} {} {} {}",
            start.millis(),
            p.timing,
            p.index,
            p.non_speculative_index,
            p.is_first,
            p.is_last
        );
        ctx.output(line);
    }
}

/// Early panes a minute of processing time after each pane's first element
/// (Streaming 102's early firings), then the on-time pane.
fn early_by_processing_time() -> (TestStream<(char, i64)>, Trigger) {
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1)), (('A', 2), ms(2))]) // at 0 s: the timer is set for 60 s
        .advance_processing_time(MINUTE / 2)
        .add_elements(vec![(('A', 3), ms(3))]) // at 30 s: the same pane
        .advance_processing_time(MINUTE / 2) // 60 s: the early pane 1 + 2 + 3 fires
        .add_elements(vec![(('A', 4), ms(4))]) // a new pane; its timer (120 s) never comes
        .advance_watermark_to(ms(10)); // the on-time pane: 4
    let trigger = Trigger::after_watermark().with_early_firings(Trigger::after_processing_time(MINUTE));
    (script, trigger)
}

fn expected_early_by_processing_time() -> Vec<&'static str> {
    vec!["0 6 Early 0 -1 true false", "0 4 OnTime 1 0 false true"]
}

#[test]
fn early_panes_by_processing_time_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (script, trigger) = early_by_processing_time();
    assert_eq!(panes(script, trigger, 0, &RunOptions::threads(1), dir.path()), expected_early_by_processing_time());
}

#[test]
fn early_panes_by_processing_time_four_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (script, trigger) = early_by_processing_time();
    assert_eq!(panes(script, trigger, 0, &RunOptions::threads(4), dir.path()), expected_early_by_processing_time());
}

#[test]
fn early_panes_by_processing_time_two_processes() {
    let test = "early_panes_by_processing_time_two_processes";
    let dir = cluster_scratch_dir(test);
    let (script, trigger) = early_by_processing_time();
    let got = panes(script, trigger, 0, &local_cluster(2, 2, test), &dir);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(got, expected_early_by_processing_time());
}

#[test]
fn processing_time_that_does_not_reach_the_delay_fires_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1))])
        .advance_processing_time(MINUTE - 1) // one millisecond short
        .add_elements(vec![(('A', 2), ms(2))])
        .advance_watermark_to(ms(10));
    let trigger = Trigger::after_watermark().with_early_firings(Trigger::after_processing_time(MINUTE));
    assert_eq!(panes(script, trigger, 0, &RunOptions::threads(2), dir.path()), ["0 3 OnTime 0 0 true true"]);
}

#[test]
fn late_panes_by_processing_time() {
    // Late firings ten seconds after the first late element of each pane.
    let dir = tempfile::tempdir().unwrap();
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1))])
        .advance_watermark_to(ms(10)) // on time: 1
        .add_elements(vec![(('A', 2), ms(2))]) // late, at 0 s: timer at 10 s
        .advance_processing_time(5_000)
        .add_elements(vec![(('A', 3), ms(3))]) // late, same pane
        .advance_processing_time(5_000) // 10 s: the late pane 2 + 3
        .add_elements(vec![(('A', 4), ms(4))]) // late; fires when the window expires
        .advance_watermark_to(ms(200));
    let trigger = Trigger::after_watermark().with_late_firings(Trigger::after_processing_time(10_000));
    assert_eq!(
        panes(script, trigger, 100, &RunOptions::threads(2), dir.path()),
        ["0 1 OnTime 0 0 true false", "0 5 Late 1 1 false false", "0 4 Late 2 2 false true"]
    );
}

#[test]
fn a_timer_due_before_its_companion_trigger_waits_for_it() {
    // AfterAll(processing time, count 2): the minute passes with one element; the second
    // element then completes both at once.
    let dir = tempfile::tempdir().unwrap();
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1))])
        .advance_processing_time(2 * MINUTE)
        .add_elements(vec![(('A', 2), ms(2))])
        .add_elements(vec![(('A', 4), ms(4))]) // the trigger has finished: dropped
        .advance_watermark_to(ms(10));
    let trigger = Trigger::AfterAll(vec![Trigger::after_processing_time(MINUTE), Trigger::after_count(2)]);
    assert_eq!(panes(script, trigger, 0, &RunOptions::threads(2), dir.path()), ["0 3 Early 0 -1 true true"]);
}

#[test]
fn repeated_processing_time_panes_group_an_unbounded_global_window() {
    // Beam's "emit what arrived, every minute" on a global window.
    let script = TestStream::new()
        .add_elements(vec![(('A', 1), ms(1)), (('A', 2), ms(500))])
        .advance_processing_time(MINUTE) // 3
        .add_elements(vec![(('A', 5), ms(90_000))])
        .advance_processing_time(MINUTE / 2) // 30 s after the 5: not yet
        .advance_processing_time(MINUTE / 2) // now: 5
        .advance_processing_time(MINUTE); // nothing arrived: no pane
    let p = Pipeline::new();
    let sums = p
        .test_stream(script)
        .triggering(Trigger::repeatedly(Trigger::after_processing_time(MINUTE)))
        .combine_per_key(Sum::new());
    let out = riffle_connectors::memory::collect(&sums);
    riffle_timely::run(&p, &RunOptions::threads(3)).unwrap();
    let mut got: Vec<(i64, u64, Timing)> =
        out.lock().unwrap().iter().map(|wv| (wv.value.1, wv.pane.index, wv.pane.timing)).collect();
    got.sort_by_key(|g| g.1);
    assert_eq!(got, [(3, 0, Timing::Early), (5, 1, Timing::Early)]);
}

/// Live, on the system clock: one element, then nothing for two seconds. A
/// processing-time trigger of 50 ms must wake the grouping by itself and fire an early
/// pane long before the source ends (after which the window would only expire, firing an
/// on-time pane).
#[test]
fn live_processing_time_triggers_wake_the_grouping_on_the_system_clock() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use riffle_engine::runtime::{SourceFn, SourcePoll, SourceReader, StepContext};
    use riffle_engine::{Batch, Elements, NodeKind, OutputInfo, PortRef, Result, Windowing};

    struct OneThenQuiet;
    struct Reader {
        sent: bool,
        until: Instant,
    }
    impl SourceFn for OneThenQuiet {
        fn is_bounded(&self) -> bool {
            false
        }
        fn open(&self, ctx: &StepContext) -> Result<Box<dyn SourceReader>> {
            Ok(Box::new(Reader { sent: ctx.worker.index != 0, until: Instant::now() + Duration::from_secs(2) }))
        }
    }
    impl SourceReader for Reader {
        fn poll(&mut self, _max: usize) -> Result<SourcePoll> {
            if !self.sent {
                self.sent = true;
                let mut batch = Elements::new();
                batch.push(('A', 7i64), ms(1), Window::Global, PaneInfo::NO_FIRING);
                return Ok(SourcePoll::Batch(Batch::new(batch)));
            }
            Ok(if Instant::now() < self.until { SourcePoll::Pending } else { SourcePoll::Done })
        }
    }

    let p = Pipeline::new();
    let info = OutputInfo { type_name: "(char, i64)", bounded: false, windowing: Windowing::default(), tag: None };
    let node = p.add_step("Quiet", NodeKind::Source(Arc::new(OneThenQuiet)), vec![], vec![info]);
    let input: PCollection<(char, i64)> = PCollection::from_port(&p, PortRef { node, port: 0 });
    let sums = input.triggering(Trigger::repeatedly(Trigger::after_processing_time(50))).combine_per_key(Sum::new());
    let out = riffle_connectors::memory::collect(&sums);
    riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    let got: Vec<(i64, Timing)> = out.lock().unwrap().iter().map(|wv| (wv.value.1, wv.pane.timing)).collect();
    assert_eq!(got, [(7, Timing::Early)]);
}
