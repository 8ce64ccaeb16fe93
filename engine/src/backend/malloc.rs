//! The malloc bdev: RAM-backed, lazily allocated (anonymous mmap, so untouched blocks cost no
//! memory), unmap/write-zeroes give whole pages back to the OS. It fuses stages' copy
//! transforms (a crypto stage's cipher runs straight between the region and the caller's
//! buffers), and lends its memory for zero-copy reads ([`crate::BdevIo::lend`]: the NVMe/TCP
//! target sends C2HData straight out of the region).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Reserved past the backing limit (created with overcommit when it was needed).
    over: bool,
}

// SAFETY: the region is plain memory owned by the backend for its whole life; it is accessed
// only through raw-pointer copies below. Concurrent I/O to overlapping blocks from two
// reactors has unspecified data, as on a real device (NVMe promises no atomicity beyond
// AWUN); the pointer itself never changes.
unsafe impl Send for Region {}
// SAFETY: see Send.
unsafe impl Sync for Region {}

impl Region {
    fn new(len: usize, overcommit: bool) -> Result<Self> {
        let over = reserve(len as u64, overcommit)?;
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
            COMMITTED.fetch_sub(len as u64, Ordering::AcqRel);
            return Err(Error::Os {
                op: "mmap",
                path: String::new(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            ptr: p.cast(),
            len,
            over,
        })
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
        COMMITTED.fetch_sub(self.len as u64, Ordering::AcqRel);
    }
}

/// Bytes of all live malloc regions (each counted at its full size: pages are backed when
/// written, and a RAM disk is there to be written).
static COMMITTED: AtomicU64 = AtomicU64::new(0);

/// The machine's physical memory in bytes (`MemTotal` of /proc/meminfo).
fn mem_total() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// What malloc bdevs may hold together without overcommit: physical memory less a margin
/// for the rest of the system (an eighth, at least 512 MiB).
pub fn backing_limit() -> Option<u64> {
    mem_total().map(|t| t.saturating_sub((t / 8).max(512 << 20)))
}

/// Bytes held by live malloc bdevs.
pub fn committed() -> u64 {
    COMMITTED.load(Ordering::Acquire)
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Reserves `len` bytes of the backing limit (refused past it unless `overcommit`); the
/// region releases them when dropped.
/// True if the reservation went past the limit (only with `overcommit`).
fn reserve(len: u64, overcommit: bool) -> Result<bool> {
    let limit = match backing_limit() {
        Some(l) if !overcommit => l,
        l => {
            let before = COMMITTED.fetch_add(len, Ordering::AcqRel);
            return Ok(l.is_some_and(|l| before.saturating_add(len) > l));
        }
    };
    COMMITTED
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            c.checked_add(len).filter(|&n| n <= limit)
        })
        .map_err(|held| Error::InvalidParam {
            param: "num_blocks",
            why: format!(
                "{} is more than this machine can back in RAM: malloc bdevs may hold {} \
                 together (physical memory less a margin), {} already held; pass overcommit \
                 to create it anyway",
                gib(len),
                gib(limit),
                gib(held)
            ),
        })?;
    Ok(false)
}

struct MallocBackend {
    mem: Arc<Region>,
    block_size: usize,
    /// Created past the backing limit with overcommit (saved, so a replayed config creates it
    /// again).
    overcommit: bool,
}

impl BdevBackend for MallocBackend {
    fn product_name(&self) -> &'static str {
        "Malloc disk"
    }
    fn describe(&self) -> Vec<(String, String)> {
        if self.overcommit {
            vec![("overcommit".into(), "true".into())]
        } else {
            Vec::new()
        }
    }
    fn supports(&self, _op: IoType) -> bool {
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>> {
        Ok(Box::new(MallocChannel {
            mem: self.mem.clone(),
            lender: Lender::new(self.mem.clone()),
            block_size: self.block_size,
            unfenced: false,
        }))
    }
}

struct MallocChannel {
    mem: Arc<Region>,
    /// Keeps the region mapped while buffers lent from it (zero-copy reads) are alive (an
    /// `Rc` inside: lending costs no atomic operation).
    lender: Lender,
    block_size: usize,
    /// Writes since the last `poll` used non-temporal stores: fence before completing them.
    unfenced: bool,
}

/// Copies `len` bytes of a write into the region. Whole 64-byte lines at a 16-byte aligned
/// destination (4 KiB or more) go with non-temporal stores: a random block of a large region
/// is rarely cached, and a plain store would first read every line from DRAM only to
/// overwrite it. The rest is copied plainly. Returns true if it used non-temporal stores:
/// they are weakly ordered, so the caller must `sfence` before reporting the write done
/// (once per batch: a fence per write waits for each write's lines to drain and gives the
/// gain back).
///
/// # Safety
/// `src..src+len` must be readable and `dst..dst+len` writable, not overlapping.
unsafe fn copy_to_region(dst: *mut u8, src: *const u8, len: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if len >= 4096 && (dst as usize).is_multiple_of(16) {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let lines = len / 64;
        // SAFETY: every access is inside `src..src+len` / `dst..dst+len` (the caller's
        // contract; `lines * 64 <= len`); each `d` is 16-byte aligned as the streaming store
        // requires (`dst` is, and steps of 16 keep it); SSE2 is part of x86_64.
        unsafe {
            for i in 0..lines {
                let s = src.add(i * 64) as *const __m128i;
                let d = dst.add(i * 64) as *mut __m128i;
                let (a, b, c, e) = (
                    _mm_loadu_si128(s),
                    _mm_loadu_si128(s.add(1)),
                    _mm_loadu_si128(s.add(2)),
                    _mm_loadu_si128(s.add(3)),
                );
                _mm_stream_si128(d, a);
                _mm_stream_si128(d.add(1), b);
                _mm_stream_si128(d.add(2), c);
                _mm_stream_si128(d.add(3), e);
            }
            let done = lines * 64;
            std::ptr::copy_nonoverlapping(src.add(done), dst.add(done), len - done);
        }
        return true;
    }
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
    false
}

/// Makes earlier non-temporal stores visible to every core before what follows.
fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86_64; a fence has no other effect.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
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
            (IoType::Write, None) => {
                let mut nt = false;
                super::for_each_segment(&mut io, |off, seg| {
                    // SAFETY: as for Read.
                    nt |= unsafe { copy_to_region(mem.add(base + off), seg.as_ptr(), seg.len()) };
                });
                self.unfenced |= nt;
            }
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

    /// Runs before the channel delivers completions: fences this batch's non-temporal writes.
    fn poll(&mut self, _done: &mut Completions) -> bool {
        if self.unfenced {
            store_fence();
            self.unfenced = false;
        }
        false
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

/// Creates and registers a malloc bdev; refused if it would take malloc bdevs past
/// [`backing_limit`].
pub fn create(opts: MallocOpts) -> Result<Arc<Bdev>> {
    create_with(opts, false)
}

/// [`create`], past the backing limit too if `overcommit` (pages are backed as they are
/// written: a disk larger than RAM works until it is filled).
pub fn create_with(opts: MallocOpts, overcommit: bool) -> Result<Arc<Bdev>> {
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
    let mem = Region::new(len as usize, overcommit)?;
    let backend = MallocBackend {
        overcommit: mem.over,
        mem: Arc::new(mem),
        block_size: opts.block_size as usize,
    };
    bdev::register(info, Box::new(backend))
}
