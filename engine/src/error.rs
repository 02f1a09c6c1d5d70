//! Riffle's error type: every variant says which step, and who must act.

use std::any::Any;

/// The result of anything in Riffle that can fail.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who has to act on an error, and whether trying again can help.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrorDomain {
    /// The pipeline's code, its configuration or its data: the user fixes it.
    User,
    /// A system outside Riffle (a file system, an object store, a peer process):
    /// retrying may help once it is back.
    External,
    /// A bug in Riffle itself.
    Internal,
}

/// Everything that can stop a Riffle pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline graph is not valid; found before anything runs.
    #[error("invalid pipeline at step '{step}': {message}")]
    Validation {
        /// The step at fault.
        step: String,
        /// What is wrong and what to do about it.
        message: String,
    },
    /// User code (a DoFn, a map closure, a CombineFn) panicked.
    #[error("step '{step}' panicked: {message}{}", element.as_ref().map(|e| format!("\n  while processing element: {e}")).unwrap_or_default())]
    UserCode {
        /// The step whose code panicked.
        step: String,
        /// The panic message.
        message: String,
        /// The element being processed: printed with `Debug` and truncated where the
        /// code borrowed it (a DoFn, `filter`); where it took the element by value (`map`,
        /// `flat_map`), the value is gone, and this says where the element was in its
        /// bundle, its timestamp and its window instead.
        element: Option<String>,
    },
    /// A source or sink could not read or write.
    #[error("{step}: {message}")]
    Io {
        /// The step, or the location, that failed.
        step: String,
        /// What failed, naming the file or URL.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<std::io::Error>,
    },
    /// Bad options or configuration, found at start.
    #[error("configuration error: {0}")]
    Config(String),
    /// Another process of the job was lost, or the cluster could not be formed.
    #[error("cluster error: {0}")]
    Cluster(String),
    /// A bug in Riffle: please report it.
    #[error("internal error in Riffle (this is a bug in the engine, not in your pipeline): {0}")]
    Internal(String),
}

impl Error {
    /// Who must act on this error.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Error::Validation { .. } | Error::UserCode { .. } | Error::Config(_) => ErrorDomain::User,
            Error::Io { .. } | Error::Cluster(_) => ErrorDomain::External,
            Error::Internal(_) => ErrorDomain::Internal,
        }
    }

    /// An I/O error at `step` about `message`.
    pub fn io(step: impl Into<String>, message: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { step: step.into(), message: message.into(), source: Some(source) }
    }

    /// A panic caught in user code at `step`, while processing `element` if known.
    pub fn from_panic(step: &str, payload: Box<dyn Any + Send>, element: Option<String>) -> Self {
        Error::UserCode { step: step.to_string(), message: panic_message(&payload), element }
    }
}

/// The message of a panic payload, as `std` would print it.
pub fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic with a non-string payload)".to_string()
    }
}

/// `Debug` of an element, cut to `max` characters so that one huge record cannot flood a log.
pub fn truncated_debug<T: std::fmt::Debug + ?Sized>(value: &T, max: usize) -> String {
    let s = format!("{value:?}");
    if s.chars().count() <= max {
        s
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}… ({} characters in all)", s.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_short_values_and_cuts_long_ones() {
        assert_eq!(truncated_debug(&"ab", 10), "\"ab\"");
        let long = "x".repeat(500);
        let t = truncated_debug(&long, 20);
        assert!(t.starts_with("\"xxxxxxxxxxxxxxxxxxx"));
        assert!(t.ends_with("(502 characters in all)"));
    }

    #[test]
    fn user_code_error_names_step_and_element() {
        let e = Error::from_panic("Parse", Box::new("bad digit"), Some("\"12x\"".into()));
        let s = e.to_string();
        assert!(s.contains("step 'Parse' panicked: bad digit"), "{s}");
        assert!(s.contains("\"12x\""), "{s}");
        assert_eq!(e.domain(), ErrorDomain::User);
    }
}
