//! Failure is loud, never a hang: user panics, lost processes, bad cluster setup.
//!
//! Tests that need a process to die or exit run the test binary itself as that process
//! (the test's own name plus an environment variable saying which role to play), so
//! every process here is real and stops by itself.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use riffle_engine::prelude::*;
use riffle_engine::{Error, ErrorDomain};
use riffle_timely::RunOptions;
use riffle_timely::cluster::{ENV_HOSTFILE, ENV_PROCESS, EXIT_LOST_PEER, EXIT_NO_CLUSTER};
use riffle_timely::testing::{is_cluster_member, local_cluster, try_run_windowed};

#[test]
fn a_panic_in_user_code_names_the_step_and_the_element() {
    for workers in [1, 3] {
        // `map` takes the element by value: by the time the panic is caught its value is
        // gone, so the error names where it was, its timestamp and its window.
        let err = try_run_windowed(&RunOptions::threads(workers), |p| {
            p.create((0..100).collect::<Vec<i32>>())
                .map(|x| x * 2)
                .map(|x| if x == 26 { panic!("thirteen is unlucky") } else { x })
                .named("Superstition")
        })
        .expect_err("the job fails");
        let msg = err.to_string();
        assert!(matches!(err, Error::UserCode { .. }), "{msg}");
        assert_eq!(err.domain(), ErrorDomain::User);
        assert!(msg.contains("step 'Superstition' panicked: thirteen is unlucky"), "{msg}");
        assert!(msg.contains("while processing element: number "), "{msg}");
        assert!(msg.contains(" of its bundle, at -inf in Global"), "{msg}");
        assert!(msg.contains("cannot be shown"), "{msg}");
        if workers == 1 {
            // One worker reads the 100 elements as one bundle: 26 is the 14th.
            assert!(msg.contains("number 13 (from 0) of its bundle"), "{msg}");
        }

        // A DoFn and a filter borrow the element: their errors name its value.
        let err = try_run_windowed(&RunOptions::threads(workers), |p| {
            p.create((0..100).collect::<Vec<i32>>()).map(|x| x * 2).par_do(Unlucky).named("SuperstitiousDoFn")
        })
        .expect_err("the job fails");
        let msg = err.to_string();
        assert!(msg.contains("step 'SuperstitiousDoFn' panicked: thirteen is unlucky"), "{msg}");
        assert!(msg.contains("element: 26 at -inf in Global"), "{msg}");
        let err = try_run_windowed(&RunOptions::threads(workers), |p| {
            p.create((0..100).collect::<Vec<i32>>())
                .map(|x| x * 2)
                .filter(|x| if *x == 26 { panic!("thirteen is unlucky") } else { true })
                .named("SuperstitiousFilter")
        })
        .expect_err("the job fails");
        let msg = err.to_string();
        assert!(msg.contains("step 'SuperstitiousFilter' panicked: thirteen is unlucky"), "{msg}");
        assert!(msg.contains("element: 26 at -inf in Global"), "{msg}");
    }
}

/// A DoFn that panics at 26.
#[derive(Clone)]
struct Unlucky;

impl DoFn for Unlucky {
    type In = i32;
    type Out = i32;
    fn process(&mut self, x: &i32, ctx: &mut ProcessContext<'_, i32>) {
        assert!(*x != 26, "thirteen is unlucky");
        ctx.output(*x);
    }
}

#[test]
fn a_sum_that_overflows_fails_the_job_at_any_scale() {
    for workers in [1, 2] {
        let err = try_run_windowed(&RunOptions::threads(workers), |p| {
            let rows = vec![("small".to_string(), 1i64), ("big".to_string(), i64::MAX), ("big".to_string(), 1)];
            p.create(rows).combine_per_key(Sum::new()).named("Totals")
        })
        .expect_err("an i64 sum past i64::MAX fails rather than wraps");
        let msg = err.to_string();
        assert!(msg.contains("step 'Totals'") && msg.contains("Sum overflowed i64"), "{workers} workers: {msg}");
        assert!(msg.contains(&i64::MAX.to_string()), "{workers} workers: the operands are named: {msg}");
        if workers == 1 {
            // Adding an element names it (and so its key); merging two workers' partial
            // sums after the shuffle names the operands only.
            assert!(msg.contains("\"big\""), "the key is named: {msg}");
        }
    }
}

#[test]
fn a_panic_in_a_combine_fn_names_the_step() {
    #[derive(Clone)]
    struct Fragile;
    impl CombineFn for Fragile {
        type Input = i64;
        type Accum = i64;
        type Output = i64;
        fn create_accumulator(&self) -> i64 {
            0
        }
        fn add_input(&self, acc: &mut i64, x: &i64) {
            assert!(*x != 7, "cannot add seven");
            *acc += x;
        }
        fn merge_accumulators(&self, acc: &mut i64, other: i64) {
            *acc += other;
        }
        fn extract_output(&self, acc: i64) -> i64 {
            acc
        }
    }
    let err = try_run_windowed(&RunOptions::threads(2), |p| {
        p.create((0..20i64).map(|x| (x % 3, x)).collect()).combine_per_key(Fragile).named("FragileSum")
    })
    .expect_err("the job fails");
    let msg = err.to_string();
    assert!(msg.contains("step 'FragileSum' panicked: cannot add seven"), "{msg}");
    assert!(msg.contains("(1, 7)"), "the element is named: {msg}");
}

#[test]
fn a_panic_in_a_cluster_fails_the_job() {
    let started = Instant::now();
    let p = Pipeline::new();
    let out = p.create((0..1000).collect::<Vec<u32>>()).map(|x| if x == 999 { panic!("boom at {x}") } else { x });
    riffle_connectors::memory::collect(&out);
    let result = riffle_timely::run(&p, &local_cluster(2, 1, "a_panic_in_a_cluster_fails_the_job"));
    let err = result.expect_err("the launcher reports failure");
    assert!(matches!(err, Error::Cluster(_)), "{err}");
    // The panicking process exits 1 and its peer, having lost it, exits 3: both fail.
    let msg = err.to_string();
    assert!(msg.contains("process 0 exit status") && msg.contains("process 1 exit status"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

/// The pipeline of the lost-process test: slow enough that process 1 dies mid-job.
fn slow_job() -> Pipeline {
    let p = Pipeline::new();
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let out = p.create((0..400).collect::<Vec<u32>>()).map(|x| {
        std::thread::sleep(Duration::from_millis(10));
        let seen = SEEN.fetch_add(1, Ordering::SeqCst);
        if seen == 50 && std::env::var(ENV_PROCESS).as_deref() == Ok("1") {
            std::process::abort(); // a crash: no unwinding, no goodbye to the peer
        }
        x
    });
    out.count_per_element();
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write_hostfile(dir: &Path, ports: &[u16]) -> std::path::PathBuf {
    let path = dir.join("hosts.txt");
    std::fs::write(&path, ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect::<String>()).unwrap();
    path
}

#[test]
fn a_dead_process_stops_the_others_within_ten_seconds() {
    if is_cluster_member() {
        let _ = riffle_timely::run(&slow_job(), &RunOptions { processes: 2, ..RunOptions::default() });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hostfile = write_hostfile(dir.path(), &[free_port(), free_port()]);
    let spawn = |i: usize| {
        Command::new(std::env::current_exe().unwrap())
            .args(["a_dead_process_stops_the_others_within_ten_seconds", "--exact", "--nocapture"])
            .env(ENV_PROCESS, i.to_string())
            .env(ENV_HOSTFILE, &hostfile)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (mut p0, mut p1) = (spawn(0), spawn(1));
    let deadline = Instant::now() + Duration::from_secs(60);
    let s1 = loop {
        if let Some(s) = p1.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "process 1 never crashed");
        std::thread::sleep(Duration::from_millis(10));
    };
    let died = Instant::now();
    assert!(!s1.success(), "process 1 crashed");
    let s0 = loop {
        if let Some(s) = p0.try_wait().unwrap() {
            break s;
        }
        if died.elapsed() > Duration::from_secs(10) {
            p0.kill().ok();
            panic!("process 0 still running 10 s after process 1 died");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(p0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(s0.code(), Some(EXIT_LOST_PEER), "{stderr}");
    assert!(stderr.contains("lost process 1 (127.0.0.1:"), "{stderr}");
}

fn member_of(processes: usize, process: usize, hostfile: &Path) -> RunOptions {
    RunOptions { processes, process: Some(process), hostfile: Some(hostfile.to_path_buf()), ..RunOptions::default() }
}

fn trivial() -> Pipeline {
    let p = Pipeline::new();
    p.create(vec![1, 2, 3]).count_per_element();
    p
}

#[test]
fn a_bad_hostfile_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hosts.txt");
    std::fs::write(&file, "127.0.0.1:2101\n# comment\nlocalhost\n").unwrap();
    let err = riffle_timely::run(&trivial(), &member_of(2, 0, &file)).unwrap_err().to_string();
    assert!(err.contains("line 3") && err.contains("\"localhost\" is not host:port"), "{err}");

    std::fs::write(&file, "127.0.0.1:2101\n127.0.0.1:2102\n127.0.0.1:2103\n").unwrap();
    let err = riffle_timely::run(&trivial(), &member_of(2, 0, &file)).unwrap_err().to_string();
    assert!(err.contains("names 3 processes but --processes is 2"), "{err}");

    let err = riffle_timely::run(&trivial(), &member_of(2, 0, &dir.path().join("absent.txt"))).unwrap_err().to_string();
    assert!(err.contains("cannot read hostfile") && err.contains("absent.txt"), "{err}");

    let err = riffle_timely::run(&trivial(), &member_of(2, 5, &file)).unwrap_err().to_string();
    assert!(err.contains("--process 5 is out of range"), "{err}");

    std::fs::write(&file, "127.0.0.1:2101\n127.0.0.1:2101\n").unwrap();
    let err = riffle_timely::run(&trivial(), &member_of(2, 1, &file)).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("already process 0's address"), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error_at_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let file = write_hostfile(dir.path(), &[port, free_port()]);
    let err = riffle_timely::run(&trivial(), &member_of(2, 0, &file)).unwrap_err().to_string();
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
}

#[test]
fn an_unreachable_peer_stops_the_process_at_start() {
    if let Ok(file) = std::env::var("RIFFLE_TEST_HOSTFILE") {
        let opts = RunOptions { connect_timeout: 2, ..member_of(2, 1, Path::new(&file)) };
        let _ = riffle_timely::run(&trivial(), &opts);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (absent, mine) = (free_port(), free_port());
    let file = write_hostfile(dir.path(), &[absent, mine]);
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["an_unreachable_peer_stops_the_process_at_start", "--exact", "--nocapture"])
        .env("RIFFLE_TEST_HOSTFILE", &file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_NO_CLUSTER), "{stderr}");
    assert!(stderr.contains(&format!("no answer from process 0 at 127.0.0.1:{absent}")), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[test]
fn a_peer_address_that_is_not_riffle_stops_the_process_at_start() {
    if let Ok(file) = std::env::var("RIFFLE_TEST_NOT_RIFFLE_HOSTFILE") {
        let opts = RunOptions { connect_timeout: 2, ..member_of(2, 1, Path::new(&file)) };
        let _ = riffle_timely::run(&trivial(), &opts);
        return;
    }
    // Process 0's address accepts connections and says nothing: another program.
    let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = impostor.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in impostor.incoming().flatten() {
            held.push(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let file = write_hostfile(dir.path(), &[port, free_port()]);
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["a_peer_address_that_is_not_riffle_stops_the_process_at_start", "--exact", "--nocapture"])
        .env("RIFFLE_TEST_NOT_RIFFLE_HOSTFILE", &file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_NO_CLUSTER), "{stderr}");
    assert!(stderr.contains("the handshake did not finish"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}
