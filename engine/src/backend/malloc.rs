//! The malloc bdev: RAM-backed, lazily allocated (anonymous mmap, so untouched blocks cost no
//! memory), unmap/write-zeroes give whole pages back to the OS. It fuses stages' copy
//! transforms (a crypto stage's cipher runs straight between the region and the caller's
//! buffers), and lends its memory for zero-copy reads ([`crate::BdevIo::lend`]: the NVMe/TCP
//! target sends C2HData straight out of the region).

use std::ptr::NonNull;
use std::sync::Arc;

use crate::bdev::{
    self, BackendChannel, Bdev, BdevBackend, BdevInfo, BdevIo, Completions, IoStatus, IoType,
};
use crate::buf::{IoBuf, Lender};
use crate::error::{Error, Result};

const PAGE: usize = 4096;

/// Anonymous private mapping: reads of untouched pages are zeros; no RSS until written.
struct Region {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the region is plain memory owned by the backend for its whole life; it is accessed
// only through raw-pointer copies below. Concurrent I/O to overlapping blocks from two
// reactors has unspecified data, as on a real device (NVMe promises no atomicity beyond
// AWUN); the pointer itself never changes.
unsafe impl Send for Region {}
// SAFETY: see Send.
unsafe impl Sync for Region {}

impl Region {
    fn new(len: usize) -> Result<Self> {
        // SAFETY: an anonymous mapping with no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Os {
                op: "mmap",
                path: String::new(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self { ptr: p.cast(), len })
    }

    /// Zeroes `[off, off+len)`, returning whole pages to the OS.
    fn zero(&self, off: usize, len: usize) {
        debug_assert!(off + len <= self.len);
        let start_page = off.next_multiple_of(PAGE);
        let end_page = (off + len) / PAGE * PAGE;
        if end_page > start_page {
            // SAFETY: in-bounds sub-ranges of our mapping.
            unsafe {
                std::ptr::write_bytes(self.ptr.add(off), 0, start_page - off);
                libc::madvise(
                    self.ptr.add(start_page).cast(),
                    end_page - start_page,
                    libc::MADV_DONTNEED,
                );
                std::ptr::write_bytes(self.ptr.add(end_page), 0, off + len - end_page);
            }
        } else {
            // SAFETY: in-bounds sub-range of our mapping.
            unsafe { std::ptr::write_bytes(self.ptr.add(off), 0, len) };
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`; no channel outlives the
        // backend that owns the region.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

struct MallocBackend {
    mem: Arc<Region>,
    block_size: usize,
}

impl BdevBackend for MallocBackend {
    fn product_name(&self) -> &'static str {
        "Malloc disk"
    }
    fn supports(&self, _op: IoType) -> bool {
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>> {
        Ok(Box::new(MallocChannel {
            mem: self.mem.clone(),
            lender: Lender::new(self.mem.clone()),
            block_size: self.block_size,
        }))
    }
}

struct MallocChannel {
    mem: Arc<Region>,
    /// Keeps the region mapped while buffers lent from it (zero-copy reads) are alive (an
    /// `Rc` inside: lending costs no atomic operation).
    lender: Lender,
    block_size: usize,
}

impl BackendChannel for MallocChannel {
    fn submit(&mut self, mut io: BdevIo, done: &mut Completions) {
        let base = io.offset_blocks as usize * self.block_size;
        let len = io.num_blocks as usize * self.block_size;
        let mem = self.mem.ptr;
        let mut status = IoStatus::Success;
        match (io.op, io.xform.take()) {
            (IoType::Read, None) if io.lend => {
                // SAFETY: the channel validated base+len ≤ region size (and len > 0); the
                // region stays mapped while `lender` (held by the buffer) lives.
                let buf = unsafe {
                    IoBuf::lent(
                        NonNull::new_unchecked(mem.add(base)),
                        len,
                        self.lender.clone(),
                    )
                };
                io.bufs.push(buf);
            }
            (IoType::Read, None) => super::for_each_segment(&mut io, |off, seg| {
                // SAFETY: the channel validated base+len ≤ region size and the segments add up
                // to len; `seg` is a distinct buffer.
                unsafe {
                    std::ptr::copy_nonoverlapping(mem.add(base + off), seg.as_mut_ptr(), seg.len())
                }
            }),
            (IoType::Write, None) => super::for_each_segment(&mut io, |off, seg| {
                // SAFETY: as for Read.
                unsafe {
                    std::ptr::copy_nonoverlapping(seg.as_ptr(), mem.add(base + off), seg.len())
                }
            }),
            // The transform reads or writes the region in place of the copy above.
            (op @ (IoType::Read | IoType::Write), Some(x)) => {
                let mut ok = true;
                super::for_each_segment(&mut io, |off, seg| {
                    let at = base + off;
                    // SAFETY: in bounds as for the copies above; the slice lives only for this
                    // call. Another reactor's overlapping I/O may touch the same bytes at the
                    // same time, with the same unspecified result as the plain copy.
                    let region = unsafe { std::slice::from_raw_parts_mut(mem.add(at), seg.len()) };
                    ok &= if op == IoType::Read {
                        x.apply(op, region, seg, at as u64)
                    } else {
                        x.apply(op, seg, region, at as u64)
                    };
                });
                if !ok {
                    status = IoStatus::Failed(libc::EIO);
                }
            }
            (IoType::WriteZeroes | IoType::Unmap, _) => self.mem.zero(base, len),
            (IoType::Flush, _) => {}
        }
        done.complete(io, status);
    }

    fn fuses_copy(&self) -> bool {
        true
    }

    fn lends_reads(&self) -> bool {
        true
    }
}

/// Options of `bdev_malloc_create`.
#[derive(Debug, Clone)]
pub struct MallocOpts {
    /// Bdev name.
    pub name: String,
    /// Number of blocks.
    pub num_blocks: u64,
    /// Block size (512 or 4096).
    pub block_size: u32,
    /// UUID (random if `None`).
    pub uuid: Option<uuid::Uuid>,
}

/// Creates and registers a malloc bdev.
pub fn create(opts: MallocOpts) -> Result<Arc<Bdev>> {
    let len = opts
        .num_blocks
        .checked_mul(opts.block_size as u64)
        .filter(|l| *l > 0 && *l <= (1u64 << 46))
        .ok_or(Error::InvalidParam {
            param: "num_blocks",
            why: "size must be between one block and 64 TiB".into(),
        })?;
    if opts.block_size != 512 && opts.block_size != 4096 {
        return Err(Error::InvalidParam {
            param: "block_size",
            why: format!("{} (must be 512 or 4096)", opts.block_size),
        });
    }
    let mut info = BdevInfo::new(opts.name, opts.block_size, opts.num_blocks);
    if let Some(u) = opts.uuid {
        info.uuid = u;
    }
    let backend = MallocBackend {
        mem: Arc::new(Region::new(len as usize)?),
        block_size: opts.block_size as usize,
    };
    bdev::register(info, Box::new(backend))
}
