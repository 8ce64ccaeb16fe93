//! ballast-csi: the Kubernetes CSI driver of ballast (issue 21), one binary with a
//! `controller` and a `node` mode, speaking CSI v1 over gRPC (tonic) on a Unix socket.
//!
//! The controller keeps no database: every volume is a logical volume (lvol) in the lvol
//! store of a ballastd node (or, replicated, a mirror over lvols on several nodes), and the
//! truth is what the nodes answer over their JSON-RPC sockets. A restarted controller sees
//! the same volumes; every call is idempotent. The node plugin attaches a published volume
//! with the kernel's NVMe/TCP initiator and mounts it.
//!
//! ```text
//!  CO sidecars (provisioner, attacher, snapshotter, resizer)     kubelet
//!        │ gRPC, CSI v1 (unix socket)                               │ gRPC (unix socket)
//!        ▼                                                          ▼
//!  ┌──────────── ballast-csi controller ───────────┐   ┌──── ballast-csi node ─────┐
//!  │ controller.rs  the Controller service          │   │ node/mod.rs  Node service │
//!  │ volume.rs      ids, names, params, topology    │   │ node/fabrics.rs           │
//!  │ replicas.rs    mirrors over lvols on N nodes   │   │   /dev/nvme-fabrics,sysfs │
//!  │ snapshot.rs    snapshots, clones               │   │ node/mount.rs  mkfs,mount │
//!  │ rsnap.rs       snapshots of replicated volumes │   └─────────────▲─────────────┘
//!  │ stack.rs       compress + crypto over a volume │                 │ NVMe/TCP
//!  │ publish.rs     export subsystem, host NQNs     │                 │
//!  │ rpc.rs/nodes.rs JSON-RPC to each ballastd      │                 │
//!  └───────┬──────────────────────────────┬────────┘                 │
//!          ▼                              ▼                          │
//!   ballastd node-a ─── replica link ─── ballastd node-b ────────────┘
//!   lvs0/csi-pvc-… (lvols, mirrors, export subsystems)
//! ```
//!
//! Volume ids are `v1:<node id>:<lvol store uuid>:<lvol uuid>` (see [`volume::VolumeId`]);
//! lvol names are derived from the CSI name (see [`volume::lvol_name`]); only lvols with the
//! driver's prefixes are ever listed, resized or deleted. `ballast-csi call` ([`client`])
//! makes any CSI call from a shell. What is not built yet: csi/README.md.

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
pub mod stack;
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
