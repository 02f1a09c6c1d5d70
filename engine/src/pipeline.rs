//! `Pipeline` and `PCollection`: how users build a graph.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::element::Data;
use crate::graph::{Graph, Node, NodeId, NodeKind, OutputInfo, PortRef};

/// A pipeline under construction: a graph of steps that a runner will execute.
///
/// Building is single-threaded and cheap; nothing runs until the pipeline is handed to a
/// runner. Clones share the same graph.
#[derive(Clone, Default)]
pub struct Pipeline {
    graph: Rc<RefCell<Graph>>,
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot of the graph built so far.
    pub fn graph(&self) -> Graph {
        self.graph.borrow().clone()
    }

    /// The graph as text (see [`Graph::explain`]).
    pub fn explain(&self) -> String {
        self.graph.borrow().explain()
    }

    /// Adds a step and returns its id. The step is named after its transform, with `#n`
    /// appended when that name is taken; [`PCollection::named`] renames it.
    pub fn add_step(&self, transform: &str, kind: NodeKind, inputs: Vec<PortRef>, outputs: Vec<OutputInfo>) -> NodeId {
        let mut g = self.graph.borrow_mut();
        let id = NodeId(g.nodes.len());
        let taken = |n: &str| g.nodes.iter().any(|x| x.name == n);
        let mut name = transform.to_string();
        let mut k = 2;
        while taken(&name) {
            name = format!("{transform}#{k}");
            k += 1;
        }
        g.nodes.push(Node { id, name, transform: transform.to_string(), kind, inputs, outputs });
        id
    }

    /// Records a mistake found while building, reported when the pipeline is validated.
    pub fn defer_error(&self, step: &str, message: impl Into<String>) {
        self.graph.borrow_mut().deferred.push((step.to_string(), message.into()));
    }

    /// The output info of a collection.
    pub fn output_info(&self, port: PortRef) -> OutputInfo {
        self.graph.borrow().output(port).clone()
    }

    /// The name of a step.
    pub fn step_name(&self, id: NodeId) -> String {
        self.graph.borrow().node(id).name.clone()
    }

    pub(crate) fn rename(&self, id: NodeId, name: &str) {
        self.graph.borrow_mut().nodes[id.0].name = name.to_string();
    }

    /// Whether two handles build the same pipeline.
    pub fn same_as(&self, other: &Pipeline) -> bool {
        Rc::ptr_eq(&self.graph, &other.graph)
    }
}

/// A collection of elements of type `T`, possibly unbounded: the output of one step.
///
/// Transforms are methods that add steps and return new collections; see the
/// [`crate::transforms`] module for the catalogue.
pub struct PCollection<T> {
    pipeline: Pipeline,
    port: PortRef,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for PCollection<T> {
    fn clone(&self) -> Self {
        PCollection { pipeline: self.pipeline.clone(), port: self.port, _type: PhantomData }
    }
}

impl<T: Data> PCollection<T> {
    /// The collection at `port` of `pipeline`; for transforms and runners.
    pub fn from_port(pipeline: &Pipeline, port: PortRef) -> Self {
        PCollection { pipeline: pipeline.clone(), port, _type: PhantomData }
    }

    /// The pipeline this collection belongs to.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The step output this collection is.
    pub fn port(&self) -> PortRef {
        self.port
    }

    /// What is known about this collection at build time.
    pub fn info(&self) -> OutputInfo {
        self.pipeline.output_info(self.port)
    }

    /// Gives the step that produced this collection a name, used in errors, metrics and
    /// `explain`. Names must be unique within a pipeline.
    pub fn named(self, name: &str) -> Self {
        self.pipeline.rename(self.port.node, name);
        self
    }

    /// The name of the step that produced this collection.
    pub fn step_name(&self) -> String {
        self.pipeline.step_name(self.port.node)
    }

    /// The output info of a collection derived from this one with elements of type `U`:
    /// the same boundedness and windowing.
    pub fn derived_info<U>(&self) -> OutputInfo {
        OutputInfo { type_name: std::any::type_name::<U>(), tag: None, ..self.info() }
    }
}
