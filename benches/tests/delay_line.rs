//! The delay line (`benches/delay_line.rs`) between two network namespaces made by the
//! test: TCP round trips through it take at least twice its delay, a bulk stream arrives
//! whole and in order, and on SIGTERM it reports what it forwarded and the hold times it
//! gave. Without root (`ip netns add` refused) or without `/dev/net/tun`, the test says
//! so on stderr and stops, as the `--hostfile` tests do without root.
//!
//! Catches: a line that forwards without holding (the round trip of two namespaces on
//! one machine is tens of microseconds), one that drops, reorders or cuts packets (the
//! stream's checksum), and one that hangs or reports nothing at its end.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DELAY_US: u64 = 2_000;
const STREAM_BYTES: usize = 8 << 20;

/// Two namespaces, deleted when dropped.
struct Namespaces([String; 2]);

impl Namespaces {
    /// None where they cannot be made (no root).
    fn make() -> Option<Self> {
        let pid = std::process::id();
        let names = [format!("rdl-test-a{pid}"), format!("rdl-test-b{pid}")];
        for (i, name) in names.iter().enumerate() {
            let out = Command::new("ip").args(["netns", "add", name]).output().ok()?;
            if !out.status.success() {
                eprintln!(
                    "cannot make a network namespace ({}): not tested",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                for made in &names[..i] {
                    Command::new("ip").args(["netns", "del", made]).status().ok();
                }
                return None;
            }
        }
        Some(Namespaces(names))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            Command::new("ip").args(["netns", "del", name]).status().ok();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `f` on a thread inside network namespace `ns`.
#[allow(unsafe_code)] // setns(2)
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let file = File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns takes a namespace file descriptor, open for the call's length.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        f()
    })
}

/// FNV-1a over the bytes: order and content both count.
fn checksum(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[test]
fn holds_each_packet_and_loses_none() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("no /dev/net/tun on this machine: the delay line is not tested");
        return;
    }
    let Some(ns) = Namespaces::make() else { return };
    let [a, b] = &ns.0;
    let mut line = Command::new(env!("CARGO_BIN_EXE_delay_line"))
        .args(["--netns", a, "--netns", b, "--delay-us", &DELAY_US.to_string(), "--max-seconds", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(line.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    assert!(ready.starts_with("ready"), "{ready:?}");
    for (ns, addr) in [(a, "127.1.0.1/24"), (b, "127.1.0.2/24")] {
        ip(&["-n", ns, "addr", "add", addr, "dev", "rdl0"]);
        ip(&["-n", ns, "link", "set", "rdl0", "up", "mtu", "65000"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        for scope in ["all", "default", "rdl0"] {
            let key = format!("net.ipv4.conf.{scope}.route_localnet=1");
            let ok = Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", &key]).status().unwrap();
            assert!(ok.success(), "{key}");
        }
    }

    // B: echoes each ping byte until 'D', then checksums the stream that follows.
    let listener = in_netns(b, || TcpListener::bind("127.1.0.2:7600").unwrap()).join().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut byte = [0u8];
        loop {
            conn.read_exact(&mut byte).unwrap();
            if byte[0] == b'D' {
                break;
            }
            conn.write_all(&byte).unwrap();
        }
        let mut stream = vec![0u8; STREAM_BYTES];
        conn.read_exact(&mut stream).unwrap();
        checksum(&stream, 0xcbf2_9ce4_8422_2325)
    });
    let client = in_netns(a, || {
        let mut conn = TcpStream::connect_timeout(&"127.1.0.2:7600".parse().unwrap(), Duration::from_secs(10)).unwrap();
        conn.set_nodelay(true).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut rtts = Vec::new();
        for _ in 0..20 {
            let start = Instant::now();
            conn.write_all(b"p").unwrap();
            conn.read_exact(&mut [0u8]).unwrap();
            rtts.push(start.elapsed());
        }
        conn.write_all(b"D").unwrap();
        let stream: Vec<u8> = (0..STREAM_BYTES).map(|i| (i * 7 + i / 4099) as u8).collect();
        conn.write_all(&stream).unwrap();
        rtts.sort();
        (rtts, checksum(&stream, 0xcbf2_9ce4_8422_2325))
    });
    let (rtts, sent) = client.join().unwrap();
    assert_eq!(server.join().unwrap(), sent, "the stream arrived changed, cut or out of order");
    let held = Duration::from_micros(2 * DELAY_US);
    assert!(rtts[0] >= held, "a round trip of {:?}, under twice the delay ({held:?})", rtts[0]);
    assert!(rtts[10] < held * 10, "median round trip {:?}: far over twice the delay", rtts[10]);

    // SIGTERM: it reports each direction and exits.
    let term = Command::new("kill").args(["-TERM", &line.id().to_string()]).status().unwrap();
    assert!(term.success());
    let mut report = String::new();
    out.read_to_string(&mut report).unwrap();
    assert!(line.wait().unwrap().success(), "{report}");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 2, "{report}");
    for l in lines {
        let field = |after: &str| -> u64 {
            let rest = &l[l.find(after).unwrap_or_else(|| panic!("{after:?} in {l:?}")) + after.len()..];
            rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
        };
        let packets = field(": ");
        assert!(packets > 20, "{l}");
        assert!(field("held p50 ") >= DELAY_US, "{l}");
    }
}
