//! The `live` example with `--checkpoint-dir`, killed with SIGKILL at random moments and
//! run again with the same command, against a real Kafka-protocol broker (tansu): its
//! totals are the batch's, each window's once it is whole, whatever was killed when, at
//! another worker and process count too; a stop (SIGTERM) ends it at a checkpoint, and
//! the windows open then fire whole after the restart.
//!
//! Output goes to stdout, which is not transactional: a pane fired after the last
//! checkpoint and before a kill is printed again after the restart, with the same total
//! (at-least-once output of exactly-once state). No pane may have two different totals.
//!
//! With `--output-topic` over noida-db (a broker that hides aborted transactions from
//! `read_committed` consumers), output is exactly-once: read back with `read_committed`
//! after twenty kills, the topic holds each pane once, row for row the batch's.
//!
//! Bug classes caught: positions and state saved at different cuts (an event counted
//! twice or never across a crash); a restart that starts over or skips a partition; key
//! groups or partitions lost when the worker or process count changes; a SIGTERM that
//! fires windows in flight, so a restarted job fires them a second time with the rest.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::events::{Event, HOUR, batch_totals, events, produce};
use common::{completed, example, members};
use riffle_kafka::testing::{Broker, Noida, Tansu};

/// Starts `live` on `topic` with checkpoints in `dir`, printing totals.
fn start(broker: &dyn Broker, topic: &str, dir: &Path, scale: &[&str]) -> Child {
    start_with(broker, topic, dir, scale, &[])
}

/// [`start`], with more arguments.
fn start_with(broker: &dyn Broker, topic: &str, dir: &Path, scale: &[&str], more: &[String]) -> Child {
    example("live")
        .args(["--brokers", &broker.brokers(), "--topic", topic, "--no-progress"])
        .args(["--window", "1h", "--out-of-orderness", "5s"])
        .args(["--checkpoint-dir", &dir.display().to_string()])
        .args(if more.iter().any(|a| a == "--checkpoint-interval") {
            &[][..]
        } else {
            &["--checkpoint-interval", "200ms"]
        })
        .args(scale)
        .args(more)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads a child's stdout and stderr to the end (after it exited).
fn output(mut child: Child) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (out, err)
}

/// Adds printed totals to `panes` (user, window) -> total, failing on a second, different total.
fn add(panes: &mut BTreeMap<(String, String), String>, out: &str) {
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 4, "a total line: {line:?}");
        if f[0] == "zz" {
            continue;
        }
        let key = (f[0].to_string(), f[1].to_string());
        if let Some(before) = panes.insert(key.clone(), f[3].to_string()) {
            assert_eq!(before, f[3], "pane {key:?} printed with two totals");
        }
    }
}

/// Sends `sig` to `pid`.
fn signal(sig: &str, pid: u32) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

/// Runs `live` over the events while they arrive, killing it `kills` times at random
/// moments (each time once it has completed a checkpoint) and starting it again at the
/// next scale in `scales`; then SIGTERM. Returns the totals printed over all runs.
fn run_with_kills(topic: &str, scales: &[&[&str]], kills: usize, kill_member: bool) -> Vec<String> {
    let all = events(600);
    run_with_kills_on(topic, &all, &all, &[], scales, kills, kill_member)
}

/// [`run_with_kills`] over `all` events, of which the topic gets `live` (the rest come
/// from elsewhere: `more` arguments name it).
fn run_with_kills_on(
    topic: &str,
    all: &[(i32, Event)],
    live: &[(i32, Event)],
    more: &[String],
    scales: &[&[&str]],
    kills: usize,
    kill_member: bool,
) -> Vec<String> {
    let broker = Tansu::start();
    broker.create_topic(topic, 3);
    let want = batch_totals(all);
    let (panes, log) = kill_rounds(&broker, topic, all, live, more, scales, kills, kill_member, None);
    let mut got: Vec<String> =
        panes.iter().map(|((u, s), t)| format!("{u}\t{s}\t{}\t{t}", s.parse::<i64>().unwrap() + HOUR)).collect();
    got.sort();
    assert_eq!(got, want, "totals over every run against one batch run\n{log}");
    got
}

/// The rounds of [`run_with_kills_on`] on `broker`, whose `topic` exists: the totals
/// printed over all runs, (user, window start) -> total, and the runs' logs.
///
/// With `kill_within`, each killed round waits for a checkpoint of its run first, then
/// produces its events and kills at a random moment within `kill_within`: panes fired by
/// those events are then often killed before a checkpoint covers them, which is what
/// exactly-once output must survive (they fire again after the restart).
#[allow(clippy::too_many_arguments)]
fn kill_rounds(
    broker: &dyn Broker,
    topic: &str,
    all: &[(i32, Event)],
    live: &[(i32, Event)],
    more: &[String],
    scales: &[&[&str]],
    kills: usize,
    kill_member: bool,
    kill_within: Option<Duration>,
) -> (BTreeMap<(String, String), String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("checkpoints");
    let chunks: Vec<_> = live.chunks(live.len() / (kills + 1) + 1).collect();
    let mut rng = rand::rng();
    let mut panes = BTreeMap::new();
    let mut log = String::new();
    for (round, chunk) in chunks.iter().enumerate() {
        let scale = scales[round % scales.len()];
        let job = start_with(broker, topic, &ck, scale, more);
        let before = completed(&ck);
        let wait_for_checkpoint = || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while completed(&ck) <= before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(completed(&ck) > before, "round {round} {scale:?}: no checkpoint in 30 s");
        };
        if round < kills && kill_within.is_some() {
            wait_for_checkpoint();
        }
        for part in chunk.chunks(20) {
            produce(broker, topic, part);
            std::thread::sleep(Duration::from_millis(30));
        }
        if round < kills {
            // A checkpoint of this run, then a kill at a random moment after it.
            let within = kill_within.unwrap_or_else(|| {
                wait_for_checkpoint();
                Duration::from_millis(400)
            });
            std::thread::sleep(Duration::from_millis(rand::Rng::random_range(&mut rng, 0..within.as_millis() as u64)));
            let members = members(job.id());
            match (kill_member, members.as_slice()) {
                (true, [_, ..]) => {
                    signal("-KILL", members[rand::Rng::random_range(&mut rng, 0..members.len())]);
                }
                _ => signal("-KILL", job.id()),
            }
            let (out, err) = output(job);
            add(&mut panes, &out);
            log.push_str(&format!("--- round {round} {scale:?} (killed)\n{err}"));
            continue;
        }
        // The last round: every partition's watermark past the last window, then wait for
        // every total and stop.
        let last = all.iter().map(|(_, e)| e.ts).max().unwrap();
        let pushers: Vec<_> =
            (0..3).map(|p| (p, Event { user_id: "zz".into(), ts: last + 2 * HOUR, amount: 0 })).collect();
        produce(broker, topic, &pushers);
        std::thread::sleep(Duration::from_secs(3));
        signal("-TERM", job.id());
        let (out, err) = output(job);
        add(&mut panes, &out);
        log.push_str(&format!("--- round {round} {scale:?} (stopped)\n{err}"));
    }
    (panes, log)
}

#[test]
fn killed_at_random_moments_and_restarted_the_totals_are_the_batchs() {
    run_with_kills("events-kill", &[&["--workers", "2"]], 3, false);
}

#[test]
fn a_two_by_two_cluster_killed_resumes_at_one_by_four_and_back() {
    run_with_kills(
        "events-rescale",
        &[&["--processes", "2", "--workers", "2"], &["--workers", "4"], &["--workers", "1"]],
        3,
        true,
    );
}

#[test]
fn sigterm_stops_at_a_checkpoint_and_windows_open_then_fire_once_whole_after_the_restart() {
    let broker = Tansu::start();
    broker.create_topic("events-stop", 3);
    let all = events(300);
    let want = batch_totals(&all);
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("checkpoints");
    // The first half, then a stop: the window open then has only part of its events.
    produce(&broker, "events-stop", &all[..150]);
    let job = start(&broker, "events-stop", &ck, &["--workers", "2"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while completed(&ck) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    signal("-TERM", job.id());
    let status_deadline = Instant::now() + Duration::from_secs(15);
    let mut job = job;
    let status = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < status_deadline, "the job did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out1, err1) = output(job);
    assert!(status.success(), "stopped with {status}: {err1}");
    assert!(err1.contains("stopped at checkpoint"), "{err1}");
    let mut panes = BTreeMap::new();
    add(&mut panes, &out1);
    let first_run = panes.len();
    assert!(first_run < want.len(), "the first run fired only the windows that had ended: {out1}");

    // The rest, then a restart: every window fires once, whole.
    produce(&broker, "events-stop", &all[150..]);
    let last = all.iter().map(|(_, e)| e.ts).max().unwrap();
    let pushers: Vec<_> = (0..3).map(|p| (p, Event { user_id: "zz".into(), ts: last + 2 * HOUR, amount: 0 })).collect();
    produce(&broker, "events-stop", &pushers);
    let job = start(&broker, "events-stop", &ck, &["--workers", "2"]);
    std::thread::sleep(Duration::from_secs(4));
    signal("-TERM", job.id());
    let (out2, err2) = output(job);
    add(&mut panes, &out2);
    let mut got: Vec<String> =
        panes.iter().map(|((u, s), t)| format!("{u}\t{s}\t{}\t{t}", s.parse::<i64>().unwrap() + HOUR)).collect();
    got.sort();
    assert_eq!(got, want, "totals across the stop against one batch run\n{err1}\n{err2}");
    // Nothing the first run printed is printed again: it stopped at a checkpoint after it.
    for line in out1.lines().filter(|l| !l.starts_with("zz")) {
        assert!(!out2.contains(line), "{line:?} printed again after the restart");
    }
}

#[test]
fn with_restart_attempts_a_cluster_that_loses_a_process_restarts_itself() {
    let broker = Tansu::start();
    broker.create_topic("events-restart", 3);
    let all = events(300);
    let want = batch_totals(&all);
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("checkpoints");
    produce(&broker, "events-restart", &all[..150]);
    let job = start(&broker, "events-restart", &ck, &["--processes", "2", "--workers", "1", "--restart-attempts", "2"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while completed(&ck) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = members(job.id());
    assert_eq!(first.len(), 2, "two processes: {first:?}");
    signal("-KILL", first[1]);
    // The launcher starts a new cluster from the checkpoint.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !members(job.id()).iter().all(|m| !first.contains(m)) || members(job.id()).len() < 2 {
        assert!(Instant::now() < deadline, "no new cluster within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    produce(&broker, "events-restart", &all[150..]);
    let last = all.iter().map(|(_, e)| e.ts).max().unwrap();
    let pushers: Vec<_> = (0..3).map(|p| (p, Event { user_id: "zz".into(), ts: last + 2 * HOUR, amount: 0 })).collect();
    produce(&broker, "events-restart", &pushers);
    std::thread::sleep(Duration::from_secs(4));
    signal("-TERM", job.id());
    let mut job = job;
    let status = job.wait().unwrap();
    let (out, err) = output(job);
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("restarting it from the latest checkpoint (attempt 1 of 2)"), "{err}");
    let mut panes = BTreeMap::new();
    add(&mut panes, &out);
    let mut got: Vec<String> =
        panes.iter().map(|((u, s), t)| format!("{u}\t{s}\t{}\t{t}", s.parse::<i64>().unwrap() + HOUR)).collect();
    got.sort();
    assert_eq!(got, want, "totals across the restart against one batch run\n{err}");
}

#[test]
fn a_backfill_then_live_job_killed_at_random_moments_resumes_with_the_batch_totals() {
    // History: Parquet files of the events before 3h; the topic: the events from 1h30
    // (the overlap is counted once); the switch at 2h30. The history replays in well under
    // the first checkpoint interval here, so the kills land after the switch: a restart
    // must go on live without counting the history or the overlap again. (Restoring a
    // hybrid source mid-replay is unit-tested in riffle-engine's hybrid module.)
    let all = events(600);
    let start_ms = common::events::START;
    let switch = start_ms + 5 * HOUR / 2;
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("history").display().to_string();
    let history: Vec<Event> = all.iter().filter(|(_, e)| e.ts < start_ms + 3 * HOUR).map(|(_, e)| e.clone()).collect();
    common::events::write_parquet(&url, history, None);
    let live: Vec<_> = all.iter().filter(|(_, e)| e.ts >= start_ms + 3 * HOUR / 2).cloned().collect();
    let more = ["--history".to_string(), url, "--switch-at".to_string(), switch.to_string()];
    run_with_kills_on("events-hybrid", &all, &live, &more, &[&["--workers", "2"], &["--workers", "3"]], 2, false);
}

#[test]
fn a_two_by_two_cluster_killed_twenty_times_gives_the_batch_totals() {
    // One of the two processes, at random, each time.
    run_with_kills("events-twenty", &[&["--processes", "2", "--workers", "2"]], 20, true);
}

#[test]
fn a_backfill_then_live_job_killed_during_the_replay_resumes_it_and_switches_once() {
    // History: 30 days of events (make_events), long enough to replay that the kills land
    // in it; the switch at its end; the topic: events from half an hour before the switch
    // (not counted: the files hold that time) to three hours after.
    let day = 24 * HOUR;
    let switch = common::events::START + 30 * day;
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let made = example("make_events")
        .args(["--events", "3000000", "--days", "30", "--users", "50", "--row-group", "5000", "--output"])
        .arg(&history)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let replayed = example("backfill")
        .args(["--window", "1h", "--mode", "backfill", "--no-progress", "--input"])
        .arg(&history)
        .output()
        .unwrap();
    assert!(replayed.status.success());
    let mut want: Vec<String> = String::from_utf8(replayed.stdout).unwrap().lines().map(str::to_string).collect();
    let topic: Vec<(i32, Event)> = (0..230i64)
        .map(|i| {
            let ts = switch - HOUR / 2 + i * 54_000;
            ((i % 3) as i32, Event { user_id: format!("u{}", i % 4), ts, amount: i % 7 + 1 })
        })
        .collect();
    let mut live_totals: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (_, e) in topic.iter().filter(|(_, e)| e.ts >= switch) {
        *live_totals.entry((e.user_id.clone(), e.ts - e.ts.rem_euclid(HOUR))).or_default() += e.amount;
    }
    want.extend(live_totals.iter().map(|((u, s), t)| format!("{u}\t{s}\t{}\t{t}", s + HOUR)));
    want.sort();

    let broker = Tansu::start();
    broker.create_topic("events-replay", 3);
    produce(&broker, "events-replay", &topic);
    let ck = dir.path().join("checkpoints");
    let more = ["--history".to_string(), history.display().to_string(), "--switch-at".to_string(), switch.to_string()];
    // The history's totals are many: the jobs write to files, not to pipes nobody reads.
    let run = |round: usize, scale: &[&str], log: bool| {
        let (out, err) = (dir.path().join(format!("out-{round}")), dir.path().join(format!("err-{round}")));
        let mut c = example("live");
        c.args(["--brokers", &broker.brokers(), "--topic", "events-replay", "--no-progress"])
            .args(["--window", "1h", "--out-of-orderness", "5s"])
            .args(["--checkpoint-dir", &ck.display().to_string(), "--checkpoint-interval", "200ms"])
            .args(scale)
            .args(&more)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        if log {
            c.env("RUST_LOG", "info");
        }
        (c.spawn().unwrap(), out, err)
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let mut panes = BTreeMap::new();
    let mut log = String::new();
    for (round, scale) in [&["--workers", "2"][..], &["--workers", "3"]].into_iter().enumerate() {
        let before = completed(&ck);
        let (mut job, out, err) = run(round, scale, true);
        let deadline = Instant::now() + Duration::from_secs(60);
        while completed(&ck) <= before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        signal("-KILL", job.id());
        job.wait().unwrap();
        let err = read(&err);
        assert!(completed(&ck) > before, "round {round}: a checkpoint within a minute\n{err}");
        assert!(
            !err.contains("switching to the live source"),
            "round {round}: killed after the switch, not during the replay:\n{err}"
        );
        if round > 0 {
            assert!(err.contains("resuming from checkpoint"), "round {round} resumed: {err}");
        }
        add(&mut panes, &read(&out));
        log.push_str(&err);
    }
    // The last run replays the rest of the history, switches, and reads the topic; then a
    // stop once the last live window's total has come (or a minute passed).
    let last = topic.iter().map(|(_, e)| e.ts).max().unwrap();
    let pushers: Vec<_> = (0..3).map(|p| (p, Event { user_id: "zz".into(), ts: last + 2 * HOUR, amount: 0 })).collect();
    produce(&broker, "events-replay", &pushers);
    let (mut job, out, err) = run(2, &["--workers", "2"], false);
    // Every live window's total, the last to fire (the history's all end before the switch).
    let live_keys: Vec<String> = live_totals.keys().map(|(u, s)| format!("{u}\t{s}\t")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !live_keys.iter().all(|k| read(&out).lines().any(|l| l.starts_with(k))) {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal("-TERM", job.id());
    let status = job.wait().unwrap();
    let err = read(&err);
    assert!(status.success(), "{status}: {err}");
    add(&mut panes, &read(&out));
    let mut got: Vec<String> =
        panes.iter().map(|((u, s), t)| format!("{u}\t{s}\t{}\t{t}", s.parse::<i64>().unwrap() + HOUR)).collect();
    got.sort();
    assert_eq!(got.len(), want.len(), "as many panes as history and topic have windows\n{log}\n{err}");
    assert_eq!(got, want, "history killed during the replay, then live, against the batch of each part");
}

/// Runs `live` with `--output-topic` over noida-db through `kills` kills of a random
/// process of a 2 x 2 cluster, then reads the output topic with `read_committed`: each
/// pane once, with the batch's total, none missing and none twice.
fn exactly_once_through_kills(topic: &str, kills: usize) {
    let broker = Noida::start();
    let out_topic = format!("{topic}-totals");
    broker.create_topic(topic, 3);
    broker.create_topic(&out_topic, 3);
    let all = events(600);
    let want = batch_totals(&all);
    // Checkpoints every second, and kills within a second of the events that fire panes:
    // many panes are written by a run killed before the checkpoint that commits them.
    let more = ["--output-topic", &out_topic, "--checkpoint-interval", "1s"].map(String::from);
    let scale: &[&str] = &["--processes", "2", "--workers", "2"];
    let within = Some(Duration::from_secs(1));
    let (printed, log) = kill_rounds(&broker, topic, &all, &all, &more, &[scale], kills, true, within);
    assert!(printed.is_empty(), "totals go to the topic, not stdout: {printed:?}");
    let mut got: Vec<String> = read_committed(&broker.brokers(), &out_topic, 3)
        .iter()
        .map(|v| serde_json::from_str::<common::events::Total>(v).unwrap())
        .filter(|t| t.user_id != "zz")
        .map(|t| format!("{}\t{}\t{}\t{}", t.user_id, t.window_start, t.window_end, t.total))
        .collect();
    got.sort();
    let mut seen = std::collections::BTreeSet::new();
    for line in &got {
        let pane: Vec<&str> = line.split('\t').take(2).collect();
        assert!(seen.insert(pane.clone()), "pane {pane:?} written twice: {line}\n{log}");
    }
    assert_eq!(got, want, "the topic read committed against one batch run\n{log}");
}

/// Every record value of `topic`, read from the start with `isolation.level=read_committed`
/// until nothing came for 3 s.
fn read_committed(brokers: &str, topic: &str, partitions: i32) -> Vec<String> {
    let quiet = Duration::from_secs(3);
    riffle_kafka::testing::read_topic(brokers, topic, partitions, "read_committed", quiet)
        .into_iter()
        .map(|(_, value, _)| value)
        .collect()
}

#[test]
fn a_two_by_two_cluster_killed_twenty_times_writes_each_pane_once_to_a_topic_read_committed() {
    exactly_once_through_kills("events-eos-twenty", 20);
}
