//! The parallel bounded source: row groups are splits, dealt to workers by bytes (or in
//! event-time order in backfill mode), read through parquet's async reader over
//! object_store with bounded prefetch, and turned into typed rows through serde_arrow.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_schema::FieldRef;
use riffle_engine::graph::{NodeKind, OutputInfo, PortRef, Windowing};
use riffle_engine::prelude::TupleTag;
use riffle_engine::runtime::{SourceFn, SourceProgress, SourceReader, StepContext};
use riffle_engine::{Data, EventTime, PCollection, Pipeline, Watermark};
use tokio::sync::mpsc;

use crate::dataset::{DataFile, Dataset, Split, arrow_type, deal, leaf_index, millis_scale, stats};
use crate::error::{Error, Result};
use crate::location::{Location, StoreOptions, at_start};
use crate::predicate::Predicate;
use crate::schema::{compatible, row_fields};

/// Rows per record batch decoded, and so per Riffle batch emitted.
const ROWS_PER_BATCH: usize = 1024;
/// Decoded batches waiting between a worker's I/O task and its reader.
const CHANNEL_BATCHES: usize = 4;
/// How long a reader waits for its I/O task (which runs only while it waits) before
/// telling the runner to come back later.
const WAIT_FOR_DATA: Duration = Duration::from_millis(2);

/// Reads Parquet files as a bounded collection of typed rows.
///
/// `T` is a `#[derive(Serialize, Deserialize)]` struct whose field names are column
/// names; only those columns are read (projection pushdown). Columns from hive-style
/// partition directories (`date=2026-01-01/`) fill fields of the same name.
///
/// ```
/// use riffle_parquet::{ReadParquet, WriteParquet};
/// #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct Sale { user: String, ts: i64, cents: i64 }
///
/// let dir = tempfile::tempdir().unwrap();
/// let out = dir.path().join("sales").display().to_string();
/// let sales = vec![Sale { user: "ana".into(), ts: 1_000, cents: 5 }, Sale { user: "bo".into(), ts: 2_000, cents: 7 }];
/// let p = riffle_engine::Pipeline::new();
/// WriteParquet::to(&out).write(&p.create(sales.clone()));
/// riffle_timely::run(&p, &riffle_timely::RunOptions::threads(2)).unwrap();
///
/// let mut got = riffle_timely::testing::run_bounded(|p| {
///     ReadParquet::<Sale>::from(&out).timestamp_column("ts").read(p)
/// });
/// got.sort_by_key(|s| s.ts);
/// assert_eq!(got, sales);
/// ```
///
/// # Watermarks
/// In batch mode (the default) the watermark stays at the minimum until every worker has
/// read its share, then jumps to the end: every window fires once. In backfill mode
/// ([`ReadParquet::backfill`]) each worker reads its splits in order of their earliest
/// event time (from the timestamp column's statistics) and holds the watermark at the
/// earliest event time it has not read, so windows fire as the read moves through time
/// and only the windows in flight are held in memory. The panes are the same.
///
/// # Determinism
/// Splits are dealt to workers from the sorted listing, identically on every process;
/// the set of rows read does not depend on the worker count.
///
/// # Checkpoints
/// A reader's position names the row groups finished (by file URL and index) and, for a
/// row group in progress, how many of its rows are behind those returned; resumed at any
/// worker count, each worker skips the finished row groups of its new share and starts
/// the one in progress past those rows. What was prefetched is read again.
///
/// # Errors
/// At start, naming the location or file and column: a bad URL, nothing found, no
/// credentials or credentials refused, a file that is not Parquet, a column the row type
/// needs that is missing or of another type (both types named), a timestamp column that
/// is missing or not a time. While reading: a corrupt row group, a null event time.
pub struct ReadParquet<T> {
    config: ReadConfig,
    _row: PhantomData<fn() -> T>,
}

#[derive(Clone, Debug)]
struct ReadConfig {
    url: String,
    options: StoreOptions,
    time_column: Option<String>,
    range: Option<(EventTime, EventTime)>,
    predicates: Vec<Predicate>,
    backfill: bool,
    prefetch: usize,
    /// Rows that do not decode go to a dead-letter output instead of failing the job.
    dead_letters: bool,
}

impl<T: Data> ReadParquet<T> {
    /// Reads the Parquet files at `url`: a path, `file://`, `s3://bucket/prefix` or
    /// `hdfs://host:port/path`; a file, a directory or prefix (every file under it), or a
    /// glob (`s3://b/events/date=*/*.parquet`).
    pub fn from(url: &str) -> Self {
        ReadParquet {
            config: ReadConfig {
                url: url.to_string(),
                options: StoreOptions::new(),
                time_column: None,
                range: None,
                predicates: Vec::new(),
                backfill: false,
                prefetch: 2,
                dead_letters: false,
            },
            _row: PhantomData,
        }
    }

    /// Takes each row's event time from `column`: a timestamp (any unit), a date, or an
    /// int64 of milliseconds since the epoch. Without it every row is at
    /// [`EventTime::MIN`].
    pub fn timestamp_column(mut self, column: &str) -> Self {
        self.config.time_column = Some(column.to_string());
        self
    }

    /// Reads only rows with an event time in `[start, end)`; row groups whose statistics
    /// lie outside are not read at all. Needs a timestamp column.
    pub fn time_range(mut self, start: EventTime, end: EventTime) -> Self {
        self.config.range = Some((start, end));
        self
    }

    /// Reads only rows that match `predicate`; row groups whose statistics rule it out
    /// are not read at all.
    pub fn filter(mut self, predicate: Predicate) -> Self {
        self.config.predicates.push(predicate);
        self
    }

    /// Backfill mode: read in event-time order and advance the watermark as the read
    /// goes (see the type's `# Watermarks`). Needs a timestamp column.
    pub fn backfill(mut self, on: bool) -> Self {
        self.config.backfill = on;
        self
    }

    /// Store settings (S3 endpoint, credentials) on top of the environment.
    pub fn options(mut self, options: StoreOptions) -> Self {
        self.config.options = options;
        self
    }

    /// How many row groups each worker decodes ahead of what it has emitted (2 by
    /// default; at least 1).
    pub fn prefetch(mut self, row_groups: usize) -> Self {
        self.config.prefetch = row_groups.max(1);
        self
    }

    /// Adds the source to `p`.
    pub fn read(self, p: &Pipeline) -> PCollection<T> {
        self.add_to(p)
    }

    /// Adds the source to `p` with a dead-letter output: rows that do not decode into `T`
    /// (a null where the row type has no `Option`, a value out of the field's range) go
    /// there with their file, row group, row and reason, and the job goes on, as the Kafka
    /// source does with records that do not decode.
    pub fn read_with_dead_letters(mut self, p: &Pipeline) -> (PCollection<T>, PCollection<BadRow>) {
        self.config.dead_letters = true;
        let read: PCollection<Decoded<T>> = self.add_to(p);
        let bad = TupleTag::<BadRow>::new("dead-letter");
        let (good, tagged) = read.par_do_with_outputs(SplitBad { bad: bad.clone(), _t: PhantomData }, &[&bad]);
        (good, tagged.get(&bad))
    }

    /// Adds the source to `p`, its elements of type `E` (`T`, or `Decoded<T>` with dead
    /// letters).
    fn add_to<E: Data>(self, p: &Pipeline) -> PCollection<E> {
        let info = OutputInfo {
            type_name: std::any::type_name::<E>(),
            bounded: true,
            windowing: Windowing::default(),
            tag: None,
        };
        if let Some(why) = self.needs_time_column() {
            p.defer_error("ReadParquet", why);
        }
        let node = p.add_step("ReadParquet", NodeKind::Source(self.into_source()), vec![], vec![info]);
        PCollection::from_port(p, PortRef { node, port: 0 })
    }

    /// The source alone, to read as part of another: history before a live topic
    /// (`riffle_kafka::ReadKafka::after_history`).
    pub fn source(self) -> riffle_engine::Result<Arc<dyn SourceFn>> {
        match self.needs_time_column() {
            Some(why) => Err(riffle_engine::Error::Config(format!("reading {}: {why}", self.config.url))),
            None => Ok(self.into_source()),
        }
    }

    fn needs_time_column(&self) -> Option<&'static str> {
        ((self.config.backfill || self.config.range.is_some()) && self.config.time_column.is_none())
            .then_some("backfill mode and time ranges need a timestamp column: call .timestamp_column(\"ts\")")
    }

    fn into_source(self) -> Arc<dyn SourceFn> {
        Arc::new(ParquetSource::<T> {
            config: Arc::new(self.config),
            fields: row_fields::<T>().map(Arc::new),
            dataset: Mutex::new(None),
            _row: PhantomData,
        })
    }
}

struct ParquetSource<T> {
    config: Arc<ReadConfig>,
    fields: Option<Arc<Vec<FieldRef>>>,
    /// Listed and checked once per process, shared by its workers.
    dataset: Mutex<Option<Arc<Dataset>>>,
    _row: PhantomData<fn() -> T>,
}

impl<T: Data> ParquetSource<T> {
    fn dataset(&self) -> Result<Arc<Dataset>> {
        let mut cached = self.dataset.lock().expect("dataset lock");
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let location = Location::parse(&self.config.url, &self.config.options)?;
        let store = location.store()?;
        let dataset = at_start(&self.config.url, &self.config.options, Dataset::load(&location, store.clone()))?;
        // Dropped here, outside the runtime: an HDFS client owns a runtime of its own.
        drop(store);
        for file in &dataset.files {
            self.validate(file)?;
        }
        let d = Arc::new(dataset);
        *cached = Some(d.clone());
        Ok(d)
    }

    /// Checks one file against the row type, the timestamp column and the predicates.
    fn validate(&self, file: &DataFile) -> Result<()> {
        let schema = file.meta.schema();
        let available = || schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
        let row_type = std::any::type_name::<T>().to_string();
        let partition = |name: &str| file.partitions.iter().any(|(k, _)| k == name);
        if let Some(fields) = &self.fields {
            for field in fields.iter() {
                match schema.field_with_name(field.name()) {
                    Ok(col) if !compatible(col.data_type(), field.data_type()) => {
                        return Err(Error::SchemaMismatch {
                            url: file.url.clone(),
                            column: field.name().clone(),
                            file_type: col.data_type().to_string(),
                            field_type: field.data_type().to_string(),
                            row_type,
                        });
                    }
                    Ok(_) => {}
                    Err(_) if partition(field.name()) || field.is_nullable() => {}
                    Err(_) => {
                        return Err(Error::MissingColumn {
                            url: file.url.clone(),
                            column: field.name().clone(),
                            row_type,
                            available: available(),
                        });
                    }
                }
            }
        }
        if let Some(c) = &self.config.time_column {
            match arrow_type(file, c) {
                None => {
                    return Err(Error::MissingColumn {
                        url: file.url.clone(),
                        column: c.clone(),
                        row_type: "(the timestamp column)".into(),
                        available: available(),
                    });
                }
                Some(t) if millis_scale(&t).is_none() => {
                    return Err(Error::SchemaMismatch {
                        url: file.url.clone(),
                        column: c.clone(),
                        file_type: t.to_string(),
                        field_type: "a timestamp, date or int64 of milliseconds".into(),
                        row_type: "(the timestamp column)".into(),
                    });
                }
                Some(_) => {}
            }
        }
        for pred in &self.config.predicates {
            match schema.field_with_name(pred.column()) {
                Err(_) => {
                    return Err(Error::MissingColumn {
                        url: file.url.clone(),
                        column: pred.column().to_string(),
                        row_type: "(a filter)".into(),
                        available: available(),
                    });
                }
                Ok(f) if !Predicate::supports(f.data_type()) => {
                    return Err(Error::SchemaMismatch {
                        url: file.url.clone(),
                        column: pred.column().to_string(),
                        file_type: f.data_type().to_string(),
                        field_type: "an integer, float, string, timestamp or date".into(),
                        row_type: "(a filter)".into(),
                    });
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Whether statistics leave any chance that split `s` holds a wanted row.
    fn keep(&self, d: &Dataset, s: &Split) -> bool {
        if let (Some((start, end)), Some((lo, hi))) = (self.config.range, s.time)
            && (hi < start.millis() || lo >= end.millis())
        {
            return false;
        }
        let file = &d.files[s.file];
        let rg = file.meta.metadata().row_group(s.row_group);
        self.config.predicates.iter().all(|p| p.may_match(leaf_index(file, p.column()).and_then(|i| stats(rg, i))))
    }
}

impl<T: Data> SourceFn for ParquetSource<T> {
    fn is_bounded(&self) -> bool {
        true
    }

    fn check(&self) -> riffle_engine::Result<()> {
        self.dataset().map(drop).map_err(Into::into)
    }

    fn open(&self, ctx: &StepContext) -> riffle_engine::Result<Box<dyn SourceReader>> {
        Ok(Box::new(self.open_at(ctx, &SavedSplits::default())?))
    }

    fn checkpoints(&self) -> bool {
        true
    }

    /// This worker's share at its new count, as `open` deals it, less the splits any
    /// saved position says were finished, the split in progress resumed past the rows
    /// returned. In backfill mode the watermark, the earliest event time of the first
    /// split not finished, is then what it was: no split's watermark moves.
    fn open_from(&self, ctx: &StepContext, saved: &[Vec<u8>]) -> riffle_engine::Result<Box<dyn SourceReader>> {
        let saved: Vec<ParquetPosition> = riffle_engine::position::decode_all(&ctx.name, POSITION_VERSION, saved)?;
        Ok(Box::new(self.open_at(ctx, &SavedSplits::merge(saved))?))
    }
}

impl<T: Data> ParquetSource<T> {
    fn open_at(&self, ctx: &StepContext, saved: &SavedSplits) -> Result<ParquetReader> {
        let dataset = self.dataset()?;
        let splits: Vec<Split> =
            dataset.splits(self.config.time_column.as_deref()).into_iter().filter(|s| self.keep(&dataset, s)).collect();
        let dealt = deal(splits, ctx.worker.peers, ctx.worker.index, self.config.backfill);
        let id = |s: &Split| SplitId { file: dataset.files[s.file].url.clone(), row_group: s.row_group };
        let size =
            |s: &Split| dataset.files[s.file].meta.metadata().row_group(s.row_group).compressed_size().max(0) as u64;
        // Backfill: a worker may start a split up to two split-widths (of event time)
        // past the sinks' watermark, enough for workers dealt neighbouring splits to
        // read at once, and no further: state then holds a few splits' windows. Figured
        // on the whole share, so that it is the same resumed or not.
        let read_ahead = self
            .config
            .backfill
            .then(|| 2 * dealt.iter().filter_map(|s| s.time).map(|(lo, hi)| hi - lo).max().unwrap_or(0));
        let event_time_end = dealt.iter().filter_map(|s| s.time.map(|t| t.1)).max();
        let (done, mine): (Vec<Split>, Vec<Split>) = dealt.into_iter().partition(|s| saved.finished.contains(&id(s)));
        let skips: Vec<u64> = mine.iter().map(|s| saved.returned.get(&id(s)).copied().unwrap_or(0)).collect();
        let starts: Vec<Watermark> =
            mine.iter().map(|s| Watermark(s.time.map_or(EventTime::MIN, |t| EventTime::from_millis(t.0)))).collect();
        let sizes: Vec<u64> = mine.iter().map(size).collect();
        let ids: Vec<SplitId> = mine.iter().map(id).collect();
        let progress = SourceProgress {
            units_done: done.len() as u64,
            units_total: (done.len() + sizes.len()) as u64,
            bytes_done: done.iter().map(size).sum(),
            bytes_total: done.iter().map(size).sum::<u64>() + sizes.iter().sum::<u64>(),
            event_time_end,
            ..SourceProgress::default()
        };
        let location = Location::parse(&self.config.url, &self.config.options)?;
        let store = location.store()?;
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let task = ReadTask::<T> {
            dataset,
            store,
            config: self.config.clone(),
            fields: self.fields.clone(),
            step: ctx.name.to_string(),
            _row: PhantomData,
        };
        // The reader's own single-threaded runtime, driven only inside `poll`: decoding
        // then happens on the worker's thread, which allocates and frees every batch.
        // (On the shared I/O threads, glibc's per-thread arenas made the peak memory of
        // a long backfill grow with its length, though the live memory did not.)
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start a runtime for the Parquet reader: {e}")))?;
        rt.spawn(task.run(mine.into_iter().zip(skips.iter().map(|n| *n as usize)).collect(), tx));
        Ok(ParquetReader {
            read_ahead,
            rt,
            rx,
            starts,
            next: 0,
            progress,
            sizes,
            backfill: self.config.backfill,
            ended: false,
            ids,
            returned: skips,
            finished: saved.finished.clone(),
        })
    }
}

/// Format version of [`ParquetPosition`].
const POSITION_VERSION: u8 = 1;

/// A row group of the dataset, named so that it means the same in any run that lists the
/// same files.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
struct SplitId {
    file: String,
    row_group: usize,
}

/// A reader's position: the splits finished (its own, and those it was restored with,
/// whichever worker finished them, so that a position holds across restores at changing
/// counts), and for each split of its share begun but not finished, the rows of its row
/// group behind the rows returned. What the read task has fetched or decoded ahead is not
/// in it. The backfill watermark is not saved: it is the earliest event time of the
/// splits not finished, which the splits' statistics give again.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct ParquetPosition {
    finished: Vec<SplitId>,
    returned: Vec<(SplitId, u64)>,
}

/// Every saved position, merged.
#[derive(Default)]
struct SavedSplits {
    finished: Arc<std::collections::BTreeSet<SplitId>>,
    returned: std::collections::BTreeMap<SplitId, u64>,
}

impl SavedSplits {
    fn merge(saved: Vec<ParquetPosition>) -> Self {
        let mut finished = std::collections::BTreeSet::new();
        let mut returned = std::collections::BTreeMap::new();
        for p in saved {
            finished.extend(p.finished);
            for (id, rows) in p.returned {
                let r = returned.entry(id).or_insert(0);
                *r = rows.max(*r);
            }
        }
        returned.retain(|id, _| !finished.contains(id));
        SavedSplits { finished: Arc::new(finished), returned }
    }
}

mod dead_letters;
mod reader;
mod task;

pub use dead_letters::BadRow;
use dead_letters::{Decoded, SplitBad};
use reader::ParquetReader;
use task::{Msg, ReadTask};
