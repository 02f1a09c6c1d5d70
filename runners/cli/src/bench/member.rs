//! One benchmark configuration, run in this process: Riffle or raw timely, measured
//! from the moment the workers start to the end of the job.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline as PipelinePact;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::{Exchange, Inspect, Probe};

use super::records::{KeyGen, Keys, Rec1K, Rec4K, Rec16, Rec64, Rec72, Rec256, Record, splitmix};
use super::rusage::cpu_and_peak_rss;

/// Which program moves the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Engine {
    /// A Riffle pipeline.
    Riffle,
    /// A hand-written timely program: `Vec` containers through timely's bincode path.
    Timely,
}

/// What the pipeline does with the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Op {
    /// Send every record to the worker owning its key (no grouping).
    Exchange,
    /// Group records by key (all values cross the shuffle).
    Gbk,
    /// Sum a value per key with combiner lifting (partial sums cross the shuffle).
    Combine,
}

/// How Riffle encodes batches that cross processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Codec {
    /// Records registered as plain old data, copied as bytes.
    Pod,
    /// The default serde codec (bitcode).
    Serde,
}

/// One configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Riffle or the timely baseline.
    pub engine: Engine,
    /// The operation.
    pub op: Op,
    /// Record size in bytes.
    pub size: usize,
    /// Records in all.
    pub records: u64,
    /// Worker threads per process.
    pub workers: usize,
    /// Processes.
    pub processes: usize,
    /// Key distribution.
    pub keys: Keys,
    /// Distinct keys.
    pub key_count: u64,
    /// Riffle's codec.
    pub codec: Codec,
}

/// What one process measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measure {
    /// Seconds from workers started to job done.
    pub elapsed_s: f64,
    /// When the workers started, seconds since the Unix epoch (wall clock).
    pub started_unix_s: f64,
    /// When the job ended, seconds since the Unix epoch.
    pub finished_unix_s: f64,
    /// CPU seconds of the process, all threads.
    pub cpu_s: f64,
    /// Peak resident set size, KiB.
    pub peak_rss_kib: u64,
    /// Elements received after the shuffle, per worker of this process.
    pub loads: Vec<u64>,
}

/// Runs `spec` as process `process` of its cluster (or alone), and measures it.
pub fn run(spec: &Spec, process: Option<usize>, hostfile: Option<PathBuf>) -> anyhow::Result<Measure> {
    match spec.size {
        16 => run_typed::<Rec16>(spec, process, hostfile),
        64 => run_typed::<Rec64>(spec, process, hostfile),
        72 => run_typed::<Rec72>(spec, process, hostfile),
        256 => run_typed::<Rec256>(spec, process, hostfile),
        1024 => run_typed::<Rec1K>(spec, process, hostfile),
        4096 => run_typed::<Rec4K>(spec, process, hostfile),
        other => anyhow::bail!("no record type of {other} bytes; sizes are {:?}", super::records::SIZES),
    }
}

fn run_typed<R: Record>(spec: &Spec, process: Option<usize>, hostfile: Option<PathBuf>) -> anyhow::Result<Measure> {
    assert_eq!(std::mem::size_of::<R>(), R::SIZE, "record type has its nominal size");
    let (started, finished, loads) = match spec.engine {
        Engine::Riffle => riffle::<R>(spec, process, hostfile)?,
        Engine::Timely => timely_exchange::<R>(spec, process, hostfile)?,
    };
    let (cpu_s, peak_rss_kib) = cpu_and_peak_rss();
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let elapsed_s = finished.duration_since(started).map_or(0.0, |d| d.as_secs_f64());
    Ok(Measure {
        elapsed_s,
        started_unix_s: unix(started),
        finished_unix_s: unix(finished),
        cpu_s,
        peak_rss_kib,
        loads,
    })
}

/// When the workers started, when the job ended, and the per-worker loads.
type Timed = (SystemTime, SystemTime, Vec<u64>);

fn riffle<R: Record>(spec: &Spec, process: Option<usize>, hostfile: Option<PathBuf>) -> anyhow::Result<Timed> {
    if spec.codec == Codec::Pod {
        riffle_engine::codec::register_pod::<R>();
    }
    let keys = KeyGen::new(spec.keys, spec.key_count);
    let p = Pipeline::new();
    let records = p.generate_sequence(spec.records, move |i| R::make(keys.key(i), i));
    let measured = match spec.op {
        Op::Exchange => {
            riffle_connectors::memory::discard(&records.redistribute_by_key(|r| r.key()));
            "Discard"
        }
        Op::Gbk => {
            let grouped = records.map(|r| (r.key(), r)).group_by_key().named("Group");
            riffle_connectors::memory::discard(&grouped.map(|(k, vs)| (k, vs.len() as u64)));
            "Group"
        }
        Op::Combine => {
            let sums = records.map(|r| (r.key(), r.value())).combine_per_key(Sum::new()).named("Group");
            riffle_connectors::memory::discard(&sums);
            "Group"
        }
    };
    let opts =
        RunOptions { workers: spec.workers, processes: spec.processes, process, hostfile, ..RunOptions::default() };
    let report = riffle_timely::run(&p, &opts)?;
    Ok((report.started, report.finished, report.elements_in(measured)))
}

/// The records per message of the baseline: what Riffle's sources put in a batch.
const BASELINE_BATCH: usize = riffle_timely::operators::source::BATCH_SIZE;

/// The baseline: the same records through timely's own exchange, in batches of
/// [`BASELINE_BATCH`] per destination (bincode across processes), counted per worker.
fn timely_exchange<R: Record>(spec: &Spec, process: Option<usize>, hostfile: Option<PathBuf>) -> anyhow::Result<Timed> {
    let communication = match (process, hostfile) {
        (Some(process), Some(file)) => {
            let addresses = riffle_timely::cluster::read_hostfile(&file, spec.processes)?;
            timely::CommunicationConfig::Cluster {
                threads: spec.workers,
                process,
                addresses,
                report: false,
                zerocopy: false,
            }
        }
        _ if spec.workers == 1 => timely::CommunicationConfig::Thread,
        _ => timely::CommunicationConfig::Process(spec.workers),
    };
    let config = timely::Config { communication, worker: timely::WorkerConfig::default() };
    let keys = KeyGen::new(spec.keys, spec.key_count);
    let n = spec.records;
    let started: Arc<OnceLock<SystemTime>> = Arc::default();
    let loads: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let (s, l) = (started.clone(), loads.clone());
    let guards = timely::execute(config, move |worker| {
        s.get_or_init(SystemTime::now);
        let (index, peers) = (worker.index() as u64, worker.peers() as u64);
        let keys = keys.clone();
        let count = Arc::new(Mutex::new(0u64));
        let c = count.clone();
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            // Records go out in the batches Riffle sends: up to 1,024 per destination
            // worker, routed before timely's exchange moves each batch whole, so the
            // ratio measures the engine rather than the message size (timely's default
            // container holds about 113 records of 72 bytes).
            source(scope, "Generate", move |cap, info| {
                let activator = scope.activator_for(info.address);
                let mut cap = Some(cap);
                let mut next = index;
                let mut parts: Vec<Vec<R>> = (0..peers).map(|_| Vec::with_capacity(BASELINE_BATCH)).collect();
                move |output| {
                    let Some(t) = cap.as_ref() else { return };
                    let mut session = output.session(t);
                    for _ in 0..16 * 1024 {
                        if next >= n {
                            break;
                        }
                        let r = R::make(keys.key(next), next);
                        let target = (splitmix(r.key()) % peers) as usize;
                        parts[target].push(r);
                        if parts[target].len() == BASELINE_BATCH {
                            let full = std::mem::replace(&mut parts[target], Vec::with_capacity(BASELINE_BATCH));
                            session.give((target as u64, full));
                        }
                        next += peers;
                    }
                    if next >= n {
                        for (target, part) in parts.iter_mut().enumerate() {
                            if !part.is_empty() {
                                session.give((target as u64, std::mem::take(part)));
                            }
                        }
                    }
                    drop(session);
                    if next >= n { cap = None } else { activator.activate() }
                }
            })
            .container::<Vec<(u64, Vec<R>)>>()
            .exchange(|(target, _): &(u64, Vec<R>)| *target)
            .inspect_core(move |event| {
                if let Ok((_, batches)) = event {
                    *c.lock().unwrap() += batches.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
                }
            })
            .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(PipelinePact, "Drop", |_, _| {
                |input, _output| input.for_each(|_, data| data.clear())
            })
            .probe()
            .0
        });
        while !probe.done() {
            worker.step_or_park(None);
        }
        l.lock().unwrap().push((worker.index(), *count.lock().unwrap()));
    })
    .map_err(|e| anyhow::anyhow!("timely: {e}"))?;
    for r in guards.join() {
        r.map_err(|e| anyhow::anyhow!("timely worker: {e}"))?;
    }
    let finished = SystemTime::now();
    let mut loads = loads.lock().unwrap().clone();
    loads.sort();
    Ok((started.get().copied().unwrap_or(finished), finished, loads.into_iter().map(|(_, c)| c).collect()))
}
