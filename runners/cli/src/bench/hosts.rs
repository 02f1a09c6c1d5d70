//! `riffle bench shuffle --hostfile FILE --process I`: the sweep on the user's own hosts.
//!
//! Every host runs the same command with its own index. Process 0 (the leader) listens
//! on its hostfile line; every other process connects to it and keeps that one control
//! connection (lines of JSON) for the whole sweep. The leader alone plans; for each
//! configuration it asks every process for a free port on its host, hands out the
//! addresses, and collects what each process measured:
//!
//! ```text
//! leader (process 0)                        process i (1..n)
//!   Prepare -------------------------------->  picks a free port on its host
//!           <--------------------------------  Port(p)
//!   Go { spec, addresses } ----------------->  runs `riffle bench member --process i`
//!           <--------------------------------  Measured(m) | Failed(why)
//!   ... every configuration, the TCP ceiling (TcpSink / TcpSend), then Finish
//! ```
//!
//! So the hosts cannot disagree on the order of the configurations or on their ports:
//! the plan exists in one process. Ports are picked per configuration rather than fixed
//! (hostfile port + k), so a port that another program holds on one host cannot stall
//! the sweep; only process 0's line names a port that must be free.
//!
//! A missing or dead host is an error naming it, never a hang: joining has a deadline
//! (`--host-timeout`), both ends send a heartbeat every second and treat a peer silent
//! for `--host-timeout` as lost, a configuration's member processes are killed as soon
//! as any process reports a failure, and each member run has `--run-timeout`.
//!
//! Times: each process reports when its workers started and when its job ended on its
//! own clock; the leader moves them onto its clock with an offset measured over the
//! control connection at join (the NTP way: the sample with the shortest round trip), so
//! a run is timed from the last process's start to the last one's end, as on loopback,
//! without trusting the hosts' clocks to agree.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::member::{Measure, Spec};

/// What the leader tells a process.
#[derive(Debug, Serialize, Deserialize)]
enum ToMember {
    /// A heartbeat.
    Alive,
    /// Reply with this host's clock (to measure the offset).
    Clock,
    /// Pick a free port on this host for the next configuration.
    Prepare,
    /// Run one configuration as this process, with these addresses.
    Go { spec: Box<Spec>, addresses: Vec<String> },
    /// Another process failed: stop this configuration's member.
    Abort,
    /// Open a TCP sink on this host, reply with its port, drain one connection.
    TcpSink,
    /// Write `bytes` to the sink at `address`, reply with MB/s.
    TcpSend { address: String, bytes: u64 },
    /// The sweep is over: exit.
    Finish,
}

/// What a process tells the leader.
#[derive(Debug, Serialize, Deserialize)]
enum ToLeader {
    /// A heartbeat.
    Alive,
    /// The first message: who this is, and which binary it runs.
    Joined { process: usize, version: String },
    /// This host's clock, seconds since the Unix epoch.
    Clock(f64),
    /// A free port on this host.
    Port(u16),
    /// What this process's member measured.
    Measured(Box<Measure>),
    /// This process's member failed, and why.
    Failed(String),
    /// MB/s written into the leader's TCP sink.
    Tcp(f64),
}

/// One direction of the TCP ceiling between two hosts.
#[derive(Clone, Debug, Serialize)]
pub struct TcpPair {
    /// The writing process.
    pub from: usize,
    /// The reading process.
    pub to: usize,
    /// MB/s (10^6), median of 3.
    pub mb_per_s: f64,
}

/// How long the hosts wait for one another.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// To join, and the longest a host may stay silent.
    pub host: Duration,
    /// The longest one member run may take.
    pub run: Duration,
}

/// The hostfile's lines, checked; the number of processes is the number of lines.
pub fn read_hosts(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read hostfile {}", path.display()))?;
    let n = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).count();
    let hosts = riffle_timely::cluster::read_hostfile(path, n)?;
    if hosts.len() < 2 {
        bail!("hostfile {} names {} host(s): --hostfile needs at least two lines, one per process", path.display(), n);
    }
    Ok(hosts)
}

/// The host part of a `host:port` line.
fn host_of(line: &str) -> &str {
    line.rsplit_once(':').map_or(line, |(h, _)| h)
}

/// A port free on `host` now (the member binds it a moment later).
fn free_port_on(host: &str) -> anyhow::Result<u16> {
    let l = TcpListener::bind(format!("{host}:0")).with_context(|| format!("binding a port on this host ({host})"))?;
    Ok(l.local_addr()?.port())
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The writing half of a control connection, shared with its heartbeat.
type Writer = Arc<Mutex<TcpStream>>;

fn send<T: Serialize>(w: &Writer, msg: &T) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(msg)?;
    line.push('\n');
    let mut stream = w.lock().map_err(|_| anyhow::anyhow!("a control connection's lock was poisoned"))?;
    stream.write_all(line.as_bytes())?;
    Ok(())
}

/// Sends a heartbeat every second until the connection fails.
fn heartbeat<T: Serialize + Send + 'static>(w: Writer, alive: T) {
    std::thread::spawn(move || {
        while send(&w, &alive).is_ok() {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

/// A message from process `.0`, or why none will come.
type Incoming<T> = (usize, Result<T, String>);

/// Reads `from`'s messages into `tx`, leaving out heartbeats; a closed connection or a
/// silence longer than `silence` ends it with an error.
fn reader<T: DeserializeOwned + Send + 'static>(
    mut lines: BufReader<TcpStream>,
    from: usize,
    silence: Duration,
    tx: Sender<Incoming<T>>,
    is_alive: fn(&T) -> bool,
) {
    std::thread::spawn(move || {
        if let Err(e) = lines.get_ref().set_read_timeout(Some(silence)) {
            let _ = tx.send((from, Err(format!("cannot set a read timeout: {e}"))));
            return;
        }
        let mut line = String::new();
        loop {
            line.clear();
            let got = match lines.read_line(&mut line) {
                Ok(0) => Err("closed its control connection (it exited or its host went away)".to_string()),
                Ok(_) => serde_json::from_str::<T>(&line).map_err(|e| format!("sent {line:?}, not understood: {e}")),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    Err(format!(
                        "sent nothing for {} s (--host-timeout): its host is down or unreachable",
                        silence.as_secs()
                    ))
                }
                Err(e) => Err(format!("control connection failed: {e}")),
            };
            let end = got.is_err();
            if got.as_ref().is_ok_and(is_alive) {
                continue;
            }
            if tx.send((from, got)).is_err() || end {
                return;
            }
        }
    });
}

/// Runs `riffle bench member` as `process` of `spec`'s cluster and waits for it, killing
/// it when `cancel` is set or after `timeout`.
fn run_member(
    spec: &Spec,
    process: usize,
    hostfile: &Path,
    cancel: &AtomicBool,
    timeout: Duration,
) -> Result<Measure, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "member", "--spec", &json, "--process", &process.to_string(), "--hostfile"])
        .arg(hostfile)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start a member process: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let output = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for the member process: {e}")),
        }
        let why = if cancel.load(Ordering::Relaxed) {
            Some("stopped because another process failed".to_string())
        } else if Instant::now() > deadline {
            Some(format!("its member ran longer than {} s (--run-timeout)", timeout.as_secs()))
        } else {
            None
        };
        if let Some(why) = why {
            let _ = child.kill();
            let _ = child.wait();
            return Err(why);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = output.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("its member process failed ({status}); its stderr is on that host"));
    }
    let line = text.lines().rev().find(|l| l.starts_with('{')).ok_or("its member process printed no result")?;
    serde_json::from_str(line).map_err(|e| format!("its member's result is not understood: {e}"))
}

/// The longest one write or read of the TCP baseline may block.
const STALL: Duration = Duration::from_secs(60);

/// Has the member killed when the thread that started it goes, as when this process is
/// killed: a member left behind would hold its ports and wait on peers that are gone.
/// (The thread that starts a member waits for it, so it outlives it otherwise.)
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec; prctl is async-signal-safe and only
    // sets an attribute of that child.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Elsewhere a member outlives a killed parent; it stops when its peers go.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

/// Writes `bytes` to the sink at `address` and waits for its acknowledgement: MB/s.
pub fn tcp_send(address: &str, bytes: u64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(address) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e).with_context(|| format!("connecting to the TCP sink at {address}")),
        }
    };
    stream.set_nodelay(true)?;
    // A host that freezes (no reset, no more acknowledgements) fails the write instead
    // of blocking it forever.
    stream.set_write_timeout(Some(STALL))?;
    stream.set_read_timeout(Some(STALL))?;
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).context("waiting for the TCP sink's acknowledgement")?;
    Ok(bytes as f64 / started.elapsed().as_secs_f64() / 1e6)
}

/// Accepts one connection on `listener` (within `timeout`), reads it to the end (each
/// read within `timeout`) and acknowledges.
pub fn drain(listener: &TcpListener, timeout: Duration) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).context("waiting for the TCP baseline's writer"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 1 << 20];
    while stream.read(&mut buf)? > 0 {}
    stream.write_all(&[1])?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Process 0: plans, hands out the configurations, collects the measures.
pub struct Leader {
    hosts: Vec<String>,
    /// Process `i`'s control connection at `i - 1`.
    links: Vec<Writer>,
    rx: Receiver<Incoming<ToLeader>>,
    tx: Sender<Incoming<ToLeader>>,
    /// Process `i`'s clock minus this one's, seconds (0 for this one).
    offsets: Vec<f64>,
    timeouts: Timeouts,
    dir: PathBuf,
}

impl Leader {
    /// Listens on line 0 of the hostfile until every other process has joined.
    ///
    /// # Errors
    /// A process that does not join within `timeouts.host`, named with its host; a
    /// process that runs another version of `riffle`.
    pub fn start(hosts: Vec<String>, timeouts: Timeouts, dir: PathBuf) -> anyhow::Result<Leader> {
        let n = hosts.len();
        let listener = TcpListener::bind(&hosts[0]).with_context(|| {
            format!(
                "process 0 listens on {} (line 1 of the hostfile): is it this host's address, and the port free?",
                hosts[0]
            )
        })?;
        listener.set_nonblocking(true)?;
        let (tx, rx) = channel();
        let mut links: Vec<Option<Writer>> = vec![None; n - 1];
        let deadline = Instant::now() + timeouts.host;
        while links.iter().any(Option::is_none) {
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<String> = (1..n)
                            .filter(|i| links[i - 1].is_none())
                            .map(|i| format!("process {i} ({})", hosts[i]))
                            .collect();
                        bail!(
                            "{} did not join within {} s (--host-timeout): run `riffle bench shuffle --hostfile FILE \
                             --process I` on each, with the same hostfile, and check that it can reach {}",
                            missing.join(", "),
                            timeouts.host.as_secs(),
                            hosts[0]
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => return Err(e).context("accepting a process's control connection"),
            };
            stream.set_nonblocking(false)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(timeouts.host))?;
            let mut lines = BufReader::new(stream.try_clone()?);
            let mut first = String::new();
            lines.read_line(&mut first).with_context(|| format!("reading the first message of {peer}"))?;
            let Ok(ToLeader::Joined { process, version }) = serde_json::from_str(&first) else {
                bail!("{peer} connected to process 0's port but sent {first:?}: is another program using it?");
            };
            if version != env!("CARGO_PKG_VERSION") {
                bail!(
                    "process {process} runs riffle {version}, process 0 runs {}: run the same build on every host",
                    env!("CARGO_PKG_VERSION")
                );
            }
            if process == 0 || process >= n || links[process - 1].is_some() {
                bail!(
                    "{peer} joined as process {process}: each of 1..{n} must join once (check --process on each host)"
                );
            }
            let writer: Writer = Arc::new(Mutex::new(stream));
            reader(lines, process, timeouts.host, tx.clone(), |m| matches!(m, ToLeader::Alive));
            heartbeat(writer.clone(), ToMember::Alive);
            links[process - 1] = Some(writer);
            println!("process {process} joined from {peer}");
        }
        let links = links.into_iter().flatten().collect();
        let mut leader = Leader { hosts, links, rx, tx, offsets: vec![0.0; n], timeouts, dir };
        for i in 1..n {
            leader.offsets[i] = leader.clock_offset(i)?;
        }
        Ok(leader)
    }

    /// The hostfile's lines.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The next message from `from`; any other process's error or message is an error.
    fn expect(&self, from: usize) -> anyhow::Result<ToLeader> {
        let wait = self.timeouts.run + self.timeouts.host;
        match self.rx.recv_timeout(wait) {
            Ok((i, Ok(m))) if i == from => Ok(m),
            Ok((i, Ok(m))) => bail!("process {i} ({}) sent {m:?} out of turn", self.hosts[i]),
            Ok((i, Err(e))) => bail!("process {i} ({}) {e}", self.hosts[i]),
            Err(_) => bail!("process {from} ({}) did not answer within {} s", self.hosts[from], wait.as_secs()),
        }
    }

    fn clock_offset(&self, i: usize) -> anyhow::Result<f64> {
        let mut best = (f64::INFINITY, 0.0);
        for _ in 0..5 {
            let t0 = now_unix();
            send(&self.links[i - 1], &ToMember::Clock)?;
            let ToLeader::Clock(theirs) = self.expect(i)? else { bail!("process {i} did not answer the clock") };
            let t1 = now_unix();
            if t1 - t0 < best.0 {
                best = (t1 - t0, theirs - (t0 + t1) / 2.0);
            }
        }
        Ok(best.1)
    }

    fn broadcast(&self, msg: &ToMember) -> anyhow::Result<()> {
        for (i, w) in self.links.iter().enumerate() {
            send(w, msg).with_context(|| format!("process {} ({}) is gone", i + 1, self.hosts[i + 1]))?;
        }
        Ok(())
    }

    /// Runs `spec` across every host: one member process per host, each measured; the
    /// times on this process's clock.
    pub fn measure(&self, spec: &Spec) -> anyhow::Result<Vec<Measure>> {
        let n = self.hosts.len();
        self.broadcast(&ToMember::Prepare)?;
        let mut addresses = vec![format!("{}:{}", host_of(&self.hosts[0]), free_port_on(host_of(&self.hosts[0]))?)];
        for i in 1..n {
            let ToLeader::Port(p) = self.expect(i)? else { bail!("process {i} did not answer with a port") };
            addresses.push(format!("{}:{p}", host_of(&self.hosts[i])));
        }
        self.broadcast(&ToMember::Go { spec: Box::new(spec.clone()), addresses: addresses.clone() })?;
        let hostfile = self.dir.join("members.txt");
        std::fs::write(&hostfile, addresses.iter().map(|a| format!("{a}\n")).collect::<String>())?;
        let cancel = Arc::new(AtomicBool::new(false));
        let own: JoinHandle<()> = {
            let (spec, tx, cancel, run) = (spec.clone(), self.tx.clone(), cancel.clone(), self.timeouts.run);
            std::thread::spawn(move || {
                let got = run_member(&spec, 0, &hostfile, &cancel, run);
                let _ = tx.send((0, Ok(got.map_or_else(ToLeader::Failed, |m| ToLeader::Measured(Box::new(m))))));
            })
        };
        let mut parts: Vec<Option<Measure>> = vec![None; n];
        let mut failure = None;
        while failure.is_none() && parts.iter().any(Option::is_none) {
            let wait = self.timeouts.run + self.timeouts.host;
            failure = match self.rx.recv_timeout(wait) {
                Ok((i, Ok(ToLeader::Measured(m)))) if parts[i].is_none() => {
                    let mut m = *m;
                    m.started_unix_s -= self.offsets[i];
                    m.finished_unix_s -= self.offsets[i];
                    parts[i] = Some(m);
                    None
                }
                Ok((i, Ok(ToLeader::Failed(why)))) => Some(format!("process {i} ({}): {why}", self.hosts[i])),
                Ok((i, Ok(m))) => Some(format!("process {i} ({}) sent {m:?} out of turn", self.hosts[i])),
                Ok((i, Err(e))) => Some(format!("process {i} ({}) {e}", self.hosts[i])),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    Some(format!("no process answered within {} s", wait.as_secs()))
                }
            };
        }
        if let Some(why) = failure {
            cancel.store(true, Ordering::Relaxed);
            let _ = self.broadcast(&ToMember::Abort);
            let _ = own.join();
            bail!("{spec:?} failed on the hosts: {why}");
        }
        let _ = own.join();
        Ok(parts.into_iter().flatten().collect())
    }

    /// The TCP ceiling between process 0 and every other host, both ways, `bytes` per
    /// measure, median of 3.
    pub fn tcp(&self, bytes: u64) -> anyhow::Result<Vec<TcpPair>> {
        let mut pairs = Vec::new();
        let host0 = host_of(&self.hosts[0]);
        for j in 1..self.hosts.len() {
            let mut out = Vec::new();
            for _ in 0..3 {
                send(&self.links[j - 1], &ToMember::TcpSink)?;
                let ToLeader::Port(p) = self.expect(j)? else { bail!("process {j} did not open a TCP sink") };
                let address = format!("{}:{p}", host_of(&self.hosts[j]));
                let mb = tcp_send(&address, bytes)
                    .with_context(|| format!("measuring TCP from process 0 to process {j} ({address})"))?;
                out.push(mb);
            }
            pairs.push(TcpPair { from: 0, to: j, mb_per_s: median(out) });
            let mut back = Vec::new();
            for _ in 0..3 {
                let listener = TcpListener::bind(format!("{host0}:0"))?;
                let address = format!("{host0}:{}", listener.local_addr()?.port());
                let timeout = self.timeouts.host;
                let sink = std::thread::spawn(move || drain(&listener, timeout));
                send(&self.links[j - 1], &ToMember::TcpSend { address, bytes })?;
                let ToLeader::Tcp(mb) = self.expect(j)? else { bail!("process {j} did not measure TCP") };
                sink.join()
                    .map_err(|_| anyhow::anyhow!("the TCP sink thread panicked"))?
                    .with_context(|| format!("measuring TCP from process {j} to process 0"))?;
                back.push(mb);
            }
            pairs.push(TcpPair { from: j, to: 0, mb_per_s: median(back) });
        }
        Ok(pairs)
    }

    /// Tells every process the sweep is over.
    pub fn finish(&self) {
        let _ = self.broadcast(&ToMember::Finish);
    }
}

/// Process `process` (not 0): joins process 0 and does what it says until the sweep
/// ends.
///
/// # Errors
/// Process 0 not answering within `timeouts.host`, or lost; a member that cannot run.
pub fn follow(hosts: &[String], process: usize, timeouts: Timeouts, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeouts.host;
    let stream = loop {
        let addr = hosts[0].to_socket_addrs().ok().and_then(|mut a| a.next());
        match addr.map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1))) {
            Some(Ok(s)) => break s,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            _ => bail!(
                "process 0 at {} did not answer within {} s (--host-timeout): start `riffle bench shuffle --hostfile \
                 FILE --process 0` on that host, and check the address and any firewall between the hosts",
                hosts[0],
                timeouts.host.as_secs()
            ),
        }
    };
    stream.set_nodelay(true)?;
    let writer: Writer = Arc::new(Mutex::new(stream.try_clone()?));
    send(&writer, &ToLeader::Joined { process, version: env!("CARGO_PKG_VERSION").to_string() })?;
    heartbeat(writer.clone(), ToLeader::Alive);
    let (tx, rx) = channel();
    reader(BufReader::new(stream), 0, timeouts.host, tx, |m| matches!(m, ToMember::Alive));
    let leader_gone = |e: String| anyhow::anyhow!("process 0 ({}) {e}", hosts[0]);
    let me = host_of(&hosts[process]);
    println!("process {process}: joined process 0 at {}", hosts[0]);
    let hostfile = dir.join("members.txt");
    loop {
        let msg = match rx.recv() {
            Ok((_, Ok(m))) => m,
            Ok((_, Err(e))) => return Err(leader_gone(e)),
            Err(_) => bail!("process 0's reader stopped"),
        };
        match msg {
            ToMember::Clock => send(&writer, &ToLeader::Clock(now_unix()))?,
            ToMember::Prepare => send(&writer, &ToLeader::Port(free_port_on(me)?))?,
            ToMember::Go { spec, addresses } => {
                std::fs::write(&hostfile, addresses.iter().map(|a| format!("{a}\n")).collect::<String>())?;
                let cancel = Arc::new(AtomicBool::new(false));
                let run = {
                    let (spec, hostfile, cancel, t) = (spec.clone(), hostfile.clone(), cancel.clone(), timeouts.run);
                    std::thread::spawn(move || run_member(&spec, process, &hostfile, &cancel, t))
                };
                // Wait for the member, listening to process 0 meanwhile: an abort or a
                // lost leader stops it.
                let mut lost = None;
                while !run.is_finished() {
                    match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok((_, Ok(ToMember::Abort))) => cancel.store(true, Ordering::Relaxed),
                        Ok((_, Ok(other))) => lost = Some(format!("sent {other:?} during a run")),
                        Ok((_, Err(e))) => lost = Some(e),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => lost = Some("reader stopped".into()),
                    }
                    if lost.is_some() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                let got = run.join().map_err(|_| anyhow::anyhow!("the member thread panicked"))?;
                if let Some(e) = lost {
                    return Err(leader_gone(e));
                }
                match got {
                    Ok(m) => {
                        println!(
                            "process {process}: {:?} {} B x{} workers: {:.2} s",
                            spec.op, spec.size, spec.workers, m.elapsed_s
                        );
                        send(&writer, &ToLeader::Measured(Box::new(m)))?;
                    }
                    Err(why) => send(&writer, &ToLeader::Failed(why))?,
                }
            }
            ToMember::TcpSink => {
                let listener = TcpListener::bind(format!("{me}:0"))?;
                send(&writer, &ToLeader::Port(listener.local_addr()?.port()))?;
                drain(&listener, timeouts.host)?;
            }
            ToMember::TcpSend { address, bytes } => send(&writer, &ToLeader::Tcp(tcp_send(&address, bytes)?))?,
            ToMember::Finish => {
                println!("process {process}: the sweep is over (process 0 has the report)");
                return Ok(());
            }
            ToMember::Alive | ToMember::Abort => {}
        }
    }
}
