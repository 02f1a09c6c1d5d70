//! The DoFn contract: lifecycle hooks per worker and per bundle, timestamps, tagged
//! outputs, and outputs from finish_bundle.

use std::sync::atomic::{AtomicUsize, Ordering};

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;
use riffle_timely::testing::try_run_windowed;

static SETUPS: AtomicUsize = AtomicUsize::new(0);
static TEARDOWNS: AtomicUsize = AtomicUsize::new(0);

/// Sums its bundle and outputs the sum from finish_bundle; counts lifecycle calls.
#[derive(Clone, Default)]
struct BundleSum {
    set_up: bool,
    in_bundle: bool,
    sum: i64,
}

impl DoFn for BundleSum {
    type In = i64;
    type Out = i64;
    fn setup(&mut self) {
        assert!(!self.set_up, "setup runs once per instance");
        self.set_up = true;
        SETUPS.fetch_add(1, Ordering::SeqCst);
    }
    fn start_bundle(&mut self) {
        assert!(self.set_up && !self.in_bundle, "start_bundle after setup, bundles do not nest");
        self.in_bundle = true;
        self.sum = 0;
    }
    fn process(&mut self, x: &i64, _ctx: &mut ProcessContext<'_, i64>) {
        assert!(self.in_bundle, "process only inside a bundle");
        self.sum += x;
    }
    fn finish_bundle(&mut self, ctx: &mut FinishBundleContext<'_, i64>) {
        assert!(self.in_bundle);
        self.in_bundle = false;
        ctx.output(self.sum, EventTime::from_millis(7), Window::Global);
    }
    fn teardown(&mut self) {
        TEARDOWNS.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn lifecycle_hooks_run_in_order_and_finish_bundle_outputs_arrive() {
    SETUPS.store(0, Ordering::SeqCst);
    TEARDOWNS.store(0, Ordering::SeqCst);
    let workers = 3;
    let out = try_run_windowed(&RunOptions::threads(workers), |p| {
        p.create((1..=1000).collect::<Vec<i64>>()).par_do(BundleSum::default())
    })
    .unwrap();
    assert_eq!(out.iter().map(|wv| wv.value).sum::<i64>(), 500_500, "every element in exactly one bundle sum");
    assert!(out.iter().all(|wv| wv.timestamp == EventTime::from_millis(7)));
    assert_eq!(SETUPS.load(Ordering::SeqCst), workers, "one instance per worker");
    assert_eq!(TEARDOWNS.load(Ordering::SeqCst), workers, "each instance torn down once");
}

/// Routes values by sign, re-timestamps them, and keeps the input's window.
#[derive(Clone)]
struct Route {
    negative: TupleTag<String>,
}

impl DoFn for Route {
    type In = i64;
    type Out = i64;
    fn process(&mut self, x: &i64, ctx: &mut ProcessContext<'_, i64>) {
        if *x < 0 {
            ctx.output_to(&self.negative, format!("{x} at {}", ctx.timestamp().millis()));
        } else {
            ctx.output_with_timestamp(*x, EventTime::from_millis(*x * 10));
        }
    }
}

#[test]
fn tagged_outputs_and_timestamps() {
    let negative = TupleTag::<String>::new("negative");
    let p = Pipeline::new();
    let input = p.create_timestamped(vec![
        (3, EventTime::from_millis(1)),
        (-2, EventTime::from_millis(2)),
        (5, EventTime::from_millis(3)),
    ]);
    let (positive, tagged) = input.par_do_with_outputs(Route { negative: negative.clone() }, &[&negative]);
    let pos = riffle_connectors::memory::collect(&positive);
    let neg = riffle_connectors::memory::collect(&tagged.get(&negative));
    riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    let mut pos: Vec<(i64, i64)> = pos.lock().unwrap().iter().map(|wv| (wv.value, wv.timestamp.millis())).collect();
    pos.sort();
    assert_eq!(pos, [(3, 30), (5, 50)]);
    let neg: Vec<String> = neg.lock().unwrap().iter().map(|wv| wv.value.clone()).collect();
    assert_eq!(neg, ["-2 at 2"]);
}

#[test]
fn an_undeclared_tag_is_a_user_error_naming_it() {
    let declared = TupleTag::<String>::new("declared");
    let other = TupleTag::<String>::new("undeclared");
    let err = try_run_windowed(&RunOptions::threads(1), |p| {
        let (main, _) = p.create(vec![-1i64]).par_do_with_outputs(Route { negative: other.clone() }, &[&declared]);
        main
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("tag 'undeclared', which was not declared"), "{err}");
}
