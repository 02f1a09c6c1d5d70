//! The checkpoint coordinator: downstream of every sink, it sees a generation pass once
//! every source and grouping of every worker has written its part of the checkpoint that
//! ends it, and on worker 0 writes that checkpoint's manifest.

use timely::dataflow::Scope;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Concatenate, generic::Operator};

use super::Env;
use super::sink::Staged;
use crate::checkpoint::{self, Checkpoints, Manifest, PartKind};
use crate::time::Time;

/// Adds the coordinator when the job takes checkpoints.
pub fn coordinator<'scope>(
    scope: Scope<'scope, Time>,
    graph: &std::sync::Arc<riffle_engine::Graph>,
    sinks: Vec<Staged<'scope>>,
    env: &Env,
) {
    let graph = graph.clone();
    let Some(ck) = env.checkpoints.clone() else { return };
    let first = env.worker.index == 0;
    let workers = env.worker.peers;
    let job = env.job.clone();
    let metrics = env.metrics.clone();
    let mut next = ck.start + 1;
    let mut previous: Option<Manifest> = None;
    let mut completed = false;
    scope.concatenate(sinks).sink(Pipeline, "Checkpoints", move |(input, frontier)| {
        input.for_each(|_, _| {});
        if !first || completed || job.has_failed() {
            return;
        }
        let f: Vec<Time> = frontier.frontier().to_vec();
        // At the end every part is in: checkpoints follow until one where every part is
        // final, the job's last (resuming from it does nothing more).
        while checkpoint::passed_generation(&f, next - 1) {
            let committed = checkpoint::commit(&ck, next, workers, previous.as_ref())
                .and_then(|m| ck.commit_sinks(&graph, &m).map(|()| m));
            if let Ok(m) = &committed {
                let bytes = m.parts.iter().map(|p| p.bytes).sum();
                metrics.checkpoint_completed(m.id, m.written_ms, ck.took(m.id).as_millis() as u64, bytes);
            }
            match committed {
                // Every source cut this one after the stop: it holds all they read.
                Ok(m) if !f.is_empty() && stopped_here(&ck, &m) => {
                    tracing::info!(checkpoint = m.id, "stopped at checkpoint {}", m.id);
                    eprintln!("riffle: stopped at checkpoint {} in {}", m.id, ck.store.url());
                    crate::stop::mark_stopped_at_checkpoint();
                    completed = true;
                    return;
                }
                Ok(m) => {
                    completed = f.is_empty() && m.parts.iter().all(|p| checkpoint::is_kind(&p.name, PartKind::Final));
                    if completed {
                        ck.mark_completed();
                    }
                    previous = Some(m);
                }
                Err(e) => {
                    job.fail(e);
                    return;
                }
            }
            next += 1;
            if completed {
                break;
            }
        }
    });
}

/// Whether every source's part of `m` was cut after a stop was asked for (or is final).
fn stopped_here(ck: &Checkpoints, m: &Manifest) -> bool {
    let sources: Vec<usize> = ck.steps.iter().filter(|s| s.kind == "source").map(|s| s.index).collect();
    crate::stop::stop_requested()
        && m.parts
            .iter()
            .filter(|p| sources.contains(&p.step))
            .all(|p| checkpoint::is_kind(&p.name, PartKind::Stop) || checkpoint::is_kind(&p.name, PartKind::Final))
}
