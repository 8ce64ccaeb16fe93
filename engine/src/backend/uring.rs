//! The uring bdev: a file or block device through io_uring.
//!
//! Each reactor's channel owns a ring with the file registered; SQEs are queued by `submit`
//! and handed to the kernel in one `io_uring_enter` per poll (a batch), completions are reaped
//! by the channel poller. The ring's eventfd is a reactor wake fd, so a reactor may sleep with
//! I/O in flight. O_DIRECT is used where the file system allows it (misaligned segments are
//! bounced through a pooled aligned buffer).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};
use smallvec::SmallVec;

use crate::bdev::{
    self, BackendChannel, Bdev, BdevBackend, BdevInfo, BdevIo, Completions, IoStatus, IoType,
};
use crate::buf::IoBuf;
use crate::error::{Error, Result};

const RING_ENTRIES: u32 = 256;
const DIRECT_ALIGN: usize = 512;

struct UringBackend {
    path: String,
    file: Arc<File>,
    direct: bool,
    block_size: usize,
}

impl BdevBackend for UringBackend {
    fn product_name(&self) -> &'static str {
        "URING bdev"
    }
    fn supports(&self, _op: IoType) -> bool {
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>> {
        let os = |op, source| Error::Os {
            op,
            path: self.path.clone(),
            source,
        };
        let ring = IoUring::builder()
            .setup_cqsize(RING_ENTRIES * 2)
            .build(RING_ENTRIES)
            .map_err(|e| os("io_uring_setup", e))?;
        ring.submitter()
            .register_files(&[self.file.as_raw_fd()])
            .map_err(|e| os("io_uring register_files", e))?;
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(os("eventfd", std::io::Error::last_os_error()));
        }
        // SAFETY: efd was just created and is owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        ring.submitter()
            .register_eventfd(efd.as_raw_fd())
            .map_err(|e| os("io_uring register_eventfd", e))?;
        let mut slots = Vec::with_capacity(RING_ENTRIES as usize);
        slots.resize_with(RING_ENTRIES as usize, || None);
        Ok(Box::new(UringChannel {
            ring,
            efd,
            _file: self.file.clone(),
            direct: self.direct,
            block_size: self.block_size,
            slots,
            free: (0..RING_ENTRIES as usize).rev().collect(),
            backlog: VecDeque::new(),
            unsubmitted: 0,
            efd_dirty: true,
        }))
    }
    fn describe(&self) -> Vec<(String, String)> {
        vec![
            ("filename".into(), self.path.clone()),
            ("o_direct".into(), self.direct.to_string()),
        ]
    }
}

struct Inflight {
    io: BdevIo,
    /// iovecs handed to the kernel: this slot never moves while in flight (the slot vector is
    /// allocated once at full length).
    iov: SmallVec<[libc::iovec; 4]>,
    bounce: Option<IoBuf>,
    expect: usize,
    /// Write-zeroes/unmap fallback stage (see `complete`).
    fallback: u8,
}

struct UringChannel {
    ring: IoUring,
    efd: OwnedFd,
    _file: Arc<File>,
    direct: bool,
    block_size: usize,
    slots: Vec<Option<Inflight>>,
    free: Vec<usize>,
    backlog: VecDeque<BdevIo>,
    unsubmitted: usize,
    efd_dirty: bool,
}

const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

impl UringChannel {
    fn needs_bounce(&self, io: &BdevIo) -> bool {
        self.direct
            && io.bufs.iter().any(|b| {
                !(b.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
                    || !b.len().is_multiple_of(DIRECT_ALIGN)
            })
    }

    fn sqe_for(&self, slot: usize) -> squeue::Entry {
        let inf = self.slots[slot].as_ref().expect("slot in use");
        let fd = types::Fixed(0);
        let off = inf.io.offset_blocks * self.block_size as u64;
        let len = inf.io.num_blocks * self.block_size as u64;
        let e = match inf.io.op {
            IoType::Read => opcode::Readv::new(fd, inf.iov.as_ptr(), inf.iov.len() as u32)
                .offset(off)
                .build(),
            IoType::Write => opcode::Writev::new(fd, inf.iov.as_ptr(), inf.iov.len() as u32)
                .offset(off)
                .build(),
            IoType::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            IoType::WriteZeroes | IoType::Unmap => {
                let first = if inf.io.op == IoType::WriteZeroes {
                    FALLOC_FL_ZERO_RANGE
                } else {
                    FALLOC_FL_PUNCH_HOLE
                };
                let mode = match inf.fallback {
                    0 => first,
                    _ if first == FALLOC_FL_ZERO_RANGE => FALLOC_FL_PUNCH_HOLE,
                    _ => FALLOC_FL_ZERO_RANGE,
                };
                opcode::Fallocate::new(fd, len)
                    .offset(off)
                    .mode(mode | FALLOC_FL_KEEP_SIZE)
                    .build()
            }
        };
        e.user_data(slot as u64)
    }

    /// Puts `io` in a slot and queues its SQE; gives it back if no slot or SQ space is free.
    // Handing the I/O back by value avoids an allocation on the data path.
    #[allow(clippy::result_large_err)]
    fn start(&mut self, mut io: BdevIo) -> std::result::Result<(), BdevIo> {
        let Some(slot) = self.free.pop() else {
            return Err(io);
        };
        let expect = io.buf_len();
        let mut bounce = None;
        let mut iov = SmallVec::new();
        if matches!(io.op, IoType::Read | IoType::Write) {
            if self.needs_bounce(&io) {
                let Some(mut b) = crate::buf::alloc(expect) else {
                    self.free.push(slot);
                    return Err(io);
                };
                if io.op == IoType::Write {
                    let mut off = 0;
                    for s in io.bufs.iter() {
                        b[off..off + s.len()].copy_from_slice(s);
                        off += s.len();
                    }
                }
                iov.push(libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: expect,
                });
                bounce = Some(b);
            } else {
                for b in io.bufs.iter_mut() {
                    iov.push(libc::iovec {
                        iov_base: b.as_mut_ptr().cast(),
                        iov_len: b.len(),
                    });
                }
            }
        }
        self.slots[slot] = Some(Inflight {
            io,
            iov,
            bounce,
            expect,
            fallback: 0,
        });
        if self.push_sqe(slot).is_err() {
            let inf = self.slots[slot].take().expect("slot just filled");
            self.free.push(slot);
            return Err(inf.io);
        }
        Ok(())
    }

    fn push_sqe(&mut self, slot: usize) -> std::result::Result<(), ()> {
        let sqe = self.sqe_for(slot);
        // SAFETY: the SQE's iovec array and buffers live in `self.slots[slot]`, which is not
        // moved or freed until its CQE has been reaped; the registered file outlives the ring.
        let pushed = unsafe { self.ring.submission().push(&sqe) };
        if pushed.is_err() {
            // SQ full: hand the queued entries to the kernel and try once more.
            let _ = self.ring.submit();
            self.unsubmitted = 0;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&sqe) }.map_err(|_| ())?;
        }
        self.unsubmitted += 1;
        Ok(())
    }

    fn complete(&mut self, slot: usize, res: i32, done: &mut Completions) {
        let Some(mut inf) = self.slots[slot].take() else {
            return;
        };
        let status = if res < 0 {
            let errno = -res;
            let retry = matches!(inf.io.op, IoType::WriteZeroes | IoType::Unmap)
                && inf.fallback == 0
                && (errno == libc::EOPNOTSUPP || errno == libc::EINVAL);
            if retry {
                // The other fallocate mode also makes the range read as zeros.
                inf.fallback = 1;
                self.slots[slot] = Some(inf);
                if self.push_sqe(slot).is_ok() {
                    return;
                }
                inf = self.slots[slot].take().expect("slot just filled");
                IoStatus::Failed(libc::EAGAIN)
            } else {
                tracing::debug!(op = ?inf.io.op, errno, "uring I/O failed");
                IoStatus::Failed(errno)
            }
        } else if matches!(inf.io.op, IoType::Read | IoType::Write) && res as usize != inf.expect {
            tracing::warn!(op = ?inf.io.op, got = res, want = inf.expect, "short uring transfer");
            IoStatus::Failed(libc::EIO)
        } else {
            IoStatus::Success
        };
        if status == IoStatus::Success && inf.io.op == IoType::Read {
            if let Some(b) = &inf.bounce {
                let mut off = 0;
                for s in inf.io.bufs.iter_mut() {
                    let n = s.len();
                    s.copy_from_slice(&b[off..off + n]);
                    off += n;
                }
            }
        }
        self.free.push(slot);
        done.complete(inf.io, status);
    }

    fn reap(&mut self, done: &mut Completions) -> usize {
        let mut n = 0;
        loop {
            let next = self.ring.completion().next();
            let Some(cqe) = next else { break };
            self.complete(cqe.user_data() as usize, cqe.result(), done);
            n += 1;
        }
        n
    }
}

impl BackendChannel for UringChannel {
    fn submit(&mut self, io: BdevIo, done: &mut Completions) {
        let _ = done;
        if !self.backlog.is_empty() {
            self.backlog.push_back(io);
            return;
        }
        if let Err(io) = self.start(io) {
            self.backlog.push_back(io);
        }
    }

    fn poll(&mut self, done: &mut Completions) -> bool {
        while let Some(io) = self.backlog.pop_front() {
            if let Err(io) = self.start(io) {
                self.backlog.push_front(io);
                break;
            }
        }
        let mut busy = false;
        if self.unsubmitted > 0 {
            match self.ring.submit() {
                Ok(_) => self.unsubmitted = 0,
                Err(e) => tracing::debug!("io_uring_enter: {e}"),
            }
            busy = true;
        }
        let mut n = self.reap(done);
        if n == 0 && self.efd_dirty {
            // Clear the eventfd before the final look at the CQ: a CQE posted after this read
            // signals it again, so a sleeping reactor cannot miss it.
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
            unsafe { libc::read(self.efd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            self.efd_dirty = false;
            n = self.reap(done);
        }
        if n > 0 {
            self.efd_dirty = true;
        }
        busy || n > 0
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.efd.as_raw_fd())
    }
}

impl Drop for UringChannel {
    fn drop(&mut self) {
        // The channel closes only with nothing in flight; make sure anyway that the kernel is
        // done with our buffers before they are freed.
        let in_flight = self.slots.iter().filter(|s| s.is_some()).count();
        if in_flight > 0 {
            let _ = self.ring.submit_and_wait(in_flight);
        }
    }
}

/// Options of `bdev_uring_create` (SPDK: filename, name, block_size).
#[derive(Debug, Clone)]
pub struct UringOpts {
    /// Bdev name.
    pub name: String,
    /// File or block device path.
    pub filename: String,
    /// Block size (512 or 4096).
    pub block_size: u32,
    /// UUID (random if `None`).
    pub uuid: Option<uuid::Uuid>,
}

/// Opens the file (O_DIRECT if the file system allows) and registers a uring bdev sized to it.
pub fn create(opts: UringOpts) -> Result<Arc<Bdev>> {
    let os = |op, source| Error::Os {
        op,
        path: opts.filename.clone(),
        source,
    };
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(&opts.filename)
    };
    let (mut file, mut direct) = match open(true) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            (open(false).map_err(|e| os("open", e))?, false)
        }
        Err(e) => return Err(os("open", e)),
    };
    let size = file.seek(SeekFrom::End(0)).map_err(|e| os("seek", e))?;
    let num_blocks = size / opts.block_size as u64;
    if num_blocks == 0 {
        return Err(Error::InvalidParam {
            param: "filename",
            why: format!("{} is smaller than one block", opts.filename),
        });
    }
    if direct && !probe_direct(&file, opts.block_size as usize) {
        file = open(false).map_err(|e| os("open", e))?;
        direct = false;
    }
    let mut info = BdevInfo::new(opts.name, opts.block_size, num_blocks);
    info.write_cache = true;
    if let Some(u) = opts.uuid {
        info.uuid = u;
    }
    let backend = UringBackend {
        path: opts.filename.clone(),
        file: Arc::new(file),
        direct,
        block_size: opts.block_size as usize,
    };
    bdev::register(info, Box::new(backend))
}

/// Checks that an aligned O_DIRECT read of one block works (the device's logical block may be
/// larger than the requested bdev block size).
fn probe_direct(file: &File, block_size: usize) -> bool {
    let mut b = IoBuf::heap(block_size);
    // SAFETY: reads at most block_size bytes into a buffer of that length.
    let r = unsafe { libc::pread(file.as_raw_fd(), b.as_mut_ptr().cast(), block_size, 0) };
    r >= 0
}
