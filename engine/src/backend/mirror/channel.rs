//! A mirror's per-reactor channel: fan-out of writes, balanced reads with retry, the parking
//! of acknowledgements until a fault is on disk, and the superblock writes that put it there.
//!
//! ```text
//!  submit(write) ─► the bits of its regions not on disk? mark, wait (bm_wait)
//!                ─► Op{Fanout} ─► one sub-I/O per member in the mirror (views of the caller's
//!                                  buffers: no copy) ─► all back ─► durable? ack : park
//!  submit(read)  ─► Op{Read}   ─► least-loaded in-sync child ─► error? fault, next child
//!  a write inside the rebuild window, or any write while quiesced ─► blocked, in order
//!  poll: metadata round if the superblock or bitmap changed (one channel at a time: the
//!        writer token); waiting writes go once their bits are on disk; parked ops
//!        acknowledged once durable_gen ≥ want_gen (and their bits are on disk)
//! ```

use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{faults_child, MemberState, RoundPlan, Shared};
use crate::backend::{Collect, Slab};
use crate::bdev::{
    BackendChannel, BdevIo, Completions, IoCallback, IoChannel, IoSink, IoStatus, IoType, SgList,
};
use crate::buf::{IoBuf, Lender};
use crate::error::Result;

/// A sub-I/O's tag: the op's slot, the low byte of the child slot's epoch when it was sent (a
/// late completion from a bdev that has left the slot faults nobody), the child's index.
/// Metadata writes set the top bit and carry their byte offset.
const CHILD_BITS: u32 = 4;
const EPOCH_BITS: u32 = 8;
const SB_TAG: u64 = 1 << 63;

fn tag(slot: usize, epoch: u64, child: usize) -> u64 {
    (slot as u64) << (CHILD_BITS + EPOCH_BITS) | (epoch & 0xff) << CHILD_BITS | child as u64
}

fn untag(tag: u64) -> (usize, u64, usize) {
    (
        (tag >> (CHILD_BITS + EPOCH_BITS)) as usize,
        (tag >> CHILD_BITS) & 0xff,
        (tag & ((1 << CHILD_BITS) - 1)) as usize,
    )
}

/// A metadata write's tag: the child and the byte offset (a superblock slot, or a chunk).
fn sb_tag(child: usize, offset: u64) -> u64 {
    SB_TAG | offset << CHILD_BITS | child as u64
}

enum Kind {
    /// Reading from one child (the sub-I/O's tag says which); `tried` holds every child asked.
    Read { tried: u32 },
    /// At every member: `pending` sub-I/Os out, `ok` the children that succeeded.
    Fanout { pending: usize, ok: u32 },
}

struct Op {
    io: BdevIo,
    kind: Kind,
    /// A caller error a child reported (range, length, unsupported): the op ends with it.
    status: IoStatus,
    /// Counted in `Shared::window_inflight` (in flight inside a rebuild window when taken).
    in_window: bool,
    /// A member did not take it: acknowledged only once the bitmap names its regions.
    needs_bits: bool,
}

/// A metadata round in flight on this channel (which holds the writer token).
struct SbRound {
    plan: RoundPlan,
    pending: usize,
    /// Every target took it.
    complete: bool,
}

pub(crate) struct MirrorChannel {
    shared: Arc<Shared>,
    /// Each child's channel on this reactor (None: the slot has no descriptor).
    children: Vec<Option<IoChannel>>,
    /// The slot epoch each channel was opened at (a slot that changed bdev is reopened).
    epochs: Vec<u64>,
    /// Every slot, as a bit set.
    all: u32,
    /// Sub-I/Os outstanding per child (read balancing).
    outstanding: Vec<u32>,
    sink: Rc<Collect>,
    ops: Slab<Op>,
    batch: Vec<BdevIo>,
    /// Ops done at their children, waiting for the superblock to be durable.
    parked: Vec<usize>,
    /// Write sub-I/Os a child refused for lack of resources: sent again on the next poll.
    retry: Vec<(usize, usize)>,
    sb: Option<SbRound>,
    /// Owner of the views on callers' write buffers (they stay in their op).
    lender: Lender,
    /// Writes waiting for the rebuild window they touch to move on, in arrival order.
    blocked: std::collections::VecDeque<BdevIo>,
    /// Writes waiting for their regions' bits to be on disk (a member is out), in order.
    bm_wait: std::collections::VecDeque<BdevIo>,
    /// The window epoch this channel acknowledged (shared with the rebuild driver).
    ack: Arc<std::sync::atomic::AtomicU64>,
}

impl MirrorChannel {
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Self> {
        let mut children = Vec::new();
        let mut epochs = Vec::new();
        for (i, c) in shared.children.iter().enumerate() {
            epochs.push(c.epoch.load(Ordering::Acquire));
            let ch = c.open_channel();
            if ch.is_none() && c.state() != MemberState::Faulted {
                // A member in the mirror this reactor cannot reach must not be skipped here
                // while others count it in: out it goes.
                shared.fault(i, "no channel to it on this reactor");
            }
            children.push(ch);
        }
        let n = children.len();
        let all = (1u32 << n) - 1;
        // A new channel has nothing in flight: it acknowledges the current window at once.
        let ack = Arc::new(std::sync::atomic::AtomicU64::new(
            shared.lock_epoch.load(Ordering::Acquire),
        ));
        {
            let mut acks = shared.channel_acks.lock().unwrap();
            acks.retain(|w| w.strong_count() > 0);
            acks.push(Arc::downgrade(&ack));
        }
        Ok(MirrorChannel {
            shared,
            children,
            epochs,
            all,
            outstanding: vec![0; n],
            sink: Rc::default(),
            ops: Slab::default(),
            batch: Vec::new(),
            parked: Vec::new(),
            retry: Vec::new(),
            sb: None,
            lender: Lender::cached(()),
            blocked: std::collections::VecDeque::new(),
            bm_wait: std::collections::VecDeque::new(),
            ack,
        })
    }

    /// Whether `io` touches the rebuild window (then it waits until the window moves on);
    /// while the mirror is quiesced, the window is the whole device.
    fn in_window(&self, io: &BdevIo) -> bool {
        // A flush moves no data (the rebuild flushes the member itself before it is in sync).
        if io.op == IoType::Flush {
            return false;
        }
        if self.shared.quiesced.load(Ordering::Acquire) {
            return true;
        }
        let end = self.shared.lock_end.load(Ordering::Acquire);
        if end == 0 {
            return false;
        }
        let start = self.shared.lock_start.load(Ordering::Acquire);
        let io_end = io.offset_blocks.saturating_add(io.num_blocks.max(1));
        io.offset_blocks < end && io_end > start
    }

    /// Acknowledges a new window epoch: counts this channel's writes in flight inside it.
    fn ack_window(&mut self) {
        let s = self.shared.clone();
        let epoch = s.lock_epoch.load(Ordering::Acquire);
        if epoch == self.ack.load(Ordering::Relaxed) {
            return;
        }
        let mut counted = 0;
        for i in 0..self.ops.capacity() {
            let overlap = match self.ops.get(i) {
                Some(op) => {
                    matches!(op.kind, Kind::Fanout { pending, .. } if pending > 0)
                        && !op.in_window
                        && self.in_window(&op.io)
                }
                None => false,
            };
            if overlap {
                self.ops.live(i).in_window = true;
                counted += 1;
            }
        }
        s.window_inflight.fetch_add(counted, Ordering::AcqRel);
        self.ack.store(epoch, Ordering::Release);
    }

    /// A fan-out op that was counted in the window finished at its children.
    fn leave_window(&mut self, slot: usize) {
        let op = self.ops.live(slot);
        if op.in_window {
            op.in_window = false;
            self.shared.window_inflight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether child `i` takes writes (in sync or rebuilding) and has a channel here.
    fn writable(&self, i: usize) -> bool {
        self.children[i].is_some() && self.shared.children[i].state() != MemberState::Faulted
    }

    /// The in-sync child outside `tried` with the fewest outstanding sub-I/Os.
    fn pick(&self, tried: u32) -> Option<usize> {
        (0..self.children.len())
            .filter(|&i| tried & (1 << i) == 0)
            .filter(|&i| {
                self.children[i].is_some() && self.shared.children[i].state() == MemberState::InSync
            })
            .min_by_key(|&i| self.outstanding[i])
    }

    fn sub(&self, op: IoType, io: &BdevIo, bufs: SgList, tag: u64) -> BdevIo {
        let sink: Rc<dyn IoSink> = self.sink.clone();
        BdevIo::new(
            op,
            io.offset_blocks + self.shared.data_offset,
            io.num_blocks,
            bufs,
            tag,
            IoCallback::Sink(sink),
        )
    }

    /// Views on `bufs` for one child's write.
    fn views(&self, bufs: &SgList) -> SgList {
        bufs.iter()
            .map(|b| {
                let p = NonNull::new(b.as_ptr() as *mut u8).expect("buffer pointer");
                // SAFETY: `b` stays in its op (this channel's slab) until every sub-I/O
                // carrying a view of it has completed and the view was dropped (`complete_fanout`
                // runs after the last one); children only read a write's buffers.
                unsafe { IoBuf::lent(p, b.len(), self.lender.clone()) }
            })
            .collect()
    }

    fn send_read(&mut self, slot: usize, child: usize) {
        let op = self.ops.live(slot);
        let bufs = std::mem::take(&mut op.io.bufs);
        let sub = {
            let op = self.ops.get(slot).expect("live op");
            self.sub(
                IoType::Read,
                &op.io,
                bufs,
                tag(slot, self.epochs[child], child),
            )
        };
        self.outstanding[child] += 1;
        self.children[child].as_ref().expect("picked").submit(sub);
    }

    fn send_fanout(&mut self, slot: usize, child: usize) {
        let sub = {
            let op = self.ops.get(slot).expect("live op");
            let bufs = if op.io.op == IoType::Write {
                self.views(&op.io.bufs)
            } else {
                SgList::new()
            };
            self.sub(op.io.op, &op.io, bufs, tag(slot, self.epochs[child], child))
        };
        self.outstanding[child] += 1;
        self.children[child].as_ref().expect("writable").submit(sub);
    }

    fn read_done(
        &mut self,
        slot: usize,
        child: usize,
        same_bdev: bool,
        mut sub: BdevIo,
        done: &mut Completions,
    ) {
        let op = self.ops.live(slot);
        op.io.bufs = std::mem::take(&mut sub.bufs);
        let Kind::Read { tried, .. } = op.kind else {
            unreachable!("read completion of a fan-out op")
        };
        if sub.status.is_ok() || !faults_child(sub.status) {
            let op = self.ops.remove(slot).expect("live op");
            done.complete(op.io, sub.status);
            return;
        }
        if same_bdev {
            self.shared.fault(child, "read failed");
        }
        match self.pick(tried) {
            Some(next) => {
                self.ops.live(slot).kind = Kind::Read {
                    tried: tried | 1 << next,
                };
                self.send_read(slot, next);
            }
            None => {
                let op = self.ops.remove(slot).expect("live op");
                done.complete(op.io, sub.status);
            }
        }
    }

    fn fanout_done(
        &mut self,
        slot: usize,
        child: usize,
        same_bdev: bool,
        sub: BdevIo,
        done: &mut Completions,
    ) {
        // The view buffers of `sub` drop here, before the op (and the caller's buffers) can.
        let mut st = sub.status;
        drop(sub);
        if !same_bdev {
            // From a bdev that has left the slot: the slot's member does not hold it.
            st = IoStatus::Failed(libc::ENXIO);
        } else if st == IoStatus::NoMemory {
            self.retry.push((slot, child));
            return;
        } else if faults_child(st) {
            self.shared.fault(child, "write failed");
        }
        let op = self.ops.live(slot);
        let Kind::Fanout { pending, ok } = &mut op.kind else {
            unreachable!("fan-out completion of a read op")
        };
        *pending -= 1;
        if st.is_ok() {
            *ok |= 1 << child;
        } else if !faults_child(st) {
            op.status = st;
        }
        if *pending == 0 {
            self.complete_fanout(slot, done);
        }
    }

    /// Every child answered: fail, or acknowledge once the membership is durable.
    fn complete_fanout(&mut self, slot: usize, done: &mut Completions) {
        self.leave_window(slot);
        let op = self.ops.live(slot);
        if op.io.op != IoType::Flush {
            // Done at every member: a sweep may take its regions from now on.
            self.shared
                .bitmap
                .end(op.io.offset_blocks, op.io.num_blocks);
        }
        if op.status != IoStatus::Success {
            let op = self.ops.remove(slot).expect("live op");
            let st = op.status;
            done.complete(op.io, st);
            return;
        }
        // A member that did not take it (out, or failed it now) must find its regions in
        // the bitmap when it comes back: named on disk before the write is acknowledged (no
        // sweep clears them while that member is out).
        let Kind::Fanout { ok, .. } = op.kind else {
            unreachable!("fan-out op")
        };
        let (off, n) = (op.io.offset_blocks, op.io.num_blocks);
        if op.io.op != IoType::Flush && ok != self.all && !self.shared.bitmap.covered(off, n) {
            self.shared.bitmap.mark(off, n);
            op.needs_bits = true;
        }
        if self.ackable(slot) {
            self.ack(slot, done);
        } else {
            self.parked.push(slot);
        }
    }

    fn durable(&self) -> bool {
        let s = &self.shared;
        s.durable_gen.load(Ordering::Acquire) >= s.want_gen.load(Ordering::Acquire)
    }

    /// Whether parked op `slot` may be acknowledged: membership durable, its bits on disk.
    fn ackable(&self, slot: usize) -> bool {
        let op = self.ops.get(slot).expect("live op");
        self.durable()
            && (!op.needs_bits
                || self
                    .shared
                    .bitmap
                    .covered(op.io.offset_blocks, op.io.num_blocks))
    }

    /// Acknowledges a fan-out op if a child now in sync holds it; fails it otherwise (every
    /// child that took it has since left the mirror).
    fn ack(&mut self, slot: usize, done: &mut Completions) {
        let op = self.ops.remove(slot).expect("live op");
        let Kind::Fanout { ok, .. } = op.kind else {
            unreachable!("ack of a read op")
        };
        let held = (0..self.children.len())
            .any(|i| ok & (1 << i) != 0 && self.shared.children[i].state() == MemberState::InSync);
        let st = if held {
            IoStatus::Success
        } else {
            IoStatus::Failed(libc::EIO)
        };
        done.complete(op.io, st);
    }

    /// Starts a metadata round if the membership or the bitmap changed and no other channel
    /// is writing.
    fn start_round(&mut self) -> bool {
        let s = self.shared.clone();
        if self.sb.is_some() || (self.durable() && !s.bitmap.has_dirty()) {
            return false;
        }
        if s.writer
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let plan = s.plan(|_| true);
        if plan.targets.iter().any(|&i| self.children[i].is_none()) {
            // A member in the mirror this reactor cannot reach (about to be faulted by
            // `follow_slots`): a round without it would call the metadata durable on it.
            s.round_done(&plan, false);
            s.writer.store(false, Ordering::Release);
            return false;
        }
        if plan.targets.is_empty() {
            // No member left to hold it: nothing can be acknowledged anyway (`ack` fails
            // writes held by no in-sync child), so it is as durable as it gets.
            if let Some(g) = plan.gen {
                s.durable_gen.fetch_max(g, Ordering::AcqRel);
            }
            s.round_done(&plan, true);
            s.writer.store(false, Ordering::Release);
            return true;
        }
        let bs = s.block_size as u64;
        let mut pending = 0;
        for io in s.round_ios(&plan) {
            let mut bufs = SgList::new();
            bufs.push(IoBuf::from_slice(&io.data));
            let sink: Rc<dyn IoSink> = self.sink.clone();
            let sub = BdevIo::new(
                IoType::Write,
                io.offset / bs,
                io.len / bs,
                bufs,
                sb_tag(io.child, io.offset),
                IoCallback::Sink(sink),
            );
            self.children[io.child]
                .as_ref()
                .expect("reachable")
                .submit(sub);
            pending += 1;
        }
        if pending == 0 {
            s.round_done(&plan, true);
            s.writer.store(false, Ordering::Release);
            return true;
        }
        self.sb = Some(SbRound {
            plan,
            pending,
            complete: true,
        });
        true
    }

    fn sb_done(&mut self, child: usize, offset: u64, st: IoStatus) {
        let round = self.sb.as_mut().expect("a metadata round");
        round.pending -= 1;
        if st.is_ok() {
            self.shared.landed_on(child, offset);
        } else {
            round.complete = false;
            if faults_child(st) {
                self.shared.fault(child, "metadata write failed");
            }
        }
        if round.pending == 0 {
            let r = self.sb.take().expect("a metadata round");
            self.shared.round_done(&r.plan, r.complete);
            self.shared.writer.store(false, Ordering::Release);
        }
    }

    /// Reopens the channels of slots that changed bdev (a member added or removed), and of
    /// members back in the mirror that this reactor had no channel to; a member in the mirror
    /// that still cannot be reached from here is faulted (never skipped while others count
    /// it in).
    fn follow_slots(&mut self) {
        for i in 0..self.children.len() {
            let c = &self.shared.children[i];
            let e = c.epoch.load(Ordering::Acquire);
            let lacking = self.children[i].is_none() && c.state() != MemberState::Faulted;
            if e == self.epochs[i] && !lacking {
                continue;
            }
            self.epochs[i] = e;
            // The old channel closes once its I/O in flight is done.
            self.children[i] = c.open_channel();
            if self.children[i].is_none() && c.state() != MemberState::Faulted {
                self.shared.fault(i, "no channel to it on this reactor");
            }
        }
    }
}

impl BackendChannel for MirrorChannel {
    fn submit(&mut self, io: BdevIo, done: &mut Completions) {
        if io.op == IoType::Read {
            let Some(child) = self.pick(0) else {
                done.complete(io, IoStatus::Failed(libc::EIO));
                return;
            };
            let slot = self.ops.insert(Op {
                io,
                kind: Kind::Read { tried: 1 << child },
                status: IoStatus::Success,
                in_window: false,
                needs_bits: false,
            });
            self.send_read(slot, child);
            return;
        }
        if !self.blocked.is_empty() || self.in_window(&io) {
            // Behind the rebuild window (and behind earlier blocked writes: order kept).
            self.blocked.push_back(io);
            return;
        }
        self.fan_out(io, done);
    }

    fn poll(&mut self, done: &mut Completions) -> bool {
        self.poll_inner(done)
    }

    fn busy(&self) -> bool {
        // A metadata round's writes are this channel's own: it stays until they are back.
        self.sb.is_some()
    }
}

impl MirrorChannel {
    fn fan_out(&mut self, io: BdevIo, done: &mut Completions) {
        // The members that take it, as a bit set (no allocation per write).
        let targets = (0..self.children.len())
            .filter(|&i| self.writable(i))
            .fold(0u32, |m, i| m | 1 << i);
        let in_sync = (0..self.children.len()).any(|i| {
            targets & (1 << i) != 0 && self.shared.children[i].state() == MemberState::InSync
        });
        if !in_sync {
            done.complete(io, IoStatus::Failed(libc::EIO));
            return;
        }
        // The regions this write changes are named on disk before it goes (a crash, or a
        // member out or losing its cache, after it reached some children must not leave them
        // unnamed); counted in flight first, so no sweep clears them meanwhile.
        if io.op != IoType::Flush {
            let bm = &self.shared.bitmap;
            bm.begin(io.offset_blocks, io.num_blocks);
            if !bm.covered(io.offset_blocks, io.num_blocks) {
                bm.end(io.offset_blocks, io.num_blocks);
                bm.mark(io.offset_blocks, io.num_blocks);
                self.bm_wait.push_back(io);
                return;
            }
        }
        let slot = self.ops.insert(Op {
            io,
            kind: Kind::Fanout {
                pending: targets.count_ones() as usize,
                ok: 0,
            },
            status: IoStatus::Success,
            in_window: false,
            needs_bits: false,
        });
        for child in (0..self.children.len()).filter(|i| targets & (1 << i) != 0) {
            self.send_fanout(slot, child);
        }
    }

    fn poll_inner(&mut self, done: &mut Completions) -> bool {
        let mut did = false;
        self.follow_slots();
        // Blocked writes the window has left go first, then the new epoch is acknowledged
        // (counting them if the next window holds them): the driver waits for that after
        // every unlock, so a blocked write is never overtaken window after window.
        while let Some(io) = self.blocked.front() {
            if self.in_window(io) {
                break;
            }
            let io = self.blocked.pop_front().expect("front");
            self.fan_out(io, done);
            did = true;
        }
        self.ack_window();
        for (slot, child) in std::mem::take(&mut self.retry) {
            did = true;
            if self.writable(child) {
                self.send_fanout(slot, child);
            } else {
                // Faulted meanwhile: it no longer counts.
                let op = self.ops.live(slot);
                if let Kind::Fanout { pending, .. } = &mut op.kind {
                    *pending -= 1;
                    if *pending == 0 {
                        self.complete_fanout(slot, done);
                    }
                }
            }
        }
        std::mem::swap(&mut *self.sink.0.borrow_mut(), &mut self.batch);
        let mut batch = std::mem::take(&mut self.batch);
        for sub in batch.drain(..) {
            did = true;
            if sub.tag & SB_TAG != 0 {
                let child = (sub.tag & ((1 << CHILD_BITS) - 1)) as usize;
                let offset = (sub.tag & !SB_TAG) >> CHILD_BITS;
                self.sb_done(child, offset, sub.status);
                continue;
            }
            let (slot, epoch, child) = untag(sub.tag);
            let same = epoch == self.epochs[child] & 0xff;
            self.outstanding[child] = self.outstanding[child].saturating_sub(1);
            let is_read = matches!(self.ops.get(slot).map(|o| &o.kind), Some(Kind::Read { .. }));
            if is_read {
                self.read_done(slot, child, same, sub, done);
            } else {
                self.fanout_done(slot, child, same, sub, done);
            }
        }
        self.batch = batch;
        did |= self.start_round();
        if !self.parked.is_empty() {
            let mut parked = std::mem::take(&mut self.parked);
            parked.retain(|&slot| {
                if self.ackable(slot) {
                    self.ack(slot, done);
                    did = true;
                    false
                } else {
                    true
                }
            });
            self.parked = parked;
        }
        // Writes whose bits are on disk now (or that need none any more) go, in order; each
        // is submitted afresh (the rebuild window, the members in the mirror now).
        if !self.bm_wait.is_empty() {
            let n = self.bm_wait.len();
            for _ in 0..n {
                let io = self.bm_wait.pop_front().expect("counted");
                let ready = self.shared.bitmap.covered(io.offset_blocks, io.num_blocks);
                if !ready {
                    // Marked again: a clear meanwhile may have taken its bits.
                    self.shared.bitmap.mark(io.offset_blocks, io.num_blocks);
                    self.bm_wait.push_back(io);
                    continue;
                }
                did = true;
                if !self.blocked.is_empty() || self.in_window(&io) {
                    self.blocked.push_back(io);
                } else {
                    self.fan_out(io, done);
                }
            }
        }
        // Parked acknowledgements and waiting writes wait for another channel's metadata
        // round, which cannot wake this reactor: keep polling meanwhile (only while a member
        // is out and its bits are being written, or a fault is being recorded).
        did || !self.parked.is_empty()
            || self.sb.is_some()
            || !self.retry.is_empty()
            // Writes held by a pause wait for its end, which wakes every reactor.
            || (!self.blocked.is_empty() && !self.shared.quiesced.load(Ordering::Relaxed))
            || !self.bm_wait.is_empty()
    }
}

impl Drop for MirrorChannel {
    fn drop(&mut self) {
        // Only at shutdown (`busy` keeps the channel while a round is out): what the round
        // carried is written again by whoever takes the token next.
        if let Some(r) = self.sb.take() {
            self.shared.round_done(&r.plan, false);
            self.shared.writer.store(false, Ordering::Release);
        }
    }
}
