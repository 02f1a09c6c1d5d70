//! The transform catalogue: one file per transform, each adding methods to
//! [`PCollection`](crate::PCollection) (or [`Pipeline`](crate::Pipeline) for sources).

pub mod co_group_by_key;
pub mod combine_fns;
pub mod create;
pub mod flatten;
pub mod group;
pub mod hybrid;
pub mod map;
pub mod par_do;
pub mod partition;
pub mod reshuffle;
pub mod side_input;
pub mod split_stream;
pub mod stateful;
pub mod test_stream;
pub mod timestamps;
