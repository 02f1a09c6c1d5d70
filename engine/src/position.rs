//! How sources write their positions for a checkpoint ([`crate::runtime::SourceReader::position`]):
//! a version byte, then the bincode of a small struct of the source's own.
//!
//! The version comes first so that a checkpoint taken by an older build is refused with a
//! message naming the step, rather than misread: a source that changes its struct bumps
//! its version (and may read the old one).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// `position` as version `version` of its source's format.
pub fn encode<P: Serialize>(version: u8, position: &P) -> Result<Vec<u8>> {
    let mut out = vec![version];
    bincode::serialize_into(&mut out, position)
        .map_err(|e| Error::Internal(format!("cannot encode a source position: {e}")))?;
    Ok(out)
}

/// A position `encode` wrote with version `version`, for step `step`.
///
/// # Errors
/// [`Error::Config`], naming the step, when the bytes are of another version or do not
/// decode: the checkpoint is not one this build of the source can resume from.
pub fn decode<P: DeserializeOwned>(step: &str, version: u8, bytes: &[u8]) -> Result<P> {
    let refuse = |why: String| Error::Config(format!("step '{step}' cannot resume from its saved position: {why}"));
    match bytes.split_first() {
        Some((v, body)) if *v == version => {
            bincode::deserialize(body).map_err(|e| refuse(format!("it does not decode ({e})")))
        }
        Some((v, _)) => Err(refuse(format!("it is of format version {v}, this build reads version {version}"))),
        None => Err(refuse("it is empty".into())),
    }
}

/// [`decode`] of every saved position.
pub fn decode_all<P: DeserializeOwned>(step: &str, version: u8, saved: &[Vec<u8>]) -> Result<Vec<P>> {
    saved.iter().map(|b| decode(step, version, b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_of_another_version_is_refused_by_name() {
        let bytes = encode(1, &(3u64, "x".to_string())).unwrap();
        assert_eq!(decode::<(u64, String)>("Read", 1, &bytes).unwrap(), (3, "x".to_string()));
        let e = decode::<(u64, String)>("Read", 2, &bytes).unwrap_err().to_string();
        assert!(e.contains("'Read'") && e.contains("version 1"), "{e}");
        assert!(decode::<u64>("Read", 1, &[]).is_err());
    }
}

/// Drives a [`SourceReader`](crate::runtime::SourceReader) by hand, without a runner, to test what a source reads
/// across a checkpoint: poll some, save every reader's position, open again from them at
/// another worker count, poll to the end, and compare the union with the input.
pub mod testing {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::clock::Clock;
    use crate::element::Data;
    use crate::error::Result;
    use crate::runtime::{SourceFn, SourcePoll, SourceReader, StepContext, WorkerInfo};
    use crate::time::{EventTime, Watermark};

    /// What one reader returned: each element, its timestamp, and the watermark it was
    /// sent at (its split's, or the reader's from before the poll).
    pub type Taken<T> = Vec<(T, EventTime, Watermark)>;

    /// Polls `reader`, asking for `per_poll` elements each time, until it has returned at
    /// least `at_least`, it is done (then `true`), or `patience` has passed with nothing
    /// returned; `Pending` waits a millisecond. Asking for more a poll than are still
    /// wanted lets a reader that fetches ahead (Kafka) hold records fetched but not
    /// returned when it stops: what its position must not count.
    pub fn take<T: Data>(
        reader: &mut dyn SourceReader,
        at_least: usize,
        per_poll: usize,
        patience: Duration,
    ) -> Result<(Taken<T>, bool)> {
        let mut out: Taken<T> = Vec::new();
        let mut last = Instant::now();
        while out.len() < at_least {
            let before = reader.watermark();
            let (batch, w) = match reader.poll(per_poll)? {
                SourcePoll::Batch(b) => (b, before),
                SourcePoll::SplitBatch(b, w) => (b, w),
                SourcePoll::Done => return Ok((out, true)),
                SourcePoll::Pending if last.elapsed() > patience => break,
                SourcePoll::Pending => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                SourcePoll::Advanced | SourcePoll::AdvanceProcessingTime(_) => continue,
            };
            last = Instant::now();
            out.extend(batch.try_into_elements::<T>()?.into_iter_windowed().map(|wv| (wv.value, wv.timestamp, w)));
        }
        Ok((out, false))
    }

    /// Polls `reader` to its end (at most `patience` with nothing returned).
    pub fn take_all<T: Data>(reader: &mut dyn SourceReader, patience: Duration) -> Result<(Taken<T>, bool)> {
        take(reader, usize::MAX, 1024, patience)
    }

    /// What [`across_checkpoint`] read.
    pub struct AcrossCheckpoint<T> {
        /// What each reader of the first run returned before the checkpoint.
        pub before: Vec<Taken<T>>,
        /// Each first-run reader's watermark when its position was taken.
        pub saved_watermarks: Vec<Watermark>,
        /// The positions saved.
        pub positions: Vec<Vec<u8>>,
        /// Each restored reader's watermark before its first poll.
        pub restored_watermarks: Vec<Watermark>,
        /// What each reader of the second run returned, to its end.
        pub after: Vec<Taken<T>>,
    }

    impl<T: Data> AcrossCheckpoint<T> {
        /// Every element returned, before and after, in no particular order.
        pub fn union(&self) -> Vec<T> {
            let all = self.before.iter().chain(&self.after);
            all.flat_map(|t| t.iter().map(|(v, _, _)| v.clone())).collect()
        }
    }

    /// Opens `source` at `workers.0` workers, takes at least `first` elements from each
    /// reader, polling for twice as many (fewer when it ends or goes quiet for `patience`), saves every reader's
    /// position and drops the readers; then opens it from those positions at `workers.1`
    /// workers and polls each reader to its end (or `patience` of quiet).
    pub fn across_checkpoint<T: Data>(
        source: &dyn SourceFn,
        clock: Arc<dyn Clock>,
        workers: (usize, usize),
        first: usize,
        patience: Duration,
    ) -> Result<AcrossCheckpoint<T>> {
        let ctx = |index, peers| StepContext {
            name: "Read".into(),
            worker: WorkerInfo { index, peers },
            clock: clock.clone(),
        };
        let mut readers = (0..workers.0).map(|w| source.open(&ctx(w, workers.0))).collect::<Result<Vec<_>>>()?;
        let mut before = Vec::new();
        for r in &mut readers {
            before.push(take(r.as_mut(), first, 2 * first, patience)?.0);
        }
        let saved_watermarks = readers.iter().map(|r| r.watermark()).collect();
        let positions = readers.iter().map(|r| r.position()).collect::<Result<Vec<_>>>()?;
        drop(readers);
        let mut readers =
            (0..workers.1).map(|w| source.open_from(&ctx(w, workers.1), &positions)).collect::<Result<Vec<_>>>()?;
        let restored_watermarks = readers.iter().map(|r| r.watermark()).collect();
        let mut after = Vec::new();
        for r in &mut readers {
            after.push(take_all(r.as_mut(), patience)?.0);
        }
        Ok(AcrossCheckpoint { before, saved_watermarks, positions, restored_watermarks, after })
    }
}
