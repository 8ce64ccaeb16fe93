//! The fault-injection stage (SPDK's error bdev): a pass-through over a base bdev that fails,
//! holds, corrupts or refuses I/O on command, so every error path above it (the NVMe/TCP
//! target's statuses, a mirror faulting a child, a rebuild's retries) is driven on purpose
//! rather than hoped for.
//!
//! ```text
//!  submit ─► armed injection for this op (and the channel's queue depth reached)?
//!              ├─ failure       ─► completes with EIO, never reaches the base
//!              ├─ nomem         ─► completes with NoMemory (the retryable status)
//!              ├─ pending       ─► held on the channel until the op's injection is cleared,
//!              │                   then sent to the base (a hang, then a late completion)
//!              ├─ corrupt_data  ─► writes: the stored data has one byte flipped;
//!              │                   reads: the returned data has one byte flipped
//!              └─ none          ─► base, unchanged
//! ```
//!
//! `inject(name, op, kind, count, …)` arms `count` I/Os of one operation (or of all); `clear`
//! disarms and releases held I/Os. Injections are shared by all reactors (atomics, no lock on
//! the data path). The bdev is named `EE_<base>` as SPDK names it; the base is claimed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::{for_each_segment, Collect, Slab, StageBase};
use crate::bdev::{
    self, BackendChannel, Bdev, BdevBackend, BdevIo, Completions, IoCallback, IoChannel, IoSink,
    IoStatus, IoType, SgList,
};
use crate::buf::{self, IoBuf};
use crate::error::{Error, Result};

/// What an armed injection does to the I/O it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Complete with an I/O error (EIO) without reaching the base.
    Failure,
    /// Hold the I/O until the injection is cleared, then pass it on.
    Pending,
    /// Flip one byte of the data (written, or returned by a read).
    CorruptData,
    /// Complete with NoMemory (retryable) without reaching the base.
    NoMem,
}

impl ErrorKind {
    /// SPDK's name of the kind (`bdev_error_inject_error`'s `error_type`).
    pub fn parse(s: &str) -> Option<ErrorKind> {
        Some(match s {
            "failure" => ErrorKind::Failure,
            "pending" => ErrorKind::Pending,
            "corrupt_data" => ErrorKind::CorruptData,
            "nomem" => ErrorKind::NoMem,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(c: u8) -> Option<ErrorKind> {
        [
            ErrorKind::Failure,
            ErrorKind::Pending,
            ErrorKind::CorruptData,
            ErrorKind::NoMem,
        ]
        .get(c.checked_sub(1)? as usize)
        .copied()
    }
}

/// An injection for one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// What happens to the I/Os it takes.
    pub kind: ErrorKind,
    /// How many I/Os it takes.
    pub count: u64,
    /// Take I/Os only while at least this many are outstanding on the channel (0: always).
    pub queue_depth: u64,
    /// Byte of the I/O's data that `CorruptData` flips.
    pub corrupt_offset: u64,
    /// XOR applied to that byte (non-zero).
    pub corrupt_value: u8,
    /// Take only I/Os touching these blocks (ballast's; `None`: any). Lets a test fail or
    /// hold the metadata writes of a stage above while its data I/O passes.
    pub blocks: Option<std::ops::Range<u64>>,
}

impl Injection {
    /// `count` I/Os get `kind`, at any queue depth and block, byte 0 for corruption (set
    /// `corrupt_value` for `CorruptData`).
    pub fn new(kind: ErrorKind, count: u64) -> Self {
        Injection {
            kind,
            count,
            queue_depth: 0,
            corrupt_offset: 0,
            corrupt_value: 0,
            blocks: None,
        }
    }
}

/// One operation's armed injection, readable without a lock: the parameters are written while
/// `remaining` is 0 and published by storing it (Release).
#[derive(Default)]
struct Slot {
    remaining: AtomicU64,
    kind: AtomicU8,
    queue_depth: AtomicU64,
    corrupt_offset: AtomicU64,
    corrupt_value: AtomicU8,
    /// Blocks an I/O must touch to be taken: [start, end).
    range_start: AtomicU64,
    range_end: AtomicU64,
    /// Bumped by `clear`: channels release the I/Os they hold for this op.
    cleared: AtomicU64,
}

impl Slot {
    /// Takes one I/O if armed (and the channel's outstanding count reaches the queue depth,
    /// and the I/O touches the armed blocks).
    fn take(&self, outstanding: u64, io: &BdevIo) -> Option<Injection> {
        if self.remaining.load(Ordering::Acquire) == 0 {
            return None;
        }
        let qd = self.queue_depth.load(Ordering::Relaxed);
        if outstanding < qd {
            return None;
        }
        let (lo, hi) = (
            self.range_start.load(Ordering::Relaxed),
            self.range_end.load(Ordering::Relaxed),
        );
        let end = io.offset_blocks.saturating_add(io.num_blocks.max(1));
        if io.offset_blocks >= hi || end <= lo {
            return None;
        }
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1))
            .ok()?;
        Some(Injection {
            kind: ErrorKind::from_code(self.kind.load(Ordering::Relaxed))?,
            count: 1,
            queue_depth: qd,
            corrupt_offset: self.corrupt_offset.load(Ordering::Relaxed),
            corrupt_value: self.corrupt_value.load(Ordering::Relaxed),
            blocks: Some(lo..hi),
        })
    }
}

/// The injections of one error bdev, one slot per operation.
#[derive(Default)]
struct Injections([Slot; 5]);

impl Injections {
    fn slot(&self, op: IoType) -> &Slot {
        &self.0[op as usize]
    }
}

/// Name, base and injections of each error bdev.
static STAGES: Mutex<BTreeMap<String, (String, Arc<Injections>)>> = Mutex::new(BTreeMap::new());

/// Every error bdev: (name, base bdev), for save_config.
pub fn stages() -> Vec<(String, String)> {
    STAGES
        .lock()
        .unwrap()
        .iter()
        .map(|(n, (b, _))| (n.clone(), b.clone()))
        .collect()
}

/// The name SPDK gives the error bdev over `base`.
pub fn name_for(base: &str) -> String {
    format!("EE_{base}")
}

/// Creates error bdev `EE_<base>` over `base` (claimed), passing I/O through until an
/// injection is armed.
pub fn create(base: &str, uuid: Option<uuid::Uuid>) -> Result<Arc<Bdev>> {
    let name = name_for(base);
    let stage_base = StageBase::claim(base, &format!("error bdev {name}"))?;
    let mut info = stage_base.info(&name);
    if let Some(u) = uuid {
        info.uuid = u;
    }
    let inj = Arc::new(Injections::default());
    let backend = ErrorBackend {
        stage_base,
        base: base.to_string(),
        name: name.clone(),
        inj: inj.clone(),
    };
    let bdev = bdev::register(info, Box::new(backend))?;
    STAGES
        .lock()
        .unwrap()
        .insert(name.clone(), (base.to_string(), inj));
    tracing::info!(bdev = %name, base, "error bdev created");
    Ok(bdev)
}

/// Arms `inj` on error bdev `name` for `op` (`None`: every operation). Replaces what was armed.
pub fn inject(name: &str, op: Option<IoType>, inj: Injection) -> Result<()> {
    if inj.blocks.as_ref().is_some_and(|r| r.start >= r.end) {
        return Err(Error::InvalidParam {
            param: "blocks",
            why: "an empty block range".into(),
        });
    }
    if inj.kind == ErrorKind::CorruptData && inj.corrupt_value == 0 {
        return Err(Error::InvalidParam {
            param: "corrupt_value",
            why: "must be 1..=255 for corrupt_data (0 would change nothing)".into(),
        });
    }
    let injs = injections(name)?;
    for o in op.map_or(IoType::ALL.to_vec(), |o| vec![o]) {
        let s = injs.slot(o);
        s.remaining.store(0, Ordering::Release);
        s.kind.store(inj.kind.code(), Ordering::Relaxed);
        s.queue_depth.store(inj.queue_depth, Ordering::Relaxed);
        s.corrupt_offset
            .store(inj.corrupt_offset, Ordering::Relaxed);
        s.corrupt_value.store(inj.corrupt_value, Ordering::Relaxed);
        let r = inj.blocks.clone().unwrap_or(0..u64::MAX);
        s.range_start.store(r.start, Ordering::Relaxed);
        s.range_end.store(r.end, Ordering::Relaxed);
        s.remaining.store(inj.count, Ordering::Release);
    }
    tracing::info!(bdev = name, ?op, kind = ?inj.kind, count = inj.count, "error injection armed");
    Ok(())
}

/// Disarms every injection of error bdev `name` and releases the I/Os it holds (also after
/// the bdev was deleted, until its last user is gone).
pub fn clear(name: &str) -> Result<()> {
    let injs = STAGES
        .lock()
        .unwrap()
        .get(name)
        .map(|(_, i)| i.clone())
        .ok_or_else(|| Error::NotFound(name.to_string()))?;
    for s in &injs.0 {
        s.remaining.store(0, Ordering::Release);
        s.cleared.fetch_add(1, Ordering::AcqRel);
    }
    tracing::info!(bdev = name, "error injections cleared");
    Ok(())
}

/// I/Os still to be taken by the injection armed for `op`.
pub fn remaining(name: &str, op: IoType) -> Result<u64> {
    Ok(injections(name)?.slot(op).remaining.load(Ordering::Acquire))
}

fn injections(name: &str) -> Result<Arc<Injections>> {
    // A deleted bdev leaves the registry at once; its stage entry goes when its last user has.
    if bdev::lookup(name).is_none() {
        return Err(Error::NotFound(name.to_string()));
    }
    STAGES
        .lock()
        .unwrap()
        .get(name)
        .map(|(_, i)| i.clone())
        .ok_or_else(|| Error::NotFound(name.to_string()))
}

struct ErrorBackend {
    stage_base: StageBase,
    base: String,
    name: String,
    inj: Arc<Injections>,
}

impl BdevBackend for ErrorBackend {
    fn product_name(&self) -> &'static str {
        "error"
    }
    fn supports(&self, op: IoType) -> bool {
        self.stage_base.supports(op)
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>> {
        let base = self.stage_base.channel()?;
        Ok(Box::new(ErrorChannel {
            base,
            inj: self.inj.clone(),
            sink: Rc::default(),
            slots: Slab::default(),
            batch: Vec::new(),
            held: RefCell::default(),
            outstanding: 0,
        }))
    }
    fn destroy(&self) {
        self.stage_base.release();
        let mut st = STAGES.lock().unwrap();
        if st
            .get(&self.name)
            .is_some_and(|(_, i)| Arc::ptr_eq(i, &self.inj))
        {
            st.remove(&self.name);
        }
    }
    fn describe(&self) -> Vec<(String, String)> {
        vec![("base_bdev_name".into(), self.base.clone())]
    }
}

/// An I/O at the base, and the byte to flip in its data on completion (reads).
struct Pending {
    io: BdevIo,
    corrupt: Option<(u64, u8)>,
}

struct ErrorChannel {
    base: IoChannel,
    inj: Arc<Injections>,
    sink: Rc<Collect>,
    slots: Slab<Pending>,
    batch: Vec<BdevIo>,
    /// I/Os held by a `pending` injection, with the op's clear count when they were held.
    held: RefCell<Vec<(BdevIo, u64)>>,
    /// I/Os submitted and not yet completed (held ones included).
    outstanding: u64,
}

/// Flips byte `off` of the I/O's data (if it lies within it) by `val`.
fn corrupt(io: &mut BdevIo, off: u64, val: u8) {
    for_each_segment(io, |at, seg| {
        let at = at as u64;
        if off >= at && off < at + seg.len() as u64 {
            seg[(off - at) as usize] ^= val;
        }
    });
}

impl ErrorChannel {
    /// Sends `io` to the base with its own buffers (`bufs` None) or with `bufs` (the caller's
    /// stay with `io`); `corrupt_read` flips a byte of a read's data on completion.
    fn send_to_base(
        &mut self,
        mut io: BdevIo,
        bufs: Option<SgList>,
        corrupt_read: Option<(u64, u8)>,
    ) {
        let (op, off, n) = (io.op, io.offset_blocks, io.num_blocks);
        let bufs = bufs.unwrap_or_else(|| std::mem::take(&mut io.bufs));
        let slot = self.slots.insert(Pending {
            io,
            corrupt: corrupt_read,
        });
        let sink: Rc<dyn IoSink> = self.sink.clone();
        self.base.submit(BdevIo::new(
            op,
            off,
            n,
            bufs,
            slot as u64,
            IoCallback::Sink(sink),
        ));
    }
}

/// A copy of a write's data with byte `off` flipped by `val` (the caller's buffers are never
/// changed).
fn corrupted_copy(io: &BdevIo, off: u64, val: u8) -> SgList {
    let total = io.buf_len();
    let mut copy = buf::alloc(total).unwrap_or_else(|| IoBuf::heap(total));
    let mut o = 0;
    for b in io.bufs.iter() {
        copy[o..o + b.len()].copy_from_slice(b);
        o += b.len();
    }
    if let Some(x) = usize::try_from(off).ok().and_then(|i| copy.get_mut(i)) {
        *x ^= val;
    }
    let mut sg = SgList::new();
    sg.push(copy);
    sg
}

impl BackendChannel for ErrorChannel {
    fn submit(&mut self, io: BdevIo, done: &mut Completions) {
        self.outstanding += 1;
        let slot = self.inj.slot(io.op);
        // Read before taking: a `clear` after this point releases what is held below.
        let gen = slot.cleared.load(Ordering::Acquire);
        let Some(inj) = slot.take(self.outstanding, &io) else {
            self.send_to_base(io, None, None);
            return;
        };
        match inj.kind {
            ErrorKind::Failure => {
                self.outstanding -= 1;
                done.complete(io, IoStatus::Failed(libc::EIO));
            }
            ErrorKind::NoMem => {
                self.outstanding -= 1;
                done.complete(io, IoStatus::NoMemory);
            }
            ErrorKind::Pending => {
                self.held.borrow_mut().push((io, gen));
            }
            ErrorKind::CorruptData if io.op == IoType::Read => {
                self.send_to_base(io, None, Some((inj.corrupt_offset, inj.corrupt_value)));
            }
            ErrorKind::CorruptData if io.op == IoType::Write => {
                // The base gets a corrupted copy; the caller's buffers come back untouched.
                let copy = corrupted_copy(&io, inj.corrupt_offset, inj.corrupt_value);
                self.send_to_base(io, Some(copy), None);
            }
            // No data to corrupt: passes through.
            ErrorKind::CorruptData => self.send_to_base(io, None, None),
        }
    }

    fn poll(&mut self, done: &mut Completions) -> bool {
        let mut did = false;
        // Held I/Os whose injection was cleared go to the base.
        let release: Vec<BdevIo> = {
            let mut held = self.held.borrow_mut();
            let mut out = Vec::new();
            let mut i = 0;
            while i < held.len() {
                let gen = self.inj.slot(held[i].0.op).cleared.load(Ordering::Acquire);
                if gen != held[i].1 {
                    out.push(held.swap_remove(i).0);
                } else {
                    i += 1;
                }
            }
            out
        };
        for io in release {
            did = true;
            self.send_to_base(io, None, None);
        }
        std::mem::swap(&mut *self.sink.0.borrow_mut(), &mut self.batch);
        let mut batch = std::mem::take(&mut self.batch);
        for mut sub in batch.drain(..) {
            did = true;
            let Some(Pending { mut io, corrupt: c }) = self.slots.remove(sub.tag as usize) else {
                continue;
            };
            self.outstanding -= 1;
            if io.op == IoType::Read {
                io.bufs = std::mem::take(&mut sub.bufs);
                if let (Some((off, val)), IoStatus::Success) = (c, sub.status) {
                    corrupt(&mut io, off, val);
                }
            } else if io.bufs.is_empty() {
                io.bufs = std::mem::take(&mut sub.bufs);
            }
            done.complete(io, sub.status);
        }
        self.batch = batch;
        // Held I/Os are released by a `clear` from another thread, which cannot wake this
        // reactor: keep polling while any are held (a test bdev's cost, only while holding).
        did || !self.held.borrow().is_empty()
    }
}
