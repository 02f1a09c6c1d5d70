//! What a grouping folds per key and window, and how it becomes output: the list of values
//! (GroupByKey), partial accumulators (a lifted combine), raw inputs (an unlifted one), and
//! signed multisets (the retracting mode).

use super::*;

/// What is folded per key and window after the shuffle, and how it becomes output.
pub(super) trait Grouping: Send + Sync + 'static {
    type K: Key;
    /// What crosses the shuffle per key.
    type Shuffled: Data;
    /// Saved in checkpoints ([`GroupState::snapshot`]), so it serializes.
    type Acc: Send + Clone + Serialize + DeserializeOwned;
    type Out: Data;
    fn create(&self) -> Self::Acc;
    fn fold(&self, acc: &mut Self::Acc, x: Self::Shuffled);
    /// Folds `other` into `acc`: when merging windows merge.
    fn merge_acc(&self, acc: &mut Self::Acc, other: Self::Acc);
    fn extract(&self, acc: Self::Acc) -> Self::Out;
    /// Whether an empty global window still outputs `extract(create())`.
    fn default_on_empty(&self) -> bool {
        false
    }
    /// Takes `x` back out (a retraction). Only the groupings of retracting collections
    /// get retractions.
    fn retract(&self, _acc: &mut Self::Acc, _x: Self::Shuffled) {
        panic!(
            "a retraction reached a grouping whose input is not in accumulating-and-retracting mode; \
             keep the mode of a retracting collection downstream of it"
        );
    }
}

/// GroupByKey: the accumulator is the list of values.
pub(super) struct ListGrouping<K, V>(pub(super) PhantomData<fn() -> (K, V)>);

impl<K: Key, V: Data> Grouping for ListGrouping<K, V> {
    type K = K;
    type Shuffled = V;
    type Acc = Vec<V>;
    type Out = Vec<V>;
    fn create(&self) -> Vec<V> {
        Vec::new()
    }
    #[inline]
    fn fold(&self, acc: &mut Vec<V>, x: V) {
        acc.push(x);
    }
    fn merge_acc(&self, acc: &mut Vec<V>, other: Vec<V>) {
        acc.extend(other);
    }
    fn extract(&self, acc: Vec<V>) -> Vec<V> {
        acc
    }
}

/// Combine after lifting: partial accumulators cross the shuffle and are merged.
pub(super) struct MergeGrouping<K, C> {
    pub(super) combine: Arc<C>,
    pub(super) default_on_empty: bool,
    pub(super) _k: PhantomData<fn() -> K>,
}

impl<K: Key, C: CombineFn> Grouping for MergeGrouping<K, C> {
    type K = K;
    type Shuffled = C::Accum;
    type Acc = C::Accum;
    type Out = C::Output;
    fn create(&self) -> C::Accum {
        self.combine.create_accumulator()
    }
    #[inline]
    fn fold(&self, acc: &mut C::Accum, x: C::Accum) {
        self.combine.merge_accumulators(acc, x);
    }
    fn merge_acc(&self, acc: &mut C::Accum, other: C::Accum) {
        self.combine.merge_accumulators(acc, other);
    }
    fn extract(&self, acc: C::Accum) -> C::Output {
        self.combine.extract_output(acc)
    }
    fn default_on_empty(&self) -> bool {
        self.default_on_empty
    }
}

/// Combine without lifting: raw inputs cross the shuffle and are added after it, so
/// element-count triggers count elements, not partial accumulators.
pub(super) struct AddGrouping<K, C> {
    pub(super) combine: Arc<C>,
    pub(super) _k: PhantomData<fn() -> K>,
}

impl<K: Key, C: CombineFn> Grouping for AddGrouping<K, C> {
    type K = K;
    type Shuffled = C::Input;
    type Acc = C::Accum;
    type Out = C::Output;
    fn create(&self) -> C::Accum {
        self.combine.create_accumulator()
    }
    fn fold(&self, acc: &mut C::Accum, x: C::Input) {
        self.combine.add_input(acc, &x);
    }
    fn merge_acc(&self, acc: &mut C::Accum, other: C::Accum) {
        self.combine.merge_accumulators(acc, other);
    }
    fn extract(&self, acc: C::Accum) -> C::Output {
        self.combine.extract_output(acc)
    }
}

/// A multiset of values with signed multiplicities, keyed by their encoding (every `Data`
/// serializes, so values need no `Eq`): what a grouping of a retracting collection keeps,
/// so that a retraction takes out exactly what an earlier pane put in. Multiplicities may
/// go below zero for a while (a retraction can arrive before what it retracts, from
/// another worker); only positive ones are output.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Multiset<V>(BTreeMap<Vec<u8>, (V, i64)>);

impl<V: Data> Multiset<V> {
    fn add(&mut self, v: V, n: i64) {
        let key = bitcode::serialize(&v).expect("internal error: encoding a value for a multiset failed");
        let entry = self.0.entry(key).or_insert((v, 0));
        entry.1 += n;
        if entry.1 == 0 {
            let key = bitcode::serialize(&entry.0).expect("internal error: encoding a value for a multiset failed");
            self.0.remove(&key);
        }
    }

    fn merge(&mut self, other: Multiset<V>) {
        for (v, n) in other.0.into_values() {
            self.add(v, n);
        }
    }

    /// Every value, as many times as it is in the set, in the order of their encodings.
    fn values(self) -> impl Iterator<Item = V> {
        self.0.into_values().flat_map(|(v, n)| std::iter::repeat_n(v, n.max(0) as usize))
    }
}

/// Groupings of a retracting collection (accumulating-and-retracting mode).
pub(super) struct MultisetGrouping;

impl MultisetGrouping {
    /// GroupByKey: the values in the set.
    pub(super) fn values<K: Key, V: Data>() -> MultisetValues<K, V> {
        MultisetValues(PhantomData)
    }
    /// Combine: the combiner applied to the values in the set, when a pane fires.
    pub(super) fn combined<K: Key, C: CombineFn>(combine: Arc<C>) -> MultisetCombine<K, C> {
        MultisetCombine { combine, _k: PhantomData }
    }
}

/// GroupByKey over a retracting collection.
pub(super) struct MultisetValues<K, V>(pub(super) PhantomData<fn() -> (K, V)>);

impl<K: Key, V: Data> Grouping for MultisetValues<K, V> {
    type K = K;
    type Shuffled = V;
    type Acc = Multiset<V>;
    type Out = Vec<V>;
    fn create(&self) -> Multiset<V> {
        Multiset(BTreeMap::new())
    }
    fn fold(&self, acc: &mut Multiset<V>, x: V) {
        acc.add(x, 1);
    }
    fn retract(&self, acc: &mut Multiset<V>, x: V) {
        acc.add(x, -1);
    }
    fn merge_acc(&self, acc: &mut Multiset<V>, other: Multiset<V>) {
        acc.merge(other);
    }
    fn extract(&self, acc: Multiset<V>) -> Vec<V> {
        acc.values().collect()
    }
}

/// Combine over a retracting collection.
pub(super) struct MultisetCombine<K, C> {
    pub(super) combine: Arc<C>,
    pub(super) _k: PhantomData<fn() -> K>,
}

impl<K: Key, C: CombineFn> Grouping for MultisetCombine<K, C> {
    type K = K;
    type Shuffled = C::Input;
    type Acc = Multiset<C::Input>;
    type Out = C::Output;
    fn create(&self) -> Multiset<C::Input> {
        Multiset(BTreeMap::new())
    }
    fn fold(&self, acc: &mut Multiset<C::Input>, x: C::Input) {
        acc.add(x, 1);
    }
    fn retract(&self, acc: &mut Multiset<C::Input>, x: C::Input) {
        acc.add(x, -1);
    }
    fn merge_acc(&self, acc: &mut Multiset<C::Input>, other: Multiset<C::Input>) {
        acc.merge(other);
    }
    fn extract(&self, acc: Multiset<C::Input>) -> C::Output {
        let mut out = self.combine.create_accumulator();
        for v in acc.values() {
            self.combine.add_input(&mut out, &v);
        }
        self.combine.extract_output(out)
    }
}
