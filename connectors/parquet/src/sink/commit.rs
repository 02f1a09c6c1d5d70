//! The job's commit: what each output mode does with what is at the location, the moves
//! of staged files into place, the cleanup of staging, and `_SUCCESS` last.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use riffle_engine::Data;

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
