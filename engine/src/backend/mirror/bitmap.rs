//! The mirror's write-intent bitmap: which regions may differ between the in-sync children
//! and a child that is out, kept on every child still in the mirror, so a child that returns
//! copies only those regions — also after the mirror's own daemon restarted.
//!
//! ```text
//!  child: [ superblock slots | chunk 0 | chunk 1 | ... | chunk 253 | data (from 1 MiB) ]
//!  chunk (4 KiB): [ 511 words of bits (one per region) | crc32c | chunk index ]
//!
//!  write while a member is out ─► bits of its regions durable? ─ yes ─► issue
//!                                   └ no: set them (memory), wait ─► a round writes the
//!                                     chunks that changed to every member still in ─► issue
//! ```
//!
//! Bits are set before any write is issued (md's write-intent bitmap): whatever may differ
//! between the children — a write that reached some and not a member that is out, a write in
//! flight when the mirror's node died, a write a member holds only in a volatile cache — is
//! named on disk first. So a returning member copies only those regions, and after an unclean
//! restart the in-sync members are made equal over only those regions (resync). Bits are
//! swept while every member is in sync: a region with no write in flight and none begun since
//! the last sweep is cleared once a flush of every member has made its writes durable
//! (`candidates` → flush → `sweep`). A region being written is never cleared (per-word
//! in-flight counts, checked after the clear: see `sweep`). A chunk whose checksum fails is
//! read as all ones (a torn or damaged chunk costs copying, never data). The checksum is seeded
//! with the mirror's UUID: another mirror's bitmap never passes.
//!
//! Two views of the bits: `words` (what writes have asked for) and `durable` (what the last
//! completed round put on every member). A write may go once `durable` covers its regions.
//! Rounds are serialised by the mirror's metadata writer token (see the channel), so `durable`
//! is exactly what is on disk.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::superblock::{META_BYTES, SLOT_BYTES};

/// Byte offset of the bitmap on every child.
pub const OFFSET: u64 = 2 * SLOT_BYTES as u64;
/// Bytes of one bitmap chunk (the unit written).
pub const CHUNK_BYTES: usize = 4096;
/// Chunks the metadata area holds.
pub const MAX_CHUNKS: usize = ((META_BYTES - OFFSET) / CHUNK_BYTES as u64) as usize;
/// Words of bits in one chunk (the rest is the trailer).
const CHUNK_WORDS: usize = (CHUNK_BYTES - 8) / 8;
/// Regions one chunk covers.
const CHUNK_BITS: u64 = CHUNK_WORDS as u64 * 64;
/// Smallest region size.
pub const MIN_REGION: u32 = 64 << 10;
/// Largest region size.
pub const MAX_REGION: u32 = 1 << 30;

/// The region size for a mirror of `data_bytes`: `asked` (a power of two, at least
/// [`MIN_REGION`]) doubled until the bitmap fits the metadata area.
pub fn region_bytes_for(asked: u32, data_bytes: u64) -> u32 {
    let mut r = asked.clamp(MIN_REGION, MAX_REGION).next_power_of_two();
    while r < MAX_REGION && data_bytes.div_ceil(r as u64) > MAX_CHUNKS as u64 * CHUNK_BITS {
        r *= 2;
    }
    r
}

/// A mirror's write-intent bitmap in memory.
pub(crate) struct Bitmap {
    mirror: uuid::Uuid,
    /// Blocks per region.
    region_blocks: u64,
    /// log2 of `region_blocks` (both powers of two: a shift, not a division, per write).
    region_shift: u32,
    /// Regions (bits in use).
    regions: u64,
    words: Vec<AtomicU64>,
    durable: Vec<AtomicU64>,
    /// Chunks whose words changed since they were last handed to a round.
    dirty: Vec<AtomicBool>,
    /// Writes in flight per word (64 regions).
    inflight: Vec<AtomicU32>,
    /// Regions a write began in since the last sweep's candidates were taken.
    recent: Vec<AtomicU64>,
}

/// The words of one chunk as a round took them.
pub(crate) struct ChunkSnap {
    pub(crate) chunk: usize,
    words: Vec<u64>,
}

impl ChunkSnap {
    /// Byte offset of this chunk on a child.
    pub(crate) fn offset(&self) -> u64 {
        OFFSET + (self.chunk * CHUNK_BYTES) as u64
    }
}

impl Bitmap {
    /// An empty bitmap over `num_blocks` blocks of `block_size`, `region_bytes` per bit.
    pub(crate) fn new(
        mirror: uuid::Uuid,
        region_bytes: u32,
        block_size: u32,
        num_blocks: u64,
    ) -> Bitmap {
        let region_blocks = (region_bytes / block_size).max(1) as u64;
        debug_assert!(
            region_blocks.is_power_of_two(),
            "regions and blocks are powers of two"
        );
        let regions = num_blocks.div_ceil(region_blocks);
        let chunks = regions.div_ceil(CHUNK_BITS) as usize;
        debug_assert!(chunks <= MAX_CHUNKS, "region size too small for the area");
        Bitmap {
            mirror,
            region_blocks,
            region_shift: region_blocks.trailing_zeros(),
            regions,
            words: (0..chunks * CHUNK_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            durable: (0..chunks * CHUNK_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            dirty: (0..chunks).map(|_| AtomicBool::new(false)).collect(),
            inflight: (0..chunks * CHUNK_WORDS)
                .map(|_| AtomicU32::new(0))
                .collect(),
            recent: (0..chunks * CHUNK_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Chunks in use (each written as [`CHUNK_BYTES`] at [`ChunkSnap::offset`]).
    pub(crate) fn chunks(&self) -> usize {
        self.dirty.len()
    }

    /// The regions [first, last] that blocks [offset, offset + n) touch.
    fn span(&self, offset: u64, n: u64) -> (u64, u64) {
        let first = offset >> self.region_shift;
        let last = (offset + n.max(1) - 1) >> self.region_shift;
        (first, last.min(self.regions.saturating_sub(1)))
    }

    /// Calls `f(word index, mask)` for each word the regions [first, last] fall in.
    fn each_word(first: u64, last: u64, mut f: impl FnMut(usize, u64) -> bool) -> bool {
        let mut r = first;
        while r <= last {
            let w = (r / 64) as usize;
            let lo = r % 64;
            let hi = if last / 64 == r / 64 { last % 64 } else { 63 };
            let mask = if hi - lo == 63 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo + 1)) - 1) << lo
            };
            if !f(w, mask) {
                return false;
            }
            r = (w as u64 + 1) * 64;
        }
        true
    }

    /// Whether every region blocks [offset, offset + n) touch is marked on disk. A write
    /// calls it after [`Bitmap::begin`] (the sweep's other half: see [`Bitmap::sweep`]).
    pub(crate) fn covered(&self, offset: u64, n: u64) -> bool {
        let (first, last) = self.span(offset, n);
        Self::each_word(first, last, |w, mask| {
            self.durable[w].load(Ordering::SeqCst) & mask == mask
        })
    }

    /// A write to blocks [offset, offset + n) begins: its regions are not swept until
    /// [`Bitmap::end`]. Two atomic operations per 64 regions touched.
    pub(crate) fn begin(&self, offset: u64, n: u64) {
        let (first, last) = self.span(offset, n);
        Self::each_word(first, last, |w, mask| {
            self.inflight[w].fetch_add(1, Ordering::SeqCst);
            // No locked operation when the bits are set already, as they are for a hot
            // region. SeqCst: a load that still sees bits the sweep's `candidates` reset
            // comes before that reset, and so does this write's count, which the sweep then
            // sees (the region is no candidate).
            if self.recent[w].load(Ordering::SeqCst) & mask != mask {
                self.recent[w].fetch_or(mask, Ordering::AcqRel);
            }
            true
        });
    }

    /// The write [`Bitmap::begin`] announced is done (at every member).
    pub(crate) fn end(&self, offset: u64, n: u64) {
        let (first, last) = self.span(offset, n);
        Self::each_word(first, last, |w, _| {
            self.inflight[w].fetch_sub(1, Ordering::SeqCst);
            true
        });
    }

    /// A sweep's first step, before the flush: the regions that may be cleared once it is
    /// done — marked on disk, no write in flight in their word; and the "begun since" record
    /// starts afresh.
    pub(crate) fn candidates(&self) -> Vec<u64> {
        (0..self.durable.len())
            .map(|w| {
                self.recent[w].store(0, Ordering::SeqCst);
                if self.inflight[w].load(Ordering::SeqCst) == 0 {
                    self.durable[w].load(Ordering::SeqCst)
                } else {
                    0
                }
            })
            .collect()
    }

    /// A sweep's second step, after a flush of every member completed (every write done
    /// before `candidates` is durable everywhere) and under the writer token: clears the
    /// candidates no write has begun in since. Returns the regions cleared (their chunks are
    /// then written by the next round).
    ///
    /// Against a write beginning meanwhile: it counts itself in flight, then checks
    /// `durable`; the sweep clears `durable`, then checks the count. One of them sees the
    /// other: the write finds its bit gone and marks it again (waiting for a round), or the
    /// sweep finds the write and puts the bits back (still on disk: nothing was written).
    pub(crate) fn sweep(&self, cands: &[u64]) -> u64 {
        let mut cleared = 0;
        for (w, &cand) in cands.iter().enumerate() {
            let mask = cand & !self.recent[w].load(Ordering::SeqCst);
            if mask == 0 {
                continue;
            }
            self.durable[w].fetch_and(!mask, Ordering::SeqCst);
            self.words[w].fetch_and(!mask, Ordering::SeqCst);
            if self.inflight[w].load(Ordering::SeqCst) > 0 {
                self.words[w].fetch_or(mask, Ordering::SeqCst);
                self.durable[w].fetch_or(mask, Ordering::SeqCst);
                continue;
            }
            self.dirty[w / CHUNK_WORDS].store(true, Ordering::Release);
            cleared += mask.count_ones() as u64;
        }
        cleared
    }

    /// Marks the regions of blocks [offset, offset + n) (in memory; the next round writes
    /// them). Allocation-free: one atomic OR per 64 regions.
    pub(crate) fn mark(&self, offset: u64, n: u64) {
        let (first, last) = self.span(offset, n);
        Self::each_word(first, last, |w, mask| {
            let old = self.words[w].fetch_or(mask, Ordering::SeqCst);
            if old & mask != mask {
                self.dirty[w / CHUNK_WORDS].store(true, Ordering::Release);
            }
            true
        });
    }

    /// Whether a round has chunks to write.
    pub(crate) fn has_dirty(&self) -> bool {
        self.dirty.iter().any(|d| d.load(Ordering::Acquire))
    }

    /// Chunk `c`'s words as they are now.
    fn snap(&self, c: usize) -> ChunkSnap {
        ChunkSnap {
            chunk: c,
            words: self.words[c * CHUNK_WORDS..(c + 1) * CHUNK_WORDS]
                .iter()
                .map(|w| w.load(Ordering::Acquire))
                .collect(),
        }
    }

    /// Takes the chunks that changed (or all of them) for a round.
    pub(crate) fn take(&self, all: bool) -> Vec<ChunkSnap> {
        (0..self.chunks())
            .filter(|&c| self.dirty[c].swap(false, Ordering::AcqRel) || all)
            .map(|c| self.snap(c))
            .collect()
    }

    /// Every chunk as it is now, leaving what rounds have to write untouched (for a member
    /// that is about to join: it gets the whole bitmap once).
    pub(crate) fn snapshot_all(&self) -> Vec<ChunkSnap> {
        (0..self.chunks()).map(|c| self.snap(c)).collect()
    }

    /// A round that took `snaps` did not reach every member: they are written again.
    pub(crate) fn untake(&self, snaps: &[ChunkSnap]) {
        for s in snaps {
            self.dirty[s.chunk].store(true, Ordering::Release);
        }
    }

    /// A round put `snaps` on every member still in the mirror.
    pub(crate) fn landed(&self, snaps: &[ChunkSnap]) {
        for s in snaps {
            for (i, &w) in s.words.iter().enumerate() {
                self.durable[s.chunk * CHUNK_WORDS + i].store(w, Ordering::Release);
            }
        }
    }

    /// One chunk as written on a child.
    pub(crate) fn encode(&self, s: &ChunkSnap) -> Vec<u8> {
        let mut b = vec![0u8; CHUNK_BYTES];
        for (i, w) in s.words.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let idx = (s.chunk as u32).to_le_bytes();
        b[CHUNK_BYTES - 4..].copy_from_slice(&idx);
        let crc = self.crc(&b, s.chunk);
        b[CHUNK_BYTES - 8..CHUNK_BYTES - 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn crc(&self, b: &[u8], chunk: usize) -> u32 {
        let seed = crc32c::crc32c(self.mirror.as_bytes());
        let c = crc32c::crc32c_append(seed, &b[..CHUNK_BYTES - 8]);
        crc32c::crc32c_append(c, &(chunk as u32).to_le_bytes())
    }

    /// Adds the bits a child holds (`area`: its chunks from [`OFFSET`], in order). A chunk
    /// that fails its checksum counts as all ones. Returns how many chunks failed.
    pub(crate) fn merge(&self, area: &[u8]) -> usize {
        let mut bad = 0;
        for c in 0..self.chunks() {
            let b = area.get(c * CHUNK_BYTES..(c + 1) * CHUNK_BYTES);
            let ok = b.filter(|b| {
                let crc =
                    u32::from_le_bytes(b[CHUNK_BYTES - 8..CHUNK_BYTES - 4].try_into().unwrap());
                let idx = u32::from_le_bytes(b[CHUNK_BYTES - 4..].try_into().unwrap());
                idx as usize == c && crc == self.crc(b, c)
            });
            for i in 0..CHUNK_WORDS {
                let w = match ok {
                    Some(b) => u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()),
                    None => u64::MAX,
                };
                self.words[c * CHUNK_WORDS + i].fetch_or(w, Ordering::AcqRel);
            }
            if ok.is_none() {
                bad += 1;
            }
        }
        // Bits past the last region mean nothing: keep them clear.
        self.trim();
        bad
    }

    fn trim(&self) {
        let n = self.words.len() as u64 * 64;
        if self.regions < n {
            let w = (self.regions / 64) as usize;
            let keep = self.regions % 64;
            if w < self.words.len() {
                let mask = if keep == 0 { 0 } else { (1u64 << keep) - 1 };
                self.words[w].fetch_and(mask, Ordering::AcqRel);
            }
            for x in &self.words[(w + 1).min(self.words.len())..] {
                x.store(0, Ordering::Release);
            }
        }
    }

    /// After a load written back to every member: what is in memory is on disk.
    pub(crate) fn all_landed(&self) {
        for (d, w) in self.durable.iter().zip(&self.words) {
            d.store(w.load(Ordering::Acquire), Ordering::Release);
        }
        for d in &self.dirty {
            d.store(false, Ordering::Release);
        }
    }

    /// Regions marked.
    pub(crate) fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Acquire).count_ones() as u64)
            .sum()
    }

    /// The marked ranges of blocks, coalesced, as [start, end) (clipped to `num_blocks`).
    pub(crate) fn ranges(&self, num_blocks: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (w, word) in self.words.iter().enumerate() {
            let mut v = word.load(Ordering::Acquire);
            while v != 0 {
                let bit = v.trailing_zeros() as u64;
                v &= v - 1;
                let r = w as u64 * 64 + bit;
                let start = r * self.region_blocks;
                let end = (start + self.region_blocks).min(num_blocks);
                if start >= end {
                    continue;
                }
                match out.last_mut() {
                    Some(l) if l.1 == start => l.1 = end,
                    _ => out.push((start, end)),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bm() -> Bitmap {
        // 512-byte blocks, 64 KiB regions (128 blocks), 100 000 regions (4 chunks).
        Bitmap::new(uuid::Uuid::from_u128(5), 64 << 10, 512, 128 * 100_000)
    }

    #[test]
    fn marks_cover_and_coalesce() {
        let b = bm();
        assert_eq!(b.chunks(), 4);
        assert!(!b.covered(0, 1));
        b.mark(100, 200); // regions 0..=2
        b.mark(128 * 70, 1); // region 70 (second word)
        assert!(b.has_dirty());
        assert!(!b.covered(100, 200), "marked, not yet on disk");
        let snaps = b.take(false);
        assert_eq!(snaps.len(), 1);
        b.landed(&snaps);
        assert!(b.covered(0, 384) && b.covered(128 * 70 + 5, 100));
        assert!(!b.covered(0, 385) && !b.covered(128 * 71, 1));
        assert_eq!(b.count(), 4);
        assert_eq!(
            b.ranges(128 * 100_000),
            vec![(0, 384), (128 * 70, 128 * 71)]
        );
        // A range over many words (an unmap of everything).
        b.mark(0, 128 * 100_000);
        assert_eq!(b.count(), 100_000);
        assert_eq!(b.ranges(128 * 100_000), vec![(0, 128 * 100_000)]);
    }

    #[test]
    fn round_trips_and_distrusts_damage() {
        let b = bm();
        b.mark(128 * 40_000, 128 * 3);
        let area: Vec<u8> = b.take(true).iter().flat_map(|s| b.encode(s)).collect();
        let c = bm();
        assert_eq!(c.merge(&area), 0);
        assert_eq!(c.ranges(128 * 100_000), vec![(128 * 40_000, 128 * 40_003)]);
        // A flipped bit in chunk 2 makes chunk 2 all ones, nothing else.
        let mut torn = area.clone();
        torn[2 * CHUNK_BYTES + 17] ^= 4;
        let d = bm();
        assert_eq!(d.merge(&torn), 1);
        assert_eq!(d.count(), CHUNK_BITS + 3);
        // Another mirror's bitmap never passes.
        let e = Bitmap::new(uuid::Uuid::from_u128(6), 64 << 10, 512, 128 * 100_000);
        assert_eq!(e.merge(&area), 4);
        // Bits past the last region are dropped (all ones in the last chunk included).
        assert_eq!(e.count(), 100_000);
    }

    #[test]
    fn a_sweep_clears_idle_regions_and_never_one_being_written() {
        let b = bm();
        b.begin(0, 1); // region 0: in flight
        b.mark(0, 1);
        b.mark(128 * 70, 1); // region 70: written, done
        b.mark(128 * 200, 1); // region 200: written, done, written again after the candidates
        b.landed(&b.take(false));
        let cands = b.candidates();
        b.begin(128 * 200, 1);
        b.end(128 * 200, 1);
        assert_eq!(b.sweep(&cands), 1, "only region 70");
        assert!(b.covered(0, 1) && b.covered(128 * 200, 1));
        assert!(!b.covered(128 * 70, 1));
        assert_eq!(b.count(), 2);
        // The next sweep takes what has gone idle.
        b.end(0, 1);
        let cands = b.candidates();
        assert_eq!(b.sweep(&cands), 2);
        assert_eq!(b.count(), 0);
        assert!(b.has_dirty());
        // A write beginning between the candidates and the sweep keeps its region.
        b.mark(128 * 300, 1);
        b.landed(&b.take(false));
        let cands = b.candidates();
        b.begin(128 * 300, 1);
        assert_eq!(b.sweep(&cands), 0);
        assert!(b.covered(128 * 300, 1));
    }

    #[test]
    fn region_grows_to_fit() {
        assert_eq!(region_bytes_for(64 << 10, 1 << 30), 64 << 10);
        assert_eq!(region_bytes_for(100 << 10, 1 << 30), 128 << 10);
        // 64 KiB regions cover MAX_CHUNKS * CHUNK_BITS * 64 KiB ≈ 507 GiB.
        assert_eq!(region_bytes_for(64 << 10, 1 << 40), 256 << 10);
        assert_eq!(region_bytes_for(0, 1 << 20), MIN_REGION);
    }
}
