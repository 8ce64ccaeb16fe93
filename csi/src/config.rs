//! The ballast nodes the controller provisions on, from a JSON file:
//!
//! ```json
//! {
//!   "nodes": [
//!     { "id": "node-a",
//!       "rpc_socket": "/var/tmp/ballast.sock",
//!       "lvs": "lvs0",
//!       "nvmf": { "addr": "10.0.0.11", "port": 4420 },
//!       "topology": { "topology.csi.ballast.io/node": "node-a", "topology.kubernetes.io/zone": "z1" } }
//!   ]
//! }
//! ```
//!
//! `rpc_socket` defaults to ballastd's `/var/tmp/ballast.sock`, `lvs` to `lvs0`, the NVMe/TCP
//! port to 4420 and `topology` to `{"topology.csi.ballast.io/node": <id>}`. A node id is
//! 1–48 characters of `[A-Za-z0-9._-]` (it is part of every volume id). The NVMe/TCP address
//! is where the node exports replicas of replicated volumes (and, with ControllerPublish,
//! volumes). `mirror_host_nqn` is the NVMe host NQN the node's ballastd presents when it
//! attaches the replicas of the mirrors it holds (default
//! `nqn.2026-11.io.ballast:csi-mirror-host:<id>`; not the kernel initiator's host NQN).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::rpc::DEFAULT_SOCKET;

/// The topology key every node has unless its config says otherwise.
pub const NODE_TOPOLOGY_KEY: &str = "topology.csi.ballast.io/node";

pub const MAX_NODE_ID: usize = 48;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: String,
    #[serde(default = "default_socket")]
    pub rpc_socket: PathBuf,
    #[serde(default = "default_lvs")]
    pub lvs: String,
    #[serde(default)]
    pub nvmf: Option<Nvmf>,
    #[serde(default)]
    pub topology: BTreeMap<String, String>,
    /// The host NQN this node's ballastd uses for the replicas its mirrors attach; None:
    /// [`Node::mirror_host_nqn`]'s default.
    #[serde(default)]
    pub mirror_host_nqn: Option<String>,
}

impl Node {
    /// The host NQN this node's ballastd presents to the replica subsystems of the mirrors
    /// it holds (only that host is allowed on them).
    pub fn mirror_host_nqn(&self) -> String {
        self.mirror_host_nqn
            .clone()
            .unwrap_or_else(|| format!("nqn.2026-11.io.ballast:csi-mirror-host:{}", self.id))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nvmf {
    /// The address the volume subsystems listen on.
    pub addr: String,
    /// The address hosts are told to connect to (publish_context), when it differs from
    /// `addr` (NAT, port forwarding); default `addr`.
    #[serde(default)]
    pub advertise: Option<String>,
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}

fn default_lvs() -> String {
    "lvs0".into()
}

fn default_port() -> u16 {
    4420
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let err = |detail: String| Error::Config {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let cfg: Config = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        cfg.validated().map_err(err)
    }

    /// Checks ids and fills in default topologies.
    pub fn validated(mut self) -> std::result::Result<Config, String> {
        if self.nodes.is_empty() {
            return Err("no nodes".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for n in &mut self.nodes {
            check_node_id(&n.id)?;
            if !seen.insert(n.id.clone()) {
                return Err(format!("node id {:?} given twice", n.id));
            }
            if n.lvs.is_empty() || n.lvs.len() > 63 {
                return Err(format!("node {}: lvs must be 1-63 bytes", n.id));
            }
            if n.topology.is_empty() {
                n.topology.insert(NODE_TOPOLOGY_KEY.into(), n.id.clone());
            }
            if let Some(h) = &n.mirror_host_nqn {
                if !h.starts_with("nqn.") || h.len() > 223 || h.bytes().any(|c| c <= b' ') {
                    return Err(format!(
                        "node {}: mirror_host_nqn {h:?} is not an NQN (nqn.yyyy-mm.domain:name, \
                         at most 223 bytes, no spaces)",
                        n.id
                    ));
                }
            }
            if let Some(nv) = &mut n.nvmf {
                // IP addresses in the form ballastd reports them (listeners are compared as
                // text) and the kernel's connect takes.
                let ip = |what: &str, a: &str| {
                    a.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .map(|ip| ip.to_string())
                        .map_err(|_| {
                            format!("node {}: nvmf.{what} {a:?} is not an IP address", n.id)
                        })
                };
                nv.addr = ip("addr", &nv.addr)?;
                if let Some(a) = &nv.advertise {
                    nv.advertise = Some(ip("advertise", a)?);
                }
            }
        }
        Ok(self)
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

pub fn check_node_id(id: &str) -> std::result::Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_NODE_ID
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node id {id:?} must be 1-{MAX_NODE_ID} characters of [A-Za-z0-9._-]"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<Config, String> {
        serde_json::from_str::<Config>(s)
            .map_err(|e| e.to_string())?
            .validated()
    }

    #[test]
    fn defaults_are_filled_in() {
        let c = parse(r#"{"nodes":[{"id":"a"}]}"#).unwrap();
        let n = &c.nodes[0];
        assert_eq!(n.rpc_socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(n.lvs, "lvs0");
        assert_eq!(n.topology[NODE_TOPOLOGY_KEY], "a");
        let c = parse(r#"{"nodes":[{"id":"a","nvmf":{"addr":"10.0.0.1"}}]}"#).unwrap();
        assert_eq!(c.nodes[0].nvmf.as_ref().unwrap().port, 4420);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(parse(r#"{"nodes":[]}"#).is_err());
        assert!(parse(r#"{"nodes":[{"id":"a:b"}]}"#)
            .unwrap_err()
            .contains("node id"));
        assert!(parse(r#"{"nodes":[{"id":"a"},{"id":"a"}]}"#)
            .unwrap_err()
            .contains("twice"));
        assert!(parse(r#"{"nodes":[{"id":"a","lvs_name":"x"}]}"#).is_err());
    }
}
