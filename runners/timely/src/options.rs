//! The options every Riffle pipeline binary takes.

use std::path::PathBuf;

/// How to run a pipeline: worker threads, processes and the cluster they form.
///
/// Flatten it into your binary's own clap parser with `#[command(flatten)]`, or use
/// [`Cli`] when the pipeline takes no options of its own.
#[derive(clap::Args, Clone, Debug)]
pub struct RunOptions {
    /// Worker threads per process. Size it to the cores you have: more workers than cores
    /// only adds contention.
    #[arg(short = 'w', long, default_value_t = 1, value_name = "N")]
    pub workers: usize,

    /// Processes in the job. With more than 1 and no --process, Riffle starts all of them
    /// on this machine, connected over loopback, and waits for them (a local cluster in
    /// one command).
    #[arg(short = 'n', long, default_value_t = 1, value_name = "N")]
    pub processes: usize,

    /// This process's index (0-based) in a cluster across hosts. Start the same binary
    /// with the same options on each host, each with its own --process; needs --hostfile.
    #[arg(short = 'p', long, value_name = "I", requires = "hostfile")]
    pub process: Option<usize>,

    /// File naming every process's address: one host:port per line, in process order
    /// (blank lines and lines starting with # are skipped).
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,

    /// Seconds to wait for every process of a cluster to connect before giving up.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub connect_timeout: u64,

    /// Serve Prometheus metrics at http://ADDR/metrics while the job runs: elements in and
    /// out per step and worker, late elements dropped, what groupings hold waiting,
    /// sources' watermarks and Kafka partitions' lag. In a local cluster, process i uses
    /// the port plus i.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    /// Serve a live web view of the job at http://ADDR/ while it runs: the job graph with
    /// each step's rates, watermark and state, sources' splits and progress, refreshed
    /// every second; its JSON at /api/job. In a cluster, the launcher (or process 0)
    /// serves it for the whole job.
    #[arg(long, value_name = "ADDR")]
    pub ui_addr: Option<String>,

    /// Keep serving the web view (and metrics) this many seconds after the job ends, to
    /// look at its final state (a stop signal ends the wait).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub ui_linger: u64,

    /// Draw no progress on the terminal. By default a bounded or backfill job shows a bar
    /// with events per second, where its watermark is in event time, row groups read and
    /// an ETA when stderr is a terminal, and a line every 10 s otherwise.
    #[arg(long)]
    pub no_progress: bool,

    /// Print the pipeline's steps and exit without running it.
    #[arg(long)]
    pub explain: bool,

    /// Print the pipeline's graph in Graphviz DOT and exit without running it.
    #[arg(long)]
    pub explain_dot: bool,

    /// The arguments a local cluster passes to each process it starts; by default this
    /// process's own. Tests set it to run just one test in each child.
    #[arg(skip)]
    pub child_args: Option<Vec<String>>,

    /// Environment variables a local cluster sets in each process it starts, beside this
    /// process's own: tests pass the address of a service they started.
    #[arg(skip)]
    pub child_env: Vec<(String, String)>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 1,
            processes: 1,
            process: None,
            hostfile: None,
            connect_timeout: 30,
            metrics_addr: None,
            ui_addr: None,
            ui_linger: 0,
            no_progress: false,
            explain: false,
            explain_dot: false,
            child_args: None,
            child_env: Vec::new(),
        }
    }
}

impl RunOptions {
    /// `workers` threads in one process.
    pub fn threads(workers: usize) -> Self {
        RunOptions { workers, ..Self::default() }
    }
}

/// The command line of a pipeline binary that takes no options of its own.
#[derive(clap::Parser, Clone, Debug)]
#[command(about = "Runs a Riffle pipeline on worker threads and processes.")]
pub struct Cli {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub run: RunOptions,
}
