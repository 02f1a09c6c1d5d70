//! Locations as URLs: which object store, which path, which glob, and the per-store
//! settings (credentials, endpoint) that come from the environment or the caller.

use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

/// The tokio runtime the connector's I/O runs on: one per process, shared by every
/// worker's reader and writer, so an object store's connection pool lives on one runtime.
/// Two threads: Parquet decoding runs there too, overlapped with the timely workers.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("riffle-parquet-io")
            .enable_all()
            .build()
            .expect("start the Parquet I/O runtime")
    })
}

/// Settings for the object stores behind URLs, on top of the environment.
///
/// For `s3://` locations the builder starts from the standard AWS variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...), then applies the options set here, so a
/// test or a program can point at a server without touching its process environment.
///
/// ```
/// let opts = riffle_parquet::StoreOptions::new()
///     .s3("endpoint", "http://127.0.0.1:9000")
///     .s3("allow_http", "true");
/// assert_eq!(opts.s3_options().len(), 2);
/// ```
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    s3: Vec<(String, String)>,
    instance_credentials: bool,
    start_timeout: Option<std::time::Duration>,
}

impl StoreOptions {
    /// No settings beyond the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an S3 option by its object_store name (`access_key_id`, `secret_access_key`,
    /// `region`, `endpoint`, `allow_http`, `token`, `skip_signature`, ...).
    pub fn s3(mut self, key: &str, value: &str) -> Self {
        self.s3.push((key.to_string(), value.to_string()));
        self
    }

    /// The S3 options set so far.
    pub fn s3_options(&self) -> &[(String, String)] {
        &self.s3
    }

    /// How long the checks at start (listing, reading footers) may take before the job
    /// stops with an error naming the location: an unreachable store otherwise retries
    /// for minutes. Default: 120 s.
    pub fn start_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.start_timeout = Some(timeout);
        self
    }

    /// Allows S3 credentials from the EC2 instance metadata service when no key is set.
    /// Off by default, so that a missing `AWS_ACCESS_KEY_ID` is a clear error at start
    /// rather than a minute of retries against a metadata endpoint that is not there.
    pub fn allow_instance_credentials(mut self) -> Self {
        self.instance_credentials = true;
        self
    }
}

/// Runs a start-up check against `url`'s store, bounded by the start timeout.
pub(crate) fn at_start<T>(
    url: &str,
    options: &StoreOptions,
    check: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let limit = options.start_timeout.unwrap_or(std::time::Duration::from_secs(120));
    runtime().block_on(async { tokio::time::timeout(limit, check).await }).unwrap_or_else(|_| {
        Err(Error::Store {
            url: url.to_string(),
            message: format!("no answer within {} s; is the store reachable?", limit.as_secs_f64()),
        })
    })
}

/// Which store a location is in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scheme {
    Local,
    S3 { bucket: String },
    Hdfs { authority: String },
}

/// A parsed location: a store, a path in it, and an optional glob over paths.
#[derive(Clone, Debug)]
pub(crate) struct Location {
    /// The location as the user wrote it, for messages.
    pub url: String,
    scheme: Scheme,
    /// The literal part: the whole path, or the part before the first glob segment.
    pub base: Path,
    /// The full path pattern (store path form), when the location has a glob.
    pub glob: Option<glob::Pattern>,
    options: StoreOptions,
}

fn has_glob(segment: &str) -> bool {
    segment.contains(['*', '?', '[', '{'])
}

impl Location {
    /// Parses a bare path, `file://`, `s3://` or `hdfs://` URL.
    pub fn parse(url: &str, options: &StoreOptions) -> Result<Self> {
        let bad = |reason: &str| Error::BadUrl { url: url.to_string(), reason: reason.to_string() };
        let (scheme, path) = if let Some((scheme, rest)) = url.split_once("://") {
            match scheme {
                "file" => {
                    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
                    if parsed.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                        return Err(bad("a file:// URL names no host: write file:///absolute/path"));
                    }
                    (Scheme::Local, parsed.path().to_string())
                }
                "s3" | "s3a" => {
                    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                    if bucket.is_empty() {
                        return Err(bad("an s3:// URL starts with a bucket: s3://bucket/prefix"));
                    }
                    (Scheme::S3 { bucket: bucket.to_string() }, key.to_string())
                }
                "hdfs" | "viewfs" => {
                    let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
                    if !cfg!(feature = "hdfs") {
                        return Err(bad("hdfs:// needs riffle-parquet built with the `hdfs` cargo feature"));
                    }
                    (Scheme::Hdfs { authority: format!("{scheme}://{authority}") }, key.to_string())
                }
                other => return Err(bad(&format!("unknown scheme {other:?}; use a path, file://, s3:// or hdfs://"))),
            }
        } else {
            if url.is_empty() {
                return Err(bad("empty location"));
            }
            let p = std::path::Path::new(url);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir().map_err(|e| bad(&format!("no current directory: {e}")))?.join(p)
            };
            (Scheme::Local, abs.to_string_lossy().into_owned())
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
        if segments.contains(&"..") {
            return Err(bad("'..' is not allowed in a location; give the path without it"));
        }
        let literal = segments.iter().take_while(|s| !has_glob(s)).cloned().collect::<Vec<_>>().join("/");
        let base = Path::parse(&literal).map_err(|e| bad(&e.to_string()))?;
        let glob = if segments.iter().any(|s| has_glob(s)) {
            let pattern = segments.join("/");
            Some(glob::Pattern::new(&pattern).map_err(|e| bad(&format!("bad glob: {e}")))?)
        } else {
            None
        };
        Ok(Location { url: url.to_string(), scheme, base, glob, options: options.clone() })
    }

    /// A URL for an object of this location's store, for messages.
    pub fn url_of(&self, path: &Path) -> String {
        match &self.scheme {
            Scheme::Local => format!("file:///{path}"),
            Scheme::S3 { bucket } => format!("s3://{bucket}/{path}"),
            Scheme::Hdfs { authority } => format!("{authority}/{path}"),
        }
    }

    /// Whether this is a local path.
    pub fn is_local(&self) -> bool {
        self.scheme == Scheme::Local
    }

    /// A fresh client for this location's store.
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        match &self.scheme {
            Scheme::Local => Ok(Arc::new(LocalFileSystem::new())),
            Scheme::S3 { bucket } => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (k, v) in &self.options.s3 {
                    let key: AmazonS3ConfigKey = k.to_ascii_lowercase().parse().map_err(|_| Error::BadUrl {
                        url: self.url.clone(),
                        reason: format!("unknown S3 option {k:?}"),
                    })?;
                    b = b.with_config(key, v);
                }
                let has_key = b.get_config_value(&AmazonS3ConfigKey::AccessKeyId).is_some();
                let skip = b.get_config_value(&AmazonS3ConfigKey::SkipSignature).is_some_and(|v| v == "true");
                let other_provider = [
                    AmazonS3ConfigKey::WebIdentityTokenFile,
                    AmazonS3ConfigKey::ContainerCredentialsRelativeUri,
                    AmazonS3ConfigKey::ContainerCredentialsFullUri,
                ]
                .iter()
                .any(|k| b.get_config_value(k).is_some());
                if !has_key && !skip && !other_provider && !self.options.instance_credentials {
                    return Err(Error::Credentials {
                        url: self.url.clone(),
                        message: "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                                  (or AWS_SKIP_SIGNATURE=true for a public bucket)"
                            .into(),
                    });
                }
                if b.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
                    b = b.with_config(AmazonS3ConfigKey::Region, "us-east-1");
                }
                let store = b.build().map_err(|e| Error::BadUrl { url: self.url.clone(), reason: e.to_string() })?;
                Ok(Arc::new(store))
            }
            Scheme::Hdfs { authority } => hdfs_store(&self.url, authority),
        }
    }

    /// Every object this location names: the object itself; or, for a prefix, every
    /// object under it; or, for a glob, every object matching it. Names starting with `_`
    /// or `.` (temporary files, `_SUCCESS`) are skipped under a prefix or glob. Sorted by path.
    pub async fn list(&self, store: &dyn ObjectStore) -> Result<Vec<ObjectMeta>> {
        if self.glob.is_none() {
            match store.head(&self.base).await {
                Ok(meta) => return Ok(vec![meta]),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) if self.is_local() && self.base.parts_count() > 0 => {
                    // A local directory answers `head` with an error of its own.
                    tracing::debug!("head {}: {e}", self.url);
                }
                Err(e) => return Err(Error::store(&self.url, e)),
            }
        }
        let prefix = (self.base.parts_count() > 0).then_some(&self.base);
        let all: Vec<ObjectMeta> = store.list(prefix).try_collect().await.map_err(|e| Error::store(&self.url, e))?;
        let opts = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
        let mut found: Vec<ObjectMeta> = all
            .into_iter()
            .filter(|m| {
                let hidden = m
                    .location
                    .prefix_match(&self.base)
                    .is_some_and(|mut parts| parts.any(|p| p.as_ref().starts_with(['_', '.'])));
                let matches = match &self.glob {
                    Some(g) => g.matches_with(m.location.as_ref(), opts),
                    None => true,
                };
                !hidden && matches && !m.location.as_ref().contains('#')
            })
            .collect();
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }

    /// Hive-style partition values (`date=2026-01-01/`) between the base and the file name.
    pub fn partitions(&self, path: &Path) -> Vec<(String, String)> {
        let Some(parts) = path.prefix_match(&self.base) else { return Vec::new() };
        let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
        let dirs = &parts[..parts.len().saturating_sub(1)];
        dirs.iter()
            .filter_map(|d| d.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .filter(|(k, _)| !k.is_empty())
            .collect()
    }
}

#[cfg(feature = "hdfs")]
fn hdfs_store(url: &str, authority: &str) -> Result<Arc<dyn ObjectStore>> {
    let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
        .with_url(authority)
        .build()
        .map_err(|e| Error::BadUrl { url: url.to_string(), reason: e.to_string() })?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "hdfs"))]
fn hdfs_store(url: &str, _authority: &str) -> Result<Arc<dyn ObjectStore>> {
    Err(Error::BadUrl {
        url: url.to_string(),
        reason: "hdfs:// needs riffle-parquet built with the `hdfs` cargo feature".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_store_base_and_glob() {
        let o = StoreOptions::new();
        let l = Location::parse("s3://bkt/data/date=*/part-*.parquet", &o).unwrap();
        assert_eq!(l.scheme, Scheme::S3 { bucket: "bkt".into() });
        assert_eq!(l.base.as_ref(), "data");
        assert!(l.glob.as_ref().unwrap().matches("data/date=1/part-0.parquet"));
        let l = Location::parse("file:///tmp/x/y.parquet", &o).unwrap();
        assert_eq!((l.scheme, l.base.as_ref()), (Scheme::Local, "tmp/x/y.parquet"));
        let l = Location::parse("/tmp/x", &o).unwrap();
        assert!(l.glob.is_none());
        assert_eq!(l.partitions(&Path::from("tmp/x/date=2026-01-01/h=3/f.parquet")).len(), 2);
        for bad in ["gs://b/x", "s3:///x", "", "file://host/x", "/a/../b"] {
            assert!(matches!(Location::parse(bad, &o), Err(Error::BadUrl { .. })), "{bad}");
        }
        assert!(matches!(Location::parse("hdfs://nn:8020/x", &o), Err(Error::BadUrl { .. })) != cfg!(feature = "hdfs"));
    }
}
