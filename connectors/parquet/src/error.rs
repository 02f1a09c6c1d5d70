//! The Parquet connector's error: each variant names the location, and the column where
//! one is at fault, and says who must act.

use riffle_engine::Error as EngineError;

/// The result of anything in this crate that can fail.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading or writing Parquet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The location is not a URL or path Riffle can use.
    #[error("bad location {url:?}: {reason}")]
    BadUrl {
        /// The location as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing exists at the location, or a glob matches no Parquet file.
    #[error("{url}: no such file, and no Parquet file under it or matching it")]
    NotFound {
        /// The location as given.
        url: String,
    },
    /// The object store refused the credentials, or none were found.
    #[error("{url}: access denied: {message}")]
    Credentials {
        /// The location.
        url: String,
        /// What the store said, and what to set.
        message: String,
    },
    /// The object store failed (unreachable, an I/O error); retrying may help.
    #[error("{url}: {message}")]
    Store {
        /// The location.
        url: String,
        /// What failed.
        message: String,
    },
    /// The file is not Parquet, or is truncated or corrupt.
    #[error("{url}: not a readable Parquet file: {message}")]
    Corrupt {
        /// The file.
        url: String,
        /// What the Parquet reader said.
        message: String,
    },
    /// A column the row type needs is missing from the file.
    #[error("{url}: column {column:?} needed by the row type {row_type} is not in the file (it has: {available})")]
    MissingColumn {
        /// The file.
        url: String,
        /// The column.
        column: String,
        /// The Rust row type.
        row_type: String,
        /// The file's columns.
        available: String,
    },
    /// A column's type in the file does not match the row type's field.
    #[error("{url}: column {column:?} is {file_type} in the file but {field_type} in the row type {row_type}")]
    SchemaMismatch {
        /// The file.
        url: String,
        /// The column.
        column: String,
        /// Its Arrow type in the file.
        file_type: String,
        /// The Arrow type the row type's field maps to.
        field_type: String,
        /// The Rust row type.
        row_type: String,
    },
    /// Rows could not be converted between Arrow and the row type.
    #[error("{url}: {message}")]
    Convert {
        /// The file.
        url: String,
        /// What serde_arrow or the writer said.
        message: String,
    },
    /// Writing a file failed (no space left, a read-only file system, a refused upload).
    #[error("writing {url} failed: {message}")]
    Write {
        /// The file being written (its final name; it was being staged).
        url: String,
        /// What the file system or the store said.
        message: String,
    },
    /// An option of the source or sink is invalid (a row type that is not a struct, a
    /// timestamp column of the wrong type, a missing feature).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Whether the user (their pipeline, data or configuration) must act, rather than an
    /// external system recovering.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Error::Store { .. } | Error::Write { .. })
    }

    /// Classifies an object store error about `url`.
    pub(crate) fn store(url: &str, e: object_store::Error) -> Self {
        let url = url.to_string();
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound { url },
            object_store::Error::PermissionDenied { source, .. }
            | object_store::Error::Unauthenticated { source, .. } => {
                Error::Credentials { url, message: source.to_string() }
            }
            other => {
                let message = other.to_string();
                // S3 reports bad keys as a 403 with one of these codes in the body.
                const DENIED: [&str; 5] =
                    ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden", "ExpiredToken"];
                if DENIED.iter().any(|d| message.contains(d)) {
                    Error::Credentials {
                        url,
                        message: format!(
                            "the store rejected the credentials; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ({message})"
                        ),
                    }
                } else {
                    Error::Store { url, message }
                }
            }
        }
    }

    /// A Parquet writer's error while writing the file that goes to `url`: what the file
    /// system or store said, not a claim about the file.
    pub(crate) fn parquet_write(url: &str, e: parquet::errors::ParquetError) -> Self {
        let message = match e {
            parquet::errors::ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
                Ok(os) => match *os {
                    object_store::Error::Generic { source, .. } => source.to_string(),
                    other => other.to_string(),
                },
                Err(other) => other.to_string(),
            },
            other => other.to_string(),
        };
        Error::Write { url: url.to_string(), message }
    }

    /// Classifies a Parquet reader error about the file at `url`.
    pub(crate) fn parquet(url: &str, e: parquet::errors::ParquetError) -> Self {
        match e {
            parquet::errors::ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
                Ok(os) => Error::store(url, *os),
                Err(other) => Error::Corrupt { url: url.to_string(), message: other.to_string() },
            },
            other => Error::Corrupt { url: url.to_string(), message: other.to_string() },
        }
    }
}

impl From<Error> for EngineError {
    fn from(e: Error) -> Self {
        if e.is_user_error() {
            EngineError::Config(e.to_string())
        } else {
            EngineError::Io { step: "parquet".into(), message: e.to_string(), source: None }
        }
    }
}
