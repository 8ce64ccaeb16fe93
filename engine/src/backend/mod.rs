//! Bdev backends: malloc (RAM), null (discard/zeros), uring (file or block device), and the
//! stages over another bdev: crypto, compress, error (fault injection).

pub mod compress;
pub mod crypto;
pub mod error;
pub mod malloc;
pub mod mirror;
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

/// In-flight entries of a stage's channel, named by small integers (an I/O's tag): freed slots
/// are reused, so nothing is allocated per I/O once warm.
pub(crate) struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    /// Stores `v`; returns its slot.
    pub(crate) fn insert(&mut self, v: T) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.items[i] = Some(v);
                i
            }
            None => {
                self.items.push(Some(v));
                self.items.len() - 1
            }
        }
    }

    /// Removes and frees slot `i` (`None` if it is empty).
    pub(crate) fn remove(&mut self, i: usize) -> Option<T> {
        let v = self.items.get_mut(i)?.take()?;
        self.free.push(i);
        Some(v)
    }

    /// Takes the entry out of live slot `i` without freeing the slot (give it back with
    /// [`Slab::put`]).
    pub(crate) fn take(&mut self, i: usize) -> T {
        self.items[i].take().expect("live slab slot")
    }

    /// Puts an entry taken with [`Slab::take`] back.
    pub(crate) fn put(&mut self, i: usize, v: T) {
        self.items[i] = Some(v);
    }

    /// Slots ever used (live or free): iterate `0..capacity()` with [`Slab::get`].
    pub(crate) fn capacity(&self) -> usize {
        self.items.len()
    }

    /// The entry in slot `i`, if any.
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)?.as_ref()
    }

    /// The entry in live slot `i`.
    pub(crate) fn live(&mut self, i: usize) -> &mut T {
        self.items[i].as_mut().expect("live slab slot")
    }
}
