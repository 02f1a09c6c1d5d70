//! `riffle bench shuffle`: sweeps record size, workers, processes, key distribution,
//! operation and codec; measures each configuration in fresh processes; prints every
//! Riffle figure beside the baselines measured in the same run. With `--hostfile` the
//! processes are the user's hosts (see [`super::hosts`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::hosts::{Leader, TcpPair, Timeouts};
use super::member::{Codec, Engine, Measure, Op, Spec};
use super::records::Keys;

/// Options of `riffle bench shuffle`.
#[derive(clap::Args, Debug, Clone)]
pub struct ShuffleArgs {
    /// A smaller sweep: sizes 16, 72, 1024, 4096; exchange, plus combine and gbk at 72
    /// bytes; runs sized by time as in the full sweep, so its figures match it.
    #[arg(long)]
    pub quick: bool,
    /// Record sizes in bytes (16, 64, 72, 256, 1024, 4096).
    #[arg(long, value_delimiter = ',', default_value = "16,64,72,256,1024,4096")]
    pub sizes: Vec<usize>,
    /// Worker threads per process to try [default: 1, 2, 4, ... up to the cores].
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<usize>,
    /// Process counts to try; 2 runs two real OS processes on loopback (with --hostfile:
    /// ignored, every configuration runs on all the hosts).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub processes: Vec<usize>,
    /// Key distributions for the skew runs (uniform, zipfS); `--skew` alone: none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "zipf0.8,zipf1.2")]
    pub skew: Vec<Keys>,
    /// Operations.
    #[arg(long, value_delimiter = ',', default_value = "exchange,gbk,combine")]
    pub ops: Vec<Op>,
    /// Data per configuration, MiB (records = this / record size).
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub key_count: u64,
    /// Repetitions of each configuration; the median is reported, with the spread
    /// (slowest over fastest).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Each configuration runs with more records (up to 64x --mib, and 4 GiB) until a run
    /// takes at least this long: a shorter run measures mostly start-up.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub min_run: f64,
    /// Also write every row as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also draw throughput against record size as SVG to this file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Data per measure of the TCP ceiling, MiB [default: 2048; 512 with --quick].
    #[arg(long, value_name = "MIB")]
    pub tcp_mib: Option<u64>,
    /// Run on your own hosts: one `host:port` line per process (at least two). Every host
    /// runs this same command with its own --process; the number of lines is the number
    /// of processes of every configuration (--processes is ignored, and single-process
    /// configurations are left out: they cross no network).
    ///
    /// Process 0 listens on its line's port and plans: the other processes join it, take
    /// each configuration from it (so only process 0's other options matter) and run it
    /// on free ports of their hosts, so the hosts must reach each other on any TCP port.
    /// The timely baseline runs between the same hosts, and the TCP ceiling is measured
    /// from process 0 to each host and back (the slowest direction is the ceiling).
    ///
    /// Process 0 prints the report and writes --json and --plot; CPU and RSS are sums over
    /// the hosts, and every row checks that every record arrived.
    #[arg(long, value_name = "FILE", requires = "process")]
    pub hostfile: Option<PathBuf>,
    /// This host's line in --hostfile, from 0 (process 0 prints the report).
    #[arg(long, value_name = "I", requires = "hostfile")]
    pub process: Option<usize>,
    /// With --hostfile: how long to wait for every host to join, and the longest a host
    /// may stay silent (heartbeats every second) before it counts as lost.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub host_timeout: u64,
    /// With --hostfile: the longest one configuration's run may take on a host before
    /// it is stopped and the sweep fails.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub run_timeout: u64,
}

/// One measured configuration, as printed and written to JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What ran.
    pub spec: Spec,
    /// Records per second.
    pub records_per_s: f64,
    /// Elements counted after the shuffle, all workers: the records sent, checked (a
    /// lifted combine counts its partial sums).
    pub delivered: u64,
    /// Record bytes per second, in MB (10^6).
    pub mb_per_s: f64,
    /// CPU seconds, all processes.
    pub cpu_s: f64,
    /// Peak RSS summed over processes, MiB.
    pub peak_rss_mib: f64,
    /// Busiest worker's received elements over the mean (1.0 is perfectly even).
    pub imbalance: f64,
    /// Records/s over the timely baseline's at the same size, workers and processes.
    pub vs_timely: Option<f64>,
    /// MB/s over the loopback TCP ceiling. Above 1.0 is possible within one process,
    /// where nothing crosses a socket.
    pub vs_tcp: Option<f64>,
    /// The slowest repetition's time over the fastest's.
    pub spread: f64,
}

/// Everything one run of the benchmark measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The TCP ceiling, MB/s: loopback between two processes, or with --hostfile the
    /// slowest direction between process 0 and another host.
    pub tcp_mb_per_s: f64,
    /// With --hostfile: the hostfile's lines, process 0 first.
    pub hosts: Option<Vec<String>>,
    /// With --hostfile: the TCP ceiling of each direction measured.
    pub tcp_pairs: Vec<TcpPair>,
    /// Cores of this machine.
    pub cores: usize,
    /// The Riffle rows.
    pub rows: Vec<Row>,
    /// The timely baseline rows.
    pub baselines: Vec<Row>,
}

fn default_workers() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut w = vec![1];
    while w.last().copied().unwrap_or(1) * 2 <= cores {
        w.push(w.last().copied().unwrap_or(1) * 2);
    }
    if *w.last().unwrap_or(&1) < 2 {
        w.push(2);
    }
    w
}

/// The configurations to run, in order: at every process count of `processes`.
fn plan(args: &ShuffleArgs, processes: &[usize]) -> Vec<Spec> {
    let workers = if args.workers.is_empty() { default_workers() } else { args.workers.clone() };
    let sizes: Vec<usize> = if args.quick { vec![16, 72, 1024, 4096] } else { args.sizes.clone() };
    let mib = if args.quick { 128 } else { args.mib };
    let spec = |engine, op, size: usize, w, procs, keys, codec| Spec {
        engine,
        op,
        size,
        records: (mib << 20) / size as u64,
        workers: w,
        processes: procs,
        keys,
        key_count: args.key_count,
        codec,
    };
    let mut out = Vec::new();
    for &procs in processes {
        for &w in &workers {
            for &size in &sizes {
                out.push(spec(Engine::Timely, Op::Exchange, size, w, procs, Keys::Uniform, Codec::Serde));
                for &op in &args.ops {
                    if args.quick && op != Op::Exchange && size != 72 {
                        continue;
                    }
                    // Only the exchange moves bare records, which the pod codec applies to.
                    let codecs: &[Codec] = match op {
                        Op::Exchange if !args.quick || size == 72 => &[Codec::Pod, Codec::Serde],
                        Op::Exchange => &[Codec::Pod],
                        _ => &[Codec::Serde],
                    };
                    for &codec in codecs {
                        out.push(spec(Engine::Riffle, op, size, w, procs, Keys::Uniform, codec));
                    }
                }
            }
        }
    }
    // Skew: every operation at 72 bytes (the quick sweep: combine only), the most
    // workers, in one and two processes.
    let w = *workers.last().unwrap_or(&1);
    for &procs in processes {
        for keys in &args.skew {
            for &op in &args.ops {
                if !args.quick || op == Op::Combine {
                    out.push(spec(Engine::Riffle, op, 72, w, procs, *keys, Codec::Serde));
                }
            }
        }
    }
    out
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

/// Runs one configuration in fresh processes and combines what they measured.
fn measure(spec: &Spec, dir: &Path) -> anyhow::Result<Measure> {
    let exe = std::env::current_exe()?;
    let json = serde_json::to_string(spec)?;
    let hostfile = dir.join("hosts.txt");
    if spec.processes > 1 {
        let ports = free_ports(spec.processes)?;
        std::fs::write(&hostfile, ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect::<String>())?;
    }
    let mut children = Vec::new();
    for i in 0..spec.processes {
        let mut cmd = Command::new(&exe);
        cmd.args(["bench", "member", "--spec", &json]).stdout(Stdio::piped()).stderr(Stdio::inherit());
        if spec.processes > 1 {
            cmd.args(["--process", &i.to_string(), "--hostfile"]).arg(&hostfile);
        }
        children.push(cmd.spawn().context("starting a benchmark process")?);
    }
    let mut parts = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("benchmark process {i} of {spec:?} failed ({})", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{')).context("a benchmark process printed no result")?;
        parts.push(serde_json::from_str(line)?);
    }
    combine(spec, parts)
}

/// One configuration's measure from its processes' (their times on one clock), checked
/// for every record.
fn combine(spec: &Spec, parts: Vec<Measure>) -> anyhow::Result<Measure> {
    let mut total = Measure::default();
    let (mut start, mut end) = (0f64, 0f64);
    for m in parts {
        // The run starts when the last process's workers start, and ends with the last.
        start = start.max(m.started_unix_s);
        end = end.max(m.finished_unix_s);
        total.cpu_s += m.cpu_s;
        total.peak_rss_kib += m.peak_rss_kib;
        total.loads.extend(m.loads);
    }
    total.elapsed_s = end - start;
    // Every record must have arrived, on either side. (A lifted combine folds records
    // before the shuffle, so its step counts partial sums, not records.)
    if spec.engine == Engine::Timely || spec.op != Op::Combine {
        let delivered: u64 = total.loads.iter().sum();
        if delivered != spec.records {
            bail!("{spec:?}: {delivered} records arrived of {} sent", spec.records);
        }
    }
    Ok(total)
}

/// The most record bytes one configuration's run moves, whatever `--min-run` asks.
const MAX_RUN_BYTES: u64 = 4 << 30;

/// Runs `spec` with enough records that a run takes at least `min_run` seconds (up to
/// 64x the planned count, and [`MAX_RUN_BYTES`]), `reps` times: the configuration as run, the median run, and
/// the spread (slowest over fastest).
fn timed_measure(spec: &Spec, reps: usize, min_run: f64, on: &Where) -> anyhow::Result<(Spec, Measure, f64)> {
    let mut spec = spec.clone();
    // A grouping holds every record of the (global) window until the end: the data of a
    // run stays under 4 GiB.
    let most = (spec.records * 64).min((MAX_RUN_BYTES / spec.size as u64).max(spec.records));
    let mut first = on.measure(&spec)?;
    while first.elapsed_s < min_run && spec.records < most {
        let scale = (min_run * 1.25 / first.elapsed_s.max(1e-3)).clamp(1.5, 16.0);
        spec.records = ((spec.records as f64 * scale) as u64).min(most);
        first = on.measure(&spec)?;
    }
    let mut runs = vec![first];
    for _ in 1..reps.max(1) {
        runs.push(on.measure(&spec)?);
    }
    runs.sort_by(|a, b| a.elapsed_s.total_cmp(&b.elapsed_s));
    let spread = runs.last().map_or(1.0, |l| l.elapsed_s) / runs[0].elapsed_s.max(1e-9);
    let median = runs.swap_remove(runs.len() / 2);
    Ok((spec, median, spread))
}

/// The loopback TCP ceiling: this process writes `bytes` to another that reads and
/// discards them, then acknowledges.
fn tcp_ceiling(bytes: u64) -> anyhow::Result<f64> {
    let port = free_ports(1)?[0];
    let mut sink = Command::new(std::env::current_exe()?)
        .args(["bench", "tcp-sink", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    let mb = super::hosts::tcp_send(&format!("127.0.0.1:{port}"), bytes)?;
    sink.wait()?;
    Ok(mb)
}

/// The other end of [`tcp_ceiling`].
pub fn tcp_sink(port: u16) -> anyhow::Result<()> {
    super::hosts::drain(&TcpListener::bind(("127.0.0.1", port))?, Duration::from_secs(600))
}

/// Where the configurations run.
enum Where {
    /// Fresh processes on this host's loopback, their hostfiles in this folder.
    Loopback(PathBuf),
    /// One process on each host of a hostfile, led by this one.
    Hosts(Leader),
}

impl Where {
    fn measure(&self, spec: &Spec) -> anyhow::Result<Measure> {
        match self {
            Where::Loopback(dir) => measure(spec, dir),
            Where::Hosts(leader) => combine(spec, leader.measure(spec)?),
        }
    }
}

fn row(spec: &Spec, m: &Measure) -> Row {
    let rps = spec.records as f64 / m.elapsed_s.max(1e-9);
    let mean = m.loads.iter().sum::<u64>() as f64 / m.loads.len().max(1) as f64;
    let max = m.loads.iter().copied().max().unwrap_or(0) as f64;
    Row {
        spec: spec.clone(),
        records_per_s: rps,
        delivered: m.loads.iter().sum(),
        mb_per_s: rps * spec.size as f64 / 1e6,
        cpu_s: m.cpu_s,
        peak_rss_mib: m.peak_rss_kib as f64 / 1024.0,
        imbalance: if mean > 0.0 { max / mean } else { 1.0 },
        vs_timely: None,
        vs_tcp: None,
        spread: 1.0,
    }
}

/// Runs the sweep, printing rows as they are measured: the report, or `None` in a
/// process other than 0 of a --hostfile run (process 0 has the report).
pub fn run(args: &ShuffleArgs) -> anyhow::Result<Option<Report>> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("riffle-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let report = sweep(args, &dir);
    std::fs::remove_dir_all(&dir).ok();
    let Some(report) = report? else { return Ok(None) };
    print_goals(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        super::plot::draw(&report, path)?;
        println!("wrote {}", path.display());
    }
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(Some(report))
}

fn sweep(args: &ShuffleArgs, dir: &Path) -> anyhow::Result<Option<Report>> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let tcp_bytes: u64 = args.tcp_mib.unwrap_or(if args.quick { 512 } else { 2048 }) << 20;
    let (on, tcp, tcp_pairs, processes) = if let (Some(file), Some(process)) = (&args.hostfile, args.process) {
        let hosts = super::hosts::read_hosts(file)?;
        if process >= hosts.len() {
            bail!("--process {process} is out of range: {} names processes 0 to {}", file.display(), hosts.len() - 1);
        }
        let timeouts =
            Timeouts { host: Duration::from_secs(args.host_timeout), run: Duration::from_secs(args.run_timeout) };
        if process > 0 {
            super::hosts::follow(&hosts, process, timeouts, dir)?;
            return Ok(None);
        }
        let leader = Leader::start(hosts, timeouts, dir.to_path_buf())?;
        let pairs = leader.tcp(tcp_bytes)?;
        let tcp = pairs.iter().map(|p| p.mb_per_s).fold(f64::INFINITY, f64::min);
        let n = leader.hosts().len();
        println!("riffle bench shuffle on {n} hosts ({}); this host has {cores} cores", leader.hosts().join(", "));
        for p in &pairs {
            println!("  TCP process {} -> {}: {:.0} MB/s (median of 3)", p.from, p.to, p.mb_per_s);
        }
        println!("TCP ceiling between the hosts (slowest direction): {tcp:.0} MB/s");
        (Where::Hosts(leader), tcp, pairs, vec![n])
    } else {
        let mut t: Vec<f64> = (0..3).map(|_| tcp_ceiling(tcp_bytes)).collect::<anyhow::Result<_>>()?;
        t.sort_by(f64::total_cmp);
        println!("riffle bench shuffle: {cores} cores; loopback TCP ceiling {:.0} MB/s (median of 3)", t[1]);
        (Where::Loopback(dir.to_path_buf()), t[1], Vec::new(), args.processes.clone())
    };
    // On an error the other processes see process 0 go and fail too; only a finished
    // sweep lets them end cleanly.
    let (rows, baselines) = measure_plan(args, &on, &processes, tcp)?;
    if let Where::Hosts(leader) = &on {
        leader.finish();
    }
    let hosts = match &on {
        Where::Hosts(leader) => Some(leader.hosts().to_vec()),
        Where::Loopback(_) => None,
    };
    Ok(Some(Report { tcp_mb_per_s: tcp, hosts, tcp_pairs, cores, rows, baselines }))
}

/// Measures every configuration of the plan: the Riffle rows and the baselines.
fn measure_plan(args: &ShuffleArgs, on: &Where, processes: &[usize], tcp: f64) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    println!(
        "{:<8} {:>5} {:<9} {:<5} {:>5} {:>3} {:>9} {:>8} {:>7} {:>8} {:>6} {:>9} {:>7} {:>6}",
        "op",
        "bytes",
        "keys",
        "codec",
        "procs",
        "w",
        "Mrec/s",
        "MB/s",
        "CPU s",
        "RSS MiB",
        "imbal",
        "vs timely",
        "vs TCP",
        "spread"
    );
    let mut rows = Vec::new();
    let mut baselines: Vec<Row> = Vec::new();
    for spec in plan(args, processes) {
        let (spec, m, spread) = timed_measure(&spec, args.reps, args.min_run, on)?;
        let mut r = row(&spec, &m);
        r.spread = spread;
        if spec.engine == Engine::Timely {
            print_row(&r, "timely");
            baselines.push(r);
            continue;
        }
        // The baseline is an exchange: only an exchange is compared with it (a grouping or
        // a combine does more work than moving the records).
        r.vs_timely = baselines
            .iter()
            .filter(|_| spec.op == Op::Exchange)
            .find(|b| b.spec.size == spec.size && b.spec.workers == spec.workers && b.spec.processes == spec.processes)
            .map(|b| r.records_per_s / b.records_per_s);
        r.vs_tcp = Some(r.mb_per_s / tcp);
        print_row(&r, "riffle");
        rows.push(r);
    }
    Ok((rows, baselines))
}

fn print_row(r: &Row, engine: &str) {
    let s = &r.spec;
    let op = if engine == "timely" { "timely".to_string() } else { format!("{:?}", s.op).to_lowercase() };
    let codec = if engine == "timely" { "bincode".to_string() } else { format!("{:?}", s.codec).to_lowercase() };
    let ratio = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}x"));
    println!(
        "{:<8} {:>5} {:<9} {:<5} {:>5} {:>3} {:>9.2} {:>8.0} {:>7.2} {:>8.0} {:>6.2} {:>9} {:>7} {:>5.2}x",
        op,
        s.size,
        s.keys.to_string(),
        codec,
        s.processes,
        s.workers,
        r.records_per_s / 1e6,
        r.mb_per_s,
        r.cpu_s,
        r.peak_rss_mib,
        r.imbalance,
        ratio(r.vs_timely),
        ratio(r.vs_tcp),
        r.spread
    );
}

/// The goals, as measured in this run.
fn print_goals(report: &Report) {
    let find = |op: Op, size: usize, procs: usize, w: usize, keys: Keys, codec: Codec| {
        report.rows.iter().find(|r| {
            let s = &r.spec;
            s.op == op && s.size == size && s.processes == procs && s.workers == w && s.keys == keys && s.codec == codec
        })
    };
    println!("goals:");
    for codec in [Codec::Pod, Codec::Serde] {
        if let Some(r) = find(Op::Exchange, 72, 2, 1, Keys::Uniform, codec) {
            println!(
                "  exchange, 72-byte records, 2 processes x 1 worker, {codec:?} codec: {:.2}x timely's bincode path (goal 1.7x)",
                r.vs_timely.unwrap_or(f64::NAN)
            );
        }
    }
    // One process of one worker routes nothing: no goal is measured there.
    for r in report.rows.iter().filter(|r| {
        r.spec.op == Op::Exchange && r.spec.processes == 1 && r.spec.workers > 1 && r.spec.codec == Codec::Pod
    }) {
        if r.spec.size == 72 {
            println!(
                "  exchange, 72-byte records, in one process x {} workers: {:.2}x timely (goal: no slower, 1.0x)",
                r.spec.workers,
                r.vs_timely.unwrap_or(f64::NAN)
            );
        }
    }
    for r in report.rows.iter().filter(|r| r.spec.op == Op::Combine && matches!(r.spec.keys, Keys::Zipf(_))) {
        let s = &r.spec;
        if let Some(u) = find(Op::Combine, s.size, s.processes, s.workers, Keys::Uniform, s.codec) {
            println!(
                "  combine with lifting, {} keys, {} x {}: {:.2}x its uniform throughput (goal: within 2x, i.e. >= 0.5x); imbalance {:.2}",
                s.keys,
                s.processes,
                s.workers,
                r.records_per_s / u.records_per_s,
                r.imbalance
            );
        }
    }
}
