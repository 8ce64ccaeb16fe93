//! The CSI Node service: attaches published volumes to this machine with the kernel's
//! NVMe/TCP initiator and mounts them for pods.
//!
//! ```text
//!  NodeStageVolume(publish_context {nqn, traddr, trsvcid, ns_uuid})
//!    ├─ fabrics.rs: connected already? else write options to /dev/nvme-fabrics
//!    │              (ctrl_loss_tmo, keep_alive_tmo, reconnect_delay)
//!    ├─ fabrics.rs: the disk whose namespace UUID is ns_uuid (/sys/block/nvme*n*/uuid)
//!    └─ mount.rs:   file system volumes: blank → mkfs; mount on the staging path
//!  NodePublishVolume    bind mount staging → target (the disk itself for block volumes),
//!                       read-only when asked
//!  NodeUnpublishVolume  unmount target, remove it
//!  NodeUnstageVolume    unmount staging (refused while still published elsewhere);
//!                       delete the subsystem's controllers
//!  NodeGetVolumeStats   statvfs / disk size; condition from the controllers' state
//!  NodeExpandVolume     rescan, wait for the new size, resize2fs / xfs_growfs
//! ```
//!
//! The node id is the machine's NVMe host NQN: ControllerPublish allows exactly that host
//! on the volume's subsystem. Each call runs on a blocking thread; two calls on one volume
//! never overlap: the second is ABORTED ("operation pending", the CSI answer; kubelet
//! retries), so a call that outlived kubelet's timeout cannot run after the call that
//! undoes it. Calls on different volumes run side by side: one stuck volume (a dead target
//! under a mount) does not hold up the others.

pub mod fabrics;
pub mod mount;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::pb;
use crate::pb::node_server::Node;
use crate::pb::node_service_capability::{rpc, Rpc, Type as CapType};
use crate::pb::volume_capability::access_mode::Mode;
use crate::pb::volume_capability::AccessType;
use crate::publish::{ctx, export_nqn};
use crate::volume::{check_capability, VolumeId};
use fabrics::{Connect, Disk, Sys};
use mount::FsKind;

/// How long a namespace may take to appear after a connect, or a new size after a rescan.
const DEVICE_WAIT: Duration = Duration::from_secs(30);

/// What a node plugin is told at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOptions {
    /// NodeGetInfo's node_id and the `hostnqn` of every connect.
    pub host_nqn: String,
    /// Topology segments (at least `topology.csi.ballast.io/node`).
    pub topology: BTreeMap<String, String>,
    /// NodeGetInfo's max_volumes_per_node (0: no limit).
    pub max_volumes: i64,
    pub ctrl_loss_tmo: i32,
    pub reconnect_delay: u32,
    pub keep_alive_tmo: u32,
    /// Where /sys and /dev are (`/`).
    pub root: PathBuf,
}

pub struct NodeService {
    inner: Arc<Inner>,
}

struct Inner {
    opts: NodeOptions,
    sys: Sys,
    /// Volumes with a call running.
    busy: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl NodeService {
    pub fn new(opts: NodeOptions) -> Self {
        NodeService {
            inner: Arc::new(Inner {
                sys: Sys::new(&opts.root),
                opts,
                busy: Default::default(),
            }),
        }
    }

    /// Runs `f` on a blocking thread; ABORTED while another call on `volume_id` runs.
    async fn run<T: Send + 'static>(
        &self,
        volume_id: &str,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let inner = self.inner.clone();
        let key = volume_id.to_string();
        {
            let mut busy = inner.busy.lock().unwrap_or_else(|p| p.into_inner());
            if !key.is_empty() && !busy.insert(key.clone()) {
                return Err(Status::aborted(format!(
                    "an operation on volume {key} is in progress"
                )));
            }
        }
        tokio::task::spawn_blocking(move || {
            let r = f(&inner);
            if !key.is_empty() {
                inner
                    .busy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
            r
        })
        .await
        .map_err(|e| Status::internal(format!("node call panicked: {e}")))?
        .map_err(Status::from)
    }
}

/// How a capability wants the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    Block,
    Mount { fs: String, flags: Vec<String> },
}

fn access(cap: Option<&pb::VolumeCapability>) -> Result<(Access, bool)> {
    let c = cap.ok_or_else(|| Error::InvalidArgument("volume_capability is required".into()))?;
    check_capability(c)?;
    let reader = c
        .access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .is_some_and(|m| matches!(m, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly));
    let a = match &c.access_type {
        Some(AccessType::Block(_)) => Access::Block,
        Some(AccessType::Mount(m)) => Access::Mount {
            fs: if m.fs_type.is_empty() {
                "ext4".into()
            } else {
                m.fs_type.clone()
            },
            flags: m.mount_flags.clone(),
        },
        None => return Err(Error::InvalidArgument("access_type is required".into())),
    };
    Ok((a, reader))
}

fn required<'a>(v: &'a str, what: &str) -> Result<&'a str> {
    if v.is_empty() {
        Err(Error::InvalidArgument(format!("{what} is required")))
    } else {
        Ok(v)
    }
}

fn volume(id: &str) -> Result<VolumeId> {
    required(id, "volume_id")?;
    VolumeId::parse(id)
        .ok_or_else(|| Error::NotFound(format!("{id:?} is not a ballast-csi volume id")))
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(format!("mkdir {}", p.display()), e))
}

impl Inner {
    /// The volume's disk on this machine, if attached.
    fn disk(&self, v: &VolumeId) -> Option<Disk> {
        self.sys
            .disk_by_uuid(&v.lvol_uuid, &export_nqn(&v.lvol_uuid))
    }

    fn stage(&self, r: pb::NodeStageVolumeRequest) -> Result<()> {
        let v = volume(&r.volume_id)?;
        let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
        let (a, reader) = access(r.volume_capability.as_ref())?;
        let get = |k: &str| -> Result<String> {
            r.publish_context.get(k).cloned().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "publish_context has no {k:?}: was the volume ControllerPublished to this node?"
                ))
            })
        };
        let (nqn, traddr, trsvcid) = (get(ctx::NQN)?, get(ctx::TRADDR)?, get(ctx::TRSVCID)?);
        // publish_context is only as trusted as whoever may write VolumeAttachments: it must
        // name this volume's subsystem, an IP address and a port, nothing else.
        if nqn != export_nqn(&v.lvol_uuid) {
            return Err(Error::InvalidArgument(format!(
                "publish_context names subsystem {:?}, not volume {}'s",
                crate::volume::cap(&nqn),
                r.volume_id
            )));
        }
        let traddr = traddr
            .parse::<std::net::IpAddr>()
            .map_err(|_| {
                Error::InvalidArgument(format!(
                    "publish_context traddr {:?} is not an IP address",
                    crate::volume::cap(&traddr)
                ))
            })?
            .to_string();
        let trsvcid = trsvcid
            .parse::<u16>()
            .map_err(|_| {
                Error::InvalidArgument(format!(
                    "publish_context trsvcid {:?} is not a port",
                    crate::volume::cap(&trsvcid)
                ))
            })?
            .to_string();
        let ns_uuid = r
            .publish_context
            .get(ctx::NS_UUID)
            .cloned()
            .unwrap_or(v.lvol_uuid.clone());
        if ns_uuid != v.lvol_uuid {
            return Err(Error::InvalidArgument(format!(
                "publish_context's namespace {ns_uuid} is not volume {}",
                r.volume_id
            )));
        }
        let o = &self.opts;
        let connected = self
            .sys
            .controllers(&nqn)
            .into_iter()
            .any(|c| c.traddr == traddr && c.trsvcid == trsvcid && c.hostnqn == o.host_nqn);
        let mut made = None;
        if !connected {
            let ctrl = self.sys.connect(&Connect {
                nqn: nqn.clone(),
                traddr,
                trsvcid,
                hostnqn: o.host_nqn.clone(),
                hostid: fabrics::host_id(&o.host_nqn),
                ctrl_loss_tmo: o.ctrl_loss_tmo,
                reconnect_delay: o.reconnect_delay,
                keep_alive_tmo: o.keep_alive_tmo,
            })?;
            tracing::info!(volume = %r.volume_id, %nqn, %ctrl, "connected");
            made = Some(ctrl);
        }
        let out = self.stage_disk(&r, &v, &nqn, &staging, a, reader);
        if out.is_err() {
            // kubelet does not call NodeUnstage after a failed stage: do not leave the
            // controller this call made (it would reconnect for ctrl_loss_tmo).
            if let Some(c) = made {
                let _ = self.sys.disconnect(&c);
                tracing::info!(volume = %r.volume_id, ctrl = %c, "stage failed: disconnected");
            }
        }
        out
    }

    /// NodeStageVolume after the connect: the disk, then (mount) its file system.
    fn stage_disk(
        &self,
        r: &pb::NodeStageVolumeRequest,
        v: &VolumeId,
        nqn: &str,
        staging: &Path,
        a: Access,
        reader: bool,
    ) -> Result<()> {
        let ns_uuid = &v.lvol_uuid;
        let disk = self
            .sys
            .wait_disk(ns_uuid, nqn, DEVICE_WAIT)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "connected to {nqn}, but no disk with namespace UUID {ns_uuid} appeared in {}s",
                    DEVICE_WAIT.as_secs()
                ))
            })?;
        let Access::Mount { fs, flags } = a else {
            // Block volumes are used as the disk itself; in a reader mode the disk is made
            // read-only in the kernel (a read-only bind mount of a device node would not stop
            // a process opening it for writing).
            if reader {
                mount::set_read_only(&disk.dev)?;
            }
            return Ok(());
        };
        mkdir(staging)?;
        let dev = mount::dev_number(&disk.dev)?;
        if let Some(m) = mount::mount_at(staging)? {
            if m.dev == dev {
                return Ok(());
            }
            return Err(Error::AlreadyExists(format!(
                "{} holds another mount ({})",
                staging.display(),
                m.source
            )));
        }
        match mount::detect(&disk.dev)? {
            FsKind::Blank if reader => {
                return Err(Error::FailedPrecondition(format!(
                    "volume {} is blank and its access mode is read-only: nothing to mount \
                     (a reader never formats a volume)",
                    r.volume_id
                )))
            }
            FsKind::Blank => {
                tracing::info!(volume = %r.volume_id, disk = %disk.name, %fs, "mkfs on a blank volume");
                mount::mkfs(&disk.dev, &fs)?;
            }
            FsKind::Ext4 if fs == "ext4" => {}
            FsKind::Xfs if fs == "xfs" => {}
            FsKind::Other => {
                return Err(Error::FailedPrecondition(format!(
                "volume {} holds data that is not an ext4 or xfs file system: not formatting it",
                r.volume_id
            )))
            }
            found => {
                return Err(Error::FailedPrecondition(format!(
                    "volume {} holds {found:?}, not the {fs} its capability asks for",
                    r.volume_id
                )))
            }
        }
        mount::mount(&disk.dev, staging, &fs, &flags, reader)?;
        tracing::info!(volume = %r.volume_id, disk = %disk.name, staging = %staging.display(), "staged");
        Ok(())
    }

    fn unstage(&self, r: pb::NodeUnstageVolumeRequest) -> Result<()> {
        let v = volume(&r.volume_id)?;
        let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
        if let Some(disk) = self.disk(&v) {
            let dev = mount::dev_number(&disk.dev)?;
            let staging_c = std::fs::canonicalize(&staging).unwrap_or(staging.clone());
            let elsewhere: Vec<String> = mount::mounts()?
                .into_iter()
                .filter(|m| {
                    (m.dev == dev || m.root == format!("/{}", disk.name))
                        && m.mount_point != staging_c
                })
                .map(|m| m.mount_point.display().to_string())
                .collect();
            if !elsewhere.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "volume {} is still mounted at {}: NodeUnpublishVolume first",
                    r.volume_id,
                    elsewhere.join(", ")
                )));
            }
        }
        while mount::umount(&staging)? {}
        let nqn = export_nqn(&v.lvol_uuid);
        for c in self.sys.controllers(&nqn) {
            if c.hostnqn == self.opts.host_nqn || c.hostnqn.is_empty() {
                self.sys.disconnect(&c.name)?;
                tracing::info!(volume = %r.volume_id, ctrl = %c.name, "disconnected");
            }
        }
        Ok(())
    }

    fn publish(&self, r: pb::NodePublishVolumeRequest) -> Result<()> {
        let v = volume(&r.volume_id)?;
        let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
        let target = PathBuf::from(required(&r.target_path, "target_path")?);
        let (a, reader) = access(r.volume_capability.as_ref())?;
        let ro = r.readonly || reader;
        let not_staged = || {
            Error::FailedPrecondition(format!(
                "volume {} is not staged on this node (NodeStageVolume first)",
                r.volume_id
            ))
        };
        match a {
            Access::Mount { .. } => {
                let Some(sm) = mount::mount_at(&staging)? else {
                    return Err(not_staged());
                };
                mkdir(&target)?;
                if let Some(m) = mount::mount_at(&target)? {
                    if m.dev == sm.dev && m.read_only() == ro {
                        return Ok(());
                    }
                    return Err(Error::AlreadyExists(format!(
                        "{} holds another mount or the volume with other options",
                        target.display()
                    )));
                }
                mount::bind(&staging, &target, ro)?;
            }
            Access::Block => {
                let disk = self.disk(&v).ok_or_else(not_staged)?;
                if let Some(parent) = target.parent() {
                    mkdir(parent)?;
                }
                if let Some(m) = mount::mount_at(&target)? {
                    if m.root.ends_with(&format!("/{}", disk.name)) && m.read_only() == ro {
                        return Ok(());
                    }
                    return Err(Error::AlreadyExists(format!(
                        "{} holds another mount",
                        target.display()
                    )));
                }
                if !target.exists() {
                    std::fs::File::create(&target)
                        .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
                }
                mount::bind(&disk.dev, &target, ro)?;
            }
        }
        tracing::info!(volume = %r.volume_id, target = %target.display(), ro, "published");
        Ok(())
    }

    fn unpublish(&self, r: pb::NodeUnpublishVolumeRequest) -> Result<()> {
        volume(&r.volume_id)?;
        let target = PathBuf::from(required(&r.target_path, "target_path")?);
        while mount::umount(&target)? {}
        // Only what NodePublish makes is removed: an empty directory (mount) or an empty
        // file (block). Anything else at the path is left and named.
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&target).map_err(|e| {
                Error::FailedPrecondition(format!(
                    "{} is not a mount and not empty ({e}): left as it is",
                    target.display()
                ))
            }),
            Ok(m) if m.is_file() && m.len() == 0 => std::fs::remove_file(&target)
                .map_err(|e| Error::io(format!("removing {}", target.display()), e)),
            Ok(_) => Err(Error::FailedPrecondition(format!(
                "{} is not a mount, an empty directory or an empty file: left as it is",
                target.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("stat {}", target.display()), e)),
        }
    }

    fn condition(&self, v: &VolumeId) -> pb::VolumeCondition {
        let ctrls = self.sys.controllers(&export_nqn(&v.lvol_uuid));
        let bad: Vec<String> = ctrls
            .iter()
            .filter(|c| c.state != "live")
            .map(|c| format!("{} {}", c.name, c.state))
            .collect();
        if ctrls.is_empty() {
            pb::VolumeCondition {
                abnormal: true,
                message: "not connected to the volume's subsystem".into(),
            }
        } else if !bad.is_empty() {
            pb::VolumeCondition {
                abnormal: true,
                message: format!("controller state: {}", bad.join(", ")),
            }
        } else {
            pb::VolumeCondition {
                abnormal: false,
                message: "connected".into(),
            }
        }
    }

    fn stats(&self, r: pb::NodeGetVolumeStatsRequest) -> Result<pb::NodeGetVolumeStatsResponse> {
        let v = volume(&r.volume_id)?;
        let path = PathBuf::from(required(&r.volume_path, "volume_path")?);
        let meta = std::fs::metadata(&path).map_err(|_| {
            Error::NotFound(format!("{} does not exist on this node", path.display()))
        })?;
        if mount::mount_at(&path)?.is_none() {
            return Err(Error::NotFound(format!(
                "volume {} is not mounted at {}",
                r.volume_id,
                path.display()
            )));
        }
        use pb::volume_usage::Unit;
        let u = |unit: Unit, t: [u64; 3]| pb::VolumeUsage {
            total: t[0] as i64,
            available: t[1] as i64,
            used: t[2] as i64,
            unit: unit as i32,
        };
        let usage = if meta.is_dir() {
            let (bytes, inodes) = mount::usage(&path)?;
            vec![u(Unit::Bytes, bytes), u(Unit::Inodes, inodes)]
        } else {
            let size = self.disk(&v).map(|d| d.size_bytes).unwrap_or(0);
            vec![pb::VolumeUsage {
                total: size as i64,
                unit: Unit::Bytes as i32,
                ..Default::default()
            }]
        };
        Ok(pb::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(self.condition(&v)),
        })
    }

    fn expand(&self, r: pb::NodeExpandVolumeRequest) -> Result<pb::NodeExpandVolumeResponse> {
        let v = volume(&r.volume_id)?;
        let path = PathBuf::from(required(&r.volume_path, "volume_path")?);
        let disk = self.disk(&v).ok_or_else(|| {
            Error::NotFound(format!(
                "volume {} is not attached to this node",
                r.volume_id
            ))
        })?;
        let want = r
            .capacity_range
            .as_ref()
            .map(|c| c.required_bytes.max(0) as u64)
            .unwrap_or(0);
        let mut size = disk.size_bytes;
        if size < want {
            for c in self.sys.controllers(&export_nqn(&v.lvol_uuid)) {
                self.sys.rescan(&c.name)?;
            }
            let t0 = std::time::Instant::now();
            while size < want && t0.elapsed() < DEVICE_WAIT {
                std::thread::sleep(Duration::from_millis(100));
                size = self.disk(&v).map(|d| d.size_bytes).unwrap_or(0);
            }
            if size < want {
                return Err(Error::Internal(format!(
                    "the disk of volume {} still has {size} bytes, not {want}, after a rescan",
                    r.volume_id
                )));
            }
        }
        let block = matches!(
            r.volume_capability
                .as_ref()
                .and_then(|c| c.access_type.as_ref()),
            Some(AccessType::Block(_))
        );
        if !block
            && std::fs::metadata(&path)
                .map(|m| m.is_dir())
                .unwrap_or(false)
        {
            let m = mount::mount_at(&path)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "volume {} is not mounted at {}",
                    r.volume_id,
                    path.display()
                ))
            })?;
            mount::grow(&m.fstype, &disk.dev, &path)?;
            tracing::info!(volume = %r.volume_id, size, fs = %m.fstype, "file system grown");
        }
        Ok(pb::NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        })
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        req: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        let r = req.into_inner();
        self.run(&r.volume_id.clone(), move |i| i.stage(r)).await?;
        Ok(Response::new(pb::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        req: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        let r = req.into_inner();
        self.run(&r.volume_id.clone(), move |i| i.unstage(r))
            .await?;
        Ok(Response::new(pb::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        req: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let r = req.into_inner();
        self.run(&r.volume_id.clone(), move |i| i.publish(r))
            .await?;
        Ok(Response::new(pb::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        self.run(&r.volume_id.clone(), move |i| i.unpublish(r))
            .await?;
        Ok(Response::new(pb::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        let r = req.into_inner();
        // Not serialised with the volume's other calls: kubelet polls it, and it only reads.
        let inner = self.inner.clone();
        let a = tokio::task::spawn_blocking(move || inner.stats(r))
            .await
            .map_err(|e| Status::internal(format!("node call panicked: {e}")))??;
        Ok(Response::new(a))
    }

    async fn node_expand_volume(
        &self,
        req: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            self.run(&r.volume_id.clone(), move |i| i.expand(r)).await?,
        ))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        let cap = |t: rpc::Type| pb::NodeServiceCapability {
            r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })),
        };
        Ok(Response::new(pb::NodeGetCapabilitiesResponse {
            capabilities: vec![
                cap(rpc::Type::StageUnstageVolume),
                cap(rpc::Type::GetVolumeStats),
                cap(rpc::Type::ExpandVolume),
                cap(rpc::Type::VolumeCondition),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        let o = &self.inner.opts;
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: o.host_nqn.clone(),
            max_volumes_per_node: o.max_volumes,
            accessible_topology: Some(pb::Topology {
                segments: o.topology.clone().into_iter().collect(),
            }),
        }))
    }
}
