//! The graph is data: validated before it runs (errors name the step), and printable.

use std::sync::Arc;

use riffle_engine::graph::{NodeKind, OutputInfo, PortRef, Windowing};
use riffle_engine::prelude::*;
use riffle_engine::runtime::{SourceFn, SourcePoll, SourceReader, StepContext};
use riffle_engine::{Error, Result};
use riffle_timely::RunOptions;

/// A source that claims to be endless; it is never read, only validated.
struct Endless;

impl SourceFn for Endless {
    fn is_bounded(&self) -> bool {
        false
    }
    fn open(&self, _ctx: &StepContext) -> Result<Box<dyn SourceReader>> {
        struct Never;
        impl SourceReader for Never {
            fn poll(&mut self, _max: usize) -> Result<SourcePoll> {
                Ok(SourcePoll::Pending)
            }
        }
        Ok(Box::new(Never))
    }
}

fn endless(p: &Pipeline) -> PCollection<(u32, u32)> {
    let info = OutputInfo { type_name: "(u32, u32)", bounded: false, windowing: Windowing::default(), tag: None };
    let node = p.add_step("Endless", NodeKind::Source(Arc::new(Endless)), vec![], vec![info]);
    PCollection::from_port(p, PortRef { node, port: 0 })
}

#[test]
fn an_unbounded_global_grouping_with_the_default_trigger_is_rejected() {
    let p = Pipeline::new();
    endless(&p).group_by_key().named("GroupForever");
    let err = riffle_timely::run(&p, &RunOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Validation { ref step, .. } if step == "GroupForever"), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("would never fire") && msg.contains("window_into"), "{msg}");
}

#[test]
fn an_unbounded_grouping_in_fixed_windows_is_accepted() {
    let p = Pipeline::new();
    endless(&p).window_into(FixedWindows::of_millis(1000)).combine_per_key(Sum::new());
    p.graph().validate().expect("windowed grouping of an unbounded input is valid");
}

#[test]
fn two_steps_with_one_name_are_rejected() {
    let p = Pipeline::new();
    let a = p.create(vec![1]).map(|x| x + 1).named("Inc");
    a.map(|x| x + 1).named("Inc");
    let err = p.graph().validate().unwrap_err();
    assert!(err.to_string().contains("invalid pipeline at step 'Inc'"), "{err}");
    assert!(err.to_string().contains("same name"), "{err}");
}

#[test]
fn flattening_differently_windowed_inputs_is_rejected() {
    let p = Pipeline::new();
    let a = p.create(vec![1]);
    let b = p.create(vec![2]).window_into(FixedWindows::of_millis(10));
    PCollection::flatten(&[a, b]);
    let err = p.graph().validate().unwrap_err().to_string();
    assert!(err.contains("step 'Flatten'") && err.contains("different windowing"), "{err}");
}

#[test]
fn explain_lists_every_step_with_its_types_and_dot_draws_every_edge() {
    let p = Pipeline::new();
    let words = p.create(vec!["a b".to_string()]).flat_map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>());
    let counts = words.named("Split").count_per_element();
    riffle_connectors::memory::collect(&counts);
    let text = p.explain();
    for step in ["Create", "Split", "PairWithUnit", "CountPerElement", "Collect"] {
        assert!(text.contains(step), "{step} missing from:\n{text}");
    }
    assert!(text.contains("(alloc::string::String, u64)"), "{text}");
    let dot = p.graph().to_dot();
    assert!(dot.starts_with("digraph pipeline {"), "{dot}");
    let nodes = p.graph().nodes().len();
    let edges: usize = p.graph().nodes().iter().map(|n| n.inputs.len()).sum();
    assert_eq!(dot.matches(" [label=").count(), nodes + edges, "{dot}");
}

#[test]
fn a_missing_input_file_stops_the_job_at_start_naming_it() {
    let p = Pipeline::new();
    riffle_connectors::memory::collect(&riffle_connectors::text::read_lines(&p, &["/nonexistent/riffle/*.txt"]));
    let err = riffle_timely::run(&p, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("\"/nonexistent/riffle/*.txt\" matches no file"), "{err}");
}

#[test]
fn an_output_in_a_missing_directory_stops_the_job_at_start_naming_it() {
    let p = Pipeline::new();
    riffle_connectors::text::write_lines(&p.create(vec![1]), "/nonexistent/riffle/out.txt", |x| x.to_string());
    let err = riffle_timely::run(&p, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("directory /nonexistent/riffle does not exist"), "{err}");
}
