//! The control operations: stores (create, delete, rename, grow, examine, check) and lvols
//! (create, delete, snapshot, clone, resize, inflate, decouple, read-only, rename). Each
//! validates, changes the state through records, and waits until they are durable before
//! it answers. Operations on one store are serialised by its `ctl` mutex.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_reactor::RuntimeHandle;

use super::channel::LvolCtl;
use super::format::{Layout, Record, F_RO, F_THIN, NONE};
use super::state::MAX_LVOL_CLUSTERS;
use super::store::{self, clear_ios, op_io, Store};
use super::{
    register_lvol, stores, CheckReport, ClearMethod, LvolInfo, LvsInfo, LvsOpts, DEFAULT_CLUSTER,
    MAX_NAME,
};
use crate::backend::control::SharedDesc;
use crate::bdev::{self, IoType};
use crate::error::{Error, Result};

fn no_store(name: &str) -> Error {
    Error::NoSuch {
        kind: "lvol store",
        name: crate::bdev::validate_name(name)
            .map(|_| name.to_string())
            .unwrap_or_else(|_| "(invalid name)".into()),
    }
}

fn no_lvol(name: &str) -> Error {
    Error::NoSuch {
        kind: "lvol",
        name: name.chars().take(MAX_NAME * 2 + 40).collect(),
    }
}

fn check_name(param: &'static str, name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "must not be empty".to_string()
    } else if name.len() > MAX_NAME {
        format!("{} bytes long (at most {MAX_NAME})", name.len())
    } else if name.contains('/') || name.chars().any(char::is_control) {
        "must not contain '/' or control characters".to_string()
    } else {
        return Ok(());
    };
    Err(Error::InvalidParam { param, why })
}

/// The store named by UUID or name (exactly one).
fn find_store(uuid: Option<&str>, name: Option<&str>) -> Result<Arc<Store>> {
    let all = stores().lock().unwrap();
    match (uuid, name) {
        (Some(u), None) => all
            .iter()
            .find(|s| s.uuid.to_string() == u.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| no_store(u)),
        (None, Some(n)) => all
            .iter()
            .find(|s| s.name() == n)
            .cloned()
            .ok_or_else(|| no_store(n)),
        _ => Err(Error::InvalidParam {
            param: "uuid",
            why: "give either the lvol store's uuid or its name (lvs_name), not both".into(),
        }),
    }
}

/// The lvol a bdev name, UUID or `lvs/lvol` alias names: per store, one look in its UUID
/// index (the bdev's UUID) and one in its name index (the alias split at its '/', which
/// neither store nor lvol names contain).
fn find_lvol(name: &str) -> Result<(Arc<Store>, u32)> {
    let uuid = bdev::lookup(name).map(|b| b.info().uuid);
    let alias = name.split_once('/');
    for s in stores().lock().unwrap().iter() {
        let g = s.inner.lock().unwrap();
        let by_uuid = uuid.and_then(|u| g.st.id_by_uuid(&u));
        let by_alias = || {
            alias
                .filter(|&(lvs, _)| lvs == g.st.name)
                .and_then(|(_, lvol)| g.st.id_by_name(lvol))
        };
        if let Some(id) = by_uuid.or_else(by_alias) {
            return Ok((s.clone(), id));
        }
    }
    if uuid.is_some() {
        return Err(Error::InvalidParam {
            param: "name",
            why: format!(
                "bdev {} is not a logical volume",
                name.chars().take(MAX_NAME * 2).collect::<String>()
            ),
        });
    }
    Err(no_lvol(name))
}

fn lvs_info(s: &Store) -> LvsInfo {
    let g = s.inner.lock().unwrap();
    LvsInfo {
        uuid: s.uuid,
        name: g.st.name.clone(),
        base_bdev: s.base_bdev.name().to_string(),
        cluster_size: s.layout.cluster_sz,
        total_data_clusters: g.st.total,
        free_clusters: g.st.free,
        block_size: s.layout.block_size,
        lvol_count: g.st.lvols.len(),
    }
}

fn info_of(s: &Store, id: u32) -> Option<LvolInfo> {
    let g = s.inner.lock().unwrap();
    let l = g.st.lvols.get(&id)?;
    let clones =
        g.st.clones_of(id)
            .into_iter()
            .filter_map(|c| g.st.lvols.get(&c).map(|c| c.name.clone()))
            .collect();
    Some(LvolInfo {
        uuid: l.uuid,
        name: l.name.clone(),
        alias: format!("{}/{}", g.st.name, l.name),
        lvs_uuid: s.uuid,
        lvs_name: g.st.name.clone(),
        base_bdev: s.base_bdev.name().to_string(),
        size_bytes: l.size * s.layout.cluster_sz,
        block_size: s.layout.block_size,
        num_allocated_clusters: l.map.count(),
        thin: l.thin(),
        read_only: l.read_only(),
        is_snapshot: l.snapshot(),
        is_clone: l.parent.is_some(),
        base_snapshot: l
            .parent
            .and_then(|p| g.st.lvols.get(&p))
            .map(|p| p.name.clone()),
        clones,
    })
}

/// Stops new I/O to an lvol and waits for what is in flight; undone on drop.
struct Freeze(Vec<Arc<LvolCtl>>);

impl Freeze {
    fn new(s: &Store, ids: &[u32]) -> Result<Freeze> {
        let ctls: Vec<_> = {
            let b = s.bdevs.lock().unwrap();
            ids.iter()
                .filter_map(|id| b.get(id).map(|h| h.ctl.clone()))
                .collect()
        };
        for c in &ctls {
            c.frozen.store(true, Ordering::SeqCst);
        }
        let f = Freeze(ctls);
        let t0 = Instant::now();
        let mut nap = Duration::from_micros(2);
        while f.0.iter().any(|c| c.inflight.load(Ordering::SeqCst) > 0) {
            if t0.elapsed() > store::CONTROL_TIMEOUT {
                return Err(Error::Busy("lvol I/O did not drain".into()));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_micros(500));
        }
        Ok(f)
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        for c in &self.0 {
            c.frozen.store(false, Ordering::SeqCst);
        }
    }
}

/// Clears clusters (they are about to be freed) and flushes, so they read zeros for good.
fn clear_clusters(s: &Store, phys: &[u32]) -> Result<()> {
    // No read window on them (or on clusters changing owner: a merge) may be out when they
    // are cleared and reused.
    super::lend::drain(&s.lends, store::CONTROL_TIMEOUT)?;
    if phys.is_empty() {
        return Ok(());
    }
    let l = s.layout;
    let mut sorted = phys.to_vec();
    sorted.sort_unstable();
    let mut ios = Vec::new();
    let mut k = 0;
    while k < sorted.len() {
        let mut n = 1;
        while k + n < sorted.len() && sorted[k + n] == sorted[k] + n as u32 {
            n += 1;
        }
        let off = l.data_start + sorted[k] as u64 * l.cluster_sz;
        ios.extend(clear_ios(&s.base_bdev, off, n as u64 * l.cluster_sz));
        k += n;
    }
    if s.base_bdev.supports(IoType::Flush) {
        ios.push(op_io(IoType::Flush, 0, 0));
    }
    store::run(&s.rt, &s.base, ios)
}

/// Applies `recs` in order (each checked by the state) and waits until they are durable.
fn commit(s: &Store, recs: &[Record], preflush: bool) -> Result<()> {
    let seq = {
        let mut g = s.inner.lock().unwrap();
        s.change_all(&mut g, recs, preflush)?
    };
    if seq > 0 {
        s.wait(seq)?;
    }
    Ok(())
}

/// Creates a store on `opts.bdev_name` (formatting it); its metadata I/O and committer run
/// on `rt`'s main reactor.
pub fn create_lvstore(rt: &RuntimeHandle, opts: &LvsOpts) -> Result<LvsInfo> {
    let rt = rt.clone();
    check_name("lvs_name", &opts.lvs_name)?;
    let cl = opts.cluster_sz.unwrap_or(DEFAULT_CLUSTER);
    if !cl.is_power_of_two() || !(4096..=(1 << 30)).contains(&cl) {
        return Err(Error::InvalidParam {
            param: "cluster_sz",
            why: format!("{cl} (a power of two from 4096 to 1 GiB)"),
        });
    }
    if stores()
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.name() == opts.lvs_name)
    {
        return Err(Error::Exists(format!("lvol store {}", opts.lvs_name)));
    }
    let mut d = bdev::open(&opts.bdev_name, None)?;
    let b = d.bdev().clone();
    if b.product_name() == super::PRODUCT {
        return Err(Error::InvalidParam {
            param: "bdev_name",
            why: "an lvol store cannot be kept on a logical volume".into(),
        });
    }
    d.claim(&format!("lvol store {}", opts.lvs_name))?;
    let bytes = b.num_blocks() * b.block_size() as u64;
    if cl < b.block_size() as u64 {
        return Err(Error::InvalidParam {
            param: "cluster_sz",
            why: format!(
                "{cl} is smaller than the bdev's {}-byte blocks",
                b.block_size()
            ),
        });
    }
    let layout = Layout::new(bytes, b.block_size(), cl)?;
    let total = layout.clusters(bytes);
    let desc: SharedDesc = Arc::new(Mutex::new(Some(d)));
    if opts.clear_method != ClearMethod::None {
        let len = total * cl;
        let op = match opts.clear_method {
            ClearMethod::Unmap if b.supports(IoType::Unmap) => Some(IoType::Unmap),
            _ if b.supports(IoType::WriteZeroes) => Some(IoType::WriteZeroes),
            _ => None,
        };
        let ios = match op {
            Some(op) => vec![op_io(op, layout.data_start, len)],
            None => clear_ios(&b, layout.data_start, len),
        };
        store::run(&rt, &desc, ios)?;
    }
    let uuid = uuid::Uuid::new_v4();
    let sb = store::format(&rt, &desc, uuid, layout, &opts.lvs_name, total)?;
    let st = super::state::State::new(&opts.lvs_name, total);
    let s = Store::start(&rt, desc, &sb, st, sb.ckpt_seq)?;
    stores().lock().unwrap().push(s.clone());
    tracing::info!(lvs = %opts.lvs_name, bdev = %opts.bdev_name, clusters = total,
        cluster_sz = cl, "lvol store created");
    Ok(lvs_info(&s))
}

/// Deletes a store (by UUID or name; exactly one given): refused while any of its lvols is
/// claimed; its lvol bdevs are removed and its metadata erased.
pub fn delete_lvstore(uuid: Option<&str>, name: Option<&str>) -> Result<()> {
    close_store(uuid, name, true)
}

/// Closes a store without erasing it (SPDK's unload; at shutdown, or to hand its base bdev
/// over): its lvol bdevs go, everything changed so far is durable, the base is released and
/// examine finds the store there again.
pub fn unload_lvstore(uuid: Option<&str>, name: Option<&str>) -> Result<()> {
    close_store(uuid, name, false)
}

fn close_store(uuid: Option<&str>, name: Option<&str>, erase: bool) -> Result<()> {
    let s = find_store(uuid, name)?;
    let _c = s.ctl.lock().unwrap();
    let handles: Vec<_> = s
        .bdevs
        .lock()
        .unwrap()
        .values()
        .map(|h| h.bdev.clone())
        .collect();
    if let Some(b) = handles.iter().find(|b| b.claimed_by().is_some()) {
        return Err(Error::Claimed {
            bdev: b.name().to_string(),
            by: b.claimed_by().unwrap_or_default(),
        });
    }
    // The base is released (and maybe written by its next user): no lent read window may
    // stay out. Refused with nothing changed if one does.
    super::lend::drain(&s.lends, store::CONTROL_TIMEOUT)?;
    for b in &handles {
        let _ = bdev::delete(b.name());
    }
    let ids: Vec<u32> = s.bdevs.lock().unwrap().keys().copied().collect();
    let drained = Freeze::new(&s, &ids);
    s.bdevs.lock().unwrap().clear();
    s.close();
    let mut r = drained.map(|_| ());
    if erase {
        let mut ios = vec![store::write_io(0, vec![0; 8192])];
        if s.base_bdev.supports(IoType::Flush) {
            ios.push(op_io(IoType::Flush, 0, 0));
        }
        r = r.and(store::run(&s.rt, &s.base, ios));
    }
    s.base.lock().unwrap().take();
    stores().lock().unwrap().retain(|x| !Arc::ptr_eq(x, &s));
    tracing::info!(lvs = %s.name(), erase, "lvol store closed");
    r
}

/// Makes every store's queued changes durable and stops its committer (daemon shutdown:
/// the lvol bdevs stay registered until the process ends, their I/O fails from now on).
pub fn close_all() {
    let all: Vec<_> = stores().lock().unwrap().drain(..).collect();
    for s in all {
        s.close();
    }
}

/// Stores, all or the one named by UUID or name (not found: an error).
pub fn get_lvstores(uuid: Option<&str>, name: Option<&str>) -> Result<Vec<LvsInfo>> {
    if uuid.is_some() || name.is_some() {
        return Ok(vec![lvs_info(&*find_store(uuid, name)?)]);
    }
    let all: Vec<_> = stores().lock().unwrap().clone();
    Ok(all.iter().map(|s| lvs_info(s)).collect())
}

/// Bytes of memory the metadata of a store holds (maps, names, bitmaps).
pub fn lvstore_mem_bytes(uuid: Option<&str>, name: Option<&str>) -> Result<usize> {
    let s = find_store(uuid, name)?;
    let g = s.inner.lock().unwrap();
    Ok(g.st.mem_bytes())
}

/// Renames a store (its lvols' aliases follow).
pub fn rename_lvstore(old: &str, new: &str) -> Result<()> {
    check_name("new_name", new)?;
    let s = find_store(None, Some(old))?;
    let _c = s.ctl.lock().unwrap();
    if old == new {
        return Ok(());
    }
    if stores().lock().unwrap().iter().any(|x| x.name() == new) {
        return Err(Error::Exists(format!("lvol store {new}")));
    }
    commit(
        &s,
        &[Record::RenameStore {
            name: new.to_string(),
        }],
        false,
    )?;
    let names: Vec<_> = {
        let g = s.inner.lock().unwrap();
        g.st.lvols
            .iter()
            .map(|(&id, l)| (id, l.name.clone()))
            .collect()
    };
    let b = s.bdevs.lock().unwrap();
    for (id, n) in names {
        if let Some(h) = b.get(&id) {
            let (o, nw) = (format!("{old}/{n}"), format!("{new}/{n}"));
            if let Err(e) = bdev::set_alias(&h.bdev, Some(&o), Some(&nw)) {
                tracing::warn!(alias = %nw, "lvol alias not renamed: {e}");
            }
        }
    }
    Ok(())
}

/// Takes in clusters added to the end of the base since creation (a grown base bdev).
pub fn grow_lvstore(uuid: Option<&str>, name: Option<&str>) -> Result<LvsInfo> {
    let s = find_store(uuid, name)?;
    let _c = s.ctl.lock().unwrap();
    let bytes = s.base_bdev.num_blocks() * s.layout.block_size as u64;
    let total = s.layout.clusters(bytes);
    let cur = s.inner.lock().unwrap().st.total;
    if total > cur {
        commit(&s, &[Record::Grow { total }], false)?;
    }
    Ok(lvs_info(&s))
}

/// Creates an lvol of `size_bytes` (rounded up to clusters) in the store named by UUID or
/// name; thick lvols get all their clusters now.
pub fn create_lvol(
    lvs_uuid: Option<&str>,
    lvs_name: Option<&str>,
    name: &str,
    size_bytes: u64,
    thin: bool,
    clear_method: ClearMethod,
) -> Result<LvolInfo> {
    check_name("lvol_name", name)?;
    if size_bytes == 0 {
        return Err(Error::InvalidParam {
            param: "size",
            why: "must be > 0".into(),
        });
    }
    let s = find_store(lvs_uuid, lvs_name)?;
    let _c = s.ctl.lock().unwrap();
    let size = clusters_of(&s, size_bytes)?;
    let id = {
        let mut g = s.inner.lock().unwrap();
        preflight_new(&s, &g.st, name)?;
        let id = g.st.next_id;
        let runs = if thin {
            Vec::new()
        } else {
            g.st.find_free_runs(size).ok_or_else(|| {
                Error::NoSpace(format!(
                    "lvol store {} has {} free clusters; a thick {name} needs {size}",
                    g.st.name, g.st.free
                ))
            })?
        };
        let mut recs = vec![Record::Create {
            id,
            uuid: uuid::Uuid::new_v4(),
            name: name.to_string(),
            flags: if thin { F_THIN } else { 0 },
            clear: clear_method as u8,
            parent: NONE,
            size,
        }];
        push_maps(&mut recs, id, 0, runs);
        let seq = s.change_all(&mut g, &recs, false)?;
        drop(g);
        s.wait(seq)?;
        id
    };
    register_lvol(&s, id)?;
    info_of(&s, id).ok_or_else(|| no_lvol(name))
}

/// `size_bytes` in clusters of `s` (rounded up), refused beyond what an lvol can hold.
fn clusters_of(s: &Store, size_bytes: u64) -> Result<u64> {
    let size = size_bytes.div_ceil(s.layout.cluster_sz);
    if size > MAX_LVOL_CLUSTERS {
        return Err(Error::InvalidParam {
            param: "size",
            why: format!(
                "{size_bytes} bytes is more than an lvol holds ({} bytes at a cluster size of {})",
                MAX_LVOL_CLUSTERS * s.layout.cluster_sz,
                s.layout.cluster_sz
            ),
        });
    }
    Ok(size)
}

/// Appends the Map records giving lvol `id` the free `runs` (first, len) from logical
/// cluster `from` on.
fn push_maps(recs: &mut Vec<Record>, id: u32, from: u64, runs: Vec<(u32, u32)>) {
    let mut idx = from;
    for (phys, len) in runs {
        recs.push(Record::Map { id, idx, phys, len });
        idx += len as u64;
    }
}

/// Refuses a new lvol `name` that clashes, or one lvol too many.
fn preflight_new(s: &Store, st: &super::state::State, name: &str) -> Result<()> {
    if st.id_by_name(name).is_some() {
        return Err(Error::Exists(format!("lvol {}/{name}", st.name)));
    }
    let alias = format!("{}/{name}", st.name);
    if bdev::lookup(&alias).is_some() {
        return Err(Error::Exists(alias));
    }
    if st.lvols.len() >= s.layout.max_lvols as usize {
        return Err(Error::NoSpace(format!(
            "lvol store {} holds its maximum of {} lvols",
            st.name, s.layout.max_lvols
        )));
    }
    Ok(())
}

/// Lvols, all or those of one store.
pub fn get_lvols(lvs_uuid: Option<&str>, lvs_name: Option<&str>) -> Result<Vec<LvolInfo>> {
    let ss = if lvs_uuid.is_some() || lvs_name.is_some() {
        vec![find_store(lvs_uuid, lvs_name)?]
    } else {
        stores().lock().unwrap().clone()
    };
    let mut v = Vec::new();
    for s in ss {
        let ids: Vec<u32> = s.inner.lock().unwrap().st.lvols.keys().copied().collect();
        v.extend(ids.into_iter().filter_map(|id| info_of(&s, id)));
    }
    Ok(v)
}

/// The lvol a bdev name, UUID or `lvs/lvol` alias names, if it is one.
pub fn lvol_info(name: &str) -> Option<LvolInfo> {
    let (s, id) = find_lvol(name).ok()?;
    info_of(&s, id)
}

fn bdev_of(s: &Store, id: u32) -> Option<Arc<bdev::Bdev>> {
    s.bdevs.lock().unwrap().get(&id).map(|h| h.bdev.clone())
}

/// Deletes an lvol (a snapshot with one clone is merged into it; more clones: refused).
pub fn delete_lvol(name: &str) -> Result<()> {
    let (s, id) = find_lvol(name)?;
    let _c = s.ctl.lock().unwrap();
    let (clones, lname) = {
        let g = s.inner.lock().unwrap();
        (
            g.st.clones_of(id),
            g.st.lvol(id).map(|l| l.name.clone()).unwrap_or_default(),
        )
    };
    if clones.len() > 1 {
        return Err(Error::Busy(format!(
            "lvol {lname} has {} clones; delete them first",
            clones.len()
        )));
    }
    if let Some(&c) = clones.first() {
        let g = s.inner.lock().unwrap();
        reparent_ok(&g.st, c, id)?;
    }
    if let Some(b) = bdev_of(&s, id) {
        bdev::delete(b.name())?;
    }
    let mut ids = vec![id];
    ids.extend(&clones);
    let _f = Freeze::new(&s, &ids)?;
    let freed: Vec<u32> = {
        let g = s.inner.lock().unwrap();
        let l = g.st.lvol(id).map_err(Error::Corrupt)?;
        match clones.first().and_then(|c| g.st.lvols.get(c)) {
            Some(c) => l
                .map
                .iter()
                .filter(|&(i, _)| i >= c.size || c.map.get(i).is_some())
                .map(|(_, p)| p)
                .collect(),
            None => l.map.iter().map(|(_, p)| p).collect(),
        }
    };
    clear_clusters(&s, &freed)?;
    commit(&s, &[Record::Delete { id }], true)?;
    s.bdevs.lock().unwrap().remove(&id);
    tracing::info!(lvol = %lname, "lvol deleted");
    Ok(())
}

/// Snapshots `lvol` as `snapshot_name` (read-only); the lvol becomes its thin clone.
pub fn snapshot(lvol: &str, snapshot_name: &str) -> Result<LvolInfo> {
    check_name("snapshot_name", snapshot_name)?;
    let (s, origin) = find_lvol(lvol)?;
    let _c = s.ctl.lock().unwrap();
    let id = {
        let g = s.inner.lock().unwrap();
        let o = g.st.lvol(origin).map_err(Error::Corrupt)?;
        if o.read_only() {
            return Err(Error::InvalidParam {
                param: "lvol_name",
                why: format!(
                    "{} is read-only (a snapshot already): clone it instead",
                    o.name
                ),
            });
        }
        preflight_new(&s, &g.st, snapshot_name)?;
        g.st.next_id
    };
    {
        let _f = Freeze::new(&s, &[origin])?;
        commit(
            &s,
            &[Record::Snapshot {
                origin,
                id,
                uuid: uuid::Uuid::new_v4(),
                name: snapshot_name.to_string(),
            }],
            false,
        )?;
    }
    register_lvol(&s, id)?;
    info_of(&s, id).ok_or_else(|| no_lvol(snapshot_name))
}

/// Clones a read-only lvol (a snapshot) as a thin lvol `clone_name`.
pub fn clone(snapshot: &str, clone_name: &str) -> Result<LvolInfo> {
    check_name("clone_name", clone_name)?;
    let (s, parent) = find_lvol(snapshot)?;
    let _c = s.ctl.lock().unwrap();
    let id = {
        let g = s.inner.lock().unwrap();
        let p = g.st.lvol(parent).map_err(Error::Corrupt)?;
        if !p.read_only() {
            return Err(Error::InvalidParam {
                param: "snapshot_name",
                why: format!("{} is not read-only: only snapshots can be cloned", p.name),
            });
        }
        preflight_new(&s, &g.st, clone_name)?;
        let rec = Record::Create {
            id: g.st.next_id,
            uuid: uuid::Uuid::new_v4(),
            name: clone_name.to_string(),
            flags: F_THIN,
            clear: p.clear,
            parent,
            size: p.size,
        };
        drop(g);
        commit(&s, std::slice::from_ref(&rec), false)?;
        match rec {
            Record::Create { id, .. } => id,
            _ => unreachable!(),
        }
    };
    register_lvol(&s, id)?;
    info_of(&s, id).ok_or_else(|| no_lvol(clone_name))
}

/// Resizes an lvol to `size_bytes` (rounded up to clusters); exported namespaces see it.
pub fn resize(lvol: &str, size_bytes: u64) -> Result<()> {
    if size_bytes == 0 {
        return Err(Error::InvalidParam {
            param: "size",
            why: "must be > 0".into(),
        });
    }
    let (s, id) = find_lvol(lvol)?;
    let _c = s.ctl.lock().unwrap();
    let size = clusters_of(&s, size_bytes)?;
    let (old, thin, ro) = {
        let g = s.inner.lock().unwrap();
        let l = g.st.lvol(id).map_err(Error::Corrupt)?;
        (l.size, l.thin(), l.read_only())
    };
    if ro {
        return Err(Error::InvalidParam {
            param: "name",
            why: "a read-only lvol (a snapshot) cannot be resized".into(),
        });
    }
    if size == old {
        return Ok(());
    }
    if size > old {
        let mut g = s.inner.lock().unwrap();
        let mut recs = vec![Record::Resize { id, size }];
        if !thin {
            let runs = g.st.find_free_runs(size - old).ok_or_else(|| {
                Error::NoSpace(format!(
                    "lvol store {} has {} free clusters; growing needs {}",
                    g.st.name,
                    g.st.free,
                    size - old
                ))
            })?;
            push_maps(&mut recs, id, old, runs);
        }
        let seq = s.change_all(&mut g, &recs, false)?;
        drop(g);
        s.wait(seq)?;
        set_blocks(&s, id, size);
    } else {
        let b = bdev_of(&s, id);
        // Stages over the lvol sized themselves by it; only an NVMe-oF subsystem passes a
        // smaller size on (its hosts get the namespace-attribute notice).
        if let Some(by) = b.as_ref().and_then(|b| b.claimed_by()) {
            if !by.starts_with("NVMe-oF subsystem") {
                return Err(Error::Claimed {
                    bdev: format!("{lvol} (shrinking it)"),
                    by,
                });
            }
        }
        let _f = Freeze::new(&s, &[id])?;
        // The new end holds before anything is freed: I/O queued by the freeze beyond it is
        // refused by the channel, new I/O by the bdev layer.
        set_blocks(&s, id, size);
        let res = (|| {
            let freed: Vec<u32> = {
                let g = s.inner.lock().unwrap();
                let l = g.st.lvol(id).map_err(Error::Corrupt)?;
                l.map
                    .iter()
                    .filter(|&(i, _)| i >= size)
                    .map(|(_, p)| p)
                    .collect()
            };
            clear_clusters(&s, &freed)?;
            commit(&s, &[Record::Resize { id, size }], true)
        })();
        if res.is_err() {
            set_blocks(&s, id, old);
        }
        res?;
    }
    Ok(())
}

/// Sets lvol `id`'s size in its channels and on its bdev (listeners: exported namespaces).
fn set_blocks(s: &Store, id: u32, clusters: u64) {
    let blocks = clusters * s.layout.bpc();
    let h = s
        .bdevs
        .lock()
        .unwrap()
        .get(&id)
        .map(|h| (h.bdev.clone(), h.ctl.clone()));
    if let Some((b, ctl)) = h {
        ctl.blocks.store(blocks, Ordering::SeqCst);
        bdev::resize(&b, blocks);
    }
}

/// Copies into lvol `id` every cluster it does not own that `src_of` names (a data cluster
/// to copy, or `Some(None)`: a fresh zeroed one), a cluster at a time under the data path's
/// copy lock.
/// `need` counts the clusters it will take (from the maps: it runs under the metadata mutex,
/// which every lvol's I/O takes, so not cluster by cluster).
fn copy_in(
    s: &Store,
    id: u32,
    need: impl Fn(&super::state::State) -> u64,
    src_of: impl Fn(&super::state::State, u64) -> Option<Option<u32>>,
) -> Result<()> {
    let size = s
        .inner
        .lock()
        .unwrap()
        .st
        .lvol(id)
        .map_err(Error::Corrupt)?
        .size;
    {
        // Refused before anything is copied when the pool cannot hold it all.
        let g = s.inner.lock().unwrap();
        let l = g.st.lvol(id).map_err(Error::Corrupt)?;
        let need = need(&g.st);
        if need > g.st.free {
            return Err(Error::NoSpace(format!(
                "lvol store {} has {} free clusters; {} needs {need}",
                g.st.name, g.st.free, l.name
            )));
        }
    }
    let cl = s.layout.cluster_sz;
    for idx in 0..size {
        loop {
            let mut g = s.inner.lock().unwrap();
            let l = g.st.lvol(id).map_err(Error::Corrupt)?;
            if idx >= l.size || l.map.get(idx).is_some() {
                break;
            }
            if g.cow_busy.contains(&(id, idx)) {
                drop(g);
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            let Some(src) = src_of(&g.st, idx) else { break };
            let dst =
                g.st.find_free()
                    .ok_or_else(|| Error::NoSpace(format!("lvol store {} is full", g.st.name)))?;
            if src.is_none() {
                let seq = s.change(
                    &mut g,
                    &Record::Map {
                        id,
                        idx,
                        phys: dst,
                        len: 1,
                    },
                    false,
                )?;
                // A write to the cluster waits until its Map is durable (as the data path's
                // own first writes do).
                g.pending_map.insert((id, idx), seq);
                drop(g);
                s.wait(seq)?;
                break;
            }
            let seq = s.change(&mut g, &Record::Reserve { phys: dst, len: 1 }, false)?;
            g.cow_busy.insert((id, idx));
            drop(g);
            let res = (|| {
                s.wait(seq)?;
                let data = store::read(
                    &s.rt,
                    &s.base,
                    s.layout.data_start + src.unwrap() as u64 * cl,
                    cl,
                )?;
                store::run(
                    &s.rt,
                    &s.base,
                    vec![store::write_io(s.layout.data_start + dst as u64 * cl, data)],
                )?;
                let mut g = s.inner.lock().unwrap();
                let seq = s.change(
                    &mut g,
                    &Record::Map {
                        id,
                        idx,
                        phys: dst,
                        len: 1,
                    },
                    true,
                )?;
                g.cow_busy.remove(&(id, idx));
                g.pending_map.insert((id, idx), seq);
                drop(g);
                s.wait(seq)
            })();
            if res.is_err() {
                s.inner.lock().unwrap().cow_busy.remove(&(id, idx));
            }
            res?;
            break;
        }
    }
    Ok(())
}

/// Allocates every cluster of a clone (copying from its parents) and cuts it loose.
pub fn inflate(lvol: &str) -> Result<()> {
    let (s, id) = find_lvol(lvol)?;
    let _c = s.ctl.lock().unwrap();
    let parent = writable_clone(&s, id)?;
    copy_in(
        &s,
        id,
        // Every cluster it does not own is allocated (copied or zeroed).
        |st| st.lvol(id).map_or(0, |l| l.size - l.map.count()),
        |st, idx| Some(parent.and_then(|p| st.resolve(p, idx))),
    )?;
    // Frozen for the switch: a read that found a parent's cluster is done (and its lent
    // window counted) before the parent can be deleted.
    let _f = Freeze::new(&s, &[id])?;
    commit(
        &s,
        &[Record::SetParent { id, parent: NONE }, Record::Thick { id }],
        false,
    )
}

/// Copies the clusters its parent owns and cuts a clone loose from that parent (it keeps
/// the parent's own parent; clusters nobody wrote stay thin).
pub fn decouple_parent(lvol: &str) -> Result<()> {
    let (s, id) = find_lvol(lvol)?;
    let _c = s.ctl.lock().unwrap();
    let Some(parent) = writable_clone(&s, id)? else {
        return Err(Error::InvalidParam {
            param: "name",
            why: "the lvol has no parent to decouple from".into(),
        });
    };
    copy_in(
        &s,
        id,
        |st| match (st.lvols.get(&id), st.lvols.get(&parent)) {
            (Some(l), Some(p)) => p
                .map
                .iter()
                .filter(|&(i, _)| i < l.size && l.map.get(i).is_none())
                .count() as u64,
            _ => 0,
        },
        |st, idx| st.lvols.get(&parent).and_then(|p| p.map.get(idx)).map(Some),
    )?;
    let grand = {
        let g = s.inner.lock().unwrap();
        reparent_ok(&g.st, id, parent)?;
        g.st.lvol(parent)
            .map_err(Error::Corrupt)?
            .parent
            .unwrap_or(NONE)
    };
    let _f = Freeze::new(&s, &[id])?;
    commit(&s, &[Record::SetParent { id, parent: grand }], false)
}

/// Refuses to hand `child` from `parent` to the grandparent when the child reaches beyond
/// the parent and the grandparent has data there: what read as zeros would read the
/// grandparent's data (the map has no per-parent limit).
fn reparent_ok(st: &super::state::State, child: u32, parent: u32) -> Result<()> {
    let (c, p) = (
        st.lvol(child).map_err(Error::Corrupt)?,
        st.lvol(parent).map_err(Error::Corrupt)?,
    );
    if let Some(g) = p.parent.and_then(|g| st.lvols.get(&g)) {
        if c.size > p.size && g.size > p.size {
            return Err(Error::Busy(format!(
                "{} is larger than {} and {} has data beyond it: inflate {} first",
                c.name, p.name, g.name, c.name
            )));
        }
    }
    Ok(())
}

/// The parent of writable lvol `id` (inflate and decouple refuse read-only ones).
fn writable_clone(s: &Store, id: u32) -> Result<Option<u32>> {
    let g = s.inner.lock().unwrap();
    let l = g.st.lvol(id).map_err(Error::Corrupt)?;
    if l.read_only() {
        return Err(Error::InvalidParam {
            param: "name",
            why: format!("{} is read-only", l.name),
        });
    }
    Ok(l.parent)
}

/// Makes an lvol read-only (for good).
pub fn set_read_only(lvol: &str) -> Result<()> {
    let (s, id) = find_lvol(lvol)?;
    let _c = s.ctl.lock().unwrap();
    if s.inner
        .lock()
        .unwrap()
        .st
        .lvol(id)
        .map_err(Error::Corrupt)?
        .flags
        & F_RO
        != 0
    {
        return Ok(());
    }
    let _f = Freeze::new(&s, &[id])?;
    commit(&s, &[Record::ReadOnly { id }], false)
}

/// Renames an lvol within its store (its alias follows).
pub fn rename(lvol: &str, new_name: &str) -> Result<()> {
    check_name("new_name", new_name)?;
    let (s, id) = find_lvol(lvol)?;
    let _c = s.ctl.lock().unwrap();
    let (lvs, old) = {
        let g = s.inner.lock().unwrap();
        let l = g.st.lvol(id).map_err(Error::Corrupt)?;
        if l.name == new_name {
            return Ok(());
        }
        if g.st.id_by_name(new_name).is_some() {
            return Err(Error::Exists(format!("lvol {}/{new_name}", g.st.name)));
        }
        (g.st.name.clone(), l.name.clone())
    };
    let alias = format!("{lvs}/{new_name}");
    if bdev::lookup(&alias).is_some() {
        return Err(Error::Exists(alias));
    }
    commit(
        &s,
        &[Record::Rename {
            id,
            name: new_name.to_string(),
        }],
        false,
    )?;
    if let Some(b) = bdev_of(&s, id) {
        bdev::set_alias(&b, Some(&format!("{lvs}/{old}")), Some(&alias))?;
    }
    Ok(())
}

/// Opens the store on `bdev_name`, if it holds one, and registers its lvols (true). A store
/// whose metadata fails its checks is an error ([`Error::Corrupt`]), and is left alone.
pub fn examine(rt: &RuntimeHandle, bdev_name: &str) -> Result<bool> {
    // One store opens at a time: the check for a second path to an open store and the
    // store's entry in the list are not raced by another examine.
    static OPENING: Mutex<()> = Mutex::new(());
    let _one = OPENING.lock().unwrap_or_else(|p| p.into_inner());
    if stores()
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.base_bdev.name() == bdev_name)
    {
        return Ok(false);
    }
    let in_use = |uuid: uuid::Uuid, name: &str| {
        stores()
            .lock()
            .unwrap()
            .iter()
            .find(|x| x.uuid == uuid || x.name() == name)
            .map(|x| {
                format!(
                    "lvol store {name} on {bdev_name}: a store with its {} is open on {}",
                    if x.uuid == uuid { "UUID" } else { "name" },
                    x.base_bdev.name()
                )
            })
    };
    let Some(s) = store::open_existing(rt, bdev_name, &in_use)? else {
        return Ok(false);
    };
    let name = s.name();
    stores().lock().unwrap().push(s.clone());
    let ids: Vec<u32> = s.inner.lock().unwrap().st.lvols.keys().copied().collect();
    for id in &ids {
        if let Err(e) = register_lvol(&s, *id) {
            tracing::warn!(lvs = %name, "lvol not registered: {e}");
        }
    }
    tracing::info!(lvs = %name, bdev = bdev_name, lvols = ids.len(), "lvol store found");
    Ok(true)
}

/// Checks the metadata of the store on `bdev` (open or not): see [`CheckReport`].
pub fn check(rt: &RuntimeHandle, bdev_name: &str) -> Result<CheckReport> {
    let rt = rt.clone();
    let open = stores()
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.base_bdev.name() == bdev_name)
        .cloned();
    let d = bdev::open(bdev_name, None)?;
    let desc: SharedDesc = Arc::new(Mutex::new(Some(d)));
    if let Some(s) = &open {
        s.pause(true);
    }
    let loaded = store::load(&rt, &desc);
    let mut rep = CheckReport::default();
    if let Some(s) = &open {
        let g = s.inner.lock().unwrap();
        rep.errors
            .extend(g.st.check().into_iter().map(|e| format!("in memory: {e}")));
        drop(g);
        s.pause(false);
    }
    match loaded {
        Ok(None) => return Err(no_store(bdev_name)),
        Err(Error::Corrupt(why)) => rep.errors.push(why),
        Err(e) => return Err(e),
        Ok(Some(ld)) => {
            rep.errors.extend(ld.st.check());
            rep.lvols = ld.st.lvols.len();
            rep.total_clusters = ld.st.total;
            rep.free_clusters = ld.st.free;
            rep.used_clusters = ld.st.total - ld.st.free;
            rep.log_blocks = ld.log_blocks;
        }
    }
    Ok(rep)
}
