//! Bdev backends: malloc (RAM), null (discard/zeros), uring (file or block device), and the
//! stages over another bdev: crypto, compress, error (fault injection).

pub mod compress;
mod control;
pub mod crypto;
pub mod error;
pub mod lvol;
pub mod malloc;
pub mod mirror;
pub mod null;
pub mod uring;

use std::cell::RefCell;
use std::sync::Mutex;

use crate::bdev::{self, BdevDesc, BdevInfo, BdevIo, IoChannel, IoSink, IoType};
use crate::error::{Error, Result};

/// A stage's base bdev, opened and claimed for the stage's life (crypto, error): the stage
/// asks it what it supports and for a channel on each reactor, and releases it when destroyed.
pub(crate) struct StageBase {
    desc: Mutex<Option<BdevDesc>>,
    name: String,
}

impl StageBase {
    /// Opens `base` and claims it for `by` (e.g. "crypto bdev C0").
    pub(crate) fn claim(base: &str, by: &str) -> Result<StageBase> {
        let mut desc = bdev::open(base, None)?;
        desc.claim(by)?;
        Ok(StageBase {
            desc: Mutex::new(Some(desc)),
            name: base.to_string(),
        })
    }

    /// Info of a stage `name` with the base's geometry (blocks, write cache, I/O boundary).
    pub(crate) fn info(&self, name: &str) -> BdevInfo {
        let d = self.desc.lock().unwrap();
        let b = d.as_ref().expect("claimed until released").bdev();
        let mut info = BdevInfo::new(name, b.block_size(), b.num_blocks());
        info.write_cache = b.info().write_cache;
        info.optimal_io_boundary = b.info().optimal_io_boundary;
        info
    }

    /// Whether the base supports `op` (false once released).
    pub(crate) fn supports(&self, op: IoType) -> bool {
        self.desc
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|d| d.bdev().supports(op))
    }

    /// The base's channel on this reactor.
    pub(crate) fn channel(&self) -> Result<IoChannel> {
        self.desc
            .lock()
            .unwrap()
            .as_ref()
            .ok_or_else(|| Error::Removing(self.name.clone()))?
            .channel()
    }

    /// Drops the claim and the descriptor.
    pub(crate) fn release(&self) {
        self.desc.lock().unwrap().take();
    }
}

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

    /// True if any slot holds an entry.
    pub(crate) fn has_live(&self) -> bool {
        self.items.iter().any(Option::is_some)
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
