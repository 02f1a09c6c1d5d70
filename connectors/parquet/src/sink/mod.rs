//! The sink: typed rows to Parquet files, one per worker per day of windows (or per
//! hour, or per window) and partition, rolled by size, each made visible atomically when
//! the input is complete.

use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, TimeUnit};
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use riffle_engine::runtime::{SinkFn, SinkWriter, StepContext};
use riffle_engine::{Data, PCollection};

use crate::error::{Error, Result};
use crate::location::{Location, StoreOptions, at_start, runtime};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Rows buffered per file before they are encoded into the file's current row group.
const ROWS_PER_ENCODE: usize = 8192;

/// How the column chunks of written files are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// zstd at its default level: small files (the default).
    Zstd,
    /// snappy: faster, larger.
    Snappy,
    /// none.
    None,
}

/// Which windows' rows share a file (per worker and partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilesPer {
    /// The windows that start on one day (UTC): `date=YYYY-MM-DD/part-wWORKER.parquet`.
    /// The default: a backfill of 30 days of hourly windows writes 30 files per worker,
    /// not 720 small ones.
    Day,
    /// The windows that start in one hour: `date=YYYY-MM-DD/hour=HH/part-wWORKER.parquet`.
    Hour,
    /// Each window: `part-START-END-wWORKER.parquet`, with its bounds in milliseconds.
    Window,
}

/// What the sink does with output already at its location (Spark's save modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputMode {
    /// A location that already holds files is an error at start (the default): a second
    /// run into the same place never mixes its files with the first's.
    #[default]
    ErrorIfExists,
    /// The job's output replaces what was there, at the commit.
    Overwrite,
    /// Only the partition directories the job writes are replaced, at the commit; the
    /// others stay (Spark's dynamic partition overwrite).
    OverwritePartitions,
    /// The job's files are added beside what is there, with names of their own.
    Append,
}

/// `error-if-exists`, `overwrite`, `overwrite-partitions` or `append`, as a command line
/// spells them (`--output-mode`).
impl std::str::FromStr for OutputMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "error-if-exists" => Ok(OutputMode::ErrorIfExists),
            "overwrite" => Ok(OutputMode::Overwrite),
            "overwrite-partitions" => Ok(OutputMode::OverwritePartitions),
            "append" => Ok(OutputMode::Append),
            _ => Err(format!("{s:?}: expected error-if-exists, overwrite, overwrite-partitions or append")),
        }
    }
}

/// The default most bytes a file holds before the sink rolls to the next (128 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 128 << 20;

/// What picks the directory a row's file goes into (a hive-style partition such as
/// `date=2026-01-01`).
type PartitionFn<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Writes a collection of typed rows as Parquet files under a URL.
///
/// Each worker writes the rows of the windows that start on one day (UTC) into one file,
/// `URL/[PARTITION/]date=YYYY-MM-DD/part-wWORKER.parquet`, and starts the next file of
/// that day (`...-1.parquet`, `-2`, ...) once one holds [`DEFAULT_MAX_FILE_BYTES`]
/// ([`WriteParquet::max_file_size`]). [`WriteParquet::files_per`] picks an hour, or one file
/// per window (`part-START-END-wWORKER.parquet`); rows of the global window go to
/// `part-wWORKER.parquet`. Columns are the fields of `T` as serde_arrow maps them, with
/// types overridden by [`WriteParquet::column_type`] (e.g. an `i64` field as a UTC
/// timestamp).
///
/// # Atomicity
/// Files are written under `URL/_temporary/` (readers of this crate skip names starting
/// with `_`), each completed there once its window is sealed (the sink's watermark passed
/// its end, which frees its memory) or at the end. Nothing is visible until the **job's
/// commit**: once every worker of every process has finished (and every other sink of the
/// job has all its input, so a branch that fails later leaves nothing), one worker moves every
/// file to its name (a rename on local disk, a server-side copy on S3, each atomic, so a
/// reader never sees half a file), applies the [`OutputMode`], removes what is left under
/// `_temporary/` (a killed run's staging too) and writes `URL/_SUCCESS` last. A job that
/// fails before the commit makes nothing visible, and its writers delete what they
/// staged; a process killed outright leaves its staging, which the next run that commits
/// there removes. A reader that must not see a commit in progress (or one a crash cut
/// short) waits for `_SUCCESS`.
///
/// # Checkpoints
/// In a job that takes checkpoints (modes [`OutputMode::ErrorIfExists`] and
/// [`OutputMode::Append`]; the overwrite modes replace the old output in one step at the
/// end, so a job with checkpoints is refused at start), each worker seals its open files
/// at every checkpoint and hands them over; once the checkpoint is complete they move to
/// their names, so output becomes visible checkpoint by checkpoint, exactly once across
/// crashes: a resumed run commits its checkpoint again (moves already done are skipped)
/// and removes everything left under `_temporary/` (what a crashed run staged after it).
/// Files handed to a checkpoint carry the writer's run token,
/// `part-w00003-RUN[-G].parquet`, so that a resumed run, counting generations from 0
/// again, never replaces them; what comes after the last checkpoint goes in the job's
/// commit at the end, which writes `_SUCCESS` (a checkpoint's commit removes an old one).
///
/// # Watermarks
/// A file is sealed (encoded and uploaded to staging) once the sink's input watermark
/// reaches the end of its day (hour, window) and of every window it holds, so in backfill
/// mode the memory held is that of the files in flight. Rows that come after that (late
/// panes, or a window that started that day and ends after it) go to a new file,
/// `...-wWORKER-1.parquet`.
///
/// ```
/// use riffle_engine::prelude::*;
/// use riffle_parquet::{Compression, WriteParquet};
/// #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
/// struct Total { user: String, total: i64 }
///
/// let dir = tempfile::tempdir().unwrap();
/// let p = Pipeline::new();
/// let rows = p.create(vec![Total { user: "ana".into(), total: 3 }]);
/// WriteParquet::to(&dir.path().display().to_string()).compression(Compression::Snappy).write(&rows);
/// riffle_timely::run(&p, &riffle_timely::RunOptions::threads(1)).unwrap();
/// assert!(dir.path().join("part-w00000.parquet").exists()); // the global window
/// ```
///
/// # Errors
/// At start: a bad URL, missing or refused credentials, a row type serde_arrow cannot
/// map. At the end: a failed upload, naming the file.
pub struct WriteParquet<T> {
    config: WriteConfig<T>,
}

struct WriteConfig<T> {
    url: String,
    options: StoreOptions,
    row_group_size: usize,
    compression: Compression,
    column_types: Vec<(String, DataType)>,
    partition: Option<PartitionFn<T>>,
    part_size: usize,
    files_per: FilesPer,
    max_file_bytes: u64,
    mode: OutputMode,
}

impl<T: Data> WriteParquet<T> {
    /// Files go under `url`: a directory path, `file://`, `s3://bucket/prefix`, `hdfs://`.
    pub fn to(url: &str) -> Self {
        WriteParquet {
            config: WriteConfig {
                url: url.trim_end_matches('/').to_string(),
                options: StoreOptions::new(),
                row_group_size: 1 << 20,
                compression: Compression::Zstd,
                column_types: Vec::new(),
                partition: None,
                part_size: 10 << 20,
                files_per: FilesPer::Day,
                max_file_bytes: DEFAULT_MAX_FILE_BYTES,
                mode: OutputMode::ErrorIfExists,
            },
        }
    }

    /// Store settings (S3 endpoint, credentials) on top of the environment.
    pub fn options(mut self, options: StoreOptions) -> Self {
        self.config.options = options;
        self
    }

    /// Rows per row group (default 1,048,576).
    pub fn row_group_size(mut self, rows: usize) -> Self {
        self.config.row_group_size = rows.max(1);
        self
    }

    /// How column chunks are compressed (default zstd).
    pub fn compression(mut self, c: Compression) -> Self {
        self.config.compression = c;
        self
    }

    /// Writes column `name` as Arrow type `t` instead of what its field maps to.
    pub fn column_type(mut self, name: &str, t: DataType) -> Self {
        self.config.column_types.push((name.to_string(), t));
        self
    }

    /// Writes the `i64` field `name` (milliseconds since the epoch) as a UTC timestamp
    /// in milliseconds.
    pub fn timestamp_millis(self, name: &str) -> Self {
        self.column_type(name, DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())))
    }

    /// Puts each row's file in the directory `f(row)` under the URL, e.g.
    /// `format!("date={}", row.date)`.
    pub fn partition_by(mut self, f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.config.partition = Some(Arc::new(f));
        self
    }

    /// Bytes buffered before a file's upload turns into a multipart upload, and the
    /// size of each part (default 10 MiB).
    pub fn upload_part_size(mut self, bytes: usize) -> Self {
        self.config.part_size = bytes.max(1);
        self
    }

    /// Which windows' rows share a file (default: a day's, [`FilesPer::Day`]).
    pub fn files_per(mut self, f: FilesPer) -> Self {
        self.config.files_per = f;
        self
    }

    /// The most bytes (encoded) a file holds before the sink starts the next one of the
    /// same day (default [`DEFAULT_MAX_FILE_BYTES`], 128 MiB).
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.config.max_file_bytes = bytes.max(1);
        self
    }

    /// What to do with files already at the location (default
    /// [`OutputMode::ErrorIfExists`]).
    pub fn mode(mut self, mode: OutputMode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Adds the sink to `input`'s pipeline.
    pub fn write(self, input: &PCollection<T>) {
        input.write_to("WriteParquet", Arc::new(ParquetSink { config: Arc::new(self.config) }));
    }
}

struct ParquetSink<T> {
    config: Arc<WriteConfig<T>>,
}

impl<T: Data> ParquetSink<T> {
    fn fields(&self) -> Result<Arc<Vec<FieldRef>>> {
        let mut fields = crate::schema::trace::<T>().map_err(|e| {
            Error::Config(format!(
                "{}: the row type {} cannot be written as Parquet columns: {e}",
                self.config.url,
                std::any::type_name::<T>()
            ))
        })?;
        for (name, t) in &self.config.column_types {
            let Some(f) = fields.iter_mut().find(|f| f.name() == name) else {
                return Err(Error::Config(format!(
                    "{}: column_type({name:?}, ..) names no field of {}",
                    self.config.url,
                    std::any::type_name::<T>()
                )));
            };
            *f = Arc::new(Field::new(name, t.clone(), f.is_nullable()));
        }
        Ok(Arc::new(fields))
    }

    fn properties(&self) -> WriterProperties {
        let c = match self.config.compression {
            Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
            Compression::Snappy => ParquetCompression::SNAPPY,
            Compression::None => ParquetCompression::UNCOMPRESSED,
        };
        WriterProperties::builder()
            .set_compression(c)
            .set_max_row_group_row_count(Some(self.config.row_group_size))
            .build()
    }

    /// The checks of a run, fresh or resumed: the row type maps to columns, the URL is an
    /// output location, and the store answers with these credentials.
    fn check_location(&self) -> Result<Location> {
        self.fields()?;
        let location = Location::parse(&self.config.url, &self.config.options)?;
        if location.glob.is_some() {
            return Err(Error::BadUrl {
                url: self.config.url.clone(),
                reason: "an output location has no glob".into(),
            });
        }
        let store = location.store()?;
        // One cheap request, so refused credentials or a missing bucket stop the job now.
        let base = location.base.clone();
        let url = self.config.url.clone();
        let client = store.clone();
        let checked = at_start(&self.config.url, &self.config.options, async move {
            match client.list_with_delimiter(Some(&base)).await {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(Error::store(&url, e)),
            }
        });
        drop(store); // outside the runtime: an HDFS client owns a runtime of its own
        checked?;
        Ok(location)
    }
}

impl<T: Data> SinkFn for ParquetSink<T> {
    fn gathers(&self) -> bool {
        false
    }

    fn check(&self) -> riffle_engine::Result<()> {
        let location = self.check_location()?;
        if self.config.mode == OutputMode::ErrorIfExists {
            self.refuse_existing_output(&location)?;
        }
        Ok(())
    }

    /// The output there is the job's own, committed at earlier checkpoints: no refusal of
    /// existing output. The overwrite modes never get here (the sink does not commit at
    /// checkpoints in them), but a checkpoint of another version could: refused by name.
    fn check_resuming(&self) -> riffle_engine::Result<()> {
        if matches!(self.config.mode, OutputMode::Overwrite | OutputMode::OverwritePartitions) {
            return Err(Error::Config(refuse_checkpoints(&self.config.url, self.config.mode)).into());
        }
        self.check_location()?;
        Ok(())
    }

    fn commits(&self) -> bool {
        true
    }

    /// In modes that add files ([`OutputMode::ErrorIfExists`], [`OutputMode::Append`]). The
    /// overwrite modes replace the old output in one step at the end, which commits at
    /// checkpoints cannot do: a job that takes checkpoints is refused at start.
    fn commits_at_checkpoints(&self) -> bool {
        matches!(self.config.mode, OutputMode::ErrorIfExists | OutputMode::Append)
    }

    fn commit_checkpoint(&self, _checkpoint: u64, staged: Vec<Vec<u8>>) -> riffle_engine::Result<()> {
        let mut moves = Vec::new();
        for s in &staged {
            moves.extend(Precommit::decode(s, &self.config.url)?);
        }
        let location = Location::parse(&self.config.url, &self.config.options)?;
        let store = location.store()?;
        let n = moves.len();
        let result = runtime().block_on(commit::commit_checkpoint(&location, store.clone(), moves));
        drop(store);
        result?;
        tracing::info!(files = n, url = %self.config.url, "committed a checkpoint's output");
        Ok(())
    }

    fn recover(&self) -> riffle_engine::Result<()> {
        let location = Location::parse(&self.config.url, &self.config.options)?;
        let store = location.store()?;
        let result = runtime().block_on(commit::clear_staging(&location, &store));
        drop(store);
        result?;
        Ok(())
    }

    fn commit(&self, staged: Vec<Vec<u8>>) -> riffle_engine::Result<()> {
        let mut moves: Vec<(Path, Path)> = Vec::new();
        for s in staged {
            let pairs: Vec<(String, String)> = serde_json::from_slice(&s)
                .map_err(|e| Error::Config(format!("internal error: a writer's staged files do not read back: {e}")))?;
            moves.extend(pairs.into_iter().map(|(a, b)| (Path::from(a), Path::from(b))));
        }
        let location = Location::parse(&self.config.url, &self.config.options)?;
        let store = location.store()?;
        let n = moves.len();
        let result = runtime().block_on(commit(&location, store.clone(), self.config.mode, moves));
        drop(store);
        result?;
        tracing::info!(files = n, url = %self.config.url, mode = ?self.config.mode, "committed the output");
        Ok(())
    }

    fn open(&self, ctx: &StepContext) -> riffle_engine::Result<Box<dyn SinkWriter>> {
        let location = Location::parse(&self.config.url, &self.config.options)?;
        let unique = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let staging = Path::parse(format!(
            "{}/_temporary/w{:05}-{}-{unique:x}",
            location.base,
            ctx.worker.index,
            std::process::id()
        ))
        .map_err(|e| Error::BadUrl { url: self.config.url.clone(), reason: e.to_string() })?;
        let store = location.store()?;
        let (fields, properties) = (self.fields()?, self.properties());
        let run = format!("{unique:x}");
        Ok(Box::new(ParquetWriter::new(
            store,
            location,
            staging,
            fields,
            properties,
            self.config.clone(),
            ctx.worker.index,
            run,
        )))
    }
}

/// Why a sink in an overwrite mode takes no part in checkpoints.
fn refuse_checkpoints(url: &str, mode: OutputMode) -> String {
    format!(
        "{url}: the output mode {mode:?} replaces the old output in one step at the end of the job, which a \
         job that commits its output at every checkpoint cannot do. Write with append or error-if-exists, or \
         leave out --checkpoint-dir"
    )
}

mod commit;
mod writer;

use commit::{Precommit, commit};
use writer::ParquetWriter;

#[cfg(test)]
mod tests;
