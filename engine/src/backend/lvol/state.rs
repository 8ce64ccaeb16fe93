//! The store's metadata in memory: lvols, their sparse cluster maps, who owns each data
//! cluster. Every change is a [`Record`] applied by [`State::apply`], live and at replay, so
//! the two cannot disagree; [`State::check`] is the consistency checker (the store's fsck).
//!
//! Lookups by name, by UUID and by parent go through indexes that `apply` keeps in step with
//! the lvols (so replay and [`State::from_checkpoint`] build them as the live store does, and
//! the checker verifies them): a control operation costs the same among 10 000 lvols as
//! among ten.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::format::{
    Checkpoint, CkptLvol, CkptLvolHead, CkptWriter, Record, F_RO, F_SNAP, F_THIN, NONE,
};
pub(crate) use super::map::ClusterMap;

/// One lvol's metadata. Its name, UUID and parent are indexed by [`State`]: they change only
/// through [`State::apply`].
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
    /// The lvols by id. Read freely; changed only by [`State::apply`] (and
    /// [`State::from_checkpoint`]), which keep the indexes below in step.
    pub(crate) lvols: BTreeMap<u32, Lvol>,
    /// Index: lvol id by name (names are unique in a store).
    by_name: HashMap<String, u32>,
    /// Index: lvol id by UUID.
    by_uuid: HashMap<uuid::Uuid, u32>,
    /// Index: (parent id, child id) for every lvol with a parent.
    children: BTreeSet<(u32, u32)>,
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
            by_name: HashMap::new(),
            by_uuid: HashMap::new(),
            children: BTreeSet::new(),
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

    /// Lvols whose parent is `id`, in id order.
    pub(crate) fn clones_of(&self, id: u32) -> Vec<u32> {
        self.children
            .range((id, 0)..=(id, u32::MAX))
            .map(|&(_, c)| c)
            .collect()
    }

    /// The lvol called `name`.
    pub(crate) fn id_by_name(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The lvol with UUID `uuid`.
    pub(crate) fn id_by_uuid(&self, uuid: &uuid::Uuid) -> Option<u32> {
        self.by_uuid.get(uuid).copied()
    }

    /// Refuses a name or UUID another lvol than `id` has.
    fn unique(&self, id: u32, name: &str, uuid: Option<&uuid::Uuid>) -> Result<(), String> {
        if self.by_name.get(name).is_some_and(|&o| o != id) {
            return Err(bad(format!("lvol name {name:?} used twice")));
        }
        if uuid
            .and_then(|u| self.by_uuid.get(u))
            .is_some_and(|&o| o != id)
        {
            return Err(bad(format!("lvol uuid {} used twice", uuid.unwrap())));
        }
        Ok(())
    }

    /// Adds lvol `id` and its index entries (its name and UUID must be new).
    fn insert_lvol(&mut self, id: u32, l: Lvol) -> Result<(), String> {
        if self.lvols.contains_key(&id) {
            return Err(bad(format!("lvol id {id} created twice")));
        }
        self.unique(id, &l.name, Some(&l.uuid))?;
        self.by_name.insert(l.name.clone(), id);
        self.by_uuid.insert(l.uuid, id);
        if let Some(p) = l.parent {
            self.children.insert((p, id));
        }
        self.lvols.insert(id, l);
        Ok(())
    }

    /// Removes lvol `id` and its index entries (not those of its clones).
    fn remove_lvol(&mut self, id: u32) -> Result<Lvol, String> {
        let l = self
            .lvols
            .remove(&id)
            .ok_or_else(|| bad(format!("lvol id {id} deleted but does not exist")))?;
        self.by_name.remove(&l.name);
        self.by_uuid.remove(&l.uuid);
        if let Some(p) = l.parent {
            self.children.remove(&(p, id));
        }
        Ok(l)
    }

    /// Makes `parent` lvol `id`'s parent, in the lvol and in the index.
    fn set_parent(&mut self, id: u32, parent: Option<u32>) -> Result<(), String> {
        let l = self.lvol_mut(id)?;
        let old = std::mem::replace(&mut l.parent, parent);
        if let Some(o) = old {
            self.children.remove(&(o, id));
        }
        if let Some(p) = parent {
            self.children.insert((p, id));
        }
        Ok(())
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
                self.insert_lvol(
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
                )?;
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
                self.lvol(*origin)?;
                self.unique(*id, name, Some(uuid))?;
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
                o.flags |= F_THIN;
                // The snapshot takes the origin's place under its parent; the origin goes
                // under the snapshot.
                self.set_parent(*origin, Some(*id))?;
                self.insert_lvol(*id, snap)?;
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
                let gone = self.remove_lvol(*id)?;
                match clones.first() {
                    Some(&c) => {
                        // Merge: the clone takes the clusters it does not have of its own.
                        let mut freed = Vec::new();
                        let child = self.lvol_mut(c)?;
                        for (i, p) in gone.map.iter() {
                            if i < child.size && child.map.get(i).is_none() {
                                child.map.set(i, p);
                            } else {
                                freed.push(p);
                            }
                        }
                        self.set_parent(c, gone.parent)?;
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
                    let gone: Vec<u64> = l.map.iter_from(*size).map(|(i, _)| i).collect();
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
            Record::Rename { id, name } => {
                self.unique(*id, name, None)?;
                let l = self.lvol_mut(*id)?;
                let old = std::mem::replace(&mut l.name, name.clone());
                self.by_name.remove(&old);
                self.by_name.insert(name.clone(), *id);
            }
            Record::RenameStore { name } => self.name = name.clone(),
            Record::SetParent { id, parent } => {
                let parent = (*parent != NONE).then_some(*parent);
                if let Some(p) = parent {
                    self.lvol(p)?;
                }
                self.set_parent(*id, parent)?;
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

    /// [`State::checkpoint`]`(seq).encode()`, written straight from the state: the
    /// committer's checkpoint (under the metadata mutex), whose cost is the lvols and the
    /// runs they have.
    pub(crate) fn encode_checkpoint(&self, seq: u64) -> Vec<u8> {
        let mut w = CkptWriter::new(
            seq,
            &self.name,
            self.total,
            self.next_id,
            self.free,
            self.lvols.len(),
        );
        for (&id, l) in &self.lvols {
            w.lvol(&CkptLvolHead {
                id,
                uuid: &l.uuid,
                name: &l.name,
                flags: l.flags,
                clear: l.clear,
                parent: l.parent.unwrap_or(NONE),
                size: l.size,
            });
            l.map.for_each_run(|i, p, n| w.run(i, p, n));
        }
        w.finish(self.reserved.iter().map(|&p| (p, 1)))
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
            s.insert_lvol(
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
            )?;
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
        errs.extend(self.check_indexes());
        errs
    }

    /// Checks that the name, UUID and parent indexes hold exactly what the lvols say.
    fn check_indexes(&self) -> Vec<String> {
        let mut errs = Vec::new();
        // A key index is right if it has one entry per lvol, each lvol's key to its id.
        fn agrees<K: std::hash::Hash + Eq>(
            lvols: &BTreeMap<u32, Lvol>,
            index: &HashMap<K, u32>,
            key: impl Fn(&Lvol) -> &K,
        ) -> bool {
            index.len() == lvols.len() && lvols.iter().all(|(id, l)| index.get(key(l)) == Some(id))
        }
        if !agrees(&self.lvols, &self.by_name, |l| &l.name) {
            errs.push("the lvol name index disagrees with the lvols".into());
        }
        if !agrees(&self.lvols, &self.by_uuid, |l| &l.uuid) {
            errs.push("the lvol uuid index disagrees with the lvols".into());
        }
        let children: BTreeSet<(u32, u32)> = self
            .lvols
            .iter()
            .filter_map(|(&id, l)| l.parent.map(|p| (p, id)))
            .collect();
        if children != self.children {
            errs.push("the lvol parent index disagrees with the lvols".into());
        }
        errs
    }

    /// Bytes of memory the metadata holds (maps, names, the cluster bitmap).
    pub(crate) fn mem_bytes(&self) -> usize {
        // A hash table entry: the key and value, and a control byte (a growing table is up
        // to 1/8 empty: counted by its capacity). A B-tree key: about 1.5× its size.
        let name_entry = std::mem::size_of::<(String, u32)>() + 1;
        let uuid_entry = std::mem::size_of::<(uuid::Uuid, u32)>() + 1;
        self.owned.capacity() * 8
            + self.by_name.capacity() * name_entry
            + self.by_uuid.capacity() * uuid_entry
            + self.children.len() * 12
            + self
                .lvols
                .values()
                .map(|l| {
                    std::mem::size_of::<Lvol>() + 48 + 2 * l.name.capacity() + l.map.mem_bytes()
                })
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
        assert_eq!(s.encode_checkpoint(9), c.encode());
        let back = State::from_checkpoint(&c).unwrap();
        assert_eq!(back.checkpoint(9), c);
        let mut bad = c.clone();
        bad.free += 1;
        assert!(State::from_checkpoint(&bad).is_err());
    }

    /// The indexes answer as a scan of the lvols would, and the checker agrees.
    fn indexes_right(s: &State) {
        assert!(s.check().is_empty(), "{:?}", s.check());
        for (&id, l) in &s.lvols {
            assert_eq!(s.id_by_name(&l.name), Some(id));
            assert_eq!(s.id_by_uuid(&l.uuid), Some(id));
            let scan: Vec<u32> = s
                .lvols
                .iter()
                .filter(|(_, c)| c.parent == Some(id))
                .map(|(&c, _)| c)
                .collect();
            assert_eq!(s.clones_of(id), scan, "clones of {id}");
        }
    }

    #[test]
    fn indexes_follow_rename_snapshot_clone_delete_and_merge() {
        let mut s = State::new("lvs", 100);
        let mut log = Vec::new();
        let run = |s: &mut State, log: &mut Vec<Record>, r: Record| {
            s.apply(&r).unwrap();
            log.push(r);
        };
        create(&mut s, 1, true, 10);
        create(&mut s, 2, true, 10);
        run(
            &mut s,
            &mut log,
            Record::Map {
                id: 1,
                idx: 0,
                phys: 5,
                len: 2,
            },
        );
        let snap = |origin, id, name: &str| Record::Snapshot {
            origin,
            id,
            uuid: uuid::Uuid::new_v4(),
            name: name.into(),
        };
        run(&mut s, &mut log, snap(1, 3, "s3"));
        assert_eq!(s.clones_of(3), vec![1]);
        run(
            &mut s,
            &mut log,
            Record::Create {
                id: 4,
                uuid: uuid::Uuid::new_v4(),
                name: "c4".into(),
                flags: F_THIN,
                clear: 1,
                parent: 3,
                size: 10,
            },
        );
        assert_eq!(s.clones_of(3), vec![1, 4]);
        indexes_right(&s);
        // The state as a checkpoint here, and what follows as log records.
        let ck = s.checkpoint(5);
        let from = log.len();
        // A snapshot of a clone takes its place under the parent.
        run(&mut s, &mut log, snap(4, 5, "s5"));
        assert_eq!(s.clones_of(3), vec![1, 5]);
        assert_eq!(s.clones_of(5), vec![4]);
        run(
            &mut s,
            &mut log,
            Record::Rename {
                id: 4,
                name: "renamed".into(),
            },
        );
        assert_eq!(s.id_by_name("c4"), None);
        assert_eq!(s.id_by_name("renamed"), Some(4));
        indexes_right(&s);
        // Names in use are refused, by create, snapshot and rename (the lvol's own: fine).
        let dup = Record::Create {
            id: 9,
            uuid: uuid::Uuid::new_v4(),
            name: "s3".into(),
            flags: F_THIN,
            clear: 1,
            parent: NONE,
            size: 1,
        };
        assert!(s.apply(&dup).is_err());
        assert!(s.apply(&snap(2, 9, "v1")).is_err());
        let taken = Record::Rename {
            id: 2,
            name: "renamed".into(),
        };
        assert!(s.apply(&taken).is_err());
        run(
            &mut s,
            &mut log,
            Record::Rename {
                id: 2,
                name: "v2".into(),
            },
        );
        indexes_right(&s);
        // Deleting snapshot 5 merges it into its one clone, 4, which goes back under 3.
        run(&mut s, &mut log, Record::Delete { id: 5 });
        assert_eq!(s.clones_of(3), vec![1, 4]);
        assert_eq!(s.id_by_name("s5"), None);
        run(&mut s, &mut log, Record::Delete { id: 4 });
        run(&mut s, &mut log, Record::Delete { id: 3 });
        assert_eq!(s.clones_of(3), Vec::<u32>::new());
        assert_eq!(s.lvol(1).unwrap().parent, None);
        assert_eq!(s.resolve(1, 1), Some(6));
        run(&mut s, &mut log, snap(2, 6, "s6"));
        run(
            &mut s,
            &mut log,
            Record::SetParent {
                id: 2,
                parent: NONE,
            },
        );
        assert_eq!(s.clones_of(6), Vec::<u32>::new());
        indexes_right(&s);
        // Replay: the checkpoint, then the records after it, rebuild the same indexes.
        let mut back = State::from_checkpoint(&ck).unwrap();
        indexes_right(&back);
        for r in &log[from..] {
            back.apply(r).unwrap();
        }
        indexes_right(&back);
        assert_eq!(back.checkpoint(1), s.checkpoint(1));
        assert_eq!(back.encode_checkpoint(1), s.checkpoint(1).encode());
        assert_eq!(
            Checkpoint::decode(&s.encode_checkpoint(3)).unwrap(),
            s.checkpoint(3)
        );
        for (&id, l) in &s.lvols {
            assert_eq!(back.id_by_name(&l.name), Some(id));
            assert_eq!(back.clones_of(id), s.clones_of(id));
        }
        // A checkpoint that names one name twice is refused.
        let mut two = s.checkpoint(1);
        two.lvols[1].name = two.lvols[0].name.clone();
        assert!(State::from_checkpoint(&two).is_err());
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
        // Indexes out of step with the lvols.
        let mut s = State::new("lvs", 64);
        create(&mut s, 1, true, 4);
        assert!(s.check().is_empty());
        s.lvols.get_mut(&1).unwrap().name = "x".into();
        assert!(!s.check().is_empty());
        s.lvols.get_mut(&1).unwrap().name = "v1".into();
        s.lvols.get_mut(&1).unwrap().parent = Some(1);
        assert!(s.check().iter().any(|e| e.contains("parent index")));
    }
}
