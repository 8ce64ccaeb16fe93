//! Logical volumes: lvol stores and the lvols in them (rpc.py's `bdev_lvol_*`), and ballast's
//! metadata checker.

use clap::{Args, Subcommand};

use crate::params::{Call, Params};

#[derive(Debug, Subcommand)]
pub enum Lvol {
    /// Create an lvol store on a bdev (formatting it); prints the store's UUID.
    #[command(
        name = "bdev_lvol_create_lvstore",
        after_help = "Example: ballast-rpc bdev_lvol_create_lvstore Malloc0 lvs0 -c 1048576\n\n\
                      -m/--md-pages-per-cluster-ratio and -s/--md-page-size tune SPDK \
                      blobstore's metadata layout: sent, and ignored by ballast."
    )]
    CreateLvstore {
        /// The bdev to keep the store on.
        bdev_name: String,
        /// Name of the store.
        lvs_name: String,
        /// Cluster size in bytes, a power of two (default 4 MiB).
        #[arg(short = 'c', long)]
        cluster_sz: Option<u64>,
        /// How the data area is cleared at creation.
        #[arg(long, value_parser = ["none", "unmap", "write_zeroes"])]
        clear_method: Option<String>,
        /// SPDK's reserved metadata pages per cluster (ignored by ballast).
        #[arg(short = 'm', long)]
        md_pages_per_cluster_ratio: Option<u32>,
        /// SPDK's metadata page size in bytes (ignored by ballast).
        #[arg(short = 's', long)]
        md_page_size: Option<u32>,
    },
    /// Rename an lvol store (its lvols' aliases follow).
    #[command(name = "bdev_lvol_rename_lvstore")]
    RenameLvstore {
        /// The store's name.
        old_name: String,
        /// Its new name.
        new_name: String,
    },
    /// Take in the space a grown base bdev added to its lvol store.
    #[command(name = "bdev_lvol_grow_lvstore")]
    GrowLvstore {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Create an lvol in a store (-u or -l); prints its bdev name (its UUID). Its alias is
    /// LVS/LVOL_NAME.
    #[command(
        name = "bdev_lvol_create",
        after_help = "Example: ballast-rpc bdev_lvol_create -l lvs0 -t vol0 1024\n\n\
                      The size is rounded up to whole clusters; a thin lvol takes clusters \
                      as they are first written."
    )]
    Create {
        #[command(flatten)]
        store: StoreArg,
        /// Thin provisioning.
        #[arg(short = 't', long)]
        thin_provision: bool,
        /// How freed clusters are cleared.
        #[arg(short = 'c', long, value_parser = ["default", "none", "unmap", "write_zeroes"])]
        clear_method: Option<String>,
        /// Name of the lvol.
        lvol_name: String,
        /// Size in MiB.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        size_in_mib: u64,
    },
    /// Snapshot an lvol: the snapshot is read-only and the lvol becomes its thin clone;
    /// prints the snapshot's bdev name.
    #[command(name = "bdev_lvol_snapshot")]
    Snapshot {
        /// UUID or alias of the lvol.
        lvol_name: String,
        /// Name of the snapshot.
        snapshot_name: String,
    },
    /// Clone a snapshot (or another read-only lvol) as a thin lvol; prints its bdev name.
    #[command(name = "bdev_lvol_clone")]
    Clone {
        /// UUID or alias of the snapshot.
        snapshot_name: String,
        /// Name of the clone.
        clone_name: String,
    },
    /// Rename an lvol within its store.
    #[command(name = "bdev_lvol_rename")]
    Rename {
        /// UUID or alias of the lvol.
        old_name: String,
        /// Its new name.
        new_name: String,
    },
    /// Allocate every cluster of a clone, copying from its parents, and cut it loose.
    #[command(name = "bdev_lvol_inflate")]
    Inflate {
        /// UUID or alias of the lvol.
        name: String,
    },
    /// Copy what a clone's parents provide and cut it loose (it stays thin elsewhere).
    #[command(name = "bdev_lvol_decouple_parent")]
    DecoupleParent {
        /// UUID or alias of the lvol.
        name: String,
    },
    /// Resize an lvol (rounded up to whole clusters); an exported namespace takes the size.
    #[command(name = "bdev_lvol_resize")]
    Resize {
        /// UUID or alias of the lvol.
        name: String,
        /// New size in MiB.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        size_in_mib: u64,
    },
    /// Make an lvol read-only, for good.
    #[command(name = "bdev_lvol_set_read_only")]
    SetReadOnly {
        /// UUID or alias of the lvol.
        name: String,
    },
    /// Delete an lvol (a snapshot with one clone is merged into it).
    #[command(name = "bdev_lvol_delete")]
    Delete {
        /// UUID or alias of the lvol.
        name: String,
    },
    /// Delete an lvol store (-u or -l) with its lvols; refused while one is in use.
    #[command(name = "bdev_lvol_delete_lvstore")]
    DeleteLvstore {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Show lvol stores (all, or the one named).
    #[command(name = "bdev_lvol_get_lvstores")]
    GetLvstores {
        /// UUID of the store.
        #[arg(short = 'u', long, conflicts_with = "lvs_name")]
        uuid: Option<String>,
        /// Name of the store.
        #[arg(short = 'l', long)]
        lvs_name: Option<String>,
    },
    /// Show lvols (all, or those of one store).
    #[command(name = "bdev_lvol_get_lvols")]
    GetLvols {
        /// UUID of the store.
        #[arg(short = 'u', long, conflicts_with = "lvs_name")]
        lvs_uuid: Option<String>,
        /// Name of the store.
        #[arg(short = 'l', long)]
        lvs_name: Option<String>,
    },
    /// Check the metadata of the lvol store on a bdev (ballast's; open or not): prints what
    /// the checker found, with `errors` empty when the store is consistent.
    #[command(name = "bdev_lvol_check_lvstore")]
    CheckLvstore {
        /// The bdev the store is kept on.
        bdev_name: String,
    },
}

/// The store a method acts on: -u or -l, one of them.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct StoreArg {
    /// UUID of the store.
    #[arg(short = 'u', long)]
    uuid: Option<String>,
    /// Name of the store.
    #[arg(short = 'l', long)]
    lvs_name: Option<String>,
}

/// The `uuid`/`lvs_name` pair that names a store (the UUID's key is `uuid_key`).
fn store(uuid_key: &str, uuid: &Option<String>, lvs_name: &Option<String>) -> Params {
    Params::new()
        .opt(uuid_key, uuid.as_deref())
        .opt("lvs_name", lvs_name.as_deref())
}

impl StoreArg {
    fn params(&self) -> Params {
        store("uuid", &self.uuid, &self.lvs_name)
    }
}

/// `{"name": name}`, the params of the methods acting on one lvol.
fn named(name: &str, method: &'static str) -> Call {
    Params::new().set("name", name).call(method)
}

impl Lvol {
    pub fn call(&self) -> Call {
        use Lvol as L;
        match self {
            L::CreateLvstore {
                bdev_name,
                lvs_name,
                cluster_sz,
                clear_method,
                md_pages_per_cluster_ratio,
                md_page_size,
            } => Params::new()
                .set("bdev_name", bdev_name.as_str())
                .set("lvs_name", lvs_name.as_str())
                .opt("cluster_sz", *cluster_sz)
                .opt("clear_method", clear_method.as_deref())
                .opt(
                    "num_md_pages_per_cluster_ratio",
                    *md_pages_per_cluster_ratio,
                )
                .opt("md_page_size", *md_page_size)
                .call("bdev_lvol_create_lvstore"),
            L::RenameLvstore { old_name, new_name } => Params::new()
                .set("old_name", old_name.as_str())
                .set("new_name", new_name.as_str())
                .call("bdev_lvol_rename_lvstore"),
            L::GrowLvstore { store } => store.params().call("bdev_lvol_grow_lvstore"),
            L::Create {
                store,
                thin_provision,
                clear_method,
                lvol_name,
                size_in_mib,
            } => store
                .params()
                .set("lvol_name", lvol_name.as_str())
                .set("size_in_mib", *size_in_mib)
                .flag("thin_provision", *thin_provision)
                .opt("clear_method", clear_method.as_deref())
                .call("bdev_lvol_create"),
            L::Snapshot {
                lvol_name,
                snapshot_name,
            } => Params::new()
                .set("lvol_name", lvol_name.as_str())
                .set("snapshot_name", snapshot_name.as_str())
                .call("bdev_lvol_snapshot"),
            L::Clone {
                snapshot_name,
                clone_name,
            } => Params::new()
                .set("snapshot_name", snapshot_name.as_str())
                .set("clone_name", clone_name.as_str())
                .call("bdev_lvol_clone"),
            L::Rename { old_name, new_name } => Params::new()
                .set("old_name", old_name.as_str())
                .set("new_name", new_name.as_str())
                .call("bdev_lvol_rename"),
            L::Inflate { name } => named(name, "bdev_lvol_inflate"),
            L::DecoupleParent { name } => named(name, "bdev_lvol_decouple_parent"),
            L::Resize { name, size_in_mib } => Params::new()
                .set("name", name.as_str())
                .set("size_in_mib", *size_in_mib)
                .call("bdev_lvol_resize"),
            L::SetReadOnly { name } => named(name, "bdev_lvol_set_read_only"),
            L::Delete { name } => named(name, "bdev_lvol_delete"),
            L::DeleteLvstore { store } => store.params().call("bdev_lvol_delete_lvstore"),
            L::GetLvstores { uuid, lvs_name } => {
                store("uuid", uuid, lvs_name).call("bdev_lvol_get_lvstores")
            }
            L::GetLvols { lvs_uuid, lvs_name } => {
                store("lvs_uuid", lvs_uuid, lvs_name).call("bdev_lvol_get_lvols")
            }
            L::CheckLvstore { bdev_name } => Params::new()
                .set("bdev_name", bdev_name.as_str())
                .call("bdev_lvol_check_lvstore"),
        }
    }
}

#[cfg(test)]
pub mod tests {
    use crate::methods::tests::Case;
    use serde_json::json;

    pub fn cases() -> Vec<Case> {
        let u = "0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01";
        vec![
            (
                "bdev_lvol_create_lvstore Malloc0 lvs0",
                "bdev_lvol_create_lvstore",
                Some(json!({"bdev_name": "Malloc0", "lvs_name": "lvs0"})),
            ),
            (
                "bdev_lvol_create_lvstore Malloc0 lvs0 -c 1048576 --clear-method none -m 100 \
                 -s 4096",
                "bdev_lvol_create_lvstore",
                Some(
                    json!({"bdev_name": "Malloc0", "lvs_name": "lvs0", "cluster_sz": 1048576,
                            "clear_method": "none", "num_md_pages_per_cluster_ratio": 100,
                            "md_page_size": 4096}),
                ),
            ),
            (
                "bdev_lvol_rename_lvstore lvs0 lvs1",
                "bdev_lvol_rename_lvstore",
                Some(json!({"old_name": "lvs0", "new_name": "lvs1"})),
            ),
            (
                "bdev_lvol_grow_lvstore -l lvs0",
                "bdev_lvol_grow_lvstore",
                Some(json!({"lvs_name": "lvs0"})),
            ),
            (
                "bdev_lvol_create -l lvs0 vol0 1024",
                "bdev_lvol_create",
                Some(json!({"lvol_name": "vol0", "size_in_mib": 1024, "lvs_name": "lvs0"})),
            ),
            (
                "bdev_lvol_create vol1 8 -u 0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01 -t \
                 -c write_zeroes",
                "bdev_lvol_create",
                Some(json!({"lvol_name": "vol1", "size_in_mib": 8, "uuid": u,
                            "thin_provision": true, "clear_method": "write_zeroes"})),
            ),
            (
                "bdev_lvol_snapshot lvs0/vol0 snap0",
                "bdev_lvol_snapshot",
                Some(json!({"lvol_name": "lvs0/vol0", "snapshot_name": "snap0"})),
            ),
            (
                "bdev_lvol_clone lvs0/snap0 clone0",
                "bdev_lvol_clone",
                Some(json!({"snapshot_name": "lvs0/snap0", "clone_name": "clone0"})),
            ),
            (
                "bdev_lvol_rename lvs0/vol0 vol9",
                "bdev_lvol_rename",
                Some(json!({"old_name": "lvs0/vol0", "new_name": "vol9"})),
            ),
            (
                "bdev_lvol_inflate lvs0/clone0",
                "bdev_lvol_inflate",
                Some(json!({"name": "lvs0/clone0"})),
            ),
            (
                "bdev_lvol_decouple_parent lvs0/clone0",
                "bdev_lvol_decouple_parent",
                Some(json!({"name": "lvs0/clone0"})),
            ),
            (
                "bdev_lvol_resize lvs0/vol0 2048",
                "bdev_lvol_resize",
                Some(json!({"name": "lvs0/vol0", "size_in_mib": 2048})),
            ),
            (
                "bdev_lvol_set_read_only lvs0/vol0",
                "bdev_lvol_set_read_only",
                Some(json!({"name": "lvs0/vol0"})),
            ),
            (
                "bdev_lvol_delete 0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01",
                "bdev_lvol_delete",
                Some(json!({"name": u})),
            ),
            (
                "bdev_lvol_delete_lvstore -u 0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01",
                "bdev_lvol_delete_lvstore",
                Some(json!({"uuid": u})),
            ),
            (
                "bdev_lvol_delete_lvstore --lvs-name lvs0",
                "bdev_lvol_delete_lvstore",
                Some(json!({"lvs_name": "lvs0"})),
            ),
            ("bdev_lvol_get_lvstores", "bdev_lvol_get_lvstores", None),
            (
                "bdev_lvol_get_lvstores -l lvs0",
                "bdev_lvol_get_lvstores",
                Some(json!({"lvs_name": "lvs0"})),
            ),
            ("bdev_lvol_get_lvols", "bdev_lvol_get_lvols", None),
            (
                "bdev_lvol_get_lvols --lvs-uuid 0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01",
                "bdev_lvol_get_lvols",
                Some(json!({"lvs_uuid": u})),
            ),
            (
                "bdev_lvol_check_lvstore Malloc0",
                "bdev_lvol_check_lvstore",
                Some(json!({"bdev_name": "Malloc0"})),
            ),
        ]
    }

    pub const MALFORMED: &[&str] = &[
        "bdev_lvol_create_lvstore Malloc0",
        "bdev_lvol_create_lvstore Malloc0 lvs0 --clear-method shred",
        "bdev_lvol_create_lvstore Malloc0 lvs0 -c 4M",
        "bdev_lvol_create vol0 1024",
        "bdev_lvol_create -l lvs0 -u u vol0 1024",
        "bdev_lvol_create -l lvs0 vol0 0",
        "bdev_lvol_create -l lvs0 vol0 1.5",
        "bdev_lvol_create -l lvs0 vol0",
        "bdev_lvol_create -l lvs0 vol0 8 -c shred",
        "bdev_lvol_resize lvs0/vol0 0",
        "bdev_lvol_resize lvs0/vol0",
        "bdev_lvol_snapshot lvs0/vol0",
        "bdev_lvol_clone lvs0/snap0",
        "bdev_lvol_delete",
        "bdev_lvol_delete_lvstore",
        "bdev_lvol_delete_lvstore -u u -l lvs0",
        "bdev_lvol_grow_lvstore",
        "bdev_lvol_get_lvstores -u u -l lvs0",
        "bdev_lvol_get_lvols -u u -l lvs0",
        "bdev_lvol_check_lvstore",
    ];
}
