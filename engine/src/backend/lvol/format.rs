//! The store's on-disk format: where things are, the superblock, the metadata log's records
//! and blocks, and the checkpoint. Every decoder checks bounds and checksums: metadata that
//! fails is reported ([`Error::Corrupt`]), never trusted.
//!
//! ```text
//!  base: [sb 0][sb 1][checkpoint A][checkpoint B][log ring: 4 KiB blocks][pad][clusters ...]
//!         4 KiB each  ckpt_bytes each             log_blocks × 4 KiB        ▲ data_start
//! ```
//!
//! The superblock with the highest generation (and a good CRC) names the active checkpoint
//! and the first log block after it (`ckpt_seq`). Log block `s` lives at ring position
//! `s % log_blocks`; replay reads blocks `ckpt_seq, ckpt_seq+1, …` and stops at the first whose
//! CRC fails or whose sequence number is not the one expected (a stale block of an earlier lap).
//! A commit's blocks count the blocks after them in the same commit, and replay applies a
//! commit only whole: the records of one operation may straddle blocks.

use crate::error::{Error, Result};

/// Metadata I/O unit (superblock slot, log block).
pub(crate) const MD_BLOCK: u64 = 4096;
const SB_MAGIC: &[u8; 8] = b"BLSTLVS1";
const CKPT_MAGIC: &[u8; 8] = b"BLSTCKP1";
const LOG_MAGIC: u32 = 0x474c_4c42; // "BLLG"
const VERSION: u32 = 1;
/// Bytes of a log block's header.
pub(crate) const LOG_HDR: usize = 24;
/// Bytes of a checkpoint's lvol entry without its name and runs.
const CKPT_LVOL: usize = 4 + 16 + 1 + 1 + 4 + 8 + 1 + 4;
/// Bytes of a cluster run in a checkpoint.
const CKPT_RUN: usize = 16;
/// No parent / no cluster.
pub(crate) const NONE: u32 = u32::MAX;
/// Largest cluster.
pub(crate) const MAX_CLUSTER: u64 = 1 << 30;
/// Most data clusters a store has (cluster numbers are u32; [`NONE`] is not one).
pub(crate) const MAX_CLUSTERS: u64 = u32::MAX as u64 - 1;
/// Most lvols a store holds.
pub(crate) const MAX_LVOLS: u32 = 16384;
/// Most metadata log blocks.
const MAX_LOG_BLOCKS: u32 = 1 << 16;
/// Log blocks of a new store: at least (every store made before the log was sized by the
/// checkpoint has this many)...
const MIN_NEW_LOG_BLOCKS: u64 = 256;
/// ...and at most (16 MiB).
const MAX_NEW_LOG_BLOCKS: u64 = 4096;
/// Largest checkpoint area.
const MAX_CKPT_BYTES: u64 = 1 << 36;

/// Where the parts of a store are on its base, and its fixed parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) block_size: u32,
    pub(crate) cluster_sz: u64,
    /// Clusters the checkpoint area has room for (create-time count × 4: grow's headroom).
    pub(crate) max_clusters: u64,
    pub(crate) max_lvols: u32,
    pub(crate) ckpt_bytes: u64,
    pub(crate) log_blocks: u32,
    /// First byte of cluster 0.
    pub(crate) data_start: u64,
}

impl Layout {
    /// The layout of a new store on `base_bytes` of a base with `block_size`.
    pub(crate) fn new(base_bytes: u64, block_size: u32, cluster_sz: u64) -> Result<Layout> {
        let raw = base_bytes / cluster_sz;
        let max_clusters = raw.saturating_mul(4).clamp(64, MAX_CLUSTERS);
        let max_lvols = raw.clamp(1024, MAX_LVOLS as u64) as u32;
        let ckpt =
            4096 + max_lvols as u64 * (CKPT_LVOL as u64 + 64) + max_clusters * CKPT_RUN as u64;
        let ckpt_bytes = ckpt.div_ceil(MD_BLOCK) * MD_BLOCK;
        // A checkpoint is written each time the log is half full: a log of four checkpoint
        // areas keeps that under half a log block per commit even for a full store (a store
        // with thousands of lvols would otherwise rewrite its whole state every 128 commits).
        // The log stays within 1/64 of the base. Its size is in the superblock: stores made
        // with another size open as they are.
        let log_blocks = (4 * ckpt_bytes / MD_BLOCK)
            .min(base_bytes / 64 / MD_BLOCK)
            .clamp(MIN_NEW_LOG_BLOCKS, MAX_NEW_LOG_BLOCKS) as u32;
        let md = 2 * MD_BLOCK + 2 * ckpt_bytes + log_blocks as u64 * MD_BLOCK;
        let data_start = md.div_ceil(cluster_sz) * cluster_sz;
        if data_start + cluster_sz > base_bytes {
            return Err(Error::NoSpace(format!(
                "a {base_bytes}-byte bdev has no room for an lvol store with {cluster_sz}-byte \
                 clusters (its metadata needs {data_start} bytes)"
            )));
        }
        Ok(Layout {
            block_size,
            cluster_sz,
            max_clusters,
            max_lvols,
            ckpt_bytes,
            log_blocks,
            data_start,
        })
    }

    /// Data clusters on a base of `base_bytes`.
    pub(crate) fn clusters(&self, base_bytes: u64) -> u64 {
        (base_bytes.saturating_sub(self.data_start) / self.cluster_sz).min(self.max_clusters)
    }

    pub(crate) fn ckpt_off(&self, which: u8) -> u64 {
        2 * MD_BLOCK + which as u64 * self.ckpt_bytes
    }

    pub(crate) fn log_off(&self) -> u64 {
        2 * MD_BLOCK + 2 * self.ckpt_bytes
    }

    /// Byte offset of log block `seq`.
    pub(crate) fn log_block_off(&self, seq: u64) -> u64 {
        self.log_off() + (seq % self.log_blocks as u64) * MD_BLOCK
    }

    /// Blocks per cluster.
    pub(crate) fn bpc(&self) -> u64 {
        self.cluster_sz / self.block_size as u64
    }

    /// First block of data cluster `phys`.
    pub(crate) fn cluster_block(&self, phys: u32) -> u64 {
        (self.data_start + phys as u64 * self.cluster_sz) / self.block_size as u64
    }
}

/// The superblock (two slots; the valid one with the highest generation counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub(crate) gen: u64,
    pub(crate) uuid: uuid::Uuid,
    pub(crate) layout: Layout,
    /// The active checkpoint area (0 or 1), its length and CRC.
    pub(crate) ckpt: u8,
    pub(crate) ckpt_len: u64,
    pub(crate) ckpt_crc: u32,
    /// The first log block to replay after the checkpoint.
    pub(crate) ckpt_seq: u64,
}

struct W<'a>(&'a mut Vec<u8>);
impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v)
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    fn uuid(&mut self, u: &uuid::Uuid) {
        self.0.extend_from_slice(u.as_bytes())
    }
    fn name(&mut self, s: &str) {
        let b = &s.as_bytes()[..s.len().min(255)];
        self.u8(b.len() as u8);
        self.0.extend_from_slice(b);
    }
}

/// A bounds-checked reader: every read past the end is an error, never a panic.
pub(crate) struct R<'a> {
    b: &'a [u8],
    pos: usize,
}
impl<'a> R<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        R { b, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| Error::Corrupt("truncated metadata".into()))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn uuid(&mut self) -> Result<uuid::Uuid> {
        Ok(uuid::Uuid::from_bytes(self.take(16)?.try_into().unwrap()))
    }
    fn name(&mut self) -> Result<String> {
        let n = self.u8()? as usize;
        let s = std::str::from_utf8(self.take(n)?)
            .map_err(|_| Error::Corrupt("a name is not UTF-8".into()))?;
        Ok(s.to_string())
    }
    pub(crate) fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
}

fn corrupt(why: impl Into<String>) -> Error {
    Error::Corrupt(why.into())
}

impl Superblock {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(MD_BLOCK as usize);
        let mut w = W(&mut v);
        w.0.extend_from_slice(SB_MAGIC);
        w.u32(VERSION);
        w.u32(0);
        w.u64(self.gen);
        w.uuid(&self.uuid);
        let l = &self.layout;
        w.u32(l.block_size);
        w.u32(l.max_lvols);
        w.u64(l.cluster_sz);
        w.u64(l.max_clusters);
        w.u64(l.ckpt_bytes);
        w.u32(l.log_blocks);
        w.u64(l.data_start);
        w.u8(self.ckpt);
        w.u64(self.ckpt_len);
        w.u32(self.ckpt_crc);
        w.u64(self.ckpt_seq);
        v.resize(MD_BLOCK as usize - 4, 0);
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    /// True if `b` starts with the store's magic (a store, good or damaged).
    pub(crate) fn has_magic(b: &[u8]) -> bool {
        b.len() >= 8 && &b[..8] == SB_MAGIC
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Superblock> {
        if b.len() < MD_BLOCK as usize || !Self::has_magic(b) {
            return Err(corrupt("no lvol store superblock"));
        }
        let n = MD_BLOCK as usize - 4;
        let crc = u32::from_le_bytes(b[n..n + 4].try_into().unwrap());
        if crc32c::crc32c(&b[..n]) != crc {
            return Err(corrupt("superblock checksum mismatch"));
        }
        let mut r = R::new(&b[8..n]);
        if r.u32()? != VERSION {
            return Err(corrupt("unknown superblock version"));
        }
        r.u32()?;
        let gen = r.u64()?;
        let uuid = r.uuid()?;
        let block_size = r.u32()?;
        let max_lvols = r.u32()?;
        let cluster_sz = r.u64()?;
        let max_clusters = r.u64()?;
        let ckpt_bytes = r.u64()?;
        let log_blocks = r.u32()?;
        let data_start = r.u64()?;
        let layout = Layout {
            block_size,
            cluster_sz,
            max_clusters,
            max_lvols,
            ckpt_bytes,
            log_blocks,
            data_start,
        };
        let sb = Superblock {
            gen,
            uuid,
            layout,
            ckpt: r.u8()?,
            ckpt_len: r.u64()?,
            ckpt_crc: r.u32()?,
            ckpt_seq: r.u64()?,
        };
        // Every field within what Layout::new makes (so no arithmetic on them overflows and
        // no read they size is huge) before any is used.
        let ok = (block_size == 512 || block_size == 4096)
            && cluster_sz.is_power_of_two()
            && (MD_BLOCK..=MAX_CLUSTER).contains(&cluster_sz)
            && cluster_sz % block_size as u64 == 0
            && (8..=MAX_LOG_BLOCKS).contains(&log_blocks)
            && max_clusters <= MAX_CLUSTERS
            && (1..=MAX_LVOLS).contains(&max_lvols)
            && ckpt_bytes % MD_BLOCK == 0
            && ckpt_bytes <= MAX_CKPT_BYTES
            && sb.ckpt <= 1
            && sb.ckpt_len <= ckpt_bytes
            && data_start >= layout.log_off() + log_blocks as u64 * MD_BLOCK
            && data_start <= layout.log_off() + log_blocks as u64 * MD_BLOCK + cluster_sz
            && data_start % cluster_sz == 0;
        if !ok {
            return Err(corrupt("superblock fields out of range"));
        }
        Ok(sb)
    }
}

/// One metadata change. Applied to the in-memory state when made, and again at replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// A new lvol (a clone when `parent` is set).
    Create {
        id: u32,
        uuid: uuid::Uuid,
        name: String,
        flags: u8,
        clear: u8,
        parent: u32,
        size: u64,
    },
    /// Logical clusters `idx..idx+len` of lvol `id` are data clusters `phys..phys+len`.
    Map {
        id: u32,
        idx: u64,
        phys: u32,
        len: u32,
    },
    /// Clusters `phys..phys+len` are taken for a copy in progress (zeroed and freed at open
    /// if no Map names them).
    Reserve { phys: u32, len: u32 },
    /// Lvol `origin`'s clusters go to new read-only lvol `id`, which becomes its parent.
    Snapshot {
        origin: u32,
        id: u32,
        uuid: uuid::Uuid,
        name: String,
    },
    /// Lvol `id` goes (a snapshot with one clone is merged into it); its clusters are free.
    Delete { id: u32 },
    /// Lvol `id` is `size` clusters long now (clusters beyond are free).
    Resize { id: u32, size: u64 },
    /// Lvol `id` is read-only.
    ReadOnly { id: u32 },
    /// Lvol `id` is called `name`.
    Rename { id: u32, name: String },
    /// The store is called `name`.
    RenameStore { name: String },
    /// Lvol `id`'s parent is `parent` ([`NONE`]: none).
    SetParent { id: u32, parent: u32 },
    /// The store has `total` data clusters.
    Grow { total: u64 },
    /// Lvol `id` is thick now (every cluster its own: inflated).
    Thick { id: u32 },
}

/// Lvol flag bits.
pub(crate) const F_THIN: u8 = 1;
pub(crate) const F_RO: u8 = 2;
pub(crate) const F_SNAP: u8 = 4;

impl Record {
    pub(crate) fn encode(&self, v: &mut Vec<u8>) {
        let mut w = W(v);
        match self {
            Record::Create {
                id,
                uuid,
                name,
                flags,
                clear,
                parent,
                size,
            } => {
                w.u8(1);
                CkptLvolHead {
                    id: *id,
                    uuid,
                    name,
                    flags: *flags,
                    clear: *clear,
                    parent: *parent,
                    size: *size,
                }
                .encode(&mut w);
            }
            Record::Map { id, idx, phys, len } => {
                w.u8(2);
                w.u32(*id);
                w.u64(*idx);
                w.u32(*phys);
                w.u32(*len);
            }
            Record::Reserve { phys, len } => {
                w.u8(3);
                w.u32(*phys);
                w.u32(*len);
            }
            Record::Snapshot {
                origin,
                id,
                uuid,
                name,
            } => {
                w.u8(4);
                w.u32(*origin);
                w.u32(*id);
                w.uuid(uuid);
                w.name(name);
            }
            Record::Delete { id } => {
                w.u8(5);
                w.u32(*id);
            }
            Record::Resize { id, size } => {
                w.u8(6);
                w.u32(*id);
                w.u64(*size);
            }
            Record::ReadOnly { id } => {
                w.u8(7);
                w.u32(*id);
            }
            Record::Rename { id, name } => {
                w.u8(8);
                w.u32(*id);
                w.name(name);
            }
            Record::RenameStore { name } => {
                w.u8(9);
                w.name(name);
            }
            Record::SetParent { id, parent } => {
                w.u8(10);
                w.u32(*id);
                w.u32(*parent);
            }
            Record::Grow { total } => {
                w.u8(11);
                w.u64(*total);
            }
            Record::Thick { id } => {
                w.u8(12);
                w.u32(*id);
            }
        }
    }

    pub(crate) fn decode(r: &mut R<'_>) -> Result<Record> {
        Ok(match r.u8()? {
            1 => Record::Create {
                id: r.u32()?,
                uuid: r.uuid()?,
                name: r.name()?,
                flags: r.u8()?,
                clear: r.u8()?,
                parent: r.u32()?,
                size: r.u64()?,
            },
            2 => Record::Map {
                id: r.u32()?,
                idx: r.u64()?,
                phys: r.u32()?,
                len: r.u32()?,
            },
            3 => Record::Reserve {
                phys: r.u32()?,
                len: r.u32()?,
            },
            4 => Record::Snapshot {
                origin: r.u32()?,
                id: r.u32()?,
                uuid: r.uuid()?,
                name: r.name()?,
            },
            5 => Record::Delete { id: r.u32()? },
            6 => Record::Resize {
                id: r.u32()?,
                size: r.u64()?,
            },
            7 => Record::ReadOnly { id: r.u32()? },
            8 => Record::Rename {
                id: r.u32()?,
                name: r.name()?,
            },
            9 => Record::RenameStore { name: r.name()? },
            10 => Record::SetParent {
                id: r.u32()?,
                parent: r.u32()?,
            },
            11 => Record::Grow { total: r.u64()? },
            12 => Record::Thick { id: r.u32()? },
            t => return Err(corrupt(format!("unknown metadata record type {t}"))),
        })
    }
}

/// Packs encoded records (each whole) into log blocks numbered from `seq`: one commit. Each
/// block's header counts the blocks of the commit after it, so that replay applies a commit
/// only whole (its records may straddle blocks: a thick create's Create and Map records; the
/// blocks go in one write, which a power cut may tear).
pub(crate) fn log_blocks(records: &[Vec<u8>], seq: u64) -> Vec<u8> {
    let cap = MD_BLOCK as usize - LOG_HDR;
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::with_capacity(cap);
    for r in records {
        debug_assert!(r.len() <= cap);
        if cur.len() + r.len() > cap {
            payloads.push(std::mem::take(&mut cur));
        }
        cur.extend_from_slice(r);
    }
    if !cur.is_empty() {
        payloads.push(cur);
    }
    let mut out = Vec::with_capacity(payloads.len() * MD_BLOCK as usize);
    for (k, p) in payloads.iter().enumerate() {
        let start = out.len();
        let more = (payloads.len() - 1 - k) as u32;
        out.extend_from_slice(&LOG_MAGIC.to_le_bytes());
        out.extend_from_slice(&(seq + k as u64).to_le_bytes());
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 4]); // crc
        out.extend_from_slice(&more.to_le_bytes());
        out.extend_from_slice(p);
        out.resize(start + MD_BLOCK as usize, 0);
        let crc = crc32c::crc32c(&out[start..start + MD_BLOCK as usize]);
        out[start + 16..start + 20].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// The records of log block `b` if it is a good block numbered `seq`, and how many blocks of
/// its commit follow it (None: the log ends).
pub(crate) fn read_log_block(b: &[u8], seq: u64) -> Option<Result<(Vec<Record>, u32)>> {
    if b.len() < MD_BLOCK as usize || u32::from_le_bytes(b[0..4].try_into().unwrap()) != LOG_MAGIC {
        return None;
    }
    if u64::from_le_bytes(b[4..12].try_into().unwrap()) != seq {
        return None;
    }
    let used = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(b[16..20].try_into().unwrap());
    let more = u32::from_le_bytes(b[20..24].try_into().unwrap());
    let mut copy = b[..MD_BLOCK as usize].to_vec();
    copy[16..20].fill(0);
    if crc32c::crc32c(&copy) != crc || used > MD_BLOCK as usize - LOG_HDR {
        return None;
    }
    let mut r = R::new(&b[LOG_HDR..LOG_HDR + used]);
    let mut v = Vec::new();
    while !r.done() {
        match Record::decode(&mut r) {
            Ok(rec) => v.push(rec),
            // A block whose CRC holds but whose records do not decode was written wrong.
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok((v, more)))
}

/// An lvol as a checkpoint holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CkptLvol {
    pub(crate) id: u32,
    pub(crate) uuid: uuid::Uuid,
    pub(crate) name: String,
    pub(crate) flags: u8,
    pub(crate) clear: u8,
    pub(crate) parent: u32,
    pub(crate) size: u64,
    /// (first logical cluster, first data cluster, length).
    pub(crate) runs: Vec<(u64, u32, u32)>,
}

/// The whole metadata state at one point.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    pub(crate) seq: u64,
    pub(crate) name: String,
    pub(crate) total: u64,
    pub(crate) next_id: u32,
    pub(crate) free: u64,
    pub(crate) lvols: Vec<CkptLvol>,
    pub(crate) reserved: Vec<(u32, u32)>,
}

/// An lvol's entry in a checkpoint, without its runs (see [`CkptWriter::lvol`]); a
/// [`Record::Create`] holds the same fields, encoded alike.
pub(crate) struct CkptLvolHead<'a> {
    pub(crate) id: u32,
    pub(crate) uuid: &'a uuid::Uuid,
    pub(crate) name: &'a str,
    pub(crate) flags: u8,
    pub(crate) clear: u8,
    pub(crate) parent: u32,
    pub(crate) size: u64,
}

impl CkptLvolHead<'_> {
    fn encode(&self, w: &mut W<'_>) {
        w.u32(self.id);
        w.uuid(self.uuid);
        w.name(self.name);
        w.u8(self.flags);
        w.u8(self.clear);
        w.u32(self.parent);
        w.u64(self.size);
    }
}

/// Encodes a checkpoint piece by piece: the header, each lvol followed by its runs, then the
/// reservations. The committer writes the state straight into it (no [`Checkpoint`] copy of
/// 10 000 names and run lists in between); [`Checkpoint::encode`] uses it too, so the two
/// make the same bytes.
pub(crate) struct CkptWriter {
    v: Vec<u8>,
    /// Where the lvol count is, and the count.
    lvols_at: usize,
    lvols: u32,
    /// Where the current lvol's run count is, and the count.
    runs_at: usize,
    runs: u32,
}

impl CkptWriter {
    /// A checkpoint of `lvols` lvols (a size hint) whose header holds the rest.
    pub(crate) fn new(
        seq: u64,
        name: &str,
        total: u64,
        next_id: u32,
        free: u64,
        lvols: usize,
    ) -> CkptWriter {
        let mut v = Vec::with_capacity(64 + lvols * (CKPT_LVOL + 16 + CKPT_RUN));
        let mut w = W(&mut v);
        w.0.extend_from_slice(CKPT_MAGIC);
        w.u64(seq);
        w.name(name);
        w.u64(total);
        w.u32(next_id);
        w.u64(free);
        let lvols_at = v.len();
        W(&mut v).u32(0); // counted as they come
        CkptWriter {
            v,
            lvols_at,
            lvols: 0,
            runs_at: 0,
            runs: 0,
        }
    }

    /// Starts an lvol's entry; its runs follow ([`CkptWriter::run`]).
    pub(crate) fn lvol(&mut self, l: &CkptLvolHead<'_>) {
        l.encode(&mut W(&mut self.v));
        self.runs_at = self.v.len();
        self.runs = 0;
        W(&mut self.v).u32(0);
        self.lvols += 1;
        let at = self.lvols_at;
        self.v[at..at + 4].copy_from_slice(&self.lvols.to_le_bytes());
    }

    /// One run of the current lvol: logical clusters `idx..idx+len` on data clusters
    /// `phys..phys+len`.
    pub(crate) fn run(&mut self, idx: u64, phys: u32, len: u32) {
        debug_assert!(self.lvols > 0);
        let mut w = W(&mut self.v);
        w.u64(idx);
        w.u32(phys);
        w.u32(len);
        self.runs += 1;
        let at = self.runs_at;
        self.v[at..at + 4].copy_from_slice(&self.runs.to_le_bytes());
    }

    /// Ends the checkpoint with the reservations (first cluster, length).
    pub(crate) fn finish(mut self, reserved: impl ExactSizeIterator<Item = (u32, u32)>) -> Vec<u8> {
        let mut w = W(&mut self.v);
        w.u32(reserved.len() as u32);
        for (p, n) in reserved {
            w.u32(p);
            w.u32(n);
        }
        self.v
    }
}

impl Checkpoint {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = CkptWriter::new(
            self.seq,
            &self.name,
            self.total,
            self.next_id,
            self.free,
            self.lvols.len(),
        );
        for l in &self.lvols {
            w.lvol(&CkptLvolHead {
                id: l.id,
                uuid: &l.uuid,
                name: &l.name,
                flags: l.flags,
                clear: l.clear,
                parent: l.parent,
                size: l.size,
            });
            for &(i, p, n) in &l.runs {
                w.run(i, p, n);
            }
        }
        w.finish(self.reserved.iter().copied())
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Checkpoint> {
        let mut r = R::new(b);
        if r.take(8)? != CKPT_MAGIC {
            return Err(corrupt("checkpoint magic missing"));
        }
        let mut c = Checkpoint {
            seq: r.u64()?,
            name: r.name()?,
            total: r.u64()?,
            next_id: r.u32()?,
            free: r.u64()?,
            ..Default::default()
        };
        let n = r.u32()? as usize;
        for _ in 0..n {
            let mut l = CkptLvol {
                id: r.u32()?,
                uuid: r.uuid()?,
                name: r.name()?,
                flags: r.u8()?,
                clear: r.u8()?,
                parent: r.u32()?,
                size: r.u64()?,
                runs: Vec::new(),
            };
            let runs = r.u32()? as usize;
            if runs > b.len() / CKPT_RUN {
                return Err(corrupt("checkpoint run count out of range"));
            }
            for _ in 0..runs {
                l.runs.push((r.u64()?, r.u32()?, r.u32()?));
            }
            c.lvols.push(l);
        }
        let n = r.u32()? as usize;
        if n > b.len() / 8 {
            return Err(corrupt("checkpoint reservation count out of range"));
        }
        for _ in 0..n {
            c.reserved.push((r.u32()?, r.u32()?));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_log_blocks() {
        let recs = vec![
            Record::Create {
                id: 1,
                uuid: uuid::Uuid::new_v4(),
                name: "a".repeat(63),
                flags: F_THIN,
                clear: 1,
                parent: NONE,
                size: 9,
            },
            Record::Map {
                id: 1,
                idx: 3,
                phys: 7,
                len: 2,
            },
            Record::Grow { total: 99 },
        ];
        let mut enc = Vec::new();
        for _ in 0..100 {
            for r in &recs {
                let mut v = Vec::new();
                r.encode(&mut v);
                enc.push(v);
            }
        }
        let blocks = log_blocks(&enc, 41);
        let n = blocks.len() / MD_BLOCK as usize;
        assert!(n > 1);
        let mut got = Vec::new();
        for (k, b) in blocks.chunks(MD_BLOCK as usize).enumerate() {
            let (recs, more) = read_log_block(b, 41 + k as u64).unwrap().unwrap();
            // Each block counts the blocks of its commit after it.
            assert_eq!(more as usize, n - 1 - k);
            got.extend(recs);
        }
        assert_eq!(got.len(), 300);
        assert_eq!(&got[..3], &recs[..]);
        // A wrong sequence number or a flipped bit ends the log.
        assert!(read_log_block(&blocks[..4096], 40).is_none());
        let mut bad = blocks[..4096].to_vec();
        bad[100] ^= 1;
        assert!(read_log_block(&bad, 41).is_none());
    }

    #[test]
    fn the_log_grows_with_the_checkpoint_area() {
        // Small stores (each test's, the metadata benchmark's 4 GiB one) keep 256 blocks, as
        // every store made before the log was sized; so does one whose base is small.
        for (bytes, cl) in [
            (5u64 << 20, 16u64 << 10),
            (16 << 20, 16 << 10),
            (1 << 30, 1 << 20),
            (4 << 30, 4 << 20),
            (64 << 20, 4096),
        ] {
            let l = Layout::new(bytes, 4096, cl).unwrap();
            assert_eq!(l.log_blocks, 256, "{bytes} bytes, {cl}-byte clusters");
        }
        // 16 384 clusters (as many lvols): four checkpoint areas of log, in the superblock.
        let big = Layout::new(64 << 30, 4096, 4 << 20).unwrap();
        assert_eq!(big.log_blocks as u64, 4 * big.ckpt_bytes / MD_BLOCK);
        assert!(big.log_blocks > 2000);
        let huge = Layout::new(1 << 50, 4096, 4 << 20).unwrap();
        assert_eq!(huge.log_blocks as u64, MAX_NEW_LOG_BLOCKS);
        let sb = Superblock {
            gen: 2,
            uuid: uuid::Uuid::new_v4(),
            layout: big,
            ckpt: 0,
            ckpt_len: 100,
            ckpt_crc: 7,
            ckpt_seq: 1,
        };
        assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
        // The same base as stores made before sized it: 256 blocks, data nearer the start.
        let mut old = big;
        old.log_blocks = 256;
        let md = 2 * MD_BLOCK + 2 * old.ckpt_bytes + 256 * MD_BLOCK;
        old.data_start = md.div_ceil(old.cluster_sz) * old.cluster_sz;
        let sb = Superblock { layout: old, ..sb };
        assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
    }

    #[test]
    fn superblock_and_checkpoint_round_trip_and_reject_damage() {
        let layout = Layout::new(1 << 30, 512, 1 << 20).unwrap();
        let sb = Superblock {
            gen: 5,
            uuid: uuid::Uuid::new_v4(),
            layout,
            ckpt: 1,
            ckpt_len: 100,
            ckpt_crc: 7,
            ckpt_seq: 12,
        };
        let b = sb.encode();
        assert_eq!(Superblock::decode(&b).unwrap(), sb);
        for i in [0, 9, 30, 4000, 4095] {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(Superblock::decode(&d).is_err(), "byte {i}");
        }
        let c = Checkpoint {
            seq: 3,
            name: "lvs".into(),
            total: 100,
            next_id: 4,
            free: 90,
            lvols: vec![CkptLvol {
                id: 2,
                uuid: uuid::Uuid::new_v4(),
                name: "v".into(),
                flags: F_THIN | F_RO,
                clear: 0,
                parent: NONE,
                size: 10,
                runs: vec![(0, 5, 3), (7, 1, 1)],
            }],
            reserved: vec![(50, 2)],
        };
        let e = c.encode();
        assert_eq!(Checkpoint::decode(&e).unwrap(), c);
        for cut in 0..e.len() {
            let _ = Checkpoint::decode(&e[..cut]); // never panics
        }
    }
}
