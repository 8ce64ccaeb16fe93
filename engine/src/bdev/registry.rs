//! The global bdev registry (control path; a mutex is fine here) with open/claim semantics
//! and hot-remove notification.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use ballast_reactor::RuntimeHandle;

use super::{BdevBackend, BdevInfo, ChannelStats, IoStat, IoType};
use crate::error::{Error, Result};

type RemoveFn = Box<dyn FnOnce() + Send>;

struct OpenRecord {
    id: u64,
    /// Reactor the descriptor was opened on: hot-remove is delivered there.
    home: Option<(RuntimeHandle, usize)>,
    on_remove: Option<RemoveFn>,
}

#[derive(Default)]
struct BdevState {
    claim: Option<String>,
    opens: Vec<OpenRecord>,
}

/// A registered block device (shared by every reactor).
pub struct Bdev {
    pub(crate) id: u64,
    info: BdevInfo,
    pub(crate) backend: Box<dyn BdevBackend>,
    /// Current size in blocks (an lvol grows and shrinks; `info.num_blocks` is the size at
    /// registration).
    num_blocks: AtomicU64,
    /// Current aliases (an lvol's follow renames).
    aliases: Mutex<Vec<String>>,
    /// The backend's supported operations ([`IoType::bit`]s), asked once: I/O validation
    /// checks them for every request.
    ops: u8,
    state: Mutex<BdevState>,
    removed: AtomicBool,
    /// Stats of live channels, plus the totals of closed ones.
    pub(crate) channel_stats: Mutex<(Vec<Weak<ChannelStats>>, IoStat)>,
}

impl std::fmt::Debug for Bdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bdev")
            .field("name", &self.info.name)
            .finish()
    }
}

impl Bdev {
    /// Name.
    pub fn name(&self) -> &str {
        &self.info.name
    }
    /// Static description.
    pub fn info(&self) -> &BdevInfo {
        &self.info
    }
    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.info.block_size
    }
    /// Number of blocks (now: it may change, see [`resize`]).
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks.load(Ordering::Acquire)
    }
    /// Other names it can be found by (now: they may change, see [`set_alias`]).
    pub fn aliases(&self) -> Vec<String> {
        self.aliases.lock().unwrap().clone()
    }
    /// SPDK's product name of the backend.
    pub fn product_name(&self) -> &'static str {
        self.backend.product_name()
    }
    /// Whether the bdev supports `op`.
    pub fn supports(&self, op: IoType) -> bool {
        self.ops & op.bit() != 0
    }
    /// Backend-specific description.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.backend.describe()
    }
    /// Transport reconnections so far (see [`super::BdevBackend::reconnects`]).
    pub fn reconnects(&self) -> u64 {
        self.backend.reconnects()
    }
    /// Whether the bdev's transport is lost (see [`super::BdevBackend::transport_lost`]).
    pub fn transport_lost(&self) -> Option<bool> {
        self.backend.transport_lost()
    }
    /// Who holds the claim, if anyone.
    pub fn claimed_by(&self) -> Option<String> {
        self.state.lock().unwrap().claim.clone()
    }
    /// Number of open descriptors.
    pub fn open_count(&self) -> usize {
        self.state.lock().unwrap().opens.len()
    }
    /// True once deleted (I/O then fails with [`super::IoStatus::Removed`]).
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
    /// Cumulative I/O counters over all channels, live and closed.
    pub fn iostat(&self) -> IoStat {
        let g = self.channel_stats.lock().unwrap();
        let mut s = g.1;
        for c in g.0.iter().filter_map(Weak::upgrade) {
            c.add_to(&mut s);
        }
        s
    }
    pub(crate) fn retire_channel_stats(&self, stats: &Arc<ChannelStats>) {
        let mut g = self.channel_stats.lock().unwrap();
        stats.add_to(&mut g.1);
        let p = Arc::as_ptr(stats);
        g.0.retain(|w| w.as_ptr() != p && w.strong_count() > 0);
    }
}

impl Drop for Bdev {
    fn drop(&mut self) {
        tracing::debug!(bdev = %self.info.name, "bdev destroyed");
        self.backend.destroy();
    }
}

#[derive(Default)]
struct Registry {
    /// Names and aliases → bdev.
    by_name: HashMap<String, Arc<Bdev>>,
    by_uuid: HashMap<uuid::Uuid, Arc<Bdev>>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Longest bdev name or alias, in bytes (what errors and logs may quote of it stays small).
pub const MAX_NAME: usize = 255;

/// Checks a bdev (or controller) name: not empty, at most [`MAX_NAME`] bytes, no control
/// characters (a NUL cannot name a thread or a file; newlines would forge log lines).
pub fn validate_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "must not be empty".to_string()
    } else if name.len() > MAX_NAME {
        format!("{} bytes long (at most {MAX_NAME})", name.len())
    } else if name.chars().any(char::is_control) {
        "contains a control character".to_string()
    } else {
        return Ok(());
    };
    Err(Error::InvalidParam { param: "name", why })
}

/// Registers a bdev. Names, aliases and UUIDs are unique across the registry.
pub fn register(info: BdevInfo, backend: Box<dyn BdevBackend>) -> Result<Arc<Bdev>> {
    for n in std::iter::once(&info.name).chain(info.aliases.iter()) {
        validate_name(n)?;
    }
    if info.block_size != 512 && info.block_size != 4096 {
        return Err(Error::InvalidParam {
            param: "block_size",
            why: format!("{} (must be 512 or 4096)", info.block_size),
        });
    }
    if info.num_blocks == 0 {
        return Err(Error::InvalidParam {
            param: "num_blocks",
            why: "must be > 0".into(),
        });
    }
    let mut r = registry().lock().unwrap();
    for n in std::iter::once(&info.name).chain(info.aliases.iter()) {
        if r.by_name.contains_key(n) {
            return Err(Error::Exists(n.clone()));
        }
    }
    if r.by_uuid.contains_key(&info.uuid) {
        return Err(Error::Exists(info.uuid.to_string()));
    }
    let ops = IoType::ALL
        .into_iter()
        .filter(|&op| backend.supports(op))
        .fold(0, |m, op| m | op.bit());
    let bdev = Arc::new(Bdev {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        num_blocks: AtomicU64::new(info.num_blocks),
        aliases: Mutex::new(info.aliases.clone()),
        info,
        backend,
        ops,
        state: Mutex::default(),
        removed: AtomicBool::new(false),
        channel_stats: Mutex::default(),
    });
    for n in std::iter::once(&bdev.info.name).chain(bdev.info.aliases.iter()) {
        r.by_name.insert(n.clone(), bdev.clone());
    }
    r.by_uuid.insert(bdev.info.uuid, bdev.clone());
    drop(r);
    tracing::info!(bdev = %bdev.info.name, product = bdev.product_name(),
        blocks = bdev.info.num_blocks, block_size = bdev.info.block_size, "bdev registered");
    crate::backend::lvol::examine_new(&bdev);
    Ok(bdev)
}

/// Replaces alias `old` of `bdev` by `new` (`None`/`None` are add/remove).
pub(crate) fn set_alias(bdev: &Arc<Bdev>, old: Option<&str>, new: Option<&str>) -> Result<()> {
    let mut r = registry().lock().unwrap();
    if let Some(n) = new {
        validate_name(n)?;
        if r.by_name.contains_key(n) {
            return Err(Error::Exists(n.to_string()));
        }
    }
    let mut al = bdev.aliases.lock().unwrap();
    if let Some(o) = old {
        al.retain(|a| a != o);
        if r.by_name.get(o).is_some_and(|b| Arc::ptr_eq(b, bdev)) {
            r.by_name.remove(o);
        }
    }
    if let Some(n) = new {
        al.push(n.to_string());
        if !bdev.is_removed() {
            r.by_name.insert(n.to_string(), bdev.clone());
        }
    }
    Ok(())
}

type ResizeFn = Box<dyn Fn(&Arc<Bdev>) + Send + Sync>;

fn resize_listeners() -> &'static Mutex<Vec<ResizeFn>> {
    static L: OnceLock<Mutex<Vec<ResizeFn>>> = OnceLock::new();
    L.get_or_init(Mutex::default)
}

/// Calls `f` with every bdev whose size changes from now on (the NVMe target tells the
/// hosts of the namespaces it backs).
pub fn on_resize(f: impl Fn(&Arc<Bdev>) + Send + Sync + 'static) {
    resize_listeners().lock().unwrap().push(Box::new(f));
}

/// Sets `bdev`'s size to `num_blocks` and tells the resize listeners.
pub(crate) fn resize(bdev: &Arc<Bdev>, num_blocks: u64) {
    bdev.num_blocks.store(num_blocks, Ordering::Release);
    tracing::info!(bdev = %bdev.info.name, blocks = num_blocks, "bdev resized");
    for f in resize_listeners().lock().unwrap().iter() {
        f(bdev);
    }
}

/// Finds a bdev by name, alias or UUID string.
pub fn lookup(name: &str) -> Option<Arc<Bdev>> {
    let r = registry().lock().unwrap();
    if let Some(b) = r.by_name.get(name) {
        return Some(b.clone());
    }
    let u = uuid::Uuid::parse_str(name).ok()?;
    r.by_uuid.get(&u).cloned()
}

/// All registered bdevs, sorted by name.
pub fn list() -> Vec<Arc<Bdev>> {
    let r = registry().lock().unwrap();
    let mut v: Vec<_> = r.by_uuid.values().cloned().collect();
    v.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    v
}

/// Opens a bdev. `on_remove` runs (on the opener's reactor, if opened on one) when the bdev is
/// deleted; the opener should then stop I/O and drop the descriptor.
pub fn open(name: &str, on_remove: Option<Box<dyn FnOnce() + Send>>) -> Result<BdevDesc> {
    let bdev = lookup(name).ok_or_else(|| Error::NotFound(name.to_string()))?;
    if bdev.is_removed() {
        return Err(Error::Removing(name.to_string()));
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let home = ballast_reactor::handle().zip(ballast_reactor::current_core());
    bdev.state.lock().unwrap().opens.push(OpenRecord {
        id,
        home,
        on_remove,
    });
    Ok(BdevDesc {
        bdev,
        id,
        claimed: false,
    })
}

/// Deletes a bdev: refused while claimed; otherwise its names are freed at once, openers are
/// notified (hot remove), new I/O fails with `Removed`, and the backend is destroyed when the
/// last descriptor and channel are gone.
pub fn delete(name: &str) -> Result<()> {
    let bdev = {
        let mut r = registry().lock().unwrap();
        let bdev = r
            .by_name
            .get(name)
            .cloned()
            .or_else(|| {
                uuid::Uuid::parse_str(name)
                    .ok()
                    .and_then(|u| r.by_uuid.get(&u).cloned())
            })
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        if let Some(by) = bdev.claimed_by() {
            return Err(Error::Claimed {
                bdev: bdev.info.name.clone(),
                by,
            });
        }
        bdev.removed.store(true, Ordering::Release);
        r.by_name.remove(&bdev.info.name);
        for n in bdev.aliases.lock().unwrap().iter() {
            if r.by_name.get(n).is_some_and(|b| Arc::ptr_eq(b, &bdev)) {
                r.by_name.remove(n);
            }
        }
        r.by_uuid.remove(&bdev.info.uuid);
        bdev
    };
    let notify: Vec<_> = {
        let mut st = bdev.state.lock().unwrap();
        st.opens
            .iter_mut()
            .filter_map(|o| o.on_remove.take().map(|f| (o.home.clone(), f)))
            .collect()
    };
    tracing::info!(bdev = %bdev.info.name, openers = notify.len(), "bdev deleted");
    for (home, f) in notify {
        match home {
            Some((rt, core)) => {
                if let Err(e) = rt.send_retry(core, f) {
                    tracing::warn!(bdev = %bdev.info.name, core, "hot-remove not delivered: {e}");
                }
            }
            None => f(),
        }
    }
    Ok(())
}

/// An open handle to a bdev. Dropping it closes it (and releases its claim).
pub struct BdevDesc {
    bdev: Arc<Bdev>,
    id: u64,
    claimed: bool,
}

impl std::fmt::Debug for BdevDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdevDesc")
            .field("bdev", &self.bdev.info.name)
            .field("claimed", &self.claimed)
            .finish()
    }
}

impl BdevDesc {
    /// The bdev.
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.bdev
    }

    /// Claims the bdev for `owner` (e.g. "subsystem nqn.…"): it cannot be deleted or claimed
    /// by anyone else until released.
    pub fn claim(&mut self, owner: &str) -> Result<()> {
        let mut st = self.bdev.state.lock().unwrap();
        match &st.claim {
            Some(by) if !self.claimed => Err(Error::Claimed {
                bdev: self.bdev.info.name.clone(),
                by: by.clone(),
            }),
            _ => {
                st.claim = Some(owner.to_string());
                self.claimed = true;
                Ok(())
            }
        }
    }

    /// Releases this descriptor's claim.
    pub fn release_claim(&mut self) {
        if self.claimed {
            self.bdev.state.lock().unwrap().claim = None;
            self.claimed = false;
        }
    }

    /// This reactor's I/O channel to the bdev (shared by all users on this reactor).
    pub fn channel(&self) -> Result<super::IoChannel> {
        super::channel::get(&self.bdev)
    }
}

impl Drop for BdevDesc {
    fn drop(&mut self) {
        self.release_claim();
        self.bdev
            .state
            .lock()
            .unwrap()
            .opens
            .retain(|o| o.id != self.id);
    }
}
