//! The run report counts what every step read and wrote, per worker.

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;

#[test]
fn the_report_counts_elements_per_step_and_worker() {
    let p = Pipeline::new();
    let counts = p
        .create((0..1000u32).collect())
        .map(|x| x % 10)
        .named("Mod10")
        .filter(|x| *x < 5)
        .named("Small")
        .count_per_element();
    riffle_connectors::memory::collect(&counts);
    let report = riffle_timely::run(&p, &RunOptions::threads(3)).unwrap();
    let total = |v: Vec<u64>| v.iter().sum::<u64>();
    assert_eq!(report.elements_in("Mod10").len(), 3, "one entry per worker");
    assert_eq!(total(report.elements_in("Mod10")), 1000);
    assert_eq!(total(report.elements_in("Small")), 1000);
    let small_out: u64 = report.steps.iter().filter(|s| s.step == "Small").map(|s| s.elements_out).sum();
    assert_eq!(small_out, 500);
    // Lifting: each worker sends at most one partial count per key (5 keys).
    let partials = total(report.elements_in("CountPerElement"));
    assert!((5..=15).contains(&partials), "{partials} partial counts");
    assert_eq!(total(report.elements_in("Collect")), 5);
    assert!(report.elapsed > std::time::Duration::ZERO);
}
