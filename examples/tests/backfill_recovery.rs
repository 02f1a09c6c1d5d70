//! The `backfill` example with `--checkpoint-dir`, Parquet in and Parquet out, as a 2x2
//! local cluster: a random process killed with SIGKILL twenty times at random moments, the
//! same command run again after each, until it completes. What is visible in the output
//! after each kill is only what completed checkpoints committed; the final output equals a
//! clean run's row for row, with `_SUCCESS` and nothing left staged.
//!
//! Bug classes caught: a file visible before its checkpoint completed (a row of a crashed
//! run's uncommitted output); a committed file replaced or duplicated by a resumed run;
//! staging left behind; a resumed backfill that counts a row group twice or skips one.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::parquet_out::read_totals;
use common::{completed, example, members};

/// Files under `dir`'s `_temporary`, if any.
fn staged(dir: &Path) -> usize {
    fn walk(d: &Path) -> usize {
        std::fs::read_dir(d)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
            .unwrap_or(0)
    }
    walk(&dir.join("_temporary"))
}

fn backfill(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut c = example("backfill");
    c.args(["--window", "1h", "--mode", "backfill", "--no-progress", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Makes `events` events over 30 days as Parquet, and the totals a clean run writes.
fn input_and_clean_totals(dir: &Path, events: u64) -> (std::path::PathBuf, Vec<(String, i64, i64, i64)>) {
    let input = dir.join("events");
    let made = example("make_events")
        .args(["--events", &events.to_string(), "--days", "30", "--users", "300", "--row-group", "5000", "--output"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let clean = dir.join("clean");
    let out = backfill(&input, &clean, &["--processes", "2", "--workers", "2"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (input, read_totals(&clean))
}

/// Runs the backfill with `args` (checkpoints among them) and `env`, killing it (a random
/// process of a local cluster, or the process) `kills` times at random moments, each once
/// it has completed a checkpoint, then lets it complete. Checks what is visible after each
/// kill; returns the number of kills and the log.
fn kill_until_complete(
    input: &Path,
    output: &Path,
    completed: &dyn Fn() -> usize,
    args: &[&str],
    env: &[(&'static str, String)],
    kills_wanted: usize,
    want: &[(String, i64, i64, i64)],
) -> (usize, String) {
    let wanted: BTreeSet<_> = want.iter().cloned().collect();
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut log = String::new();
    let status = loop {
        let mut job = backfill(input, output, args).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).spawn().unwrap();
        if kills == kills_wanted {
            let done = job.wait_with_output().unwrap();
            log.push_str(&String::from_utf8_lossy(&done.stderr));
            break done.status;
        }
        // A new checkpoint of this run, then a kill at a random moment.
        let before = completed();
        let deadline = Instant::now() + Duration::from_secs(60);
        while completed() <= before && Instant::now() < deadline {
            if job.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rand::Rng::random_range(&mut rng, 0..100)));
        if let Some(s) = job.try_wait().unwrap() {
            // It completed before the kill: the job is done.
            break s;
        }
        let members = members(job.id());
        let victim = match members.len() {
            0 => job.id(),
            n => members[rand::Rng::random_range(&mut rng, 0..n)],
        };
        assert!(Command::new("kill").args(["-KILL", &victim.to_string()]).status().unwrap().success());
        let done = job.wait_with_output().unwrap();
        log.push_str(&String::from_utf8_lossy(&done.stderr));
        kills += 1;
        // Only what completed checkpoints committed is visible: rows of the clean run, each once.
        let visible = read_totals(output);
        let distinct: BTreeSet<_> = visible.iter().cloned().collect();
        assert_eq!(distinct.len(), visible.len(), "after kill {kills}: a row is visible twice");
        assert!(distinct.is_subset(&wanted), "after kill {kills}: a row no clean run writes is visible");
        assert!(!output.join("_SUCCESS").exists(), "after kill {kills}: _SUCCESS before the job completed");
    };
    assert!(status.success(), "the last run: {status}\n{log}");
    (kills, log)
}

#[test]
fn a_two_by_two_backfill_killed_twenty_times_writes_a_clean_runs_rows_once() {
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = input_and_clean_totals(dir.path(), 6_000_000);
    let output = dir.path().join("out");
    let ck = dir.path().join("checkpoints");
    let ck_url = ck.display().to_string();
    let args = ["--processes", "2", "--workers", "2", "--checkpoint-dir", &ck_url, "--checkpoint-interval", "50ms"];
    let (kills, _) = kill_until_complete(&input, &output, &|| completed(&ck), &args, &[], 20, &want);
    assert_eq!(kills, 20, "the backfill completed after {kills} kills: give it more input");
    assert_eq!(read_totals(&output), want, "after {kills} kills, against a clean run");
    assert!(output.join("_SUCCESS").exists());
    assert_eq!(staged(&output), 0, "nothing is left under _temporary");
}

#[test]
fn checkpoints_on_s3_resume_a_killed_backfill() {
    let moto = riffle_parquet::testing::Moto::start(false);
    moto.create_bucket("checkpoints");
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = input_and_clean_totals(dir.path(), 600_000);
    let output = dir.path().join("out");
    let args = ["--workers", "2", "--checkpoint-dir", "s3://checkpoints/backfill", "--checkpoint-interval", "300ms"];
    // Completed checkpoints, from the server's own listing.
    let endpoint = moto.env().into_iter().find(|(k, _)| *k == "AWS_ENDPOINT_URL").expect("the endpoint").1;
    let on_s3 = || {
        // moto is slow to list: not too often.
        std::thread::sleep(Duration::from_millis(150));
        ureq::get(&format!("{endpoint}/checkpoints?list-type=2&prefix=backfill/"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .map_or(0, |xml| {
                // The newest id with a manifest (retention keeps three).
                xml.split("<Key>")
                    .filter_map(|k| k.split("</Key>").next()?.strip_suffix("/_MANIFEST.json"))
                    .filter_map(|k| k.rsplit("chk-").next()?.parse::<usize>().ok())
                    .max()
                    .unwrap_or(0)
            })
    };
    let (kills, log) = kill_until_complete(&input, &output, &on_s3, &args, &moto.env(), 2, &want);
    assert_eq!(kills, 2, "the backfill completed after {kills} kills: give it more input\n{log}");
    assert!(log.contains("resuming from checkpoint"), "a run resumed: {log}");
    assert_eq!(read_totals(&output), want, "after {kills} kills, checkpoints on S3, against a clean run\n{log}");
    assert_eq!(staged(&output), 0, "nothing is left under _temporary");
}
