//! ballast-csi: the Kubernetes CSI driver of ballast (issue 21), one binary with a
//! `controller` and a `node` mode, speaking CSI v1 over gRPC (tonic) on a Unix socket.
//!
//! The controller keeps no database: every volume is a logical volume (lvol) in the lvol
//! store of one ballastd node, and the truth is what the nodes answer over their JSON-RPC
//! socket. A restarted controller sees the same volumes; every call is idempotent.
//!
//! ```text
//!  CO sidecars (external-provisioner, ...)
//!        │ gRPC, CSI v1 (unix:///csi/csi.sock)
//!        ▼
//!  ┌──────────────── ballast-csi controller ─────────────────┐
//!  │ identity.rs   GetPluginInfo / GetPluginCapabilities /   │
//!  │               Probe (spdk_get_version on the nodes)     │
//!  │ controller.rs CreateVolume ─► volume.rs: lvol name from │
//!  │               the CSI name, size rounded to clusters,   │
//!  │               placement by topology ─► bdev_lvol_create │
//!  │               Delete/List/Validate/GetCapacity/Expand   │
//!  │ rpc.rs        JSON-RPC 2.0 client, one Unix connection  │
//!  │               per call, a timeout on each               │
//!  └───────┬──────────────────────────────┬──────────────────┘
//!          │ JSON-RPC (config.rs: nodes)  │
//!          ▼                              ▼
//!   ballastd node-a                ballastd node-b
//!   lvs0/csi-pvc-…  (thin lvols)   lvs0/csi-pvc-…
//! ```
//!
//! Volume ids are `v1:<node id>:<lvol store uuid>:<lvol uuid>` (see [`volume::VolumeId`]);
//! lvol names are `csi-<CSI name>` or, for names that are long or have other characters,
//! `csix-<sha256 prefix>` (see [`volume::lvol_name`]). Only lvols with these prefixes are
//! ever listed, resized or deleted.
//!
//! Snapshots and clones: [`snapshot`] (lvol snapshots named `csisnap-…`); of replicated
//! volumes, consistent across the replicas: [`rsnap`].
//!
//! Not built yet (see csi/README.md): the Node service, ControllerPublish/Unpublish,
//! snapshots, clones, encryption, compression, deployment manifests. Replicated volumes:
//! see [`replicas`].

pub mod client;
pub mod config;
pub mod controller;
pub mod error;
pub mod identity;
pub mod node;
pub mod nodes;
pub mod publish;
pub mod replicas;
pub mod rpc;
pub mod rsnap;
pub mod server;
pub mod snapshot;
pub mod volume;

pub use error::{Error, Result};

/// The generated CSI v1 messages and tonic glue (proto/csi.proto).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("csi.v1");
}

/// The plugin name GetPluginInfo reports (and the CSIDriver object's name in a cluster).
pub const PLUGIN_NAME: &str = "csi.ballast.io";

/// The plugin version GetPluginInfo reports: this crate's.
pub const PLUGIN_VERSION: &str = env!("CARGO_PKG_VERSION");
