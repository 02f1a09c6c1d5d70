//! Processes: hostfiles, the local launcher, and failing fast when a peer is lost.
//!
//! Timely forms a cluster by having each process connect to every lower-numbered one
//! and retrying forever, and reports a lost peer by panicking in its network thread.
//! Riffle adds the two things a user needs on top: a deadline on forming the cluster
//! (with a message naming who did not answer), and an exit naming the lost process as
//! soon as a connection drops, instead of workers waiting on a peer that is gone.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle_engine::{Error, Graph, Result};

use crate::job::JobState;
use crate::options::RunOptions;
use crate::server::{Serves, start};
use crate::status::JobView;

/// Set in a process started by a local launcher: its index.
pub const ENV_PROCESS: &str = "RIFFLE_PROCESS_INDEX";
/// Set in a process started by a local launcher: the hostfile it wrote.
pub const ENV_HOSTFILE: &str = "RIFFLE_HOSTFILE";
/// Set in a process started by a local launcher: where to send its status samples (the
/// launcher holds the job's view, for progress and the web view).
pub const ENV_STATUS_URL: &str = "RIFFLE_STATUS_URL";

/// Exit status of a process that lost a peer.
pub const EXIT_LOST_PEER: i32 = 3;
/// Exit status of a process whose cluster did not form in time.
pub const EXIT_NO_CLUSTER: i32 = 4;

/// How long a launcher lets the other processes stop by themselves after one failed.
const STRAGGLER_GRACE: Duration = Duration::from_secs(15);

/// What this process is in the job.
#[derive(Debug)]
pub enum Role {
    /// The whole job, in this process.
    Single,
    /// Starts the processes of a local cluster and waits for them.
    Launcher,
    /// One process of a cluster.
    Member {
        /// Its index.
        process: usize,
        /// Every process's address.
        addresses: Vec<String>,
        /// Whether a local launcher started it (then it exits when its job ends).
        launched: bool,
    },
}

/// Works out the role from the options and the launcher's environment variables.
///
/// # Errors
/// Inconsistent options, or a bad hostfile, named.
pub fn role(opts: &RunOptions) -> Result<Role> {
    if opts.workers == 0 {
        return Err(Error::Config("--workers must be at least 1".into()));
    }
    if opts.processes == 0 {
        return Err(Error::Config("--processes must be at least 1".into()));
    }
    if let Ok(index) = std::env::var(ENV_PROCESS) {
        let process =
            index.parse().map_err(|_| Error::Config(format!("{ENV_PROCESS}={index:?} is not a process index")))?;
        let file = std::env::var(ENV_HOSTFILE)
            .map_err(|_| Error::Config(format!("{ENV_PROCESS} is set but {ENV_HOSTFILE} is not")))?;
        let addresses = read_hostfile(Path::new(&file), opts.processes)?;
        return Ok(Role::Member { process, addresses, launched: true });
    }
    match (opts.process, &opts.hostfile) {
        (Some(process), Some(file)) => {
            if process >= opts.processes {
                return Err(Error::Config(format!(
                    "--process {process} is out of range for --processes {}: use 0 to {}",
                    opts.processes,
                    opts.processes - 1
                )));
            }
            let addresses = read_hostfile(file, opts.processes)?;
            Ok(Role::Member { process, addresses, launched: false })
        }
        (Some(_), None) => Err(Error::Config("--process needs --hostfile".into())),
        (None, _) if opts.processes > 1 => Ok(Role::Launcher),
        (None, _) => Ok(Role::Single),
    }
}

/// Reads and checks a hostfile: one `host:port` per line, `processes` of them.
///
/// # Errors
/// A missing file, a malformed line or the wrong number of lines, naming the file and line.
pub fn read_hostfile(path: &Path, processes: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read hostfile {}: {e}", path.display())))?;
    let mut addresses = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let ok = line.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(Error::Config(format!(
                "hostfile {} line {}: {line:?} is not host:port (for example 127.0.0.1:2101)",
                path.display(),
                i + 1
            )));
        }
        if let Some(first) = addresses.iter().position(|a| a == line) {
            return Err(Error::Config(format!(
                "hostfile {} line {}: {line} is already process {first}'s address; each process needs its own \
                 host:port",
                path.display(),
                i + 1
            )));
        }
        addresses.push(line.to_string());
    }
    if addresses.len() != processes {
        return Err(Error::Config(format!(
            "hostfile {} names {} processes but --processes is {processes}; give one host:port line per process",
            path.display(),
            addresses.len()
        )));
    }
    Ok(addresses)
}

fn resolve(address: &str) -> Option<SocketAddr> {
    address.to_socket_addrs().ok()?.next()
}

/// Checks that this process can listen on its own address, so a port in use is a clear
/// error now rather than a timely panic later.
///
/// # Errors
/// The address does not resolve or is taken.
pub fn check_own_address(addresses: &[String], process: usize) -> Result<()> {
    let address = &addresses[process];
    let sock = resolve(address)
        .ok_or_else(|| Error::Config(format!("process {process}'s address {address:?} does not resolve")))?;
    TcpListener::bind(sock).map(drop).map_err(|e| {
        Error::Config(format!(
            "process {process} cannot listen on {address}: {e}; is another job or program using that port? \
             Pick a free one in the hostfile"
        ))
    })
}

/// Turns a panic in one of timely's network threads (a peer's connection dropped) into
/// an immediate exit naming the lost process, instead of workers waiting for it.
pub fn exit_when_a_peer_is_lost(addresses: Vec<String>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or_default();
        let peer = name.strip_prefix("timely:recv-").or_else(|| name.strip_prefix("timely:send-"));
        if let (Some(peer), true) = (peer, crate::stop::stop_requested() && crate::stop::checkpointing()) {
            // Process 0 ends the job once a checkpoint completes after a stop: the others
            // see it go.
            eprintln!("riffle: process {peer} ended while this one was stopping at a checkpoint; stopping too");
            std::process::exit(0);
        }
        if let Some(peer) = peer {
            let address = peer.parse::<usize>().ok().and_then(|i| addresses.get(i)).map_or("?", |a| a.as_str());
            let cause = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            eprintln!(
                "riffle: lost process {peer} ({address}): {cause}. It exited or crashed; stopping this process too. \
                 Look at process {peer}'s output for the cause, then restart the job."
            );
            std::process::exit(EXIT_LOST_PEER);
        }
        previous(info);
    }));
}

/// Returns once every worker of every process has answered: a first dataflow in which
/// each worker sends a record to every other. A listener at a peer's address that accepts
/// the connection but is not a Riffle process (or not this job) never answers, and
/// [`connect_deadline`] ends the wait.
pub fn await_every_peer(worker: &mut timely::worker::Worker) {
    use timely::dataflow::operators::{Exchange, Probe, ToStream};
    let peers = worker.peers() as u64;
    let probe = worker.dataflow::<u64, _, _>(|scope| {
        let each_peer: timely::dataflow::Stream<'_, u64, Vec<u64>> = (0..peers).to_stream(scope);
        each_peer.exchange(|w: &u64| *w).probe().0
    });
    while !probe.done() {
        worker.step();
    }
}

/// Exits with a message naming the processes that did not answer if the cluster has not
/// formed within `timeout`.
pub fn connect_deadline(job: Arc<JobState>, addresses: Vec<String>, process: usize, timeout: Duration) {
    std::thread::Builder::new()
        .name("riffle:connect-deadline".into())
        .spawn(move || {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if job.has_started() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let silent: Vec<String> = addresses
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != process)
                .filter(|(_, a)| {
                    resolve(a).is_none_or(|s| TcpStream::connect_timeout(&s, Duration::from_secs(1)).is_err())
                })
                .map(|(i, a)| format!("process {i} at {a}"))
                .collect();
            let who = if silent.is_empty() {
                "every peer's address accepts connections, but the handshake did not finish: is another program, \
                 or another job, listening at one of them?"
                    .to_string()
            } else {
                format!("no answer from {}", silent.join(", "))
            };
            eprintln!(
                "riffle: process {process}: the cluster did not form within {}s ({who}). Check that every process \
                 was started with the same --processes and hostfile, and that the hosts can reach each other.",
                timeout.as_secs()
            );
            std::process::exit(EXIT_NO_CLUSTER);
        })
        .expect("spawn the connect-deadline thread");
}

/// Picks `n` free loopback ports (by binding port 0), for a local cluster.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::Cluster(format!("cannot find free loopback ports: {e}")))?;
    listeners.iter().map(|l| Ok(l.local_addr().map_err(|e| Error::Cluster(e.to_string()))?.port())).collect()
}

/// Starts `opts.processes` copies of this program on loopback and waits for them all.
///
/// # Errors
/// Any process exiting unsuccessfully, naming it and its status.
pub fn launch_local(opts: &RunOptions, graph: &Graph) -> Result<()> {
    let n = opts.processes;
    // The launcher holds the job's view: the processes send it their samples, and it
    // draws the job's progress and serves the web view.
    let view = JobView::new(graph, n, opts.workers);
    let (addr, flag) = opts.ui_addr.as_deref().map_or(("127.0.0.1:0", "the status listener"), |a| (a, "--ui-addr"));
    let server = start(addr, flag, Serves::View(view.clone()))?;
    let status_url = format!("http://127.0.0.1:{}/api/push", server.addr.port());
    let progress = (!opts.no_progress).then(|| crate::progress::ProgressDisplay::start(view.clone()));
    let mut attempt = 0;
    let result = loop {
        match run_local_cluster(opts, &status_url) {
            Err(e) if attempt < opts.restart_attempts && !crate::stop::stop_requested() => {
                attempt += 1;
                tracing::warn!(attempt, of = opts.restart_attempts, "the cluster failed: {e}; restarting");
                eprintln!(
                    "riffle: the cluster failed ({e}); restarting it from the latest checkpoint (attempt {attempt} of {})",
                    opts.restart_attempts
                );
            }
            other => break other,
        }
    };
    drop(progress);
    if opts.ui_addr.is_some() {
        crate::linger(Duration::from_secs(opts.ui_linger));
    }
    drop(server);
    result
}

/// Starts the processes of a local cluster on free loopback ports and waits for them.
fn run_local_cluster(opts: &RunOptions, status_url: &str) -> Result<()> {
    let n = opts.processes;
    let ports = free_ports(n)?;
    let dir = std::env::temp_dir().join(format!("riffle-{}-{}", std::process::id(), ports[0]));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io("local cluster", format!("cannot create {}", dir.display()), e))?;
    let hostfile: PathBuf = dir.join("hosts.txt");
    let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&hostfile, text)
        .map_err(|e| Error::io("local cluster", format!("cannot write {}", hostfile.display()), e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("local cluster", "cannot find this program", e))?;
    let args: Vec<String> = opts.child_args.clone().unwrap_or_else(|| std::env::args().skip(1).collect());
    tracing::info!(processes = n, workers = opts.workers, "starting a local cluster on loopback");
    let mut children: Vec<Child> = Vec::new();
    let mut forwarders = Vec::new();
    for i in 0..n {
        let child = Command::new(&exe)
            .args(&args)
            .env(ENV_PROCESS, i.to_string())
            .env(ENV_HOSTFILE, &hostfile)
            .env(ENV_STATUS_URL, status_url)
            .envs(opts.child_env.iter().cloned())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("local cluster", format!("cannot start process {i} ({})", exe.display()), e));
        match child {
            Ok(mut c) => {
                forwarders.extend(c.stdout.take().map(forward_stdout));
                children.push(c)
            }
            Err(e) => {
                children.iter_mut().for_each(|c| drop(c.kill()));
                return Err(e);
            }
        }
    }
    // A signal to the launcher stops the whole cluster: it is passed on (below), and the
    // processes drain as one would. Without this, the launcher would die alone and leave
    // its processes running (and they die with it regardless: `die_with_launcher`).
    if crate::stop::stop_on_signals().is_err() {
        tracing::debug!("the program handles SIGINT and SIGTERM itself");
    }
    let result = supervise(&mut children);
    // The children have exited, so their pipes close and the forwarders finish.
    forwarders.into_iter().for_each(|f| drop(f.join()));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Whether a line on standard output is timely's chatter while a cluster forms.
fn is_chatter(line: &str) -> bool {
    line.starts_with("awaiting connections (at ")
        || (line.starts_with("worker ") && line.contains("connecting to worker"))
}

/// Runs `f` (timely forming a cluster and starting its workers) with this process's
/// standard output going through a pipe: timely's connection chatter goes to the debug
/// log, everything else on to the real standard output, in order. Standard output is
/// itself again when `f` returns.
pub fn quiet_stdout_while<T>(f: impl FnOnce() -> T) -> T {
    use std::os::fd::AsFd;
    let redirected = (|| {
        let saved = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
        let (reader, writer) = rustix::pipe::pipe().ok()?;
        let reader = std::fs::File::from(reader);
        std::io::stdout().flush().ok()?;
        rustix::stdio::dup2_stdout(&writer).ok()?;
        let real = std::fs::File::from(saved.try_clone().ok()?);
        let forwarder = std::thread::Builder::new()
            .name("riffle:stdout".into())
            .spawn(move || {
                let mut real = std::io::LineWriter::new(real);
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    if is_chatter(&line) {
                        tracing::debug!(target: "riffle_timely::cluster", "{line}");
                    } else {
                        let _ = writeln!(real, "{line}");
                    }
                }
            })
            .ok()?;
        Some((saved, writer, forwarder))
    })();
    let result = f();
    if let Some((saved, writer, forwarder)) = redirected {
        let _ = std::io::stdout().flush();
        // Standard output is the real one again; the pipe's last writer closes, and the
        // forwarder passes on what is left and ends.
        let restored = rustix::stdio::dup2_stdout(&saved);
        drop(writer);
        if restored.is_ok() {
            let _ = forwarder.join();
        }
    }
    result
}

/// Copies a child's standard output to ours, line by line, moving timely's connection
/// chatter ("awaiting connections", "error connecting ... retrying") to the debug log, so
/// that a job's output on standard output is the same in a cluster as on threads.
fn forward_stdout(out: ChildStdout) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if is_chatter(&line) {
                tracing::debug!(target: "riffle_timely::cluster", "{line}");
            } else {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{line}");
            }
        }
    })
}

/// In a process a local cluster's launcher started: when the launcher dies (killed, or
/// told twice to quit now), this process dies too, rather than run on unsupervised.
pub fn die_with_launcher() {
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)) {
        tracing::warn!(error = %e, "cannot tie this process's life to its launcher's");
    }
    if std::os::unix::process::parent_id() == 1 {
        // The launcher died before this process could tie itself to it.
        std::process::exit(1);
    }
}

/// Asks the running `children` to stop as a signal to them would (SIGTERM).
fn pass_on_stop(children: &[Child], status: &[Option<ExitStatus>]) {
    let running: Vec<&Child> = children.iter().zip(status).filter(|(_, s)| s.is_none()).map(|(c, _)| c).collect();
    eprintln!("riffle: stopping the local cluster: SIGTERM to its {} running processes", running.len());
    for c in running {
        let pid = rustix::process::Pid::from_raw(c.id() as i32).expect("a child's pid is positive");
        if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
            tracing::warn!(pid = c.id(), error = %e, "passing the stop on");
        }
    }
}

fn supervise(children: &mut [Child]) -> Result<()> {
    let mut status: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut first_failure: Option<Instant> = None;
    let mut stop_passed_on = false;
    loop {
        if !stop_passed_on && crate::stop::stop_requested() {
            stop_passed_on = true;
            pass_on_stop(children, &status);
        }
        for (i, c) in children.iter_mut().enumerate() {
            if status[i].is_none() {
                if let Ok(Some(s)) = c.try_wait() {
                    if !s.success() && first_failure.is_none() {
                        first_failure = Some(Instant::now());
                    }
                    status[i] = Some(s);
                }
            }
        }
        if status.iter().all(Option::is_some) {
            break;
        }
        if first_failure.is_some_and(|t| t.elapsed() > STRAGGLER_GRACE) {
            for (i, c) in children.iter_mut().enumerate() {
                if status[i].is_none() {
                    eprintln!("riffle: process {i} did not stop after another failed; killing it");
                    let _ = c.kill();
                    status[i] = c.wait().ok();
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed: Vec<String> = status
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_some_and(|s| s.success()))
        .map(|(i, s)| match s {
            Some(s) => format!("process {i} {s}"),
            None => format!("process {i} (status unknown)"),
        })
        .collect();
    if failed.is_empty() { Ok(()) } else { Err(Error::Cluster(format!("the job failed: {}", failed.join("; ")))) }
}

/// Whether this process was started by a local cluster's launcher (`--processes N`
/// without `--process`). A pipeline binary's `main` runs in every process up to
/// [`crate::run`]; one-time setup before it (writing sample input, say) belongs where
/// this is false, in the launcher.
pub fn is_cluster_member() -> bool {
    std::env::var_os(ENV_PROCESS).is_some()
}

/// A path under the temporary directory that the launcher of a local cluster and the
/// processes it starts agree on (it is named after the launcher's process id): where the
/// launcher can put files every process reads. Not created here.
pub fn shared_scratch_dir(name: &str) -> std::path::PathBuf {
    let launcher = if is_cluster_member() { std::os::unix::process::parent_id() } else { std::process::id() };
    std::env::temp_dir().join(format!("riffle-{name}-{launcher}"))
}
