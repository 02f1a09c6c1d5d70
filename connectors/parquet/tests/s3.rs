//! The Parquet source and sink against a real S3 API server on loopback (moto), started
//! and stopped by each test on a free port.
//!
//! Bug classes caught: S3 listing and globbing that differ from local disk, uploads that
//! become visible before the job completes or stay behind after it fails, and S3's
//! failures (no such key or bucket, refused or missing credentials) reported as
//! anything but a clear message at start.

mod common;

use common::*;
use riffle_engine::prelude::*;
use riffle_parquet::testing::Moto;
use riffle_parquet::{ReadParquet, StoreOptions, WriteParquet};
use riffle_timely::RunOptions;

fn read(url: &str, opts: &StoreOptions) -> ReadParquet<Event> {
    ReadParquet::<Event>::from(url).timestamp_column("ts").options(opts.clone())
}

fn run_err(p: &Pipeline) -> String {
    match riffle_timely::run(p, &RunOptions::threads(2)) {
        Ok(_) => panic!("the job should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn reads_a_prefix_and_a_glob_with_partitions_from_s3() {
    let moto = Moto::start(false);
    moto.create_bucket("data");
    let ev = events(3000, 12);
    for (i, chunk) in ev.chunks(1000).enumerate() {
        moto.put("data", &format!("events/day={i}/part-0.parquet"), &parquet_bytes(chunk, 250));
    }
    moto.put("data", "events/day=0/_SUCCESS", b"");
    let opts = moto.options();

    let want = oracle(&ev, HOUR);
    for backfill in [false, true] {
        let mut got = riffle_timely::testing::run_bounded(|p| {
            windowed_sum(&read("s3://data/events", &opts).backfill(backfill).read(p), HOUR)
        });
        got.sort();
        assert_eq!(got, want, "backfill {backfill}");
    }

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
    struct WithDay {
        day: i64,
        amount: i64,
    }
    let got = riffle_timely::testing::run_bounded(|p| {
        ReadParquet::<WithDay>::from("s3://data/events/day=[12]/*.parquet").options(opts.clone()).read(p)
    });
    assert_eq!(got.len(), 2000);
    let sum: i64 = got.iter().map(|r| r.amount).sum();
    assert_eq!(sum, ev[1000..].iter().map(|e| e.amount).sum::<i64>());
    assert!(got.iter().all(|r| r.day == 1 || r.day == 2));
}

#[test]
fn writes_to_s3_atomically_and_reads_back() {
    let moto = Moto::start(false);
    moto.create_bucket("out");
    let opts = moto.options();
    let ev = events(4000, 6);
    let p = Pipeline::new();
    let totals = windowed_sum(
        &p.create_timestamped(ev.iter().map(|e| (e.clone(), EventTime::from_millis(e.ts))).collect()),
        HOUR,
    );
    WriteParquet::to("s3://out/totals/").options(opts.clone()).timestamp_millis("window_start").write(&totals);
    riffle_timely::run(&p, &RunOptions::threads(2)).unwrap();
    let keys = moto.keys("out", "totals/");
    // A file per worker per day of windows (six hours: one day), nothing staged left, and
    // `_SUCCESS`, written last.
    assert!(keys.contains(&"totals/_SUCCESS".to_string()), "{keys:?}");
    let files: Vec<&String> = keys.iter().filter(|k| *k != "totals/_SUCCESS").collect();
    let whole = |k: &&String| k.starts_with("totals/date=2026-01-01/part-w") && k.ends_with(".parquet");
    assert!((1..=2).contains(&files.len()) && files.iter().all(whole), "{keys:?}");
    let mut back = riffle_timely::testing::run_bounded(|p| {
        ReadParquet::<Total>::from("s3://out/totals").options(opts.clone()).read(p)
    });
    back.sort();
    assert_eq!(back, oracle(&ev, HOUR));

    // A job that fails after uploads started: nothing becomes visible.
    let last = ev.last().unwrap().clone();
    let p = Pipeline::new();
    let poisoned = p.create(ev.clone()).map(move |e| {
        assert!(e != last, "a poisoned row");
        e
    });
    WriteParquet::to("s3://out/failed")
        .options(opts.clone())
        .row_group_size(500)
        .upload_part_size(5 << 20)
        .write(&poisoned);
    let e = run_err(&p);
    assert!(e.contains("poisoned"), "{e}");
    assert_eq!(moto.keys("out", "failed"), Vec::<String>::new());
}

#[test]
fn s3_errors_name_the_location_at_start() {
    let moto = Moto::start(false);
    moto.create_bucket("bkt");
    moto.put("bkt", "bad/corrupt.parquet", b"PAR1 not a parquet file PAR1");
    let opts = moto.options();
    let err = |url: &str, opts: &StoreOptions| {
        let p = Pipeline::new();
        riffle_connectors::memory::collect(&read(url, opts).read(&p));
        run_err(&p)
    };

    let e = err("s3://bkt/nothing/here.parquet", &opts);
    assert!(e.contains("s3://bkt/nothing/here.parquet") && e.contains("no such file"), "{e}");
    let e = err("s3://no-such-bucket/x", &opts);
    assert!(e.contains("s3://no-such-bucket/x"), "{e}");
    let e = err("s3://bkt/bad/corrupt.parquet", &opts);
    assert!(e.contains("s3://bkt/bad/corrupt.parquet") && e.contains("not a readable Parquet file"), "{e}");
    let e = err("s3:///x", &opts);
    assert!(e.contains("bad location") && e.contains("bucket"), "{e}");

    // Schema mismatch: amount as float.
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("user_id", arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new("ts", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("amount", arrow_schema::DataType::Float64, false),
    ]));
    let batch = arrow_array::RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(arrow_array::StringArray::from(vec!["a"])),
            std::sync::Arc::new(arrow_array::Int64Array::from(vec![1])),
            std::sync::Arc::new(arrow_array::Float64Array::from(vec![1.5])),
        ],
    )
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
    w.write(&batch).unwrap();
    moto.put("bkt", "float/x.parquet", &w.into_inner().unwrap());
    let e = err("s3://bkt/float/x.parquet", &opts);
    assert!(e.contains("\"amount\"") && e.contains("Float64") && e.contains("Int64"), "{e}");

    // No credentials at all: said at start, without trying a metadata service.
    assert!(
        std::env::var_os("AWS_ACCESS_KEY_ID").is_none(),
        "this test checks what happens without AWS credentials: unset AWS_ACCESS_KEY_ID"
    );
    let no_keys = StoreOptions::new().s3("endpoint", &moto.endpoint()).s3("allow_http", "true");
    let e = err("s3://bkt/x", &no_keys);
    assert!(e.contains("s3://bkt/x") && e.contains("no AWS credentials") && e.contains("AWS_ACCESS_KEY_ID"), "{e}");

    // And a sink to a bucket that does not exist fails at start too.
    let p = Pipeline::new();
    WriteParquet::to("s3://missing-bucket/out").options(opts.clone()).write(&p.create(vec![Total {
        user_id: "a".into(),
        window_start: 0,
        window_end: 1,
        total: 1,
    }]));
    let e = run_err(&p);
    assert!(e.contains("s3://missing-bucket/out"), "{e}");
}

#[test]
fn refused_credentials_are_a_clear_error_for_source_and_sink() {
    let moto = Moto::start(true);
    let opts = moto.options();
    let p = Pipeline::new();
    riffle_connectors::memory::collect(&read("s3://b/events", &opts).read(&p));
    let e = run_err(&p);
    assert!(e.contains("s3://b/events") && e.contains("access denied"), "{e}");

    let p = Pipeline::new();
    WriteParquet::to("s3://b/out").options(opts.clone()).write(&p.create(vec![Total {
        user_id: "a".into(),
        window_start: 0,
        window_end: 1,
        total: 1,
    }]));
    let e = run_err(&p);
    assert!(e.contains("s3://b/out") && e.contains("access denied"), "{e}");
}
