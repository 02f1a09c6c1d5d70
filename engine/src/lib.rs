//! Riffle's pipeline model: what a pipeline *is*, independent of how it runs.
//!
//! ```text
//!  user pipeline fn ──> Pipeline / PCollection<T>     (this crate: the model)
//!                           │  a validated, printable Graph of typed steps
//!                           v
//!                       riffle-timely                  (lowering to timely operators)
//!                           │
//!                           v
//!                       timely workers: threads x processes, exchange over TCP
//! ```
//!
//! A [`Pipeline`] is built by calling transforms on [`PCollection`]s. Each transform adds
//! a step to the [`Graph`]; the step carries type-erased kernels ([`runtime`]) whose code
//! is monomorphized for the step's element types, so a runner can lower the graph
//! without knowing those types, and move data as [`Batch`]es of columns with one dynamic
//! call per batch, never per element.
//!
//! This crate does not depend on timely: the runner does.

pub mod arrival;
pub mod batch;
pub mod clock;
pub mod codec;
pub mod element;
pub mod error;
pub mod graph;
pub mod keys;
pub mod pane;
pub mod pipeline;
pub mod position;
pub mod runtime;
pub mod time;
pub mod transforms;
pub mod trigger;
pub mod window;

pub use batch::Batch;
pub use clock::{Clock, ManualClock, ProcessingTime, SystemClock};
pub use element::{Data, Elements, Key, WindowedValue};
pub use error::{Error, ErrorDomain, Result};
pub use graph::{AccumulationMode, Graph, Node, NodeId, NodeKind, OutputInfo, PortRef, TimestampCombiner, Windowing};
pub use pane::{PaneInfo, Timing};
pub use pipeline::{PCollection, Pipeline};
pub use time::{EstimatorState, EventTime, Watermark, WatermarkEstimator, WatermarkStrategy};
pub use transforms::combine_fns::{CombineFn, Count, Max, Mean, Min, Sum, Summable, Top};
pub use transforms::par_do::{DoFn, FinishBundleContext, ProcessContext, TaggedOutputs, TupleTag};
pub use transforms::test_stream::{TestEvent, TestStream};
pub use trigger::Trigger;
pub use window::{FixedWindows, GlobalWindows, Sessions, SlidingWindows, Window, WindowFn};

/// Everything a pipeline author usually needs.
pub mod prelude {
    pub use crate::transforms::combine_fns::{CombineFn, Count, Max, Mean, Min, Sum, Top};
    pub use crate::transforms::par_do::{DoFn, FinishBundleContext, ProcessContext, TupleTag};
    pub use crate::transforms::side_input::{SideDoFn, SideInput};
    pub use crate::transforms::stateful::{
        BagState, CombiningState, MapState, OrderedListState, StateContext, StatefulDoFn, ValueState,
    };
    pub use crate::transforms::test_stream::TestStream;
    pub use crate::trigger::Trigger;
    pub use crate::window::{FixedWindows, GlobalWindows, Sessions, SlidingWindows, Window, WindowFn};
    pub use crate::{
        EventTime, PCollection, PaneInfo, Pipeline, TimestampCombiner, Timing, WatermarkStrategy, WindowedValue,
    };
}

/// The README's examples, compiled and run as doctests so they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
