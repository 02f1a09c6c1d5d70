//! The Parquet source across checkpoints: readers at one worker count read part of the
//! files, save their positions, and readers at another count resume from them, against
//! the files' rows as the oracle.
//!
//! Bug classes caught: a row returned twice or never (a split resumed from what the read
//! task had fetched or decoded ahead rather than what was returned, a finished split read
//! again by the worker it is dealt to at the new count, a split in progress restarted or
//! resumed at a row count that forgets rows the filters dropped); a backfill watermark
//! that goes back across the restore.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use riffle_engine::position::testing::{across_checkpoint, take, take_all};
use riffle_engine::runtime::{SourceFn, SourceReader, StepContext, WorkerInfo};
use riffle_engine::{EventTime, ManualClock, Watermark};
use riffle_parquet::ReadParquet;

const PATIENCE: Duration = Duration::from_secs(10);

/// 12 000 events over a day in 3 files of row groups of 2 500 rows: 6 splits, each read
/// in batches of 1 024 rows, so a checkpoint falls inside a split.
fn dataset() -> (tempfile::TempDir, Vec<Event>) {
    let dir = tempfile::tempdir().unwrap();
    let ev = events(12_000, 24);
    write_files(dir.path(), &ev, 3, 2_500);
    (dir, ev)
}

fn sorted(mut v: Vec<Event>) -> Vec<Event> {
    v.sort();
    v
}

#[test]
fn a_read_resumes_past_every_row_returned_at_any_worker_count() {
    let (dir, ev) = dataset();
    let source = ReadParquet::<Event>::from(&dir.path().display().to_string()).timestamp_column("ts").source().unwrap();
    assert!(source.checkpoints());
    for (before, after) in [(2, 1), (2, 3), (1, 4), (3, 3)] {
        for first in [1, 1_500, 3_000] {
            let run = across_checkpoint::<Event>(
                source.as_ref(),
                Arc::new(ManualClock::new()),
                (before, after),
                first,
                PATIENCE,
            )
            .unwrap();
            assert_eq!(sorted(run.union()), sorted(ev.clone()), "{before} -> {after}, {first} rows first");
        }
    }
}

#[test]
fn a_filtered_backfill_resumes_with_its_watermark_where_it_was() {
    let (dir, ev) = dataset();
    let (start, end) = (T0 + 3 * HOUR, T0 + 20 * HOUR);
    let source = ReadParquet::<Event>::from(&dir.path().display().to_string())
        .timestamp_column("ts")
        .time_range(EventTime::from_millis(start), EventTime::from_millis(end))
        .filter(riffle_parquet::Predicate::new("amount", riffle_parquet::Op::Gt, 400i64))
        .backfill(true)
        .source()
        .unwrap();
    let want: Vec<Event> = ev.iter().filter(|e| e.ts >= start && e.ts < end && e.amount > 400).cloned().collect();
    assert!(want.len() > 2_000 && want.len() < ev.len() / 2, "the filters keep some rows: {}", want.len());
    for (before, after) in [(2, 1), (2, 3), (3, 2)] {
        let run =
            across_checkpoint::<Event>(source.as_ref(), Arc::new(ManualClock::new()), (before, after), 700, PATIENCE)
                .unwrap();
        let case = format!("{before} -> {after}");
        assert_eq!(sorted(run.union()), sorted(want.clone()), "{case}");
        let least = |w: &[Watermark]| w.iter().min().copied().unwrap();
        assert!(
            least(&run.restored_watermarks) >= least(&run.saved_watermarks),
            "{case}: the watermark went back: {:?} {:?}",
            run.saved_watermarks,
            run.restored_watermarks
        );
        for (e, t, w) in run.before.iter().chain(&run.after).flatten() {
            assert!(w.0 <= *t && t.millis() == e.ts, "{case}: a row at {t:?} sent at {w:?}");
        }
    }
}

/// Two checkpoints in a row, at 2, then 3, then 1 worker: the second positions still
/// name the splits the first run finished, though the second run never read them.
#[test]
fn a_read_resumed_twice_reads_each_row_once() {
    let (dir, ev) = dataset();
    let source = ReadParquet::<Event>::from(&dir.path().display().to_string()).timestamp_column("ts").source().unwrap();
    let clock = Arc::new(ManualClock::new());
    let ctx = |index, peers| StepContext {
        name: "ReadParquet".into(),
        worker: WorkerInfo { index, peers },
        clock: clock.clone(),
    };
    let mut got = Vec::new();
    let mut read_some = |readers: &mut Vec<Box<dyn SourceReader>>, rows: usize| -> Vec<Vec<u8>> {
        for r in readers.iter_mut() {
            got.extend(take::<Event>(r.as_mut(), rows, rows, PATIENCE).unwrap().0.into_iter().map(|(e, _, _)| e));
        }
        readers.iter().map(|r| r.position().unwrap()).collect()
    };
    let mut two: Vec<_> = (0..2).map(|w| source.open(&ctx(w, 2)).unwrap()).collect();
    let saved = read_some(&mut two, 4_000);
    drop(two);
    let mut three: Vec<_> = (0..3).map(|w| source.open_from(&ctx(w, 3), &saved).unwrap()).collect();
    let saved = read_some(&mut three, 1_000);
    drop(three);
    let mut one = source.open_from(&ctx(0, 1), &saved).unwrap();
    let (rest, done) = take_all::<Event>(one.as_mut(), PATIENCE).unwrap();
    assert!(done);
    got.extend(rest.into_iter().map(|(e, _, _)| e));
    assert_eq!(sorted(got), sorted(ev));
}

/// A source that checkpoints must say so, and one whose positions are of another
/// format is refused by name.
#[test]
fn a_position_of_another_format_is_refused() {
    let (dir, _) = dataset();
    let source: Arc<dyn SourceFn> =
        ReadParquet::<Event>::from(&dir.path().display().to_string()).timestamp_column("ts").source().unwrap();
    let ctx = StepContext {
        name: "ReadParquet".into(),
        worker: WorkerInfo { index: 0, peers: 1 },
        clock: Arc::new(ManualClock::new()),
    };
    let e = source.open_from(&ctx, &[vec![99, 1, 2]]).err().unwrap().to_string();
    assert!(e.contains("ReadParquet") && e.contains("version 99"), "{e}");
}
