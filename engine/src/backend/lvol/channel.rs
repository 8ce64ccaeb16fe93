//! An lvol's data path: each I/O is cut at cluster boundaries and each piece is mapped to the
//! data cluster that holds it.
//!
//! ```text
//!  read  ─► own cluster? parent's? ─► base read at the data cluster │ none: zeros
//!  write ─► own cluster ─► (its Map durable?) ─► base write
//!        ─► none, no parent data ─► take a free cluster, Map ─► durable ─► base write
//!        ─► none, a parent has it ─► Reserve a cluster ─► durable ─► read the parent's
//!             whole cluster, merge the write, write it ─► Map (after a flush) ─► durable ─► ack
//!  flush ─► every change made so far durable ─► base flush
//! ```
//!
//! Free clusters read as zeros (they are cleared when freed and at store creation), so a
//! thin lvol's first write needs no zeroing: the Map goes first, the data after; a crash in
//! between leaves a mapped cluster of zeros, which is what was there. A copy goes the other
//! way round (data first), under a reservation: a crash mid-copy leaves a reserved cluster
//! that the next open clears and frees. Only the first piece of a cluster allocates; others
//! wait (`cow_busy`, `pending_map`). The metadata mutex is taken once per piece to look up
//! the map, for a few dozen nanoseconds.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use smallvec::SmallVec;

use super::format::Record;
use super::lend::ChannelLend;
use super::store::Store;
use crate::backend::{Collect, Slab};
use crate::bdev::{
    BackendChannel, BdevIo, Completions, IoCallback, IoChannel, IoStatus, IoType, SgList,
};
use crate::buf::IoBuf;

/// Per-lvol state the control path shares with the channels: a freeze (snapshot, delete,
/// resize) stops new I/O and waits for `inflight` to drain.
#[derive(Default)]
pub(crate) struct LvolCtl {
    pub(crate) frozen: AtomicBool,
    pub(crate) inflight: AtomicU64,
    /// The lvol's size in blocks (a shrink lowers it before freeing what lay beyond).
    pub(crate) blocks: AtomicU64,
}

/// Pieces one I/O may have (cluster crossings + 1).
const MAX_PIECES: usize = 1024;

enum After {
    /// Issue the piece's own I/O at this data cluster.
    Submit(u32),
    /// Copy `src` (None: zeros) into `dst`, merged with the piece.
    Cow(Option<u32>, u32),
    /// Nothing more: the piece succeeded.
    Finish,
}

enum PState {
    New,
    Wait(u64, After),
    /// The cluster is being copied by another I/O: look again later.
    Retry,
    Base,
    CowRead(u32),
    CowWrite(u32),
    Done,
}

struct Piece {
    cidx: u64,
    /// First block within the cluster, and count.
    off: u64,
    n: u64,
    /// Byte offset within the I/O's buffers.
    boff: usize,
    /// Bounce buffer (multi-piece reads and writes).
    buf: Option<IoBuf>,
    /// A whole cluster being copied.
    cow: Option<IoBuf>,
    st: PState,
}

/// An I/O sent on to the base as it is (one piece in a cluster whose place is settled): the
/// caller's callback, tag and offset, put back when the base completes it.
struct Fwd {
    caller: (Option<IoCallback>, u64),
    offset: u64,
}

/// Tags of forwarded I/O (pieces' tags are `slot << 16 | k`, far below).
const FWD: u64 = 1 << 63;

struct Op {
    io: BdevIo,
    pieces: SmallVec<[Piece; 1]>,
    left: usize,
    status: IoStatus,
}

pub(crate) struct LvolChannel {
    store: Arc<Store>,
    id: u32,
    ctl: Arc<LvolCtl>,
    base: IoChannel,
    sink: Rc<Collect>,
    /// The sink's completions being processed (swapped in, so its capacity is kept).
    batch: Vec<BdevIo>,
    ops: Slab<Op>,
    fwd: Slab<Fwd>,
    frozen_q: VecDeque<BdevIo>,
    waiting: Vec<(usize, usize)>,
    bs: u64,
    bpc: u64,
    zero_op: Option<IoType>,
    /// Zero-copy reads (the base lends its memory): see [`super::lend`].
    lend: Option<ChannelLend>,
}

/// Re-lends a base's lent windows under the channel's lender, in place (one, as a rule).
fn rewrap(l: &ChannelLend, bufs: &mut SgList) {
    if bufs.len() == 1 {
        let b = bufs.pop().expect("one buffer");
        bufs.push(l.wrap(b));
    } else {
        *bufs = std::mem::take(bufs)
            .into_iter()
            .map(|x| l.wrap(x))
            .collect();
    }
}

fn tag(slot: usize, k: usize) -> u64 {
    ((slot as u64) << 16) | k as u64
}

/// Copies `dst.len()` bytes of `sg` from byte `off`.
fn sg_read(sg: &SgList, mut off: usize, dst: &mut [u8]) {
    let mut done = 0;
    for b in sg.iter() {
        if off >= b.len() {
            off -= b.len();
            continue;
        }
        let n = (b.len() - off).min(dst.len() - done);
        dst[done..done + n].copy_from_slice(&b[off..off + n]);
        done += n;
        off = 0;
        if done == dst.len() {
            break;
        }
    }
}

/// Writes `len` bytes into `sg` at byte `off`: from `src`, or zeros.
fn sg_write(sg: &mut SgList, mut off: usize, src: Option<&[u8]>, len: usize) {
    let mut done = 0;
    for b in sg.iter_mut() {
        if off >= b.len() {
            off -= b.len();
            continue;
        }
        let n = (b.len() - off).min(len - done);
        match src {
            Some(s) => b[off..off + n].copy_from_slice(&s[done..done + n]),
            None => b[off..off + n].fill(0),
        }
        done += n;
        off = 0;
        if done == len {
            break;
        }
    }
}

impl LvolChannel {
    pub(crate) fn new(store: Arc<Store>, id: u32, ctl: Arc<LvolCtl>) -> crate::Result<Self> {
        let base = crate::bdev::channel_for(&store.base_bdev)?;
        let b = &store.base_bdev;
        let zero_op = if b.supports(IoType::WriteZeroes) {
            Some(IoType::WriteZeroes)
        } else if b.supports(IoType::Unmap) {
            Some(IoType::Unmap)
        } else {
            None
        };
        let lend = base
            .lends_reads()
            .then(|| ChannelLend::new(store.lends.clone()));
        Ok(LvolChannel {
            lend,
            bs: store.layout.block_size as u64,
            bpc: store.layout.bpc(),
            store,
            id,
            ctl,
            base,
            sink: Rc::new(Collect::default()),
            batch: Vec::new(),
            ops: Slab::default(),
            fwd: Slab::default(),
            frozen_q: VecDeque::new(),
            waiting: Vec::new(),
            zero_op,
        })
    }

    /// Starts `io` unless the lvol is frozen (then it waits in `frozen_q`).
    fn start(&mut self, io: BdevIo, done: &mut Completions) {
        if self.ctl.frozen.load(Ordering::SeqCst) {
            self.frozen_q.push_back(io);
            return;
        }
        self.ctl.inflight.fetch_add(1, Ordering::SeqCst);
        if self.ctl.frozen.load(Ordering::SeqCst) {
            self.ctl.inflight.fetch_sub(1, Ordering::SeqCst);
            self.frozen_q.push_back(io);
            return;
        }
        if io.op != IoType::Flush
            && io.offset_blocks.saturating_add(io.num_blocks)
                > self.ctl.blocks.load(Ordering::Relaxed)
        {
            self.ctl.inflight.fetch_sub(1, Ordering::SeqCst);
            done.complete(io, IoStatus::OutOfRange);
            return;
        }
        let mut io = match self.forward(io) {
            Some(io) => io,
            None => return,
        };
        let mut pieces: SmallVec<[Piece; 1]> = SmallVec::new();
        if io.op == IoType::Flush {
            pieces.push(Piece {
                cidx: 0,
                off: 0,
                n: 0,
                boff: 0,
                buf: None,
                cow: None,
                st: PState::New,
            });
        } else {
            let (mut lba, end) = (io.offset_blocks, io.offset_blocks + io.num_blocks);
            let mut boff = 0usize;
            while lba < end {
                let cidx = lba / self.bpc;
                let off = lba % self.bpc;
                let n = (self.bpc - off).min(end - lba);
                pieces.push(Piece {
                    cidx,
                    off,
                    n,
                    boff,
                    buf: None,
                    cow: None,
                    st: PState::New,
                });
                boff += (n * self.bs) as usize;
                lba += n;
            }
            if pieces.len() > MAX_PIECES {
                self.ctl.inflight.fetch_sub(1, Ordering::SeqCst);
                done.complete(io, IoStatus::InvalidLength);
                return;
            }
            if io.lend && pieces.len() > 1 {
                // Lent reads come without buffers; one across clusters gets one (the
                // pieces are copied into it as for any read).
                io.bufs.push(IoBuf::heap(boff));
            }
            if pieces.len() > 1 && matches!(io.op, IoType::Read | IoType::Write) {
                for p in pieces.iter_mut() {
                    let mut b = IoBuf::heap((p.n * self.bs) as usize);
                    if io.op == IoType::Write {
                        sg_read(&io.bufs, p.boff, &mut b);
                    }
                    p.buf = Some(b);
                }
            }
        }
        let left = pieces.len();
        let slot = self.ops.insert(Op {
            io,
            pieces,
            left,
            status: IoStatus::Success,
        });
        for k in 0..left {
            self.step(slot, k, done);
        }
    }

    /// The fast path: a read or write within one cluster whose data cluster is settled (a
    /// read of an allocated cluster, a write to one the lvol owns with its Map durable) goes
    /// to the base as it is, remapped. Anything else comes back for the piece machinery.
    fn forward(&mut self, mut io: BdevIo) -> Option<BdevIo> {
        if !matches!(io.op, IoType::Read | IoType::Write) || io.num_blocks == 0 {
            return Some(io);
        }
        let cidx = io.offset_blocks / self.bpc;
        let off = io.offset_blocks % self.bpc;
        if off + io.num_blocks > self.bpc {
            return Some(io);
        }
        let phys = {
            let g = self.store.inner.lock().unwrap();
            let Some(l) = g.st.lvols.get(&self.id) else {
                return Some(io);
            };
            if io.op == IoType::Read {
                match g.st.resolve(self.id, cidx) {
                    Some(p) => p,
                    None => return Some(io),
                }
            } else {
                match l.map.get(cidx) {
                    Some(p)
                        if !l.read_only()
                            && (g.pending_map.is_empty()
                                || !g.pending_map.contains_key(&(self.id, cidx)))
                            && (g.cow_busy.is_empty()
                                || !g.cow_busy.contains(&(self.id, cidx))) =>
                    {
                        p
                    }
                    _ => return Some(io),
                }
            }
        };
        let offset = io.offset_blocks;
        let slot = self.fwd.insert(Fwd {
            caller: (None, 0),
            offset,
        });
        let sink: Rc<dyn crate::bdev::IoSink> = self.sink.clone();
        self.fwd.live(slot).caller = io.reroute(IoCallback::Sink(sink), FWD | slot as u64);
        io.offset_blocks = self.store.cluster_block(phys) + off;
        self.base.submit(io);
        None
    }

    /// A forwarded I/O came back from the base: the caller's again.
    fn forward_done(&mut self, mut io: BdevIo, done: &mut Completions) {
        let f = self
            .fwd
            .remove((io.tag & !FWD) as usize)
            .expect("forwarded I/O");
        io.restore(f.caller);
        io.offset_blocks = f.offset;
        if io.lend {
            if let Some(l) = self.lend.as_ref() {
                rewrap(l, &mut io.bufs);
            }
        }
        self.ctl.inflight.fetch_sub(1, Ordering::SeqCst);
        let st = io.status;
        done.complete(io, st);
    }

    /// Decides what piece `k` of op `slot` does next (it is in state New or Retry).
    fn step(&mut self, slot: usize, k: usize, done: &mut Completions) {
        let op = self.ops.live(slot);
        let io_op = op.io.op;
        let cidx = op.pieces[k].cidx;
        let id = self.id;
        let store = &self.store;
        let mut g = store.inner.lock().unwrap();
        let next: Result<PState, IoStatus> = match io_op {
            IoType::Flush => Ok(PState::Wait(g.queued_seq, After::Submit(0))),
            IoType::Read if !g.st.lvols.contains_key(&id) => Err(IoStatus::Removed),
            IoType::Read => {
                let phys = g.st.resolve(id, cidx);
                drop(g);
                match phys {
                    Some(c) => return self.submit_piece(slot, k, c, done),
                    None => {
                        let op = self.ops.live(slot);
                        let p = &op.pieces[k];
                        let (boff, len) = (p.boff, (p.n * self.bs) as usize);
                        match self.lend.as_ref() {
                            Some(l) if op.io.lend && op.io.bufs.is_empty() => {
                                op.io.bufs.push(l.zeros(len))
                            }
                            _ => sg_write(&mut op.io.bufs, boff, None, len),
                        }
                        return self.piece_done(slot, k, IoStatus::Success, done);
                    }
                }
            }
            _ => match g.st.lvols.get(&id) {
                None => Err(IoStatus::Removed),
                Some(l) if l.read_only() => Err(IoStatus::Failed(libc::EROFS)),
                Some(_) if g.cow_busy.contains(&(id, cidx)) => Ok(PState::Retry),
                Some(l) => match l.map.get(cidx) {
                    Some(phys) => match g.pending_map.get(&(id, cidx)) {
                        Some(&seq) => Ok(PState::Wait(seq, After::Submit(phys))),
                        None => Ok(PState::Wait(0, After::Submit(phys))),
                    },
                    None => {
                        let src = l.parent.and_then(|p| g.st.resolve(p, cidx));
                        if io_op != IoType::Write && src.is_none() {
                            // Reads as zeros already.
                            Ok(PState::Wait(0, After::Finish))
                        } else {
                            match g.st.find_free() {
                                None => Err(IoStatus::Failed(libc::ENOSPC)),
                                Some(dst) if src.is_none() => {
                                    let rec = Record::Map {
                                        id,
                                        idx: cidx,
                                        phys: dst,
                                        len: 1,
                                    };
                                    match store.change(&mut g, &rec, false) {
                                        Ok(seq) => {
                                            g.pending_map.insert((id, cidx), seq);
                                            Ok(PState::Wait(seq, After::Submit(dst)))
                                        }
                                        Err(_) => Err(IoStatus::Failed(libc::EIO)),
                                    }
                                }
                                Some(dst) => {
                                    let rec = Record::Reserve { phys: dst, len: 1 };
                                    match store.change(&mut g, &rec, false) {
                                        Ok(seq) => {
                                            g.cow_busy.insert((id, cidx));
                                            Ok(PState::Wait(seq, After::Cow(src, dst)))
                                        }
                                        Err(_) => Err(IoStatus::Failed(libc::EIO)),
                                    }
                                }
                            }
                        }
                    }
                },
            },
        };
        drop(g);
        match next {
            Err(st) => self.piece_done(slot, k, st, done),
            Ok(PState::Wait(seq, after)) if self.durable(seq) == Some(true) => {
                self.after(slot, k, after, done)
            }
            Ok(st) => {
                if matches!(st, PState::Wait(..)) {
                    self.store.kick();
                }
                self.ops.live(slot).pieces[k].st = st;
                self.waiting.push((slot, k));
            }
        }
    }

    fn durable(&self, seq: u64) -> Option<bool> {
        if seq == 0 {
            return Some(true);
        }
        self.store.is_durable(seq).ok()
    }

    fn after(&mut self, slot: usize, k: usize, after: After, done: &mut Completions) {
        match after {
            After::Finish => self.piece_done(slot, k, IoStatus::Success, done),
            After::Submit(phys) => self.submit_piece(slot, k, phys, done),
            After::Cow(src, dst) => {
                let cl = self.store.layout.cluster_sz as usize;
                let p = &mut self.ops.live(slot).pieces[k];
                p.cow = Some(IoBuf::heap(cl));
                match src {
                    Some(s) => {
                        p.st = PState::CowRead(dst);
                        let mut sg = SgList::new();
                        sg.push(p.cow.take().expect("just set"));
                        let at = self.store.cluster_block(s);
                        self.base_io(IoType::Read, at, self.bpc, sg, tag(slot, k));
                    }
                    None => self.cow_write(slot, k, dst),
                }
            }
        }
    }

    /// Merges the piece into its copied cluster and writes that to `dst`.
    fn cow_write(&mut self, slot: usize, k: usize, dst: u32) {
        let bs = self.bs as usize;
        let op = self.ops.live(slot);
        let (io_op, boff, off, n) = {
            let p = &op.pieces[k];
            (op.io.op, p.boff, p.off as usize, p.n as usize)
        };
        let mut cow = op.pieces[k].cow.take().expect("copy buffer");
        let range = off * bs..(off + n) * bs;
        if io_op == IoType::Write {
            match op.pieces[k].buf.as_ref() {
                Some(b) => cow[range].copy_from_slice(b),
                None => sg_read(&op.io.bufs, boff, &mut cow[range]),
            }
        } else {
            cow[range].fill(0);
        }
        op.pieces[k].st = PState::CowWrite(dst);
        let mut sg = SgList::new();
        sg.push(cow);
        let at = self.store.cluster_block(dst);
        self.base_io(IoType::Write, at, self.bpc, sg, tag(slot, k));
    }

    fn base_io(&self, op: IoType, lba: u64, n: u64, bufs: SgList, tag: u64) {
        self.base.submit(self.base_bdev_io(op, lba, n, bufs, tag));
    }

    /// A zero-copy read of the base (it completes with a window on its memory).
    fn base_read_lent(&self, lba: u64, n: u64, tag: u64) {
        let mut io = self.base_bdev_io(IoType::Read, lba, n, SgList::new(), tag);
        io.lend = true;
        self.base.submit(io);
    }

    /// An I/O of the base that completes into this channel's sink.
    fn base_bdev_io(&self, op: IoType, lba: u64, n: u64, bufs: SgList, tag: u64) -> BdevIo {
        let sink: Rc<dyn crate::bdev::IoSink> = self.sink.clone();
        BdevIo::new(op, lba, n, bufs, tag, IoCallback::Sink(sink))
    }

    /// Issues piece `k`'s own operation at data cluster `phys`.
    fn submit_piece(&mut self, slot: usize, k: usize, phys: u32, done: &mut Completions) {
        let single = self.ops.live(slot).pieces.len() == 1;
        let op = self.ops.live(slot);
        let io_op = op.io.op;
        let p = &mut op.pieces[k];
        p.st = PState::Base;
        let t = tag(slot, k);
        match io_op {
            IoType::Flush => {
                if self.store.base_bdev.supports(IoType::Flush) {
                    self.base_io(IoType::Flush, 0, 0, SgList::new(), t);
                } else {
                    self.piece_done(slot, k, IoStatus::Success, done);
                }
            }
            IoType::WriteZeroes | IoType::Unmap => {
                let at = self.store.cluster_block(phys) + p.off;
                let n = p.n;
                match self.zero_op {
                    Some(z) => {
                        let z = if self.store.base_bdev.supports(io_op) {
                            io_op
                        } else {
                            z
                        };
                        self.base_io(z, at, n, SgList::new(), t)
                    }
                    None => {
                        let mut sg = SgList::new();
                        sg.push(IoBuf::heap((n * self.bs) as usize));
                        self.base_io(IoType::Write, at, n, sg, t)
                    }
                }
            }
            IoType::Read if single && op.io.lend => {
                let at = self.store.cluster_block(phys) + p.off;
                let n = p.n;
                self.base_read_lent(at, n, t);
            }
            _ => {
                let at = self.store.cluster_block(phys) + p.off;
                let n = p.n;
                let sg = if single {
                    std::mem::take(&mut op.io.bufs)
                } else {
                    let mut sg = SgList::new();
                    sg.push(p.buf.take().expect("bounce buffer"));
                    sg
                };
                self.base_io(io_op, at, n, sg, t);
            }
        }
    }

    fn piece_done(&mut self, slot: usize, k: usize, st: IoStatus, done: &mut Completions) {
        let op = self.ops.live(slot);
        op.pieces[k].st = PState::Done;
        if !st.is_ok() && op.status.is_ok() {
            op.status = st;
        }
        op.left -= 1;
        if op.left == 0 {
            let op = self.ops.remove(slot).expect("live op");
            self.ctl.inflight.fetch_sub(1, Ordering::SeqCst);
            done.complete(op.io, op.status);
        }
    }

    /// A base I/O of piece `k` of op `slot` completed.
    fn base_done(&mut self, mut bio: BdevIo, done: &mut Completions) {
        let slot = (bio.tag >> 16) as usize;
        let k = (bio.tag & 0xffff) as usize;
        let st = bio.status;
        let single = self.ops.live(slot).pieces.len() == 1;
        let state = std::mem::replace(&mut self.ops.live(slot).pieces[k].st, PState::Done);
        match state {
            PState::Base => {
                let op = self.ops.live(slot);
                if matches!(op.io.op, IoType::Read | IoType::Write) {
                    let b = std::mem::take(&mut bio.bufs);
                    if single && op.io.lend {
                        if let Some(l) = self.lend.as_ref() {
                            op.io.bufs = b;
                            rewrap(l, &mut op.io.bufs);
                        }
                    } else if single {
                        op.io.bufs = b;
                    } else if op.io.op == IoType::Read && st.is_ok() {
                        let boff = op.pieces[k].boff;
                        if let Some(buf) = b.first() {
                            sg_write(&mut op.io.bufs, boff, Some(&buf[..]), buf.len());
                        }
                    }
                }
                self.piece_done(slot, k, st, done);
            }
            PState::CowRead(dst) => {
                if !st.is_ok() {
                    self.cow_failed(slot, k, st, done);
                    return;
                }
                let b = bio.bufs.pop().expect("copy buffer");
                self.ops.live(slot).pieces[k].cow = Some(b);
                self.cow_write(slot, k, dst);
            }
            PState::CowWrite(dst) => {
                if !st.is_ok() {
                    self.cow_failed(slot, k, st, done);
                    return;
                }
                let cidx = self.ops.live(slot).pieces[k].cidx;
                let store = self.store.clone();
                let mut g = store.inner.lock().unwrap();
                g.cow_busy.remove(&(self.id, cidx));
                let rec = Record::Map {
                    id: self.id,
                    idx: cidx,
                    phys: dst,
                    len: 1,
                };
                match store.change(&mut g, &rec, true) {
                    Ok(seq) => {
                        g.pending_map.insert((self.id, cidx), seq);
                        drop(g);
                        self.store.kick();
                        self.ops.live(slot).pieces[k].st = PState::Wait(seq, After::Finish);
                        self.waiting.push((slot, k));
                    }
                    Err(_) => {
                        drop(g);
                        self.piece_done(slot, k, IoStatus::Failed(libc::EIO), done);
                    }
                }
            }
            _ => {
                tracing::error!("lvol: base completion for a piece not waiting for one");
            }
        }
    }

    /// A copy failed: the reserved cluster stays reserved (cleared at the next open).
    fn cow_failed(&mut self, slot: usize, k: usize, st: IoStatus, done: &mut Completions) {
        let cidx = self.ops.live(slot).pieces[k].cidx;
        self.store
            .inner
            .lock()
            .unwrap()
            .cow_busy
            .remove(&(self.id, cidx));
        self.piece_done(slot, k, st, done);
    }
}

impl BackendChannel for LvolChannel {
    fn submit(&mut self, io: BdevIo, done: &mut Completions) {
        self.start(io, done);
    }

    fn poll(&mut self, done: &mut Completions) -> bool {
        let mut busy = false;
        loop {
            std::mem::swap(&mut *self.sink.0.borrow_mut(), &mut self.batch);
            if self.batch.is_empty() {
                break;
            }
            busy = true;
            let mut batch = std::mem::take(&mut self.batch);
            for io in batch.drain(..) {
                if io.tag & FWD != 0 {
                    self.forward_done(io, done);
                } else {
                    self.base_done(io, done);
                }
            }
            self.batch = batch;
        }
        if !self.waiting.is_empty() {
            let list = std::mem::take(&mut self.waiting);
            for (slot, k) in list {
                let st = std::mem::replace(&mut self.ops.live(slot).pieces[k].st, PState::New);
                match st {
                    PState::Wait(seq, after) => match self.durable(seq) {
                        Some(true) => {
                            busy = true;
                            self.after(slot, k, after, done);
                        }
                        Some(false) => {
                            self.ops.live(slot).pieces[k].st = PState::Wait(seq, after);
                            self.waiting.push((slot, k));
                        }
                        None => {
                            busy = true;
                            if let After::Cow(..) = after {
                                let cidx = self.ops.live(slot).pieces[k].cidx;
                                let g = &mut self.store.inner.lock().unwrap();
                                g.cow_busy.remove(&(self.id, cidx));
                            }
                            self.piece_done(slot, k, IoStatus::Failed(libc::EIO), done);
                        }
                    },
                    PState::Retry => {
                        busy = true;
                        self.step(slot, k, done);
                    }
                    other => {
                        self.ops.live(slot).pieces[k].st = other;
                    }
                }
            }
            // Waiting keeps the reactor awake (the commit completes on the main reactor).
            busy |= !self.waiting.is_empty();
        }
        if !self.frozen_q.is_empty() && !self.ctl.frozen.load(Ordering::SeqCst) {
            busy = true;
            let q = std::mem::take(&mut self.frozen_q);
            for io in q {
                self.start(io, done);
            }
        }
        busy | !self.frozen_q.is_empty()
    }

    fn lends_reads(&self) -> bool {
        self.lend.is_some()
    }

    fn busy(&self) -> bool {
        self.ops.has_live() || self.fwd.has_live() || !self.frozen_q.is_empty()
    }
}
