//! The job's web view, loaded in a real browser (headless Chromium) while the job runs,
//! and its JSON API and `/metrics` checked against the job's own run report.
//!
//! Chromium comes from Debian's `chromium` package (`.ci/run` installs it; see
//! `riffle_timely::testing::browser`). The screenshot is saved under the test's output
//! directory (`target/tmp/ui/`).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;
use riffle_timely::status::JobSnapshot;
use riffle_timely::testing::browser::{dom, node_attr, screenshot};

const EVENTS: u64 = 3_000_000;

/// Set once the browser has seen what it must: the job stops pacing itself and ends.
static BROWSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

fn get(url: &str) -> Option<String> {
    ureq::get(url).call().ok()?.body_mut().read_to_string().ok()
}

fn job(addr: &str) -> Option<JobSnapshot> {
    serde_json::from_str(&get(&format!("http://{addr}/api/job"))?).ok()
}

#[test]
fn the_web_view_shows_the_running_job_in_a_browser_and_agrees_with_the_run_report() {
    let (ui, metrics) = (free_addr(), free_addr());
    let opts = RunOptions {
        workers: 2,
        ui_addr: Some(ui.clone()),
        metrics_addr: Some(metrics.clone()),
        ui_linger: 20,
        no_progress: true,
        ..RunOptions::default()
    };
    // A stream of one event per ms of event time, paced by a step that sleeps a
    // millisecond every 200 events until the browser has looked (however slow the
    // machine), into one-second windows.
    let running = std::thread::spawn(move || {
        let p = Pipeline::new();
        let events = p
            .generate_stream(
                EVENTS,
                |i| (((i % 16) as u32, i), EventTime::from_millis(1_767_225_600_000 + i as i64)),
                WatermarkStrategy::bounded_out_of_orderness(100),
            )
            .named("Events")
            .map(|(k, i)| {
                if i % 200 == 0 && !BROWSED.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                (k, 1i64)
            })
            .named("Pace");
        let sums = events.window_into(FixedWindows::of_millis(1_000)).combine_per_key(Sum::new()).named("Sums");
        riffle_connectors::memory::discard(&sums);
        riffle_timely::run(&p, &opts)
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    while job(&ui)
        .is_none_or(|j| j.state != "running" || j.steps.iter().any(|s| s.kind == "source" && s.out_per_s == 0.0))
    {
        assert!(Instant::now() < deadline, "the view never showed the job running: {:?}", job(&ui));
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{ui}/");
    let first = dom(&url);
    let snapshot = job(&ui).expect("the view answers");
    for node in &snapshot.graph {
        assert!(first.contains(&format!("data-step=\"{}\"", node.name)), "step {} is drawn: {first}", node.name);
        let attr = if node.kind == "source" { "data-out-rate" } else { "data-in-rate" };
        let rate: f64 = node_attr(&first, &node.name, attr).and_then(|r| r.parse().ok()).unwrap_or(0.0);
        assert!(rate > 0.0, "step {} shows a rate ({attr}={rate}): {first}", node.name);
    }
    assert!(first.contains("class=\"badge running\""), "{first}");
    let watermark = |dom: &str| node_attr(dom, "Events", "data-watermark").and_then(|w| w.parse::<i64>().ok());
    let w1 = watermark(&first).expect("the source's watermark is shown");
    std::thread::sleep(Duration::from_millis(1_500));
    let second = dom(&url);
    let w2 = watermark(&second).expect("the source's watermark is shown");
    assert!(w2 > w1, "the watermark moves between two loads: {w1} then {w2}");

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("running-job.png");
    screenshot(&url, &shot);
    BROWSED.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "a screenshot at {}", shot.display());

    // After the end, the view lingers with the final figures: they must be the report's.
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        if let Some(j) = job(&ui).filter(|j| j.state == "finished") {
            break j;
        }
        assert!(Instant::now() < deadline, "the view never showed the job finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = get(&format!("http://{metrics}/metrics")).expect("metrics linger too");
    riffle_timely::request_stop();
    let report = running.join().unwrap().expect("the job succeeds");
    riffle_timely::reset_stop();
    for name in ["Events", "Pace", "Sums", "Discard"] {
        let step = last.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} in {last:?}"));
        let ours: Vec<_> = report.steps.iter().filter(|s| s.step == name).collect();
        let (inn, out) =
            (ours.iter().map(|s| s.elements_in).sum::<u64>(), ours.iter().map(|s| s.elements_out).sum::<u64>());
        assert_eq!((step.elements_in, step.elements_out), (inn, out), "{name}: /api/job against the run report");
        let scraped: u64 = text
            .lines()
            .filter(|l| l.starts_with(&format!("riffle_step_elements_in_total{{step=\"{name}\",")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(scraped, inn, "{name}: /metrics against the run report");
    }
    assert_eq!(last.steps[0].elements_out, EVENTS);
    assert_eq!(last.progress.panes_fired, last.steps.iter().find(|s| s.name == "Sums").unwrap().elements_out);
}

/// Set in the two processes the next test starts: which one this is, the hostfile, and
/// the web view's address.
const MEMBER: &str = "RIFFLE_UI_TEST_MEMBER";

#[test]
fn in_a_cluster_across_hosts_process_0_serves_the_view_of_every_process() {
    if let Ok(member) = std::env::var(MEMBER) {
        // A member: a job of a few seconds, process I of two, from the hostfile.
        let mut parts = member.split(',');
        let (process, hostfile, ui) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let opts = RunOptions {
            workers: 1,
            processes: 2,
            process: Some(process.parse().unwrap()),
            hostfile: Some(hostfile.into()),
            ui_addr: Some(ui.to_string()),
            ui_linger: 3,
            no_progress: true,
            ..RunOptions::default()
        };
        let p = Pipeline::new();
        let paced = p.create((0..400u32).collect()).map(|x| {
            std::thread::sleep(Duration::from_millis(10));
            (x % 4, 1u64)
        });
        riffle_connectors::memory::discard(&paced.combine_per_key(Sum::new()));
        riffle_timely::run(&p, &opts).expect("the member's job runs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts.txt");
    let ports: Vec<String> = (0..2).map(|_| free_addr()).collect();
    std::fs::write(&hostfile, ports.iter().map(|a| format!("{a}\n")).collect::<String>()).unwrap();
    let ui = free_addr();
    let members: Vec<std::process::Child> = (0..2)
        .map(|i| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["in_a_cluster_across_hosts_process_0_serves_the_view_of_every_process", "--exact"])
                .env(MEMBER, format!("{i},{},{ui}", hostfile.display()))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Process 0 serves the view; process 1 sends it its counters.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        if let Some(j) = job(&ui).filter(|j| j.reporting == 2 && j.state == "running") {
            break j;
        }
        assert!(Instant::now() < deadline, "the view never showed both processes: {:?}", job(&ui));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(seen.processes, 2);
    // Both processes' workers read: the create's elements are dealt to both.
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        if let Some(j) = job(&ui).filter(|j| j.state == "finished") {
            break j;
        }
        assert!(Instant::now() < deadline, "the view never showed the job finished: {:?}", job(&ui));
        std::thread::sleep(Duration::from_millis(100));
    };
    let map = last.steps.iter().find(|s| s.kind == "pardo").expect("the map");
    assert_eq!(map.elements_in, 400, "every element, counted on both processes: {last:?}");
    for mut m in members {
        assert!(m.wait().unwrap().success());
    }
}
