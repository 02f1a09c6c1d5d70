//! The commits: the job's (what each output mode does with what is at the location, the
//! moves of staged files into place, the cleanup of staging, and `_SUCCESS` last) and a
//! checkpoint's (the moves alone, idempotent), and what a checkpoint saves of a writer.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use riffle_engine::Data;
use serde::{Deserialize, Serialize};

use super::{OutputMode, ParquetSink};
use crate::error::{Error, Result};
use crate::location::{Location, at_start};

impl<T: Data> ParquetSink<T> {
    /// [`OutputMode::ErrorIfExists`]: a location with a visible file is an error now.
    pub(super) fn refuse_existing_output(&self, location: &Location) -> riffle_engine::Result<()> {
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
pub(super) async fn commit(
    location: &Location,
    store: Arc<dyn ObjectStore>,
    mode: OutputMode,
    moves: Vec<(Path, Path)>,
) -> Result<()> {
    use futures::TryStreamExt;
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
    move_all(&store, moves, location).await?;
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
    clear_staging(location, &store).await?;
    store.put(&success, Vec::new().into()).await.map_err(|e| store_err(&success, e))?;
    Ok(())
}

/// A checkpoint's commit: moves the files its writers staged to their names, each
/// atomically, and nothing else. Idempotent, as a resumed run commits its checkpoint again:
/// a file already moved is skipped. An old `_SUCCESS` goes first, as in the job's commit:
/// the output changes, so it is not complete until the job's end writes it again.
pub(super) async fn commit_checkpoint(
    location: &Location,
    store: Arc<dyn ObjectStore>,
    moves: Vec<(Path, Path)>,
) -> Result<()> {
    let success = Path::parse(format!("{}/_SUCCESS", location.base))
        .map_err(|e| Error::BadUrl { url: location.url.clone(), reason: e.to_string() })?;
    match store.delete(&success).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(Error::store(&location.url_of(&success), e)),
    }
    move_all(&store, moves, location).await
}

/// Removes everything under the output's `_temporary/`: the staging of every writer of every
/// run that is not needed any more (the job's, once committed; a crashed run's).
pub(super) async fn clear_staging(location: &Location, store: &Arc<dyn ObjectStore>) -> Result<()> {
    use futures::TryStreamExt;
    let temporary = Path::parse(format!("{}/_temporary", location.base))
        .map_err(|e| Error::BadUrl { url: location.url.clone(), reason: e.to_string() })?;
    let left: Vec<Path> = store.list(Some(&temporary)).map_ok(|m| m.location).try_collect().await.unwrap_or_default();
    delete_all(store, left, location).await?;
    if location.is_local() {
        // The folders, and the temporary files of uploads a killed process left half-way
        // (the local store keeps them out of listings).
        let dir = std::path::Path::new("/").join(temporary.as_ref());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Store {
                    url: location.url_of(&temporary),
                    message: format!("removing staging: {e}"),
                });
            }
        }
    }
    Ok(())
}

/// Moves each staged file to its name (a rename on local disk, a copy and a delete on S3),
/// skipping one that an earlier commit already moved: its staging is gone and its name is
/// there. One gone from both places is an error: output that a completed checkpoint
/// promised is lost (deleted by hand, or by another job writing to the same place).
async fn move_all(store: &Arc<dyn ObjectStore>, moves: Vec<(Path, Path)>, location: &Location) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(moves.into_iter().map(|(from, to)| {
        let store = store.clone();
        async move {
            match store.rename(&from, &to).await {
                Ok(()) => Ok(()),
                Err(object_store::Error::NotFound { .. }) => match store.head(&to).await {
                    Ok(_) => Ok(()),
                    Err(object_store::Error::NotFound { .. }) => Err(Error::Store {
                        url: location.url_of(&to),
                        message: format!(
                            "this committed file is missing, and so is its staged copy {}: something else deleted \
                             it (another job writing to the same output?)",
                            location.url_of(&from)
                        ),
                    }),
                    Err(e) => Err(Error::store(&location.url_of(&to), e)),
                },
                Err(e) => Err(Error::store(&location.url_of(&to), e)),
            }
        }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// What a writer hands to a checkpoint ([`riffle_engine::runtime::SinkWriter::precommit`]),
/// saved in it and read back by the sink's commit of that checkpoint, perhaps by a later
/// version of this crate after a restart, so it says its format. JSON:
/// `{"format":1,"files":[{"staging":"out/_temporary/w00003-…/part-w00003-RUN.parquet","path":"out/part-w00003-RUN.parquet"}]}`,
/// each a path in the output's store (bucket-relative on S3).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Precommit {
    format: u32,
    files: Vec<StagedFile>,
}

/// A file completed under a writer's staging directory, and the name it moves to.
#[derive(Debug, Serialize, Deserialize)]
struct StagedFile {
    staging: String,
    path: String,
}

impl Precommit {
    const FORMAT: u32 = 1;

    pub(super) fn encode(files: impl IntoIterator<Item = (Path, Path)>) -> Vec<u8> {
        let files = files.into_iter().map(|(s, p)| StagedFile { staging: s.to_string(), path: p.to_string() });
        let p = Precommit { format: Self::FORMAT, files: files.collect() };
        serde_json::to_vec(&p).expect("paths encode as JSON")
    }

    /// The moves, or an error naming the output when the bytes are not of this format.
    pub(super) fn decode(bytes: &[u8], url: &str) -> Result<Vec<(Path, Path)>> {
        let bad = |why: String| {
            Error::Config(format!(
                "{url}: the files a checkpoint saved for this sink do not read back ({why}): the checkpoint was \
                 written by another version of Riffle, or for another sink"
            ))
        };
        let p: Precommit = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if p.format != Self::FORMAT {
            return Err(bad(format!("format {}, this version reads {}", p.format, Self::FORMAT)));
        }
        let path = |s: &str| Path::parse(s).map_err(|e| bad(e.to_string()));
        p.files.iter().map(|f| Ok((path(&f.staging)?, path(&f.path)?))).collect()
    }
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
