//! A sink that gathers formatted lines on worker 0 and hands them over sorted, once the
//! input is complete (and, in a job that takes checkpoints, what came since the last one
//! at each); the file and stdout sinks differ only in where the lines go.

use std::sync::Arc;

use riffle_engine::runtime::{SinkFn, SinkWriter, StepContext};
use riffle_engine::{Batch, Data, Result};

/// Formats one element as one line.
pub type Format<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Where sorted lines go at the end.
pub trait LineTarget: Send + Sync + 'static {
    /// Checks at start that the target can be written.
    fn check(&self) -> Result<()>;
    /// Writes every line, in order.
    fn write_all(&self, step: &str, lines: &[String]) -> Result<()>;
}

pub struct SortedLines<T, L> {
    pub format: Format<T>,
    pub target: Arc<L>,
}

impl<T: Data, L: LineTarget> SinkFn for SortedLines<T, L> {
    fn gathers(&self) -> bool {
        true
    }
    fn check(&self) -> Result<()> {
        self.target.check()
    }
    fn open(&self, ctx: &StepContext) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(LinesWriter::<T, L> {
            step: ctx.name.to_string(),
            format: self.format.clone(),
            target: self.target.clone(),
            lines: Vec::new(),
            worker: ctx.worker.index,
        }))
    }
}

struct LinesWriter<T, L> {
    step: String,
    format: Format<T>,
    target: Arc<L>,
    lines: Vec<String>,
    worker: usize,
}

impl<T: Data, L: LineTarget> SinkWriter for LinesWriter<T, L> {
    fn write(&mut self, input: Batch) -> Result<()> {
        let e = input.try_into_elements::<T>()?;
        self.lines.extend(e.values().iter().map(|v| (self.format)(v)));
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        // At a checkpoint, what came since the last one, sorted.
        self.finish()?;
        self.lines.clear();
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        // Everything was sent to worker 0; the others have nothing to write.
        if self.worker != 0 {
            return Ok(());
        }
        self.lines.sort_unstable();
        self.target.write_all(&self.step, &self.lines)
    }
}
