//! Writes a collection as lines of one text file, atomically.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use riffle_engine::{Data, Error, PCollection, Result};

use crate::lines::{LineTarget, SortedLines};

/// Writes `f(element)` for each element as the lines of the file at `path`, sorted.
///
/// Everything is gathered on worker 0, which writes a temporary file beside `path` and
/// renames it into place once the input is complete: a reader never sees half a file,
/// and a failed job leaves the previous file (or none) in place.
///
/// # Errors
/// When the job starts: the parent directory does not exist. At the end: the file cannot
/// be written.
///
/// ```
/// use riffle_engine::Pipeline;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("out.txt");
/// let p = Pipeline::new();
/// riffle_connectors::text::write_lines(&p.create(vec![3, 1, 2]), &path, |x| x.to_string());
/// riffle_timely::run(&p, &riffle_timely::RunOptions::threads(2)).unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n3\n");
/// ```
pub fn write_lines<T: Data>(
    input: &PCollection<T>,
    path: impl Into<PathBuf>,
    f: impl Fn(&T) -> String + Send + Sync + 'static,
) {
    let target = Arc::new(TextFile { path: path.into() });
    input.write_to("WriteLines", Arc::new(SortedLines { format: Arc::new(f), target }));
}

struct TextFile {
    path: PathBuf,
}

impl TextFile {
    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }
}

impl LineTarget for TextFile {
    fn check(&self) -> Result<()> {
        if self.dir().is_dir() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "output {}: directory {} does not exist; create it first",
                self.path.display(),
                self.dir().display()
            )))
        }
    }

    fn write_all(&self, step: &str, lines: &[String]) -> Result<()> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = self.dir().join(format!(".{name}.riffle-{}.tmp", std::process::id()));
        let fail = |what: &str, e| Error::io(step, format!("cannot {what} {}", tmp.display()), e);
        let file = std::fs::File::create(&tmp).map_err(|e| fail("create", e))?;
        let mut out = std::io::BufWriter::new(file);
        for l in lines {
            writeln!(out, "{l}").map_err(|e| fail("write", e))?;
        }
        let file = out.into_inner().map_err(|e| fail("write", e.into_error()))?;
        file.sync_all().map_err(|e| fail("sync", e))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| Error::io(step, format!("cannot move {} to {}", tmp.display(), self.path.display()), e))
    }
}
