//! Where checkpoints live: a directory on local disk or a prefix on S3, through
//! `object_store` (the stores the Parquet connector reads and writes).

use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use riffle_engine::{Error, Result};

/// The runtime checkpoint I/O runs on: one per process, two threads.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("riffle-checkpoint-io")
            .enable_all()
            .build()
            .expect("start the checkpoint I/O runtime")
    })
}

/// A checkpoint directory: a store and the prefix in it.
#[derive(Clone)]
pub struct Store {
    url: String,
    store: Arc<dyn ObjectStore>,
    base: Path,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

impl Store {
    /// Opens `url`: a path, `file:///absolute/path` or `s3://bucket/prefix` (settings from
    /// the standard AWS variables; region us-east-1 when none is set).
    pub fn open(url: &str) -> Result<Store> {
        let bad = |why: &str| Error::Config(format!("--checkpoint-dir {url}: {why}"));
        let (store, base): (Arc<dyn ObjectStore>, String) = match url.split_once("://") {
            Some(("file", _)) => {
                let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
                if parsed.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                    return Err(bad("a file:// URL names no host: write file:///absolute/path"));
                }
                (Arc::new(LocalFileSystem::new()), parsed.path().to_string())
            }
            Some(("s3" | "s3a", rest)) => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("an s3:// URL starts with a bucket: s3://bucket/prefix"));
                }
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if b.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
                    b = b.with_config(AmazonS3ConfigKey::Region, "us-east-1");
                }
                (Arc::new(b.build().map_err(|e| bad(&e.to_string()))?), key.to_string())
            }
            Some((other, _)) => return Err(bad(&format!("unknown scheme {other:?}; use a path, file:// or s3://"))),
            None => {
                if url.is_empty() {
                    return Err(bad("empty location"));
                }
                let p = std::path::Path::new(url);
                let abs = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    std::env::current_dir().map_err(|e| bad(&format!("no current directory: {e}")))?.join(p)
                };
                (Arc::new(LocalFileSystem::new()), abs.to_string_lossy().into_owned())
            }
        };
        let segments: Vec<&str> = base.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
        if segments.contains(&"..") {
            return Err(bad("'..' is not allowed; give the path without it"));
        }
        let base = Path::parse(segments.join("/")).map_err(|e| bad(&e.to_string()))?;
        Ok(Store { url: url.to_string(), store, base })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> Path {
        name.split('/').fold(self.base.clone(), |p, part| p.clone().join(part))
    }

    fn error(&self, doing: &str, name: &str, e: impl std::fmt::Display) -> Error {
        Error::Io {
            step: "checkpoint".into(),
            message: format!("{doing} {}/{name}: {e}", self.url.trim_end_matches('/')),
            source: None,
        }
    }

    /// Writes `bytes` at `name` (a `/`-separated path under the directory), whole or not at all.
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(name);
        runtime()
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.error("writing", name, e))
    }

    /// Reads `name`.
    pub fn get(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path(name);
        runtime()
            .block_on(async { self.store.get(&path).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| self.error("reading", name, e))
    }

    /// Copies `from` to `to`.
    pub fn copy(&self, from: &str, to: &str) -> Result<()> {
        runtime()
            .block_on(self.store.copy(&self.path(from), &self.path(to)))
            .map_err(|e| self.error("copying", from, e))
    }

    /// The entries directly under `dir` ("" for the top), sub-directories and objects
    /// alike, by name (without the `dir/` prefix) with their sizes (0 for a directory).
    /// A directory that does not exist is empty.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        let prefix = if dir.is_empty() { self.base.clone() } else { self.path(dir) };
        let listed = match runtime().block_on(self.store.list_with_delimiter(Some(&prefix))) {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(self.error("listing", dir, e)),
        };
        let name = |p: &Path| p.filename().map(str::to_string);
        let mut names: Vec<(String, u64)> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| Some((name(p)?, 0)))
            .chain(listed.objects.iter().filter_map(|o| Some((name(&o.location)?, o.size))))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes everything under `dir`.
    pub fn delete_all(&self, dir: &str) -> Result<()> {
        let prefix = self.path(dir);
        runtime()
            .block_on(async {
                let paths: Vec<Path> = self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await?;
                for p in paths {
                    self.store.delete(&p).await?;
                }
                Ok::<_, object_store::Error>(())
            })
            .map_err(|e| self.error("deleting", dir, e))?;
        if let Some(local) = self.local_dir(dir) {
            // A local store leaves the emptied directories behind.
            let _ = std::fs::remove_dir_all(local);
        }
        Ok(())
    }

    /// The local directory of `dir`, for a store on local disk.
    fn local_dir(&self, dir: &str) -> Option<std::path::PathBuf> {
        (!self.url.starts_with("s3")).then(|| std::path::PathBuf::from(format!("/{}", self.path(dir))))
    }
}
