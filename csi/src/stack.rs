//! Encrypted and compressed volumes (StorageClass `encryption: "true"`, `compression: "lz4"
//! | "zstd"`): ballast's crypto and compress stages stacked on the volume's primary node over
//! its lvol (or its mirror, replicas.rs), the top of the stack exported by ControllerPublish.
//!
//! ```text
//!  namespace (publish.rs) ─► csi-z-<U>  bdev_compress_create  (compression)
//!                              └─ csi-e-<U>  bdev_crypto_create, key csi-k-<U>  (encryption)
//!                                   └─ U (the lvol) or csi-m-<U> (the mirror of a replicated volume)
//! ```
//!
//! Compress first, then encrypt (ciphertext does not compress): written data goes through
//! the compress stage, then the crypto stage, so the lvol, its snapshots and a mirror's
//! replicas on other nodes hold ciphertext only. `U` is the volume's lvol UUID, so every
//! piece is found again from the node alone.
//!
//! **The record.** The stack bdevs and the key live in ballastd's memory (its saved
//! configuration brings them back after a restart); lvols are the only thing a node keeps
//! by itself. So what a volume's stack must be is written as the name of an empty thin lvol
//! in the same store, `csk-<U, 32 hex>-<enc>-<comp>`: `enc` = `p` (plain) or `x` + 8 hex
//! digits of a fingerprint of the key (a truncated SHA-256 with a domain prefix; it tells
//! whether a repeated CreateVolume brings the same key and helps no one guess a random
//! key), `comp` = `n`, `lz4` or `zstd`. A volume with a record whose pieces are missing is
//! never exported ([`export_bdev`]: FAILED_PRECONDITION naming them), so a ballastd that came
//! back without its configuration never hands out ciphertext as a blank disk.
//!
//! **CreateVolume** writes the intent first, `cst-<40 hex of the SHA-256 of the volume's
//! lvol name>-<enc>-<comp>` on every node with a store (the primary is chosen later, by
//! placement), then makes the lvol or mirror, then renames the primary's intent to its record
//! (deleting the others) and builds the key, crypto and compress stages, checking each piece
//! first. A crash at any point is completed by the next CreateVolume of the name: before the
//! volume exists, stale intents are replaced; after, its intent or record says what to build.
//!
//! **DeleteVolume** deletes the stack top-down (compress, crypto, key), then the volume, then
//! its record — kept while snapshots of the volume exist, so their clones stay refused.
//!
//! **Sizes.** The crypto stage has its base's size. The compress stage keeps a map (64 bytes
//! per chunk), spare units and a superblock on its base and is as large as the base can hold
//! with every chunk stored raw, so the lvol of a compressed volume is made larger (by 1/64 +
//! 2 MiB) and the volume's capacity is the compress bdev's size. Neither stage grows with its
//! base: a stacked volume cannot be expanded.

use std::collections::HashMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{rpc_code, Error, Result};
use crate::nodes::{Lvol, NodeHandle, Nodes};
use crate::pb;
use crate::replicas;
use crate::snapshot::{SnapName, Source};
use crate::volume::{Params, VolumeId, DEFAULT_SIZE};

/// The compress stage of volume `U`: `csi-z-<U>`.
pub const COMPRESS_PREFIX: &str = "csi-z-";
/// The crypto stage: `csi-e-<U>`.
pub const CRYPTO_PREFIX: &str = "csi-e-";
/// The crypto key: `csi-k-<U>`.
pub const KEY_PREFIX: &str = "csi-k-";
const RECORD_PREFIX: &str = "csk-";
const INTENT_PREFIX: &str = "cst-";

/// The CreateVolume secret with the key: hex, AES-XTS's two keys as one (64 hex digits:
/// AES-XTS-128, 128: AES-XTS-256), or the first of two with [`SECRET_KEY2`].
pub const SECRET_KEY: &str = "encryptionKey";
/// The second AES-XTS key (K2), hex, as long as [`SECRET_KEY`] (32 or 64 hex digits).
pub const SECRET_KEY2: &str = "encryptionKey2";

/// volume_context keys.
pub const CTX_ENCRYPTION: &str = "encryption";
pub const CTX_COMPRESSION: &str = "compression";

/// A compression algorithm of ballast's compress stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Lz4,
    Zstd,
}

impl Compression {
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// AES-XTS key material from the CreateVolume secrets. Never printed (Debug is redacted);
/// zeroed when dropped.
pub struct Key {
    k1: Vec<u8>,
    k2: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(AES-XTS-{}, redacted)", self.k1.len() * 8)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.k1.fill(0);
        self.k2.fill(0);
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl Key {
    /// The key in `secrets` (see [`SECRET_KEY`]); None when there is none. Messages name the
    /// secret and what is wrong, never its content.
    pub fn from_secrets(secrets: &HashMap<String, String>) -> Result<Option<Key>> {
        let get = |k: &str| secrets.get(k).map(|v| v.trim());
        let bad = |why: &str| Error::InvalidArgument(format!("encryption key: {why}"));
        let (k1, k2) = match (get(SECRET_KEY), get(SECRET_KEY2)) {
            (None, None) => return Ok(None),
            (None, Some(_)) => {
                return Err(bad(&format!("secret {SECRET_KEY2} without {SECRET_KEY}")))
            }
            (Some(k), None) => {
                let k = unhex(k)
                    .ok_or_else(|| bad(&format!("secret {SECRET_KEY} is not hex digits")))?;
                if k.len() != 32 && k.len() != 64 {
                    return Err(bad(&format!(
                        "secret {SECRET_KEY} must be 64 hex digits (AES-XTS-128) or 128 \
                         (AES-XTS-256), or half that with {SECRET_KEY2}"
                    )));
                }
                let (a, b) = k.split_at(k.len() / 2);
                (a.to_vec(), b.to_vec())
            }
            (Some(a), Some(b)) => {
                let a = unhex(a)
                    .ok_or_else(|| bad(&format!("secret {SECRET_KEY} is not hex digits")))?;
                let b = unhex(b)
                    .ok_or_else(|| bad(&format!("secret {SECRET_KEY2} is not hex digits")))?;
                if a.len() != b.len() || (a.len() != 16 && a.len() != 32) {
                    return Err(bad(&format!(
                        "secrets {SECRET_KEY} and {SECRET_KEY2} must be 32 hex digits each \
                         (AES-XTS-128) or 64 each (AES-XTS-256)"
                    )));
                }
                (a, b)
            }
        };
        if k1 == k2 {
            return Err(bad(
                "its two AES-XTS halves are equal (XTS needs two different keys)",
            ));
        }
        if k1.iter().all(|&b| b == 0) || k2.iter().all(|&b| b == 0) {
            return Err(bad("all zeros"));
        }
        Ok(Some(Key { k1, k2 }))
    }

    /// 8 hex digits identifying the key (see the module doc).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"ballast-csi key fingerprint v1\0");
        h.update(&self.k1);
        h.update(&self.k2);
        h.finalize()
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What a volume's stack is: encrypted (with the key's fingerprint) and/or compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub key_fingerprint: Option<String>,
    pub compression: Option<Compression>,
}

impl Spec {
    fn flags(&self) -> String {
        let e = match &self.key_fingerprint {
            Some(fp) => format!("x{fp}"),
            None => "p".into(),
        };
        let c = self.compression.map_or("n", Compression::as_str);
        format!("{e}-{c}")
    }

    fn parse_flags(s: &str) -> Option<Spec> {
        let (e, c) = s.split_once('-')?;
        let key_fingerprint = match e {
            "p" => None,
            x if x.len() == 9
                && x.starts_with('x')
                && x[1..].bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Some(x[1..].to_string())
            }
            _ => return None,
        };
        let compression = match c {
            "n" => None,
            c => Some(Compression::parse(c)?),
        };
        Some(Spec {
            key_fingerprint,
            compression,
        })
    }

    /// What the stack is, for messages: "encryption, compression=lz4".
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if self.key_fingerprint.is_some() {
            v.push("encryption".to_string());
        }
        if let Some(c) = self.compression {
            v.push(format!("compression={}", c.as_str()));
        }
        if v.is_empty() {
            "no encryption or compression".into()
        } else {
            v.join(", ")
        }
    }

    /// Why the parameters `p` ask for another stack, if they do (the key is not compared).
    pub fn params_conflict(have: Option<&Spec>, p: &Params) -> Option<String> {
        let enc = have.is_some_and(|s| s.key_fingerprint.is_some());
        let comp = have.and_then(|s| s.compression);
        if enc != p.encryption || comp != p.compression {
            Some(have.map_or_else(|| "no encryption or compression".into(), Spec::describe))
        } else {
            None
        }
    }

    /// The volume_context entries of the stack.
    pub fn context(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        if self.key_fingerprint.is_some() {
            m.insert(CTX_ENCRYPTION.into(), "true".into());
        }
        if let Some(c) = self.compression {
            m.insert(CTX_COMPRESSION.into(), c.as_str().into());
        }
        m
    }
}

/// The stack a CreateVolume asks for, with the key from its secrets.
#[derive(Debug)]
pub struct Want {
    pub spec: Spec,
    key: Option<Key>,
}

impl Want {
    /// The stack of parameters `p` with secrets `secrets`: None for a plain volume.
    /// `encryption: "true"` without a key in the secrets is INVALID_ARGUMENT; a key without
    /// `encryption` is ignored.
    pub fn new(p: &Params, secrets: &HashMap<String, String>) -> Result<Option<Want>> {
        if !p.encryption && p.compression.is_none() {
            return Ok(None);
        }
        let key = if p.encryption {
            Some(Key::from_secrets(secrets)?.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "encryption: \"true\" needs a key in the CreateVolume secrets ({SECRET_KEY}, \
                     optionally {SECRET_KEY2}: the StorageClass's \
                     csi.storage.k8s.io/provisioner-secret-name/-namespace Secret)"
                ))
            })?)
        } else {
            None
        };
        Ok(Some(Want {
            spec: Spec {
                key_fingerprint: key.as_ref().map(Key::fingerprint),
                compression: p.compression,
            },
            key,
        }))
    }
}

// ------------------------------------------------------------------------------ names --

fn simple(uuid: &str) -> String {
    uuid::Uuid::parse_str(uuid).map_or_else(|_| uuid.replace('-', ""), |u| u.simple().to_string())
}

pub fn compress_name(uuid: &str) -> String {
    format!("{COMPRESS_PREFIX}{uuid}")
}

pub fn crypto_name(uuid: &str) -> String {
    format!("{CRYPTO_PREFIX}{uuid}")
}

pub fn key_name(uuid: &str) -> String {
    format!("{KEY_PREFIX}{uuid}")
}

fn record_prefix(uuid: &str) -> String {
    format!("{RECORD_PREFIX}{}-", simple(uuid))
}

/// The plain lvol name (`csi-…`/`csix-…`) of a volume's lvol name of any role (replicas.rs).
fn plain(lvol_name: &str) -> String {
    format!("csi{}", lvol_name.get(3..).unwrap_or(""))
}

fn intent_prefix(lvol_name: &str) -> String {
    let h: String = Sha256::digest(plain(lvol_name).as_bytes())
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{INTENT_PREFIX}{h}-")
}

// ----------------------------------------------------------------------- node state --

/// What a node holds of stacks, asked once: its bdevs and crypto key names.
pub struct NodeState {
    bdevs: Vec<Value>,
    keys: Vec<String>,
}

impl NodeState {
    pub async fn of(n: &NodeHandle) -> Result<NodeState> {
        let bdevs = match n.rpc.call("bdev_get_bdevs", None).await? {
            Value::Array(v) => v,
            other => return Err(protocol(n, "bdev_get_bdevs", &other)),
        };
        let keys = match n.rpc.call("accel_crypto_keys_get", None).await? {
            Value::Array(v) => v
                .iter()
                .filter_map(|k| k.get("name").and_then(Value::as_str).map(String::from))
                .collect(),
            other => return Err(protocol(n, "accel_crypto_keys_get", &other)),
        };
        Ok(NodeState { bdevs, keys })
    }

    fn bdev(&self, name: &str) -> Option<&Value> {
        self.bdevs
            .iter()
            .find(|b| b.get("name").and_then(Value::as_str) == Some(name))
    }

    fn size(&self, name: &str) -> Option<u64> {
        let b = self.bdev(name)?;
        Some(b.get("num_blocks")?.as_u64()? * b.get("block_size")?.as_u64()?)
    }

    /// `driver_specific.<kind>.<field>` of bdev `name`.
    fn detail(&self, name: &str, kind: &str, field: &str) -> Option<&str> {
        self.bdev(name)?
            .get("driver_specific")?
            .get(kind)?
            .get(field)?
            .as_str()
    }

    fn lvols(&self) -> impl Iterator<Item = Lvol> + '_ {
        self.bdevs.iter().filter_map(Lvol::from_bdev)
    }

    fn marker(&self, prefix: &str) -> Option<(Lvol, Spec)> {
        self.lvols().find_map(|l| {
            let s = Spec::parse_flags(l.name.strip_prefix(prefix)?)?;
            Some((l, s))
        })
    }

    /// The record of volume `l` (its intent when the commit was cut short).
    pub fn record(&self, l: &Lvol) -> Option<Spec> {
        self.marker(&record_prefix(&l.uuid))
            .or_else(|| self.marker(&intent_prefix(&l.name)))
            .map(|(_, s)| s)
    }

    /// The record of the volume whose lvol UUID is `uuid` (deleted or not).
    fn record_of_uuid(&self, uuid: &str) -> Option<Spec> {
        self.marker(&record_prefix(uuid)).map(|(_, s)| s)
    }

    /// The top of volume `l`'s stack over `base` when every piece is there, else what is
    /// missing or wrong.
    fn top(&self, l: &Lvol, spec: &Spec, base: &str) -> std::result::Result<String, Vec<String>> {
        let mut missing = Vec::new();
        let mut top = base.to_string();
        if spec.key_fingerprint.is_some() {
            let (key, crypto) = (key_name(&l.uuid), crypto_name(&l.uuid));
            if !self.keys.contains(&key) {
                missing.push(format!("crypto key {key}"));
            }
            match self.detail(&crypto, "crypto", "base_bdev_name") {
                None => missing.push(format!("crypto bdev {crypto}")),
                Some(b) if b != top => {
                    missing.push(format!("crypto bdev {crypto} over {top} (it is over {b})"))
                }
                Some(_) => {}
            }
            top = crypto;
        }
        if let Some(c) = spec.compression {
            let comp = compress_name(&l.uuid);
            match self.detail(&comp, "compress", "base_bdev_name") {
                None => missing.push(format!("compress bdev {comp} ({})", c.as_str())),
                Some(b) if b != top => {
                    missing.push(format!("compress bdev {comp} over {top} (it is over {b})"))
                }
                Some(_) => {}
            }
            top = comp;
        }
        if missing.is_empty() {
            Ok(top)
        } else {
            Err(missing)
        }
    }

    /// A stacked volume's capacity (its top's size), its context and whether it is whole:
    /// applied to `v`, the volume as the lvol (or mirror) gives it. A stack with pieces
    /// missing keeps the base's capacity.
    pub fn describe(&self, l: &Lvol, v: &mut pb::Volume) -> Option<Vec<String>> {
        let spec = self.record(l)?;
        v.volume_context.extend(spec.context());
        let base = base_name(l);
        match self.top(l, &spec, &base) {
            Ok(top) => {
                if let Some(s) = self.size(&top) {
                    v.capacity_bytes = s as i64;
                }
                None
            }
            Err(missing) => Some(missing),
        }
    }

    /// `cond` made abnormal when volume `l`'s stack has pieces missing.
    pub fn condition(&self, l: &Lvol, mut cond: pb::VolumeCondition) -> pb::VolumeCondition {
        let mut v = pb::Volume::default();
        if let Some(missing) = self.describe(l, &mut v) {
            let msg = format!(
                "stack incomplete, not exported: {} missing",
                missing.join(", ")
            );
            cond.message = if cond.message.is_empty() {
                msg
            } else {
                format!("{msg}; {}", cond.message)
            };
            cond.abnormal = true;
        }
        cond
    }
}

/// The bdev a stack is built on: the mirror of a replicated volume, else the lvol.
fn base_name(l: &Lvol) -> String {
    if replicas::is_replicated(&l.name) {
        replicas::mirror_name(&l.uuid)
    } else {
        l.uuid.clone()
    }
}

fn protocol(n: &NodeHandle, method: &str, v: &Value) -> Error {
    let mut s = v.to_string();
    s.truncate(200);
    Error::Protocol {
        node: n.id().into(),
        method: method.into(),
        detail: s,
    }
}

/// Calls `method`; an error with code `ok_code` counts as done.
async fn call_ok(n: &NodeHandle, method: &str, p: Value, ok_code: i64) -> Result<()> {
    match n.rpc.call(method, Some(p)).await {
        Ok(_) => Ok(()),
        Err(e) if e.rpc_code() == Some(ok_code) => Ok(()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------- operations --

/// The stack record of volume `l` on `n`, if it has one.
pub async fn record(n: &NodeHandle, l: &Lvol) -> Result<Option<Spec>> {
    Ok(NodeState::of(n).await?.record(l))
}

/// The bdev ControllerPublish exports for volume `l` on node `n`: the top of its stack, or
/// what [`replicas::export_bdev`] gives for an unstacked volume. A stack with pieces missing
/// is FAILED_PRECONDITION naming them (its base holds ciphertext or compressed data).
pub async fn export_bdev(n: &NodeHandle, l: &Lvol) -> Result<String> {
    let base = replicas::export_bdev(n, l).await?;
    let st = NodeState::of(n).await?;
    let Some(spec) = st.record(l) else {
        return Ok(base);
    };
    st.top(l, &spec, &base).map_err(|missing| {
        Error::FailedPrecondition(format!(
            "node {}: the volume ({}) lacks {} (ballastd restarted without its saved \
             configuration?); its {} alone is never exported",
            n.id(),
            spec.describe(),
            missing.join(", "),
            if base == l.uuid { "lvol" } else { "mirror" },
        ))
    })
}

/// Writes the intent of a new volume `lname` with stack `spec` on every node with a store,
/// replacing stale intents of the name (a CreateVolume cut short before its volume existed).
pub async fn prepare(nodes: &Nodes, lname: &str, spec: &Spec) -> Result<()> {
    let prefix = intent_prefix(lname);
    let name = format!("{prefix}{}", spec.flags());
    for n in nodes.iter() {
        let Some(store) = n.store_if_any().await? else {
            continue;
        };
        let st = NodeState::of(n).await?;
        let mut have = false;
        for l in st.lvols().filter(|l| l.name.starts_with(&prefix)) {
            if l.name == name {
                have = true;
            } else {
                n.delete_lvol(&l.uuid).await?;
            }
        }
        if !have {
            n.create_lvol(&name, store.cluster_size, true).await?;
        }
    }
    Ok(())
}

/// Deletes the intents of `lname` (a CreateVolume that failed before its volume existed);
/// best effort: what is left is replaced by the next CreateVolume of the name.
pub async fn abandon(nodes: &Nodes, lname: &str) {
    let prefix = intent_prefix(lname);
    for n in nodes.iter() {
        let Ok(st) = NodeState::of(n).await else {
            continue;
        };
        for m in st.lvols().filter(|m| m.name.starts_with(&prefix)) {
            if let Err(e) = n.delete_lvol(&m.uuid).await {
                tracing::warn!(node = n.id(), intent = %m.name, "not deleted: {e}");
            }
        }
    }
}

/// Makes volume `l` on `n` the stack `want` says, completing what is missing: its record
/// (from its intent, whose copies on other nodes are deleted), the key, the crypto and the
/// compress stage, each checked first. The caller has checked that the record, if any,
/// matches `want`.
pub async fn ensure(nodes: &Nodes, n: &NodeHandle, l: &Lvol, want: &Want) -> Result<()> {
    let st = NodeState::of(n).await?;
    let spec = &want.spec;
    let rec = format!("{}{}", record_prefix(&l.uuid), spec.flags());
    let intent = intent_prefix(&l.name);
    if st.marker(&record_prefix(&l.uuid)).is_none() {
        match st.marker(&intent) {
            Some((m, _)) => {
                n.rpc
                    .call(
                        "bdev_lvol_rename",
                        Some(json!({"old_name": m.uuid, "new_name": rec})),
                    )
                    .await?;
            }
            None => {
                let store = n.store().await?;
                n.create_lvol(&rec, store.cluster_size, true).await?;
            }
        }
        tracing::info!(node = n.id(), lvol = %l.uuid, stack = %spec.describe(), "stack recorded");
    }
    for o in nodes.iter() {
        let st_o = match NodeState::of(o).await {
            Ok(s) => s,
            Err(e @ Error::Unavailable { .. }) => {
                tracing::warn!(node = o.id(), "stale intents not removed: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        for m in st_o.lvols().filter(|m| m.name.starts_with(&intent)) {
            o.delete_lvol(&m.uuid).await?;
        }
    }

    let mut top = replicas::export_bdev(n, l).await?;
    if spec.key_fingerprint.is_some() {
        let key = key_name(&l.uuid);
        if !st.keys.contains(&key) {
            let k = want.key.as_ref().ok_or_else(|| {
                Error::InvalidArgument("encryption needs a key in the secrets".into())
            })?;
            // The params carry the key material: never logged (rpc.rs logs method names).
            let p = json!({"cipher": "AES_XTS", "key": Key::hex(&k.k1),
                           "key2": Key::hex(&k.k2), "name": key});
            call_ok(n, "accel_crypto_key_create", p, rpc_code::EEXIST).await?;
            tracing::info!(node = n.id(), %key, "crypto key created");
        }
        let crypto = crypto_name(&l.uuid);
        let p = json!({"base_bdev_name": top, "name": crypto, "key_name": key});
        ensure_stage(n, &st, "crypto", &crypto, &top, p).await?;
        top = crypto;
    }
    if let Some(c) = spec.compression {
        let comp = compress_name(&l.uuid);
        let p = json!({"base_bdev_name": top, "name": comp, "algorithm": c.as_str()});
        ensure_stage(n, &st, "compress", &comp, &top, p).await?;
    }
    Ok(())
}

/// Stage `name` of `kind` ("crypto", "compress") over `base` on `n`: kept when it is there
/// (over another base: FAILED_PRECONDITION), else made with `bdev_<kind>_create` `params`.
async fn ensure_stage(
    n: &NodeHandle,
    st: &NodeState,
    kind: &str,
    name: &str,
    base: &str,
    params: Value,
) -> Result<()> {
    match st.detail(name, kind, "base_bdev_name") {
        Some(b) if b == base => Ok(()),
        Some(b) => Err(Error::FailedPrecondition(format!(
            "node {}: {kind} bdev {name} is over {b}, not {base}",
            n.id()
        ))),
        None => {
            let method = format!("bdev_{kind}_create");
            n.rpc.call(&method, Some(params)).await?;
            tracing::info!(node = n.id(), bdev = %name, %base, "{kind} stage created");
            Ok(())
        }
    }
}

/// Deletes volume `l`'s stack on `n` top-down (compress, crypto, key); what is gone already
/// is fine. A stage in use (exported) is FAILED_PRECONDITION.
pub async fn teardown(n: &NodeHandle, l: &Lvol) -> Result<()> {
    for (method, name) in [
        ("bdev_compress_delete", compress_name(&l.uuid)),
        ("bdev_crypto_delete", crypto_name(&l.uuid)),
    ] {
        match n.rpc.call(method, Some(json!({ "name": name }))).await {
            Ok(_) => tracing::info!(node = n.id(), bdev = %name, "stage deleted"),
            Err(e) if e.rpc_code() == Some(rpc_code::ENODEV) => {}
            Err(e) if e.rpc_code() == Some(rpc_code::EBUSY) => {
                return Err(Error::FailedPrecondition(format!(
                    "node {}: {name} is in use (published?): {e}",
                    n.id()
                )))
            }
            Err(e) => return Err(e),
        }
    }
    let key = key_name(&l.uuid);
    match n
        .rpc
        .call("accel_crypto_key_destroy", Some(json!({ "key_name": key })))
        .await
    {
        Ok(_) => tracing::info!(node = n.id(), %key, "crypto key destroyed"),
        Err(e) if e.rpc_code() == Some(rpc_code::ENODEV) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// After volume `l` of `n` is deleted: deletes its record and intent, unless snapshots of it
/// remain (their clones must stay refused), and records of other deleted volumes whose
/// snapshots are gone.
pub async fn forget(n: &NodeHandle, l: &Lvol) -> Result<()> {
    let st = NodeState::of(n).await?;
    let lvols: Vec<Lvol> = st.lvols().collect();
    let snap_sources: Vec<String> = lvols
        .iter()
        .filter_map(|x| SnapName::parse(&x.name).map(|s| simple(&s.source)))
        .collect();
    let intent = intent_prefix(&l.name);
    for m in &lvols {
        let owner = m
            .name
            .strip_prefix(RECORD_PREFIX)
            .and_then(|r| r.split_once('-'))
            .map(|(u, _)| u.to_string());
        let stale = match owner {
            Some(u) => !snap_sources.contains(&u) && !lvols.iter().any(|x| simple(&x.uuid) == u),
            None => m.name.starts_with(&intent),
        };
        if stale {
            n.delete_lvol(&m.uuid).await?;
            tracing::info!(node = n.id(), record = %m.name, "stack record deleted");
        }
    }
    Ok(())
}

/// Refuses what clones cannot do yet: a content source for a stacked volume, or a stacked
/// volume (or a snapshot of one) as a content source — a clone would need the same stack
/// and key. Sources that cannot be resolved are left to the clone path (NOT_FOUND).
pub async fn check_source(nodes: &Nodes, src: &Source, want: Option<&Want>) -> Result<()> {
    if want.is_some() {
        return Err(Error::InvalidArgument(
            "a content source (snapshot or volume) for an encrypted or compressed volume is \
             not built yet"
                .into(),
        ));
    }
    let (id, is_snapshot) = match src {
        Source::Snapshot(i) => (i, true),
        Source::Volume(i) => (i, false),
    };
    let Some(vid) = VolumeId::parse(id) else {
        return Ok(());
    };
    let Some(n) = nodes.get(&vid.node) else {
        return Ok(());
    };
    let st = NodeState::of(n).await?;
    let owner = if is_snapshot {
        match n.lvol(&vid.lvol_uuid).await? {
            Some(s) => match SnapName::parse(&s.name) {
                Some(s) => s.source,
                None => return Ok(()),
            },
            None => return Ok(()),
        }
    } else {
        vid.lvol_uuid.clone()
    };
    let spec = match n.lvol(&owner).await? {
        Some(l) => st.record(&l),
        None => st.record_of_uuid(&owner),
    };
    match spec {
        Some(s) => Err(Error::InvalidArgument(format!(
            "the content source is {} with {}: clones of encrypted or compressed volumes \
             are not built yet",
            if is_snapshot {
                "a snapshot of a volume"
            } else {
                "a volume"
            },
            s.describe()
        ))),
        None => Ok(()),
    }
}

/// Why an existing volume with stack record `have` does not match the parameters `p` and
/// the key of `want`, if it does not.
pub fn conflict(have: Option<&Spec>, p: &Params, want: Option<&Want>) -> Option<String> {
    if let Some(c) = Spec::params_conflict(have, p) {
        return Some(c);
    }
    let have_fp = have.and_then(|h| h.key_fingerprint.as_ref());
    let want_fp = want.and_then(|w| w.spec.key_fingerprint.as_ref());
    match (have_fp, want_fp) {
        (Some(a), Some(b)) if a != b => Some("another encryption key".into()),
        _ => None,
    }
}

/// The capacity range to make the base (lvol or mirror) of a volume with stack `spec` for
/// `range`: larger for compression (see the module doc), else `range` itself. The caller
/// checks the top's size against `range` afterwards.
pub fn base_range(range: Option<&pb::CapacityRange>, spec: &Spec) -> Option<pb::CapacityRange> {
    if spec.compression.is_none() {
        return range.cloned();
    }
    let (req, lim) = range.map_or((0, 0), |r| {
        (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64)
    });
    if req == 0 && lim != 0 {
        // Only a limit: a base within it gives a smaller volume.
        return range.cloned();
    }
    let want = if req == 0 { DEFAULT_SIZE } else { req };
    let base = want + want / 64 + (2 << 20);
    Some(pb::CapacityRange {
        required_bytes: base.min(i64::MAX as u64) as i64,
        limit_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const K64: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K64B: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

    #[test]
    fn keys_from_secrets_are_checked_without_echoing_them() {
        assert!(Key::from_secrets(&secrets(&[])).unwrap().is_none());
        let k = Key::from_secrets(&secrets(&[(SECRET_KEY, &format!("{K64}{K64B}\n"))]))
            .unwrap()
            .unwrap();
        assert_eq!((k.k1.len(), k.k2.len()), (32, 32));
        let k2 = Key::from_secrets(&secrets(&[(SECRET_KEY, K64), (SECRET_KEY2, K64B)]))
            .unwrap()
            .unwrap();
        assert_eq!(k.fingerprint(), k2.fingerprint());
        assert_eq!(k.fingerprint().len(), 8);
        let k128 = Key::from_secrets(&secrets(&[(SECRET_KEY, K64)]))
            .unwrap()
            .unwrap();
        assert_eq!(k128.k1.len(), 16);
        assert_ne!(k128.fingerprint(), k.fingerprint());
        assert!(!format!("{k:?}").contains("0001"));
        for bad in [
            vec![(SECRET_KEY, "zz".repeat(32))],
            vec![(SECRET_KEY, "ab".repeat(20))],
            vec![(SECRET_KEY, format!("{K64}{K64}"))],
            vec![(SECRET_KEY, "00".repeat(64))],
            vec![(SECRET_KEY2, K64.to_string())],
            vec![
                (SECRET_KEY, K64.to_string()),
                (SECRET_KEY2, K64B[..32].to_string()),
            ],
        ] {
            let s: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let e = Key::from_secrets(&secrets(&s)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            let m = e.to_string();
            for (_, v) in &bad {
                assert!(!m.contains(&v[..16]), "{m}");
            }
        }
    }

    #[test]
    fn specs_round_trip_through_names() {
        for s in [
            Spec {
                key_fingerprint: Some("0a1b2c3d".into()),
                compression: Some(Compression::Zstd),
            },
            Spec {
                key_fingerprint: None,
                compression: Some(Compression::Lz4),
            },
            Spec {
                key_fingerprint: Some("ffffffff".into()),
                compression: None,
            },
        ] {
            assert_eq!(Spec::parse_flags(&s.flags()), Some(s.clone()));
            let u = "7f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
            let rec = format!("{}{}", record_prefix(u), s.flags());
            assert!(rec.len() <= 63, "{rec}");
            let int = format!("{}{}", intent_prefix("csi-pvc-1"), s.flags());
            assert!(int.len() <= 63, "{int}");
            assert!(!crate::volume::is_managed(&rec) && !crate::volume::is_managed(&int));
        }
        assert_eq!(Spec::parse_flags("q-n"), None);
        assert_eq!(Spec::parse_flags("p-gzip"), None);
        // The primary lvol of a replicated volume has its plain name's intent.
        assert_eq!(intent_prefix("csm-pvc-1"), intent_prefix("csi-pvc-1"));
        assert_eq!(intent_prefix("csmx-ab"), intent_prefix("csix-ab"));
    }

    #[test]
    fn compressed_bases_are_larger() {
        let spec = Spec {
            key_fingerprint: None,
            compression: Some(Compression::Lz4),
        };
        let r = |a: i64, b: i64| pb::CapacityRange {
            required_bytes: a,
            limit_bytes: b,
        };
        let b = base_range(Some(&r(64 << 20, 0)), &spec).unwrap();
        assert_eq!(b.required_bytes, (64 << 20) + (1 << 20) + (2 << 20));
        assert!(base_range(None, &spec).unwrap().required_bytes > DEFAULT_SIZE as i64);
        assert_eq!(base_range(Some(&r(0, 8 << 20)), &spec), Some(r(0, 8 << 20)));
        let plain = Spec {
            compression: None,
            ..spec
        };
        assert_eq!(base_range(Some(&r(5, 0)), &plain), Some(r(5, 0)));
    }
}
