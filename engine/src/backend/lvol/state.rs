//! The store's metadata in memory: lvols, their sparse cluster maps, who owns each data
//! cluster. Every change is a [`Record`] applied by [`State::apply`], live and at replay, so
//! the two cannot disagree; [`State::check`] is the consistency checker (the store's fsck).

use std::collections::{BTreeMap, BTreeSet};

use super::format::{Checkpoint, CkptLvol, Record, F_RO, F_SNAP, F_THIN, NONE};

/// Entries per map leaf, and leaves per middle node.
const LEAF: usize = 256;
const MID: usize = 1024;
/// Logical clusters one middle node covers.
const SPAN: u64 = (LEAF * MID) as u64;

type Leaf = Box<[u32; LEAF]>;

/// A sparse map from logical cluster to data cluster: a top vector of middle nodes, each
/// 1024 leaves of 256 entries, made on first use. A thin volume costs a pointer per 256 Ki
/// clusters until written (a 16 PiB one, 2^32 clusters: 128 KiB), and a leaf per 256
/// clusters it has written.
#[derive(Default)]
pub(crate) struct ClusterMap {
    top: Vec<Option<Box<[Option<Leaf>]>>>,
    count: u64,
}

impl ClusterMap {
    #[inline]
    pub(crate) fn get(&self, idx: u64) -> Option<u32> {
        let mid = self.top.get((idx / SPAN) as usize)?.as_ref()?;
        let leaf = mid[((idx % SPAN) / LEAF as u64) as usize].as_ref()?;
        let p = leaf[(idx % LEAF as u64) as usize];
        (p != NONE).then_some(p)
    }

    fn slot(&mut self, idx: u64) -> &mut u32 {
        let ti = (idx / SPAN) as usize;
        if self.top.len() <= ti {
            self.top.resize_with(ti + 1, || None);
        }
        let mid = self.top[ti].get_or_insert_with(|| (0..MID).map(|_| None).collect());
        let leaf = mid[((idx % SPAN) / LEAF as u64) as usize]
            .get_or_insert_with(|| Box::new([NONE; LEAF]));
        &mut leaf[(idx % LEAF as u64) as usize]
    }

    fn set(&mut self, idx: u64, phys: u32) -> Option<u32> {
        let old = std::mem::replace(self.slot(idx), phys);
        if old == NONE {
            self.count += 1;
            None
        } else {
            Some(old)
        }
    }

    fn remove(&mut self, idx: u64) -> Option<u32> {
        self.get(idx)?;
        let old = std::mem::replace(self.slot(idx), NONE);
        self.count -= 1;
        Some(old)
    }

    /// Allocated clusters.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// (logical, data) pairs in logical order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.top.iter().enumerate().flat_map(|(ti, m)| {
            m.iter().flat_map(move |m| {
                m.iter().enumerate().flat_map(move |(li, l)| {
                    l.iter().flat_map(move |l| {
                        l.iter()
                            .enumerate()
                            .filter(|(_, &p)| p != NONE)
                            .map(move |(i, &p)| (ti as u64 * SPAN + (li * LEAF + i) as u64, p))
                    })
                })
            })
        })
    }

    /// Runs of consecutive logical clusters on consecutive data clusters.
    pub(crate) fn runs(&self) -> Vec<(u64, u32, u32)> {
        let mut v: Vec<(u64, u32, u32)> = Vec::new();
        for (i, p) in self.iter() {
            match v.last_mut() {
                Some((li, lp, n)) if *li + *n as u64 == i && lp.wrapping_add(*n) == p => *n += 1,
                _ => v.push((i, p, 1)),
            }
        }
        v
    }

    /// Bytes of memory the map holds.
    pub(crate) fn mem_bytes(&self) -> usize {
        self.top.capacity() * 8
            + self
                .top
                .iter()
                .flatten()
                .map(|m| MID * 8 + m.iter().flatten().count() * LEAF * 4)
                .sum::<usize>()
    }
}

/// One lvol's metadata.
pub(crate) struct Lvol {
    pub(crate) uuid: uuid::Uuid,
    pub(crate) name: String,
    pub(crate) flags: u8,
    pub(crate) clear: u8,
    pub(crate) parent: Option<u32>,
    /// Size in clusters.
    pub(crate) size: u64,
    pub(crate) map: ClusterMap,
}

impl Lvol {
    pub(crate) fn thin(&self) -> bool {
        self.flags & F_THIN != 0
    }
    pub(crate) fn read_only(&self) -> bool {
        self.flags & F_RO != 0
    }
    pub(crate) fn snapshot(&self) -> bool {
        self.flags & F_SNAP != 0
    }
}

/// The store's metadata.
pub(crate) struct State {
    pub(crate) name: String,
    pub(crate) total: u64,
    pub(crate) next_id: u32,
    pub(crate) lvols: BTreeMap<u32, Lvol>,
    /// One bit per data cluster: owned (by an lvol's map or a reservation).
    owned: Vec<u64>,
    pub(crate) free: u64,
    pub(crate) reserved: BTreeSet<u32>,
    hint: u64,
    /// Most clusters the store may grow to (the base's size, at load).
    pub(crate) limit: u64,
}

/// Most clusters an lvol has (sizes beyond are refused: 16 PiB at 4 MiB clusters).
pub(crate) const MAX_LVOL_CLUSTERS: u64 = u32::MAX as u64 - 1;

fn bad(why: String) -> String {
    why
}

impl State {
    pub(crate) fn new(name: &str, total: u64) -> State {
        let total = total.min(super::format::MAX_CLUSTERS);
        State {
            name: name.to_string(),
            total,
            next_id: 1,
            lvols: BTreeMap::new(),
            owned: vec![0; total.div_ceil(64) as usize],
            free: total,
            reserved: BTreeSet::new(),
            hint: 0,
            limit: super::format::MAX_CLUSTERS,
        }
    }

    pub(crate) fn is_owned(&self, c: u32) -> bool {
        self.owned
            .get(c as usize / 64)
            .is_some_and(|w| w & (1 << (c % 64)) != 0)
    }

    fn take(&mut self, c: u32) -> Result<(), String> {
        if c as u64 >= self.total {
            return Err(bad(format!(
                "cluster {c} beyond the store's {}",
                self.total
            )));
        }
        if self.is_owned(c) {
            return Err(bad(format!("cluster {c} owned twice")));
        }
        self.owned[c as usize / 64] |= 1 << (c % 64);
        self.free -= 1;
        Ok(())
    }

    fn give(&mut self, c: u32) {
        if self.is_owned(c) {
            self.owned[c as usize / 64] &= !(1 << (c % 64));
            self.free += 1;
        }
    }

    /// A free cluster (not taken yet: [`Record::Map`] or [`Record::Reserve`] takes it).
    pub(crate) fn find_free(&mut self) -> Option<u32> {
        if self.free == 0 {
            return None;
        }
        let words = self.owned.len() as u64;
        for k in 0..=words {
            let wi = ((self.hint / 64 + k) % words) as usize;
            let w = self.owned[wi];
            if w != u64::MAX {
                let c = wi as u64 * 64 + (!w).trailing_zeros() as u64;
                if c < self.total {
                    self.hint = c + 1;
                    return Some(c as u32);
                }
            }
        }
        None
    }

    /// `n` free clusters as runs (first, len), or None if there are fewer.
    pub(crate) fn find_free_runs(&mut self, n: u64) -> Option<Vec<(u32, u32)>> {
        if self.free < n {
            return None;
        }
        let mut v: Vec<(u32, u32)> = Vec::new();
        let mut c = 0u64;
        let mut left = n;
        while left > 0 && c < self.total {
            if !self.is_owned(c as u32) {
                match v.last_mut() {
                    Some((f, l)) if *f as u64 + *l as u64 == c && *l < u32::MAX => *l += 1,
                    _ => v.push((c as u32, 1)),
                }
                left -= 1;
            }
            c += 1;
        }
        (left == 0).then_some(v)
    }

    pub(crate) fn lvol(&self, id: u32) -> Result<&Lvol, String> {
        self.lvols
            .get(&id)
            .ok_or_else(|| bad(format!("lvol id {id} does not exist")))
    }

    fn lvol_mut(&mut self, id: u32) -> Result<&mut Lvol, String> {
        self.lvols
            .get_mut(&id)
            .ok_or_else(|| bad(format!("lvol id {id} does not exist")))
    }

    /// The data cluster that holds logical cluster `idx` of lvol `id`: its own, else its
    /// parents' (None: reads as zeros).
    pub(crate) fn resolve(&self, id: u32, idx: u64) -> Option<u32> {
        let mut cur = Some(id);
        let mut hops = 0;
        while let Some(i) = cur {
            let l = self.lvols.get(&i)?;
            if idx >= l.size {
                return None;
            }
            if let Some(p) = l.map.get(idx) {
                return Some(p);
            }
            cur = l.parent;
            hops += 1;
            if hops > 4096 {
                return None;
            }
        }
        None
    }

    /// Frees every reserved cluster (at open, once they are cleared).
    pub(crate) fn unreserve_all(&mut self) {
        for p in std::mem::take(&mut self.reserved) {
            self.give(p);
        }
    }

    /// Lvols whose parent is `id`.
    pub(crate) fn clones_of(&self, id: u32) -> Vec<u32> {
        self.lvols
            .iter()
            .filter(|(_, l)| l.parent == Some(id))
            .map(|(&i, _)| i)
            .collect()
    }

    /// Applies one change. An error means the record contradicts the state (corrupt
    /// metadata at replay, a bug live); the state may then be partly changed.
    pub(crate) fn apply(&mut self, r: &Record) -> Result<(), String> {
        match r {
            Record::Create {
                id,
                uuid,
                name,
                flags,
                clear,
                parent,
                size,
            } => {
                if self.lvols.contains_key(id) || *id >= NONE - 1 {
                    return Err(bad(format!("lvol id {id} created twice or out of range")));
                }
                if *size > MAX_LVOL_CLUSTERS {
                    return Err(bad(format!("lvol size {size} clusters out of range")));
                }
                let parent = (*parent != NONE).then_some(*parent);
                if let Some(p) = parent {
                    self.lvol(p)?;
                }
                self.lvols.insert(
                    *id,
                    Lvol {
                        uuid: *uuid,
                        name: name.clone(),
                        flags: *flags,
                        clear: *clear,
                        parent,
                        size: *size,
                        map: ClusterMap::default(),
                    },
                );
                self.next_id = self.next_id.max(id + 1);
            }
            Record::Map { id, idx, phys, len } => {
                let size = self.lvol(*id)?.size;
                if idx.checked_add(*len as u64).is_none_or(|e| e > size) {
                    return Err(bad(format!("map beyond lvol {id}'s {size} clusters")));
                }
                for k in 0..*len {
                    let p = phys
                        .checked_add(k)
                        .ok_or_else(|| bad("cluster number overflows".into()))?;
                    if !self.reserved.remove(&p) {
                        self.take(p)?;
                    }
                    if let Some(old) = self.lvol_mut(*id)?.map.set(idx + k as u64, p) {
                        self.give(old);
                    }
                }
            }
            Record::Reserve { phys, len } => {
                for k in 0..*len {
                    let p = phys
                        .checked_add(k)
                        .ok_or_else(|| bad("cluster number overflows".into()))?;
                    self.take(p)?;
                    self.reserved.insert(p);
                }
            }
            Record::Snapshot {
                origin,
                id,
                uuid,
                name,
            } => {
                if self.lvols.contains_key(id) || *id >= NONE - 1 {
                    return Err(bad(format!("lvol id {id} created twice or out of range")));
                }
                let o = self.lvol_mut(*origin)?;
                let map = std::mem::take(&mut o.map);
                let snap = Lvol {
                    uuid: *uuid,
                    name: name.clone(),
                    flags: (o.flags & F_THIN) | F_RO | F_SNAP,
                    clear: o.clear,
                    parent: o.parent,
                    size: o.size,
                    map,
                };
                o.parent = Some(*id);
                o.flags |= F_THIN;
                self.lvols.insert(*id, snap);
                self.next_id = self.next_id.max(id + 1);
            }
            Record::Delete { id } => {
                let clones = self.clones_of(*id);
                if clones.len() > 1 {
                    return Err(bad(format!(
                        "lvol {id} deleted with {} clones",
                        clones.len()
                    )));
                }
                let gone = self
                    .lvols
                    .remove(id)
                    .ok_or_else(|| bad(format!("lvol id {id} deleted but does not exist")))?;
                match clones.first() {
                    Some(&c) => {
                        // Merge: the clone takes the clusters it does not have of its own.
                        let mut freed = Vec::new();
                        let child = self.lvols.get_mut(&c).expect("clone exists");
                        for (i, p) in gone.map.iter() {
                            if i < child.size && child.map.get(i).is_none() {
                                child.map.set(i, p);
                            } else {
                                freed.push(p);
                            }
                        }
                        child.parent = gone.parent;
                        for p in freed {
                            self.give(p);
                        }
                    }
                    None => {
                        for (_, p) in gone.map.iter() {
                            self.give(p);
                        }
                    }
                }
            }
            Record::Resize { id, size } => {
                if *size > MAX_LVOL_CLUSTERS {
                    return Err(bad(format!("lvol size {size} clusters out of range")));
                }
                let l = self.lvol_mut(*id)?;
                let old = l.size;
                l.size = *size;
                let mut freed = Vec::new();
                if *size < old {
                    let gone: Vec<u64> = l
                        .map
                        .iter()
                        .map(|(i, _)| i)
                        .filter(|&i| i >= *size)
                        .collect();
                    for i in gone {
                        freed.extend(l.map.remove(i));
                    }
                }
                for p in freed {
                    self.give(p);
                }
            }
            Record::ReadOnly { id } => self.lvol_mut(*id)?.flags |= F_RO,
            Record::Thick { id } => self.lvol_mut(*id)?.flags &= !F_THIN,
            Record::Rename { id, name } => self.lvol_mut(*id)?.name = name.clone(),
            Record::RenameStore { name } => self.name = name.clone(),
            Record::SetParent { id, parent } => {
                let parent = (*parent != NONE).then_some(*parent);
                if let Some(p) = parent {
                    self.lvol(p)?;
                }
                self.lvol_mut(*id)?.parent = parent;
            }
            Record::Grow { total } => {
                if *total < self.total || *total > self.limit {
                    return Err(bad(format!(
                        "the store grows to {total} clusters (has {}, room for {})",
                        self.total, self.limit
                    )));
                }
                self.free += total - self.total;
                self.total = *total;
                self.owned.resize(total.div_ceil(64) as usize, 0);
            }
        }
        Ok(())
    }

    /// The state as a checkpoint taken after log block `seq - 1`.
    pub(crate) fn checkpoint(&self, seq: u64) -> Checkpoint {
        Checkpoint {
            seq,
            name: self.name.clone(),
            total: self.total,
            next_id: self.next_id,
            free: self.free,
            lvols: self
                .lvols
                .iter()
                .map(|(&id, l)| CkptLvol {
                    id,
                    uuid: l.uuid,
                    name: l.name.clone(),
                    flags: l.flags,
                    clear: l.clear,
                    parent: l.parent.unwrap_or(NONE),
                    size: l.size,
                    runs: l.map.runs(),
                })
                .collect(),
            reserved: self.reserved.iter().map(|&p| (p, 1)).collect(),
        }
    }

    /// Rebuilds the state from a checkpoint (its clusters taken as it names them: a cluster
    /// named twice, or beyond the store, is an error).
    pub(crate) fn from_checkpoint(c: &Checkpoint) -> Result<State, String> {
        let mut s = State::new(&c.name, c.total);
        // Lvols first (parents may come after their clones in id order), then maps.
        for l in &c.lvols {
            if s.lvols.contains_key(&l.id) {
                return Err(bad(format!("lvol id {} listed twice", l.id)));
            }
            s.lvols.insert(
                l.id,
                Lvol {
                    uuid: l.uuid,
                    name: l.name.clone(),
                    flags: l.flags,
                    clear: l.clear,
                    parent: (l.parent != NONE).then_some(l.parent),
                    size: l.size,
                    map: ClusterMap::default(),
                },
            );
        }
        for l in &c.lvols {
            for &(idx, phys, len) in &l.runs {
                s.apply(&Record::Map {
                    id: l.id,
                    idx,
                    phys,
                    len,
                })?;
            }
        }
        for &(p, n) in &c.reserved {
            s.apply(&Record::Reserve { phys: p, len: n })?;
        }
        s.next_id = c.next_id.max(s.next_id);
        if s.free != c.free {
            return Err(bad(format!(
                "checkpoint says {} free clusters, its maps leave {}",
                c.free, s.free
            )));
        }
        Ok(s)
    }

    /// Checks the invariants: parents exist, are read-only and form no cycle; maps stay
    /// within their lvols; names are unique; the free count matches the maps.
    pub(crate) fn check(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let mut names = BTreeSet::new();
        let mut seen = vec![0u64; self.total.div_ceil(64) as usize];
        let mut used = 0u64;
        for (&id, l) in &self.lvols {
            if !names.insert(l.name.as_str()) {
                errs.push(format!("lvol name {:?} used twice", l.name));
            }
            if let Some(p) = l.parent {
                match self.lvols.get(&p) {
                    None => errs.push(format!("lvol {:?}: parent id {p} missing", l.name)),
                    Some(pl) if !pl.read_only() => errs.push(format!(
                        "lvol {:?}: parent {:?} is writable",
                        l.name, pl.name
                    )),
                    _ => {}
                }
                let mut cur = Some(p);
                let mut hops = 0;
                while let Some(c) = cur {
                    if c == id || hops > self.lvols.len() {
                        errs.push(format!("lvol {:?}: parent chain loops", l.name));
                        break;
                    }
                    cur = self.lvols.get(&c).and_then(|x| x.parent);
                    hops += 1;
                }
            }
            for (i, p) in l.map.iter() {
                if i >= l.size {
                    errs.push(format!("lvol {:?}: cluster {i} beyond its size", l.name));
                }
                if p as u64 >= self.total {
                    errs.push(format!(
                        "lvol {:?}: data cluster {p} beyond the store",
                        l.name
                    ));
                    continue;
                }
                let (w, b) = (p as usize / 64, p % 64);
                if seen[w] & (1 << b) != 0 {
                    errs.push(format!("data cluster {p} owned twice"));
                }
                seen[w] |= 1 << b;
                used += 1;
            }
            if !l.thin() && l.parent.is_none() && l.map.count() != l.size {
                errs.push(format!(
                    "thick lvol {:?} has {} of its {} clusters",
                    l.name,
                    l.map.count(),
                    l.size
                ));
            }
        }
        for &p in &self.reserved {
            if (p as u64) < self.total {
                let (w, b) = (p as usize / 64, p % 64);
                if seen[w] & (1 << b) != 0 {
                    errs.push(format!("reserved data cluster {p} also mapped"));
                }
                seen[w] |= 1 << b;
                used += 1;
            }
        }
        if seen != self.owned {
            errs.push("the owned-cluster bitmap disagrees with the maps".into());
        }
        if self.total - used != self.free {
            errs.push(format!(
                "free count {} but the maps leave {}",
                self.free,
                self.total - used
            ));
        }
        errs
    }

    /// Bytes of memory the metadata holds (maps, names, the cluster bitmap).
    pub(crate) fn mem_bytes(&self) -> usize {
        self.owned.capacity() * 8
            + self
                .lvols
                .values()
                .map(|l| std::mem::size_of::<Lvol>() + 48 + l.name.capacity() + l.map.mem_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(s: &mut State, id: u32, thin: bool, size: u64) {
        s.apply(&Record::Create {
            id,
            uuid: uuid::Uuid::new_v4(),
            name: format!("v{id}"),
            flags: if thin { F_THIN } else { 0 },
            clear: 1,
            parent: NONE,
            size,
        })
        .unwrap();
    }

    #[test]
    fn snapshot_clone_delete_merge_keep_the_books() {
        let mut s = State::new("lvs", 100);
        create(&mut s, 1, true, 10);
        s.apply(&Record::Map {
            id: 1,
            idx: 0,
            phys: 5,
            len: 3,
        })
        .unwrap();
        assert_eq!(s.free, 97);
        s.apply(&Record::Snapshot {
            origin: 1,
            id: 2,
            uuid: uuid::Uuid::new_v4(),
            name: "s".into(),
        })
        .unwrap();
        assert_eq!(s.resolve(1, 1), Some(6));
        s.apply(&Record::Map {
            id: 1,
            idx: 1,
            phys: 20,
            len: 1,
        })
        .unwrap();
        assert_eq!(s.resolve(1, 1), Some(20));
        assert_eq!(s.resolve(2, 1), Some(6));
        assert!(s.check().is_empty(), "{:?}", s.check());
        // Deleting the snapshot merges it into its one clone: cluster 6 is freed.
        s.apply(&Record::Delete { id: 2 }).unwrap();
        assert_eq!(s.resolve(1, 0), Some(5));
        assert_eq!(s.resolve(1, 1), Some(20));
        assert_eq!(s.free, 97);
        assert!(s.check().is_empty(), "{:?}", s.check());
        // A cluster owned twice is refused.
        assert!(s
            .apply(&Record::Map {
                id: 1,
                idx: 5,
                phys: 20,
                len: 1
            })
            .is_err());
        let c = s.checkpoint(9);
        let back = State::from_checkpoint(&c).unwrap();
        assert_eq!(back.checkpoint(9), c);
        let mut bad = c.clone();
        bad.free += 1;
        assert!(State::from_checkpoint(&bad).is_err());
    }

    #[test]
    fn the_checker_finds_planted_damage() {
        let mut s = State::new("lvs", 64);
        create(&mut s, 1, false, 4);
        s.apply(&Record::Map {
            id: 1,
            idx: 0,
            phys: 0,
            len: 4,
        })
        .unwrap();
        assert!(s.check().is_empty());
        s.free += 1;
        assert!(!s.check().is_empty());
        s.free -= 1;
        s.lvols.get_mut(&1).unwrap().map.set(2, 9);
        assert!(!s.check().is_empty());
    }
}
