//! One worker's writer: rows to files per day (hour, window) and partition, sealed into
//! staging as the watermark passes them, handed to each checkpoint (in a job that takes
//! them) and to the job's commit at the end.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::FieldRef;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::AsyncArrowWriter;
use parquet::file::properties::WriterProperties;
use riffle_engine::runtime::SinkWriter;
use riffle_engine::{Batch, Data, EventTime, Watermark, Window};

use super::commit::Precommit;
use super::{DAY, FilesPer, HOUR, OutputMode, ROWS_PER_ENCODE, WriteConfig};
use crate::error::{Error, Result};
use crate::location::{Location, runtime};

struct OpenFile<T> {
    /// Where the file is written: under the writer's staging directory.
    staging: Path,
    /// Where it goes at the end, for messages (its name may yet take the run's token, see
    /// [`ParquetWriter::final_path`]).
    path: Path,
    /// The name without generation and extension, e.g. `part-0-3600000-w00001`.
    base: String,
    /// How many files of `base` this writer sealed before this one.
    generation: u32,
    /// The end of the file's day (hour, window) and of every window it holds: the file
    /// is sealed once the watermark reaches it. `None`: the global window, sealed at the end.
    seal_at: Option<EventTime>,
    rows: Vec<T>,
    writer: AsyncArrowWriter<BufWriter>,
}

pub(super) struct ParquetWriter<T: Data> {
    store: Arc<dyn ObjectStore>,
    location: Location,
    fields: Arc<Vec<FieldRef>>,
    properties: WriterProperties,
    config: Arc<WriteConfig<T>>,
    worker: usize,
    /// This writer's own token: in append mode, and in a job that commits at checkpoints,
    /// its files' names carry it, so that they never replace another run's.
    run: String,
    /// `URL/_temporary/<worker>-<unique>`: hidden from readers (names starting with `_`
    /// are skipped), and this writer's alone.
    staging: Path,
    /// Files still taking rows, by name, so they are sealed in a fixed order.
    files: BTreeMap<String, OpenFile<T>>,
    /// Files completed under the staging directory since the last checkpoint, moved to
    /// their names at the commit of the next checkpoint or of the job.
    sealed: Vec<Sealed>,
    /// How many files of each name were sealed, so rows of a window that come after its
    /// file was sealed (late panes) go to a new file rather than overwrite it.
    generations: BTreeMap<String, u32>,
    /// Files sealed so far (for progress).
    written: u64,
    /// Whether this writer handed files to a checkpoint: from then on its names carry
    /// `run` (see [`ParquetWriter::final_path`]).
    checkpointed: bool,
    done: bool,
}

/// A file completed under the staging directory.
struct Sealed {
    staging: Path,
    base: String,
    generation: u32,
}

impl<T: Data> ParquetWriter<T> {
    /// A writer for worker `worker`, staging under `staging`; `run` is its own token.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        store: Arc<dyn ObjectStore>,
        location: Location,
        staging: Path,
        fields: Arc<Vec<FieldRef>>,
        properties: WriterProperties,
        config: Arc<WriteConfig<T>>,
        worker: usize,
        run: String,
    ) -> Self {
        ParquetWriter {
            store,
            location,
            fields,
            properties,
            config,
            worker,
            run,
            staging,
            files: BTreeMap::new(),
            sealed: Vec::new(),
            generations: BTreeMap::new(),
            written: 0,
            checkpointed: false,
            done: false,
        }
    }

    /// The base name (see [`OpenFile::base`]), the generation and the file name (in
    /// staging) for a row, and when its file may be sealed.
    fn file_name(&self, row: &T, window: Window) -> (String, u32, String, Option<EventTime>) {
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
        let generation = self.generations.get(&base).copied().unwrap_or(0);
        let name = with_generation(&base, generation);
        (base, generation, name, seal_at)
    }

    /// Where a sealed file goes. Its name is the one it has in staging, except that once this
    /// writer has handed files to a checkpoint, the names (of what it hands from then on)
    /// carry its run's token before the generation: `part-w00003-RUN-2.parquet`. A job that
    /// commits at checkpoints is resumed by new runs that write into the same output, each
    /// counting generations from 0 again; the token keeps their names apart. (Append mode
    /// has the token in the base already.) The job's commit at the end needs no token: a
    /// job commits once, and everything earlier runs committed carries theirs.
    ///
    /// # Panics
    /// Never: the name parsed as a path when its file was opened, and a token of hex
    /// digits keeps it one.
    fn final_path(&self, base: &str, generation: u32) -> Path {
        let name = if self.checkpointed && self.config.mode != OutputMode::Append {
            with_generation(&format!("{base}-{}", self.run), generation)
        } else {
            with_generation(base, generation)
        };
        self.path(&self.location.base, &name).expect("the name of a file that was opened")
    }

    /// Seals every file still open, so that what this writer took so far is all staged.
    fn seal_all(&mut self) -> Result<()> {
        let names: Vec<String> = self.files.keys().cloned().collect();
        for name in names {
            self.seal(&name)?;
        }
        Ok(())
    }

    /// The files sealed since the last hand-off, with their final paths.
    fn take_sealed(&mut self) -> Vec<(Path, Path)> {
        let sealed = std::mem::take(&mut self.sealed);
        sealed
            .into_iter()
            .map(|s| {
                let path = self.final_path(&s.base, s.generation);
                (s.staging, path)
            })
            .collect()
    }

    fn path(&self, under: &Path, name: &str) -> Result<Path> {
        Path::parse(format!("{under}/{name}"))
            .map_err(|e| Error::BadUrl { url: self.config.url.clone(), reason: e.to_string() })
    }

    fn open_file(&self, base: String, generation: u32, name: &str, seal_at: Option<EventTime>) -> Result<OpenFile<T>> {
        let path = self.path(&self.location.base, name)?;
        let staging = self.path(&self.staging, name)?;
        let upload = BufWriter::with_capacity(self.store.clone(), staging.clone(), self.config.part_size);
        let schema = Arc::new(arrow_schema::Schema::new(self.fields.as_ref().clone()));
        let writer = AsyncArrowWriter::try_new(upload, schema, Some(self.properties.clone()))
            .map_err(|e| Error::Convert { url: self.location.url_of(&path), message: e.to_string() })?;
        Ok(OpenFile { staging, path, base, generation, seal_at, rows: Vec::new(), writer })
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
    /// directory, freeing its memory; it moves to its name at the commit of the next
    /// checkpoint or of the job.
    fn seal(&mut self, name: &str) -> Result<()> {
        let Some(mut file) = self.files.remove(name) else { return Ok(()) };
        self.encode(&mut file)?;
        let url = self.location.url_of(&file.path);
        runtime().block_on(file.writer.close()).map_err(|e| Error::parquet_write(&url, e))?;
        *self.generations.entry(file.base.clone()).or_insert(0) += 1;
        self.sealed.push(Sealed { staging: file.staging, base: file.base, generation: file.generation });
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
                let (base, generation, name, seal_at) = self.file_name(&wv.value, wv.window);
                let mut file = match self.files.remove(&name) {
                    Some(f) => f,
                    None => self.open_file(base, generation, &name, seal_at)?,
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
        self.seal_all()?;
        // The files wait in staging for the job's commit.
        self.done = true;
        Ok(())
    }

    /// Seals every open file and hands over what was sealed since the last checkpoint
    /// ([`Precommit`]); rows that come next go to new files (the next generation). What it
    /// hands over stays in staging, even if this writer is dropped, until the checkpoint's
    /// commit moves it or a resumed run's recovery removes it.
    fn precommit(&mut self) -> riffle_engine::Result<Vec<u8>> {
        if matches!(self.config.mode, OutputMode::Overwrite | OutputMode::OverwritePartitions) {
            return Err(Error::Config(super::refuse_checkpoints(&self.config.url, self.config.mode)).into());
        }
        self.seal_all()?;
        self.checkpointed = true;
        Ok(Precommit::encode(self.take_sealed()))
    }

    fn staged(&mut self) -> Vec<u8> {
        let pairs: Vec<(String, String)> =
            self.take_sealed().into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
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
        for Sealed { staging, .. } in std::mem::take(&mut self.sealed) {
            let store = self.store.clone();
            let url = self.location.url_of(&staging);
            if let Err(e) = runtime().block_on(async move { store.delete(&staging).await }) {
                tracing::warn!("could not delete the staged {url}: {e}");
            }
        }
        self.remove_local_staging();
    }
}

/// `base.parquet` for the first file of a base, `base-G.parquet` for the next.
fn with_generation(base: &str, generation: u32) -> String {
    match generation {
        0 => format!("{base}.parquet"),
        g => format!("{base}-{g}.parquet"),
    }
}
