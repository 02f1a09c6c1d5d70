//! Reads lines from local text files, each file read whole by one worker.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;

use riffle_engine::graph::{NodeKind, OutputInfo, PortRef, Windowing};
use riffle_engine::runtime::{SourceFn, SourcePoll, SourceReader, StepContext};
use riffle_engine::{Batch, Elements, Error, EventTime, PCollection, PaneInfo, Pipeline, Result, Window};

/// The lines of every file matching `patterns` (paths or globs such as `logs/*.txt`),
/// without their line endings, each at timestamp [`EventTime::MIN`].
///
/// Files are dealt to workers by size (largest first, to the least loaded), so the split
/// is the same in every run.
///
/// # Errors
/// When the job starts: a pattern that matches no file, or is not a valid glob, naming it.
/// While reading: a file that cannot be read, or a line that is not UTF-8, naming the
/// file and line.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("a.txt"), "x\ny\n").unwrap();
/// std::fs::write(dir.path().join("b.txt"), "z\n").unwrap();
/// let pattern = format!("{}/*.txt", dir.path().display());
/// let mut lines = riffle_timely::testing::run_bounded(|p| riffle_connectors::text::read_lines(p, &[pattern]));
/// lines.sort();
/// assert_eq!(lines, ["x", "y", "z"]);
/// ```
pub fn read_lines(p: &Pipeline, patterns: &[impl AsRef<str>]) -> PCollection<String> {
    let patterns: Vec<String> = patterns.iter().map(|s| s.as_ref().to_string()).collect();
    let info = OutputInfo { type_name: "String", bounded: true, windowing: Windowing::default(), tag: None };
    let node = p.add_step("ReadLines", NodeKind::Source(Arc::new(TextSource { patterns })), vec![], vec![info]);
    PCollection::from_port(p, PortRef { node, port: 0 })
}

struct TextSource {
    patterns: Vec<String>,
}

impl TextSource {
    fn files(&self) -> Result<Vec<(PathBuf, u64)>> {
        let mut files = Vec::new();
        for pattern in &self.patterns {
            let paths = glob::glob(pattern)
                .map_err(|e| Error::Config(format!("input pattern {pattern:?} is not a valid glob: {e}")))?;
            let before = files.len();
            for path in paths {
                let path = path.map_err(|e| Error::io("ReadLines", format!("cannot list {pattern:?}"), e.into()))?;
                if path.is_file() {
                    let len = std::fs::metadata(&path)
                        .map_err(|e| Error::io("ReadLines", format!("cannot stat {}", path.display()), e))?
                        .len();
                    files.push((path, len));
                }
            }
            if files.len() == before {
                return Err(Error::Config(format!(
                    "input {pattern:?} matches no file; check the path (globs like data/*.txt work)"
                )));
            }
        }
        files.sort();
        files.dedup();
        Ok(files)
    }
}

impl SourceFn for TextSource {
    fn is_bounded(&self) -> bool {
        true
    }
    fn check(&self) -> Result<()> {
        self.files().map(drop)
    }
    fn open(&self, ctx: &StepContext) -> Result<Box<dyn SourceReader>> {
        let mut files = self.files()?;
        let peers = ctx.worker.peers;
        // Largest first to the least loaded worker: deterministic, and balanced by bytes.
        files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut load = vec![0u64; peers];
        let mut mine = Vec::new();
        for (path, len) in files {
            let w = (0..peers).min_by_key(|w| (load[*w], *w)).expect("at least one worker");
            load[w] += len;
            if w == ctx.worker.index {
                mine.push(path);
            }
        }
        mine.reverse();
        Ok(Box::new(TextReader { files: mine, current: None, line: 0, step: ctx.name.to_string() }))
    }
}

struct TextReader {
    /// Files still to open, last first.
    files: Vec<PathBuf>,
    current: Option<(PathBuf, BufReader<File>)>,
    line: usize,
    step: String,
}

impl SourceReader for TextReader {
    fn poll(&mut self, max_elements: usize) -> Result<SourcePoll> {
        let mut batch = Vec::with_capacity(max_elements);
        let mut buf = Vec::new();
        while batch.len() < max_elements {
            let Some((path, reader)) = self.current.as_mut() else {
                let Some(path) = self.files.pop() else { break };
                let file = File::open(&path)
                    .map_err(|e| Error::io(&self.step, format!("cannot open {}", path.display()), e))?;
                self.current = Some((path, BufReader::with_capacity(1 << 16, file)));
                self.line = 0;
                continue;
            };
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| Error::io(&self.step, format!("cannot read {}", path.display()), e))?;
            if n == 0 {
                self.current = None;
                continue;
            }
            self.line += 1;
            if buf.ends_with(b"\n") {
                buf.pop();
                if buf.ends_with(b"\r") {
                    buf.pop();
                }
            }
            let line = String::from_utf8(std::mem::take(&mut buf)).map_err(|_| Error::Io {
                step: self.step.clone(),
                message: format!("{} line {} is not UTF-8 text", path.display(), self.line),
                source: None,
            })?;
            batch.push(line);
        }
        if batch.is_empty() {
            Ok(SourcePoll::Done)
        } else {
            Ok(SourcePoll::Batch(Batch::new(Elements::uniform(
                batch,
                EventTime::MIN,
                Window::Global,
                PaneInfo::NO_FIRING,
            ))))
        }
    }
}
