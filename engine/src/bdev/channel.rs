//! Per-reactor I/O channels: validation, submission to the backend channel, and the poller
//! that delivers completions on the submitting reactor.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use ballast_reactor::{PollStatus, PollerHandle};

use super::registry::Bdev;
use super::{
    BackendChannel, BdevIo, ChannelStats, Completions, IoCallback, IoStatus, IoType, SgList,
};
use crate::error::{Error, Result};

struct ChannelInner {
    bdev: Arc<Bdev>,
    backend: RefCell<Box<dyn BackendChannel>>,
    done: RefCell<Completions>,
    in_flight: Cell<usize>,
    users: Cell<usize>,
    poller: Cell<Option<PollerHandle>>,
    wake_fd: Option<std::os::fd::RawFd>,
    stats: Arc<ChannelStats>,
}

thread_local! {
    static CHANNELS: RefCell<HashMap<u64, Weak<ChannelInner>>> = RefCell::default();
}

/// A reactor's handle to a bdev. Cheap to clone; not `Send` (it belongs to this reactor).
pub struct IoChannel {
    inner: Rc<ChannelInner>,
}

impl std::fmt::Debug for IoChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoChannel")
            .field("bdev", &self.inner.bdev.name())
            .field("in_flight", &self.inner.in_flight.get())
            .finish()
    }
}

pub(super) fn get(bdev: &Arc<Bdev>) -> Result<IoChannel> {
    if ballast_reactor::current_core().is_none() {
        return Err(Error::NotOnReactor("IoChannel"));
    }
    if let Some(inner) = CHANNELS.with(|c| c.borrow().get(&bdev.id).and_then(Weak::upgrade)) {
        inner.users.set(inner.users.get() + 1);
        return Ok(IoChannel { inner });
    }
    let backend = bdev.backend.create_channel()?;
    let wake_fd = backend.wake_fd();
    let stats = Arc::new(ChannelStats::default());
    bdev.channel_stats
        .lock()
        .unwrap()
        .0
        .push(Arc::downgrade(&stats));
    let inner = Rc::new(ChannelInner {
        bdev: bdev.clone(),
        backend: RefCell::new(backend),
        done: RefCell::default(),
        in_flight: Cell::new(0),
        users: Cell::new(1),
        poller: Cell::new(None),
        wake_fd,
        stats,
    });
    if let Some(fd) = wake_fd {
        ballast_reactor::add_wake_fd(fd).map_err(|e| Error::Os {
            op: "register wake fd",
            path: bdev.name().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    let p = inner.clone();
    let h =
        ballast_reactor::register_poller(format!("bdev_channel:{}", bdev.name()), move || p.poll())
            .map_err(|_| Error::NotOnReactor("IoChannel"))?;
    inner.poller.set(Some(h));
    CHANNELS.with(|c| c.borrow_mut().insert(bdev.id, Rc::downgrade(&inner)));
    Ok(IoChannel { inner })
}

/// Bytes of a lent buffer prefetched ahead of its consumer: the hardware prefetcher follows
/// a stream once started.
const LENT_PREFETCH_MAX: usize = 4096;

#[inline]
fn bump(c: &AtomicU64, by: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
}

impl ChannelInner {
    fn poll(&self) -> PollStatus {
        let mut busy = self.backend.borrow_mut().poll(&mut self.done.borrow_mut());
        // Deliver completions with no borrow held: callbacks may submit again.
        loop {
            let io = self.done.borrow_mut().pop();
            let Some(io) = io else { break };
            // A lent read's consumer reads its data next, from the bdev's memory (DRAM for a
            // RAM namespace): start fetching the next one's while this one is handled.
            if let Some(next) = self.done.borrow().front() {
                for b in &next.bufs {
                    b.prefetch_lent(LENT_PREFETCH_MAX);
                }
            }
            busy = true;
            self.account(&io);
            io.finish();
        }
        if self.users.get() == 0
            && self.in_flight.get() == 0
            && self.done.borrow().is_empty()
            && !self.backend.borrow().busy()
        {
            self.close();
        }
        busy.into()
    }

    fn account(&self, io: &BdevIo) {
        if io.status == IoStatus::Pending {
            return;
        }
        let s = &self.stats;
        self.in_flight.set(self.in_flight.get() - 1);
        if io.status != IoStatus::Success {
            bump(&s.num_errors, 1);
            return;
        }
        let bytes = io.num_blocks * self.bdev.block_size() as u64;
        match io.op {
            IoType::Read => {
                bump(&s.num_read_ops, 1);
                bump(&s.bytes_read, bytes);
            }
            IoType::Write => {
                bump(&s.num_write_ops, 1);
                bump(&s.bytes_written, bytes);
            }
            IoType::Unmap => bump(&s.num_unmap_ops, 1),
            IoType::WriteZeroes => bump(&s.num_write_zeroes_ops, 1),
            IoType::Flush => bump(&s.num_flush_ops, 1),
        }
    }

    fn close(&self) {
        if let Some(h) = self.poller.take() {
            ballast_reactor::unregister_poller(h);
            if let Some(fd) = self.wake_fd {
                ballast_reactor::remove_wake_fd(fd);
            }
            CHANNELS.with(|c| {
                let mut c = c.borrow_mut();
                if c.get(&self.bdev.id)
                    .is_some_and(|w| std::ptr::eq(w.as_ptr(), self))
                {
                    c.remove(&self.bdev.id);
                }
            });
            self.bdev.retire_channel_stats(&self.stats);
        }
    }

    fn validate(&self, io: &BdevIo) -> IoStatus {
        let b = &self.bdev;
        if b.is_removed() {
            return IoStatus::Removed;
        }
        if !b.supports(io.op) {
            return IoStatus::NotSupported;
        }
        if io.xform.is_some()
            && !(matches!(io.op, IoType::Read | IoType::Write)
                && self.backend.borrow().fuses_copy())
        {
            return IoStatus::NotSupported;
        }
        if io.lend {
            if io.op != IoType::Read || !self.backend.borrow().lends_reads() {
                return IoStatus::NotSupported;
            }
            if !io.bufs.is_empty() || io.xform.is_some() {
                return IoStatus::InvalidLength;
            }
        }
        match io.offset_blocks.checked_add(io.num_blocks) {
            Some(end) if end <= b.num_blocks() => {}
            _ => return IoStatus::OutOfRange,
        }
        // A lent read brings no buffers: the backend's window has the length.
        if matches!(io.op, IoType::Read | IoType::Write)
            && (io.num_blocks == 0
                || (!io.lend && io.buf_len() as u64 != io.num_blocks * b.block_size() as u64))
        {
            return IoStatus::InvalidLength;
        }
        IoStatus::Pending
    }
}

impl IoChannel {
    /// The bdev this channel reaches.
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.inner.bdev
    }

    /// True if the backend fuses a [`crate::bdev::CopyTransform`] into its data copy.
    pub fn fuses_copy(&self) -> bool {
        self.inner.backend.borrow().fuses_copy()
    }

    /// True if this bdev serves zero-copy reads ([`BdevIo::lend`]): the data arrives as a
    /// window on the bdev's memory, no copy made.
    pub fn lends_reads(&self) -> bool {
        self.inner.backend.borrow().lends_reads()
    }

    /// I/O submitted and not yet completed on this channel.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.get()
    }

    /// Submits an I/O. Always completes through its callback on this reactor, later (never
    /// from inside `submit`): errors such as out-of-range LBAs complete with an error status.
    pub fn submit(&self, mut io: BdevIo) {
        let inner = &*self.inner;
        inner.in_flight.set(inner.in_flight.get() + 1);
        let status = inner.validate(&io);
        if status != IoStatus::Pending {
            io.status = status;
            inner.done.borrow_mut().0.push_back(io);
            return;
        }
        inner
            .backend
            .borrow_mut()
            .submit(io, &mut inner.done.borrow_mut());
    }

    /// Convenience: read `num_blocks` at `offset_blocks` into `bufs`.
    pub fn read(&self, offset_blocks: u64, num_blocks: u64, bufs: SgList, cb: IoCallback) {
        self.submit(BdevIo::new(
            IoType::Read,
            offset_blocks,
            num_blocks,
            bufs,
            0,
            cb,
        ));
    }

    /// Convenience: write `bufs` at `offset_blocks`.
    pub fn write(&self, offset_blocks: u64, num_blocks: u64, bufs: SgList, cb: IoCallback) {
        self.submit(BdevIo::new(
            IoType::Write,
            offset_blocks,
            num_blocks,
            bufs,
            0,
            cb,
        ));
    }

    /// Convenience: an operation without data (flush, write-zeroes, unmap).
    pub fn no_data(&self, op: IoType, offset_blocks: u64, num_blocks: u64, cb: IoCallback) {
        self.submit(BdevIo::new(
            op,
            offset_blocks,
            num_blocks,
            SgList::new(),
            0,
            cb,
        ));
    }
}

impl Clone for IoChannel {
    fn clone(&self) -> Self {
        self.inner.users.set(self.inner.users.get() + 1);
        IoChannel {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for IoChannel {
    fn drop(&mut self) {
        // The poller closes the channel once its in-flight I/O has completed.
        self.inner.users.set(self.inner.users.get() - 1);
    }
}
