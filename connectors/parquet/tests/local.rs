//! The Parquet source and sink on local disk, against a plain-Rust oracle.
//!
//! Bug classes caught: splits lost or read twice when dealt to workers, rows of the wrong
//! event time or window, backfill panes that differ from batch panes or come late,
//! partition values not reaching the row, filters that drop wanted rows, a sink that
//! shows partial output after a failure, and errors that panic or fail to name the
//! file and column.

mod common;

use common::*;
use riffle_engine::prelude::*;
use riffle_parquet::{Op, Predicate, ReadParquet, WriteParquet};
use riffle_timely::RunOptions;
use riffle_timely::testing::{cluster_scratch_dir, local_cluster, try_run_windowed};

fn read_events(url: &str) -> ReadParquet<Event> {
    ReadParquet::<Event>::from(url).timestamp_column("ts")
}

fn run_sum(url: &str, backfill: bool, workers: usize) -> Vec<Total> {
    let mut got = try_run_windowed(&RunOptions::threads(workers), |p| {
        windowed_sum(&read_events(url).backfill(backfill).read(p), HOUR)
    })
    .unwrap()
    .into_iter()
    .map(|wv| wv.value)
    .collect::<Vec<_>>();
    got.sort();
    got
}

#[test]
fn every_row_is_read_once_at_its_event_time_at_1_and_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    let ev = events(5000, 6);
    write_files(dir.path(), &ev, 3, 700);
    let url = dir.path().display().to_string();
    for workers in [1, 4] {
        let got = try_run_windowed(&RunOptions::threads(workers), |p| read_events(&url).read(p)).unwrap();
        for wv in &got {
            assert_eq!(wv.timestamp.millis(), wv.value.ts, "event time from the ts column");
        }
        let mut rows: Vec<Event> = got.into_iter().map(|wv| wv.value).collect();
        rows.sort();
        let mut want = ev.clone();
        want.sort();
        assert_eq!(rows, want, "workers {workers}");
    }
}

#[test]
fn backfill_gives_the_same_panes_as_batch_all_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let ev = events(20_000, 48);
    write_files(dir.path(), &ev, 4, 1000);
    let url = format!("file://{}/*.parquet", dir.path().display());
    let want = oracle(&ev, HOUR);
    for workers in [1, 4] {
        assert_eq!(run_sum(&url, false, workers), want, "batch, {workers} workers");
        assert_eq!(run_sum(&url, true, workers), want, "backfill, {workers} workers");
    }
}

#[test]
fn globs_and_hive_partitions_become_columns() {
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
    struct Partitioned {
        date: String,
        user_id: String,
        amount: i64,
    }
    let dir = tempfile::tempdir().unwrap();
    let ev = events(300, 72);
    let mut want = Vec::new();
    for (day, chunk) in ev.chunks(100).enumerate() {
        let date = format!("2026-01-0{}", day + 1);
        let sub = dir.path().join(format!("date={date}"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("part-0.parquet"), parquet_bytes(chunk, 40)).unwrap();
        std::fs::write(sub.join("_SUCCESS"), b"").unwrap();
        std::fs::write(sub.join("notes.txt"), b"not parquet").unwrap();
        want.extend(chunk.iter().map(|e| Partitioned {
            date: date.clone(),
            user_id: e.user_id.clone(),
            amount: e.amount,
        }));
    }
    want.sort();
    let glob = format!("{}/date=*/*.parquet", dir.path().display());
    let mut got = riffle_timely::testing::run_bounded(|p| ReadParquet::<Partitioned>::from(&glob).read(p));
    got.sort();
    assert_eq!(got, want);

    let one_day = format!("{}/date=2026-01-0[2]/*.parquet", dir.path().display());
    let got = riffle_timely::testing::run_bounded(|p| ReadParquet::<Partitioned>::from(&one_day).read(p));
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|r| r.date == "2026-01-02"));
}

#[test]
fn time_ranges_and_predicates_keep_exactly_the_matching_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ev = events(4000, 10);
    write_files(dir.path(), &ev, 2, 300);
    let url = dir.path().display().to_string();
    let (start, end) = (T0 + 2 * HOUR + 17, T0 + 5 * HOUR);
    let mut got = riffle_timely::testing::run_bounded(|p| {
        read_events(&url)
            .time_range(EventTime::from_millis(start), EventTime::from_millis(end))
            .filter(Predicate::new("amount", Op::Ge, 100))
            .filter(Predicate::new("user_id", Op::Eq, "u3"))
            .read(p)
    });
    got.sort();
    let mut want: Vec<Event> =
        ev.into_iter().filter(|e| e.ts >= start && e.ts < end && e.amount >= 100 && e.user_id == "u3").collect();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[test]
fn a_row_type_reads_only_its_columns() {
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
    struct JustAmount {
        amount: i64,
    }
    let dir = tempfile::tempdir().unwrap();
    let ev = events(500, 1);
    write_files(dir.path(), &ev, 1, 100);
    let url = dir.path().display().to_string();
    let mut got: Vec<i64> = riffle_timely::testing::run_bounded(|p| ReadParquet::<JustAmount>::from(&url).read(p))
        .into_iter()
        .map(|r| r.amount)
        .collect();
    got.sort();
    let mut want: Vec<i64> = ev.iter().map(|e| e.amount).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn written_files_read_back_identically_with_window_columns_as_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let ev = events(3000, 5);
    write_files(&dir.path().join("in"), &ev, 2, 500);
    let input = dir.path().join("in").display().to_string();
    let output = format!("file://{}/out", dir.path().display());
    let p = Pipeline::new();
    let totals = windowed_sum(&read_events(&input).read(&p), HOUR);
    WriteParquet::to(&output).timestamp_millis("window_start").timestamp_millis("window_end").write(&totals);
    riffle_timely::run(&p, &RunOptions::threads(3)).unwrap();

    // One file per worker per day of windows, in `date=` folders (five hours of events: one day).
    let days: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // `_SUCCESS`, written last, says the job's output is complete.
    assert!(days.contains(&"_SUCCESS".to_string()), "{days:?}");
    let days: Vec<String> = days.into_iter().filter(|d| d != "_SUCCESS").collect();
    assert!(!days.is_empty() && days.iter().all(|d| d.starts_with("date=")), "{days:?}");
    let names: Vec<String> = days
        .iter()
        .flat_map(|d| std::fs::read_dir(dir.path().join("out").join(d)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.is_empty() && names.len() <= 3 * days.len(), "at most a file per worker per day: {names:?}");
    for n in &names {
        assert!(n.starts_with("part-w") && n.ends_with(".parquet") && !n.contains('#'), "{n}");
    }
    let (schema, files) = riffle_parquet::inspect::schema(&output, &Default::default()).unwrap();
    assert_eq!(files, names.len());
    assert_eq!(
        schema.field_with_name("window_start").unwrap().data_type(),
        &arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("UTC".into()))
    );
    let mut back = riffle_timely::testing::run_bounded(|p| ReadParquet::<Total>::from(&output).read(p));
    back.sort();
    assert_eq!(back, oracle(&ev, HOUR));
}

#[test]
fn a_failed_job_leaves_no_file_visible() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let ev = events(30_000, 3);
    let p = Pipeline::new();
    // The last event fails, after thousands have reached the sink.
    let last = ev.last().unwrap().clone();
    let poisoned = p.create(ev).map(move |e| {
        assert!(e != last, "a poisoned row");
        e
    });
    // Small row groups and parts: uploads are under way when the job fails.
    WriteParquet::to(&out.display().to_string()).row_group_size(1000).upload_part_size(64).write(&poisoned);
    let err = riffle_timely::run(&p, &RunOptions::threads(2)).unwrap_err();
    assert!(err.to_string().contains("poisoned"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&out).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "a failed job left {left:?}");
}

fn error_of(url: &str) -> String {
    let p = Pipeline::new();
    riffle_connectors::memory::collect(&read_events(url).read(&p));
    match riffle_timely::run(&p, &RunOptions::threads(2)) {
        Ok(_) => panic!("reading {url} should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_at_start_name_the_file_and_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();

    let e = error_of(&format!("{d}/missing.parquet"));
    assert!(e.contains("missing.parquet") && e.contains("no such file"), "{e}");
    let e = error_of(&format!("{d}/nothing-*.parquet"));
    assert!(e.contains("nothing-*.parquet"), "{e}");
    let e = error_of("ftp://host/x.parquet");
    assert!(e.contains("ftp://host/x.parquet") && e.contains("unknown scheme"), "{e}");

    std::fs::write(dir.path().join("corrupt.parquet"), b"PAR1 this is not parquet at all PAR1").unwrap();
    let e = error_of(&format!("{d}/corrupt.parquet"));
    assert!(e.contains("corrupt.parquet") && e.contains("not a readable Parquet file"), "{e}");

    let mut truncated = parquet_bytes(&events(100, 1), 50);
    truncated.drain(10..40);
    std::fs::write(dir.path().join("truncated.parquet"), truncated).unwrap();
    let e = error_of(&format!("{d}/truncated.parquet"));
    assert!(e.contains("truncated.parquet"), "{e}");

    // amount written as a string: the message names the column and both types.
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("user_id", arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new("ts", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("amount", arrow_schema::DataType::Utf8, false),
    ]));
    let batch = arrow_array::RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(arrow_array::StringArray::from(vec!["a"])),
            std::sync::Arc::new(arrow_array::Int64Array::from(vec![1])),
            std::sync::Arc::new(arrow_array::StringArray::from(vec!["12"])),
        ],
    )
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
    w.write(&batch).unwrap();
    std::fs::write(dir.path().join("wrong-type.parquet"), w.into_inner().unwrap()).unwrap();
    let e = error_of(&format!("{d}/wrong-type.parquet"));
    assert!(
        e.contains("wrong-type.parquet") && e.contains("\"amount\"") && e.contains("Utf8") && e.contains("Int64"),
        "{e}"
    );

    // No ts column: the timestamp column is named.
    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    struct NoTs {
        user_id: String,
    }
    let p = Pipeline::new();
    riffle_connectors::memory::collect(
        &ReadParquet::<NoTs>::from(&format!("{d}/wrong-type.parquet")).timestamp_column("when").read(&p),
    );
    let e = riffle_timely::run(&p, &RunOptions::threads(1)).unwrap_err().to_string();
    assert!(e.contains("\"when\"") && e.contains("user_id, ts, amount"), "{e}");
}

fn backfill_to_parquet(dir: &std::path::Path, label: &str, opts: &RunOptions) -> Vec<Total> {
    let input = dir.join("in").display().to_string();
    let out = dir.join(format!("out-{label}")).display().to_string();
    let p = Pipeline::new();
    WriteParquet::to(&out).write(&windowed_sum(&read_events(&input).backfill(true).read(&p), HOUR));
    riffle_timely::run(&p, opts).unwrap();
    let mut back = riffle_timely::testing::run_bounded(|p| ReadParquet::<Total>::from(&out).read(p));
    back.sort();
    back
}

/// Same output at 1 and 4 workers in backfill mode, read back from the files the sink
/// wrote.
#[test]
fn backfill_to_parquet_is_the_same_at_1_and_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    let ev = events(8000, 30);
    write_files(&dir.path().join("in"), &ev, 3, 600);
    let want = oracle(&ev, HOUR);
    assert_eq!(backfill_to_parquet(dir.path(), "1w", &RunOptions::threads(1)), want);
    assert_eq!(backfill_to_parquet(dir.path(), "4w", &RunOptions::threads(4)), want);
}

/// And at 2 processes x 2 workers: two real processes dealing the splits between them.
#[test]
fn backfill_to_parquet_is_the_same_at_2_processes() {
    let name = "backfill_to_parquet_is_the_same_at_2_processes";
    let dir = cluster_scratch_dir(name);
    let ev = events(8000, 30);
    if !riffle_timely::testing::is_cluster_member() {
        write_files(&dir.join("in"), &ev, 3, 600);
    }
    let got = backfill_to_parquet(&dir, "2p", &local_cluster(2, 2, name));
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(got, oracle(&ev, HOUR));
}

#[test]
fn sink_options_set_partitions_row_groups_and_compression() {
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
    struct ByUser {
        user: String,
        amount: i64,
    }
    let dir = tempfile::tempdir().unwrap();
    let ev = events(2000, 2);
    let url = dir.path().join("out").display().to_string();
    for (compression, codec) in [
        (riffle_parquet::Compression::Snappy, parquet::basic::Compression::SNAPPY),
        (riffle_parquet::Compression::Zstd, parquet::basic::Compression::ZSTD(Default::default())),
    ] {
        std::fs::remove_dir_all(dir.path().join("out")).ok();
        let p = Pipeline::new();
        let rows = p.create(ev.iter().map(|e| ByUser { user: e.user_id.clone(), amount: e.amount }).collect());
        WriteParquet::to(&url)
            .partition_by(|r: &ByUser| format!("user={}", r.user))
            .row_group_size(50)
            .compression(compression)
            .write(&rows);
        riffle_timely::run(&p, &RunOptions::threads(1)).unwrap();

        // One directory per user, each file in row groups of at most 50 rows, compressed as asked.
        let u3 = dir.path().join("out/user=u3/part-w00000.parquet");
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(std::fs::File::open(&u3).unwrap()).unwrap();
        let md = parquet::file::reader::FileReader::metadata(&reader);
        let n3 = ev.iter().filter(|e| e.user_id == "u3").count();
        assert_eq!(md.file_metadata().num_rows() as usize, n3);
        assert_eq!(md.num_row_groups(), n3.div_ceil(50));
        let got = md.row_group(0).column(0).compression();
        assert_eq!(std::mem::discriminant(&got), std::mem::discriminant(&codec), "{got:?}");

        // Read back through the partition directories: `user` comes from the path too.
        let mut back = riffle_timely::testing::run_bounded(|p| ReadParquet::<ByUser>::from(&url).read(p));
        back.sort();
        let mut want: Vec<ByUser> = ev.iter().map(|e| ByUser { user: e.user_id.clone(), amount: e.amount }).collect();
        want.sort();
        assert_eq!(back, want);
    }
}

/// Pruning is observable: a row group whose pages are garbage is never read when its
/// statistics put it outside the time range or fail a predicate, and is read (and
/// fails, naming the file) otherwise.
#[test]
fn pruned_row_groups_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let ev = events(2000, 2); // two row groups of 1000: the first hour, the second hour
    let mut bytes = parquet_bytes(&ev, 1000);
    let meta = parquet::file::serialized_reader::SerializedFileReader::new(bytes::Bytes::from(bytes.clone())).unwrap();
    let rg = parquet::file::reader::FileReader::metadata(&meta).row_group(1).clone();
    for c in rg.columns() {
        let (start, len) = c.byte_range();
        for b in &mut bytes[start as usize..(start + len) as usize] {
            *b = 0xA5;
        }
    }
    let path = dir.path().join("half-corrupt.parquet");
    std::fs::write(&path, bytes).unwrap();
    let url = path.display().to_string();
    let second_hour = ev[1000].ts;

    let mut got = riffle_timely::testing::run_bounded(|p| {
        read_events(&url).time_range(EventTime::from_millis(T0), EventTime::from_millis(second_hour)).read(p)
    });
    got.sort();
    let mut want = ev[..1000].to_vec();
    want.sort();
    assert_eq!(got, want, "the time range skips the corrupt row group");

    let max_first = ev[..1000].iter().map(|e| e.ts).max().unwrap();
    let got = riffle_timely::testing::run_bounded(|p| {
        read_events(&url).filter(Predicate::new("ts", Op::Le, max_first)).read(p)
    });
    assert_eq!(got.len(), 1000, "a predicate on statistics skips it too");

    let p = Pipeline::new();
    riffle_connectors::memory::collect(&read_events(&url).read(&p));
    let e = riffle_timely::run(&p, &RunOptions::threads(1)).unwrap_err().to_string();
    assert!(e.contains("half-corrupt.parquet"), "{e}");
}

/// Projection is observable the same way: garbage in the `amount` column chunks does not
/// matter to a row type without `amount`, and does to one with it.
#[test]
fn columns_the_row_type_does_not_name_are_never_read() {
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
    struct NoAmount {
        user_id: String,
        ts: i64,
    }
    let dir = tempfile::tempdir().unwrap();
    let ev = events(1500, 1);
    let mut bytes = parquet_bytes(&ev, 500);
    let meta = parquet::file::serialized_reader::SerializedFileReader::new(bytes::Bytes::from(bytes.clone())).unwrap();
    for rg in parquet::file::reader::FileReader::metadata(&meta).row_groups() {
        let (start, len) = rg.column(2).byte_range(); // amount
        bytes[start as usize..(start + len) as usize].fill(0x5A);
    }
    let path = dir.path().join("bad-amount.parquet");
    std::fs::write(&path, bytes).unwrap();
    let url = path.display().to_string();

    let mut got = riffle_timely::testing::run_bounded(|p| ReadParquet::<NoAmount>::from(&url).read(p));
    got.sort();
    let mut want: Vec<NoAmount> = ev.iter().map(|e| NoAmount { user_id: e.user_id.clone(), ts: e.ts }).collect();
    want.sort();
    assert_eq!(got, want);

    let p = Pipeline::new();
    riffle_connectors::memory::collect(&read_events(&url).read(&p));
    let e = riffle_timely::run(&p, &RunOptions::threads(1)).unwrap_err().to_string();
    assert!(e.contains("bad-amount.parquet"), "{e}");
}

/// A 2 x 2 job whose process 1 fails midway: no file becomes visible (the job's commit
/// never happens), and the next run into the same place starts (staging is not output)
/// and removes what the failed one left staged.
#[test]
fn a_cluster_job_that_fails_makes_nothing_visible_and_the_next_run_cleans_its_staging() {
    let name = "a_cluster_job_that_fails_makes_nothing_visible_and_the_next_run_cleans_its_staging";
    let dir = cluster_scratch_dir(name);
    let ev = events(8000, 30);
    if !riffle_timely::testing::is_cluster_member() {
        write_files(&dir.join("in"), &ev, 3, 600);
    }
    let input = dir.join("in").display().to_string();
    let out = dir.join("out");
    let url = out.display().to_string();
    let p = Pipeline::new();
    static SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let totals = windowed_sum(&read_events(&input).backfill(true).read(&p), HOUR).map(|t| {
        let seen = SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let process = std::env::var(riffle_timely::cluster::ENV_PROCESS);
        assert!(!(seen == 200 && process.as_deref() == Ok("1")), "a failure in process 1, midway");
        t
    });
    WriteParquet::to(&url).row_group_size(100).write(&totals);
    let err = riffle_timely::run(&p, &local_cluster(2, 2, name)).expect_err("process 1 fails");
    assert!(err.to_string().contains("process 1"), "{err}");
    let visible: Vec<String> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(visible.iter().all(|n| n == "_temporary"), "nothing visible, no _SUCCESS: {visible:?}");

    // The next run (one process) is not refused: staging is not output. It commits, and
    // removes the failed run's staging.
    let p = Pipeline::new();
    WriteParquet::to(&url).write(&windowed_sum(&read_events(&input).backfill(true).read(&p), HOUR));
    riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names.first().map(String::as_str), Some("_SUCCESS"), "{names:?}");
    assert!(!names.contains(&"_temporary".to_string()), "the failed run's staging is gone: {names:?}");
    let mut back = riffle_timely::testing::run_bounded(|p| ReadParquet::<Total>::from(&url).read(p));
    back.sort();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(back, oracle(&ev, HOUR));
}

/// A null where the row type has no room for one stops the job naming the file, the row
/// group, the row and the column, and saying how to read nulls.
#[test]
fn a_null_in_a_required_column_names_the_file_row_group_row_and_column() {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nulls.parquet");
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("amount", DataType::Int64, true),
    ]));
    let n = 2500i64;
    let cols: Vec<ArrayRef> = vec![
        std::sync::Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("u{}", i % 7)))),
        std::sync::Arc::new(TimestampMillisecondArray::from_iter_values((0..n).map(|i| i * 1000)).with_timezone("UTC")),
        std::sync::Arc::new(Int64Array::from_iter((0..n).map(|i| (i != 1500).then_some(i)))),
    ];
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(1000)).build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema.clone(), Some(props))
            .unwrap();
    w.write(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
    w.close().unwrap();
    let url = path.display().to_string();
    let err = try_run_windowed(&RunOptions::threads(2), |p| read_events(&url).read(p)).unwrap_err().to_string();
    assert!(err.contains("nulls.parquet") && err.contains("row group 1, row 500"), "where: {err}");
    assert!(err.contains("\"amount\"") && err.contains("Option"), "what and what to do: {err}");

    // With a dead-letter output the job goes on: every other row is read, and the bad one
    // is there with its place (exact under a time range too) and reason.
    for from in [0, 1_200_000] {
        let (good, bad) = riffle_timely::testing::run_bounded2(|p| {
            let read = read_events(&url).time_range(EventTime::from_millis(from), EventTime::MAX);
            read.read_with_dead_letters(p)
        });
        let kept = (from / 1000..n).count() - 1;
        assert_eq!(good.len(), kept, "every row but the bad one, from {from} ms");
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!((bad[0].row_group, bad[0].row), (1, 500), "{bad:?}");
        assert!(bad[0].file.ends_with("nulls.parquet") && bad[0].reason.contains("\"amount\""), "{bad:?}");
    }
}

/// A job whose other branch fails after the Parquet branch has written everything makes
/// nothing visible: the output commits only once every sink of the job has all its input.
#[test]
fn output_is_not_committed_when_another_branch_of_the_job_fails_later() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = Pipeline::new();
    WriteParquet::to(&out.display().to_string()).write(&p.create((0..100i64).map(|i| (format!("k{i}"), i)).collect()));
    // Many batches, each its own activation: the Parquet branch finishes between them,
    // and the other branch fails at its very last element.
    let slow = p.generate_sequence(400_000, |i| i).map(|x| {
        assert!(x != 399_999, "the other branch fails, late");
        x
    });
    riffle_connectors::memory::discard(&slow);
    let err = riffle_timely::run(&p, &RunOptions::threads(2)).unwrap_err().to_string();
    assert!(err.contains("the other branch fails"), "{err}");
    let visible: Vec<String> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(visible.iter().all(|n| n == "_temporary"), "nothing visible, no _SUCCESS: {visible:?}");
}
