//! The CSI Controller service, first slice: CreateVolume, DeleteVolume,
//! ValidateVolumeCapabilities, ListVolumes, GetCapacity, ControllerGetCapabilities and
//! ControllerExpandVolume, ControllerGetVolume, over the nodes' lvol stores (replicated
//! volumes: replicas.rs).
//!
//! Every call asks the nodes; nothing is cached. Mutating calls (create, delete, expand)
//! run one at a time under one lock, so two CreateVolume calls with the same name cannot
//! both miss the lvol and make two (the CO may send them concurrently after a restart).
//! CreateVolume looks for the name on every node before it places a new volume, and fails
//! with UNAVAILABLE if a node cannot be asked: making the volume elsewhere could duplicate
//! one that node holds.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::nodes::{Lvol, NodeHandle, Nodes, Store};
use crate::pb;
use crate::pb::controller_server::Controller;
use crate::pb::controller_service_capability::{rpc, Rpc, Type as CapType};
use crate::pb::volume_capability::AccessType;
use crate::publish;
use crate::replicas::{self, NodeView, Role};
use crate::snapshot;
use crate::stack::{self, NodeState, Want};
use crate::volume::{
    check_capabilities, is_managed, lvol_name, preference, reach, serves, size_fits, volume_size,
    CapError, Params, VolumeId,
};

pub struct ControllerService {
    nodes: Arc<Nodes>,
    mutate: Mutex<()>,
}

/// What a volume id names.
enum Lookup<'a> {
    Found(&'a NodeHandle, Lvol),
    /// No such volume of ours (the reason, for logs and NOT_FOUND messages).
    Missing(String),
    /// A well-formed id on a node the configuration does not have.
    UnknownNode(String),
}

impl ControllerService {
    pub fn new(nodes: Arc<Nodes>) -> Self {
        ControllerService {
            nodes,
            mutate: Mutex::new(()),
        }
    }

    async fn lookup(&self, volume_id: &str) -> Result<Lookup<'_>> {
        let Some(id) = VolumeId::parse(volume_id) else {
            return Ok(Lookup::Missing(format!(
                "volume id {volume_id:?} is not a ballast-csi volume id"
            )));
        };
        let Some(n) = self.nodes.get(&id.node) else {
            return Ok(Lookup::UnknownNode(id.node));
        };
        Ok(match n.lvol(&id.lvol_uuid).await? {
            Some(l) if l.lvs_uuid == id.lvs_uuid && is_managed(&l.name) => Lookup::Found(n, l),
            _ => Lookup::Missing(format!("volume {volume_id} does not exist")),
        })
    }

    /// The volume `volume_id` names, or NOT_FOUND.
    async fn found(&self, volume_id: &str) -> Result<(&NodeHandle, Lvol)> {
        match self.lookup(volume_id).await? {
            Lookup::Found(n, l) => Ok((n, l)),
            Lookup::Missing(why) => Err(Error::NotFound(why)),
            Lookup::UnknownNode(node) => Err(Error::NotFound(format!(
                "no node {node} in the configuration"
            ))),
        }
    }

    /// The volume of lvol name `name` on whichever node has it in its store: its plain lvol
    /// or, for a replicated volume, its primary's (replicas.rs).
    async fn find_by_name(&self, name: &str) -> Result<Option<(&NodeHandle, Store, Lvol)>> {
        let names = [name.to_string(), replicas::role_name(name, Role::Primary)];
        for n in self.nodes.iter() {
            let Some(store) = n.store_if_any().await? else {
                continue;
            };
            for name in &names {
                let alias = format!("{}/{name}", n.cfg.lvs);
                if let Some(l) = n.lvol(&alias).await? {
                    if l.lvs_uuid == store.uuid {
                        return Ok(Some((n, store, l)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Chooses the node for a new volume: within the requisite topologies (any node if
    /// none), the first preferred topology that has a node with room, then the node with
    /// the most free space. A thick volume needs its whole size free; a thin one does not.
    async fn place(
        &self,
        topo: Option<&pb::TopologyRequirement>,
        range: Option<&pb::CapacityRange>,
        thin: bool,
    ) -> Result<(&NodeHandle, Store, u64)> {
        let (requisite, preferred) =
            topo.map_or((&[][..], &[][..]), |t| (&t.requisite[..], &t.preferred[..]));
        // (rank: preferred-topology index, then most free first; node; store; size)
        type Candidate<'a> = ((usize, std::cmp::Reverse<u64>), &'a NodeHandle, Store, u64);
        let mut best: Option<Candidate<'_>> = None;
        let mut why = Vec::new();
        for n in self.nodes.iter() {
            if !requisite.is_empty() && !requisite.iter().any(|t| serves(&n.cfg.topology, t)) {
                continue;
            }
            let store = match n.store().await {
                Ok(s) => s,
                Err(e) => {
                    why.push(e.to_string());
                    continue;
                }
            };
            let size = volume_size(range, store.cluster_size)?;
            if !thin && size > store.free_bytes() {
                why.push(format!(
                    "node {}: {} bytes free, {size} needed",
                    n.id(),
                    store.free_bytes()
                ));
                continue;
            }
            let pref = preference(&n.cfg.topology, preferred);
            let rank = (pref, std::cmp::Reverse(store.free_bytes()));
            if best.as_ref().is_none_or(|b| rank < b.0) {
                best = Some((rank, n, store, size));
            }
        }
        match best {
            Some((_, n, s, size)) => Ok((n, s, size)),
            None if why.is_empty() => Err(Error::ResourceExhausted(
                "no configured node lies in the requisite topology".into(),
            )),
            None => Err(Error::ResourceExhausted(format!(
                "no node can take the volume: {}",
                why.join("; ")
            ))),
        }
    }
}

/// The CSI volume of lvol `l` in store `lvs_uuid` on node `n`.
fn volume(n: &NodeHandle, lvs_uuid: &str, l: &Lvol) -> pb::Volume {
    let id = VolumeId {
        node: n.cfg.id.clone(),
        lvs_uuid: lvs_uuid.to_string(),
        lvol_uuid: l.uuid.clone(),
    };
    pb::Volume {
        capacity_bytes: replicas::capacity(l) as i64,
        volume_id: id.to_string(),
        volume_context: HashMap::new(),
        content_source: None,
        accessible_topology: reach(&n.cfg.topology),
    }
}

/// `v` with `replicas` in its volume context when it is replicated.
fn with_replicas(mut v: pb::Volume, count: u32) -> pb::Volume {
    if count > 1 {
        v.volume_context
            .insert("replicas".into(), count.to_string());
    }
    v
}

/// Whether a CreateVolume error certainly left no volume behind (placement refused it), so
/// its stack intents can go.
fn nothing_made(e: &Error) -> bool {
    matches!(
        e,
        Error::ResourceExhausted(_) | Error::OutOfRange(_) | Error::InvalidArgument(_)
    )
}

fn invalid(e: CapError) -> Error {
    e.into()
}

impl ControllerService {
    /// New volume `l` of `n` (`count` replicas) as CreateVolume answers it: with the stack
    /// `want` asks for built (stack.rs) and its capacity, the top's, checked against `range`
    /// (a compressed volume's is known only once made: outside the range, everything is
    /// deleted again and the answer is OUT_OF_RANGE).
    async fn finish(
        &self,
        n: &NodeHandle,
        store: &Store,
        l: &Lvol,
        count: u32,
        want: Option<&Want>,
        range: Option<&pb::CapacityRange>,
    ) -> Result<pb::Volume> {
        let mut v = with_replicas(volume(n, &store.uuid, l), count);
        let Some(w) = want else { return Ok(v) };
        stack::ensure(&self.nodes, n, l, w).await?;
        NodeState::of(n).await?.describe(l, &mut v);
        let capacity = v.capacity_bytes as u64;
        if size_fits(capacity, range) {
            return Ok(v);
        }
        stack::teardown(n, l).await?;
        if replicas::is_replicated(&l.name) {
            replicas::delete(&self.nodes, n, l).await?;
        } else {
            snapshot::delete_volume_lvol(n, l).await?;
        }
        stack::forget(n, l).await?;
        Err(Error::OutOfRange(format!(
            "a compressed volume over {} bytes holds {capacity} bytes, outside the capacity \
             range (the compress stage keeps its map and spare room on the volume's lvol): \
             widen the range",
            l.size
        )))
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        req: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(Error::InvalidArgument("name is required".into()).into());
        }
        check_capabilities(&r.volume_capabilities).map_err(invalid)?;
        let params = Params::parse(&r.parameters)?;
        let want = Want::new(&params, &r.secrets)?;
        let source = snapshot::Source::from_request(r.volume_content_source.as_ref())?;
        if !r.mutable_parameters.is_empty() {
            return Err(
                Error::InvalidArgument("mutable_parameters are not supported".into()).into(),
            );
        }
        // A bad range is the caller's error whatever the store's cluster size.
        volume_size(r.capacity_range.as_ref(), 1)?;
        let lname = lvol_name(&r.name);
        let range = r.capacity_range.as_ref();
        let requisite = r
            .accessibility_requirements
            .as_ref()
            .map_or(&[][..], |t| &t.requisite[..]);
        let _g = self.mutate.lock().await;
        if let Some(src) = &source {
            stack::check_source(&self.nodes, src, want.as_ref()).await?;
        }

        if let Some((n, store, l)) = self.find_by_name(&lname).await? {
            let have = stack::record(n, &l).await?;
            if let Some(c) = stack::conflict(have.as_ref(), &params, want.as_ref()) {
                return Err(Error::AlreadyExists(format!(
                    "volume {:?} exists with {c} (lvol {}/{})",
                    r.name, n.cfg.lvs, l.name
                ))
                .into());
            }
            if let Some(w) = &want {
                // Completes a stack a crash cut short.
                stack::ensure(&self.nodes, n, &l, w).await?;
            }
            let count = replicas::replica_count(&self.nodes, n, &l).await?;
            let mut v = with_replicas(volume(n, &store.uuid, &l), count);
            NodeState::of(n).await?.describe(&l, &mut v);
            let capacity = v.capacity_bytes as u64;
            let conflict = if !size_fits(capacity, range) {
                Some(format!(
                    "{capacity} bytes, outside the capacity range asked"
                ))
            } else if count != params.replicas {
                Some(format!("replicas={count}"))
            } else if l.thin != params.thin {
                Some(format!("thin={}", l.thin))
            } else if !requisite.is_empty() && !requisite.iter().any(|t| serves(&n.cfg.topology, t))
            {
                Some(format!(
                    "on node {}, outside the requisite topology",
                    n.id()
                ))
            } else {
                snapshot::source_conflict(n, &store, &l, source.as_ref()).await?
            };
            if let Some(c) = conflict {
                return Err(Error::AlreadyExists(format!(
                    "volume {:?} exists with {c} (lvol {}/{})",
                    r.name, n.cfg.lvs, l.name
                ))
                .into());
            }
            tracing::info!(name = %r.name, node = n.id(), lvol = %l.uuid, "CreateVolume: exists");
            v.content_source = r.volume_content_source;
            return Ok(Response::new(pb::CreateVolumeResponse { volume: Some(v) }));
        }

        if let Some(w) = &want {
            stack::prepare(&self.nodes, &lname, &w.spec).await?;
        }
        let base_range = match &want {
            Some(w) => stack::base_range(range, &w.spec),
            None => range.cloned(),
        };
        if params.replicas > 1 {
            if source.is_some() {
                return Err(Error::InvalidArgument(
                    "a replicated volume from a snapshot or another volume is not built yet".into(),
                )
                .into());
            }
            let placed = replicas::create(
                &self.nodes,
                &lname,
                params.replicas,
                r.accessibility_requirements.as_ref(),
                base_range.as_ref(),
                params.thin,
            )
            .await;
            let (n, store, l) = match placed {
                Ok(x) => x,
                Err(e) => {
                    if want.is_some() && nothing_made(&e) {
                        stack::abandon(&self.nodes, &lname).await;
                    }
                    return Err(e.into());
                }
            };
            tracing::info!(name = %r.name, node = n.id(), lvol = %l.uuid, replicas = params.replicas, "CreateVolume: created");
            let v = self
                .finish(n, &store, &l, params.replicas, want.as_ref(), range)
                .await?;
            return Ok(Response::new(pb::CreateVolumeResponse { volume: Some(v) }));
        }

        if let Some(src) = &source {
            let (n, store, l) =
                snapshot::clone_into(&self.nodes, src, &lname, range, requisite, params.thin)
                    .await?;
            let mut v = volume(n, &store.uuid, &l);
            v.content_source = r.volume_content_source;
            return Ok(Response::new(pb::CreateVolumeResponse { volume: Some(v) }));
        }
        let placed = self
            .place(
                r.accessibility_requirements.as_ref(),
                base_range.as_ref(),
                params.thin,
            )
            .await;
        let (n, store, size) = match placed {
            Ok(x) => x,
            Err(e) => {
                if want.is_some() && nothing_made(&e) {
                    stack::abandon(&self.nodes, &lname).await;
                }
                return Err(e.into());
            }
        };
        let uuid = n.create_lvol(&lname, size, params.thin).await?;
        let l = n.lvol(&uuid).await?.ok_or_else(|| Error::Protocol {
            node: n.id().into(),
            method: "bdev_get_bdevs".into(),
            detail: format!("lvol {uuid} missing right after bdev_lvol_create"),
        })?;
        tracing::info!(name = %r.name, node = n.id(), lvol = %uuid, size, thin = params.thin, "CreateVolume: created");
        let v = self.finish(n, &store, &l, 1, want.as_ref(), range).await?;
        Ok(Response::new(pb::CreateVolumeResponse { volume: Some(v) }))
    }

    async fn delete_volume(
        &self,
        req: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        let id = req.into_inner().volume_id;
        if id.is_empty() {
            return Err(Error::InvalidArgument("volume_id is required".into()).into());
        }
        let _g = self.mutate.lock().await;
        match self.lookup(&id).await? {
            Lookup::Missing(why) => {
                tracing::info!(volume = %id, "DeleteVolume: nothing to delete ({why})")
            }
            Lookup::UnknownNode(node) => {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id} is on node {node}, which is not in the configuration"
                ))
                .into())
            }
            Lookup::Found(n, l) if replicas::is_replicated(&l.name) => {
                // Published → FAILED_PRECONDITION; a host-less leftover of a cut-short
                // publish is removed (it holds the volume's bdev open).
                publish::remove_unused_export(n, &l.uuid).await?;
                stack::teardown(n, &l).await?;
                replicas::delete(&self.nodes, n, &l).await?;
                stack::forget(n, &l).await?;
            }
            Lookup::Found(n, l) => {
                publish::remove_unused_export(n, &l.uuid).await?;
                stack::teardown(n, &l).await?;
                let deleted = snapshot::delete_volume_lvol(n, &l).await?;
                stack::forget(n, &l).await?;
                tracing::info!(volume = %id, node = n.id(), deleted, "DeleteVolume");
            }
        }
        Ok(Response::new(pb::DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<pb::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<pb::ValidateVolumeCapabilitiesResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Error::InvalidArgument("volume_id is required".into()).into());
        }
        let caps = check_capabilities(&r.volume_capabilities);
        if let Err(CapError::Malformed(m)) = caps {
            return Err(Error::InvalidArgument(m).into());
        }
        let (n, l) = match self.lookup(&r.volume_id).await? {
            Lookup::Found(n, l) => (n, l),
            Lookup::Missing(why) => return Err(Error::NotFound(why).into()),
            Lookup::UnknownNode(node) => {
                return Err(Error::NotFound(format!("no node {node} in the configuration")).into())
            }
        };
        let refusal = match (caps, Params::parse(&r.parameters)) {
            (Err(CapError::Unsupported(m)), _) => Some(m),
            (_, Err(e)) => Some(e.to_string()),
            (_, Ok(p)) if p.thin != l.thin => Some(format!("the volume has thin={}", l.thin)),
            (_, Ok(p)) => match replicas::replica_count(&self.nodes, n, &l).await? {
                c if c != p.replicas => Some(format!("the volume has replicas={c}")),
                _ => stack::Spec::params_conflict(stack::record(n, &l).await?.as_ref(), &p)
                    .map(|c| format!("the volume has {c}")),
            },
        };
        let out = match refusal {
            Some(message) => pb::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            },
            None => pb::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(pb::validate_volume_capabilities_response::Confirmed {
                    volume_context: r.volume_context,
                    volume_capabilities: r.volume_capabilities,
                    parameters: r.parameters,
                }),
                message: String::new(),
            },
        };
        Ok(Response::new(out))
    }

    /// Volumes in volume-id order; `next_token` is the id of the last one returned, and a
    /// page starts after it, so deleting or adding volumes between pages neither repeats nor
    /// skips the others. A token that is not a volume id is ABORTED.
    async fn list_volumes(
        &self,
        req: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let r = req.into_inner();
        if r.max_entries < 0 {
            return Err(Error::InvalidArgument("max_entries must not be negative".into()).into());
        }
        if !r.starting_token.is_empty() && VolumeId::parse(&r.starting_token).is_none() {
            return Err(Error::Aborted(format!(
                "starting_token {:?} was not handed out by ballast-csi",
                r.starting_token.chars().take(128).collect::<String>()
            ))
            .into());
        }
        let mut all = Vec::new();
        for n in self.nodes.iter() {
            let Some(store) = n.store_if_any().await? else {
                continue;
            };
            let mine: Vec<Lvol> = n
                .lvols(&store.uuid)
                .await?
                .into_iter()
                .filter(|l| is_managed(&l.name))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let view = NodeView::of(n).await?;
            let st = NodeState::of(n).await?;
            for l in mine {
                let status = pb::list_volumes_response::VolumeStatus {
                    published_node_ids: view.published_node_ids(&l),
                    volume_condition: Some(st.condition(&l, view.condition(&self.nodes, n, &l))),
                };
                let mut v = volume(n, &store.uuid, &l);
                st.describe(&l, &mut v);
                all.push((v, status));
            }
        }
        all.sort_by(|a, b| a.0.volume_id.cmp(&b.0.volume_id));
        let rest: Vec<_> = all
            .into_iter()
            .filter(|v| r.starting_token.is_empty() || v.0.volume_id > r.starting_token)
            .collect();
        let max = if r.max_entries == 0 {
            usize::MAX
        } else {
            r.max_entries as usize
        };
        let next_token = if rest.len() > max {
            rest[max - 1].0.volume_id.clone()
        } else {
            String::new()
        };
        let entries = rest
            .into_iter()
            .take(max)
            .map(|(v, status)| pb::list_volumes_response::Entry {
                volume: Some(v),
                status: Some(status),
            })
            .collect();
        Ok(Response::new(pb::ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    /// Free bytes (free clusters × cluster size) of the stores of the nodes in the given
    /// topology (all nodes without one). Thin volumes take space only as they are written.
    async fn get_capacity(
        &self,
        req: Request<pb::GetCapacityRequest>,
    ) -> Result<Response<pb::GetCapacityResponse>, Status> {
        let r = req.into_inner();
        Params::parse(&r.parameters)?;
        let mut available: u64 = 0;
        let supported = r.volume_capabilities.is_empty()
            || match check_capabilities(&r.volume_capabilities) {
                Ok(()) => true,
                Err(CapError::Unsupported(_)) => false,
                Err(CapError::Malformed(m)) => return Err(Error::InvalidArgument(m).into()),
            };
        if supported {
            for n in self.nodes.iter() {
                if let Some(t) = &r.accessible_topology {
                    if !serves(&n.cfg.topology, t) {
                        continue;
                    }
                }
                if let Some(s) = n.store_if_any().await? {
                    available = available.saturating_add(s.free_bytes());
                }
            }
        }
        Ok(Response::new(pb::GetCapacityResponse {
            available_capacity: available.min(i64::MAX as u64) as i64,
            maximum_volume_size: None,
            minimum_volume_size: None,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<pb::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<pb::ControllerGetCapabilitiesResponse>, Status> {
        let cap = |t: rpc::Type| pb::ControllerServiceCapability {
            r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })),
        };
        Ok(Response::new(pb::ControllerGetCapabilitiesResponse {
            capabilities: vec![
                cap(rpc::Type::CreateDeleteVolume),
                cap(rpc::Type::PublishUnpublishVolume),
                cap(rpc::Type::ListVolumes),
                cap(rpc::Type::ListVolumesPublishedNodes),
                cap(rpc::Type::GetCapacity),
                cap(rpc::Type::ExpandVolume),
                cap(rpc::Type::CreateDeleteSnapshot),
                cap(rpc::Type::ListSnapshots),
                cap(rpc::Type::CloneVolume),
                cap(rpc::Type::GetVolume),
                cap(rpc::Type::VolumeCondition),
            ],
        }))
    }

    /// Allows the node's host NQN (its node_id) on the volume's export subsystem, made on
    /// the first publish (see publish.rs).
    async fn controller_publish_volume(
        &self,
        req: Request<pb::ControllerPublishVolumeRequest>,
    ) -> Result<Response<pb::ControllerPublishVolumeResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Error::InvalidArgument("volume_id is required".into()).into());
        }
        if r.node_id.is_empty() {
            return Err(Error::InvalidArgument("node_id is required".into()).into());
        }
        let Some(cap) = r.volume_capability.as_ref() else {
            return Err(Error::InvalidArgument("volume_capability is required".into()).into());
        };
        check_capabilities(std::slice::from_ref(cap)).map_err(invalid)?;
        let _g = self.mutate.lock().await;
        let (n, l) = self.found(&r.volume_id).await?;
        if !publish::is_host_nqn(&r.node_id) {
            return Err(Error::NotFound(format!(
                "node {:?} is not a ballast-csi node id (a node plugin reports its NVMe host NQN)",
                r.node_id
            ))
            .into());
        }
        let bdev = stack::export_bdev(n, &l).await?;
        let publish_context = publish::publish(n, &l, &bdev, &r.node_id, cap).await?;
        Ok(Response::new(pb::ControllerPublishVolumeResponse {
            publish_context,
        }))
    }

    /// Removes the node's host NQN (every host when node_id is empty); the subsystem goes
    /// with its last host. A volume or node that is not there is already unpublished: OK.
    async fn controller_unpublish_volume(
        &self,
        req: Request<pb::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<pb::ControllerUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Error::InvalidArgument("volume_id is required".into()).into());
        }
        let _g = self.mutate.lock().await;
        match self.lookup(&r.volume_id).await? {
            Lookup::Found(n, l) => publish::unpublish(n, &l.uuid, &r.node_id).await?,
            Lookup::Missing(why) => {
                tracing::info!(volume = %r.volume_id, "ControllerUnpublishVolume: {why}")
            }
            Lookup::UnknownNode(node) => {
                return Err(Error::FailedPrecondition(format!(
                    "volume {} is on node {node}, which is not in the configuration",
                    r.volume_id
                ))
                .into())
            }
        }
        Ok(Response::new(pb::ControllerUnpublishVolumeResponse {}))
    }

    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let _g = self.mutate.lock().await;
        let s = snapshot::create(&self.nodes, &req.into_inner()).await?;
        Ok(Response::new(pb::CreateSnapshotResponse {
            snapshot: Some(s),
        }))
    }

    async fn delete_snapshot(
        &self,
        req: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let _g = self.mutate.lock().await;
        snapshot::delete(&self.nodes, &req.into_inner().snapshot_id).await?;
        Ok(Response::new(pb::DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        Ok(Response::new(
            snapshot::list(&self.nodes, &req.into_inner()).await?,
        ))
    }

    /// The volume with its condition (replicas.rs: mirror members faulted, missing or
    /// rebuilding) and the nodes it is published to. A volume whose node cannot be asked is
    /// answered from its id, abnormal, with capacity 0 (unknown).
    async fn controller_get_volume(
        &self,
        req: Request<pb::ControllerGetVolumeRequest>,
    ) -> Result<Response<pb::ControllerGetVolumeResponse>, Status> {
        let id = req.into_inner().volume_id;
        if id.is_empty() {
            return Err(Error::InvalidArgument("volume_id is required".into()).into());
        }
        use pb::controller_get_volume_response::VolumeStatus;
        let found = match self.lookup(&id).await {
            Ok(Lookup::Found(n, l)) => Ok((n, l)),
            Ok(Lookup::Missing(why)) => return Err(Error::NotFound(why).into()),
            Ok(Lookup::UnknownNode(node)) => {
                return Err(Error::NotFound(format!("no node {node} in the configuration")).into())
            }
            Err(e) => Err(e),
        };
        let view = match &found {
            Ok((n, _)) => NodeView::of(n).await,
            Err(_) => Ok(NodeView::empty()),
        };
        let (volume, status) = match (found, view) {
            (Ok((n, l)), Ok(view)) => {
                let store = n.store().await?;
                let st = NodeState::of(n).await?;
                let status = VolumeStatus {
                    published_node_ids: view.published_node_ids(&l),
                    volume_condition: Some(st.condition(&l, view.condition(&self.nodes, n, &l))),
                };
                let mut v = volume(n, &store.uuid, &l);
                st.describe(&l, &mut v);
                (v, status)
            }
            (Err(e @ Error::Unavailable { .. }), _) | (_, Err(e @ Error::Unavailable { .. })) => {
                let vid = VolumeId::parse(&id).expect("looked up");
                let n = self.nodes.get(&vid.node).expect("looked up");
                tracing::warn!(volume = %id, "ControllerGetVolume: {e}");
                let v = pb::Volume {
                    capacity_bytes: 0,
                    volume_id: id.clone(),
                    accessible_topology: vec![pb::Topology {
                        segments: n.cfg.topology.clone().into_iter().collect(),
                    }],
                    ..Default::default()
                };
                let status = VolumeStatus {
                    published_node_ids: Vec::new(),
                    volume_condition: Some(replicas::abnormal(format!(
                        "the volume's node cannot be asked: {e}"
                    ))),
                };
                (v, status)
            }
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        Ok(Response::new(pb::ControllerGetVolumeResponse {
            volume: Some(volume),
            status: Some(status),
        }))
    }

    /// Grows the lvol to the required size rounded up to clusters (online: connected hosts
    /// see the new size). Never shrinks: a volume already as large is answered as it is.
    async fn controller_expand_volume(
        &self,
        req: Request<pb::ControllerExpandVolumeRequest>,
    ) -> Result<Response<pb::ControllerExpandVolumeResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Error::InvalidArgument("volume_id is required".into()).into());
        }
        let Some(range) = r.capacity_range.as_ref() else {
            return Err(Error::InvalidArgument("capacity_range is required".into()).into());
        };
        if let Some(c) = &r.volume_capability {
            check_capabilities(std::slice::from_ref(c)).map_err(invalid)?;
        }
        volume_size(Some(range), 1)?;
        let _g = self.mutate.lock().await;
        let (n, l) = self.found(&r.volume_id).await?;
        if replicas::is_replicated(&l.name) {
            return Err(Error::FailedPrecondition(format!(
                "volume {} is replicated: growing a mirror is not built in ballast yet \
                 (its size is fixed at creation)",
                r.volume_id
            ))
            .into());
        }
        if let Some(s) = stack::record(n, &l).await? {
            return Err(Error::FailedPrecondition(format!(
                "volume {} has {}: ballast's crypto and compress stages cannot grow yet (their \
                 size is fixed at creation)",
                r.volume_id,
                s.describe()
            ))
            .into());
        }
        let store = n.store().await?;
        let want = volume_size(Some(range), store.cluster_size)?;
        let size = if l.size >= want {
            if range.limit_bytes > 0 && l.size > range.limit_bytes as u64 {
                return Err(Error::OutOfRange(format!(
                    "the volume has {} bytes, above limit_bytes {}: shrinking is not supported",
                    l.size, range.limit_bytes
                ))
                .into());
            }
            l.size
        } else {
            n.resize_lvol(&l.uuid, want).await?;
            tracing::info!(volume = %r.volume_id, from = l.size, to = want, "ControllerExpandVolume");
            want
        };
        let block = matches!(
            r.volume_capability
                .as_ref()
                .and_then(|c| c.access_type.as_ref()),
            Some(AccessType::Block(_))
        );
        Ok(Response::new(pb::ControllerExpandVolumeResponse {
            capacity_bytes: size as i64,
            node_expansion_required: !block,
        }))
    }
}
