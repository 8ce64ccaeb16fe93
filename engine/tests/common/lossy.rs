//! The lossy base of the power-loss tests: a RAM disk with a volatile write cache that loses
//! part of its cache at a simulated power cut ([`Loss::Ordered`]: a prefix in completion
//! order; [`Loss::Unordered`]: any subset) and completes I/O out of order, some of it much
//! later; stamped blocks, whose content names the block and the write that put it there; and
//! the rounds' driver ([`run_rounds`]: seeds, replay, the report of failed rounds).
//!
//! ```text
//!  I/O ─► queue ─► poll: each completes with p = 0.5 (one in ten: 0.05), shuffled
//!                    reads:  media + cache
//!                    Flush:  cache ──► media (what completed before it completed, or before
//!                            it was submitted: FlushScope)
//!  power_cut ─► image = media + what `Loss` lets survive of the cache
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_engine::{
    bdev, BackendChannel, BdevBackend, BdevInfo, BdevIo, Completions, IoStatus, IoType,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::text_like;

/// The lossy base's block size.
pub const BS: usize = 512;
/// How long [`delete`] retries.
const LIMIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ the lossy base ----

/// How much of the volatile cache reaches the media at a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// A prefix in completion order (the write at the cut torn at block granularity).
    Ordered,
    /// Any subset: each cached write kept or dropped independently.
    Unordered,
}

/// What a Flush makes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushScope {
    /// Every write completed when the flush completes (more than NVMe promises).
    Completed,
    /// Only the writes completed when the flush was submitted (all that NVMe promises): a
    /// flush that overtakes what it was meant to cover leaves a wider window.
    Submitted,
}

/// A completed write not yet flushed.
pub struct Cached {
    /// Completion order.
    pub seq: u64,
    pub off: usize,
    pub data: Vec<u8>,
}

/// The lossy base's state: what is on the media, and the volatile cache above it.
pub struct Media {
    /// What survives any power cut.
    pub durable: Vec<u8>,
    /// What reads see: `durable` with every cached write applied.
    pub current: Vec<u8>,
    /// Completed, unflushed writes in completion order (the order is the sequence).
    pub cache: Vec<Cached>,
    /// The sequence number of the next completed write.
    pub seq: u64,
    pub scope: FlushScope,
}

/// What a power cut left on the media.
pub struct Cut {
    pub image: Vec<u8>,
    pub cached: usize,
    pub kept: usize,
    /// Storm operations issued before the cut.
    pub issued: u64,
    /// The model's clock at the cut.
    pub clock: u64,
}

impl Media {
    pub fn new(image: Vec<u8>, scope: FlushScope) -> Media {
        Media {
            current: image.clone(),
            durable: image,
            cache: Vec::new(),
            seq: 0,
            scope,
        }
    }

    pub fn write(&mut self, off: usize, data: Vec<u8>) {
        self.current[off..off + data.len()].copy_from_slice(&data);
        self.cache.push(Cached {
            seq: self.seq,
            off,
            data,
        });
        self.seq += 1;
    }

    /// Runs `io` (it completed now); a flush was submitted when `seq` was the next write's
    /// sequence number.
    pub fn execute(&mut self, io: &mut BdevIo, seq: u64) {
        let at = io.offset_blocks as usize * BS;
        let len = io.num_blocks as usize * BS;
        match io.op {
            IoType::Read => {
                let mut o = at;
                for b in io.bufs.iter_mut() {
                    let n = b.len();
                    b.copy_from_slice(&self.current[o..o + n]);
                    o += n;
                }
            }
            IoType::Write => {
                let mut data = Vec::with_capacity(len);
                for b in io.bufs.iter() {
                    data.extend_from_slice(b);
                }
                self.write(at, data);
            }
            IoType::WriteZeroes | IoType::Unmap => self.write(at, vec![0; len]),
            IoType::Flush => {
                let upto = match self.scope {
                    FlushScope::Completed => u64::MAX,
                    FlushScope::Submitted => seq,
                };
                let k = self.cache.partition_point(|w| w.seq < upto);
                for w in self.cache.drain(..k) {
                    self.durable[w.off..w.off + w.data.len()].copy_from_slice(&w.data);
                }
            }
        }
    }

    /// The media after a power cut now: durable data plus what `loss` lets survive.
    pub fn power_cut(&self, loss: Loss, rng: &mut SmallRng, issued: u64, clock: u64) -> Cut {
        let mut image = self.durable.clone();
        let apply = |image: &mut Vec<u8>, w: &Cached| {
            image[w.off..w.off + w.data.len()].copy_from_slice(&w.data)
        };
        let kept = match loss {
            Loss::Unordered => self
                .cache
                .iter()
                .filter(|_| rng.gen_bool(0.5))
                .map(|w| apply(&mut image, w))
                .count(),
            Loss::Ordered => {
                let k = rng.gen_range(0..=self.cache.len());
                for w in &self.cache[..k] {
                    apply(&mut image, w);
                }
                if let Some(w) = self.cache.get(k) {
                    for (i, blk) in w.data.chunks(BS).enumerate() {
                        if rng.gen_bool(0.5) {
                            let o = w.off + i * BS;
                            image[o..o + BS].copy_from_slice(blk);
                        }
                    }
                }
                k
            }
        };
        Cut {
            image,
            cached: self.cache.len(),
            kept,
            issued,
            clock,
        }
    }
}

/// A RAM disk with a volatile write cache that completes I/O asynchronously, out of order.
struct Lossy {
    media: Arc<Mutex<Media>>,
    seed: u64,
    channels: AtomicU64,
}

impl BdevBackend for Lossy {
    fn product_name(&self) -> &'static str {
        "Lossy write-back disk (test)"
    }
    fn supports(&self, _op: IoType) -> bool {
        true
    }
    fn create_channel(&self) -> ballast_engine::Result<Box<dyn BackendChannel>> {
        let n = self.channels.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(LossyChannel {
            media: self.media.clone(),
            rng: SmallRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            queue: Vec::new(),
        }))
    }
}

struct LossyChannel {
    media: Arc<Mutex<Media>>,
    rng: SmallRng,
    /// Submitted I/O, its chance to complete at each poll, and the media's write sequence
    /// number at its submission.
    queue: Vec<(BdevIo, f64, u64)>,
}

impl BackendChannel for LossyChannel {
    fn submit(&mut self, io: BdevIo, _done: &mut Completions) {
        // Most I/O completes within a few polls; one in ten takes tens of polls.
        let p = if self.rng.gen_bool(0.1) { 0.05 } else { 0.5 };
        let seq = self.media.lock().unwrap().seq;
        self.queue.push((io, p, seq));
    }

    fn poll(&mut self, done: &mut Completions) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        let mut ready = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            if self.rng.gen_bool(self.queue[i].1) {
                let (io, _, seq) = self.queue.swap_remove(i);
                ready.push((io, seq));
            } else {
                i += 1;
            }
        }
        ready.shuffle(&mut self.rng);
        let mut m = self.media.lock().unwrap();
        for (mut io, seq) in ready {
            m.execute(&mut io, seq);
            done.complete(io, IoStatus::Success);
        }
        // Pending I/O has no wake fd: keep the reactor polling.
        true
    }
}

/// Registers lossy bdev `name` whose media holds `image` (cache empty); a flush makes every
/// write completed by its completion durable.
pub fn lossy_create(name: &str, image: Vec<u8>, seed: u64) -> Arc<Mutex<Media>> {
    lossy_create_with(name, image, seed, FlushScope::Completed)
}

/// [`lossy_create`] with flushes of `scope`.
pub fn lossy_create_with(
    name: &str,
    image: Vec<u8>,
    seed: u64,
    scope: FlushScope,
) -> Arc<Mutex<Media>> {
    let media = Arc::new(Mutex::new(Media::new(image, scope)));
    let blocks = media.lock().unwrap().durable.len() / BS;
    let mut info = BdevInfo::new(name, BS as u32, blocks as u64);
    info.write_cache = true;
    let backend = Lossy {
        media: media.clone(),
        seed,
        channels: AtomicU64::new(0),
    };
    bdev::register(info, Box::new(backend)).unwrap();
    media
}

// ------------------------------------------------------------------------ the data ----

const MAGIC: &[u8; 3] = b"PL1";

/// Fills `buf` (one block) with the content write `id` gives block `block`: a header naming
/// both, then text-like (compressible) or random bytes derived from them.
pub fn stamp(buf: &mut [u8], block: u64, id: u32, text: bool) {
    buf[..8].copy_from_slice(&block.to_le_bytes());
    buf[8..12].copy_from_slice(&id.to_le_bytes());
    buf[12..15].copy_from_slice(MAGIC);
    buf[15] = text as u8;
    let mut rng = SmallRng::seed_from_u64(block << 32 ^ id as u64);
    if text {
        text_like(&mut rng, &mut buf[16..]);
    } else {
        rng.fill(&mut buf[16..]);
    }
}

/// Fills `data` with what write `id` gives the blocks from `first` on.
pub fn stamp_blocks(data: &mut [u8], first: u64, id: u32, text: bool) {
    for (i, blk) in data.chunks_mut(BS).enumerate() {
        stamp(blk, first + i as u64, id, text);
    }
}

/// What a block read back holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    Zeros,
    Write(u32),
    /// Neither zeros nor exactly what some write gave this block.
    Garbage,
}

pub fn decode(buf: &[u8], block: u64) -> Got {
    if buf.iter().all(|&x| x == 0) {
        return Got::Zeros;
    }
    let id = u32::from_le_bytes(buf[8..12].try_into().unwrap());
    if buf[..8] != block.to_le_bytes() || &buf[12..15] != MAGIC || buf[15] > 1 || id == 0 {
        return Got::Garbage;
    }
    let mut want = [0u8; BS];
    stamp(&mut want, block, id, buf[15] == 1);
    if buf == want {
        Got::Write(id)
    } else {
        Got::Garbage
    }
}

/// Deletes `name`, retrying while it is still claimed (its user goes with its last channel).
pub fn delete(name: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        match bdev::delete(name) {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("delete {name}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------- the rounds ----

/// Runs the rounds of a power-loss test: `round(i, seed)` runs round `i` and returns what it
/// was (for the report) and the problems it found. `{VAR}_SEED=n` replays a run (round `i`
/// gets seed `n + i`), `{VAR}_ROUNDS=n` runs `n` rounds instead of `rounds`. Panics with every
/// failed round's problems.
pub fn run_rounds(
    var: &str,
    rounds: u64,
    mut round: impl FnMut(u64, u64) -> (String, Vec<String>),
) {
    let env = |what: &str| {
        std::env::var(format!("{var}_{what}"))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    let seed = env("SEED").unwrap_or_else(|| rand::thread_rng().gen::<u64>());
    let rounds = env("ROUNDS").unwrap_or(rounds);
    let mut failed = Vec::new();
    for i in 0..rounds {
        let (what, problems) = round(i, seed.wrapping_add(i));
        if !problems.is_empty() {
            failed.push(format!(
                "round {i} ({what}; replay: {var}_SEED={seed} {var}_ROUNDS={}):\n  {}",
                i + 1,
                problems.join("\n  ")
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {rounds} rounds failed (first seed {seed}):\n{}",
        failed.len(),
        failed.join("\n")
    );
}
