//! Bdev backends: malloc (RAM), null (discard/zeros), uring (file or block device).

pub mod crypto;
pub mod malloc;
pub mod null;
pub mod uring;

use crate::bdev::BdevIo;

/// Calls `f(offset_in_io, segment)` for each buffer of `io` in order.
pub(crate) fn for_each_segment(io: &mut BdevIo, mut f: impl FnMut(usize, &mut [u8])) {
    let mut off = 0;
    for b in io.bufs.iter_mut() {
        let len = b.len();
        f(off, &mut b[..]);
        off += len;
    }
}
