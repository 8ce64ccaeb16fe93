//! Logical volumes (SPDK's lvol store / blobstore, written anew): thin and thick volumes,
//! snapshots, clones and online resize on a store kept on any bdev.
//!
//! ```text
//!  lvol bdev "<uuid>" (alias lvs/name) ─► channel: cut at clusters, map each piece
//!        │ read: own cluster → parent's → zeros      write: own → first touch → copy-on-write
//!        ▼
//!  store: State (lvols, sparse cluster maps, owned-cluster bitmap) ── Record ──► committer
//!        │                                                            (main reactor)
//!        ▼                                                                  ▼
//!  base bdev: [superblocks][checkpoint A|B][metadata log ring][cluster 0][cluster 1]...
//! ```
//!
//! * A store cuts its base into clusters (default 4 MiB). An lvol is a list of clusters; a
//!   thin one gets them on first write, a thick one at creation. Unwritten clusters read as
//!   zeros; free clusters are kept zeroed (cleared when freed), so a first write needs no
//!   zeroing.
//! * Snapshot: the origin's clusters move to a new read-only lvol, which becomes the origin's
//!   parent; the origin then copies a cluster on its first write to it (copy-on-write).
//!   Clone: a thin lvol whose parent is a read-only lvol. Deleting a snapshot with one clone
//!   merges it into the clone; inflate and decouple copy a parent's clusters in.
//! * Metadata: every change is a [`format::Record`] applied in memory and appended to a
//!   checksummed log; when the log is half full the whole state is written as a checkpoint
//!   to the other of two areas and the superblock (two slots, generations) points at it.
//!   Opening replays the checkpoint and the log's good prefix. What depends on a change (an
//!   acknowledged write to a new cluster, an RPC's answer) waits until it is durable.
//! * Examine: a bdev that holds a store, when it is registered, brings the store and its
//!   lvols back ([`enable_examine`]). [`check`] is the metadata checker.
//! * A full store fails the writing I/O with ENOSPC (NVMe Capacity Exceeded); nothing else.

mod channel;
mod format;
mod lend;
mod map;
mod ops;
mod state;
mod store;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ballast_reactor::RuntimeHandle;

use crate::bdev::{self, BackendChannel, Bdev, BdevBackend, BdevInfo, IoType};
use crate::error::Result;
use channel::{LvolChannel, LvolCtl};
use store::Store;

pub use ops::{
    check, clone, close_all, create_lvol, create_lvstore, decouple_parent, delete_lvol,
    delete_lvstore, examine, get_lvols, get_lvstores, grow_lvstore, inflate, lvol_info,
    lvstore_mem_bytes, rename, rename_lvstore, resize, set_read_only, snapshot, unload_lvstore,
};

/// What is done to clusters (and, at store creation, the data area) when they are freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClearMethod {
    /// Nothing (the caller vouches the device reads zeros where nothing was written).
    None,
    /// Deallocate (reads return zeros on every ballast backend). SPDK's default.
    #[default]
    Unmap,
    /// Write zeros.
    WriteZeroes,
}

impl ClearMethod {
    /// Parses SPDK's names: "none", "unmap", "write_zeroes".
    pub fn parse(s: &str) -> Option<ClearMethod> {
        match s {
            "none" => Some(ClearMethod::None),
            "unmap" => Some(ClearMethod::Unmap),
            "write_zeroes" => Some(ClearMethod::WriteZeroes),
            _ => None,
        }
    }

    /// SPDK's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClearMethod::None => "none",
            ClearMethod::Unmap => "unmap",
            ClearMethod::WriteZeroes => "write_zeroes",
        }
    }
}

/// Options of [`create_lvstore`].
#[derive(Debug, Clone)]
pub struct LvsOpts {
    /// The bdev to keep the store on (claimed by the store).
    pub bdev_name: String,
    /// The store's name (unique among stores; at most [`MAX_NAME`] bytes).
    pub lvs_name: String,
    /// Cluster size in bytes (a power of two, at least 64 KiB... see the implementation);
    /// [`DEFAULT_CLUSTER`] if `None`.
    pub cluster_sz: Option<u64>,
    /// How the data area is cleared at creation.
    pub clear_method: ClearMethod,
}

/// The default cluster size (SPDK's).
pub const DEFAULT_CLUSTER: u64 = 4 << 20;
/// Longest lvol or store name in bytes (SPDK's SPDK_LVOL_NAME_MAX minus the NUL).
pub const MAX_NAME: usize = 63;

/// A store as `bdev_lvol_get_lvstores` shows it.
#[derive(Debug, Clone)]
pub struct LvsInfo {
    /// The store's UUID.
    pub uuid: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// The bdev it lives on.
    pub base_bdev: String,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// Clusters available for data (excluding metadata).
    pub total_data_clusters: u64,
    /// Clusters not owned by any lvol.
    pub free_clusters: u64,
    /// The base's block size.
    pub block_size: u32,
    /// Lvols in the store (snapshots included).
    pub lvol_count: usize,
}

/// An lvol as `bdev_lvol_get_lvols` and `bdev_get_bdevs` show it.
#[derive(Debug, Clone)]
pub struct LvolInfo {
    /// The lvol's UUID (also its bdev name).
    pub uuid: uuid::Uuid,
    /// Its name within the store.
    pub name: String,
    /// `lvs_name/lvol_name`: the bdev's alias.
    pub alias: String,
    /// The store's UUID.
    pub lvs_uuid: uuid::Uuid,
    /// The store's name.
    pub lvs_name: String,
    /// The store's base bdev.
    pub base_bdev: String,
    /// Size in bytes (a whole number of clusters).
    pub size_bytes: u64,
    /// Block size (the base's).
    pub block_size: u32,
    /// Clusters the lvol owns itself.
    pub num_allocated_clusters: u64,
    /// Thin: clusters are allocated on first write.
    pub thin: bool,
    /// Read-only (snapshots, and lvols set so).
    pub read_only: bool,
    /// A snapshot (made by `bdev_lvol_snapshot`).
    pub is_snapshot: bool,
    /// A clone: it has a parent snapshot.
    pub is_clone: bool,
    /// The parent snapshot's name, if a clone.
    pub base_snapshot: Option<String>,
    /// Names of the lvols whose parent this one is.
    pub clones: Vec<String>,
}

/// What the metadata checker found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Problems found (empty: consistent).
    pub errors: Vec<String>,
    /// Lvols in the metadata.
    pub lvols: usize,
    /// Data clusters in the store.
    pub total_clusters: u64,
    /// Clusters owned by lvols.
    pub used_clusters: u64,
    /// Free clusters.
    pub free_clusters: u64,
    /// Metadata log blocks replayed after the checkpoint.
    pub log_blocks: u64,
}

/// SPDK's product name of lvol bdevs.
pub const PRODUCT: &str = "Logical Volume";

/// A registered lvol bdev and its freeze control.
pub(crate) struct LvolHandle {
    pub(crate) bdev: Arc<Bdev>,
    pub(crate) ctl: Arc<LvolCtl>,
}

struct LvolBackend {
    store: Arc<Store>,
    id: u32,
    ctl: Arc<LvolCtl>,
}

impl BdevBackend for LvolBackend {
    fn product_name(&self) -> &'static str {
        PRODUCT
    }

    fn supports(&self, op: IoType) -> bool {
        match op {
            IoType::Read | IoType::Write | IoType::Flush => true,
            IoType::WriteZeroes | IoType::Unmap => true,
        }
    }

    fn create_channel(&self) -> Result<Box<dyn BackendChannel>> {
        Ok(Box::new(LvolChannel::new(
            self.store.clone(),
            self.id,
            self.ctl.clone(),
        )?))
    }

    fn describe(&self) -> Vec<(String, String)> {
        vec![
            ("lvol_store_uuid".into(), self.store.uuid.to_string()),
            ("base_bdev".into(), self.store.base_bdev.name().to_string()),
        ]
    }
}

/// The open stores.
pub(crate) fn stores() -> &'static Mutex<Vec<Arc<Store>>> {
    static S: OnceLock<Mutex<Vec<Arc<Store>>>> = OnceLock::new();
    S.get_or_init(Mutex::default)
}

static RT: Mutex<Option<RuntimeHandle>> = Mutex::new(None);
static EXAMINING: AtomicUsize = AtomicUsize::new(0);

/// Lets stores come back by themselves: each bdev registered from now on is examined for a
/// store on `rt` (and its lvols are registered). Call once at start-up (`None` stops it).
pub fn enable_examine(rt: Option<&RuntimeHandle>) {
    *RT.lock().unwrap() = rt.cloned();
}

/// Waits until examines started by bdev registrations are done (SPDK's
/// bdev_wait_for_examine), at most `timeout`. False on timeout.
pub fn wait_for_examine(timeout: std::time::Duration) -> bool {
    let t0 = std::time::Instant::now();
    while EXAMINING.load(Ordering::Acquire) > 0 {
        if t0.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    true
}

/// Called by the registry for every new bdev: looks for a store on it (on a thread of its
/// own when called on a reactor, which must not wait for its own I/O).
pub(crate) fn examine_new(b: &Arc<Bdev>) {
    let Some(rt) = RT.lock().unwrap().clone() else {
        return;
    };
    if b.product_name() == PRODUCT {
        return;
    }
    let name = b.name().to_string();
    EXAMINING.fetch_add(1, Ordering::AcqRel);
    let run = move || {
        if let Err(e) = ops::examine(&rt, &name) {
            tracing::warn!(bdev = %name, "lvol store not opened: {e}");
        }
        EXAMINING.fetch_sub(1, Ordering::AcqRel);
    };
    if ballast_reactor::current_core().is_some() {
        if let Err(e) = std::thread::Builder::new()
            .name("lvs-examine".into())
            .spawn(run)
        {
            EXAMINING.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(bdev = %b.name(), "lvol store examine not started: {e}");
        }
    } else {
        run();
    }
}

/// Registers lvol `id` of `store` as a bdev.
pub(crate) fn register_lvol(store: &Arc<Store>, id: u32) -> Result<Arc<Bdev>> {
    let (uuid, alias, size) = {
        let g = store.inner.lock().unwrap();
        let l = g.st.lvol(id).map_err(crate::error::Error::Corrupt)?;
        (l.uuid, format!("{}/{}", g.st.name, l.name), l.size)
    };
    let l = store.layout;
    let mut info = BdevInfo::new(uuid.to_string(), l.block_size, size * l.bpc());
    info.uuid = uuid;
    info.aliases = vec![alias];
    info.write_cache = store.base_bdev.info().write_cache;
    info.optimal_io_boundary = u32::try_from(l.bpc()).unwrap_or(0);
    let ctl = Arc::new(LvolCtl::default());
    ctl.blocks.store(size * l.bpc(), Ordering::SeqCst);
    let b = bdev::register(
        info,
        Box::new(LvolBackend {
            store: store.clone(),
            id,
            ctl: ctl.clone(),
        }),
    )?;
    store.bdevs.lock().unwrap().insert(
        id,
        LvolHandle {
            bdev: b.clone(),
            ctl,
        },
    );
    Ok(b)
}
