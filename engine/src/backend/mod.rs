//! Bdev backends: malloc (RAM), null (discard/zeros), uring (file or block device).

pub mod compress;
pub mod crypto;
pub mod malloc;
pub mod null;
pub mod uring;

use std::cell::RefCell;

use crate::bdev::{BdevIo, IoSink};

/// Collects a stage's base completions (delivered on this reactor by the base channel's
/// poller) for the stage's own poll to process.
#[derive(Default)]
pub(crate) struct Collect(pub(crate) RefCell<Vec<BdevIo>>);

impl IoSink for Collect {
    fn io_done(&self, io: BdevIo) {
        self.0.borrow_mut().push(io);
    }
}

/// Calls `f(offset_in_io, segment)` for each buffer of `io` in order.
pub(crate) fn for_each_segment(io: &mut BdevIo, mut f: impl FnMut(usize, &mut [u8])) {
    let mut off = 0;
    for b in io.bufs.iter_mut() {
        let len = b.len();
        f(off, &mut b[..]);
        off += len;
    }
}
