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

    /// Take a checkpoint of the job here every --checkpoint-interval (a path, file:// or
    /// s3:// URL; S3 settings from the AWS_* environment variables). If it holds a
    /// completed checkpoint of this pipeline, the job resumes from the latest one: sources
    /// go on from their saved positions and groupings from their saved state, at any
    /// worker or process count. See docs/checkpoints.md.
    #[arg(long, value_name = "URL")]
    pub checkpoint_dir: Option<String>,

    /// How often to checkpoint, a number with a unit: ms, s, m or h.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_interval)]
    pub checkpoint_interval: std::time::Duration,

    /// Resume from this checkpoint (an id that `--checkpoint-dir` holds) instead of the latest.
    #[arg(long, value_name = "ID", requires = "checkpoint_dir", conflicts_with = "fresh")]
    pub from_checkpoint: Option<u64>,

    /// Start from the beginning, never from a checkpoint: fails if --checkpoint-dir
    /// already holds one.
    #[arg(long, requires = "checkpoint_dir")]
    pub fresh: bool,

    /// How many completed checkpoints to keep; older ones are deleted.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_retain: u64,

    /// When the job fails, start it again from its latest checkpoint, up to N times (a
    /// local cluster restarts all its processes; Flink's fixed-delay restart strategy
    /// without the delay). Needs --checkpoint-dir.
    #[arg(long, default_value_t = 0, value_name = "N", requires = "checkpoint_dir")]
    pub restart_attempts: u32,

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
            checkpoint_dir: None,
            checkpoint_interval: std::time::Duration::from_secs(10),
            from_checkpoint: None,
            fresh: false,
            checkpoint_retain: 3,
            restart_attempts: 0,
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

/// `--checkpoint-interval`: a positive number with a unit, ms, s, m or h.
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number with a unit, such as 10s or 500ms"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{s:?}: the unit must be ms, s, m or h (for example 10s)")),
    }
    .ok_or_else(|| format!("{s:?} is too long"))?;
    if ms == 0 {
        return Err(format!("{s:?}: the interval must be longer than zero"));
    }
    Ok(std::time::Duration::from_millis(ms))
}

/// The command line of a pipeline binary that takes no options of its own.
#[derive(clap::Parser, Clone, Debug)]
#[command(about = "Runs a Riffle pipeline on worker threads and processes.")]
pub struct Cli {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub run: RunOptions,
}
