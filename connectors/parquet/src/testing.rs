//! For tests of pipelines that read and write S3: a real S3 API server on loopback, moto
//! in server mode, started on a free port and killed when the handle drops.
//!
//! `.ci/run` installs it (`pip install 'moto[server]'`); when it is missing, the harness
//! installs it the same way, once per test binary. A test that needs it and still cannot
//! start it fails, saying so: it never passes silently.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::StoreOptions;

/// A running moto server.
pub struct Moto {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
}

const ACCESS_KEY: &str = "riffle-test-key";
const SECRET_KEY: &str = "riffle-test-secret";

/// Installs moto's server with pip if Python cannot import it; once per test binary.
fn ensure_installed() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let importable = |py: &str| {
            Command::new(py)
                .args(["-c", "import moto.server"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if importable("python3") {
            return;
        }
        eprintln!("moto is not installed: pip install 'moto[server]'");
        let installed = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "moto[server]"])
            .status();
        eprintln!("pip install 'moto[server]': {installed:?}");
    });
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Moto {
    /// Starts moto; with `enforce_auth`, it checks credentials (and knows none), so every
    /// request is refused as S3 refuses bad keys.
    pub fn start(enforce_auth: bool) -> Moto {
        ensure_installed();
        let port = free_port();
        let args = ["-H", "127.0.0.1", "-p", &port.to_string()];
        let mut cmds = vec![Command::new("moto_server")];
        let mut py = Command::new("python3");
        py.args(["-m", "moto.server"]);
        cmds.push(py);
        let mut last_err = String::new();
        for mut cmd in cmds {
            cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
            if enforce_auth {
                cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_secs(30) {
                        if let Ok(Some(status)) = child.try_wait() {
                            last_err = format!("{cmd:?} exited with {status}");
                            break;
                        }
                        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                            return Moto { child, port };
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    if last_err.is_empty() {
                        last_err = format!("{cmd:?} did not listen on port {port} within 30 s");
                    }
                }
                Err(e) => last_err = format!("{cmd:?}: {e}"),
            }
        }
        panic!(
            "these tests need moto's S3 server and could not start it ({last_err}); \
             install it with: pip install 'moto[server]'"
        );
    }

    /// Its URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Store options pointing at this server with the test's keys.
    pub fn options(&self) -> StoreOptions {
        StoreOptions::new()
            .s3("endpoint", &self.endpoint())
            .s3("allow_http", "true")
            .s3("access_key_id", ACCESS_KEY)
            .s3("secret_access_key", SECRET_KEY)
            .s3("region", "us-east-1")
    }

    /// The environment that points a child process's S3 client (a pipeline binary) at
    /// this server with the test's keys.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Creates a bucket (moto accepts an unsigned request).
    pub fn create_bucket(&self, bucket: &str) {
        let status = self.raw("PUT", &format!("/{bucket}"), &[]);
        assert!(status.starts_with("HTTP/1.1 200"), "create bucket {bucket}: {status}");
    }

    /// Puts an object directly, bypassing the code under test.
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let status = self.raw("PUT", &format!("/{bucket}/{key}"), body);
        assert!(status.starts_with("HTTP/1.1 200"), "put {key}: {status}");
    }

    /// The keys in a bucket under a prefix (unsigned list request), sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let body = self.raw_body("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"));
        let mut keys: Vec<String> =
            body.split("<Key>").skip(1).filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string())).collect();
        keys.sort();
        keys
    }

    fn raw(&self, method: &str, path: &str, body: &[u8]) -> String {
        let resp = self.request(method, path, body);
        resp.lines().next().unwrap_or_default().to_string()
    }

    fn raw_body(&self, method: &str, path: &str) -> String {
        let resp = self.request(method, path, &[]);
        resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
