//! The examples, run the way a user runs them: as programs, at several worker and
//! process counts, with the same output every time.

mod common;

use common::example;
use common::parquet_out::read_totals;

use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

const QUICKSTART_EXPECTED: &str = "\
dead letter: \"1767227000000,cy,oops\": bad amount \"oops\": invalid digit found in string
dead letter: \"not-a-timestamp,ana,100\": bad timestamp \"not-a-timestamp\": invalid digit found in string
log     hour starting 2026-01-01 00:00  ana    20.50
log     hour starting 2026-01-01 00:00  bo      3.99
log     hour starting 2026-01-01 01:00  ana     2.00
log     hour starting 2026-01-01 01:00  bo     15.00
log     hour starting 2026-01-01 01:00  cy     25.00
log     hour starting 2026-01-01 02:00  bo      0.50
parquet hour starting 2026-01-01 00:00  ana    20.50
parquet hour starting 2026-01-01 00:00  bo      3.99
parquet hour starting 2026-01-01 01:00  ana     2.00
parquet hour starting 2026-01-01 01:00  bo     15.00
parquet hour starting 2026-01-01 01:00  cy     25.00
parquet hour starting 2026-01-01 02:00  bo      0.50
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

/// The windowed sums computed directly from the input files, sharing no code with Riffle.
fn expected_totals(input: &std::path::Path, window: i64) -> Vec<(String, i64, i64, i64)> {
    use riffle_parquet::arrow_array::cast::AsArray;
    use riffle_parquet::arrow_array::types::{Int64Type, TimestampMillisecondType};
    let mut sums = std::collections::BTreeMap::<(String, i64), i64>::new();
    for day in std::fs::read_dir(input).unwrap() {
        let file = std::fs::File::open(day.unwrap().path().join("events.parquet")).unwrap();
        for batch in parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 4096).unwrap() {
            let b = batch.unwrap();
            let user = b.column_by_name("user_id").unwrap().as_string::<i32>();
            let ts = b.column_by_name("ts").unwrap().as_primitive::<TimestampMillisecondType>();
            let amount = b.column_by_name("amount").unwrap().as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let start = ts.value(i) - ts.value(i).rem_euclid(window);
                *sums.entry((user.value(i).to_string(), start)).or_default() += amount.value(i);
            }
        }
    }
    sums.into_iter().map(|((u, s), t)| (u, s, s + window, t)).collect()
}

#[test]
fn backfill_example_gives_the_same_rows_in_both_modes_at_any_scale() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    run(example("make_events")
        .args(["--events", "30000", "--days", "3", "--users", "17", "--row-group", "2000", "--output"])
        .arg(&input));
    let want = expected_totals(&input, 2 * 3_600_000);
    assert!(want.len() > 17 * 30, "{}", want.len());
    let cases: [(&str, &[&str]); 4] = [
        ("batch", &[]),
        ("backfill", &[]),
        ("backfill", &["--workers", "4"]),
        ("backfill", &["--processes", "2", "--workers", "2"]),
    ];
    for (i, (mode, scale)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out-{i}"));
        let o = run(example("backfill")
            .args(["--window", "2h", "--mode", mode, "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .args(*scale));
        assert!(String::from_utf8_lossy(&o.stderr).contains("peak RSS"));
        assert_eq!(read_totals(&out), want, "{mode} {scale:?}");
    }
    // On the embedded sample, to stdout: hourly totals (the quickstart's sales), the same
    // in both modes.
    let mut want = vec![
        "ana\t1767225600000\t1767229200000\t2050",
        "bo\t1767225600000\t1767229200000\t399",
        "ana\t1767229200000\t1767232800000\t200",
        "bo\t1767229200000\t1767232800000\t1500",
        "cy\t1767229200000\t1767232800000\t2500",
        "bo\t1767232800000\t1767236400000\t50",
    ];
    want.sort();
    for (mode, processes) in [("batch", "1"), ("backfill", "1"), ("backfill", "2")] {
        let o = run(example("backfill").args(["--mode", mode, "--workers", "2", "--processes", processes]));
        let got = String::from_utf8_lossy(&o.stdout);
        assert_eq!(got.lines().collect::<Vec<_>>(), want, "{mode} on {processes} process(es)");
    }

    let bad =
        example("backfill").args(["--input", "/nonexistent/x", "--output"]).arg(dir.path().join("o")).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("/nonexistent/x") && !err.contains("panicked"), "{err}");
}

#[test]
fn dedupe_keeps_the_first_of_an_id_within_a_day_at_any_scale() {
    // Written from the model: an id's state is cleared a day after its first event, by an
    // event-time timer, so order-1 comes back at minute 1445 (after 1440) but not at 7,
    // order-2 not at 1400 (before 5 + 1440), order-3 again at 1501 and not at 1600.
    let want = [
        "order-1\tminute 0",
        "order-1\tminute 1445",
        "order-2\tminute 5",
        "order-3\tminute 1501",
        "order-3\tminute 60",
        "order-4\tminute 1502",
    ];
    for scale in [&["--workers", "1"][..], &["--workers", "4"][..], &["--processes", "2", "--workers", "2"][..]] {
        let o = run(example("dedupe").args(scale));
        let mut got: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
        got.sort();
        assert_eq!(got, want, "{scale:?}");
    }
}

#[test]
fn enrich_joins_events_with_the_user_table_and_dead_letters_unknown_users_at_any_scale() {
    let want = [
        "Ana\tPT\t1250",
        "Ana\tPT\t800",
        "Bo\tSE\t399",
        "Cy\tKE\t2500",
        "dead letter: unknown user \"u9\" (amount 10)",
    ];
    for scale in [&["--workers", "1"][..], &["--workers", "3"][..], &["--processes", "2", "--workers", "2"][..]] {
        let o = run(example("enrich").args(scale));
        let mut got: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
        got.sort();
        assert_eq!(got, want, "{scale:?}");
    }
}

/// A second run of `backfill` into the output of a first, at another worker count: by
/// default it is refused (before, the first run's files stayed beside the second's and the
/// totals in the directory came out about 1.5x too large); `overwrite` replaces them,
/// `append` adds beside them.
#[test]
fn backfill_into_an_existing_output_is_refused_replaced_or_appended_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    run(example("make_events").args(["--events", "5000", "--days", "2", "--users", "7", "--output"]).arg(&input));
    let out = dir.path().join("totals");
    let backfill = |workers: &str, mode: &str| {
        example("backfill")
            .args(["--window", "1h", "--mode", "backfill", "--workers", workers, "--output-mode", mode, "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = backfill("2", "error-if-exists");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let want = read_totals(&out);
    assert!(out.join("_SUCCESS").exists(), "the output is marked complete");

    let again = backfill("3", "error-if-exists");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "a second run is refused");
    assert!(err.contains("already holds files") && err.contains("overwrite") && err.contains("append"), "{err}");
    assert_eq!(read_totals(&out), want, "and changed nothing");

    let replaced = backfill("3", "overwrite");
    assert!(replaced.status.success(), "{}", String::from_utf8_lossy(&replaced.stderr));
    assert_eq!(read_totals(&out), want, "overwrite: the totals once, at any worker count");

    let appended = backfill("1", "append");
    assert!(appended.status.success(), "{}", String::from_utf8_lossy(&appended.stderr));
    let mut twice: Vec<_> = want.iter().flat_map(|r| [r.clone(), r.clone()]).collect();
    twice.sort();
    assert_eq!(read_totals(&out), twice, "append: both runs' rows");

    let bad = example("backfill").args(["--output-mode", "replace"]).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("overwrite-partitions"), "{err}");
    // A window too long for i64 milliseconds is refused, not wrapped to another length.
    let bad = example("backfill").args(["--window", "99999999999999d"]).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("too long"), "{err}");
}
