//! A delay line between two network namespaces: the latency of `tc qdisc ... netem delay`
//! for kernels without `sch_netem` (this machine's has none).
//!
//! It opens a TUN device (`--dev`, default `rdl0`) in each of two namespaces made with
//! `ip netns add`, and forwards every packet that leaves one into the other, holding each
//! for `--delay-us` first, in both directions, in order. The caller gives the devices
//! their addresses, MTU and any `tbf` rate shaping once this prints `ready`. On SIGTERM or
//! SIGINT, or after `--max-seconds`, it prints per direction the packets, bytes and the
//! hold time each packet really had (p50, p99, max), so a sweep reports the delay it ran
//! at, not the one it asked for, and exits.
//!
//! ```sh
//! ip netns add a; ip netns add b
//! delay_line --netns a --netns b --delay-us 100 &   # prints "ready"
//! ip -n a addr add 127.1.0.1/24 dev rdl0; ip -n a link set rdl0 up mtu 65000   # and b
//! ```
//!
//! Userspace forwarding costs CPU (two system calls per packet); with a large MTU a
//! packet carries up to 64 KB, as a veth's segmentation offload does, so 10 Gbit/s is
//! about 20,000 packets a second each way. Measure the link's ceiling through the same
//! line, as `benches/netns_sweep.sh` does.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;

/// Forwards packets between a TUN device in each of two network namespaces, each held for
/// a fixed delay: added latency without the kernel's netem.
#[derive(Parser)]
struct Args {
    /// The two namespaces (names under /run/netns, as `ip netns add` makes them), each
    /// given once: `--netns a --netns b`.
    #[arg(long, num_args = 1, required = true)]
    netns: Vec<String>,
    /// The TUN device's name in both namespaces.
    #[arg(long, default_value = "rdl0")]
    dev: String,
    /// How long each packet is held, in microseconds, each way (a round trip adds twice).
    #[arg(long)]
    delay_us: u64,
    /// Exit after this long even without a signal (processes started by tests and scripts
    /// stop by themselves).
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
}

/// Hold times are counted in buckets of this many microseconds, up to [`BUCKETS`].
const BUCKET_US: u64 = 5;
const BUCKETS: usize = 4000;
/// The largest packet a TUN device hands over (its MTU is at most 65535).
const MAX_PACKET: usize = 65536;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// What one direction forwarded, shared with the main thread that prints it.
struct Counts {
    name: String,
    packets: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    hold: Vec<AtomicU64>,
}

impl Counts {
    fn new(name: String) -> Self {
        let hold = (0..BUCKETS).map(|_| AtomicU64::new(0)).collect();
        Counts { name, packets: AtomicU64::new(0), bytes: AtomicU64::new(0), dropped: AtomicU64::new(0), hold }
    }

    fn record(&self, bytes: usize, held: Duration) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let bucket = (held.as_micros() as u64 / BUCKET_US).min(BUCKETS as u64 - 1);
        self.hold[bucket as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The hold time below which a share `q` of the packets fell, in microseconds (the
    /// bucket's upper edge).
    fn quantile_us(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.hold.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return (i as u64 + 1) * BUCKET_US;
            }
        }
        BUCKETS as u64 * BUCKET_US
    }

    fn report(&self) -> String {
        format!(
            "{}: {} packets, {} bytes, {} dropped, held p50 {} us, p99 {} us, max {} us",
            self.name,
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.quantile_us(0.5),
            self.quantile_us(0.99),
            self.quantile_us(1.0),
        )
    }
}

/// Opens a TUN device named `name` (no packet-information header) in the calling
/// thread's network namespace.
#[allow(unsafe_code)] // system calls: TUN, setns, timer slack, signals
fn open_tun(name: &str) -> std::io::Result<File> {
    /// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _rest: [u8; 22],
    }
    /// `_IOW('T', 202, int)`.
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::other(format!("device name {name:?}: 1 to 15 bytes")));
    }
    let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: (libc::IFF_TUN | libc::IFF_NO_PI) as _, _rest: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads an ifreq, which `req` is laid out as and outlives the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Moves the calling thread into the network namespace `/run/netns/<name>`.
#[allow(unsafe_code)] // system calls: TUN, setns, timer slack, signals
fn enter_netns(name: &str) -> Result<(), String> {
    let path = format!("/run/netns/{name}");
    let ns = File::open(&path).map_err(|e| format!("{path}: {e} (make it with `ip netns add {name}`)"))?;
    // SAFETY: setns takes a namespace file descriptor, which `ns` is for the call's length.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(format!("entering {path}: {} (needs root)", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Forwards every packet read from `from` into `to` once it has been held for `delay`:
/// a reader thread stamps each packet as it arrives, a writer thread sleeps until its
/// time; buffers go back to the reader for reuse.
#[allow(unsafe_code)] // system calls: TUN, setns, timer slack, signals
fn forward(from: Arc<File>, to: Arc<File>, delay: Duration, counts: Arc<Counts>) {
    let (send, packets) = mpsc::channel::<(Instant, Vec<u8>)>();
    let (give_back, spare) = mpsc::channel::<Vec<u8>>();
    let name = counts.name.clone();
    std::thread::spawn(move || {
        loop {
            let mut buf = spare.try_recv().unwrap_or_default();
            buf.resize(MAX_PACKET, 0);
            match (&*from).read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    if send.send((Instant::now(), buf)).is_err() {
                        return;
                    }
                }
                Err(e) => fail(&format!("{name}: reading: {e}")),
            }
        }
    });
    std::thread::spawn(move || {
        // Wake at the asked time, not up to the default 50 us later.
        // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        for (arrived, buf) in packets {
            let due = arrived + delay;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // A full queue (ENOBUFS) or a device not up yet (EIO) drops the packet, as a
            // link would; anything else is fatal.
            match (&*to).write(&buf) {
                Ok(_) => counts.record(buf.len(), arrived.elapsed()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EIO)) => {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => fail(&format!("{}: writing: {e}", counts.name)),
            }
            if give_back.send(buf).is_err() {
                return;
            }
        }
    });
}

fn fail(why: &str) -> ! {
    eprintln!("delay_line: {why}");
    std::process::exit(1)
}

#[allow(unsafe_code)] // system calls: TUN, setns, timer slack, signals
fn main() {
    let args = Args::parse();
    let [a, b] = &args.netns[..] else { fail("give exactly two namespaces: --netns A --netns B") };
    let open = |ns: &str| {
        enter_netns(ns).unwrap_or_else(|e| fail(&e));
        open_tun(&args.dev).map(Arc::new).unwrap_or_else(|e| fail(&format!("TUN device {} in {ns}: {e}", args.dev)))
    };
    let (tun_a, tun_b) = (open(a), open(b));
    let delay = Duration::from_micros(args.delay_us);
    let a_to_b = Arc::new(Counts::new(format!("{a} -> {b}")));
    let b_to_a = Arc::new(Counts::new(format!("{b} -> {a}")));
    forward(tun_a.clone(), tun_b.clone(), delay, a_to_b.clone());
    forward(tun_b, tun_a, delay, b_to_a.clone());
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    println!("ready: {} in {a} and {b}, {} us each way", args.dev, args.delay_us);
    std::io::stdout().flush().ok();
    let end = Instant::now() + Duration::from_secs(args.max_seconds);
    while !STOP.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("{}\n{}", a_to_b.report(), b_to_a.report());
    std::io::stdout().flush().ok();
    std::process::exit(0)
}
