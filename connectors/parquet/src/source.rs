//! The parallel bounded source: row groups are splits, dealt to workers by bytes (or in
//! event-time order in backfill mode), read through parquet's async reader over
//! object_store with bounded prefetch, and turned into typed rows through serde_arrow.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, FieldRef, Schema, TimeUnit};
use futures::StreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::async_reader::{ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder};
use riffle_engine::graph::{NodeKind, OutputInfo, PortRef, Windowing};
use riffle_engine::prelude::{DoFn, ProcessContext, TupleTag};
use riffle_engine::runtime::{SourceFn, SourcePoll, SourceProgress, SourceReader, StepContext};
use riffle_engine::{Batch, Data, Elements, EventTime, PCollection, PaneInfo, Pipeline, Watermark, Window};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::columns::ArrowRecords;
use crate::dataset::{DataFile, Dataset, ObjectReader, Split, arrow_type, deal, leaf_index, millis_scale, stats};
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

/// A row that did not decode into the row type ([`ReadParquet::read_with_dead_letters`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRow {
    /// The file.
    pub file: String,
    /// The row group in the file.
    pub row_group: usize,
    /// The row in the row group, counted from 0.
    pub row: usize,
    /// Why it did not decode.
    pub reason: String,
}

/// What a source with a dead-letter output emits.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Decoded<T> {
    Row(T),
    Bad(BadRow),
}

/// Splits decoded rows from dead letters.
struct SplitBad<T> {
    bad: TupleTag<BadRow>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for SplitBad<T> {
    fn clone(&self) -> Self {
        SplitBad { bad: self.bad.clone(), _t: PhantomData }
    }
}

impl<T: Data> DoFn for SplitBad<T> {
    type In = Decoded<T>;
    type Out = T;
    fn process(&mut self, d: &Decoded<T>, ctx: &mut ProcessContext<'_, T>) {
        match d {
            Decoded::Row(r) => ctx.output(r.clone()),
            Decoded::Bad(b) => ctx.output_to(&self.bad, b.clone()),
        }
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
        let dataset = self.dataset()?;
        let splits: Vec<Split> =
            dataset.splits(self.config.time_column.as_deref()).into_iter().filter(|s| self.keep(&dataset, s)).collect();
        let mine = deal(splits, ctx.worker.peers, ctx.worker.index, self.config.backfill);
        let starts: Vec<Watermark> =
            mine.iter().map(|s| Watermark(s.time.map_or(EventTime::MIN, |t| EventTime::from_millis(t.0)))).collect();
        let sizes: Vec<u64> = mine
            .iter()
            .map(|s| dataset.files[s.file].meta.metadata().row_group(s.row_group).compressed_size().max(0) as u64)
            .collect();
        let event_time_end = mine.iter().filter_map(|s| s.time.map(|t| t.1)).max();
        // Backfill: a worker may start a split up to two split-widths (of event time)
        // past the sinks' watermark, enough for workers dealt neighbouring splits to
        // read at once, and no further: state then holds a few splits' windows.
        let read_ahead = self
            .config
            .backfill
            .then(|| 2 * mine.iter().filter_map(|s| s.time).map(|(lo, hi)| hi - lo).max().unwrap_or(0));
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
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            riffle_engine::Error::Internal(format!("cannot start a runtime for the Parquet reader: {e}"))
        })?;
        rt.spawn(task.run(mine, tx));
        Ok(Box::new(ParquetReader {
            read_ahead,
            rt,
            rx,
            starts,
            next: 0,
            progress: SourceProgress {
                units_total: sizes.len() as u64,
                bytes_total: sizes.iter().sum(),
                event_time_end,
                ..SourceProgress::default()
            },
            sizes,
            backfill: self.config.backfill,
            ended: false,
        }))
    }
}

enum Msg {
    Rows(Batch),
    SplitDone,
    Failed(Error),
    End,
}

/// A row group being read: its stream and the batch decoded next.
struct OpenSplit {
    file: usize,
    row_group: usize,
    stream: ParquetRecordBatchStream<ObjectReader>,
    next: Option<RecordBatch>,
}

/// Reads one worker's splits in order, `prefetch` row groups at a time, and sends their
/// rows; runs on the I/O runtime.
struct ReadTask<T> {
    dataset: Arc<Dataset>,
    store: Arc<dyn object_store::ObjectStore>,
    config: Arc<ReadConfig>,
    fields: Option<Arc<Vec<FieldRef>>>,
    step: String,
    _row: PhantomData<fn() -> T>,
}

impl<T: Data> ReadTask<T> {
    async fn run(self, splits: Vec<Split>, tx: mpsc::Sender<Msg>) {
        let this = Arc::new(self);
        // Up to `prefetch` splits are opened ahead, each in a task of its own so its I/O
        // goes on while the current split is decoded; a split is decoded 1024 rows at a
        // time as the reader takes them, so what is held is the compressed row groups
        // in flight and a few decoded batches, not whole decoded row groups.
        let mut opened = futures::stream::iter(splits)
            .map(|s| tokio::spawn(this.clone().open_split(s)))
            .buffered(this.config.prefetch);
        while let Some(joined) = opened.next().await {
            let result = joined.unwrap_or_else(|e| Err(Error::Config(format!("a Parquet read task failed: {e}"))));
            if let Err(e) = this.drain(result, &tx).await {
                if let Some(e) = e {
                    let _ = tx.send(Msg::Failed(e)).await;
                }
                return; // the reader is gone (the job failed), or this split failed
            }
        }
        let _ = tx.send(Msg::End).await;
        tracing::debug!("{}: read task done", this.step);
    }

    /// Sends the rows of one opened split, then `SplitDone`. `Err(None)`: the reader is gone.
    async fn drain(&self, opened: Result<OpenSplit>, tx: &mpsc::Sender<Msg>) -> Result<(), Option<Error>> {
        let OpenSplit { file, row_group, mut stream, mut next } = opened.map_err(Some)?;
        let file = &self.dataset.files[file];
        // Rows of the row group before this batch, for messages that name a row.
        let mut row = 0;
        while let Some(rb) = next {
            let read = rb.num_rows();
            let (rb, kept) = self.filter(file, rb).map_err(Some)?;
            // Where the batch's rows are in the row group.
            let place = |i: usize| row + kept.as_ref().map_or(i, |k| k[i]);
            if rb.num_rows() > 0 {
                let batch = match self.config.dead_letters {
                    true => self.to_decoded(file, rb, row_group, &place),
                    false => self.to_elements(file, rb),
                }
                .map_err(|e| Some(self.name_the_row(e, row_group, &place)))?;
                tx.send(Msg::Rows(batch)).await.map_err(|_| None)?;
            }
            row += read;
            next = stream.next().await.transpose().map_err(|e| Some(Error::parquet(&file.url, e)))?;
        }
        tx.send(Msg::SplitDone).await.map_err(|_| None)
    }

    /// Starts reading one row group: fetches its column chunks and decodes the first batch.
    async fn open_split(self: Arc<Self>, split: Split) -> Result<OpenSplit> {
        let file = &self.dataset.files[split.file];
        let schema = file.meta.schema();
        let mut wanted: BTreeSet<&str> = BTreeSet::new();
        match &self.fields {
            Some(fields) => wanted.extend(fields.iter().map(|f| f.name().as_str())),
            None => wanted.extend(schema.fields().iter().map(|f| f.name().as_str())),
        }
        wanted.extend(self.config.time_column.as_deref());
        wanted.extend(self.config.predicates.iter().map(|p| p.column()));
        let roots: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| wanted.contains(f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(file.meta.parquet_schema(), roots);
        let reader = ObjectReader { store: self.store.clone(), path: file.path.clone(), size: file.size };
        let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, file.meta.clone())
            .with_row_groups(vec![split.row_group])
            .with_projection(mask)
            .with_batch_size(ROWS_PER_BATCH)
            .build()
            .map_err(|e| Error::parquet(&file.url, e))?;
        let next = stream.next().await.transpose().map_err(|e| Error::parquet(&file.url, e))?;
        Ok(OpenSplit { file: split.file, row_group: split.row_group, stream, next })
    }

    /// Drops rows outside the time range or failing a predicate.
    /// The rows that pass the read's filters and time range, and where each was in `rb`
    /// (`None`: no filter, every row).
    fn filter(&self, file: &DataFile, rb: RecordBatch) -> Result<(RecordBatch, Option<Vec<usize>>)> {
        let mut masks = Vec::new();
        if let Some((start, end)) = self.config.range {
            let ts = self.timestamps(file, &rb)?;
            masks.push(ts.iter().map(|t| Some(*t >= start && *t < end)).collect::<arrow_array::BooleanArray>());
        }
        for p in &self.config.predicates {
            let col = rb.column_by_name(p.column()).expect("projected predicate column");
            masks.push(p.mask(col.as_ref()).map_err(|m| Error::Config(format!("{}: {m}", file.url)))?);
        }
        let Some(mut mask) = masks.pop() else { return Ok((rb, None)) };
        for m in masks {
            mask = arrow_and(&mask, &m);
        }
        let kept = (0..mask.len()).filter(|&i| mask.is_valid(i) && mask.value(i)).collect();
        let rb = arrow_select::filter::filter_record_batch(&rb, &mask)
            .map_err(|e| Error::Convert { url: file.url.clone(), message: e.to_string() })?;
        Ok((rb, Some(kept)))
    }

    /// The event time of each row, from the timestamp column.
    fn timestamps(&self, file: &DataFile, rb: &RecordBatch) -> Result<Vec<EventTime>> {
        let Some(name) = &self.config.time_column else {
            return Ok(vec![EventTime::MIN; rb.num_rows()]);
        };
        let col = rb.column_by_name(name).expect("projected timestamp column");
        let (mul, div) = millis_scale(col.data_type()).expect("checked at start");
        if col.null_count() > 0 {
            return Err(Error::Convert {
                url: file.url.clone(),
                message: format!("timestamp column {name:?} has a null; every row needs an event time"),
            });
        }
        let ms = |v: i64| EventTime::from_millis(v.saturating_mul(mul).div_euclid(div));
        Ok(match col.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => {
                col.as_primitive::<TimestampSecondType>().values().iter().map(|v| ms(*v)).collect()
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                col.as_primitive::<TimestampMillisecondType>().values().iter().map(|v| ms(*v)).collect()
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                col.as_primitive::<TimestampMicrosecondType>().values().iter().map(|v| ms(*v)).collect()
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                col.as_primitive::<TimestampNanosecondType>().values().iter().map(|v| ms(*v)).collect()
            }
            DataType::Int64 => col.as_primitive::<Int64Type>().values().iter().map(|v| ms(*v)).collect(),
            DataType::Date64 => {
                col.as_primitive::<arrow_array::types::Date64Type>().values().iter().map(|v| ms(*v)).collect()
            }
            DataType::Date32 => col.as_primitive::<Date32Type>().values().iter().map(|v| ms(i64::from(*v))).collect(),
            DataType::Int32 => col.as_primitive::<Int32Type>().values().iter().map(|v| ms(i64::from(*v))).collect(),
            other => unreachable!("timestamp type {other} passed the check"),
        })
    }

    /// Converts a record batch into a Riffle batch of rows, each at its event time.
    fn to_elements(&self, file: &DataFile, rb: RecordBatch) -> Result<Batch> {
        let times = self.timestamps(file, &rb)?;
        let rb = self.with_partitions(file, rb)?;
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<ArrowRecords>() {
            // Columns wanted: the batch is one element, at its earliest event time (no
            // earlier than the watermark, which is at most the split's minimum).
            let t = times.iter().min().copied().unwrap_or(EventTime::MIN);
            return Ok(Batch::new(Elements::uniform(vec![ArrowRecords(rb)], t, Window::Global, PaneInfo::NO_FIRING)));
        }
        let rows: Vec<T> = serde_arrow::from_record_batch(&rb).map_err(|e| {
            let message = match self.first_null_in_required_column(&rb) {
                Some((column, i)) => format!(
                    "reading rows: batch row {i} has a null in column {column:?}, which the row type {} requires \
                     (make that field an Option to read nulls) ({e})",
                    std::any::type_name::<T>()
                ),
                None => format!("reading rows: {e}"),
            };
            Error::Convert { url: file.url.clone(), message }
        })?;
        Ok(Batch::new(Elements::with_timestamps(rows, times, Window::Global, PaneInfo::NO_FIRING)))
    }

    /// Like `to_elements`, for a read with a dead-letter output: rows that do not decode
    /// become [`BadRow`]s (the batch is decoded whole, and row by row only when that fails).
    fn to_decoded(
        &self,
        file: &DataFile,
        rb: RecordBatch,
        row_group: usize,
        place: &dyn Fn(usize) -> usize,
    ) -> Result<Batch> {
        let times = self.timestamps(file, &rb)?;
        let rb = self.with_partitions(file, rb)?;
        let mut out = Elements::<Decoded<T>>::with_capacity(rb.num_rows());
        if let Ok(rows) = serde_arrow::from_record_batch::<Vec<T>>(&rb) {
            for (r, t) in rows.into_iter().zip(times) {
                out.push(Decoded::Row(r), t, Window::Global, PaneInfo::NO_FIRING);
            }
            return Ok(Batch::new(out));
        }
        for (i, t) in times.into_iter().enumerate() {
            let one = rb.slice(i, 1);
            let d = match serde_arrow::from_record_batch::<Vec<T>>(&one).map(|mut v| v.pop()) {
                Ok(Some(r)) => Decoded::Row(r),
                Ok(None) | Err(_) => {
                    let why = match self.first_null_in_required_column(&one) {
                        Some((column, _)) => format!(
                            "a null in column {column:?}, which the row type {} requires",
                            std::any::type_name::<T>()
                        ),
                        None => match serde_arrow::from_record_batch::<Vec<T>>(&one) {
                            Err(e) => e.to_string(),
                            Ok(_) => "no row".into(),
                        },
                    };
                    Decoded::Bad(BadRow { file: file.url.clone(), row_group, row: place(i), reason: why })
                }
            };
            out.push(d, t, Window::Global, PaneInfo::NO_FIRING);
        }
        Ok(Batch::new(out))
    }

    /// The first row of `rb` with a null where the row type's field cannot hold one:
    /// the column, and the row's index in the batch.
    fn first_null_in_required_column(&self, rb: &RecordBatch) -> Option<(String, usize)> {
        let fields = self.fields.as_ref()?;
        fields
            .iter()
            .filter(|f| !f.is_nullable())
            .filter_map(|f| {
                let column = rb.column_by_name(f.name())?;
                let nulls = column.logical_nulls()?;
                let i = (0..column.len()).find(|&i| nulls.is_null(i))?;
                Some((f.name().clone(), i))
            })
            .min_by_key(|(_, i)| *i)
    }

    /// Names the row group and row of a row that did not decode (`batch row N` in the
    /// message becomes the row's place in its row group).
    fn name_the_row(&self, e: Error, row_group: usize, place: &dyn Fn(usize) -> usize) -> Error {
        match e {
            Error::Convert { url, message } => {
                let message = match message.split_once("batch row ").and_then(|(head, rest)| {
                    let (n, tail) = rest.split_once(' ')?;
                    Some((head, n.parse::<usize>().ok()?, tail))
                }) {
                    Some((head, n, tail)) => format!("{head}row group {row_group}, row {} {tail}", place(n)),
                    None => format!("row group {row_group}: {message}"),
                };
                Error::Convert { url, message }
            }
            other => other,
        }
    }

    /// Adds the partition values the row type asks for as constant columns.
    fn with_partitions(&self, file: &DataFile, rb: RecordBatch) -> Result<RecordBatch> {
        if file.partitions.is_empty() {
            return Ok(rb);
        }
        let n = rb.num_rows();
        let (mut fields, mut columns): (Vec<FieldRef>, Vec<ArrayRef>) =
            (rb.schema().fields().iter().cloned().collect(), rb.columns().to_vec());
        for (k, v) in &file.partitions {
            if rb.column_by_name(k).is_some() {
                continue;
            }
            let wanted = match &self.fields {
                Some(fs) => fs.iter().find(|f| f.name() == k).map(|f| f.data_type().clone()),
                None => Some(DataType::Utf8),
            };
            let array: ArrayRef = match wanted {
                None => continue,
                Some(t) if matches!(t, DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64) => {
                    let x: i64 = v.parse().map_err(|_| Error::SchemaMismatch {
                        url: file.url.clone(),
                        column: k.clone(),
                        file_type: format!("partition value {v:?}"),
                        field_type: t.to_string(),
                        row_type: std::any::type_name::<T>().into(),
                    })?;
                    Arc::new(Int64Array::from(vec![x; n]))
                }
                Some(_) => Arc::new(StringArray::from(vec![v.as_str(); n])),
            };
            fields.push(Arc::new(Field::new(k, array.data_type().clone(), false)));
            columns.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::Convert { url: file.url.clone(), message: e.to_string() })
    }
}

fn arrow_and(a: &arrow_array::BooleanArray, b: &arrow_array::BooleanArray) -> arrow_array::BooleanArray {
    a.iter().zip(b.iter()).map(|(x, y)| Some(x.unwrap_or(false) && y.unwrap_or(false))).collect()
}

/// One worker's reader: takes what its I/O task decoded.
struct ParquetReader {
    /// In backfill mode, how far (ms) this reader may run ahead of the sinks' watermark.
    read_ahead: Option<i64>,
    rt: tokio::runtime::Runtime,
    rx: mpsc::Receiver<Msg>,
    /// The earliest event time of each of this worker's splits, in reading order.
    starts: Vec<Watermark>,
    /// The first split not yet completely emitted.
    next: usize,
    /// The compressed size of each of this worker's splits, in reading order.
    sizes: Vec<u64>,
    /// Splits and bytes read, of this worker's.
    progress: SourceProgress,
    backfill: bool,
    ended: bool,
}

impl SourceReader for ParquetReader {
    fn poll(&mut self, _max_elements: usize) -> riffle_engine::Result<SourcePoll> {
        if self.ended {
            return Ok(SourcePoll::Done);
        }
        let msg = match self.rx.try_recv() {
            Ok(m) => m,
            Err(mpsc::error::TryRecvError::Empty) => {
                match self.rt.block_on(async { tokio::time::timeout(WAIT_FOR_DATA, self.rx.recv()).await }) {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(task_lost()),
                    Err(_) => return Ok(SourcePoll::Pending),
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return Err(task_lost()),
        };
        Ok(match msg {
            // A reader reads one split at a time, and in backfill mode its watermark is
            // that split's earliest event time: the rows go out at their own split's
            // watermark, whichever worker was dealt it (docs/semantics.md).
            Msg::Rows(b) => SourcePoll::SplitBatch(b, self.watermark()),
            Msg::SplitDone => {
                self.progress.units_done += 1;
                self.progress.bytes_done += self.sizes.get(self.next).copied().unwrap_or(0);
                self.next += 1;
                SourcePoll::Advanced
            }
            Msg::Failed(e) => return Err(e.into()),
            Msg::End => {
                self.ended = true;
                SourcePoll::Done
            }
        })
    }

    fn read_ahead_millis(&self) -> Option<i64> {
        self.read_ahead
    }

    fn progress(&self) -> Option<SourceProgress> {
        Some(self.progress)
    }

    /// This worker's position: row groups read and left of those it was dealt.
    fn split_gauges(&self) -> Vec<(&'static str, String, i64)> {
        let p = self.progress;
        let left = p.units_total.saturating_sub(p.units_done);
        vec![("row_groups_read", "dealt".into(), p.units_done as i64), ("row_groups_left", "dealt".into(), left as i64)]
    }

    fn watermark(&self) -> Watermark {
        if self.backfill {
            // Splits are read in order of their earliest event time, so the earliest
            // event time still unread is that of the first split not yet done.
            self.starts.get(self.next).or(self.starts.last()).copied().unwrap_or(Watermark::MIN)
        } else {
            Watermark::MIN
        }
    }
}

fn task_lost() -> riffle_engine::Error {
    riffle_engine::Error::Internal("the Parquet read task ended without finishing (it panicked?)".into())
}
