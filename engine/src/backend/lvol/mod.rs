//! Logical volumes (SPDK's lvol store / blobstore, written anew): thin and thick volumes,
//! snapshots, clones and online resize on a store kept on any bdev.
//!
//! (Skeleton: the public API the RPC layer builds on; the implementation follows.)

use crate::error::Result;

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

/// Creates a store on `opts.bdev_name` (formatting it).
pub fn create_lvstore(_opts: &LvsOpts) -> Result<LvsInfo> {
    todo!()
}

/// Deletes a store (by UUID or name; exactly one given): refused while any of its lvols is
/// claimed; its lvol bdevs are removed and its metadata erased.
pub fn delete_lvstore(_uuid: Option<&str>, _name: Option<&str>) -> Result<()> {
    todo!()
}

/// Stores, all or the one named by UUID or name (not found: an error).
pub fn get_lvstores(_uuid: Option<&str>, _name: Option<&str>) -> Result<Vec<LvsInfo>> {
    todo!()
}

/// Renames a store (its lvols' aliases follow).
pub fn rename_lvstore(_old: &str, _new: &str) -> Result<()> {
    todo!()
}

/// Takes in clusters added to the end of the base since creation (a grown base bdev).
pub fn grow_lvstore(_uuid: Option<&str>, _name: Option<&str>) -> Result<LvsInfo> {
    todo!()
}

/// Creates an lvol of `size_bytes` (rounded up to clusters) in the store named by UUID or
/// name; thick lvols get all their clusters now.
pub fn create_lvol(
    _lvs_uuid: Option<&str>,
    _lvs_name: Option<&str>,
    _name: &str,
    _size_bytes: u64,
    _thin: bool,
    _clear_method: ClearMethod,
) -> Result<LvolInfo> {
    todo!()
}

/// Lvols, all or those of one store.
pub fn get_lvols(_lvs_uuid: Option<&str>, _lvs_name: Option<&str>) -> Result<Vec<LvolInfo>> {
    todo!()
}

/// The lvol a bdev name, UUID or `lvs/lvol` alias names, if it is one.
pub fn lvol_info(_name: &str) -> Option<LvolInfo> {
    todo!()
}

/// Deletes an lvol (a snapshot with one clone is merged into it; more clones: refused).
pub fn delete_lvol(_name: &str) -> Result<()> {
    todo!()
}

/// Snapshots `lvol` as `snapshot_name` (read-only); the lvol becomes its thin clone.
pub fn snapshot(_lvol: &str, _snapshot_name: &str) -> Result<LvolInfo> {
    todo!()
}

/// Clones a read-only lvol (a snapshot) as a thin lvol `clone_name`.
pub fn clone(_snapshot: &str, _clone_name: &str) -> Result<LvolInfo> {
    todo!()
}

/// Resizes an lvol to `size_bytes` (rounded up to clusters); exported namespaces see it.
pub fn resize(_lvol: &str, _size_bytes: u64) -> Result<()> {
    todo!()
}

/// Allocates every cluster of a clone (copying from its parents) and cuts it loose.
pub fn inflate(_lvol: &str) -> Result<()> {
    todo!()
}

/// Copies the clusters its parents provide and cuts a clone loose (stays thin elsewhere).
pub fn decouple_parent(_lvol: &str) -> Result<()> {
    todo!()
}

/// Makes an lvol read-only (for good).
pub fn set_read_only(_lvol: &str) -> Result<()> {
    todo!()
}

/// Renames an lvol within its store (its alias follows).
pub fn rename(_lvol: &str, _new_name: &str) -> Result<()> {
    todo!()
}

/// Checks the metadata of the store on `bdev` (open or not): see [`CheckReport`].
pub fn check(_bdev: &str) -> Result<CheckReport> {
    todo!()
}

/// Lets stores come back by themselves: each bdev registered from now on is examined for a
/// store (and its lvols are registered). Call once at start-up.
pub fn enable_examine(_rt: &ballast_reactor::RuntimeHandle) {}
