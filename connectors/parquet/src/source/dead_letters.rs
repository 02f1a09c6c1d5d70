//! A dead-letter output for rows that do not decode into the row type.

use std::marker::PhantomData;

use riffle_engine::Data;
use riffle_engine::prelude::{DoFn, ProcessContext, TupleTag};
use serde::{Deserialize, Serialize};

/// A row that did not decode into the row type ([`super::ReadParquet::read_with_dead_letters`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRow {
    /// The file.
    pub file: String,
    /// The row group in the file.
    pub row_group: usize,
    /// The row in the row group, counted from 0.
    pub row: usize,
    /// Why it did not decode.
    pub reason: String,
}

/// What a source with a dead-letter output emits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) enum Decoded<T> {
    Row(T),
    Bad(BadRow),
}

/// Splits decoded rows from dead letters.
pub(super) struct SplitBad<T> {
    pub(super) bad: TupleTag<BadRow>,
    pub(super) _t: PhantomData<fn() -> T>,
}

impl<T> Clone for SplitBad<T> {
    fn clone(&self) -> Self {
        SplitBad { bad: self.bad.clone(), _t: PhantomData }
    }
}

impl<T: Data> DoFn for SplitBad<T> {
    type In = Decoded<T>;
    type Out = T;
    fn process(&mut self, d: &Decoded<T>, ctx: &mut ProcessContext<'_, T>) {
        match d {
            Decoded::Row(r) => ctx.output(r.clone()),
            Decoded::Bad(b) => ctx.output_to(&self.bad, b.clone()),
        }
    }
}
