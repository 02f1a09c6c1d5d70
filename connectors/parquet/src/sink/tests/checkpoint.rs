//! The sink across checkpoints, driven as the runner drives it (precommit per writer,
//! commit of a completed checkpoint, a crash, recovery, a resumed run, the job's commit),
//! on local disk and on S3 (moto). What is visible is listed by other means than the
//! store the sink writes through (the file system, moto's raw HTTP listing), and each
//! file's rows are tagged with the batch they came from.
//!
//! Bug classes caught: output of a checkpoint that never completed becoming visible, or
//! left in staging after recovery; a checkpoint's commit that fails or duplicates files
//! when run again; a resumed run whose files replace those committed before the crash
//! (the same names, counted from 0 again); output after the last checkpoint lost at the
//! job's end.

use std::collections::BTreeMap;

use arrow_array::Array;
use object_store::ObjectStoreExt;
use riffle_engine::runtime::WorkerInfo;
use riffle_engine::{Batch, Elements, EventTime, PaneInfo, Watermark, Window};

use super::*;
use crate::StoreOptions;
use crate::location::runtime;
use crate::testing::Moto;

type Row = (String, i64);

/// An output location, and an independent listing of every key under it.
struct Output<'a> {
    url: String,
    options: StoreOptions,
    part_size: usize,
    keys: Box<dyn Fn() -> Vec<String> + 'a>,
}

impl<'a> Output<'a> {
    fn local(dir: &std::path::Path) -> Output<'a> {
        let root = dir.to_path_buf();
        Output {
            url: root.display().to_string(),
            options: StoreOptions::new(),
            // Small parts: the files a crash cuts off are half uploaded.
            part_size: 256,
            keys: Box::new(move || {
                let mut keys = Vec::new();
                let mut stack = vec![root.clone()];
                while let Some(d) = stack.pop() {
                    for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                        if e.file_type().unwrap().is_dir() {
                            stack.push(e.path());
                        } else {
                            keys.push(e.path().strip_prefix(&root).unwrap().display().to_string());
                        }
                    }
                }
                keys.sort();
                keys
            }),
        }
    }

    fn s3(moto: &'a Moto, bucket: &'static str, prefix: &'static str) -> Output<'a> {
        Output {
            url: format!("s3://{bucket}/{prefix}"),
            options: moto.options(),
            part_size: 5 << 20,
            // moto's raw listing, not the sink's client.
            keys: Box::new(move || {
                moto.keys(bucket, &format!("{prefix}/"))
                    .into_iter()
                    .map(|k| k[prefix.len() + 1..].to_string())
                    .collect()
            }),
        }
    }

    fn sink(&self, mode: OutputMode) -> ParquetSink<Row> {
        let w = WriteParquet::<Row>::to(&self.url)
            .options(self.options.clone())
            .mode(mode)
            .files_per(FilesPer::Window)
            .row_group_size(100)
            .upload_part_size(self.part_size);
        ParquetSink { config: Arc::new(w.config) }
    }

    /// Visible files (no part of the name starts with `_`), each with its rows counted by tag.
    fn files(&self) -> BTreeMap<String, BTreeMap<i64, usize>> {
        let location = Location::parse(&self.url, &self.options).unwrap();
        let store = location.store().unwrap();
        let mut files = BTreeMap::new();
        for key in (self.keys)() {
            if key.split('/').any(|p| p.starts_with('_')) {
                continue;
            }
            let path = Path::parse(format!("{}/{key}", location.base)).unwrap();
            let store = store.clone();
            let bytes = runtime().block_on(async move { store.get(&path).await.unwrap().bytes().await.unwrap() });
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
            let mut tags = BTreeMap::new();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch.column(1).as_any().downcast_ref::<arrow_array::Int64Array>().unwrap().clone();
                for i in 0..col.len() {
                    *tags.entry(col.value(i)).or_insert(0) += 1;
                }
            }
            files.insert(key, tags);
        }
        files
    }

    /// Rows visible, by tag.
    fn rows(&self) -> BTreeMap<i64, usize> {
        let mut all = BTreeMap::new();
        for tags in self.files().into_values() {
            for (t, n) in tags {
                *all.entry(t).or_insert(0) += n;
            }
        }
        all
    }

    fn staging(&self) -> Vec<String> {
        (self.keys)().into_iter().filter(|k| k.starts_with("_temporary/")).collect()
    }

    fn has_success(&self) -> bool {
        (self.keys)().contains(&"_SUCCESS".to_string())
    }
}

fn open(sink: &ParquetSink<Row>, worker: usize) -> Box<dyn SinkWriter> {
    let ctx = StepContext {
        name: "W".into(),
        worker: WorkerInfo { index: worker, peers: 4 },
        clock: Arc::new(riffle_engine::SystemClock),
    };
    sink.open(&ctx).unwrap()
}

/// `n` rows tagged `tag` in the window `[start, start + 10)`.
fn rows(tag: i64, start: i64, n: i64) -> Batch {
    let t = EventTime::from_millis;
    Batch::new(Elements::uniform(
        (0..n).map(|i| (format!("t{tag}-{i}"), tag)).collect(),
        t(start + 9),
        Window::Interval { start: t(start), end: t(start + 10) },
        PaneInfo::NO_FIRING,
    ))
}

fn precommit_all(writers: &mut [Box<dyn SinkWriter>]) -> Vec<Vec<u8>> {
    writers.iter_mut().map(|w| w.precommit().unwrap()).collect()
}

/// Two writers (workers 0 and 3) through two checkpoints, of which only the first
/// completes before a crash; then a resumed run from it, a checkpoint of its own, and the
/// job's end.
fn crash_and_resume(out: &Output, mode: OutputMode) {
    let sink = out.sink(mode);
    sink.check().unwrap();
    assert!(sink.commits_at_checkpoints());
    let mut writers = vec![open(&sink, 0), open(&sink, 3)];
    // Checkpoint 1: a window sealed by the watermark before it, and one still open.
    for w in &mut writers {
        w.write(rows(1, 0, 50)).unwrap();
        w.write(rows(1, 10, 30)).unwrap();
        w.advance(Watermark(EventTime::from_millis(10))).unwrap();
    }
    let c1 = precommit_all(&mut writers);
    // Checkpoint 2: more of the window that was open (a new file), never committed.
    for w in &mut writers {
        w.write(rows(2, 10, 20)).unwrap();
    }
    let c2 = precommit_all(&mut writers);
    assert_ne!(c1, c2);
    // Rows after checkpoint 2, their files open (half uploaded) at the crash.
    for w in &mut writers {
        w.write(rows(3, 20, 3_000)).unwrap();
    }
    assert_eq!(out.rows(), BTreeMap::new(), "nothing visible before a checkpoint's commit");
    sink.commit_checkpoint(1, c1.clone()).unwrap();
    assert_eq!(out.rows(), BTreeMap::from([(1, 160)]), "checkpoint 1's rows, each once");
    assert!(!out.has_success(), "_SUCCESS waits for the job's end");
    let committed = out.files();
    assert_eq!(committed.len(), 4, "a file per window per writer: {committed:?}");

    // The crash: worker 0's writer is dropped (its job failed), worker 3's process is
    // killed (no destructor runs). Checkpoint 2's files stay staged.
    let mut writers = writers.into_iter();
    drop(writers.next());
    std::mem::forget(writers.next());
    assert!(!out.staging().is_empty());
    assert_eq!(out.files(), committed);

    // A new run resumes from checkpoint 1, as the runner does.
    let sink = out.sink(mode);
    if mode == OutputMode::ErrorIfExists {
        let e = sink.check().unwrap_err().to_string();
        assert!(e.contains("already holds files"), "a fresh job is still refused: {e}");
    }
    sink.check_resuming().unwrap();
    sink.commit_checkpoint(1, c1.clone()).unwrap();
    sink.recover().unwrap();
    assert_eq!(out.files(), committed, "checkpoint 1's files as they were, and nothing else");
    assert_eq!(out.staging(), Vec::<String>::new(), "recovery leaves nothing staged");
    if out.url.starts_with('/') {
        assert!(!std::path::Path::new(&out.url).join("_temporary").exists(), "nor staging folders");
    }
    sink.commit_checkpoint(1, c1.clone()).unwrap();
    assert_eq!(out.files(), committed, "a checkpoint committed again changes nothing");

    // The resumed run writes again what came after checkpoint 1, into the same windows
    // (so the same names, were it not for the run's token), and commits its own checkpoint.
    let mut writers = vec![open(&sink, 0), open(&sink, 3)];
    for w in &mut writers {
        w.write(rows(2, 10, 20)).unwrap();
        w.write(rows(2, 0, 5)).unwrap();
    }
    let c3 = precommit_all(&mut writers);
    sink.commit_checkpoint(1, c3).unwrap();
    let now = out.files();
    for (name, tags) in &committed {
        assert_eq!(now.get(name), Some(tags), "{name}, committed at checkpoint 1, is replaced: {now:?}");
    }
    assert_eq!(out.rows(), BTreeMap::from([(1, 160), (2, 50)]));

    // The job ends: what came after the last checkpoint goes in the job's commit.
    for w in &mut writers {
        w.write(rows(4, 30, 7)).unwrap();
    }
    let mut staged = Vec::new();
    for w in &mut writers {
        w.finish().unwrap();
        staged.push(w.staged());
    }
    sink.commit(staged).unwrap();
    assert_eq!(out.rows(), BTreeMap::from([(1, 160), (2, 50), (4, 14)]));
    let end = out.files();
    for (name, tags) in &committed {
        assert_eq!(end.get(name), Some(tags), "{name} is replaced at the end");
    }
    assert!(out.has_success());
    assert_eq!(out.staging(), Vec::<String>::new());
}

#[test]
fn on_local_disk_only_completed_checkpoints_are_visible_across_a_crash() {
    for mode in [OutputMode::ErrorIfExists, OutputMode::Append] {
        let dir = tempfile::tempdir().unwrap();
        crash_and_resume(&Output::local(dir.path()), mode);
    }
}

#[test]
fn on_s3_only_completed_checkpoints_are_visible_across_a_crash() {
    let moto = Moto::start(false);
    moto.create_bucket("out");
    crash_and_resume(&Output::s3(&moto, "out", "ckpt"), OutputMode::ErrorIfExists);
    crash_and_resume(&Output::s3(&moto, "out", "appended"), OutputMode::Append);
}

#[test]
fn files_handed_to_a_checkpoint_carry_the_run_token_and_the_rest_keep_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = Output::local(dir.path());
    // Without checkpoints: today's names.
    let sink = out.sink(OutputMode::ErrorIfExists);
    let mut w = open(&sink, 3);
    w.write(rows(1, 0, 5)).unwrap();
    w.finish().unwrap();
    sink.commit(vec![w.staged()]).unwrap();
    assert_eq!(out.files().into_keys().collect::<Vec<_>>(), ["part-0-10-w00003.parquet"]);

    let dir = tempfile::tempdir().unwrap();
    let out = Output::local(dir.path());
    let sink = out.sink(OutputMode::ErrorIfExists);
    let mut w = open(&sink, 3);
    w.write(rows(1, 0, 5)).unwrap();
    let c = w.precommit().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&c).unwrap();
    assert_eq!(json["format"], 1, "{json}");
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{json}");
    let (staging, path) = (files[0]["staging"].as_str().unwrap(), files[0]["path"].as_str().unwrap());
    assert!(staging.contains("/_temporary/w00003-") && staging.ends_with("/part-0-10-w00003.parquet"), "{json}");
    let name = path.rsplit('/').next().unwrap();
    let token = name.strip_prefix("part-0-10-w00003-").and_then(|n| n.strip_suffix(".parquet")).unwrap();
    assert!(token.len() >= 8 && token.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    assert_eq!(w.precommit().unwrap(), Precommit::encode(Vec::new()), "nothing new: nothing handed over");
    w.write(rows(2, 0, 5)).unwrap(); // the same window again: the next generation
    w.finish().unwrap();
    sink.commit_checkpoint(1, vec![c]).unwrap();
    sink.commit(vec![w.staged()]).unwrap();
    let names: Vec<String> = out.files().into_keys().collect();
    assert_eq!(names, [format!("part-0-10-w00003-{token}-1.parquet"), format!("part-0-10-w00003-{token}.parquet")]);
}

#[test]
fn overwrite_modes_take_no_part_in_checkpoints_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = Output::local(dir.path());
    for mode in [OutputMode::Overwrite, OutputMode::OverwritePartitions] {
        let sink = out.sink(mode);
        assert!(!sink.commits_at_checkpoints(), "{mode:?}");
        let e = sink.check_resuming().unwrap_err().to_string();
        assert!(e.contains(&format!("{mode:?}")) && e.contains("append") && e.contains("--checkpoint-dir"), "{e}");
        let mut w = open(&sink, 0);
        w.write(rows(1, 0, 5)).unwrap();
        let e = w.precommit().unwrap_err().to_string();
        assert!(e.contains("replaces the old output"), "{e}");
    }
    assert!(out.sink(OutputMode::ErrorIfExists).commits_at_checkpoints());
    assert!(out.sink(OutputMode::Append).commits_at_checkpoints());
}

#[test]
fn a_committed_file_gone_from_its_name_and_from_staging_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Output::local(dir.path());
    let sink = out.sink(OutputMode::Append);
    let mut w = open(&sink, 1);
    w.write(rows(1, 0, 5)).unwrap();
    let c = w.precommit().unwrap();
    sink.commit_checkpoint(1, vec![c.clone()]).unwrap();
    let name = out.files().into_keys().next().unwrap();
    std::fs::remove_file(dir.path().join(&name)).unwrap();
    let e = sink.commit_checkpoint(1, vec![c]).unwrap_err().to_string();
    assert!(e.contains(&name) && e.contains("missing"), "{e}");
}

#[test]
fn precommit_bytes_of_another_format_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Output::local(dir.path());
    let sink = out.sink(OutputMode::Append);
    let e = sink.commit_checkpoint(1, vec![br#"{"format":2,"files":[]}"#.to_vec()]).unwrap_err().to_string();
    assert!(e.contains("format 2") && e.contains(&out.url), "{e}");
    let e = sink.commit_checkpoint(1, vec![b"[]".to_vec()]).unwrap_err().to_string();
    assert!(e.contains("do not read back"), "{e}");
    sink.commit_checkpoint(1, vec![Precommit::encode(Vec::new())]).unwrap();
}
