//! Pacing per branch, and idle sources: a source paces itself on the sinks it feeds, so an
//! idle source in one branch cannot stop another branch's data; in one branch, an idle
//! source holds the watermark until its idle timeout makes it follow the clock.
//!
//! Bug classes caught: one probe over every sink, which made a source wait for a branch
//! it does not feed (its data stopped after 32 distinct times); an idle reader that never
//! moves its capability although its watermark strategy says it is idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use riffle_engine::prelude::*;
use riffle_engine::runtime::{SourceFn, SourcePoll, SourceReader, StepContext};
use riffle_engine::{Clock, NodeKind, OutputInfo, PortRef, Watermark, WatermarkEstimator, Windowing};
use riffle_timely::RunOptions;

/// An unbounded source that reads nothing until `stop` is set, then ends. Its watermark
/// is its strategy's for an input that has read nothing: held at the minimum, or, with an
/// idle timeout, following the clock.
struct IdleSource {
    stop: Arc<AtomicBool>,
    strategy: WatermarkStrategy,
}

struct IdleReader {
    stop: Arc<AtomicBool>,
    estimator: WatermarkEstimator,
    clock: Arc<dyn Clock>,
}

impl SourceFn for IdleSource {
    fn is_bounded(&self) -> bool {
        false
    }
    fn open(&self, ctx: &StepContext) -> riffle_engine::Result<Box<dyn SourceReader>> {
        Ok(Box::new(IdleReader {
            stop: self.stop.clone(),
            estimator: self.strategy.estimator(),
            clock: ctx.clock.clone(),
        }))
    }
}

impl SourceReader for IdleReader {
    fn poll(&mut self, _max: usize) -> riffle_engine::Result<SourcePoll> {
        Ok(if self.stop.load(Ordering::SeqCst) { SourcePoll::Done } else { SourcePoll::Pending })
    }
    fn watermark(&self) -> Watermark {
        self.estimator.clone().watermark(self.clock.now())
    }
}

fn idle_source(p: &Pipeline, stop: &Arc<AtomicBool>, strategy: WatermarkStrategy) -> PCollection<(u32, u64)> {
    let info = OutputInfo {
        type_name: std::any::type_name::<(u32, u64)>(),
        bounded: false,
        windowing: Windowing::default(),
        tag: None,
    };
    let source = IdleSource { stop: stop.clone(), strategy };
    let node = p.add_step("Idle", NodeKind::Source(Arc::new(source)), vec![], vec![info]);
    PCollection::from_port(p, PortRef { node, port: 0 })
}

const EVENTS: u64 = 300_000;
const WINDOW_MS: i64 = 1_000;

/// 300,000 events, one per millisecond of event time, 10 keys: 300 windows of 1,000 per
/// key group, in about 300 batches of distinct watermarks (far more than the 32 distinct
/// times a source may have in flight).
fn busy(p: &Pipeline) -> PCollection<(u32, u64)> {
    p.generate_stream(
        EVENTS,
        |i| (((i % 10) as u32, 1u64), EventTime::from_millis(i as i64)),
        WatermarkStrategy::bounded_out_of_orderness(0),
    )
}

fn counts(input: PCollection<(u32, u64)>) -> PCollection<(u32, u64)> {
    input.window_into(FixedWindows::of_millis(WINDOW_MS)).combine_per_key(Sum::new())
}

type Out = Arc<std::sync::Mutex<Vec<WindowedValue<(u32, u64)>>>>;

/// Builds a pipeline with `build` and runs it in a thread; waits (at most `wait`) until
/// its output has `want` panes, then stops the idle source. Returns how long the output
/// took, or how many panes had come when the wait ended; and the output.
fn run_until(
    build: impl FnOnce(&Pipeline) -> Out + Send + 'static,
    stop: Arc<AtomicBool>,
    want: usize,
    wait: Duration,
) -> (Result<Duration, usize>, Out) {
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let job = std::thread::spawn(move || {
        let p = Pipeline::new();
        tx.send(build(&p)).expect("the test waits");
        riffle_timely::run(&p, &RunOptions::threads(2))
    });
    let out = rx.recv().expect("the pipeline is built");
    let took = loop {
        let seen = out.lock().unwrap().len();
        if seen >= want {
            break Ok(start.elapsed());
        }
        if start.elapsed() > wait {
            break Err(seen);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    stop.store(true, Ordering::SeqCst);
    job.join().expect("the job thread").expect("the job runs");
    (took, out)
}

const PANES: usize = (EVENTS as i64 / WINDOW_MS) as usize * 10;

#[test]
fn an_idle_source_does_not_stop_an_independent_branch() {
    let stop = Arc::new(AtomicBool::new(false));
    let idle = stop.clone();
    let (took, sums) = run_until(
        move |p| {
            // Branch A: an idle source with no idle timeout, holding its own watermark at -inf.
            riffle_connectors::memory::discard(&idle_source(p, &idle, WatermarkStrategy::bounded_out_of_orderness(0)));
            // Branch B: a busy stream into windowed sums.
            riffle_connectors::memory::collect(&counts(busy(p)))
        },
        stop,
        PANES,
        Duration::from_secs(30),
    );
    if let Err(seen) = took {
        panic!("branch B delivered {seen} of {PANES} panes in 30 s while A idled");
    }
    let total: u64 = sums.lock().unwrap().iter().map(|wv| wv.value.1).sum();
    assert_eq!(total, EVENTS);
}

#[test]
fn in_one_branch_an_idle_source_holds_the_watermark_until_its_idle_timeout() {
    for idle_timeout in [None, Some(50)] {
        let stop = Arc::new(AtomicBool::new(false));
        let idle = stop.clone();
        let strategy = match idle_timeout {
            None => WatermarkStrategy::bounded_out_of_orderness(0),
            Some(ms) => WatermarkStrategy::bounded_out_of_orderness(0).with_idle_timeout(ms),
        };
        // Without a timeout, wait 2 s for panes that must not come.
        let wait = if idle_timeout.is_some() { Duration::from_secs(30) } else { Duration::from_secs(2) };
        let (took, sums) = run_until(
            move |p| {
                let both = PCollection::flatten(&[idle_source(p, &idle, strategy), busy(p)]);
                riffle_connectors::memory::collect(&counts(both))
            },
            stop,
            PANES,
            wait,
        );
        match (idle_timeout, took) {
            (None, Err(seen)) => assert_eq!(seen, 0, "panes fired past an idle source's held watermark"),
            (None, Ok(_)) => panic!("every pane fired past an idle source's held watermark"),
            (Some(_), Err(seen)) => {
                panic!("{seen} of {PANES} panes: an idle source past its timeout held the watermark")
            }
            (Some(_), Ok(_)) => {}
        }
        // Either way, once the idle source ends, every event is in a pane.
        let total: u64 = sums.lock().unwrap().iter().map(|wv| wv.value.1).sum();
        assert_eq!(total, EVENTS, "idle timeout {idle_timeout:?}");
    }
}
