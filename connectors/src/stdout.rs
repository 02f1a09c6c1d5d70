//! Prints a collection as lines on standard output.

use std::io::Write;
use std::sync::Arc;

use riffle_engine::{Data, Error, PCollection, Result};

use crate::lines::{LineTarget, SortedLines};

/// Prints `f(element)` for each element, sorted, on standard output once the input is
/// complete. Everything is gathered on worker 0: for small results.
///
/// ```
/// use riffle_engine::Pipeline;
/// let p = Pipeline::new();
/// riffle_connectors::stdout::print_lines(&p.create(vec![2, 1]), |x| format!("n = {x}"));
/// riffle_timely::run(&p, &riffle_timely::RunOptions::threads(2)).unwrap(); // prints n = 1, n = 2
/// ```
pub fn print_lines<T: Data>(input: &PCollection<T>, f: impl Fn(&T) -> String + Send + Sync + 'static) {
    input.write_to("PrintLines", Arc::new(SortedLines { format: Arc::new(f), target: Arc::new(Stdout) }));
}

struct Stdout;

impl LineTarget for Stdout {
    fn check(&self) -> Result<()> {
        Ok(())
    }
    fn write_all(&self, step: &str, lines: &[String]) -> Result<()> {
        let mut out = std::io::stdout().lock();
        for l in lines {
            writeln!(out, "{l}").map_err(|e| Error::io(step, "cannot write to standard output", e))?;
        }
        out.flush().map_err(|e| Error::io(step, "cannot write to standard output", e))
    }
}
