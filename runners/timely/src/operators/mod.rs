//! Riffle's timely operators, one per file: each lowers one kind of graph step.

use std::sync::Arc;

use riffle_engine::runtime::{StepContext, WorkerInfo};
use riffle_engine::{Batch, Clock};
use timely::dataflow::Stream;
use timely::dataflow::operators::Capability;

use crate::job::JobState;
use crate::time::Time;

pub mod coordinator;
pub mod flatten;
pub mod group;
pub mod par_do;
pub mod shuffle;
pub mod side;
pub mod sink;
pub mod source;

/// Every edge of a lowered pipeline: batches of some element type, at Riffle times.
pub type BatchStream<'scope> = Stream<'scope, Time, Vec<Batch>>;

/// What each operator needs to know about where it runs.
#[derive(Clone)]
pub struct Env {
    /// This worker.
    pub worker: WorkerInfo,
    /// The job's shared failure state.
    pub job: Arc<JobState>,
    /// This process's counters.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Progress at every sink of this worker's dataflow: a scripted processing-time
    /// advance waits on it, since processing time is the same for every step.
    pub sinks_progress: timely::dataflow::ProbeHandle<Time>,
    /// For a source: progress at the sinks it feeds, which it paces itself on, so that
    /// unrelated branches do not hold each other back. For a sink: the probes of the
    /// sources that feed it, to attach.
    pub pacing: Vec<timely::dataflow::ProbeHandle<Time>>,
    /// This process's clock.
    pub clock: Arc<dyn Clock>,
    /// The job's checkpoints, when it takes them.
    pub checkpoints: Option<Arc<crate::checkpoint::Checkpoints>>,
}

impl Env {
    /// The context handed to a step's per-worker instance.
    pub fn step(&self, name: &str) -> StepContext {
        StepContext { name: name.into(), worker: self.worker, clock: self.clock.clone() }
    }

    /// The counter of step `name` on this worker.
    pub fn counter(&self, name: &str) -> Arc<crate::metrics::StepCounter> {
        self.metrics.counter(name, self.worker.index)
    }
}

/// Moves every capability before `epoch` forward to it, at the same event time.
pub(crate) fn forward_to_epoch<'a>(caps: impl Iterator<Item = &'a mut Capability<Time>>, epoch: u64) {
    for c in caps.filter(|c| c.time().epoch < epoch) {
        let t = Time { epoch, event: c.time().event };
        c.downgrade(&t);
    }
}
