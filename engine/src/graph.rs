//! The pipeline graph as data: nodes, edges, validation and `explain`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::runtime::{GroupFn, ParDoFn, ShuffleFn, SinkFn, SourceFn};
use crate::time::{EventTime, Watermark};

/// Identifies a step in its graph; steps are numbered in the order they were added, so
/// every step's inputs have smaller ids (the graph is built in topological order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeId(pub usize);

/// One output of one step: what a [`crate::PCollection`] points at.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PortRef {
    /// The producing step.
    pub node: NodeId,
    /// Which of its outputs (0 is the main output).
    pub port: usize,
}

/// What a runner must do for a step.
#[derive(Clone)]
pub enum NodeKind {
    /// Reads elements from outside.
    Source(Arc<dyn SourceFn>),
    /// Transforms each bundle (map, filter, DoFn, windowing, timestamps...).
    ParDo(Arc<dyn ParDoFn>),
    /// Moves elements between workers without grouping (reshuffle).
    Exchange(Arc<dyn ShuffleFn>),
    /// Groups by key and window, and fires panes by watermark.
    Group(Arc<dyn GroupFn>),
    /// Merges its inputs into one collection.
    Flatten,
    /// Transforms each element of its first input with the value of its second, a side
    /// input that every worker receives whole.
    SideParDo(Arc<dyn crate::runtime::SideParDoFn>),
    /// Writes elements outside.
    Sink(Arc<dyn SinkFn>),
}

impl NodeKind {
    /// Its kind in a word: source, pardo, exchange, group, flatten, side-pardo or sink.
    pub fn label(&self) -> &'static str {
        match self {
            NodeKind::Source(_) => "source",
            NodeKind::ParDo(_) => "pardo",
            NodeKind::Exchange(_) => "exchange",
            NodeKind::Group(_) => "group",
            NodeKind::Flatten => "flatten",
            NodeKind::SideParDo(_) => "side-pardo",
            NodeKind::Sink(_) => "sink",
        }
    }
}

/// How the elements of a collection are windowed and triggered.
#[derive(Clone)]
pub struct Windowing {
    /// `describe()` of the window function.
    pub window_fn: String,
    /// Whether it is the global window.
    pub is_global: bool,
    /// Whether the trigger is the default one (fire once the watermark passes the end).
    pub default_trigger: bool,
    /// The window function, when its windows merge: groupings merge per key with it.
    pub merging: Option<Arc<dyn crate::window::WindowFn>>,
    /// The window function itself: a side input maps main windows to its windows with it.
    pub assign: Arc<dyn crate::window::WindowFn>,
    /// How long after a window's end its late elements are still accepted, ms.
    pub allowed_lateness_ms: i64,
    /// Whether a window's later panes repeat what its earlier panes held.
    pub accumulation: AccumulationMode,
    /// How a pane's output timestamp comes from its elements' timestamps.
    pub timestamp_combiner: TimestampCombiner,
    /// The trigger, when not the default.
    pub trigger: Option<Arc<crate::trigger::Trigger>>,
}

/// How a pane's output timestamp comes from its elements' (Beam's `TimestampCombiner`).
///
/// Only elements that can still hold the watermark count: those sent at or before their
/// window's end whose timestamps are not behind the watermark they were sent at. A pane
/// with none of those (every late pane) is stamped with its window's end, as in Beam.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampCombiner {
    /// The window's last instant (the default).
    #[default]
    EndOfWindow,
    /// The earliest timestamp of the pane's elements.
    Earliest,
    /// The latest timestamp of the pane's elements.
    Latest,
}

impl TimestampCombiner {
    /// Folds the timestamp `ts` of an element of a window whose last instant is `end`, sent
    /// at watermark `arrival`, into a pane's combined timestamp, if it counts: only elements
    /// that can hold the watermark do, those not behind it in a window it has not passed
    /// (Beam's element holds). Returns whether it counted; never under end-of-window.
    #[inline]
    pub fn fold(self, combined: &mut Option<EventTime>, ts: EventTime, end: EventTime, arrival: Watermark) -> bool {
        if self == TimestampCombiner::EndOfWindow || arrival.is_past(ts) || arrival.is_past(end) || ts > end {
            return false;
        }
        *combined = Some(match (*combined, self) {
            (Some(c), TimestampCombiner::Earliest) => c.min(ts),
            (Some(c), _) => c.max(ts),
            (None, _) => ts,
        });
        true
    }
}

/// What a window's later panes hold (Beam's accumulation mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccumulationMode {
    /// Each pane holds only what arrived since the previous pane.
    #[default]
    Discarding,
    /// Each pane holds everything the window has received so far.
    Accumulating,
    /// Each pane holds everything so far, and is preceded downstream by a retraction of the
    /// previous pane, which groupings downstream take out (Beam designed it, never shipped it).
    AccumulatingAndRetracting,
}

impl Default for Windowing {
    fn default() -> Self {
        Windowing {
            window_fn: "GlobalWindows".into(),
            is_global: true,
            default_trigger: true,
            merging: None,
            assign: Arc::new(crate::window::GlobalWindows),
            allowed_lateness_ms: 0,
            accumulation: AccumulationMode::Discarding,
            timestamp_combiner: TimestampCombiner::EndOfWindow,
            trigger: None,
        }
    }
}

/// Two windowings are the same when they describe the same function and trigger.
impl PartialEq for Windowing {
    fn eq(&self, other: &Self) -> bool {
        let key = |w: &Self| {
            (
                w.window_fn.clone(),
                w.is_global,
                w.default_trigger,
                w.allowed_lateness_ms,
                w.accumulation,
                w.timestamp_combiner,
                w.trigger.as_ref().map(|t| t.describe()),
            )
        };
        key(self) == key(other)
    }
}

impl std::fmt::Debug for Windowing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windowing")
            .field("window_fn", &self.window_fn)
            .field("is_global", &self.is_global)
            .field("default_trigger", &self.default_trigger)
            .field("merging", &self.merging.is_some())
            .field("allowed_lateness_ms", &self.allowed_lateness_ms)
            .field("accumulation", &self.accumulation)
            .field("timestamp_combiner", &self.timestamp_combiner)
            .field("trigger", &self.trigger)
            .finish()
    }
}

/// What is known about one output of a step at build time.
#[derive(Clone, Debug)]
pub struct OutputInfo {
    /// The Rust type of the elements.
    pub type_name: &'static str,
    /// Whether the collection is finite.
    pub bounded: bool,
    /// Its windowing.
    pub windowing: Windowing,
    /// For a tagged output of a ParDo, the tag's name.
    pub tag: Option<String>,
}

/// One step of a pipeline.
#[derive(Clone)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Its unique name, used in every error and metric about it.
    pub name: String,
    /// The transform it came from ("Map", "GroupByKey", ...).
    pub transform: String,
    /// What a runner does for it.
    pub kind: NodeKind,
    /// The collections it reads.
    pub inputs: Vec<PortRef>,
    /// The collections it produces.
    pub outputs: Vec<OutputInfo>,
}

/// A pipeline's steps: a validated, printable description a runner lowers.
#[derive(Clone, Default)]
pub struct Graph {
    pub(crate) nodes: Vec<Node>,
    /// Mistakes found while building, reported by [`Graph::validate`], so that building
    /// reads fluently and all problems are reported in one place before anything runs.
    pub(crate) deferred: Vec<(String, String)>,
}

impl Graph {
    /// The steps, in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One step.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// What is known of a collection.
    pub fn output(&self, port: PortRef) -> &OutputInfo {
        &self.nodes[port.node.0].outputs[port.port]
    }

    /// Checks the graph as Beam does before running: every problem names the step.
    ///
    /// # Errors
    /// The first problem found, as [`Error::Validation`].
    pub fn validate(&self) -> Result<()> {
        if let Some((step, message)) = self.deferred.first() {
            return Err(Error::Validation { step: step.clone(), message: message.clone() });
        }
        let mut seen: HashMap<&str, NodeId> = HashMap::new();
        for node in &self.nodes {
            if let Some(other) = seen.insert(&node.name, node.id) {
                return Err(Error::Validation {
                    step: node.name.clone(),
                    message: format!(
                        "steps #{} and #{} have the same name; give one of them another with .named(..)",
                        other.0, node.id.0
                    ),
                });
            }
            for input in &node.inputs {
                if input.node >= node.id {
                    return Err(Error::Internal(format!("step '{}' reads a later step", node.name)));
                }
            }
            if let NodeKind::Group(g) = &node.kind {
                let input = self.output(node.inputs[0]);
                if !g.outputs_before_window_end()
                    && !input.bounded
                    && input.windowing.is_global
                    && input.windowing.default_trigger
                {
                    return Err(Error::Validation {
                        step: node.name.clone(),
                        message: "a grouping of an unbounded collection in the global window with the \
                                  default trigger would never fire; apply window_into(..) with a \
                                  non-global window function, or set a trigger that fires before the \
                                  end of the global window"
                            .into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs every source's and sink's start-up check (files exist, locations parse);
    /// `resuming` from a checkpoint, sinks accept the output they committed before.
    ///
    /// # Errors
    /// The first failing check, naming the step and the location.
    pub fn check_io(&self, resuming: bool) -> Result<()> {
        for node in &self.nodes {
            match &node.kind {
                NodeKind::Source(s) => s.check()?,
                NodeKind::Sink(s) if resuming => s.check_resuming()?,
                NodeKind::Sink(s) => s.check()?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The graph as text, one step per line.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        for node in &self.nodes {
            let inputs: Vec<String> = node.inputs.iter().map(|p| format!("#{}.{}", p.node.0, p.port)).collect();
            let _ = write!(s, "#{:<3} {:<24} {:<12} {:<8}", node.id.0, node.name, node.transform, node.kind.label());
            if !inputs.is_empty() {
                let _ = write!(s, " <- {}", inputs.join(", "));
            }
            let _ = writeln!(s);
            for (i, out) in node.outputs.iter().enumerate() {
                let tag = out.tag.as_deref().map(|t| format!(" [{t}]")).unwrap_or_default();
                let _ = writeln!(
                    s,
                    "       out {i}{tag}: {} ({}, {})",
                    out.type_name,
                    if out.bounded { "bounded" } else { "unbounded" },
                    out.windowing.window_fn
                );
            }
        }
        s
    }

    /// The graph in Graphviz DOT, for `dot -Tsvg`.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph pipeline {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n");
        for node in &self.nodes {
            let shape = match node.kind {
                NodeKind::Source(_) | NodeKind::Sink(_) => ", shape=oval",
                NodeKind::Group(_) | NodeKind::Exchange(_) => ", style=bold",
                _ => "",
            };
            let _ = writeln!(
                s,
                "  n{} [label=\"{}\\n{}\"{}];",
                node.id.0,
                escape(&node.name),
                escape(&node.transform),
                shape
            );
        }
        for node in &self.nodes {
            for input in &node.inputs {
                let out = self.output(*input);
                let _ = writeln!(
                    s,
                    "  n{} -> n{} [label=\"{}\"];",
                    input.node.0,
                    node.id.0,
                    escape(short_type(out.type_name))
                );
            }
        }
        s.push_str("}\n");
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `alloc::string::String` -> `String`, keeping generic structure readable.
fn short_type(name: &str) -> &str {
    if name.contains('<') || name.contains('(') { name } else { name.rsplit("::").next().unwrap_or(name) }
}
