//! The CSI Identity service: who the plugin is, what it can do, and whether it is ready.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::nodes::Nodes;
use crate::pb;
use crate::pb::identity_server::Identity;
use crate::pb::plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};

pub struct IdentityService {
    role: Role,
}

enum Role {
    /// The controller: ready when a ballastd answers.
    Controller(Arc<Nodes>),
    /// A node plugin: ready when the kernel's NVMe-oF host is there.
    Node,
}

impl IdentityService {
    pub fn controller(nodes: Arc<Nodes>) -> Self {
        IdentityService {
            role: Role::Controller(nodes),
        }
    }

    pub fn node() -> Self {
        IdentityService { role: Role::Node }
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
        let capabilities = if matches!(self.role, Role::Controller(_)) {
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

    /// Controller: ready when at least one configured ballastd answers `spdk_get_version`.
    /// Nodes that do not answer are logged. A controller is not declared unready for one
    /// dead storage node: the liveness sidecar would restart it in a loop while the other
    /// nodes can still serve; calls that need the dead node fail with UNAVAILABLE naming it.
    ///
    /// Node plugin: ready when /dev/nvme-fabrics exists (the nvme-fabrics module is loaded;
    /// nvme-tcp is loaded on the first connect when it is not).
    async fn probe(
        &self,
        _: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let ready = match &self.role {
            Role::Controller(nodes) => {
                let mut up = 0;
                for n in nodes.iter() {
                    match n.version().await {
                        Ok(v) => {
                            tracing::debug!(node = n.id(), version = %v, "probe: node answers");
                            up += 1;
                        }
                        Err(e) => tracing::warn!(node = n.id(), "probe: {e}"),
                    }
                }
                up > 0
            }
            Role::Node => {
                let ok = std::path::Path::new(crate::node::fabrics::FABRICS_DEV).exists();
                if !ok {
                    tracing::warn!(
                        "probe: {} is missing: load the nvme-tcp kernel module (modprobe nvme-tcp)",
                        crate::node::fabrics::FABRICS_DEV
                    );
                }
                ok
            }
        };
        Ok(Response::new(pb::ProbeResponse {
            ready: Some(pb::BoolValue { value: ready }),
        }))
    }
}
