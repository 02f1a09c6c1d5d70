//! Runs a Riffle pipeline on timely dataflow: worker threads, worker processes, one host
//! or many.
//!
//! ```text
//!  Pipeline ──validate──> Graph ──lower (per worker)──> timely dataflow
//!                                                        │  source ─> pardo ─> route ─exchange─> group ─> sink
//!                                                        v
//!                                   workers: threads x processes, exchange over TCP
//! ```
//!
//! Every edge carries `Vec<Batch>` at timely time `Product<epoch, event time>`
//! ([`time`]); the frontier's event-time coordinate is the watermark. A pipeline binary
//! parses [`RunOptions`] and calls [`run`]:
//!
//! ```no_run
//! use clap::Parser;
//! use riffle_engine::prelude::*;
//!
//! let cli = riffle_timely::Cli::parse();
//! let p = Pipeline::new();
//! let counts = p.create(vec!['a', 'b', 'a']).count_per_element();
//! riffle_connectors::stdout::print_lines(&counts, |(w, n)| format!("{w}\t{n}"));
//! riffle_timely::run(&p, &cli.run).unwrap();
//! ```

pub mod checkpoint;
pub mod cluster;
pub mod job;
pub mod lower;
pub mod metrics;
pub mod operators;
pub mod options;
pub mod progress;
pub mod prometheus;
pub mod server;
pub mod status;
pub mod stop;
pub mod testing;
pub mod time;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use riffle_engine::error::panic_message;
use riffle_engine::runtime::WorkerInfo;
use riffle_engine::{Clock, Error, Graph, ManualClock, NodeKind, Pipeline, Result, SystemClock};
use timely::CommunicationConfig;
use timely::WorkerConfig;

pub use cluster::{is_cluster_member, shared_scratch_dir};
pub use metrics::StepReport;
pub use options::{Cli, RunOptions};
pub use stop::{request_stop, reset_stop, stop_on_signals, stop_requested};

use crate::cluster::Role;
use crate::job::JobState;
use crate::operators::Env;

/// How long an idle worker sleeps at most before looking at the job's state again; the
/// bound on how late a worker notices that another one failed.
const PARK: Duration = Duration::from_millis(50);

/// Validates and runs `pipeline` as `opts` say: on threads, as a local cluster of
/// processes, or as one member of a cluster.
///
/// With `--processes N` (N > 1) and no `--process`, this process starts N copies of the
/// program on loopback and returns when they have all finished; the copies run the job
/// and exit, so code after `run` runs once, in the launching process.
///
/// # Errors
/// An invalid pipeline (naming the step), bad options, a source or sink that cannot be
/// opened, a panic in user code (naming the step and the element), or a failed process.
pub fn run(pipeline: &Pipeline, opts: &RunOptions) -> Result<RunReport> {
    init_logging();
    let graph = pipeline.graph();
    graph.validate()?;
    if opts.explain || opts.explain_dot {
        print!("{}", if opts.explain_dot { graph.to_dot() } else { graph.explain() });
        return Ok(RunReport::default());
    }
    match cluster::role(opts)? {
        Role::Launcher => {
            let started = Instant::now();
            cluster::launch_local(opts, &graph)?;
            let elapsed = started.elapsed();
            let finished = SystemTime::now();
            Ok(RunReport { elapsed, started: finished - elapsed, finished, steps: Vec::new() })
        }
        Role::Single => {
            let graph = Arc::new(graph);
            let mut attempt = 0;
            loop {
                match run_single(&graph, opts) {
                    Err(e) if attempt < opts.restart_attempts && !stop::stop_requested() => {
                        attempt += 1;
                        tracing::warn!(attempt, of = opts.restart_attempts, "the job failed: {e}; restarting");
                        eprintln!(
                            "riffle: the job failed ({e}); restarting it from the latest checkpoint (attempt {attempt} \
                             of {})",
                            opts.restart_attempts
                        );
                    }
                    other => return other,
                }
            }
        }
        Role::Member { process, addresses, launched } => {
            if launched {
                cluster::die_with_launcher();
            }
            let result = run_member(graph, opts, process, addresses, launched);
            if launched {
                // A launched process is only a job executor: its launcher reports.
                if let Err(e) = &result {
                    eprintln!("riffle: process {process}: {e}");
                }
                std::process::exit(if result.is_ok() { 0 } else { 1 });
            }
            result
        }
    }
}

/// Runs the job in this process's worker threads.
fn run_single(graph: &Arc<Graph>, opts: &RunOptions) -> Result<RunReport> {
    let checkpoints = checkpoint::Checkpoints::open(opts, graph)?;
    graph.check_io(checkpoints.as_ref().is_some_and(|c| c.resumed.is_some()))?;
    if let Some(c) = &checkpoints {
        c.recover_sinks(graph)?;
    }
    let comm = if opts.workers == 1 { CommunicationConfig::Thread } else { CommunicationConfig::Process(opts.workers) };
    let watch = Watch {
        process: 0,
        processes: 1,
        workers: opts.workers,
        metrics_at: metrics_addr(opts, 0)?,
        ui_at: opts.ui_addr.clone(),
        push_to: None,
        progress: !opts.no_progress,
        linger: Duration::from_secs(opts.ui_linger),
    };
    execute(graph.clone(), checkpoints, comm, None, watch)
}

fn run_member(
    graph: Graph,
    opts: &RunOptions,
    process: usize,
    addresses: Vec<String>,
    launched: bool,
) -> Result<RunReport> {
    let checkpoints = checkpoint::Checkpoints::open(opts, &graph)?;
    graph.check_io(checkpoints.as_ref().is_some_and(|c| c.resumed.is_some()))?;
    if let (Some(c), 0) = (&checkpoints, process) {
        c.recover_sinks(&graph)?;
    }
    // Who holds the job's view: a local launcher (it says where, in the environment), or
    // process 0 when it serves the web view; the others send it their samples.
    let watch = if launched {
        Watch {
            process,
            processes: opts.processes,
            workers: opts.workers,
            metrics_at: metrics_addr(opts, process)?,
            ui_at: None,
            push_to: std::env::var(cluster::ENV_STATUS_URL).ok(),
            progress: false,
            linger: Duration::ZERO,
        }
    } else {
        let view_url = match &opts.ui_addr {
            Some(ui) if process > 0 => Some(format!("http://{}/api/push", peer_view_addr(ui, &addresses[0])?)),
            _ => None,
        };
        Watch {
            process,
            processes: opts.processes,
            workers: opts.workers,
            metrics_at: metrics_addr(opts, process)?,
            ui_at: opts.ui_addr.clone().filter(|_| process == 0),
            progress: !opts.no_progress && (process == 0 || view_url.is_none()),
            push_to: view_url,
            linger: Duration::from_secs(opts.ui_linger),
        }
    };
    cluster::check_own_address(&addresses, process)?;
    cluster::exit_when_a_peer_is_lost(addresses.clone());
    let comm = CommunicationConfig::Cluster {
        threads: opts.workers,
        process,
        addresses: addresses.clone(),
        report: false,
        zerocopy: false,
    };
    let deadline = Duration::from_secs(opts.connect_timeout);
    execute(Arc::new(graph), checkpoints, comm, Some((addresses, process, deadline)), watch)
}

/// Where the other processes of a cluster across hosts reach process 0's web view: the
/// port of `--ui-addr` on process 0's host from the hostfile.
fn peer_view_addr(ui: &str, process0: &str) -> Result<String> {
    let port = ui
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .ok_or_else(|| Error::Config(format!("--ui-addr {ui:?} is not host:port (for example 0.0.0.0:8080)")))?;
    let host = process0.rsplit_once(':').map_or(process0, |(h, _)| h);
    Ok(format!("{host}:{port}"))
}

/// What a process does to make the job visible.
struct Watch {
    process: usize,
    processes: usize,
    workers: usize,
    /// Serve this process's Prometheus metrics here.
    metrics_at: Option<String>,
    /// Serve the job's web view here (this process holds the view).
    ui_at: Option<String>,
    /// Send this process's samples to the process holding the view, at this URL.
    push_to: Option<String>,
    /// Draw progress on the terminal.
    progress: bool,
    /// How long to keep serving after the job ends.
    linger: Duration,
}

/// Waits `linger` (the web view and metrics stay up meanwhile), or until a stop signal.
pub(crate) fn linger(linger: Duration) {
    let until = Instant::now() + linger;
    while Instant::now() < until && !stop::stop_requested() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the lowered graph on this process's workers until it completes or fails.
/// This process's metrics address: the option's port plus the process index.
fn metrics_addr(opts: &RunOptions, process: usize) -> Result<Option<String>> {
    let Some(addr) = &opts.metrics_addr else { return Ok(None) };
    let (host, port) = addr.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?))).ok_or_else(|| {
        Error::Config(format!("--metrics-addr {addr:?} is not host:port (for example 127.0.0.1:9100)"))
    })?;
    let port = u16::try_from(usize::from(port) + process)
        .map_err(|_| Error::Config(format!("--metrics-addr {addr}: no port for process {process}")))?;
    Ok(Some(format!("{host}:{port}")))
}

fn execute(
    graph: Arc<Graph>,
    checkpoints: Option<Arc<checkpoint::Checkpoints>>,
    comm: CommunicationConfig,
    cluster: Option<(Vec<String>, usize, Duration)>,
    watch: Watch,
) -> Result<RunReport> {
    let job = Arc::new(JobState::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let info = prometheus::ProcessInfo { process: watch.process, workers: watch.workers, started_ms: status::now_ms() };
    let _metrics_server = watch
        .metrics_at
        .as_deref()
        .map(|addr| server::start(addr, "--metrics-addr", server::Serves::Metrics(metrics.clone(), info)))
        .transpose()?;
    // The job's view, when this process holds it; fed by a sampler of this process's
    // counters (or, in a cluster, sent to the process that holds it).
    let view = (watch.push_to.is_none() && (watch.ui_at.is_some() || watch.progress))
        .then(|| status::JobView::new(&graph, watch.processes, watch.workers));
    let _ui_server = match (&watch.ui_at, &view) {
        (Some(addr), Some(view)) => Some(server::start(addr, "--ui-addr", server::Serves::View(view.clone()))?),
        _ => None,
    };
    let deliver = match (watch.push_to.clone(), &view) {
        (Some(url), _) => Some(status::Deliver::Remote(url)),
        (None, Some(view)) => Some(status::Deliver::Local(view.clone())),
        (None, None) => None,
    };
    let started = {
        let job = job.clone();
        move || {
            job.started_at()
                .map(|(_, wall)| wall.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
        }
    };
    let sampler = deliver.map(|d| status::Sampler::start(metrics.clone(), watch.process, started, d));
    let progress = match (&view, watch.progress) {
        (Some(view), true) => Some(progress::ProgressDisplay::start(view.clone())),
        _ => None,
    };
    if let Some((addresses, process, deadline)) = &cluster {
        cluster::connect_deadline(job.clone(), addresses.clone(), *process, *deadline);
    }
    // One clock per process: the system clock, or a manual one when a source scripts
    // processing time (a TestStream); the source operators move it in step everywhere.
    let scripted = graph.nodes().iter().any(|n| matches!(&n.kind, NodeKind::Source(s) if s.scripts_processing_time()));
    let clock: Arc<dyn Clock> = if scripted { Arc::new(ManualClock::new()) } else { Arc::new(SystemClock) };
    stop::set_checkpointing(checkpoints.is_some());
    let worker_metrics = metrics.clone();
    let worker_job = job.clone();
    let in_cluster = cluster.is_some();
    let config = timely::Config { communication: comm, worker: WorkerConfig::default() };
    let start = move || {
        timely::execute(config, move |worker| {
            let job = worker_job.clone();
            if in_cluster {
                cluster::await_every_peer(worker);
            }
            job.mark_started();
            let env = Env {
                worker: WorkerInfo { index: worker.index(), peers: worker.peers() },
                job: job.clone(),
                metrics: worker_metrics.clone(),
                sinks_progress: timely::dataflow::ProbeHandle::new(),
                pacing: Vec::new(),
                clock: clock.clone(),
                checkpoints: checkpoints.clone(),
            };
            let ran = catch_unwind(AssertUnwindSafe(|| {
                lower::build(worker, &graph, &env);
                while worker.has_dataflows() {
                    if stop::stopped_at_checkpoint() {
                        if in_cluster {
                            // Dropping the dataflows would release their capabilities and
                            // let the other processes drain: this process ends instead,
                            // and they with it.
                            job.mark_finished();
                            loop {
                                std::thread::park();
                            }
                        }
                        for id in worker.installed_dataflows() {
                            worker.drop_dataflow(id);
                        }
                        break;
                    }
                    if job.has_failed() {
                        if in_cluster {
                            // Dropping the dataflows would release their capabilities, and
                            // the other processes could then finish as if nothing failed.
                            // This process is about to exit: they must see it go instead.
                            loop {
                                std::thread::park();
                            }
                        }
                        for id in worker.installed_dataflows() {
                            worker.drop_dataflow(id);
                        }
                        break;
                    }
                    worker.step_or_park(Some(PARK));
                }
            }));
            if let Err(p) = ran {
                job.fail(Error::Internal(format!("worker {} panicked: {}", env.worker.index, panic_message(&p))));
            }
        })
    };
    // A cluster forms inside timely, which prints its connection chatter on stdout.
    let guards = if cluster.is_some() { cluster::quiet_stdout_while(start) } else { start() }
        .map_err(|e| Error::Cluster(format!("could not start the workers: {e}")))?;
    if let Some((addresses, process, _)) = &cluster {
        tracing::info!(process, processes = addresses.len(), "cluster formed");
    }

    if cluster.is_none() {
        // Every worker is in this process and stops on its own when one fails.
        drop(guards.join());
    } else {
        // Peers may still be sending to us; a failed member must not wait for them.
        let joined = job.clone();
        std::thread::spawn(move || {
            drop(guards.join());
            joined.mark_finished();
        });
        job.wait();
    }
    let error = job.take_error();
    if let Some(s) = sampler {
        s.finish(error.as_ref().map(|e| e.to_string()));
    }
    drop(progress);
    if _ui_server.is_some() || _metrics_server.is_some() {
        linger(watch.linger);
    }
    if let Some(e) = error {
        return Err(e);
    }
    let (started, started_wall) = job.started_at().unwrap_or((Instant::now(), SystemTime::now()));
    let elapsed = started.elapsed();
    tracing::info!(elapsed_ms = elapsed.as_millis() as u64, "job finished");
    Ok(RunReport { elapsed, started: started_wall, finished: started_wall + elapsed, steps: metrics.report() })
}

/// What a finished run did, in this process.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// From the moment this process's workers started (the cluster had formed) to the
    /// end of the job; for a local launcher, the whole run of its processes.
    pub elapsed: Duration,
    /// When this process's workers started, by the wall clock. Processes of one cluster
    /// start their workers up to a second apart (timely polls for connections once a
    /// second), so a cluster-wide time is the latest `finished` less the latest `started`.
    pub started: SystemTime,
    /// When the job ended here, by the wall clock.
    pub finished: SystemTime,
    /// Elements in and out of every step on every worker of this process.
    pub steps: Vec<StepReport>,
}

impl Default for RunReport {
    fn default() -> Self {
        let now = SystemTime::now();
        RunReport { elapsed: Duration::ZERO, started: now, finished: now, steps: Vec::new() }
    }
}

impl RunReport {
    /// The elements that step `name` read, per worker of this process, in worker order.
    pub fn elements_in(&self, name: &str) -> Vec<u64> {
        self.steps.iter().filter(|s| s.step == name).map(|s| s.elements_in).collect()
    }

    /// The elements that grouping `name` dropped as too late, on this process's workers.
    pub fn late_dropped(&self, name: &str) -> u64 {
        self.steps.iter().filter(|s| s.step == name).map(|s| s.late_dropped).sum()
    }
}

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (default: Riffle's warnings
/// and errors). Safe to call more than once.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
