//! The type-erased batch: how typed elements travel through a runner that is not generic.
//!
//! A pipeline graph holds steps of many element types, and a runner lowers them without
//! knowing any of those types. Each step's kernel is monomorphized when the user builds
//! the pipeline (so its inner loop is static code), and hands batches to the runner as a
//! [`Batch`]: one box and one downcast per batch, never per element.

use std::any::Any;
use std::cell::OnceCell;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::element::{Data, Elements};
use crate::error::{Error, Result};
use crate::keys::KeyGroup;

/// A batch of elements of some type the runner need not know.
///
/// Within a process it carries the typed [`Elements`] in a box. When it must cross to
/// another process it is serialized once (the bytes are cached, because timely asks for
/// the length before it asks for the bytes) and arrives as bytes, decoded by the step that
/// receives it, which knows the type.
pub struct Batch {
    target: u32,
    len: u32,
    payload: Payload,
}

enum Payload {
    Typed {
        data: Box<dyn Any + Send>,
        encode: fn(&(dyn Any + Send)) -> Vec<u8>,
        clone: fn(&(dyn Any + Send)) -> Box<dyn Any + Send>,
        encoded: OnceCell<Vec<u8>>,
    },
    Encoded(Vec<u8>),
}

fn clone_elements<T: Data>(data: &(dyn Any + Send)) -> Box<dyn Any + Send> {
    Box::new(data.downcast_ref::<Elements<T>>().expect("internal error: batch type mismatch").clone())
}

impl Batch {
    /// Wraps typed elements.
    pub fn new<T: Data>(elements: Elements<T>) -> Self {
        Batch {
            target: 0,
            len: u32::try_from(elements.len()).expect("a batch holds fewer than 2^32 elements"),
            payload: Payload::Typed {
                data: Box::new(elements),
                encode: crate::codec::encode::<T>,
                clone: clone_elements::<T>,
                encoded: OnceCell::new(),
            },
        }
    }

    /// Sets the worker an exchange delivers this batch to.
    pub fn with_target(mut self, worker: usize) -> Self {
        self.target = u32::try_from(worker).expect("worker index fits in u32");
        self
    }

    /// One batch per non-empty part, addressed to the worker of the part's index: what a
    /// shuffle emits after splitting by destination.
    pub fn per_worker<T: Data>(parts: Vec<Elements<T>>) -> impl Iterator<Item = Batch> {
        parts.into_iter().enumerate().filter(|(_, p)| !p.is_empty()).map(|(w, p)| Batch::new(p).with_target(w))
    }

    /// One batch per key group present in `elements`, by `group(value)`, each element
    /// keeping its timestamp, window and pane: what a checkpoint keeps of a keyed batch
    /// that crossed an exchange but was not applied yet
    /// ([`crate::runtime::ShuffleFn::split_by_key_group`]), restored wherever each group
    /// goes. Each key is hashed twice (to list the groups, then to split): a checkpoint's
    /// path, not the shuffle's.
    pub fn per_key_group<T: Data>(elements: Elements<T>, group: impl Fn(&T) -> KeyGroup) -> Vec<(KeyGroup, Batch)> {
        let mut groups: Vec<KeyGroup> = elements.values().iter().map(&group).collect();
        groups.sort_unstable();
        groups.dedup();
        let parts = elements.split_by(groups.len(), |x| {
            groups.binary_search(&group(x)).expect("internal error: a key's group changed while splitting")
        });
        groups.into_iter().zip(parts).map(|(g, part)| (g, Batch::new(part))).collect()
    }

    /// The worker an exchange delivers this batch to.
    pub fn target(&self) -> usize {
        self.target as usize
    }

    /// How many elements the batch holds.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the batch holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Recovers the typed elements.
    ///
    /// # Panics
    /// If the batch holds another type, or bytes that do not decode as `Elements<T>`:
    /// both are bugs in the engine (a miswired graph), not in a pipeline.
    pub fn into_elements<T: Data>(self) -> Elements<T> {
        match self.payload {
            Payload::Typed { data, .. } => match data.downcast::<Elements<T>>() {
                Ok(e) => *e,
                Err(_) => panic!(
                    "internal error in Riffle: a step expected a batch of {} but got another type",
                    std::any::type_name::<T>()
                ),
            },
            Payload::Encoded(bytes) => crate::codec::decode(&bytes).unwrap_or_else(|e| {
                panic!("internal error in Riffle: a batch of {} did not decode: {e}", std::any::type_name::<T>())
            }),
        }
    }

    /// Recovers the typed elements of a batch that may have crossed from another
    /// process: bytes that do not decode as `Elements<T>` are an error, not a panic, so
    /// the step that received them fails the job with a message instead of its worker.
    ///
    /// # Errors
    /// [`Error::Internal`] when the frame does not decode: a bug in Riffle, or processes
    /// of one job running different builds of the pipeline.
    ///
    /// # Panics
    /// If the batch holds another type in this process: a miswired graph, a bug in the
    /// engine.
    pub fn try_into_elements<T: Data>(self) -> Result<Elements<T>> {
        match self.payload {
            Payload::Encoded(bytes) => crate::codec::decode(&bytes).map_err(|e| {
                Error::Internal(format!(
                    "a batch of {} from another process did not decode ({e}): a bug in Riffle, or the \
                     processes of this job run different builds; run the same binary in every process",
                    std::any::type_name::<T>()
                ))
            }),
            typed => Ok(Batch { payload: typed, ..self }.into_elements()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.payload {
            Payload::Typed { data, encode, encoded, .. } => encoded.get_or_init(|| encode(data.as_ref())),
            Payload::Encoded(bytes) => bytes,
        }
    }
}

/// A batch read by several steps is cloned for each (timely's fan-out); the cached
/// encoding is not carried over, as the copies may go to different places.
impl Clone for Batch {
    fn clone(&self) -> Self {
        let payload = match &self.payload {
            Payload::Typed { data, encode, clone, .. } => {
                Payload::Typed { data: clone(data.as_ref()), encode: *encode, clone: *clone, encoded: OnceCell::new() }
            }
            Payload::Encoded(bytes) => Payload::Encoded(bytes.clone()),
        };
        Batch { target: self.target, len: self.len, payload }
    }
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.target, self.len, serde_bytes::Bytes::new(self.bytes())).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (target, len, bytes) = <(u32, u32, serde_bytes::ByteBuf)>::deserialize(d)?;
        Ok(Batch { target, len, payload: Payload::Encoded(bytes.into_vec()) })
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.payload {
            Payload::Typed { .. } => "typed",
            Payload::Encoded(_) => "encoded",
        };
        write!(f, "Batch({kind}, {} elements, target {})", self.len, self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventTime, PaneInfo, Window};

    #[test]
    fn a_frame_that_does_not_decode_is_an_error_not_a_panic() {
        // A batch as it arrives from another process, with bytes that are no frame.
        let wire = bincode::serialize(&(0u32, 3u32, serde_bytes::Bytes::new(&[1, 0xff, 0xff, 7]))).unwrap();
        let garbage: Batch = bincode::deserialize(&wire).unwrap();
        let err = garbage.try_into_elements::<(String, u64)>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("(alloc::string::String, u64)") && text.contains("did not decode"), "{text}");
        assert_eq!(err.domain(), crate::ErrorDomain::Internal);
    }

    #[test]
    fn a_batch_survives_serialization_once_encoded() {
        let mut e = Elements::new();
        e.push(("k".to_string(), 7u64), EventTime::from_millis(5), Window::Global, PaneInfo::NO_FIRING);
        let b = Batch::new(e).with_target(3);
        let bytes = bincode::serialize(&b).unwrap();
        assert_eq!(bincode::serialized_size(&b).unwrap() as usize, bytes.len());
        let back: Batch = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back.target(), 3);
        assert_eq!(back.len(), 1);
        let e = back.into_elements::<(String, u64)>();
        assert_eq!(e.value(0), &("k".to_string(), 7));
        assert_eq!(e.timestamp(0), EventTime::from_millis(5));
    }
}
