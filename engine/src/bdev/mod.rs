//! The block-device abstraction: [`Bdev`] (global, shared by all reactors) and
//! [`IoChannel`] (one per bdev per reactor, lock-free), as SPDK's bdev/io_channel.
//!
//! ```text
//!  user (qpair, pipeline) ── desc.channel() ──► IoChannel (this reactor)
//!       │ submit(BdevIo)                            │ validate range/length
//!       │                                           ▼
//!       │                                   BackendChannel::submit ──► malloc/null: done now
//!       │                                           │                  uring: SQE, reaped by poll
//!       ◄──── callback(BdevIo) ◄── channel poller ◄─┘ (completions deferred, never re-entrant)
//! ```

mod channel;
mod registry;

use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use smallvec::SmallVec;

pub use channel::IoChannel;

/// This reactor's channel to `bdev` for a stage that holds a descriptor of it elsewhere (the
/// descriptor keeps the bdev open; this only avoids taking the descriptor's lock).
pub(crate) fn channel_for(bdev: &std::sync::Arc<Bdev>) -> crate::error::Result<IoChannel> {
    channel::get(bdev)
}
pub use registry::{
    delete, list, lookup, on_resize, open, register, validate_name, Bdev, BdevDesc, MAX_NAME,
};
pub(crate) use registry::{resize, set_alias};

use crate::buf::IoBuf;
use crate::error::Result;

/// Scatter-gather list of an I/O: owned buffers, handed back in the completion.
pub type SgList = SmallVec<[IoBuf; 1]>;

/// The operations a bdev may support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoType {
    /// Read `num_blocks` into the buffers.
    Read,
    /// Write the buffers.
    Write,
    /// Make completed writes durable.
    Flush,
    /// Make the range read as zeros.
    WriteZeroes,
    /// Deallocate the range (reads return zeros afterwards on every ballast backend).
    Unmap,
}

/// Outcome of an I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    /// Not completed yet.
    Pending,
    /// Completed successfully.
    Success,
    /// The LBA range lies (partly) beyond the end of the bdev.
    OutOfRange,
    /// The buffers do not add up to `num_blocks × block_size`, or a zero-length read/write.
    InvalidLength,
    /// The bdev was deleted (hot-removed).
    Removed,
    /// The bdev does not support this operation.
    NotSupported,
    /// No resources (buffers, queue slots) right now; may be retried.
    NoMemory,
    /// Aborted (e.g. the channel was torn down).
    Aborted,
    /// The backend failed with this errno.
    Failed(i32),
}

impl IoType {
    /// Every operation.
    pub const ALL: [IoType; 5] = [
        IoType::Read,
        IoType::Write,
        IoType::Flush,
        IoType::WriteZeroes,
        IoType::Unmap,
    ];

    /// This operation's bit in a set of operations.
    pub(crate) fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl IoStatus {
    /// True for [`IoStatus::Success`].
    pub fn is_ok(self) -> bool {
        self == IoStatus::Success
    }
}

/// Receives completions without a per-I/O allocation: the submitter implements it once (e.g.
/// per queue pair) and tells its requests apart by [`BdevIo::tag`].
pub trait IoSink {
    /// Called on the submitting reactor when `io` completes.
    fn io_done(&self, io: BdevIo);
}

/// A transform a backend fuses into the copy it makes anyway (SPDK's accel sequence, with the
/// malloc bdev's copy folded into the stage's operation): a crypto stage over a RAM bdev
/// decrypts straight out of the bdev's memory into the caller's buffer and encrypts straight
/// into it, one pass over the data instead of a copy and a second pass.
///
/// Only backends whose channel says [`BackendChannel::fuses_copy`] see it; [`IoChannel`]
/// refuses an I/O carrying one anywhere else (`NotSupported`), so data is never left
/// untransformed.
pub trait CopyTransform {
    /// Writes the transform of `src` into `dst` (equal lengths). Reads: `src` is the stored
    /// data, `dst` the caller's buffer; writes: `src` is the caller's data, `dst` the storage.
    /// `dev_offset` is the byte offset of both within the bdev. False fails the I/O (EIO).
    fn apply(&self, op: IoType, src: &[u8], dst: &mut [u8], dev_offset: u64) -> bool;
}

/// How a completion is delivered.
pub enum IoCallback {
    /// A boxed closure (convenient; allocates, so not for the hot path).
    Fn(Box<dyn FnOnce(BdevIo)>),
    /// A shared sink (no allocation per I/O).
    Sink(Rc<dyn IoSink>),
}

/// One block I/O: what to do, the buffers, and where to report completion.
pub struct BdevIo {
    /// The operation.
    pub op: IoType,
    /// First block.
    pub offset_blocks: u64,
    /// Number of blocks.
    pub num_blocks: u64,
    /// Data buffers (read/write); their lengths must add up to `num_blocks × block_size`.
    pub bufs: SgList,
    /// The submitter's context (e.g. a request slot index).
    pub tag: u64,
    /// Result, set before the callback runs.
    pub status: IoStatus,
    /// A transform to fuse into the backend's copy (reads and writes; see [`CopyTransform`]).
    pub xform: Option<Rc<dyn CopyTransform>>,
    /// Zero-copy read: `bufs` is empty and the backend completes the read with its own memory
    /// lent as the buffer ([`IoBuf::lent`]) instead of copying into the caller's. Only
    /// channels whose [`IoChannel::lends_reads`] is true accept it.
    pub lend: bool,
    cb: Option<IoCallback>,
}

// A BdevIo is moved by value several times per I/O (submit, completion queue, callback): at
// 128 bytes or less the compiler copies it inline; larger, each move is a `memcpy` call
// (~35 ns per 4 KiB read on the target before this bound; BENCHMARKS.md, sixth session).
const _: () = assert!(std::mem::size_of::<BdevIo>() <= 128);

impl std::fmt::Debug for BdevIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdevIo")
            .field("op", &self.op)
            .field("offset_blocks", &self.offset_blocks)
            .field("num_blocks", &self.num_blocks)
            .field("segments", &self.bufs.len())
            .field("tag", &self.tag)
            .field("status", &self.status)
            .finish()
    }
}

impl BdevIo {
    /// A new I/O.
    pub fn new(
        op: IoType,
        offset_blocks: u64,
        num_blocks: u64,
        bufs: SgList,
        tag: u64,
        cb: IoCallback,
    ) -> Self {
        Self {
            op,
            offset_blocks,
            num_blocks,
            bufs,
            tag,
            status: IoStatus::Pending,
            xform: None,
            lend: false,
            cb: Some(cb),
        }
    }

    /// Total bytes in the buffers.
    pub fn buf_len(&self) -> usize {
        self.bufs.iter().map(|b| b.len()).sum()
    }

    /// Sends this I/O on to another bdev as it is (a stage that only remaps it): swaps in
    /// the stage's own callback and tag and returns the caller's, to be put back with
    /// [`BdevIo::restore`] before the stage completes it. No copy of the I/O is made.
    pub(crate) fn reroute(&mut self, cb: IoCallback, tag: u64) -> (Option<IoCallback>, u64) {
        (self.cb.replace(cb), std::mem::replace(&mut self.tag, tag))
    }

    /// Puts back what [`BdevIo::reroute`] returned.
    pub(crate) fn restore(&mut self, (cb, tag): (Option<IoCallback>, u64)) {
        self.cb = cb;
        self.tag = tag;
    }

    /// Delivers the completion (called by the channel poller, never by backends directly).
    pub(crate) fn finish(mut self) {
        match self.cb.take() {
            Some(IoCallback::Fn(f)) => f(self),
            Some(IoCallback::Sink(s)) => s.io_done(self),
            None => {}
        }
    }
}

/// Static description of a bdev.
#[derive(Debug, Clone)]
pub struct BdevInfo {
    /// Unique name.
    pub name: String,
    /// Unique UUID.
    pub uuid: uuid::Uuid,
    /// Other names it can be found by.
    pub aliases: Vec<String>,
    /// Block size in bytes (512 or 4096).
    pub block_size: u32,
    /// Number of blocks.
    pub num_blocks: u64,
    /// True if completed writes may sit in a volatile cache until Flush.
    pub write_cache: bool,
    /// Optimal I/O boundary in blocks (0: none).
    pub optimal_io_boundary: u32,
}

impl BdevInfo {
    /// Info with a random UUID, no aliases, no write cache.
    pub fn new(name: impl Into<String>, block_size: u32, num_blocks: u64) -> Self {
        Self {
            name: name.into(),
            uuid: uuid::Uuid::new_v4(),
            aliases: Vec::new(),
            block_size,
            num_blocks,
            write_cache: false,
            optimal_io_boundary: 0,
        }
    }
}

/// Where a backend channel puts finished I/O (the generic channel delivers the callbacks).
#[derive(Default)]
pub struct Completions(std::collections::VecDeque<BdevIo>);

impl Completions {
    /// Records `io` as finished with `status`.
    #[inline]
    pub fn complete(&mut self, mut io: BdevIo, status: IoStatus) {
        io.status = status;
        self.0.push_back(io);
    }

    pub(crate) fn pop(&mut self) -> Option<BdevIo> {
        self.0.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next completion to be delivered.
    pub(crate) fn front(&self) -> Option<&BdevIo> {
        self.0.front()
    }
}

/// A bdev implementation (module), shared by all reactors.
pub trait BdevBackend: Send + Sync + 'static {
    /// SPDK's product_name (e.g. "Malloc disk").
    fn product_name(&self) -> &'static str;
    /// Whether `op` is supported. Asked once per operation when the bdev is registered: the
    /// answer must hold for the bdev's whole life.
    fn supports(&self, op: IoType) -> bool;
    /// Creates the per-reactor channel (called on that reactor).
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>>;
    /// Called once when the bdev is gone (deleted and its last user closed it).
    fn destroy(&self) {}
    /// Module-specific description (for bdev_get_bdevs' driver_specific).
    fn describe(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// How often the bdev's transport came back after a loss (a remote namespace's controller
    /// reconnecting); 0 for bdevs without a transport. A mirror re-adds a child it faulted
    /// once this moves.
    fn reconnects(&self) -> u64 {
        0
    }
    /// For bdevs with a transport: whether it is lost for good (a remote controller given up
    /// after its loss timeout). `None` for bdevs without one.
    fn transport_lost(&self) -> Option<bool> {
        None
    }
}

/// A backend's per-reactor state.
pub trait BackendChannel {
    /// Starts a validated I/O. Synchronous backends complete it into `done` at once.
    fn submit(&mut self, io: BdevIo, done: &mut Completions);
    /// Advances asynchronous work (submit batched SQEs, reap completions into `done`).
    /// Returns true if it did anything.
    fn poll(&mut self, _done: &mut Completions) -> bool {
        false
    }
    /// An fd that becomes readable when asynchronous completions arrive (so the reactor can
    /// sleep with I/O in flight).
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }
    /// True if `submit` applies a read's or write's [`BdevIo::xform`] while copying the data.
    fn fuses_copy(&self) -> bool {
        false
    }
    /// True if `submit` completes a [`BdevIo::lend`] read with a window on its own memory.
    fn lends_reads(&self) -> bool {
        false
    }
    /// True while the channel has I/O of its own in flight (not the callers': those are
    /// counted already), e.g. a mirror's metadata writes: it is not closed until false.
    fn busy(&self) -> bool {
        false
    }
}

/// Per-channel I/O counters (single writer: the channel's reactor).
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub(crate) num_read_ops: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) num_write_ops: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) num_unmap_ops: AtomicU64,
    pub(crate) num_write_zeroes_ops: AtomicU64,
    pub(crate) num_flush_ops: AtomicU64,
    pub(crate) num_errors: AtomicU64,
}

/// Cumulative I/O statistics of a bdev (SPDK's bdev_get_iostat fields).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoStat {
    /// Completed reads.
    pub num_read_ops: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Completed writes.
    pub num_write_ops: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Completed unmaps.
    pub num_unmap_ops: u64,
    /// Completed write-zeroes.
    pub num_write_zeroes_ops: u64,
    /// Completed flushes.
    pub num_flush_ops: u64,
    /// Failed I/O.
    pub num_errors: u64,
}

impl ChannelStats {
    fn add_to(&self, s: &mut IoStat) {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.num_read_ops += l(&self.num_read_ops);
        s.bytes_read += l(&self.bytes_read);
        s.num_write_ops += l(&self.num_write_ops);
        s.bytes_written += l(&self.bytes_written);
        s.num_unmap_ops += l(&self.num_unmap_ops);
        s.num_write_zeroes_ops += l(&self.num_write_zeroes_ops);
        s.num_flush_ops += l(&self.num_flush_ops);
        s.num_errors += l(&self.num_errors);
    }
}
