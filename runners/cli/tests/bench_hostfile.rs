//! `riffle bench shuffle --hostfile FILE --process I`: each host runs the command, process
//! 0 plans and reports. Here the two hosts are two network namespaces joined by a veth
//! pair (127.1.0.1 and 127.1.0.2, loopback-range addresses, so nothing leaves the
//! machine), made and deleted by the test; where namespaces cannot be made (no root),
//! the test says so on stderr and runs both processes on 127.0.0.1 instead, which still
//! proves the hostfile path end to end but not the crossing of a network device.
//!
//! Catches: hosts that disagree on the plan or ports (the run would hang or fail), rows
//! without every record, a TCP ceiling not measured between the hosts, and a missing or
//! dead host that hangs the sweep instead of failing with its name.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` to its end within `limit`, killing it past that: its status, stdout, stderr.
fn bounded(cmd: &mut Command, limit: Duration) -> (ExitStatus, String, String) {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait(child, limit, &format!("{cmd:?}"))
}

fn wait(mut child: Child, limit: Duration, what: &str) -> (ExitStatus, String, String) {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).ok();
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "{what} ran longer than {limit:?}\nstdout:\n{}\nstderr:\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Two network namespaces joined by a veth pair, deleted (with the pair) on drop.
struct Netns {
    names: Vec<String>,
}

impl Netns {
    /// `ns[0]` has 127.1.0.1/24 and `ns[1]` 127.1.0.2/24 on the two ends of the pair.
    /// `RIFFLE_TEST_NO_NETNS=1` takes the fallback on purpose (to check it as root).
    fn make(tag: &str) -> Result<Netns, String> {
        if std::env::var_os("RIFFLE_TEST_NO_NETNS").is_some() {
            return Err("RIFFLE_TEST_NO_NETNS is set".into());
        }
        let ip = |args: &[&str]| {
            let (status, _, err) = bounded(Command::new("ip").args(args), Duration::from_secs(20));
            if status.success() { Ok(()) } else { Err(format!("`ip {}` failed: {}", args.join(" "), err.trim())) }
        };
        let pid = std::process::id();
        let mut ns = Netns { names: Vec::new() };
        let (a, b) = (format!("riffle{tag}a{pid}"), format!("riffle{tag}b{pid}"));
        for name in [&a, &b] {
            ip(&["netns", "add", name])?;
            ns.names.push(name.clone());
        }
        // Made inside the namespaces, so deleting them deletes the pair too.
        let (va, vb) = (format!("rv{tag}a{pid}"), format!("rv{tag}b{pid}"));
        ip(&["link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b])?;
        for (name, dev, addr) in [(&a, &va, "127.1.0.1/24"), (&b, &vb, "127.1.0.2/24")] {
            ip(&["-n", name, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", name, "link", "set", dev, "up"])?;
            // lo must be up for a process to reach its own address, but its 127.0.0.0/8
            // would make every 127.x local: keep only 127.0.0.1 there.
            ip(&["-n", name, "link", "set", "lo", "up"])?;
            ip(&["-n", name, "addr", "del", "127.0.0.1/8", "dev", "lo"])?;
            ip(&["-n", name, "addr", "add", "127.0.0.1/32", "dev", "lo"])?;
            // 127.x on a device other than lo is dropped unless route_localnet is set.
            for scope in ["all", "default", dev.as_str()] {
                ip(&["netns", "exec", name, "sysctl", "-qw", &format!("net.ipv4.conf.{scope}.route_localnet=1")])?;
            }
        }
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = bounded(Command::new("ip").args(["netns", "del", name]), Duration::from_secs(20));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `riffle bench shuffle --hostfile` with the tiny sweep's options, as process `i`,
/// inside namespace `ns` if there is one.
fn shuffle(ns: Option<&str>, hostfile: &Path, i: usize, json: &Path, extra: &[&str]) -> Command {
    let exe = env!("CARGO_BIN_EXE_riffle");
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, exe]);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(["bench", "shuffle", "--sizes", "72", "--ops", "exchange", "--workers", "1", "--skew"])
        .args(["--key-count", "1000", "--reps", "1", "--run-timeout", "120"])
        .args(extra)
        .args(["--process", &i.to_string(), "--hostfile"])
        .arg(hostfile)
        .arg("--json")
        .arg(json)
        .arg("--plot")
        .arg(json.with_extension("svg"));
    cmd
}

/// The tiny sweep's size, TCP measure and patience.
const TINY: &[&str] = &["--mib", "1", "--min-run", "0.05", "--tcp-mib", "8", "--host-timeout", "30"];

#[test]
fn two_hosts_run_every_configuration_and_measure_tcp_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts.txt");
    let netns = Netns::make("s");
    let (namespaces, hosts) = match &netns {
        Ok(ns) => {
            (Some((ns.names[0].clone(), ns.names[1].clone())), ["127.1.0.1:7301", "127.1.0.2:7301"].map(String::from))
        }
        Err(e) => {
            eprintln!(
                "\n*** bench_hostfile: cannot make network namespaces ({e}).\n*** Not root? FALLING BACK to two \
                 processes on 127.0.0.1: this proves --hostfile end to end but crosses no network device.\n"
            );
            (None, [format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port())])
        }
    };
    std::fs::write(&hostfile, format!("{}\n{}\n", hosts[0], hosts[1])).unwrap();
    let json = dir.path().join("r.json");
    let (ns0, ns1) = match &namespaces {
        Some((a, b)) => (Some(a.as_str()), Some(b.as_str())),
        None => (None, None),
    };
    // Process 1 first: it retries until process 0 listens.
    let p1 = shuffle(ns1, &hostfile, 1, &dir.path().join("unused.json"), TINY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (s0, out0, err0) = bounded(&mut shuffle(ns0, &hostfile, 0, &json, TINY), Duration::from_secs(300));
    let (s1, out1, err1) = wait(p1, Duration::from_secs(30), "process 1");
    let mode = if namespaces.is_some() { "two network namespaces" } else { "127.0.0.1 (fallback)" };
    eprintln!("process 0, across {mode}:\n{out0}");
    assert!(s0.success(), "process 0 failed\n{out0}\n{err0}\nprocess 1:\n{out1}\n{err1}");
    assert!(s1.success(), "process 1 failed\n{out1}\n{err1}");
    assert!(out0.contains("TCP ceiling between the hosts"), "{out0}");
    assert!(out1.contains("the sweep is over"), "{out1}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["hosts"], serde_json::json!(hosts), "the report names the hosts");
    let svg = std::fs::read_to_string(json.with_extension("svg")).unwrap();
    assert!(svg.contains("TCP ceiling between the hosts"), "the plot says where its ceiling was measured");
    // The ceiling is measured between the hosts, both ways, and is the slower way.
    let pairs = report["tcp_pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 2, "{pairs:?}");
    let ways: Vec<(u64, u64)> =
        pairs.iter().map(|p| (p["from"].as_u64().unwrap(), p["to"].as_u64().unwrap())).collect();
    assert_eq!(ways, [(0, 1), (1, 0)]);
    let slowest = pairs.iter().map(|p| p["mb_per_s"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
    assert!(slowest > 0.0);
    assert_eq!(report["tcp_mb_per_s"].as_f64().unwrap(), slowest);
    // One baseline and two exchanges (pod, serde), all across the two hosts, every
    // record delivered.
    let rows = report["rows"].as_array().unwrap();
    let baselines = report["baselines"].as_array().unwrap();
    assert_eq!((rows.len(), baselines.len()), (2, 1), "{report:#}");
    for r in rows.iter().chain(baselines) {
        assert_eq!(r["spec"]["processes"], 2, "{r}");
        assert_eq!(r["delivered"], r["spec"]["records"], "every record arrived: {r}");
        assert!(r["records_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["cpu_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
    }
    for r in rows {
        assert!(r["vs_tcp"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["vs_timely"].as_f64().unwrap() > 0.0, "{r}");
    }
    drop(netns);
}

#[test]
fn a_missing_host_is_an_error_naming_it_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let json = dir.path().join("r.json");
    for (i, expected) in [(0, "process 1 (127.0.0.1:"), (1, "process 0 at 127.0.0.1:")] {
        let started = Instant::now();
        let mut cmd = shuffle(None, &hostfile, i, &json, &["--host-timeout", "2"]);
        let (status, out, err) = bounded(&mut cmd, Duration::from_secs(60));
        assert!(!status.success(), "{out}");
        assert!(err.contains(expected) && err.contains("2 s"), "process {i}:\n{err}");
        assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    }
}

#[test]
fn a_host_that_dies_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let json = dir.path().join("r.json");
    // Process 1 lives 2 s, process 0 measures TCP for longer than that: process 1 dies
    // while process 0 waits on it.
    let mut p1 = shuffle(None, &hostfile, 1, &json, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut p0 = shuffle(None, &hostfile, 0, &json, &["--tcp-mib", "100000", "--host-timeout", "10"]);
    let started = Instant::now();
    let p0 = p0.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    p1.kill().unwrap();
    p1.wait().unwrap();
    let (status, out, err) = wait(p0, Duration::from_secs(60), "process 0");
    assert!(!status.success(), "{out}");
    assert!(err.contains("process 1"), "{out}\n{err}");
    assert!(started.elapsed() < Duration::from_secs(45), "took {:?}", started.elapsed());
}

/// The processes whose command line mentions `needle` (a member's hostfile lives in
/// `riffle-bench-<pid of its shuffle process>`).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[test]
#[cfg(target_os = "linux")]
fn a_host_that_dies_during_a_run_stops_every_member_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let json = dir.path().join("r.json");
    // Runs of at least 60 s: process 1 is killed in the middle of the first one.
    let long = ["--tcp-mib", "1", "--host-timeout", "10", "--min-run", "60", "--mib", "16"];
    let mut p1 =
        shuffle(None, &hostfile, 1, &json, &long).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let p1_dir = format!("riffle-bench-{}", p1.id());
    let p0 = shuffle(None, &hostfile, 0, &json, &long)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let p0_dir = format!("riffle-bench-{}", p0.id());
    // Wait (bounded) until process 1's member runs, then kill process 1 alone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_mentioning(&p1_dir).is_empty() {
        assert!(Instant::now() < deadline, "process 1 started no member within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    p1.kill().unwrap();
    p1.wait().unwrap();
    let (status, out, err) = wait(p0, Duration::from_secs(60), "process 0");
    assert!(!status.success(), "{out}");
    assert!(err.contains("process 1 (127.0.0.1:"), "{out}\n{err}");
    assert!(killed.elapsed() < Duration::from_secs(30), "process 0 took {:?} to fail", killed.elapsed());
    // No member of either side is left behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = [&p1_dir, &p0_dir].iter().flat_map(|d| processes_mentioning(d)).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "members left running: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
