//! What a CSI volume is in ballast terms, as pure functions (no I/O): volume ids, lvol
//! names, StorageClass parameters, volume capabilities, sizes and topology matching.
//!
//! Volume id: `v1:<node id>:<lvol store uuid>:<lvol uuid>`, at most 3+48+1+36+1+36 = 125
//! bytes (CSI allows 128). `v1` versions the format; the store's UUID (not its name, which
//! `bdev_lvol_rename_lvstore` can change) guards against a store that was re-created under
//! the same name; the lvol's UUID is its bdev name in ballastd.
//!
//! lvol name: derived from the CSI volume name, so a repeated CreateVolume finds the lvol
//! it made before, with no state in the controller. `csi-<name>` when the name is 1–59
//! characters of `[A-Za-z0-9._-]` (Kubernetes' `pvc-<uuid>` is), else `csix-` and the
//! first 40 hex digits (160 bits) of the name's SHA-256. The two prefixes cannot produce the
//! same lvol name (the fourth character differs), and the driver only ever lists, resizes or
//! deletes lvols that carry one of them.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::config::{check_node_id, NODE_TOPOLOGY_KEY};
use crate::error::{Error, Result};
use crate::pb;
use crate::pb::volume_capability::access_mode::Mode;
use crate::pb::volume_capability::AccessType;
use crate::stack::Compression;

/// The size of a volume whose CreateVolume gives no capacity.
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// ballastd's lvol name limit (SPDK's).
const MAX_LVOL_NAME: usize = 63;
const PLAIN_PREFIX: &str = "csi-";
const HASHED_PREFIX: &str = "csix-";

/// Where a volume lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VolumeId {
    pub node: String,
    pub lvs_uuid: String,
    pub lvol_uuid: String,
}

impl VolumeId {
    pub fn parse(s: &str) -> Option<VolumeId> {
        let mut it = s.split(':');
        let (v, node, lvs, lvol) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if v != "v1" || it.next().is_some() || check_node_id(node).is_err() {
            return None;
        }
        let lvs = uuid::Uuid::parse_str(lvs).ok()?.hyphenated().to_string();
        let lvol = uuid::Uuid::parse_str(lvol).ok()?.hyphenated().to_string();
        Some(VolumeId {
            node: node.to_string(),
            lvs_uuid: lvs,
            lvol_uuid: lvol,
        })
    }
}

impl std::fmt::Display for VolumeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v1:{}:{}:{}", self.node, self.lvs_uuid, self.lvol_uuid)
    }
}

/// The lvol name of CSI volume `name` (see the module doc).
pub fn lvol_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= MAX_LVOL_NAME - PLAIN_PREFIX.len()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if plain {
        format!("{PLAIN_PREFIX}{name}")
    } else {
        let h = Sha256::digest(name.as_bytes());
        let hex: String = h.iter().take(20).map(|b| format!("{b:02x}")).collect();
        format!("{HASHED_PREFIX}{hex}")
    }
}

/// Whether lvol `name` is one this driver made (and so may list, resize and delete).
/// The primary lvol of a replicated volume counts (`csm-`/`csmx-`, see replicas.rs); its
/// replicas and unfinished ones do not.
pub fn is_managed(lvol_name: &str) -> bool {
    lvol_name.starts_with(PLAIN_PREFIX)
        || lvol_name.starts_with(HASHED_PREFIX)
        || crate::replicas::is_replicated(lvol_name)
}

/// StorageClass parameters this slice understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// `thin`: "true" (default) or "false" (all clusters allocated at creation).
    pub thin: bool,
    /// `replicas`: copies on distinct nodes, 1 (default) to [`MAX_REPLICAS`]; above 1 the
    /// volume is a mirror (see replicas.rs).
    pub replicas: u32,
    /// `encryption`: "true" or "false" (default): AES-XTS with the key from the
    /// CreateVolume secrets (see stack.rs).
    pub encryption: bool,
    /// `compression`: "lz4" or "zstd" ("none", the default: none; see stack.rs).
    pub compression: Option<Compression>,
}

/// The most replicas a volume can have (ballast's mirror takes 2 to 5 children).
pub const MAX_REPLICAS: u32 = 5;

/// Keys the Kubernetes sidecars add themselves (external-provisioner's
/// `--extra-create-metadata`: PVC/PV names): accepted and ignored.
pub const SIDECAR_PREFIX: &str = "csi.storage.k8s.io/";

impl Params {
    /// Parses StorageClass parameters; anything unknown is an INVALID_ARGUMENT naming it (a
    /// volume without the encryption or replicas its class asks for must never be handed
    /// out silently).
    pub fn parse(p: &HashMap<String, String>) -> Result<Params> {
        let mut out = Params {
            thin: true,
            replicas: 1,
            encryption: false,
            compression: None,
        };
        let mut unknown = Vec::new();
        for (k, v) in p {
            match k.as_str() {
                "thin" => {
                    out.thin = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "parameter thin: {:?} is not \"true\" or \"false\"",
                                cap(v)
                            )))
                        }
                    }
                }
                "replicas" => {
                    out.replicas = match v.parse::<u32>() {
                        Ok(n) if (1..=MAX_REPLICAS).contains(&n) && !v.starts_with('+') => n,
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "parameter replicas: {:?} is not a number from 1 to \
                                 {MAX_REPLICAS}",
                                cap(v)
                            )))
                        }
                    }
                }
                "encryption" => {
                    out.encryption = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "parameter encryption: {:?} is not \"true\" or \"false\"",
                                cap(v)
                            )))
                        }
                    }
                }
                "compression" => {
                    out.compression = match v.as_str() {
                        "none" => None,
                        a => Some(Compression::parse(a).ok_or_else(|| {
                            Error::InvalidArgument(format!(
                                "parameter compression: {:?} is not supported (lz4, zstd \
                                 or none)",
                                cap(v)
                            ))
                        })?),
                    }
                }
                _ if k.starts_with(SIDECAR_PREFIX) => {}
                _ => unknown.push(cap(k)),
            }
        }
        unknown.sort();
        if !unknown.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "unknown parameters: {} (known: thin, replicas, encryption, compression, \
                 {SIDECAR_PREFIX}*)",
                unknown.join(", ")
            )));
        }
        Ok(out)
    }
}

/// At most 64 characters of a user-supplied string, for messages.
/// `s` for a message: at most 64 characters.
pub(crate) fn cap(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Why a volume capability cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapError {
    /// Not a well-formed capability (INVALID_ARGUMENT everywhere).
    Malformed(String),
    /// Well-formed, not supported (INVALID_ARGUMENT in CreateVolume, "not confirmed" in
    /// ValidateVolumeCapabilities).
    Unsupported(String),
}

impl From<CapError> for Error {
    fn from(e: CapError) -> Error {
        match e {
            CapError::Malformed(m) | CapError::Unsupported(m) => Error::InvalidArgument(m),
        }
    }
}

/// File systems the node service will make and mount ("" = its default, ext4).
pub const FS_TYPES: &[&str] = &["", "ext4", "xfs"];

/// Checks one capability. Supported: block or mount (ext4, xfs), single-node writer or
/// reader, and multi-node reader-only. Multi-node writers need a cluster file system or
/// a fencing story ballast does not have.
pub fn check_capability(c: &pb::VolumeCapability) -> std::result::Result<(), CapError> {
    let mode = c
        .access_mode
        .as_ref()
        .ok_or_else(|| CapError::Malformed("volume capability without access_mode".into()))?
        .mode;
    let mode = Mode::try_from(mode)
        .map_err(|_| CapError::Malformed(format!("unknown access mode {mode}")))?;
    match &c.access_type {
        None => {
            return Err(CapError::Malformed(
                "volume capability without access_type (block or mount)".into(),
            ))
        }
        Some(AccessType::Mount(m)) if !FS_TYPES.contains(&m.fs_type.as_str()) => {
            return Err(CapError::Unsupported(format!(
                "fs_type {:?} is not supported (ext4, xfs)",
                cap(&m.fs_type)
            )))
        }
        Some(_) => {}
    }
    match mode {
        Mode::Unknown => Err(CapError::Malformed("access mode UNKNOWN".into())),
        Mode::SingleNodeWriter | Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly => Ok(()),
        m => Err(CapError::Unsupported(format!(
            "access mode {} is not supported",
            m.as_str_name()
        ))),
    }
}

/// Checks a REQUIRED list of capabilities.
pub fn check_capabilities(caps: &[pb::VolumeCapability]) -> std::result::Result<(), CapError> {
    if caps.is_empty() {
        return Err(CapError::Malformed(
            "volume_capabilities is required".into(),
        ));
    }
    caps.iter().try_for_each(check_capability)
}

/// The size to create for `range` in a store of `cluster`-byte clusters: the required
/// size (or [`DEFAULT_SIZE`], capped by the limit) rounded up to whole clusters.
pub fn volume_size(range: Option<&pb::CapacityRange>, cluster: u64) -> Result<u64> {
    let (req, lim) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if req < 0 || lim < 0 {
        return Err(Error::InvalidArgument(
            "capacity_range: required_bytes and limit_bytes must not be negative".into(),
        ));
    }
    let (req, lim) = (req as u64, lim as u64);
    if lim != 0 && lim < req {
        return Err(Error::InvalidArgument(format!(
            "capacity_range: limit_bytes {lim} is below required_bytes {req}"
        )));
    }
    let want = match (req, lim) {
        (0, 0) => DEFAULT_SIZE,
        (0, l) => DEFAULT_SIZE.min(l),
        (r, _) => r,
    };
    let mut size = want.div_ceil(cluster) * cluster;
    if lim != 0 && size > lim {
        // Only a limit with no requirement may be met by rounding down.
        size = if req == 0 { lim / cluster * cluster } else { 0 };
        if size == 0 {
            return Err(Error::OutOfRange(format!(
                "capacity_range [{req}, {lim}] holds no whole number of {cluster}-byte clusters"
            )));
        }
    }
    Ok(size)
}

/// Whether a volume of `size` bytes satisfies `range` (idempotent CreateVolume).
pub fn size_fits(size: u64, range: Option<&pb::CapacityRange>) -> bool {
    let (req, lim) = range.map_or((0, 0), |r| {
        (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64)
    });
    size >= req && (lim == 0 || size <= lim)
}

/// Whether a node with segments `node` lies in topology `t` (every segment of `t` equal).
pub fn in_topology(node: &BTreeMap<String, String>, t: &pb::Topology) -> bool {
    t.segments.iter().all(|(k, v)| node.get(k) == Some(v))
}

/// Whether a volume on a storage node with segments `node` is reachable from a machine in
/// topology `t`. Volumes travel over NVMe/TCP, so the per-node key never limits where they
/// can be used: only the other segments (zone, region, ...) must match.
pub fn serves(node: &BTreeMap<String, String>, t: &pb::Topology) -> bool {
    t.segments
        .iter()
        .all(|(k, v)| k == NODE_TOPOLOGY_KEY || node.get(k) == Some(v))
}

/// Where a volume on a storage node with segments `node` can be used: its segments without
/// the per-node key (empty: from every node).
pub fn reach(node: &BTreeMap<String, String>) -> Vec<pb::Topology> {
    let segments: HashMap<String, String> = node
        .iter()
        .filter(|(k, _)| k.as_str() != NODE_TOPOLOGY_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if segments.is_empty() {
        Vec::new()
    } else {
        vec![pb::Topology { segments }]
    }
}

/// How much a storage node with segments `node` is preferred under the CO's `preferred`
/// list (lower first): the first term it is in (node key included: the pod's own node
/// first), then the first term it serves; `usize::MAX` for neither.
pub fn preference(node: &BTreeMap<String, String>, preferred: &[pb::Topology]) -> usize {
    preferred
        .iter()
        .position(|t| in_topology(node, t))
        .map(|i| i * 2)
        .or_else(|| {
            preferred
                .iter()
                .position(|t| serves(node, t))
                .map(|i| i * 2 + 1)
        })
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::volume_capability::{AccessMode, BlockVolume, MountVolume};

    const MIB: u64 = 1 << 20;

    fn range(r: i64, l: i64) -> pb::CapacityRange {
        pb::CapacityRange {
            required_bytes: r,
            limit_bytes: l,
        }
    }

    #[test]
    fn volume_ids_round_trip_and_reject_garbage() {
        let id = VolumeId {
            node: "node-a".into(),
            lvs_uuid: "0c3a2b38-8d5e-4a39-9d55-3a0a8e0f0e01".into(),
            lvol_uuid: "7f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into(),
        };
        let s = id.to_string();
        assert!(s.len() <= 128);
        assert_eq!(VolumeId::parse(&s), Some(id));
        for bad in [
            "",
            "reallyfakevolumeid",
            "v2:node-a:0c3a2b38-8d5e-4a39-9d55-3a0a8e0f0e01:7f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "v1:node-a:notauuid:7f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "v1:no/de:0c3a2b38-8d5e-4a39-9d55-3a0a8e0f0e01:7f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "v1:node-a:0c3a2b38-8d5e-4a39-9d55-3a0a8e0f0e01:7f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d:x",
        ] {
            assert_eq!(VolumeId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn lvol_names_are_stable_distinct_and_fit() {
        assert_eq!(lvol_name("pvc-1234"), "csi-pvc-1234");
        assert_eq!(lvol_name("pvc-1234"), lvol_name("pvc-1234"));
        let long = "x".repeat(200);
        for n in ["a b", "ünï", long.as_str(), "", "Volume/1"] {
            let l = lvol_name(n);
            assert!(l.starts_with("csix-") && l.len() <= 63, "{n:?} -> {l}");
            assert!(is_managed(&l));
        }
        assert_ne!(lvol_name("a b"), lvol_name("a  b"));
        // A plain name that looks like a hash cannot collide with one.
        assert_ne!(lvol_name(&lvol_name("a b")[4..]), lvol_name("a b"));
        assert!(!is_managed("vol0"));
    }

    #[test]
    fn sizes_round_up_to_clusters_within_the_range() {
        assert_eq!(volume_size(None, 4 * MIB).unwrap(), DEFAULT_SIZE);
        assert_eq!(volume_size(Some(&range(1, 0)), 4 * MIB).unwrap(), 4 * MIB);
        assert_eq!(
            volume_size(Some(&range(5 * MIB as i64, 0)), 4 * MIB).unwrap(),
            8 * MIB
        );
        assert_eq!(
            volume_size(Some(&range(0, 10 * MIB as i64)), 4 * MIB).unwrap(),
            8 * MIB
        );
        let e = volume_size(Some(&range(5 * MIB as i64, 6 * MIB as i64)), 4 * MIB).unwrap_err();
        assert!(matches!(e, Error::OutOfRange(_)), "{e}");
        assert!(matches!(
            volume_size(Some(&range(-1, 0)), MIB),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            volume_size(Some(&range(9, 8)), MIB),
            Err(Error::InvalidArgument(_))
        ));
        assert!(size_fits(8 * MIB, Some(&range(5 * MIB as i64, 0))));
        assert!(!size_fits(8 * MIB, Some(&range(9 * MIB as i64, 0))));
        assert!(!size_fits(8 * MIB, Some(&range(0, 7 * MIB as i64))));
    }

    #[test]
    fn parameters_unknown_or_malformed_are_refused_by_name() {
        let p = |kv: &[(&str, &str)]| {
            Params::parse(
                &kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let plain = Params {
            thin: true,
            replicas: 1,
            encryption: false,
            compression: None,
        };
        assert_eq!(p(&[]).unwrap(), plain);
        assert_eq!(
            p(&[("thin", "false"), ("replicas", "1")]).unwrap(),
            Params {
                thin: false,
                ..plain.clone()
            }
        );
        assert_eq!(
            p(&[("encryption", "true"), ("compression", "zstd")]).unwrap(),
            Params {
                encryption: true,
                compression: Some(Compression::Zstd),
                ..plain.clone()
            }
        );
        assert_eq!(p(&[("compression", "none")]).unwrap(), plain);
        assert_eq!(p(&[("replicas", "3")]).unwrap().replicas, 3);
        for bad in ["0", "6", "two", "-1", "+2", ""] {
            let e = p(&[("replicas", bad)]).unwrap_err().to_string();
            assert!(e.contains("replicas"), "{bad}: {e}");
        }
        assert!(p(&[("csi.storage.k8s.io/pvc/name", "x")]).is_ok());
        let e = p(&[("colour", "red"), ("size", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour") && e.contains("size"), "{e}");
        let e = p(&[("compression", "gzip")]).unwrap_err().to_string();
        assert!(e.contains("compression") && e.contains("gzip"), "{e}");
        assert!(p(&[("encryption", "yes")])
            .unwrap_err()
            .to_string()
            .contains("encryption"));
        assert!(p(&[("thin", "yes")]).is_err());
    }

    #[test]
    fn capabilities() {
        let c = |t: Option<AccessType>, m: Mode| pb::VolumeCapability {
            access_type: t,
            access_mode: Some(AccessMode { mode: m as i32 }),
        };
        let mount = |fs: &str| {
            Some(AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                ..Default::default()
            }))
        };
        let block = Some(AccessType::Block(BlockVolume {}));
        assert_eq!(
            check_capability(&c(block.clone(), Mode::SingleNodeWriter)),
            Ok(())
        );
        assert_eq!(
            check_capability(&c(mount("ext4"), Mode::MultiNodeReaderOnly)),
            Ok(())
        );
        assert!(matches!(
            check_capability(&c(None, Mode::SingleNodeWriter)),
            Err(CapError::Malformed(_))
        ));
        assert!(matches!(
            check_capability(&c(block.clone(), Mode::Unknown)),
            Err(CapError::Malformed(_))
        ));
        assert!(matches!(
            check_capability(&c(block, Mode::MultiNodeMultiWriter)),
            Err(CapError::Unsupported(_))
        ));
        assert!(matches!(
            check_capability(&c(mount("zfs"), Mode::SingleNodeWriter)),
            Err(CapError::Unsupported(_))
        ));
        assert!(matches!(
            check_capabilities(&[]),
            Err(CapError::Malformed(_))
        ));
    }

    #[test]
    fn topology_matching() {
        let node: BTreeMap<String, String> = [
            ("zone".to_string(), "z1".to_string()),
            ("node".to_string(), "a".to_string()),
        ]
        .into();
        let t = |kv: &[(&str, &str)]| pb::Topology {
            segments: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert!(in_topology(&node, &t(&[("zone", "z1")])));
        assert!(in_topology(&node, &t(&[])));
        assert!(!in_topology(&node, &t(&[("zone", "z2")])));
        assert!(!in_topology(&node, &t(&[("rack", "r1")])));
        // Reachability ignores the per-node key; preference puts the pod's node first.
        let k = NODE_TOPOLOGY_KEY;
        let a: BTreeMap<String, String> = [
            ("zone".to_string(), "z1".to_string()),
            (k.to_string(), "a".to_string()),
        ]
        .into();
        assert!(serves(&a, &t(&[(k, "b"), ("zone", "z1")])));
        assert!(!serves(&a, &t(&[(k, "a"), ("zone", "z2")])));
        assert_eq!(reach(&a), vec![t(&[("zone", "z1")])]);
        assert!(reach(&[(k.to_string(), "a".to_string())].into()).is_empty());
        let pref = [
            t(&[(k, "b"), ("zone", "z1")]),
            t(&[(k, "a"), ("zone", "z1")]),
        ];
        assert_eq!(preference(&a, &pref), 2);
        assert_eq!(preference(&a, &pref[..1]), 1);
        assert_eq!(preference(&a, &[t(&[("zone", "z9")])]), usize::MAX);
    }
}
