//! The state cells a [`super::StatefulDoFn`] declares: a value, a bag, a combining cell, a
//! map and a list ordered by timestamp (Beam's `ValueState` and friends).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::EventTime;
use crate::transforms::combine_fns::CombineFn;

/// A single value (Beam's `ValueState`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueState<T>(Option<T>);

impl<T: Clone> ValueState<T> {
    /// The value, if one was written.
    pub fn read(&self) -> Option<&T> {
        self.0.as_ref()
    }
    /// Writes the value.
    pub fn write(&mut self, v: T) {
        self.0 = Some(v);
    }
    /// Clears it.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// An unordered bag of values (Beam's `BagState`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BagState<T>(Vec<T>);

impl<T> BagState<T> {
    /// Adds a value.
    pub fn add(&mut self, v: T) {
        self.0.push(v);
    }
    /// The values added since the last clear.
    pub fn read(&self) -> &[T] {
        &self.0
    }
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Takes the values out, leaving it empty.
    pub fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.0)
    }
    /// Clears it.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Values folded by a [`CombineFn`] as they are added (Beam's `CombiningState`).
pub struct CombiningState<C: CombineFn> {
    combine: C,
    acc: Option<C::Accum>,
}

impl<C: CombineFn + Default> Default for CombiningState<C> {
    fn default() -> Self {
        CombiningState { combine: C::default(), acc: None }
    }
}

/// Saved as its accumulator: the combine is code, made again by `Default`.
impl<C: CombineFn> Serialize for CombiningState<C> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.acc.serialize(s)
    }
}

impl<'de, C: CombineFn + Default> Deserialize<'de> for CombiningState<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(CombiningState { combine: C::default(), acc: Option::deserialize(d)? })
    }
}

impl<C: CombineFn> CombiningState<C> {
    /// Adds an input.
    pub fn add(&mut self, input: &C::Input) {
        let acc = self.acc.get_or_insert_with(|| self.combine.create_accumulator());
        self.combine.add_input(acc, input);
    }
    /// The combined value of what was added (the combine's empty result if nothing was).
    pub fn read(&self) -> C::Output {
        match &self.acc {
            Some(acc) => self.combine.extract_output(acc.clone()),
            None => self.combine.extract_output(self.combine.create_accumulator()),
        }
    }
    /// Clears it.
    pub fn clear(&mut self) {
        self.acc = None;
    }
}

/// A map from keys to values (Beam's `MapState`), iterated in key order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapState<K: Ord, V>(BTreeMap<K, V>);

impl<K: Ord, V> Default for MapState<K, V> {
    fn default() -> Self {
        MapState(BTreeMap::new())
    }
}

impl<K: Ord, V> MapState<K, V> {
    /// Puts `v` at `k`, returning what was there.
    pub fn put(&mut self, k: K, v: V) -> Option<V> {
        self.0.insert(k, v)
    }
    /// The value at `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.0.get(k)
    }
    /// Removes `k`.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.0.remove(k)
    }
    /// Every entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter()
    }
    /// Clears it.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Values ordered by timestamp (Beam's `OrderedListState`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderedListState<T>(BTreeMap<EventTime, Vec<T>>);

impl<T> Default for OrderedListState<T> {
    fn default() -> Self {
        OrderedListState(BTreeMap::new())
    }
}

impl<T> OrderedListState<T> {
    /// Adds `v` at timestamp `t`.
    pub fn add(&mut self, t: EventTime, v: T) {
        self.0.entry(t).or_default().push(v);
    }
    /// Every value with its timestamp, in timestamp order (in the order added at one time).
    pub fn read(&self) -> impl Iterator<Item = (EventTime, &T)> {
        self.0.iter().flat_map(|(t, vs)| vs.iter().map(move |v| (*t, v)))
    }
    /// The values in `[from, to)`, in order.
    pub fn read_range(&self, from: EventTime, to: EventTime) -> impl Iterator<Item = (EventTime, &T)> {
        self.0.range(from..to).flat_map(|(t, vs)| vs.iter().map(move |v| (*t, v)))
    }
    /// Removes the values in `[from, to)`.
    pub fn clear_range(&mut self, from: EventTime, to: EventTime) {
        let keep = self.0.split_off(&to);
        self.0.retain(|t, _| *t < from);
        self.0.extend(keep);
    }
    /// Clears it.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}
