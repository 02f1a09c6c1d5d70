//! A Prometheus server can scrape a running job.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;

fn scrape(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn metrics_are_served_while_the_job_runs() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let opts = RunOptions { workers: 2, metrics_addr: Some(addr.clone()), ..RunOptions::default() };
    let job = std::thread::spawn(move || {
        let p = Pipeline::new();
        let slow = p
            .create((0..60).collect::<Vec<u32>>())
            .map(|x| {
                std::thread::sleep(Duration::from_millis(25));
                x
            })
            .named("Slow");
        riffle_connectors::memory::discard(&slow);
        riffle_timely::run(&p, &opts).map(|r| r.elapsed)
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    while Instant::now() < deadline && seen.is_none() {
        if let Some(body) = scrape(&addr, "/metrics") {
            if body.contains("riffle_step_elements_in_total{step=\"Slow\"") {
                seen = Some(body);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = seen.expect("a scrape during the job shows the Slow step");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    // OpenMetrics text, as prometheus-client writes it: the family is named without `_total`.
    assert!(body.contains("# TYPE riffle_step_elements_in counter"), "{body}");
    assert!(body.contains("riffle_process_up{process=\"0\"} 1"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    assert!(body.contains("worker=\"1\""), "{body}");
    let other = scrape(&addr, "/other");
    assert!(other.as_ref().is_some_and(|b| b.starts_with("HTTP/1.1 404")), "{other:?}");
    job.join().unwrap().expect("the job succeeds");
    assert!(scrape(&addr, "/metrics").is_none(), "the server stops with the job");
}

#[test]
fn a_bad_metrics_address_is_a_clear_error() {
    let p = Pipeline::new();
    riffle_connectors::memory::discard(&p.create(vec![1]));
    let opts = RunOptions { metrics_addr: Some("nonsense".into()), ..RunOptions::default() };
    let err = riffle_timely::run(&p, &opts).unwrap_err().to_string();
    assert!(err.contains("--metrics-addr \"nonsense\" is not host:port"), "{err}");
}

#[test]
fn a_job_that_checkpoints_serves_its_last_checkpoints_figures() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        workers: 2,
        metrics_addr: Some(addr.clone()),
        checkpoint_dir: Some(dir.path().display().to_string()),
        checkpoint_interval: Duration::from_millis(50),
        // The figures of the job's last checkpoint stay to be scraped after it ends.
        ui_linger: 3,
        ..RunOptions::default()
    };
    let job = std::thread::spawn(move || {
        let p = Pipeline::new();
        let sums = p
            .create((0..80u64).map(|i| (i % 3, i)).collect::<Vec<_>>())
            .map(|kv| {
                std::thread::sleep(Duration::from_millis(25));
                kv
            })
            .combine_per_key(Sum::new());
        riffle_connectors::memory::discard(&sums);
        riffle_timely::run(&p, &opts).map(|r| r.elapsed)
    });
    let value = |body: &str, name: &str| -> Option<i64> {
        body.lines().find(|l| l.starts_with(&format!("{name}{{")))?.rsplit(' ').next()?.parse().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    while Instant::now() < deadline && seen.is_none() {
        if let Some(body) = scrape(&addr, "/metrics") {
            if value(&body, "riffle_checkpoints_completed").is_some() {
                seen = Some(body);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = seen.expect("a scrape shows a completed checkpoint");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let completed_at = value(&body, "riffle_checkpoint_last_completed_seconds").unwrap();
    assert!((now - completed_at).abs() <= 60, "completed at {completed_at}, now {now}: {body}");
    assert!(value(&body, "riffle_checkpoint_last_id").unwrap() >= 1, "{body}");
    assert!(value(&body, "riffle_checkpoint_last_bytes").unwrap() > 0, "{body}");
    assert!(value(&body, "riffle_checkpoint_last_duration_ms").unwrap() >= 0, "{body}");
    // The manifest on disk says the same id, or a later one already.
    let newest: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("_MANIFEST.json").exists())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .max()
        .unwrap();
    assert!(newest as i64 >= value(&body, "riffle_checkpoint_last_id").unwrap());
    job.join().unwrap().expect("the job succeeds");
}
