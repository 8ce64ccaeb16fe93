//! An lvol's cluster map: logical cluster → data cluster, sparse in three levels.
//!
//! ```text
//!  top: Vec, one entry per 256 Ki clusters (SPAN), grown to the highest one written
//!   └─ middle: Vec of leaf pointers, grown to the highest leaf used (at most 1024)
//!       └─ leaf: 256 data cluster numbers (NONE: unmapped) + a 256-bit bitmap of the mapped
//! ```
//!
//! [`ClusterMap::get`] (once per I/O piece, under the store's mutex) is three indexed loads
//! with bounds checks and no search. Memory follows what is written: nothing for an unwritten
//! lvol, about 1 KiB (one leaf and two short vectors) for one written in its first 256
//! clusters; a middle node only reaches its 1024 pointers (8 KiB) for an lvol written 256 Ki
//! clusters in. The leaves' bitmaps let [`ClusterMap::runs`] and [`ClusterMap::iter`] skip
//! unmapped entries 64 at a time, so a checkpoint costs what is mapped, not what a leaf spans;
//! a leaf that becomes empty is freed.

use super::format::NONE;

/// Entries per leaf.
pub(crate) const LEAF: usize = 256;
/// Leaves per middle node at most.
pub(crate) const MID: usize = 1024;
/// Logical clusters one middle node covers.
pub(crate) const SPAN: u64 = (LEAF * MID) as u64;
/// Bitmap words per leaf.
const WORDS: usize = LEAF / 64;

/// 256 map entries and which of them are mapped (the bitmap and `e[i] != NONE` agree).
struct Leaf {
    used: [u64; WORDS],
    e: [u32; LEAF],
}

impl Leaf {
    fn new() -> Box<Leaf> {
        Box::new(Leaf {
            used: [0; WORDS],
            e: [NONE; LEAF],
        })
    }

    fn is_empty(&self) -> bool {
        self.used.iter().all(|&w| w == 0)
    }

    /// Mapped entries (offset in the leaf, data cluster), in order: one step per mapped
    /// entry plus one per bitmap word.
    fn entries(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.used.iter().enumerate().flat_map(move |(wi, &w)| {
            Bits(w).map(move |b| {
                let i = wi * 64 + b;
                (i, self.e[i])
            })
        })
    }
}

/// The set bits of a word, lowest first.
struct Bits(u64);

impl Iterator for Bits {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(b)
    }
}

/// Where logical cluster `idx` lives: (top index, leaf index in the middle node, entry).
#[inline]
fn split(idx: u64) -> (usize, usize, usize) {
    (
        (idx / SPAN) as usize,
        ((idx % SPAN) / LEAF as u64) as usize,
        (idx % LEAF as u64) as usize,
    )
}

/// A sparse map from logical cluster to data cluster (see the module's documentation).
#[derive(Default)]
pub(crate) struct ClusterMap {
    /// Middle nodes by `idx / SPAN`; an empty vector is a middle node not made yet.
    top: Vec<Vec<Option<Box<Leaf>>>>,
    /// Mapped entries.
    count: u64,
}

impl ClusterMap {
    /// The data cluster of logical cluster `idx`, if mapped.
    #[inline]
    pub(crate) fn get(&self, idx: u64) -> Option<u32> {
        let (ti, li, i) = split(idx);
        let leaf = self.top.get(ti)?.get(li)?.as_deref()?;
        let p = leaf.e[i];
        (p != NONE).then_some(p)
    }

    /// Maps `idx` to `phys` (not [`NONE`]); returns the data cluster it replaced.
    pub(crate) fn set(&mut self, idx: u64, phys: u32) -> Option<u32> {
        debug_assert_ne!(phys, NONE);
        let (ti, li, i) = split(idx);
        if self.top.len() <= ti {
            self.top.resize_with(ti + 1, Vec::new);
        }
        let mid = &mut self.top[ti];
        if mid.len() <= li {
            mid.resize_with(li + 1, || None);
        }
        let leaf = mid[li].get_or_insert_with(Leaf::new);
        let old = std::mem::replace(&mut leaf.e[i], phys);
        if old == NONE {
            leaf.used[i / 64] |= 1 << (i % 64);
            self.count += 1;
            None
        } else {
            Some(old)
        }
    }

    /// Unmaps `idx`; returns the data cluster it had. A leaf left empty is freed (and the
    /// vectors above it shortened when it was their last entry).
    pub(crate) fn remove(&mut self, idx: u64) -> Option<u32> {
        let (ti, li, i) = split(idx);
        let mid = self.top.get_mut(ti)?;
        let leaf = mid.get_mut(li)?.as_deref_mut()?;
        let old = std::mem::replace(&mut leaf.e[i], NONE);
        if old == NONE {
            return None;
        }
        leaf.used[i / 64] &= !(1 << (i % 64));
        self.count -= 1;
        if leaf.is_empty() {
            mid[li] = None;
            while mid.last().is_some_and(Option::is_none) {
                mid.pop();
            }
            while self.top.last().is_some_and(Vec::is_empty) {
                self.top.pop();
            }
        }
        Some(old)
    }

    /// Mapped clusters.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The leaves that exist, with the logical cluster of their first entry, in order.
    fn leaves(&self) -> impl Iterator<Item = (u64, &Leaf)> + '_ {
        self.top.iter().enumerate().flat_map(|(ti, mid)| {
            mid.iter().enumerate().filter_map(move |(li, l)| {
                l.as_deref()
                    .map(|l| (ti as u64 * SPAN + (li * LEAF) as u64, l))
            })
        })
    }

    /// (logical, data) pairs in logical order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.leaves()
            .flat_map(|(first, l)| l.entries().map(move |(i, p)| (first + i as u64, p)))
    }

    /// (logical, data) pairs from logical cluster `from` on, in logical order (the leaves
    /// before the one holding `from` are not looked at).
    pub(crate) fn iter_from(&self, from: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        let (ti, li, _) = split(from);
        self.top
            .iter()
            .enumerate()
            .skip(ti)
            .flat_map(move |(t, mid)| {
                let skip = if t == ti { li } else { 0 };
                mid.iter()
                    .enumerate()
                    .skip(skip)
                    .filter_map(move |(l, leaf)| {
                        leaf.as_deref()
                            .map(|leaf| (t as u64 * SPAN + (l * LEAF) as u64, leaf))
                    })
            })
            .flat_map(|(first, l)| l.entries().map(move |(i, p)| (first + i as u64, p)))
            .filter(move |&(i, _)| i >= from)
    }

    /// Runs of consecutive logical clusters on consecutive data clusters: (first logical,
    /// first data, length), in logical order.
    pub(crate) fn runs(&self) -> Vec<(u64, u32, u32)> {
        let mut v = Vec::new();
        self.for_each_run(|i, p, n| v.push((i, p, n)));
        v
    }

    /// Calls `f(first logical, first data, length)` for each run, in logical order (what
    /// [`ClusterMap::runs`] lists). Mapped entries are found a bitmap word at a time, and a
    /// stretch of mapped entries is walked comparing data clusters only.
    pub(crate) fn for_each_run(&self, mut f: impl FnMut(u64, u32, u32)) {
        let mut cur: Option<(u64, u32, u32)> = None;
        for (first, leaf) in self.leaves() {
            for (wi, &word) in leaf.used.iter().enumerate() {
                let mut w = word;
                while w != 0 {
                    // A stretch of set bits: entries a..b of the leaf are all mapped.
                    let a = w.trailing_zeros() as usize;
                    let b = a + (!(w >> a)).trailing_zeros() as usize;
                    w = if b >= 64 { 0 } else { w & (!0u64 << b) };
                    for i in wi * 64 + a..wi * 64 + b {
                        let (idx, p) = (first + i as u64, leaf.e[i]);
                        match &mut cur {
                            Some((ci, cp, n))
                                if *ci + *n as u64 == idx
                                    && cp.wrapping_add(*n) == p
                                    && *n < u32::MAX =>
                            {
                                *n += 1
                            }
                            _ => {
                                if let Some((ci, cp, n)) = cur.replace((idx, p, 1)) {
                                    f(ci, cp, n);
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some((ci, cp, n)) = cur {
            f(ci, cp, n);
        }
    }

    /// Bytes of memory the map holds.
    pub(crate) fn mem_bytes(&self) -> usize {
        let ptr = std::mem::size_of::<Option<Box<Leaf>>>();
        self.top.capacity() * std::mem::size_of::<Vec<Option<Box<Leaf>>>>()
            + self
                .top
                .iter()
                .map(|m| {
                    m.capacity() * ptr + m.iter().flatten().count() * std::mem::size_of::<Leaf>()
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The map against a BTreeMap model: get at every interesting index, iter, runs, count.
    fn same(m: &ClusterMap, model: &BTreeMap<u64, u32>, probes: &[u64]) {
        assert_eq!(m.count(), model.len() as u64);
        for &i in probes {
            assert_eq!(m.get(i), model.get(&i).copied(), "get({i})");
        }
        let all: Vec<(u64, u32)> = model.iter().map(|(&i, &p)| (i, p)).collect();
        assert_eq!(m.iter().collect::<Vec<_>>(), all);
        for &from in probes {
            let want: Vec<_> = all.iter().copied().filter(|&(i, _)| i >= from).collect();
            assert_eq!(
                m.iter_from(from).collect::<Vec<_>>(),
                want,
                "iter_from({from})"
            );
        }
        // Runs expand back to the pairs, and neighbours never could have been merged.
        let runs = m.runs();
        let expanded: Vec<(u64, u32)> = runs
            .iter()
            .flat_map(|&(i, p, n)| (0..n).map(move |k| (i + k as u64, p + k)))
            .collect();
        assert_eq!(expanded, all);
        for w in runs.windows(2) {
            let ((i, p, n), (j, q, _)) = (w[0], w[1]);
            assert!(
                !(i + n as u64 == j && p + n == q),
                "runs {:?} not merged",
                w
            );
        }
    }

    #[test]
    fn sparse_map_across_middle_nodes_and_near_the_top() {
        let mut m = ClusterMap::default();
        let mut model = BTreeMap::new();
        let top = super::super::state::MAX_LVOL_CLUSTERS - 1;
        // Indices at leaf, word and middle-node edges, and near the largest lvol's end.
        let idx = [
            0,
            1,
            63,
            64,
            255,
            256,
            LEAF as u64 * 3 + 17,
            SPAN - 1,
            SPAN,
            SPAN + 1,
            3 * SPAN + 300,
            top - 1,
            top,
        ];
        let mut probes: Vec<u64> = idx.to_vec();
        probes.extend([2, 65, 257, SPAN - 2, 2 * SPAN, top - 2, top + 1, u64::MAX]);
        for (k, &i) in idx.iter().enumerate() {
            assert_eq!(m.set(i, 1000 + k as u32), None);
            model.insert(i, 1000 + k as u32);
        }
        same(&m, &model, &probes);
        // A run that crosses a leaf and a middle node boundary stays one run.
        for k in 0..600u64 {
            let i = SPAN - 300 + k;
            m.set(i, 50_000 + k as u32);
            model.insert(i, 50_000 + k as u32);
        }
        same(&m, &model, &probes);
        assert!(m.runs().contains(&(SPAN - 300, 50_000, 600)));
        // Replacing returns the old cluster; the count does not change.
        assert_eq!(m.set(0, 7), Some(1000));
        model.insert(0, 7);
        same(&m, &model, &probes);
        // Removing all but a few frees their leaves and trims the vectors.
        let before = m.mem_bytes();
        for (&i, _) in model.clone().iter().filter(|&(&i, _)| i >= 4 * SPAN) {
            assert_eq!(m.remove(i), model.remove(&i));
        }
        assert_eq!(m.remove(top), None);
        same(&m, &model, &probes);
        assert_eq!(m.top.len(), 4);
        assert!(m.mem_bytes() < before);
        for i in model.keys().copied().collect::<Vec<_>>() {
            m.remove(i);
        }
        model.clear();
        same(&m, &model, &probes);
        assert!(m.top.is_empty());
    }

    #[test]
    fn a_lightly_written_map_is_small() {
        let mut m = ClusterMap::default();
        assert_eq!(m.mem_bytes(), 0);
        m.set(5, 9);
        // One leaf (1 KiB of entries, 32 B of bitmap) and two short vectors.
        assert!(m.mem_bytes() < 1280, "{} bytes", m.mem_bytes());
        // A thick 1 GiB lvol (256 clusters of 4 MiB): one leaf, one run.
        let mut t = ClusterMap::default();
        for i in 0..256 {
            t.set(i, 100 + i as u32);
        }
        assert_eq!(t.runs(), vec![(0, 100, 256)]);
        assert!(t.mem_bytes() < 1280);
    }
}
