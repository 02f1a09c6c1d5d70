//! The examples, run the way a user runs them: as programs, at several worker and
//! process counts, with the same output every time.

use std::path::PathBuf;
use std::process::{Command, Output};

/// An example binary; `cargo test` builds the package's examples beside its tests.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps");
    let path: PathBuf = dir.join("examples").join(name);
    assert!(path.exists(), "{} is not built; run `cargo test -p riffle-examples`", path.display());
    Command::new(path)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

const QUICKSTART_EXPECTED: &str = "\
dead letter: \"1767227000000,cy,oops\": bad amount \"oops\": invalid digit found in string
dead letter: \"not-a-timestamp,ana,100\": bad timestamp \"not-a-timestamp\": invalid digit found in string
hour starting 2026-01-01 00:00  ana    20.50
hour starting 2026-01-01 00:00  bo      3.99
hour starting 2026-01-01 01:00  ana     2.00
hour starting 2026-01-01 01:00  bo     15.00
hour starting 2026-01-01 01:00  cy     25.00
hour starting 2026-01-01 02:00  bo      0.50
";

#[test]
fn quickstart_prints_hourly_spend_and_dead_letters_at_any_scale() {
    for args in [&[][..], &["--workers", "4"], &["--processes", "2", "--workers", "2"]] {
        let out = run(example("quickstart").args(args));
        assert_eq!(String::from_utf8_lossy(&out.stdout), QUICKSTART_EXPECTED, "with {args:?}");
    }
}

#[test]
fn wordcount_counts_words_in_globbed_files_sorted_by_word() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "The cat sat.\nThe dog's bone!\n").unwrap();
    std::fs::write(dir.path().join("b.txt"), "a cat, a DOG'S cat\n").unwrap();
    std::fs::write(dir.path().join("skip.md"), "ignored words\n").unwrap();
    let glob = format!("{}/*.txt", dir.path().display());
    let expected = "a\t2\nbone\t1\ncat\t3\ndog's\t2\nsat\t1\nthe\t2\n";

    let single = dir.path().join("single.tsv");
    run(example("wordcount").args(["--input", &glob, "--output"]).arg(&single));
    assert_eq!(std::fs::read_to_string(&single).unwrap(), expected);

    let cluster = dir.path().join("cluster.tsv");
    run(example("wordcount").args(["--input", &glob, "--processes", "2", "--workers", "2", "--output"]).arg(&cluster));
    assert_eq!(std::fs::read_to_string(&cluster).unwrap(), expected);

    let stdout = run(example("wordcount").args(["--workers", "3", "--input", &glob]));
    assert_eq!(String::from_utf8_lossy(&stdout.stdout), expected);
}

#[test]
fn wordcount_with_a_missing_input_fails_naming_it() {
    let out = example("wordcount").args(["--input", "/no/such/dir/*.txt"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"/no/such/dir/*.txt\" matches no file"), "{stderr}");
}

#[test]
fn help_explains_the_options() {
    let out = run(example("wordcount").arg("--help"));
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--input", "--output", "--workers", "--processes", "--process", "--hostfile", "--explain"] {
        assert!(help.contains(option), "{option} missing from --help:\n{help}");
    }
}
