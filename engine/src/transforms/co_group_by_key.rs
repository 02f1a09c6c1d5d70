//! CoGroupByKey: a relational join's grouping step over two or more keyed collections.

use serde::{Deserialize, Serialize};

use crate::element::{Data, Key};
use crate::pipeline::PCollection;
use crate::transforms::map::map_step;

/// A value from one of up to three inputs, tagged by which.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Tagged<A, B, C> {
    A(A),
    B(B),
    C(C),
}

/// What [`PCollection::co_group_by_key`] gives per key: the values from each input
/// (Beam's `CoGbkResult`, typed).
pub type CoGrouped<K, A, B> = (K, (Vec<A>, Vec<B>));

/// What [`PCollection::co_group_by_key3`] gives per key.
pub type CoGrouped3<K, A, B, C> = (K, (Vec<A>, Vec<B>, Vec<C>));

/// Empty input slot, for the two-input form.
type Nothing = ();

fn tag<K: Key, V: Data, T: Data>(c: &PCollection<(K, V)>, f: fn(V) -> T) -> PCollection<(K, T)> {
    map_step(c, "TagInput", move |(k, v): (K, V)| (k, f(v)))
}

impl<K: Key, A: Data> PCollection<(K, A)> {
    /// For each key, the values from this collection and from `other` (Beam's
    /// `CoGroupByKey` over two inputs). Keys present in either appear once per window.
    ///
    /// ```
    /// let mut out = riffle_timely::testing::run_bounded(|p| {
    ///     let s = |x: &str| x.to_string();
    ///     let emails = p.create(vec![(s("amy"), s("amy@x")), (s("carl"), s("carl@y"))]);
    ///     let phones = p.create(vec![(s("amy"), 111), (s("amy"), 222), (s("bob"), 333)]);
    ///     emails.co_group_by_key(&phones)
    /// });
    /// out.iter_mut().for_each(|(_, (_, ph))| ph.sort());
    /// out.sort();
    /// let s = |x: &str| x.to_string();
    /// assert_eq!(out, [
    ///     (s("amy"), (vec![s("amy@x")], vec![111, 222])),
    ///     (s("bob"), (vec![], vec![333])),
    ///     (s("carl"), (vec![s("carl@y")], vec![])),
    /// ]);
    /// ```
    pub fn co_group_by_key<B: Data>(&self, other: &PCollection<(K, B)>) -> PCollection<CoGrouped<K, A, B>> {
        let a = tag(self, Tagged::<A, B, Nothing>::A);
        let b = tag(other, Tagged::<A, B, Nothing>::B);
        PCollection::flatten(&[a, b]).group_by_key().map(|(k, vs)| {
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for v in vs {
                match v {
                    Tagged::A(x) => xs.push(x),
                    Tagged::B(y) => ys.push(y),
                    Tagged::C(()) => {}
                }
            }
            (k, (xs, ys))
        })
    }

    /// [`co_group_by_key`](Self::co_group_by_key) over three inputs.
    ///
    /// ```
    /// let out = riffle_timely::testing::run_bounded(|p| {
    ///     let a = p.create(vec![(1, 'a')]);
    ///     let b = p.create(vec![(1, 'b')]);
    ///     let c = p.create(vec![(1, 3.5)]);
    ///     a.co_group_by_key3(&b, &c)
    /// });
    /// assert_eq!(out, [(1, (vec!['a'], vec!['b'], vec![3.5]))]);
    /// ```
    pub fn co_group_by_key3<B: Data, C: Data>(
        &self,
        b: &PCollection<(K, B)>,
        c: &PCollection<(K, C)>,
    ) -> PCollection<CoGrouped3<K, A, B, C>> {
        let ta = tag(self, Tagged::<A, B, C>::A);
        let tb = tag(b, Tagged::<A, B, C>::B);
        let tc = tag(c, Tagged::<A, B, C>::C);
        PCollection::flatten(&[ta, tb, tc]).group_by_key().map(|(k, vs)| {
            let (mut xs, mut ys, mut zs) = (Vec::new(), Vec::new(), Vec::new());
            for v in vs {
                match v {
                    Tagged::A(x) => xs.push(x),
                    Tagged::B(y) => ys.push(y),
                    Tagged::C(z) => zs.push(z),
                }
            }
            (k, (xs, ys, zs))
        })
    }

    /// CoGroupByKey over any number of inputs of one value type: for each key, one list
    /// of values per input, in the order of `inputs`.
    ///
    /// ```
    /// use riffle_engine::PCollection;
    /// let out = riffle_timely::testing::run_bounded(|p| {
    ///     let ins: Vec<_> = (0..4).map(|i| p.create(vec![('k', i)])).collect();
    ///     PCollection::co_group_by_key_many(&ins)
    /// });
    /// assert_eq!(out, [('k', vec![vec![0], vec![1], vec![2], vec![3]])]);
    /// ```
    ///
    /// # Panics
    /// If `inputs` is empty.
    pub fn co_group_by_key_many(inputs: &[PCollection<(K, A)>]) -> PCollection<(K, Vec<Vec<A>>)> {
        let n = inputs.len();
        let tagged: Vec<PCollection<(K, (usize, A))>> = inputs
            .iter()
            .enumerate()
            .map(|(i, c)| map_step(c, "TagInput", move |(k, v): (K, A)| (k, (i, v))))
            .collect();
        PCollection::flatten(&tagged).group_by_key().map(move |(k, vs)| {
            let mut lists = vec![Vec::new(); n];
            for (i, v) in vs {
                lists[i].push(v);
            }
            (k, lists)
        })
    }
}
