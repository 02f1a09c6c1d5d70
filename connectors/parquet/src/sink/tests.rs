//! The sink's writers and commit, on local disk.

use std::collections::BTreeMap;

use super::*;
use riffle_engine::runtime::WorkerInfo;
use riffle_engine::{Batch, Elements, EventTime, PaneInfo, Watermark, Window};

mod checkpoint;

/// A sink's writer for worker 3 of 4, and `finish`, which finishes it and commits the
/// job as the runner does.
struct Writer {
    sink: ParquetSink<(String, i64)>,
    w: Box<dyn SinkWriter>,
}

impl std::ops::Deref for Writer {
    type Target = Box<dyn SinkWriter>;
    fn deref(&self) -> &Self::Target {
        &self.w
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.w
    }
}

impl Writer {
    fn finish(&mut self) -> riffle_engine::Result<()> {
        self.w.finish()?;
        let staged = self.w.staged();
        self.sink.commit(vec![staged])
    }
}

fn writer(dir: &std::path::Path) -> Writer {
    writer_with(dir, |w| w)
}

fn writer_with(
    dir: &std::path::Path,
    f: impl FnOnce(WriteParquet<(String, i64)>) -> WriteParquet<(String, i64)>,
) -> Writer {
    let sink = ParquetSink::<(String, i64)> {
        config: Arc::new(
            f(WriteParquet::to(&dir.display().to_string()).row_group_size(100).upload_part_size(256)).config,
        ),
    };
    sink.check().unwrap();
    let ctx = StepContext {
        name: "W".into(),
        worker: WorkerInfo { index: 3, peers: 4 },
        clock: std::sync::Arc::new(riffle_engine::SystemClock),
    };
    let w = sink.open(&ctx).unwrap();
    Writer { sink, w }
}

fn batch(n: i64) -> Batch {
    let rows = (0..n).map(|i| (format!("k{i}"), i)).collect();
    Batch::new(Elements::uniform(rows, EventTime::from_millis(0), Window::Global, PaneInfo::NO_FIRING))
}

fn visible(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_file_appears_whole_at_finish_and_never_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path());
    for _ in 0..5 {
        w.write(batch(10_000)).unwrap();
    }
    // Parts are uploading (to the staging directory), but nothing has the final name.
    assert_eq!(visible(dir.path()), ["_temporary"]);
    w.finish().unwrap();
    assert_eq!(visible(dir.path()), ["_SUCCESS", "part-w00003.parquet"]);
}

#[test]
fn windows_sealed_by_the_watermark_appear_only_at_finish_and_late_rows_get_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer_with(dir.path(), |w| w.files_per(FilesPer::Window));
    let t = EventTime::from_millis;
    let window = |s: i64| Window::Interval { start: t(s), end: t(s + 10) };
    let rows = |s: i64, n: i64| {
        Batch::new(Elements::uniform(
            (0..n).map(|i| (format!("k{i}"), i)).collect(),
            t(s + 9),
            window(s),
            PaneInfo::NO_FIRING,
        ))
    };
    w.write(rows(0, 5)).unwrap();
    w.write(rows(10, 3)).unwrap();
    w.advance(Watermark(t(10))).unwrap(); // seals [0, 10)
    w.write(rows(0, 2)).unwrap(); // a late pane of [0, 10)
    let named: Vec<String> = visible(dir.path()).into_iter().filter(|n| n.starts_with("part-")).collect();
    assert_eq!(named, Vec::<String>::new(), "nothing under a final name before finish");
    w.finish().unwrap();
    assert_eq!(
        visible(dir.path()),
        ["_SUCCESS", "part-0-10-w00003-1.parquet", "part-0-10-w00003.parquet", "part-10-20-w00003.parquet"]
    );
    let rows_in_named = |name: &str| rows_in(&dir.path().join(name));
    assert_eq!(rows_in_named("part-0-10-w00003.parquet"), 5);
    assert_eq!(rows_in_named("part-0-10-w00003-1.parquet"), 2);
    assert_eq!(rows_in_named("part-10-20-w00003.parquet"), 3);
}

#[test]
fn a_writer_dropped_before_finish_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path());
    for _ in 0..5 {
        w.write(batch(10_000)).unwrap();
    }
    assert!(!visible(dir.path()).is_empty(), "the upload was under way: {:?}", visible(dir.path()));
    drop(w);
    assert_eq!(visible(dir.path()), Vec::<String>::new());
}

fn rows_in(path: &std::path::Path) -> i64 {
    let f = std::fs::File::open(path).unwrap();
    parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(f).unwrap(),
    )
    .file_metadata()
    .num_rows()
}

#[test]
fn a_day_of_hourly_windows_goes_to_one_file_sealed_when_the_day_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path());
    let t = EventTime::from_millis;
    const DAY0: i64 = 1_767_225_600_000; // 2026-01-01
    let hour = |day: i64, h: i64| {
        let start = DAY0 + day * DAY + h * HOUR;
        Batch::new(Elements::uniform(
            (0..10).map(|i| (format!("k{i}"), h)).collect(),
            t(start + HOUR - 1),
            Window::Interval { start: t(start), end: t(start + HOUR) },
            PaneInfo::NO_FIRING,
        ))
    };
    for h in 0..24 {
        w.write(hour(0, h)).unwrap();
    }
    w.write(hour(1, 0)).unwrap();
    w.advance(Watermark(t(DAY0 + DAY - 1))).unwrap();
    assert_eq!(w.files_written(), 0, "the first day is not over");
    w.advance(Watermark(t(DAY0 + DAY))).unwrap();
    assert_eq!(w.files_written(), 1, "the first day's file is sealed as the day ends");
    w.write(hour(0, 23)).unwrap(); // a late pane of the first day
    w.finish().unwrap();
    assert_eq!(visible(dir.path()), ["_SUCCESS", "date=2026-01-01", "date=2026-01-02"]);
    assert_eq!(visible(&dir.path().join("date=2026-01-01")), ["part-w00003-1.parquet", "part-w00003.parquet"]);
    assert_eq!(rows_in(&dir.path().join("date=2026-01-01/part-w00003.parquet")), 240);
    assert_eq!(rows_in(&dir.path().join("date=2026-01-01/part-w00003-1.parquet")), 10);
    assert_eq!(rows_in(&dir.path().join("date=2026-01-02/part-w00003.parquet")), 10);
}

#[test]
fn a_file_rolls_to_the_next_once_it_holds_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer_with(dir.path(), |w| w.files_per(FilesPer::Hour).max_file_size(64 << 10));
    let t = EventTime::from_millis;
    let window = Window::Interval { start: t(0), end: t(HOUR) };
    for b in 0..8 {
        let rows = (0..ROWS_PER_ENCODE as i64).map(|i| (format!("key-{b}-{i}-{}", "x".repeat(20)), i)).collect();
        w.write(Batch::new(Elements::uniform(rows, t(HOUR - 1), window, PaneInfo::NO_FIRING))).unwrap();
    }
    w.finish().unwrap();
    let files = visible(&dir.path().join("date=1970-01-01/hour=00"));
    assert!(files.len() >= 2, "rolled by size: {files:?}");
    let total: i64 = files.iter().map(|f| rows_in(&dir.path().join("date=1970-01-01/hour=00").join(f))).sum();
    assert_eq!(total, 8 * ROWS_PER_ENCODE as i64, "every row once, across the rolled files");
}

/// One committed run of worker 3 writing `rows` rows in the global window, under
/// `partition`, with `mode`.
fn run(dir: &std::path::Path, mode: OutputMode, partition: &'static str, rows: i64) -> riffle_engine::Result<()> {
    let sink = ParquetSink::<(String, i64)> {
        config: Arc::new(
            WriteParquet::to(&dir.display().to_string()).mode(mode).partition_by(move |_| partition.into()).config,
        ),
    };
    sink.check()?;
    let ctx = StepContext {
        name: "W".into(),
        worker: WorkerInfo { index: 3, peers: 4 },
        clock: std::sync::Arc::new(riffle_engine::SystemClock),
    };
    let mut w = Writer { w: sink.open(&ctx)?, sink };
    w.write(batch(rows))?;
    w.finish()
}

/// Rows per visible file under `dir`, by path.
fn rows_by_file(dir: &std::path::Path) -> BTreeMap<String, i64> {
    let mut found = BTreeMap::new();
    for part in visible(dir).into_iter().filter(|p| !p.starts_with('_')) {
        for f in visible(&dir.join(&part)) {
            found.insert(format!("{part}/{f}"), rows_in(&dir.join(&part).join(&f)));
        }
    }
    found
}

#[test]
fn a_second_run_into_the_same_output_is_refused_unless_a_mode_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), OutputMode::ErrorIfExists, "p=a", 5).unwrap();
    run(dir.path(), OutputMode::ErrorIfExists, "p=b", 5).unwrap_err(); // checked first: nothing written
    let err = run(dir.path(), OutputMode::ErrorIfExists, "p=a", 5).unwrap_err().to_string();
    assert!(err.contains("already holds files") && err.contains("overwrite") && err.contains("append"), "{err}");
    assert_eq!(rows_by_file(dir.path()), BTreeMap::from([("p=a/part-w00003.parquet".into(), 5)]));

    // Overwrite: only the new run's rows are left.
    run(dir.path(), OutputMode::Overwrite, "p=b", 7).unwrap();
    assert_eq!(rows_by_file(dir.path()), BTreeMap::from([("p=b/part-w00003.parquet".into(), 7)]));

    // Overwrite partitions: p=a is added, p=b replaced by the run that writes it.
    run(dir.path(), OutputMode::OverwritePartitions, "p=a", 3).unwrap();
    run(dir.path(), OutputMode::OverwritePartitions, "p=b", 2).unwrap();
    assert_eq!(
        rows_by_file(dir.path()),
        BTreeMap::from([("p=a/part-w00003.parquet".into(), 3), ("p=b/part-w00003.parquet".into(), 2)])
    );

    // Append: both runs' files, under names of their own.
    run(dir.path(), OutputMode::Append, "p=a", 4).unwrap();
    let files = rows_by_file(dir.path());
    assert_eq!(files.values().sum::<i64>(), 3 + 2 + 4, "{files:?}");
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(visible(dir.path()).contains(&"_SUCCESS".to_string()));
    assert!(!visible(dir.path()).contains(&"_temporary".to_string()), "staging cleaned");
}

#[test]
fn the_commit_removes_what_a_killed_run_left_in_staging() {
    let dir = tempfile::tempdir().unwrap();
    let left = dir.path().join("_temporary/w00000-1-dead/p=a");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("part-w00000.parquet"), b"half a file").unwrap();
    run(dir.path(), OutputMode::ErrorIfExists, "p=a", 5).unwrap();
    assert_eq!(visible(dir.path()), ["_SUCCESS", "p=a"]);
}

#[test]
fn a_write_that_fails_says_which_file_and_why() {
    let dir = tempfile::tempdir().unwrap();
    // The output's staging cannot be created: its parent is a file.
    std::fs::write(dir.path().join("out"), b"a file, not a directory").unwrap();
    let err = run(&dir.path().join("out"), OutputMode::Append, "p=a", 5).unwrap_err().to_string();
    assert!(err.contains("writing ") && err.contains("p=a/part-w00003"), "names the file: {err}");
    assert!(err.to_lowercase().contains("not a directory"), "says why: {err}");
    assert!(!err.contains("not a readable Parquet file"), "{err}");
}
