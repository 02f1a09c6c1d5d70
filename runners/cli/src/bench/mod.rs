//! `riffle bench`: benchmarks a user can run, with baselines measured in the same run.

pub mod hosts;
pub mod member;
pub mod plot;
pub mod records;
pub mod rusage;
pub mod shuffle;
