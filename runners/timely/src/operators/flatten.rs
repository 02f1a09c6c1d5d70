//! Flatten: timely's concatenate.

use timely::dataflow::Scope;
use timely::dataflow::operators::Concatenate;

use super::BatchStream;
use crate::time::Time;

/// Lowers a Flatten step.
pub fn flatten<'scope>(scope: Scope<'scope, Time>, inputs: Vec<BatchStream<'scope>>) -> BatchStream<'scope> {
    scope.concatenate(inputs)
}
