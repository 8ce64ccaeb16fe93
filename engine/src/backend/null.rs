//! The null bdev: writes are discarded, reads return zeros. The benchmark floor.
//!
//! Reads either zero the caller's buffers or, for zero-copy reads ([`BdevIo::lend`]), lend a
//! read-only window of zeros (an anonymous `PROT_READ` mapping: every page is the kernel's
//! shared zero page, so it costs no memory), so a benchmark over NVMe/TCP measures the target
//! and not a 4 KiB memset per read.

use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use crate::bdev::{
    self, BackendChannel, Bdev, BdevBackend, BdevInfo, BdevIo, Completions, IoStatus, IoType,
};
use crate::buf::{IoBuf, Lender};
use crate::error::Result;

/// Bytes of zeros one lent buffer covers; longer reads get several.
pub(crate) const ZERO_WINDOW: usize = 1 << 20;

/// The process-wide read-only window of zeros lent by every null channel.
struct Zeros(NonNull<u8>);

// SAFETY: a read-only mapping that is never unmapped or written.
unsafe impl Send for Zeros {}
// SAFETY: see Send.
unsafe impl Sync for Zeros {}

/// The zero window, mapped on first use (`None` if the mapping failed: reads then fill).
pub(crate) fn zeros() -> Option<NonNull<u8>> {
    static ZEROS: OnceLock<Option<Zeros>> = OnceLock::new();
    ZEROS
        .get_or_init(|| {
            // SAFETY: an anonymous read-only mapping with no address hint; checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    ZERO_WINDOW,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            (p != libc::MAP_FAILED)
                .then(|| NonNull::new(p.cast()).map(Zeros))
                .flatten()
        })
        .as_ref()
        .map(|z| z.0)
}

struct NullBackend {
    block_size: usize,
}

impl BdevBackend for NullBackend {
    fn product_name(&self) -> &'static str {
        "Null disk"
    }
    fn supports(&self, _op: IoType) -> bool {
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>> {
        Ok(Box::new(NullChannel {
            zeros: zeros(),
            owner: Lender::cached(()),
            block_size: self.block_size,
        }))
    }
}

struct NullChannel {
    zeros: Option<NonNull<u8>>,
    /// The lent buffers' owner (the window itself lives for the whole process).
    owner: Lender,
    block_size: usize,
}

impl BackendChannel for NullChannel {
    #[inline]
    fn submit(&mut self, mut io: BdevIo, done: &mut Completions) {
        match (io.op, self.zeros) {
            (IoType::Read, Some(z)) if io.lend => {
                let mut left = io.num_blocks as usize * self.block_size;
                while left > 0 {
                    let n = left.min(ZERO_WINDOW);
                    // SAFETY: `z` maps ZERO_WINDOW ≥ n readable bytes for the whole process.
                    let b = unsafe { IoBuf::lent(z, n, self.owner.clone()) };
                    io.bufs.push(b);
                    left -= n;
                }
            }
            (IoType::Read, _) => super::for_each_segment(&mut io, |_, seg| seg.fill(0)),
            _ => {}
        }
        done.complete(io, IoStatus::Success);
    }

    fn lends_reads(&self) -> bool {
        self.zeros.is_some()
    }
}

/// Creates and registers a null bdev of `num_blocks` blocks.
pub fn create(
    name: &str,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<uuid::Uuid>,
) -> Result<Arc<Bdev>> {
    let mut info = BdevInfo::new(name, block_size, num_blocks);
    if let Some(u) = uuid {
        info.uuid = u;
    }
    bdev::register(
        info,
        Box::new(NullBackend {
            block_size: block_size as usize,
        }),
    )
}
