//! The CSI Identity service: who the plugin is, what it can do, and whether it is ready.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::nodes::Nodes;
use crate::pb;
use crate::pb::identity_server::Identity;
use crate::pb::plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};

pub struct IdentityService {
    nodes: Arc<Nodes>,
    /// The controller's capabilities (CONTROLLER_SERVICE, ...) or a node plugin's (none yet).
    controller: bool,
}

impl IdentityService {
    pub fn new(nodes: Arc<Nodes>, controller: bool) -> Self {
        IdentityService { nodes, controller }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: crate::PLUGIN_NAME.into(),
            vendor_version: crate::PLUGIN_VERSION.into(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        let svc = |t: service::Type| pb::PluginCapability {
            r#type: Some(Type::Service(Service { r#type: t as i32 })),
        };
        let capabilities = if self.controller {
            vec![
                svc(service::Type::ControllerService),
                svc(service::Type::VolumeAccessibilityConstraints),
                // ControllerExpandVolume grows the lvol while hosts are connected.
                pb::PluginCapability {
                    r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    })),
                },
            ]
        } else {
            vec![svc(service::Type::VolumeAccessibilityConstraints)]
        };
        Ok(Response::new(pb::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    /// Ready when at least one configured ballastd answers `spdk_get_version` (every node
    /// for a node plugin: it has one). Nodes that do not answer are logged. A controller
    /// is not declared unready for one dead storage node: the liveness sidecar would restart
    /// it in a loop while the other nodes can still serve; calls that need the dead node
    /// fail with UNAVAILABLE naming it.
    async fn probe(
        &self,
        _: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let mut up = 0;
        for n in self.nodes.iter() {
            match n.version().await {
                Ok(v) => {
                    tracing::debug!(node = n.id(), version = %v, "probe: node answers");
                    up += 1;
                }
                Err(e) => tracing::warn!(node = n.id(), "probe: {e}"),
            }
        }
        Ok(Response::new(pb::ProbeResponse {
            ready: Some(pb::BoolValue { value: up > 0 }),
        }))
    }
}
