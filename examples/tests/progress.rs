//! The progress bar of a bounded job, read through a pseudo-terminal (`script`, from
//! util-linux), as a user at a terminal sees it: it reaches 100% with a finite ETA, and a
//! local cluster's launcher draws the job's total, not one bar per process.

mod common;

use common::example;

/// Runs `cmd` with its output on a pseudo-terminal; returns everything it drew.
fn on_a_terminal(cmd: &std::process::Command) -> String {
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect();
    // A wide terminal, so the progress line is not cut.
    let command = format!("stty cols 220 rows 40; {}", line.join(" "));
    let out = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .output()
        .expect("run `script` (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd:?} failed on a terminal: {text}");
    text
}

/// The last frame the bar drew: the text after the last carriage return or erase.
fn last_frame(drawn: &str) -> String {
    let plain = strip_ansi(drawn);
    plain.rsplit(['\r', '\n']).find(|l| l.contains('%')).unwrap_or_default().to_string()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_backfill_on_a_terminal_shows_progress_to_100_percent_with_an_eta() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    let made = example("make_events")
        .args(["--events", "200000", "--days", "4", "--users", "50", "--row-group", "2000", "--output"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    for (i, scale) in [&["--workers", "2"][..], &["--processes", "2", "--workers", "1"][..]].iter().enumerate() {
        let mut cmd = example("backfill");
        cmd.args(["--mode", "backfill", "--window", "1h", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(dir.path().join(format!("out-{i}")))
            .args(*scale);
        let drawn = on_a_terminal(&cmd);
        let last = last_frame(&drawn);
        assert!(last.contains("100%"), "the bar reaches 100% ({scale:?}): {last:?}\n{drawn}");
        let eta = last.split("ETA ").nth(1).unwrap_or_default();
        let finite = eta.split_whitespace().next().is_some_and(|n| n.parse::<u64>().is_ok());
        assert!(finite, "a finite ETA ({scale:?}): {last:?}");
        assert!(last.contains("row groups") && last.contains("event time 2026-01-0"), "{last:?}");
        assert!(last.contains("files"), "files written are counted: {last:?}");
        if scale.contains(&"--processes") {
            assert!(last.contains("2/2 processes"), "the launcher shows the job's total: {last:?}");
        }
        // One bar: timely's connection chatter does not reach the terminal.
        let plain = strip_ansi(&drawn);
        assert!(!plain.contains("awaiting connections") && !plain.contains("error connecting"), "{plain}");
    }
}
