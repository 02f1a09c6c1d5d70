//! The sink: typed rows to Parquet files, one per worker per day of windows (or per
//! hour, or per window) and partition, rolled by size, each made visible atomically when
//! the input is complete.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, TimeUnit};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use riffle_engine::runtime::{SinkFn, SinkWriter, StepContext};
use riffle_engine::{Batch, Data, EventTime, PCollection, Watermark, Window};

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
}

impl<T: Data> ParquetSink<T> {
    /// [`OutputMode::ErrorIfExists`]: a location with a visible file is an error now.
    fn refuse_existing_output(&self, location: &Location) -> riffle_engine::Result<()> {
        let store = location.store()?;
        let base = location.base.clone();
        let url = self.config.url.clone();
        let found = at_start(&self.config.url, &self.config.options, async move {
            use futures::StreamExt;
            let mut listing = store.list(Some(&base));
            let mut found = None;
            while let Some(meta) = listing.next().await {
                match meta {
                    Ok(m) if is_visible(&base, &m.location) => {
                        found = Some(m.location);
                        break;
                    }
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(Error::store(&url, e)),
                }
            }
            Ok(found)
        })?;
        match found {
            None => Ok(()),
            Some(path) => Err(Error::Config(format!(
                "the output {} already holds files ({}, ...): a second run would mix its files with those. \
                 Write elsewhere, or choose an output mode: overwrite, overwrite-partitions or append",
                self.config.url,
                location.url_of(&path)
            ))
            .into()),
        }
    }
}

/// Whether `path` under `base` is output a reader sees: no part of it below `base` starts
/// with `_` or `.` (`_temporary/`, `_SUCCESS`).
fn is_visible(base: &Path, path: &Path) -> bool {
    let below: Vec<_> = path.prefix_match(base).map(|parts| parts.collect()).unwrap_or_default();
    !below.is_empty() && below.iter().all(|p| !p.as_ref().starts_with('_') && !p.as_ref().starts_with('.'))
}

/// The job's commit: moves every staged file to its name, applies `mode` to what was
/// there, removes the staging left under `_temporary/`, and writes `_SUCCESS` last.
async fn commit(
    location: &Location,
    store: Arc<dyn ObjectStore>,
    mode: OutputMode,
    moves: Vec<(Path, Path)>,
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let base = &location.base;
    let success = Path::parse(format!("{base}/_SUCCESS"))
        .map_err(|e| Error::BadUrl { url: location.url.clone(), reason: e.to_string() })?;
    let store_err = |path: &Path, e| Error::store(&location.url_of(path), e);
    // While the output changes it is not complete: the old marker goes first.
    match store.delete(&success).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(store_err(&success, e)),
    }
    let existing: Vec<Path> = match mode {
        OutputMode::Overwrite | OutputMode::OverwritePartitions => {
            let listed: Vec<_> = store.list(Some(base)).try_collect().await.or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(store_err(base, e)),
            })?;
            listed.into_iter().map(|m| m.location).filter(|p| is_visible(base, p)).collect()
        }
        OutputMode::ErrorIfExists | OutputMode::Append => Vec::new(),
    };
    let moved: std::collections::HashSet<Path> = moves.iter().map(|(_, to)| to.clone()).collect();
    futures::stream::iter(moves.into_iter().map(|(from, to)| {
        let store = store.clone();
        async move { store.rename(&from, &to).await.map_err(|e| store_err(&to, e)) }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await?;
    // What the new output replaces: everything (overwrite), or what shares a directory
    // with a new file (overwrite-partitions).
    let parent = |p: &Path| p.as_ref().rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
    let written_dirs: std::collections::HashSet<String> = moved.iter().map(parent).collect();
    let replaced: Vec<Path> = existing
        .into_iter()
        .filter(|p| !moved.contains(p))
        .filter(|p| mode == OutputMode::Overwrite || written_dirs.contains(&parent(p)))
        .collect();
    delete_all(&store, replaced, location).await?;
    // The staging of this job (emptied by the moves) and of runs killed before theirs.
    let temporary = Path::parse(format!("{base}/_temporary"))
        .map_err(|e| Error::BadUrl { url: location.url.clone(), reason: e.to_string() })?;
    let left: Vec<Path> = store.list(Some(&temporary)).map_ok(|m| m.location).try_collect().await.unwrap_or_default();
    delete_all(&store, left, location).await?;
    if location.is_local() {
        let dir = std::path::Path::new("/").join(temporary.as_ref());
        let _ = std::fs::remove_dir_all(dir);
    }
    store.put(&success, Vec::new().into()).await.map_err(|e| store_err(&success, e))?;
    Ok(())
}

async fn delete_all(store: &Arc<dyn ObjectStore>, paths: Vec<Path>, location: &Location) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(paths.into_iter().map(|p| {
        let store = store.clone();
        async move {
            match store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(Error::store(&location.url_of(&p), e)),
            }
        }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

impl<T: Data> SinkFn for ParquetSink<T> {
    fn gathers(&self) -> bool {
        false
    }

    fn check(&self) -> riffle_engine::Result<()> {
        self.fields()?;
        let location = Location::parse(&self.config.url, &self.config.options)?;
        if location.glob.is_some() {
            return Err(Error::BadUrl {
                url: self.config.url.clone(),
                reason: "an output location has no glob".into(),
            }
            .into());
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
        if self.config.mode == OutputMode::ErrorIfExists {
            self.refuse_existing_output(&location)?;
        }
        Ok(())
    }

    fn commits(&self) -> bool {
        true
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
        Ok(Box::new(ParquetWriter::<T> {
            store: location.store()?,
            staging,
            location,
            fields: self.fields()?,
            properties: self.properties(),
            config: self.config.clone(),
            worker: ctx.worker.index,
            run: format!("{unique:x}"),
            files: BTreeMap::new(),
            sealed: Vec::new(),
            generations: BTreeMap::new(),
            written: 0,
            done: false,
        }))
    }
}

struct OpenFile<T> {
    /// Where the file is written: under the writer's staging directory.
    staging: Path,
    /// Where it goes at the end.
    path: Path,
    /// The name without generation and extension, e.g. `part-0-3600000-w00001`.
    base: String,
    /// The end of the file's day (hour, window) and of every window it holds: the file
    /// is sealed once the watermark reaches it. `None`: the global window, sealed at the end.
    seal_at: Option<EventTime>,
    rows: Vec<T>,
    writer: AsyncArrowWriter<BufWriter>,
}

struct ParquetWriter<T: Data> {
    store: Arc<dyn ObjectStore>,
    location: Location,
    fields: Arc<Vec<FieldRef>>,
    properties: WriterProperties,
    config: Arc<WriteConfig<T>>,
    worker: usize,
    /// This writer's own token: in append mode its files' names end with it, so that they
    /// never replace another run's.
    run: String,
    /// `URL/_temporary/<worker>-<unique>`: hidden from readers (names starting with `_`
    /// are skipped), and this writer's alone.
    staging: Path,
    /// Files still taking rows, by name, so they are sealed in a fixed order.
    files: BTreeMap<String, OpenFile<T>>,
    /// Files completed under the staging directory, moved to their names at `finish`:
    /// (staging path, final path).
    sealed: Vec<(Path, Path)>,
    /// How many files of each name were sealed, so rows of a window that come after its
    /// file was sealed (late panes) go to a new file rather than overwrite it.
    generations: BTreeMap<String, u32>,
    /// Files sealed so far (for progress).
    written: u64,
    done: bool,
}

impl<T: Data> ParquetWriter<T> {
    /// The base name (see [`OpenFile::base`]) and the file name for a row, and when its
    /// file may be sealed.
    fn file_name(&self, row: &T, window: Window) -> (String, String, Option<EventTime>) {
        let dir = self.config.partition.as_ref().map(|f| format!("{}/", f(row))).unwrap_or_default();
        let w = self.worker;
        let (base, seal_at) = match (window, self.config.files_per) {
            (Window::Global, _) => (format!("{dir}part-w{w:05}"), None),
            (Window::Interval { start, end }, FilesPer::Window) => {
                (format!("{dir}part-{}-{}-w{w:05}", start.millis(), end.millis()), Some(end))
            }
            (Window::Interval { start, end }, per) => {
                let span = if per == FilesPer::Day { DAY } else { HOUR };
                let bucket = start.millis().div_euclid(span) * span;
                let at = jiff::Timestamp::from_millisecond(bucket).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                let bucket_dir = if per == FilesPer::Day {
                    at.strftime("date=%Y-%m-%d").to_string()
                } else {
                    at.strftime("date=%Y-%m-%d/hour=%H").to_string()
                };
                (format!("{dir}{bucket_dir}/part-w{w:05}"), Some(end.max(EventTime::from_millis(bucket + span))))
            }
        };
        let base = if self.config.mode == OutputMode::Append { format!("{base}-{}", self.run) } else { base };
        let name = match self.generations.get(&base) {
            None | Some(0) => format!("{base}.parquet"),
            Some(g) => format!("{base}-{g}.parquet"),
        };
        (base, name, seal_at)
    }

    fn path(&self, under: &Path, name: &str) -> Result<Path> {
        Path::parse(format!("{under}/{name}"))
            .map_err(|e| Error::BadUrl { url: self.config.url.clone(), reason: e.to_string() })
    }

    fn open_file(&self, base: String, name: &str, seal_at: Option<EventTime>) -> Result<OpenFile<T>> {
        let path = self.path(&self.location.base, name)?;
        let staging = self.path(&self.staging, name)?;
        let upload = BufWriter::with_capacity(self.store.clone(), staging.clone(), self.config.part_size);
        let schema = Arc::new(arrow_schema::Schema::new(self.fields.as_ref().clone()));
        let writer = AsyncArrowWriter::try_new(upload, schema, Some(self.properties.clone()))
            .map_err(|e| Error::Convert { url: self.location.url_of(&path), message: e.to_string() })?;
        Ok(OpenFile { staging, path, base, seal_at, rows: Vec::new(), writer })
    }

    fn encode(&self, file: &mut OpenFile<T>) -> Result<()> {
        if file.rows.is_empty() {
            return Ok(());
        }
        let url = self.location.url_of(&file.path);
        let rb = serde_arrow::to_record_batch(&self.fields, &file.rows)
            .map_err(|e| Error::Convert { url: url.clone(), message: format!("writing rows: {e}") })?;
        file.rows.clear();
        runtime().block_on(file.writer.write(&rb)).map_err(|e| Error::parquet_write(&url, e))
    }

    /// Encodes the rest of a file and its footer and completes its upload to the staging
    /// directory, freeing its memory; it moves to its name at [`SinkWriter::finish`].
    fn seal(&mut self, name: &str) -> Result<()> {
        let Some(mut file) = self.files.remove(name) else { return Ok(()) };
        self.encode(&mut file)?;
        let url = self.location.url_of(&file.path);
        runtime().block_on(file.writer.close()).map_err(|e| Error::parquet_write(&url, e))?;
        *self.generations.entry(file.base).or_insert(0) += 1;
        self.sealed.push((file.staging, file.path));
        self.written += 1;
        Ok(())
    }

    /// Removes the staging directory's empty folders on local disk (object stores have
    /// no folders to remove).
    fn remove_local_staging(&self) {
        if self.location.is_local() {
            let dir = std::path::Path::new("/").join(self.staging.as_ref());
            // The day (partition) folders the moved files left, deepest first.
            let mut folders = Vec::new();
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                        folders.push(entry.path());
                    }
                }
            }
            folders.sort_by_key(|f| std::cmp::Reverse(f.components().count()));
            for f in folders {
                let _ = std::fs::remove_dir(f); // only if empty
            }
            let _ = std::fs::remove_dir(&dir);
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent); // only if no other writer uses it
            }
        }
    }
}

impl<T: Data> SinkWriter for ParquetWriter<T> {
    fn write(&mut self, input: Batch) -> riffle_engine::Result<()> {
        // Rows of one window (and partition) go to one file: it stays out of the map, by
        // name, while a run of such rows goes into it.
        let mut current: Option<(Window, String, OpenFile<T>)> = None;
        for wv in input.try_into_elements::<T>()?.into_iter_windowed() {
            let same = self.config.partition.is_none() && current.as_ref().is_some_and(|(w, ..)| *w == wv.window);
            if !same {
                if let Some((_, name, file)) = current.take() {
                    self.files.insert(name, file);
                }
                let (base, name, seal_at) = self.file_name(&wv.value, wv.window);
                let mut file = match self.files.remove(&name) {
                    Some(f) => f,
                    None => self.open_file(base, &name, seal_at)?,
                };
                file.seal_at = file.seal_at.max(seal_at);
                current = Some((wv.window, name, file));
            }
            let (_, _, file) = current.as_mut().expect("a file for the row");
            file.rows.push(wv.value);
            if file.rows.len() >= ROWS_PER_ENCODE {
                self.encode(file)?;
                let written = file.writer.bytes_written() + file.writer.in_progress_size();
                if written >= self.config.max_file_bytes as usize {
                    // Big enough: the next rows of this day start the next file.
                    let (_, name, file) = current.take().expect("the file just written");
                    self.files.insert(name.clone(), file);
                    self.seal(&name)?;
                }
            }
        }
        if let Some((_, name, file)) = current {
            self.files.insert(name, file);
        }
        Ok(())
    }

    fn advance(&mut self, watermark: Watermark) -> riffle_engine::Result<()> {
        let done: Vec<String> = self
            .files
            .iter()
            .filter(|(_, f)| f.seal_at.is_some_and(|end| watermark.0 >= end))
            .map(|(name, _)| name.clone())
            .collect();
        for name in done {
            self.seal(&name)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> riffle_engine::Result<()> {
        let names: Vec<String> = self.files.keys().cloned().collect();
        for name in names {
            self.seal(&name)?;
        }
        // The files wait in staging for the job's commit.
        self.done = true;
        Ok(())
    }

    fn staged(&mut self) -> Vec<u8> {
        let pairs: Vec<(String, String)> =
            std::mem::take(&mut self.sealed).into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        serde_json::to_vec(&pairs).expect("paths encode as JSON")
    }

    fn files_written(&self) -> u64 {
        self.written
    }
}

impl<T: Data> Drop for ParquetWriter<T> {
    /// A writer dropped before `finish` (a failed job) aborts its uploads and deletes
    /// what it staged, so no part of its files becomes visible.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for (_, file) in std::mem::take(&mut self.files) {
            let mut upload = file.writer.into_inner();
            if let Err(e) = runtime().block_on(upload.abort()) {
                tracing::warn!("could not abort the upload of {}: {e}", self.location.url_of(&file.staging));
            }
        }
        for (staging, _) in std::mem::take(&mut self.sealed) {
            let store = self.store.clone();
            let url = self.location.url_of(&staging);
            if let Err(e) = runtime().block_on(async move { store.delete(&staging).await }) {
                tracing::warn!("could not delete the staged {url}: {e}");
            }
        }
        self.remove_local_staging();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_engine::runtime::WorkerInfo;
    use riffle_engine::{Elements, EventTime, PaneInfo};

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
}
