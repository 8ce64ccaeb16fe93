//! The compression stage: a thin, compressed volume kept on a base bdev (SPDK's compress
//! vbdev / reduce), with its metadata on the base so it re-opens after a restart.
//!
//! ```text
//!  base bdev:  [superblock 4 KiB][chunk map: 64 B per chunk][data units ...............]
//!                                   │ entry = units + length + CRCs   ▲
//!                                   └─────────────────────────────────┘
//!  write (per chunk): lock chunk ─► read+decompress old (partial chunk) ─► merge ─► compress
//!       ─► allocate new units ─► write units ─► update map entry in memory ─► write map block
//!       ─► free the old units once that map block is on the base ─► complete
//!  read (per chunk):  lock chunk ─► read units ─► check CRC ─► decompress ─► copy out
//!  flush ─► base flush (every completed write already has its data and map on the base)
//! ```
//!
//! Layout: the logical volume is cut into chunks (default 4 KiB on 512-byte-block bases, 16 KiB
//! on 4 KiB ones). A written chunk is
//! compressed (lz4 or zstd) and stored in whole *units* (chunk/8, at least one base block)
//! anywhere in the data area; a chunk that does not compress to fewer units than it has is
//! stored raw. An unwritten (or unmapped, or all-zero) chunk has an empty entry and no units
//! (thin allocation) and reads as zeros.
//!
//! Crash consistency without a journal: data is never overwritten in place. A chunk's new
//! units are durable before its map entry points at them, and its old units are reused only
//! after the map block that stops pointing at them is durable. On a base without a volatile
//! write cache "durable" is "completed"; on one with a cache (io_uring files and devices) the
//! stage waits for base flushes, in epochs: one flush covers every operation that started
//! waiting before it was submitted (`Step::DataFlush` for new units, `Vol::durable_free` for
//! old ones). A write completes when its map block write has completed, so a Flush through the
//! stage (a base flush) makes every completed write durable. After a crash, `kill -9` or power
//! loss, the map holds for each chunk either the old or the new version of every write in
//! flight, and every write completed before a completed Flush. Each entry carries a CRC of
//! itself and of the stored data: a torn or stale entry is detected and reads fail with EIO
//! instead of returning garbage. Tested by tests/power_loss.rs (a base whose cache loses any
//! subset of unflushed writes) and ballastd's tests/crash.rs (`kill -9` mid-storm).
//!
//! Concurrency: the chunk map, the unit allocator and the per-chunk locks are shared by the
//! volume's channels behind one mutex, held for a few hundred nanoseconds at each step of a
//! chunk operation (never across I/O, compression or copies). Overlapping operations on one
//! chunk are serialised by the chunk lock; waiting operations are retried by the channel's
//! poller.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_reactor::RuntimeHandle;
use smallvec::SmallVec;

use super::control::{control_io, CtlFail, CtlIo, SharedDesc};
use super::{Collect, Slab};
use crate::bdev::{
    self, BackendChannel, Bdev, BdevBackend, BdevInfo, BdevIo, Completions, IoCallback, IoChannel,
    IoSink, IoStatus, IoType, SgList,
};
use crate::buf::{self, IoBuf};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"BLSTCMP1";
const VERSION: u32 = 1;
/// Bytes of the superblock region (the map starts after it).
const SB_BYTES: u64 = 4096;
/// Bytes of a chunk map entry.
const ENTRY_BYTES: usize = 64;
/// Unit slots in an entry.
const MAX_UNITS: usize = 12;
/// Units a chunk is cut into (when the base's block size allows).
const UNITS_PER_CHUNK: u32 = 8;
/// Chunk rewrites that may hold new units before their old ones are freed (spare units).
const SPARE_CHUNKS: u64 = 64;
/// Default chunk size on bases with 512-byte blocks (512-byte units: 4 KiB I/O needs no
/// read-modify-write and reads decompress 4 KiB) and with 4 KiB blocks (4 KiB units).
const DEFAULT_CHUNK_512: u32 = 4096;
const DEFAULT_CHUNK_4K: u32 = 16 * 1024;
const MIN_CHUNK: u32 = 4096;
const MAX_CHUNK: u32 = 128 * 1024;
/// How long the control path waits for one metadata I/O.
const SYNC_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Metadata is read and written in pieces of this size at create time.
const META_IO_BYTES: usize = 1 << 20;

/// Compression algorithm of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// LZ4 (default).
    Lz4,
    /// Zstandard at `level` (1..=19).
    Zstd {
        /// Level (1 = fastest).
        level: i32,
    },
}

impl Algorithm {
    /// "lz4" or "zstd".
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Lz4 => "lz4",
            Algorithm::Zstd { .. } => "zstd",
        }
    }

    fn code(self) -> u8 {
        match self {
            Algorithm::Lz4 => 1,
            Algorithm::Zstd { .. } => 2,
        }
    }

    fn level(self) -> i32 {
        match self {
            Algorithm::Lz4 => 0,
            Algorithm::Zstd { level } => level,
        }
    }

    fn from_code(code: u8, level: i32) -> Option<Self> {
        match code {
            1 => Some(Algorithm::Lz4),
            2 => Some(Algorithm::Zstd { level }),
            _ => None,
        }
    }
}

/// Parameters of [`create`]. `None` fields take the on-disk value when the base already holds
/// a compressed volume, else the default (lz4; 4 KiB chunks on 512-byte-block bases, 16 KiB on
/// 4 KiB ones).
#[derive(Debug, Clone, Default)]
pub struct CompressOpts {
    /// Name of the new bdev (default "COMP_<base>").
    pub name: Option<String>,
    /// Base bdev.
    pub base: String,
    /// Algorithm ("lz4" or "zstd").
    pub algorithm: Option<String>,
    /// Zstd level (1..=19; default 1); refused with lz4.
    pub level: Option<i32>,
    /// Chunk size in bytes (power of two, 4 KiB ..= 128 KiB; default 4 KiB on 512-byte-block
    /// bases, 16 KiB on 4 KiB-block bases).
    pub chunk_size: Option<u32>,
    /// Format a base that holds data but no compressed volume (by default that is refused:
    /// it may be a volume seen through the wrong key, or someone's data).
    pub force: bool,
}

/// Figures of a compressed volume.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressStats {
    /// Bdev name.
    pub name: String,
    /// Base bdev.
    pub base: String,
    /// Algorithm of new writes.
    pub algorithm: Algorithm,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Logical size in bytes.
    pub logical_bytes: u64,
    /// Logical bytes of written (mapped) chunks.
    pub mapped_bytes: u64,
    /// Bytes of the base holding chunk data.
    pub allocated_bytes: u64,
    /// mapped_bytes / allocated_bytes (1.0 when nothing is written).
    pub ratio: f64,
}

fn bad(param: &'static str, why: impl Into<String>) -> Error {
    Error::InvalidParam {
        param,
        why: why.into(),
    }
}

fn parse_algorithm(name: Option<&str>, level: Option<i32>) -> Result<Option<Algorithm>> {
    match (name.map(str::to_ascii_lowercase).as_deref(), level) {
        (None, None) => Ok(None),
        (None | Some("lz4"), Some(_)) => Err(bad("level", "applies to zstd only")),
        (Some("lz4"), None) => Ok(Some(Algorithm::Lz4)),
        (Some("zstd"), l) => {
            let level = l.unwrap_or(1);
            if !(1..=19).contains(&level) {
                return Err(bad("level", format!("{level} (zstd levels are 1..=19)")));
            }
            Ok(Some(Algorithm::Zstd { level }))
        }
        (Some(other), _) => Err(bad(
            "algorithm",
            format!("{other:?} is not supported (lz4 or zstd)"),
        )),
    }
}

// ----------------------------------------------------------------------------- layout ----

/// Where everything lives on the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    block_size: u32,
    chunk: u32,
    unit: u32,
    num_chunks: u64,
    map_off: u64,
    map_bytes: u64,
    data_off: u64,
    data_units: u64,
}

impl Geometry {
    fn units_per_chunk(&self) -> u32 {
        self.chunk / self.unit
    }

    /// The map is written a base block at a time (an atomic sector write; 8 entries on
    /// 512-byte blocks, 64 on 4 KiB ones).
    fn map_block_bytes(&self) -> u64 {
        self.block_size as u64
    }

    fn entries_per_map_block(&self) -> u64 {
        self.map_block_bytes() / ENTRY_BYTES as u64
    }

    fn map_blocks(&self) -> u64 {
        self.map_bytes / self.map_block_bytes()
    }

    /// The largest volume of `chunk`-byte chunks that fits a base of `base_bytes`, with room
    /// for every chunk stored raw plus spare units for rewrites in flight.
    fn for_base(block_size: u32, base_bytes: u64, chunk: u32) -> Result<Geometry> {
        let unit = (chunk / UNITS_PER_CHUNK).max(block_size);
        let upc = (chunk / unit) as u64;
        let mbb = block_size as u64;
        let map_off = SB_BYTES.max(mbb);
        let spare = SPARE_CHUNKS * upc * unit as u64;
        let need = |n: u64| {
            let map_bytes = (n * ENTRY_BYTES as u64).next_multiple_of(mbb);
            map_off + map_bytes + n * chunk as u64 + spare
        };
        let mut n =
            base_bytes.saturating_sub(map_off + spare) / (chunk as u64 + ENTRY_BYTES as u64);
        while n > 0 && need(n) > base_bytes {
            n -= 1;
        }
        if n == 0 {
            return Err(bad(
                "base_bdev_name",
                format!(
                    "base of {base_bytes} bytes is too small for a compressed volume with \
                     {chunk}-byte chunks (needs at least {})",
                    need(1)
                ),
            ));
        }
        let map_bytes = (n * ENTRY_BYTES as u64).next_multiple_of(mbb);
        let data_off = map_off + map_bytes;
        let data_units = (base_bytes - data_off) / unit as u64;
        Ok(Geometry {
            block_size,
            chunk,
            unit,
            num_chunks: n,
            map_off,
            map_bytes,
            data_off,
            data_units,
        })
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The superblock: geometry, algorithm and UUID, with a CRC.
#[derive(Debug, Clone, PartialEq)]
struct Superblock {
    geo: Geometry,
    algo: Algorithm,
    uuid: uuid::Uuid,
}

impl Superblock {
    fn encode(&self) -> Vec<u8> {
        let g = &self.geo;
        let mut b = vec![0u8; SB_BYTES as usize];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&g.block_size.to_le_bytes());
        b[16..20].copy_from_slice(&g.chunk.to_le_bytes());
        b[20..24].copy_from_slice(&g.unit.to_le_bytes());
        b[24] = self.algo.code();
        b[28..32].copy_from_slice(&self.algo.level().to_le_bytes());
        b[32..40].copy_from_slice(&g.num_chunks.to_le_bytes());
        b[40..48].copy_from_slice(&g.map_off.to_le_bytes());
        b[48..56].copy_from_slice(&g.map_bytes.to_le_bytes());
        b[56..64].copy_from_slice(&g.data_off.to_le_bytes());
        b[64..72].copy_from_slice(&g.data_units.to_le_bytes());
        b[72..88].copy_from_slice(self.uuid.as_bytes());
        let crc = crc32c::crc32c(&b[..88]);
        b[88..92].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `Ok(None)`: no volume here (no magic). `Err`: a volume, but damaged or not for this base.
    fn decode(b: &[u8], block_size: u32, base_bytes: u64) -> Result<Option<Superblock>> {
        if &b[0..8] != MAGIC {
            return Ok(None);
        }
        let damaged = |why: &str| {
            bad(
                "base_bdev_name",
                format!("compressed volume metadata: {why}"),
            )
        };
        if crc32c::crc32c(&b[..88]) != le32(b, 88) {
            return Err(damaged("superblock CRC mismatch"));
        }
        if le32(b, 8) != VERSION {
            return Err(damaged(&format!("unknown version {}", le32(b, 8))));
        }
        let geo = Geometry {
            block_size: le32(b, 12),
            chunk: le32(b, 16),
            unit: le32(b, 20),
            num_chunks: le64(b, 32),
            map_off: le64(b, 40),
            map_bytes: le64(b, 48),
            data_off: le64(b, 56),
            data_units: le64(b, 64),
        };
        let algo = Algorithm::from_code(b[24], le32(b, 28) as i32)
            .ok_or_else(|| damaged(&format!("unknown algorithm code {}", b[24])))?;
        let sane = geo.block_size == block_size
            && geo.chunk.is_power_of_two()
            && (MIN_CHUNK..=MAX_CHUNK).contains(&geo.chunk)
            && geo.unit >= block_size
            && geo.unit.is_multiple_of(block_size)
            && geo.chunk.is_multiple_of(geo.unit)
            && geo.units_per_chunk() as usize <= MAX_UNITS
            && geo.num_chunks > 0
            && geo.map_off == SB_BYTES.max(block_size as u64)
            && geo.map_bytes >= geo.num_chunks * ENTRY_BYTES as u64
            && geo.map_bytes.is_multiple_of(geo.map_block_bytes())
            && geo.data_off == geo.map_off + geo.map_bytes
            && geo.data_units <= u32::MAX as u64
            && geo.data_off + geo.data_units * geo.unit as u64 <= base_bytes;
        if !sane {
            return Err(damaged(&format!(
                "geometry {geo:?} does not fit this base ({base_bytes} bytes, block size {block_size})"
            )));
        }
        let uuid = uuid::Uuid::from_slice(&b[72..88]).map_err(|_| damaged("bad UUID"))?;
        Ok(Some(Superblock { geo, algo, uuid }))
    }
}

/// One chunk's map entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    /// Stored bytes (0: unmapped).
    len: u32,
    /// Stored uncompressed.
    raw: bool,
    /// Algorithm code (0 for raw).
    algo: u8,
    /// CRC32C of the stored bytes.
    data_crc: u32,
    n_units: u8,
    units: [u32; MAX_UNITS],
    /// The entry failed its checks at load: reads and partial writes fail with EIO.
    damaged: bool,
}

impl Entry {
    fn is_mapped(&self) -> bool {
        self.len > 0
    }

    fn units(&self) -> &[u32] {
        &self.units[..self.n_units as usize]
    }

    fn encode(&self, out: &mut [u8]) {
        out[..ENTRY_BYTES].fill(0);
        if !self.is_mapped() {
            return;
        }
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4] = 1 | if self.raw { 2 } else { 0 };
        out[5] = self.algo;
        out[6] = self.n_units;
        out[8..12].copy_from_slice(&self.data_crc.to_le_bytes());
        for (i, u) in self.units().iter().enumerate() {
            out[12 + 4 * i..16 + 4 * i].copy_from_slice(&u.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes an entry; `None` if its CRC or fields are wrong.
    fn decode(b: &[u8], geo: &Geometry) -> Option<Entry> {
        if b[..ENTRY_BYTES].iter().all(|&x| x == 0) {
            return Some(Entry::default());
        }
        if crc32c::crc32c(&b[..60]) != le32(b, 60) || b[4] & 1 == 0 {
            return None;
        }
        let mut e = Entry {
            len: le32(b, 0),
            raw: b[4] & 2 != 0,
            algo: b[5],
            data_crc: le32(b, 8),
            n_units: b[6],
            ..Entry::default()
        };
        let upc = geo.units_per_chunk();
        let fits = e.n_units as u32 <= upc
            && e.len > 0
            && e.len <= e.n_units as u32 * geo.unit
            && (!e.raw || e.len == geo.chunk)
            && (e.raw || matches!(e.algo, 1 | 2));
        if !fits {
            return None;
        }
        for i in 0..e.n_units as usize {
            e.units[i] = le32(b, 12 + 4 * i);
            if e.units[i] as u64 >= geo.data_units {
                return None;
            }
        }
        Some(e)
    }
}

// -------------------------------------------------------------------------- allocator ----

/// Free/used bitmap of data units, next-fit from a cursor (so a chunk's units tend to be
/// contiguous and are read or written with one base I/O).
struct Units {
    words: Vec<u64>,
    total: u64,
    used: u64,
    cursor: u64,
}

impl Units {
    fn new(total: u64) -> Self {
        Units {
            words: vec![0; total.div_ceil(64) as usize],
            total,
            used: 0,
            cursor: 0,
        }
    }

    fn is_used(&self, u: u64) -> bool {
        self.words[(u / 64) as usize] & (1 << (u % 64)) != 0
    }

    fn set(&mut self, u: u64) {
        self.words[(u / 64) as usize] |= 1 << (u % 64);
        self.used += 1;
    }

    fn free(&mut self, u: u64) {
        debug_assert!(self.is_used(u));
        self.words[(u / 64) as usize] &= !(1 << (u % 64));
        self.used -= 1;
    }

    /// `n` free units, or `None` (nothing taken) if fewer are free.
    fn alloc(&mut self, n: usize) -> Option<SmallVec<[u32; MAX_UNITS]>> {
        if self.total - self.used < n as u64 {
            return None;
        }
        let mut got = SmallVec::new();
        let mut u = self.cursor;
        while got.len() < n {
            if u >= self.total {
                u = 0;
            }
            let w = self.words[(u / 64) as usize];
            if w == u64::MAX && u.is_multiple_of(64) {
                u += 64;
                continue;
            }
            if w & (1 << (u % 64)) == 0 {
                self.set(u);
                got.push(u as u32);
            }
            u += 1;
        }
        self.cursor = u;
        Some(got)
    }
}

// ----------------------------------------------------------------------- shared state ----

/// Persistence state of one map block.
#[derive(Default)]
struct MapBlock {
    /// Bumped at every entry change in this block.
    dirty_gen: u64,
    /// The generation known to be on the base.
    persisted_gen: u64,
    /// The generation being written, if a write of this block is in flight.
    writing: Option<u64>,
    /// Units to free once `persisted_gen` reaches the generation.
    to_free: Vec<(u64, SmallVec<[u32; MAX_UNITS]>)>,
    /// A write of this block failed: waiters fail with EIO.
    failed: bool,
}

/// The volume state shared by its channels.
struct Vol {
    geo: Geometry,
    algo: Algorithm,
    entries: Vec<Entry>,
    units: Units,
    /// One bit per chunk: an operation holds the chunk.
    locks: Vec<u64>,
    blocks: Vec<MapBlock>,
    mapped_chunks: u64,
    /// The base has a volatile write cache: a completed write is durable only after a later
    /// base Flush completes, so the ordering rules wait for flushes ("epochs").
    cache: bool,
    /// Base flushes submitted (the epoch of the newest), and the newest completed.
    flush_submitted: u64,
    flush_done: u64,
    /// The epoch somebody waits for (a flush submitted after they started waiting).
    flush_need: u64,
    /// A base flush failed: operations waiting for durability fail.
    flush_failed: bool,
    /// Units dropped by a map write that completed, freed once `flush_done` reaches the epoch.
    durable_free: Vec<(u64, SmallVec<[u32; MAX_UNITS]>)>,
}

impl Vol {
    fn try_lock(&mut self, c: u64) -> bool {
        let (w, b) = ((c / 64) as usize, 1u64 << (c % 64));
        if self.locks[w] & b != 0 {
            return false;
        }
        self.locks[w] |= b;
        true
    }

    fn unlock(&mut self, c: u64) {
        self.locks[(c / 64) as usize] &= !(1u64 << (c % 64));
    }

    /// Replaces chunk `c`'s entry; returns (map block, generation) to wait for.
    fn set_entry(&mut self, c: u64, e: Entry) -> (u64, u64) {
        let old = std::mem::replace(&mut self.entries[c as usize], e);
        match (old.is_mapped(), e.is_mapped()) {
            (false, true) => self.mapped_chunks += 1,
            (true, false) => self.mapped_chunks -= 1,
            _ => {}
        }
        let mb = c / self.geo.entries_per_map_block();
        let blk = &mut self.blocks[mb as usize];
        blk.dirty_gen += 1;
        let gen = blk.dirty_gen;
        if old.is_mapped() && !old.damaged {
            blk.to_free.push((gen, old.units().into()));
        }
        (mb, gen)
    }

    /// If map block `mb` has changes not being written, starts its write: returns the bytes
    /// to write (marked in flight with their generation).
    fn take_map_write(&mut self, mb: u64) -> Option<IoBuf> {
        let blk = &self.blocks[mb as usize];
        if blk.writing.is_some() || blk.dirty_gen == blk.persisted_gen {
            return None;
        }
        let gen = blk.dirty_gen;
        let mbb = self.geo.map_block_bytes() as usize;
        let mut b = buf::alloc(mbb).unwrap_or_else(|| IoBuf::heap(mbb));
        let per = self.geo.entries_per_map_block();
        let first = mb * per;
        for i in 0..per {
            let c = first + i;
            let out = &mut b[(i as usize) * ENTRY_BYTES..(i as usize + 1) * ENTRY_BYTES];
            match self.entries.get(c as usize) {
                Some(e) => e.encode(out),
                None => out.fill(0),
            }
        }
        self.blocks[mb as usize].writing = Some(gen);
        Some(b)
    }

    /// The map block write in flight finished.
    fn map_written(&mut self, mb: u64, ok: bool) {
        let blk = &mut self.blocks[mb as usize];
        let Some(gen) = blk.writing.take() else {
            return;
        };
        if !ok {
            blk.failed = true;
            return;
        }
        blk.persisted_gen = blk.persisted_gen.max(gen);
        let p = blk.persisted_gen;
        let mut freed: SmallVec<[u32; MAX_UNITS]> = SmallVec::new();
        blk.to_free.retain(|(g, units)| {
            if *g <= p {
                freed.extend_from_slice(units);
                false
            } else {
                true
            }
        });
        if freed.is_empty() {
            return;
        }
        if self.cache {
            // The map write that dropped them is not durable yet: free after a later flush.
            let epoch = self.want_epoch();
            self.durable_free.push((epoch, freed));
        } else {
            for u in freed {
                self.units.free(u as u64);
            }
        }
    }

    /// The epoch of a flush submitted from now on (and asks for one).
    fn want_epoch(&mut self) -> u64 {
        let e = self.flush_submitted + 1;
        self.flush_need = self.flush_need.max(e);
        e
    }

    /// If a flush is wanted and not yet submitted, takes its epoch.
    fn take_flush(&mut self) -> Option<u64> {
        (self.flush_need > self.flush_submitted).then(|| {
            self.flush_submitted += 1;
            self.flush_submitted
        })
    }

    /// Base flush `epoch` finished.
    fn flushed(&mut self, epoch: u64, ok: bool) {
        if !ok {
            self.flush_failed = true;
            return;
        }
        self.flush_done = self.flush_done.max(epoch);
        let done = self.flush_done;
        let mut freed: SmallVec<[u32; 16]> = SmallVec::new();
        self.durable_free.retain(|(e, units)| {
            if *e <= done {
                freed.extend_from_slice(units);
                false
            } else {
                true
            }
        });
        for u in freed {
            self.units.free(u as u64);
        }
    }

    fn stats(&self) -> (u64, u64) {
        (
            self.mapped_chunks * self.geo.chunk as u64,
            self.units.used * self.geo.unit as u64,
        )
    }
}

struct Stage {
    name: String,
    base: String,
    vol: Arc<Mutex<Vol>>,
}

static STAGES: Mutex<BTreeMap<String, Stage>> = Mutex::new(BTreeMap::new());

fn stats_of(s: &Stage) -> CompressStats {
    let v = s.vol.lock().unwrap();
    let (mapped, allocated) = v.stats();
    CompressStats {
        name: s.name.clone(),
        base: s.base.clone(),
        algorithm: v.algo,
        chunk_size: v.geo.chunk,
        logical_bytes: v.geo.num_chunks * v.geo.chunk as u64,
        mapped_bytes: mapped,
        allocated_bytes: allocated,
        ratio: if allocated == 0 {
            1.0
        } else {
            mapped as f64 / allocated as f64
        },
    }
}

/// Stats of every compressed bdev (also the save_config listing).
pub fn stages() -> Vec<CompressStats> {
    STAGES.lock().unwrap().values().map(stats_of).collect()
}

/// Stats of compressed bdev `name`.
pub fn stats(name: &str) -> Result<CompressStats> {
    STAGES
        .lock()
        .unwrap()
        .get(name)
        .map(stats_of)
        .ok_or_else(|| Error::NotFound(name.to_string()))
}

// ------------------------------------------------------------------- control path I/O ----

/// Runs one base I/O on the main reactor and waits for it (control path only).
fn sync_io(
    rt: &RuntimeHandle,
    desc: &SharedDesc,
    op: IoType,
    offset: u64,
    data: Vec<u8>,
) -> Result<Vec<u8>> {
    let io = CtlIo {
        child: 0,
        op,
        offset,
        len: data.len() as u64,
        data,
    };
    let r = control_io(rt, std::slice::from_ref(desc), vec![io], SYNC_IO_TIMEOUT);
    match r.map(|mut v| v.pop().expect("one I/O, one answer")) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(s)) => Err(bad(
            "base_bdev_name",
            format!("{op:?} of metadata at byte {offset} failed: {s:?}"),
        )),
        Err(CtlFail::Reactor(e)) => Err(bad("base_bdev_name", format!("reactor unavailable: {e}"))),
        Err(CtlFail::Timeout) => Err(bad(
            "base_bdev_name",
            format!("{op:?} of metadata at byte {offset} timed out"),
        )),
    }
}

/// Reads the whole chunk map and rebuilds the allocator.
fn load_map(rt: &RuntimeHandle, desc: &SharedDesc, geo: &Geometry) -> Result<(Vec<Entry>, Units)> {
    let mut entries = Vec::with_capacity(geo.num_chunks as usize);
    let mut units = Units::new(geo.data_units);
    let mut damaged = 0u64;
    let mut off = 0u64;
    while off < geo.map_bytes && (entries.len() as u64) < geo.num_chunks {
        let n = (geo.map_bytes - off).min(META_IO_BYTES as u64);
        let b = sync_io(
            rt,
            desc,
            IoType::Read,
            geo.map_off + off,
            vec![0; n as usize],
        )?;
        for raw in b.chunks_exact(ENTRY_BYTES) {
            if entries.len() as u64 == geo.num_chunks {
                break;
            }
            let e = match Entry::decode(raw, geo) {
                Some(e) if e.units().iter().all(|&u| !units.is_used(u as u64)) => {
                    for &u in e.units() {
                        units.set(u as u64);
                    }
                    e
                }
                _ => {
                    damaged += 1;
                    Entry {
                        damaged: true,
                        ..Entry::default()
                    }
                }
            };
            entries.push(e);
        }
        off += n;
    }
    if damaged > 0 {
        tracing::warn!(
            damaged,
            "compressed volume: damaged map entries; those chunks fail reads"
        );
    }
    Ok((entries, units))
}

/// Writes `sb` over the superblock region.
fn write_superblock(rt: &RuntimeHandle, desc: &SharedDesc, sb: &Superblock) -> Result<()> {
    let mut block = sb.encode();
    block.resize(sb.geo.map_off as usize, 0);
    sync_io(rt, desc, IoType::Write, 0, block).map(drop)
}

/// Writes an empty map, then the superblock (so a half-formatted base has no superblock).
fn format(rt: &RuntimeHandle, desc: &SharedDesc, sb: &Superblock) -> Result<()> {
    let mut off = 0;
    while off < sb.geo.map_bytes {
        let n = (sb.geo.map_bytes - off).min(META_IO_BYTES as u64);
        sync_io(
            rt,
            desc,
            IoType::Write,
            sb.geo.map_off + off,
            vec![0; n as usize],
        )?;
        off += n;
    }
    write_superblock(rt, desc, sb)?;
    // A base without flush has no volatile cache to flush.
    if desc
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|d| d.bdev().supports(IoType::Flush))
    {
        sync_io(rt, desc, IoType::Flush, 0, Vec::new())?;
    }
    Ok(())
}

/// Creates compressed bdev over `opts.base`: opens the volume on the base if it holds one,
/// else formats it. Must not be called on a reactor thread (it waits for base I/O run on
/// `rt`'s main reactor).
pub fn create(rt: &RuntimeHandle, opts: CompressOpts) -> Result<Arc<Bdev>> {
    if ballast_reactor::current_core().is_some() {
        return Err(Error::NotOnReactor(
            "compress::create (call it off the reactors)",
        ));
    }
    let algo = parse_algorithm(opts.algorithm.as_deref(), opts.level)?;
    if let Some(c) = opts.chunk_size {
        if !c.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&c) {
            return Err(bad(
                "chunk_size",
                format!("{c} (a power of two from {MIN_CHUNK} to {MAX_CHUNK})"),
            ));
        }
    }
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("COMP_{}", opts.base));
    if name.is_empty() {
        return Err(bad("name", "must not be empty"));
    }
    if bdev::lookup(&name).is_some() {
        return Err(Error::Exists(name));
    }
    let mut d = bdev::open(&opts.base, None)?;
    d.claim(&format!("compress bdev {name}"))?;
    let b = d.bdev().clone();
    let bs = b.block_size();
    let base_bytes = b.num_blocks() * bs as u64;
    let desc: SharedDesc = Arc::new(Mutex::new(Some(d)));

    let head = sync_io(
        rt,
        &desc,
        IoType::Read,
        0,
        vec![0; SB_BYTES.max(bs as u64) as usize],
    )?;
    let (sb, entries, units) = match Superblock::decode(&head, bs, base_bytes)? {
        Some(sb) => {
            if let Some(c) = opts.chunk_size.filter(|&c| c != sb.geo.chunk) {
                return Err(bad(
                    "chunk_size",
                    format!(
                        "{c}: base {} holds a compressed volume with {}-byte chunks",
                        opts.base, sb.geo.chunk
                    ),
                ));
            }
            let (entries, units) = load_map(rt, &desc, &sb.geo)?;
            // The algorithm of new writes may change; stored chunks keep theirs.
            if let Some(a) = algo.filter(|&a| a != sb.algo) {
                write_superblock(
                    rt,
                    &desc,
                    &Superblock {
                        algo: a,
                        ..sb.clone()
                    },
                )?;
            }
            let sb = Superblock {
                algo: algo.unwrap_or(sb.algo),
                ..sb
            };
            tracing::info!(bdev = %name, base = %opts.base, chunks = sb.geo.num_chunks,
                used_units = units.used, "compressed volume opened");
            (sb, entries, units)
        }
        None if !opts.force && !all_zero(&head) => {
            return Err(bad(
                "base_bdev_name",
                format!(
                    "{} holds data but no compressed volume (a volume under a crypto stage \
                     with the wrong key looks like this); refusing to format it: pass force \
                     to format it anyway",
                    opts.base
                ),
            ));
        }
        None => {
            let chunk = opts.chunk_size.unwrap_or(if bs == 512 {
                DEFAULT_CHUNK_512
            } else {
                DEFAULT_CHUNK_4K
            });
            if chunk < bs {
                return Err(bad(
                    "chunk_size",
                    format!("{chunk} is below the base block size {bs}"),
                ));
            }
            let geo = Geometry::for_base(bs, base_bytes, chunk)?;
            let sb = Superblock {
                geo,
                algo: algo.unwrap_or(Algorithm::Lz4),
                uuid: uuid::Uuid::new_v4(),
            };
            format(rt, &desc, &sb)?;
            tracing::info!(bdev = %name, base = %opts.base, chunks = geo.num_chunks,
                chunk_size = chunk, algorithm = sb.algo.name(), "compressed volume formatted");
            (
                sb,
                vec![Entry::default(); geo.num_chunks as usize],
                Units::new(geo.data_units),
            )
        }
    };
    let geo = sb.geo;
    let vol = Arc::new(Mutex::new(Vol {
        geo,
        algo: sb.algo,
        mapped_chunks: entries.iter().filter(|e| e.is_mapped()).count() as u64,
        entries,
        units,
        locks: vec![0; geo.num_chunks.div_ceil(64) as usize],
        blocks: (0..geo.map_blocks()).map(|_| MapBlock::default()).collect(),
        cache: b.info().write_cache,
        flush_submitted: 0,
        flush_done: 0,
        flush_need: 0,
        flush_failed: false,
        durable_free: Vec::new(),
    }));
    let mut info = BdevInfo::new(&name, bs, geo.num_chunks * geo.chunk as u64 / bs as u64);
    info.uuid = sb.uuid;
    info.write_cache = b.info().write_cache;
    info.optimal_io_boundary = geo.chunk / bs;
    let backend = CompressBackend {
        desc,
        vol: vol.clone(),
        name: name.clone(),
        base: opts.base.clone(),
    };
    let bdev = bdev::register(info, Box::new(backend))?;
    STAGES.lock().unwrap().insert(
        name.clone(),
        Stage {
            name,
            base: opts.base,
            vol,
        },
    );
    Ok(bdev)
}

// ------------------------------------------------------------------------- the bdev ----

struct CompressBackend {
    desc: SharedDesc,
    vol: Arc<Mutex<Vol>>,
    name: String,
    base: String,
}

impl Drop for CompressBackend {
    fn drop(&mut self) {
        self.desc.lock().unwrap().take();
    }
}

impl BdevBackend for CompressBackend {
    fn product_name(&self) -> &'static str {
        "compress"
    }

    fn supports(&self, op: IoType) -> bool {
        match op {
            IoType::Flush => self
                .desc
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|d| d.bdev().supports(IoType::Flush)),
            _ => true,
        }
    }

    fn create_channel(&self) -> Result<Box<dyn BackendChannel>> {
        let base = self
            .desc
            .lock()
            .unwrap()
            .as_ref()
            .ok_or_else(|| Error::Removing(self.base.clone()))?
            .channel()?;
        let (geo, algo) = {
            let v = self.vol.lock().unwrap();
            (v.geo, v.algo)
        };
        let maps = Rc::new_cyclic(|me| MapWriter {
            vol: self.vol.clone(),
            base: base.clone(),
            geo,
            me: me.clone(),
        });
        Ok(Box::new(CompressChannel {
            base,
            maps,
            vol: self.vol.clone(),
            geo,
            codec: Codec::new(algo)?,
            sink: Rc::default(),
            batch: Vec::new(),
            parents: Slab::default(),
            ops: Slab::default(),
            lock_wait: Vec::new(),
            space_wait: Vec::new(),
            persist_wait: Vec::new(),
            flush_wait: Vec::new(),
        }))
    }

    fn destroy(&self) {
        self.desc.lock().unwrap().take();
        STAGES.lock().unwrap().remove(&self.name);
    }

    fn describe(&self) -> Vec<(String, String)> {
        let v = self.vol.lock().unwrap();
        let (mapped, allocated) = v.stats();
        vec![
            ("base_bdev_name".into(), self.base.clone()),
            ("algorithm".into(), v.algo.name().into()),
            ("chunk_size".into(), v.geo.chunk.to_string()),
            ("mapped_bytes".into(), mapped.to_string()),
            ("allocated_bytes".into(), allocated.to_string()),
        ]
    }
}

extern "C" {
    // liblz4 (built and linked by lz4-sys, which does not declare these).
    fn LZ4_sizeofState() -> libc::c_int;
    fn LZ4_compress_fast_extState_fastReset(
        state: *mut libc::c_void,
        src: *const libc::c_char,
        dst: *mut libc::c_char,
        src_size: libc::c_int,
        dst_capacity: libc::c_int,
        acceleration: libc::c_int,
    ) -> libc::c_int;
    fn LZ4_decompress_safe_partial(
        src: *const libc::c_char,
        dst: *mut libc::c_char,
        src_size: libc::c_int,
        target_output_size: libc::c_int,
        dst_capacity: libc::c_int,
    ) -> libc::c_int;
}

/// Per-channel compressor state.
struct Codec {
    algo: Algorithm,
    /// liblz4's compression state, reused (reset cheaply) for every chunk.
    lz4_state: Vec<u64>,
    zc: Option<zstd::bulk::Compressor<'static>>,
    zd: Option<zstd::bulk::Decompressor<'static>>,
}

impl Codec {
    fn new(algo: Algorithm) -> Result<Codec> {
        let zc = match algo {
            Algorithm::Zstd { level } => Some(
                zstd::bulk::Compressor::new(level)
                    .map_err(|e| bad("level", format!("zstd: {e}")))?,
            ),
            Algorithm::Lz4 => None,
        };
        // SAFETY: a pure function of liblz4's build.
        let state_bytes = unsafe { LZ4_sizeofState() }.max(0) as usize;
        Ok(Codec {
            algo,
            // Zeroed memory is an initialised LZ4 state (what LZ4_initStream does).
            lz4_state: vec![0u64; state_bytes.div_ceil(8)],
            zc,
            zd: None,
        })
    }

    /// Compresses `src` into `dst`; `None` if it does not fit (so a `dst` no larger than
    /// worth storing makes incompressible data give up early).
    fn compress(&mut self, src: &[u8], dst: &mut [u8]) -> Option<usize> {
        match self.algo {
            Algorithm::Lz4 => {
                // SAFETY: the state is LZ4_sizeofState() bytes, 8-aligned, initialised (zeroed,
                // then only used by liblz4); src and dst are valid for their lengths and
                // liblz4 writes at most dst.len() bytes.
                let n = unsafe {
                    LZ4_compress_fast_extState_fastReset(
                        self.lz4_state.as_mut_ptr().cast(),
                        src.as_ptr().cast(),
                        dst.as_mut_ptr().cast(),
                        src.len() as libc::c_int,
                        dst.len() as libc::c_int,
                        1,
                    )
                };
                (n > 0).then_some(n as usize)
            }
            Algorithm::Zstd { .. } => self.zc.as_mut()?.compress_to_buffer(src, dst).ok(),
        }
    }

    /// Decompresses `src` (algorithm `code`) into exactly `dst.len()` bytes.
    /// Decompresses `src` (algorithm `code`), a whole chunk of `dst.len()` bytes, of which at
    /// least the first `need` must be produced (lz4 stops there: a read of the chunk's head
    /// does not pay for its tail).
    fn decompress(&mut self, code: u8, src: &[u8], dst: &mut [u8], need: usize) -> bool {
        let n = match code {
            1 if need < dst.len() => {
                // SAFETY: src and dst are valid for their lengths; liblz4 reads at most
                // src.len() bytes and writes at most dst.len() bytes.
                let r = unsafe {
                    LZ4_decompress_safe_partial(
                        src.as_ptr().cast(),
                        dst.as_mut_ptr().cast(),
                        src.len() as libc::c_int,
                        need as libc::c_int,
                        dst.len() as libc::c_int,
                    )
                };
                return r >= 0 && r as usize >= need;
            }
            1 => lz4::block::decompress_to_buffer(src, Some(dst.len() as i32), dst).ok(),
            2 => {
                if self.zd.is_none() {
                    self.zd = zstd::bulk::Decompressor::new().ok();
                }
                self.zd
                    .as_mut()
                    .and_then(|d| d.decompress_to_buffer(src, dst).ok())
            }
            _ => None,
        };
        n == Some(dst.len())
    }

    fn code(&self) -> u8 {
        self.algo.code()
    }
}

/// Writes map blocks and records them as persisted when they complete. Its own sink (kept
/// alive by its writes in flight), so a map write outlives the channel that started it: other
/// channels' operations may be waiting for it.
struct MapWriter {
    vol: Arc<Mutex<Vol>>,
    base: IoChannel,
    geo: Geometry,
    me: std::rc::Weak<MapWriter>,
}

impl MapWriter {
    /// Starts writing map block `block` if it has unwritten changes and no write in flight.
    fn kick(&self, block: u64) {
        let b = self.vol.lock().unwrap().take_map_write(block);
        if let Some(b) = b {
            self.write(block, b);
        }
    }

    /// Submits the base flush somebody waits for, if not submitted yet.
    fn kick_flush(&self) {
        let e = self.vol.lock().unwrap().take_flush();
        if let (Some(e), Some(me)) = (e, self.me.upgrade()) {
            let sink: Rc<dyn IoSink> = me;
            self.base.submit(BdevIo::new(
                IoType::Flush,
                0,
                0,
                SgList::new(),
                EPOCH_TAG | e,
                IoCallback::Sink(sink),
            ));
        }
    }

    fn write(&self, block: u64, b: IoBuf) {
        let Some(me) = self.me.upgrade() else { return };
        let bs = self.geo.block_size as u64;
        let off = self.geo.map_off + block * self.geo.map_block_bytes();
        let n = b.len() as u64 / bs;
        let mut sg = SgList::new();
        sg.push(b);
        let sink: Rc<dyn IoSink> = me;
        self.base.submit(BdevIo::new(
            IoType::Write,
            off / bs,
            n,
            sg,
            block,
            IoCallback::Sink(sink),
        ));
    }
}

impl IoSink for MapWriter {
    fn io_done(&self, io: BdevIo) {
        let ok = io.status.is_ok();
        if io.tag & EPOCH_TAG != 0 {
            if !ok {
                tracing::error!(status = ?io.status, "compressed volume: base flush failed");
            }
            self.vol.lock().unwrap().flushed(io.tag & !EPOCH_TAG, ok);
            self.kick_flush();
            return;
        }
        let block = io.tag;
        if !ok {
            tracing::error!(block, status = ?io.status, "compressed volume: map write failed");
        }
        let next = {
            let mut v = self.vol.lock().unwrap();
            v.map_written(block, ok);
            if ok {
                v.take_map_write(block)
            } else {
                None
            }
        };
        if let Some(b) = next {
            self.write(block, b);
        }
        self.kick_flush();
    }
}

/// Tag bit of a base flush that ends a durability epoch (the low bits hold the epoch).
const EPOCH_TAG: u64 = 1 << 62;

/// A caller's I/O, split into chunk operations.
struct Parent {
    io: BdevIo,
    pending: usize,
    status: IoStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    /// Unmap or write-zeroes: the range reads as zeros afterwards.
    Zero,
}

/// Where a chunk operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the chunk lock.
    Lock,
    /// Reading the chunk's stored units.
    ReadOld,
    /// Waiting for free units.
    Space,
    /// Writing the new units.
    WriteNew,
    /// Waiting for a base flush to make the new units durable (bases with a write cache).
    DataFlush { epoch: u64 },
    /// Waiting for the map block holding the new entry to reach the base.
    Persist { block: u64, gen: u64 },
}

/// One operation on one chunk.
struct ChunkOp {
    parent: usize,
    chunk: u64,
    kind: Kind,
    /// Byte range within the chunk.
    off: usize,
    len: usize,
    /// Byte offset of that range in the parent's buffers.
    pbyte: usize,
    step: Step,
    /// Base I/O in flight.
    outstanding: usize,
    failed: bool,
    /// The entry read at lock time.
    old: Entry,
    /// Stored units as read (one buffer per contiguous run, in unit order).
    runs: SmallVec<[Option<IoBuf>; 2]>,
    /// The whole chunk, uncompressed (writes).
    plain: Option<IoBuf>,
    /// What will be stored, and its entry (writes).
    stored: Option<IoBuf>,
    new: Entry,
}

struct CompressChannel {
    base: IoChannel,
    vol: Arc<Mutex<Vol>>,
    geo: Geometry,
    codec: Codec,
    sink: Rc<Collect>,
    batch: Vec<BdevIo>,
    parents: Slab<Parent>,
    ops: Slab<ChunkOp>,
    lock_wait: Vec<usize>,
    space_wait: Vec<usize>,
    persist_wait: Vec<usize>,
    /// Ops whose units wait for a base flush before their map entry is set.
    flush_wait: Vec<usize>,
    maps: Rc<MapWriter>,
}

/// Contiguous runs of `units`: (first unit, count, index of the first in `units`).
fn runs(units: &[u32]) -> SmallVec<[(u32, usize, usize); 4]> {
    let mut out: SmallVec<[(u32, usize, usize); 4]> = SmallVec::new();
    for (i, &u) in units.iter().enumerate() {
        match out.last_mut() {
            Some((first, n, _)) if *first + *n as u32 == u => *n += 1,
            _ => out.push((u, 1, i)),
        }
    }
    out
}

/// Calls `f(piece, at)` for the pieces of `bufs` covering bytes `off..off+len` of the I/O,
/// `at` being the piece's offset from `off`.
fn sg_each(bufs: &mut SgList, mut off: usize, len: usize, mut f: impl FnMut(&mut [u8], usize)) {
    let mut done = 0;
    for b in bufs.iter_mut() {
        if done == len {
            break;
        }
        if off >= b.len() {
            off -= b.len();
            continue;
        }
        let n = (b.len() - off).min(len - done);
        f(&mut b[off..off + n], done);
        done += n;
        off = 0;
    }
}

fn all_zero(b: &[u8]) -> bool {
    // SAFETY: u64 has no invalid bit patterns; align_to returns correctly aligned middles.
    let (head, mid, tail) = unsafe { b.align_to::<u64>() };
    head.iter().all(|&x| x == 0) && tail.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0)
}

fn pooled(len: usize) -> IoBuf {
    buf::alloc(len).unwrap_or_else(|| IoBuf::heap(len))
}

impl CompressChannel {
    fn new_parent(&mut self, io: BdevIo, pending: usize) -> usize {
        self.parents.insert(Parent {
            io,
            pending,
            status: IoStatus::Success,
        })
    }

    fn op(&mut self, i: usize) -> &mut ChunkOp {
        self.ops.live(i)
    }

    fn submit_base(&self, op: IoType, offset_bytes: u64, bufs: SgList, tag: u64) {
        let bs = self.geo.block_size as u64;
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let sink: Rc<dyn IoSink> = self.sink.clone();
        self.base.submit(BdevIo::new(
            op,
            offset_bytes / bs,
            len / bs,
            bufs,
            tag,
            IoCallback::Sink(sink),
        ));
    }

    fn unit_offset(&self, u: u32) -> u64 {
        self.geo.data_off + u as u64 * self.geo.unit as u64
    }

    /// Ends chunk op `i`; completes its parent when it was the last.
    fn finish_op(&mut self, i: usize, status: IoStatus, done: &mut Completions) {
        let op = self.ops.remove(i).expect("live chunk op");
        let parent = self.parents.live(op.parent);
        if status != IoStatus::Success && parent.status == IoStatus::Success {
            parent.status = status;
        }
        parent.pending -= 1;
        if parent.pending == 0 {
            let p = self.parents.remove(op.parent).expect("live parent");
            done.complete(p.io, p.status);
        }
    }

    /// Op `i`'s new units will not be used: frees them, unlocks the chunk, fails the op.
    fn fail_unstored(&mut self, i: usize, done: &mut Completions) {
        let e = self.op(i).new;
        {
            let mut v = self.vol.lock().unwrap();
            for &u in e.units() {
                v.units.free(u as u64);
            }
        }
        self.fail_locked(i, IoStatus::Failed(libc::EIO), done);
    }

    /// Unlocks op `i`'s chunk and ends it.
    fn fail_locked(&mut self, i: usize, status: IoStatus, done: &mut Completions) {
        let c = self.op(i).chunk;
        self.vol.lock().unwrap().unlock(c);
        self.finish_op(i, status, done);
    }

    /// Tries to take op `i`'s chunk lock and start it; false if the chunk is busy.
    fn try_start(&mut self, i: usize, done: &mut Completions) -> bool {
        let (chunk, kind, whole) = {
            let o = self.op(i);
            (
                o.chunk,
                o.kind,
                o.off == 0 && o.len == self.geo.chunk as usize,
            )
        };
        let entry = {
            let mut v = self.vol.lock().unwrap();
            if !v.try_lock(chunk) {
                return false;
            }
            v.entries[chunk as usize]
        };
        self.op(i).old = entry;
        if entry.damaged && !(whole && kind != Kind::Read) {
            self.fail_locked(i, IoStatus::Failed(libc::EIO), done);
            return true;
        }
        match kind {
            _ if entry.is_mapped() && !(whole && kind != Kind::Read) => self.read_old(i),
            Kind::Read => {
                // Unwritten: zeros.
                let (parent, pbyte, len) = {
                    let o = self.op(i);
                    (o.parent, o.pbyte, o.len)
                };
                let p = self.parents.live(parent);
                sg_each(&mut p.io.bufs, pbyte, len, |b, _| b.fill(0));
                self.vol.lock().unwrap().unlock(chunk);
                self.finish_op(i, IoStatus::Success, done);
            }
            Kind::Zero if whole || !entry.is_mapped() => {
                // Nothing stored must stay nothing stored.
                if entry.is_mapped() || entry.damaged {
                    self.update_entry(i, Entry::default(), done);
                } else {
                    // Nothing stored in memory, but the change that emptied the chunk may not
                    // be on the base yet: the zeroing is acknowledged once the map block says
                    // so (else a flush after this ack would not cover it, and a power cut
                    // would bring the old data back).
                    let (block, gen, pending) = {
                        let mut v = self.vol.lock().unwrap();
                        v.unlock(chunk);
                        let mb = chunk / v.geo.entries_per_map_block();
                        let blk = &v.blocks[mb as usize];
                        (mb, blk.dirty_gen, blk.dirty_gen > blk.persisted_gen)
                    };
                    if pending {
                        self.maps.kick(block);
                        self.op(i).step = Step::Persist { block, gen };
                        self.persist_wait.push(i);
                        self.check_persisted(done);
                    } else {
                        self.finish_op(i, IoStatus::Success, done);
                    }
                }
            }
            Kind::Write | Kind::Zero => {
                let cs = self.geo.chunk as usize;
                let mut plain = pooled(cs);
                if !whole {
                    plain[..cs].fill(0);
                }
                self.op(i).plain = Some(plain);
                self.merge_and_store(i, done);
            }
        }
        true
    }

    /// Issues the reads of the chunk's stored units.
    fn read_old(&mut self, i: usize) {
        let unit = self.geo.unit as usize;
        let entry = self.op(i).old;
        let rs = runs(entry.units());
        let o = self.op(i);
        o.step = Step::ReadOld;
        o.outstanding = rs.len();
        o.runs.clear();
        o.runs.resize_with(rs.len(), || None);
        for (first, n, _) in rs {
            let mut sg = SgList::new();
            sg.push(pooled(n * unit));
            self.submit_base(IoType::Read, self.unit_offset(first), sg, i as u64);
        }
    }

    /// The chunk's stored units are in `runs`: verify, decompress, then read out or merge.
    fn old_read(&mut self, i: usize, done: &mut Completions) {
        if self.op(i).failed {
            self.fail_locked(i, IoStatus::Failed(libc::EIO), done);
            return;
        }
        let cs = self.geo.chunk as usize;
        let mut op = self.ops.take(i);
        let e = op.old;
        // The stored bytes, contiguous.
        let stored: IoBuf = if op.runs.len() == 1 {
            op.runs.pop().flatten().expect("unit read")
        } else {
            let mut all = pooled(e.n_units as usize * self.geo.unit as usize);
            let mut at = 0;
            for r in op.runs.drain(..).flatten() {
                all[at..at + r.len()].copy_from_slice(&r);
                at += r.len();
            }
            all
        };
        let data = &stored[..e.len as usize];
        let mut ok = crc32c::crc32c(data) == e.data_crc;
        if ok && !e.raw && op.kind == Kind::Read && op.off == 0 && op.len == cs {
            // A whole chunk read into one caller buffer: decompress straight into it.
            let p = self.parents.live(op.parent);
            let mut direct = false;
            let (codec, algo) = (&mut self.codec, e.algo);
            let mut at = op.pbyte;
            for b in p.io.bufs.iter_mut() {
                if at >= b.len() {
                    at -= b.len();
                    continue;
                }
                if b.len() - at >= cs {
                    ok = codec.decompress(algo, data, &mut b[at..at + cs], cs);
                    direct = true;
                }
                break;
            }
            if direct {
                let c = op.chunk;
                self.ops.put(i, op);
                if ok {
                    self.vol.lock().unwrap().unlock(c);
                    self.finish_op(i, IoStatus::Success, done);
                } else {
                    tracing::error!(chunk = c, "compressed chunk failed decompression");
                    self.fail_locked(i, IoStatus::Failed(libc::EIO), done);
                }
                return;
            }
        }
        let plain = if e.raw {
            stored
        } else {
            let mut p = pooled(cs);
            let need = if op.kind == Kind::Read {
                op.off + op.len
            } else {
                cs
            };
            ok = ok && self.codec.decompress(e.algo, data, &mut p[..cs], need);
            p
        };
        if !ok {
            tracing::error!(
                chunk = op.chunk,
                "compressed chunk failed its CRC or decompression"
            );
            self.ops.put(i, op);
            self.fail_locked(i, IoStatus::Failed(libc::EIO), done);
            return;
        }
        match op.kind {
            Kind::Read => {
                let p = self.parents.live(op.parent);
                let src = &plain[op.off..op.off + op.len];
                sg_each(&mut p.io.bufs, op.pbyte, op.len, |b, at| {
                    b.copy_from_slice(&src[at..at + b.len()])
                });
                let c = op.chunk;
                self.ops.put(i, op);
                self.vol.lock().unwrap().unlock(c);
                self.finish_op(i, IoStatus::Success, done);
            }
            Kind::Write | Kind::Zero => {
                op.plain = Some(plain);
                self.ops.put(i, op);
                self.merge_and_store(i, done);
            }
        }
    }

    /// Merges the new data into the chunk, compresses it and allocates its units.
    fn merge_and_store(&mut self, i: usize, done: &mut Completions) {
        let cs = self.geo.chunk as usize;
        let unit = self.geo.unit as usize;
        let upc = self.geo.units_per_chunk() as usize;
        let mut op = self.ops.take(i);
        let mut plain = op.plain.take().expect("chunk buffer");
        plain.set_len(cs);
        match op.kind {
            Kind::Write => {
                let p = self.parents.live(op.parent);
                let dst = &mut plain[op.off..op.off + op.len];
                sg_each(&mut p.io.bufs, op.pbyte, op.len, |b, at| {
                    dst[at..at + b.len()].copy_from_slice(b)
                });
            }
            _ => plain[op.off..op.off + op.len].fill(0),
        }
        if all_zero(&plain) {
            self.ops.put(i, op);
            self.update_entry(i, Entry::default(), done);
            return;
        }
        // Worth storing compressed only in fewer units than the chunk has.
        let worth = (upc - 1) * unit;
        let mut comp = pooled(cs);
        comp.set_len(cs);
        let n = self.codec.compress(&plain, &mut comp[..worth]);
        let (stored, len, raw) = match n {
            Some(n) if n.div_ceil(unit) < upc => {
                comp[n..n.next_multiple_of(unit)].fill(0);
                comp.set_len(n.next_multiple_of(unit));
                (comp, n, false)
            }
            _ => (plain, cs, true),
        };
        op.new = Entry {
            len: len as u32,
            raw,
            algo: if raw { 0 } else { self.codec.code() },
            data_crc: crc32c::crc32c(&stored[..len]),
            n_units: stored.len().div_ceil(unit) as u8,
            ..Entry::default()
        };
        op.stored = Some(stored);
        self.ops.put(i, op);
        if !self.alloc_and_write(i) {
            self.op(i).step = Step::Space;
            self.space_wait.push(i);
        }
    }

    /// Allocates op `i`'s units and writes them; false (nothing done) if too few are free.
    fn alloc_and_write(&mut self, i: usize) -> bool {
        let n = self.op(i).new.n_units as usize;
        let got = self.vol.lock().unwrap().units.alloc(n);
        let Some(units) = got else {
            return false;
        };
        let unit = self.geo.unit as usize;
        let mut op = self.ops.take(i);
        op.new.units[..n].copy_from_slice(&units);
        op.step = Step::WriteNew;
        let stored = op.stored.take().expect("stored bytes");
        let rs = runs(&units);
        op.outstanding = rs.len();
        self.ops.put(i, op);
        if rs.len() == 1 {
            let mut sg = SgList::new();
            sg.push(stored);
            self.submit_base(IoType::Write, self.unit_offset(units[0]), sg, i as u64);
        } else {
            for (first, cnt, at) in rs {
                let mut b = pooled(cnt * unit);
                b.copy_from_slice(&stored[at * unit..(at + cnt) * unit]);
                let mut sg = SgList::new();
                sg.push(b);
                self.submit_base(IoType::Write, self.unit_offset(first), sg, i as u64);
            }
        }
        true
    }

    /// Points the chunk at its new entry, unlocks it, and waits for the map block.
    fn update_entry(&mut self, i: usize, e: Entry, done: &mut Completions) {
        let c = self.op(i).chunk;
        let (block, gen) = {
            let mut v = self.vol.lock().unwrap();
            let r = v.set_entry(c, e);
            v.unlock(c);
            r
        };
        self.maps.kick(block);
        self.op(i).step = Step::Persist { block, gen };
        self.persist_wait.push(i);
        self.check_persisted(done);
    }

    /// Sets the map entries of ops whose new units a base flush has made durable.
    fn check_flushed(&mut self, done: &mut Completions) -> bool {
        if self.flush_wait.is_empty() {
            return false;
        }
        let (flushed, failed) = {
            let v = self.vol.lock().unwrap();
            (v.flush_done, v.flush_failed)
        };
        // (op, its units are durable)
        let mut ready: SmallVec<[(usize, bool); 16]> = SmallVec::new();
        let ops = &self.ops;
        self.flush_wait
            .retain(|&i| match ops.get(i).map(|o| o.step) {
                Some(Step::DataFlush { epoch }) if epoch <= flushed || failed => {
                    ready.push((i, epoch <= flushed));
                    false
                }
                Some(Step::DataFlush { .. }) => true,
                _ => false,
            });
        let any = !ready.is_empty();
        for (i, durable) in ready {
            if durable {
                let e = self.op(i).new;
                self.update_entry(i, e, done);
            } else {
                // The flush failed: the new units are not known durable.
                self.fail_unstored(i, done);
            }
        }
        any
    }

    /// Completes the ops whose map block generation is on the base.
    fn check_persisted(&mut self, done: &mut Completions) -> bool {
        if self.persist_wait.is_empty() {
            return false;
        }
        let mut ready: SmallVec<[(usize, IoStatus); 16]> = SmallVec::new();
        {
            let v = self.vol.lock().unwrap();
            let ops = &self.ops;
            self.persist_wait.retain(|&i| {
                let Some(Step::Persist { block, gen }) = ops.get(i).map(|o| o.step) else {
                    return false;
                };
                let blk = &v.blocks[block as usize];
                if blk.persisted_gen >= gen {
                    ready.push((i, IoStatus::Success));
                    false
                } else if blk.failed && blk.writing.is_none() {
                    ready.push((i, IoStatus::Failed(libc::EIO)));
                    false
                } else {
                    true
                }
            });
        }
        let any = !ready.is_empty();
        for (i, s) in ready {
            self.finish_op(i, s, done);
        }
        any
    }

    /// A base I/O of this channel finished.
    fn base_done(&mut self, mut sub: BdevIo, done: &mut Completions) {
        let i = sub.tag as usize;
        let op = self.op(i);
        if !sub.status.is_ok() {
            op.failed = true;
        }
        op.outstanding -= 1;
        match op.step {
            Step::ReadOld => {
                // Keep the runs in unit order (completions may come in any order).
                let b = sub.bufs.pop().expect("read buffer");
                let first = (sub.offset_blocks * self.geo.block_size as u64 - self.geo.data_off)
                    / self.geo.unit as u64;
                let op = self.op(i);
                let order: SmallVec<[u32; 4]> = runs(op.old.units()).iter().map(|r| r.0).collect();
                let pos = order.iter().position(|&u| u as u64 == first).unwrap_or(0);
                op.runs[pos] = Some(b);
                if op.outstanding == 0 {
                    self.old_read(i, done);
                }
            }
            Step::WriteNew => {
                if op.outstanding > 0 {
                    return;
                }
                if op.failed {
                    self.fail_unstored(i, done);
                    return;
                }
                let e = op.new;
                let epoch = {
                    let mut v = self.vol.lock().unwrap();
                    v.cache.then(|| v.want_epoch())
                };
                match epoch {
                    // The map must not point at units a power loss could still take back.
                    Some(epoch) => {
                        self.op(i).step = Step::DataFlush { epoch };
                        self.flush_wait.push(i);
                    }
                    None => self.update_entry(i, e, done),
                }
            }
            s => unreachable!("base completion in step {s:?}"),
        }
    }

    /// Retries ops waiting for a chunk lock or for space.
    fn retry_waiting(&mut self, done: &mut Completions) -> bool {
        let mut progressed = false;
        if !self.space_wait.is_empty() {
            let waiting = std::mem::take(&mut self.space_wait);
            for i in waiting {
                if self.alloc_and_write(i) {
                    progressed = true;
                } else {
                    self.space_wait.push(i);
                }
            }
        }
        if !self.lock_wait.is_empty() {
            let waiting = std::mem::take(&mut self.lock_wait);
            for i in waiting {
                if self.try_start(i, done) {
                    progressed = true;
                } else {
                    self.lock_wait.push(i);
                }
            }
        }
        progressed
    }
}

impl BackendChannel for CompressChannel {
    fn submit(&mut self, io: BdevIo, done: &mut Completions) {
        let kind = match io.op {
            IoType::Read => Kind::Read,
            IoType::Write => Kind::Write,
            IoType::Unmap | IoType::WriteZeroes => Kind::Zero,
            IoType::Flush => {
                // Every completed write is on the base already: flush the base's cache.
                let p = self.new_parent(io, 1);
                let sink: Rc<dyn IoSink> = self.sink.clone();
                self.base.submit(BdevIo::new(
                    IoType::Flush,
                    0,
                    0,
                    SgList::new(),
                    FLUSH_TAG | p as u64,
                    IoCallback::Sink(sink),
                ));
                return;
            }
        };
        let bs = self.geo.block_size as u64;
        let cs = self.geo.chunk as u64;
        let start = io.offset_blocks * bs;
        let end = start + io.num_blocks * bs;
        let first = start / cs;
        let last = (end - 1) / cs;
        let parent = self.new_parent(io, (last - first + 1) as usize);
        for c in first..=last {
            let lo = start.max(c * cs);
            let hi = end.min((c + 1) * cs);
            let i = self.ops.insert(ChunkOp {
                parent,
                chunk: c,
                kind,
                off: (lo - c * cs) as usize,
                len: (hi - lo) as usize,
                pbyte: (lo - start) as usize,
                step: Step::Lock,
                outstanding: 0,
                failed: false,
                old: Entry::default(),
                runs: SmallVec::new(),
                plain: None,
                stored: None,
                new: Entry::default(),
            });
            // Ops of this channel queued for a chunk keep their order.
            if !self.lock_wait.is_empty() || !self.try_start(i, done) {
                self.lock_wait.push(i);
            }
        }
    }

    fn poll(&mut self, done: &mut Completions) -> bool {
        std::mem::swap(&mut *self.sink.0.borrow_mut(), &mut self.batch);
        let mut busy = !self.batch.is_empty();
        let mut batch = std::mem::take(&mut self.batch);
        for sub in batch.drain(..) {
            if sub.tag & FLUSH_TAG != 0 {
                let p = (sub.tag & !FLUSH_TAG) as usize;
                let parent = self.parents.remove(p).expect("live flush");
                done.complete(parent.io, sub.status);
                continue;
            }
            self.base_done(sub, done);
        }
        self.batch = batch;
        busy |= self.check_flushed(done);
        busy |= self.check_persisted(done);
        busy |= self.retry_waiting(done);
        // Ops waiting on another channel (its lock or its map write) need polling.
        // One base flush covers every op of this poll waiting for durability.
        if !self.flush_wait.is_empty() {
            self.maps.kick_flush();
        }
        busy || !self.lock_wait.is_empty()
            || !self.space_wait.is_empty()
            || !self.persist_wait.is_empty()
            || !self.flush_wait.is_empty()
    }
}

/// Tag bit of a forwarded flush (the low bits hold the parent index).
const FLUSH_TAG: u64 = 1 << 62;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trip_and_crc() {
        let geo = Geometry::for_base(512, 64 << 20, 16384).unwrap();
        let sb = Superblock {
            geo,
            algo: Algorithm::Zstd { level: 3 },
            uuid: uuid::Uuid::new_v4(),
        };
        let mut b = sb.encode();
        assert_eq!(Superblock::decode(&b, 512, 64 << 20).unwrap(), Some(sb));
        // Another block size or a smaller base: refused, not misread.
        assert!(Superblock::decode(&b, 4096, 64 << 20).is_err());
        assert!(Superblock::decode(&b, 512, 1 << 20).is_err());
        b[40] ^= 1;
        assert!(Superblock::decode(&b, 512, 64 << 20).is_err());
        assert_eq!(
            Superblock::decode(&[0u8; 4096], 512, 64 << 20).unwrap(),
            None
        );
    }

    #[test]
    fn geometry_fits_worst_case() {
        for (bs, base, chunk) in [
            (512u32, 64u64 << 20, 16384u32),
            (4096, 64 << 20, 16384),
            (4096, 1 << 30, 131072),
            (512, 8 << 20, 4096),
        ] {
            let g = Geometry::for_base(bs, base, chunk).unwrap();
            assert!(g.data_off + g.data_units * g.unit as u64 <= base);
            assert!(g.data_units >= g.num_chunks * g.units_per_chunk() as u64);
            assert!(g.units_per_chunk() as usize <= MAX_UNITS);
            assert!(g.num_chunks * ENTRY_BYTES as u64 <= g.map_bytes);
        }
        assert!(Geometry::for_base(512, 64 << 10, 16384).is_err());
    }

    #[test]
    fn entry_round_trip_and_damage() {
        let geo = Geometry::for_base(512, 64 << 20, 16384).unwrap();
        let mut e = Entry {
            len: 3000,
            raw: false,
            algo: 1,
            data_crc: 0xdead_beef,
            n_units: 2,
            ..Entry::default()
        };
        e.units[0] = 7;
        e.units[1] = 9;
        let mut b = [0u8; ENTRY_BYTES];
        e.encode(&mut b);
        assert_eq!(Entry::decode(&b, &geo), Some(e));
        b[13] ^= 0x40;
        assert_eq!(Entry::decode(&b, &geo), None);
        assert_eq!(
            Entry::decode(&[0u8; ENTRY_BYTES], &geo),
            Some(Entry::default())
        );
    }

    #[test]
    fn allocator_is_exact() {
        let mut u = Units::new(130);
        let a = u.alloc(100).unwrap();
        assert_eq!(a.len(), 100);
        let b = u.alloc(30).unwrap();
        assert_eq!(b.len(), 30);
        assert!(u.alloc(1).is_none());
        u.free(a[5] as u64);
        assert_eq!(u.alloc(1).unwrap().as_slice(), &[a[5]]);
        assert_eq!(u.used, 130);
    }

    #[test]
    fn algorithm_params() {
        assert_eq!(parse_algorithm(None, None).unwrap(), None);
        assert_eq!(
            parse_algorithm(Some("LZ4"), None).unwrap(),
            Some(Algorithm::Lz4)
        );
        assert_eq!(
            parse_algorithm(Some("zstd"), None).unwrap(),
            Some(Algorithm::Zstd { level: 1 })
        );
        assert!(parse_algorithm(Some("lz4"), Some(3)).is_err());
        assert!(parse_algorithm(Some("zstd"), Some(30)).is_err());
        assert!(parse_algorithm(Some("lz5"), None).is_err());
    }
}
