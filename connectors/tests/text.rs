//! The text connector against real files: globs, splitting across workers, atomic output.

use riffle_engine::prelude::*;
use riffle_timely::RunOptions;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn reads_every_line_of_every_matching_file_once_at_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", "one\ntwo\r\nthree");
    write(dir.path(), "b.txt", "four\n\nfive\n");
    write(dir.path(), "c.log", "not matched\n");
    let pattern = format!("{}/*.txt", dir.path().display());
    for workers in [1, 2, 5] {
        let opts = RunOptions::threads(workers);
        let out =
            riffle_timely::testing::try_run_windowed(&opts, |p| riffle_connectors::text::read_lines(p, &[&pattern]))
                .unwrap();
        let mut lines: Vec<String> = out.into_iter().map(|wv| wv.value).collect();
        lines.sort();
        assert_eq!(lines, ["", "five", "four", "one", "three", "two"], "at {workers} workers");
    }
}

#[test]
fn invalid_utf8_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.txt"), b"fine\n\xff\xfe\n").unwrap();
    let pattern = dir.path().join("bad.txt").display().to_string();
    let err = riffle_timely::testing::try_run_windowed(&RunOptions::threads(1), |p| {
        riffle_connectors::text::read_lines(p, &[&pattern])
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.txt line 2 is not UTF-8"), "{err}");
}

#[test]
fn writes_sorted_lines_and_replaces_the_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    std::fs::write(&out, "previous\n").unwrap();
    let p = Pipeline::new();
    riffle_connectors::text::write_lines(&p.create(vec![3, 1, 2]), &out, |x| format!("n={x}"));
    riffle_timely::run(&p, &RunOptions::threads(3)).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "n=1\nn=2\nn=3\n");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind: {leftovers:?}");
}

#[test]
fn a_failed_job_leaves_the_previous_output_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    std::fs::write(&out, "previous\n").unwrap();
    let p = Pipeline::new();
    let bad = p.create((0..50).collect::<Vec<i32>>()).map(|x| if x == 49 { panic!("no") } else { x });
    riffle_connectors::text::write_lines(&bad, &out, |x| x.to_string());
    assert!(riffle_timely::run(&p, &RunOptions::threads(2)).is_err());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous\n");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no partial file is visible");
}
