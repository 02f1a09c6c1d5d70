//! Lowering: one timely dataflow per worker from a pipeline graph.

use std::collections::HashMap;

use riffle_engine::{Graph, NodeId, NodeKind, PortRef};
use timely::worker::Worker;

use crate::operators::{BatchStream, Env, coordinator, flatten, group, par_do, shuffle, side, sink, source};
use crate::time::Time;

/// The streams built so far, and how many steps still read each: the last reader takes
/// the stream itself, the others a clone (timely copies the data for each).
struct Edges<'scope> {
    streams: HashMap<PortRef, BatchStream<'scope>>,
    readers: HashMap<PortRef, usize>,
}

impl<'scope> Edges<'scope> {
    fn take(&mut self, p: &PortRef) -> BatchStream<'scope> {
        let left = self.readers.get_mut(p).expect("a counted reader");
        *left -= 1;
        if *left == 0 { self.streams.remove(p).expect("an input stream") } else { self.streams[p].clone() }
    }

    fn put(&mut self, p: PortRef, stream: BatchStream<'scope>) {
        if self.readers.contains_key(&p) {
            self.streams.insert(p, stream);
        }
    }
}

/// Builds `graph` as a dataflow on `worker`. Steps are lowered in the graph's
/// (topological) order, each reading the streams its inputs produced.
pub fn build(worker: &mut Worker, graph: &std::sync::Arc<Graph>, env: &Env) {
    worker.dataflow::<Time, _, _>(|scope| {
        let env = &Env { sinks_progress: timely::dataflow::ProbeHandle::new(), ..env.clone() };
        let pacing = pacing_probes(graph);
        let mut edges = Edges { streams: HashMap::new(), readers: HashMap::new() };
        let mut sinks = Vec::new();
        for node in graph.nodes() {
            for p in &node.inputs {
                *edges.readers.entry(*p).or_default() += 1;
            }
        }
        for (index, node) in graph.nodes().iter().enumerate() {
            let name = node.name.as_str();
            let outs: Vec<BatchStream<'_>> = match &node.kind {
                NodeKind::Source(s) => {
                    let env = &Env { pacing: pacing[&node.id].clone(), ..env.clone() };
                    vec![source::source(scope, index, name, s, env)]
                }
                // A step that only says something new about windowing moves no data.
                NodeKind::ParDo(f) if f.is_passthrough() => vec![edges.take(&node.inputs[0])],
                NodeKind::ParDo(f) => par_do::par_do(edges.take(&node.inputs[0]), name, f, env),
                NodeKind::Exchange(s) => {
                    let input = edges.take(&node.inputs[0]);
                    vec![shuffle::shuffle(input, name, s.instantiate(&env.step(name)), env)]
                }
                NodeKind::Group(g) => group::group(edges.take(&node.inputs[0]), index, name, g, env),
                NodeKind::SideParDo(f) => {
                    let (main, side_input) = (edges.take(&node.inputs[0]), edges.take(&node.inputs[1]));
                    vec![side::side_par_do(main, side_input, index, name, f, env)]
                }
                NodeKind::Flatten => {
                    let inputs = node.inputs.iter().map(|p| edges.take(p)).collect();
                    vec![flatten::flatten(scope, inputs)]
                }
                NodeKind::Sink(s) => {
                    let env = &Env { pacing: pacing[&node.id].clone(), ..env.clone() };
                    sinks.push(sink::sink(edges.take(&node.inputs[0]), index, name, s, env));
                    vec![]
                }
            };
            for (port, stream) in outs.into_iter().enumerate() {
                edges.put(PortRef { node: node.id, port }, stream);
            }
        }
        coordinator::coordinator(scope, graph, sinks, env);
    });
}

/// One probe per source, on the sinks it feeds: for each source, a one-element list with
/// its probe; for each sink, the probes of the sources upstream of it. A source paces
/// itself on the sinks it feeds alone, so an idle source in one branch cannot stop the
/// data of another (a source that feeds no sink is never paced).
fn pacing_probes(graph: &Graph) -> HashMap<NodeId, Vec<timely::dataflow::ProbeHandle<Time>>> {
    // The sources upstream of every step, in the graph's topological order.
    let mut upstream: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    let mut probes = HashMap::new();
    let mut handles: HashMap<NodeId, timely::dataflow::ProbeHandle<Time>> = HashMap::new();
    for node in graph.nodes() {
        // A side input is read whole before the main input it serves can go on: pacing its
        // source on the sinks downstream would wait on itself. It is left unpaced.
        let paced_inputs = match node.kind {
            NodeKind::SideParDo(_) => &node.inputs[..1],
            _ => &node.inputs[..],
        };
        let mut sources: Vec<NodeId> = paced_inputs.iter().flat_map(|p| upstream[&p.node].clone()).collect();
        if let NodeKind::Source(_) = node.kind {
            let probe = timely::dataflow::ProbeHandle::new();
            handles.insert(node.id, probe.clone());
            probes.insert(node.id, vec![probe]);
            sources.push(node.id);
        }
        sources.sort();
        sources.dedup();
        if let NodeKind::Sink(_) = node.kind {
            probes.insert(node.id, sources.iter().map(|s| handles[s].clone()).collect());
        }
        upstream.insert(node.id, sources);
    }
    probes
}
