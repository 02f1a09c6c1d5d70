//! `riffle parquet schema|stats` on a file written here with arrow-rs: the figures it
//! prints are checked against the data that went in.

use std::process::Command;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

/// Runs `riffle` with no AWS settings but `env`, so nothing can reach a real AWS endpoint.
fn riffle_env(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riffle"));
    for (k, _) in std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("AWS_")) {
        cmd.env_remove(k);
    }
    let out = cmd.args(args).envs(env.iter().map(|(k, v)| (k, v))).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn riffle(args: &[&str]) -> (bool, String, String) {
    riffle_env(args, &[])
}

#[test]
fn schema_and_stats_describe_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, true),
    ]));
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(3)).build();
    let path = dir.path().join("t.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema.clone(), Some(props))
            .unwrap();
    let users = ["b", "a", "c", "e", "d"];
    let amounts = [5, -2, 9, 40, 7];
    w.write(
        &RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(users.to_vec())), Arc::new(Int64Array::from(amounts.to_vec()))],
        )
        .unwrap(),
    )
    .unwrap();
    w.close().unwrap();
    let url = path.display().to_string();

    let (ok, out, err) = riffle(&["parquet", "schema", &url]);
    assert!(ok, "{err}");
    assert!(
        out.contains("1 file(s)") && out.contains("user_id: Utf8") && out.contains("amount: Int64 (nullable)"),
        "{out}"
    );

    let (ok, out, err) = riffle(&["parquet", "stats", &url]);
    assert!(ok, "{err}");
    assert!(out.starts_with("2 row group(s), 5 rows"), "{out}");
    assert!(out.contains("row group 0: 3 rows") && out.contains("row group 1: 2 rows"), "{out}");
    assert!(out.contains("amount: min -2 max 9") && out.contains("amount: min 7 max 40"), "{out}");
    assert!(out.contains("user_id: min \"a\" max \"c\""), "{out}");

    let (ok, out, _) = riffle(&["parquet", "stats", &url, "--column", "amount"]);
    assert!(ok && !out.contains("user_id"), "{out}");

    let (ok, _, err) = riffle(&["parquet", "stats", &format!("{}/nope.parquet", dir.path().display())]);
    assert!(!ok && err.contains("nope.parquet") && err.contains("no such file"), "{err}");
    let (ok, _, err) = riffle(&["parquet", "schema", "s3://bucket/x"]);
    assert!(!ok && err.contains("no AWS credentials") && !err.contains("panicked"), "{err}");

    // The standard AWS variables reach the store: the same file on moto's S3.
    let moto = riffle_parquet::testing::Moto::start(false);
    moto.create_bucket("cli");
    moto.put("cli", "t/t.parquet", &std::fs::read(&path).unwrap());
    let env = moto.env();
    let (ok, out, err) = riffle_env(&["parquet", "stats", "s3://cli/t/", "--column", "amount"], &env);
    assert!(ok, "{err}");
    assert!(out.starts_with("2 row group(s), 5 rows") && out.contains("s3://cli/t/t.parquet row group 1"), "{out}");
}
