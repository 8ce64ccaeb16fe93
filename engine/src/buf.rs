//! Aligned I/O buffers and the per-reactor buffer pool.
//!
//! Buffers come from size classes (4 KiB … 1 MiB, powers of two), 4096-byte aligned (O_DIRECT
//! safe), allocated on first use and recycled through a per-thread free list: after warm-up the
//! data path allocates nothing. Each class is bounded; an exhausted class returns `None` and
//! the caller queues the request until buffers return. An [`IoBuf`] is `!Send`: it goes back to
//! the free list of the reactor that allocated it.

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::rc::Rc;

/// Alignment of every I/O buffer.
pub const BUF_ALIGN: usize = 4096;
const MIN_CLASS_SHIFT: u32 = 12; // 4 KiB
const MAX_CLASS_SHIFT: u32 = 20; // 1 MiB
const NUM_CLASSES: usize = (MAX_CLASS_SHIFT - MIN_CLASS_SHIFT + 1) as usize;
/// Default bound of each size class, in bytes, per reactor.
pub const DEFAULT_CLASS_LIMIT: usize = 32 << 20;

struct Class {
    size: usize,
    free: RefCell<Vec<NonNull<u8>>>,
    allocated: Cell<usize>,
    limit: Cell<usize>,
}

impl Drop for Class {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.size, BUF_ALIGN).unwrap();
        for p in self.free.get_mut().drain(..) {
            // SAFETY: every pointer on the free list came from `alloc` with this layout and is
            // owned by the list (no IoBuf refers to it).
            unsafe { std::alloc::dealloc(p.as_ptr(), layout) };
        }
    }
}

/// Where a buffer goes when it drops. Every variant is at most one thin pointer, so an
/// [`IoBuf`] is 40 bytes and a one-buffer `BdevIo` fits in 128 (moved by value several times
/// per I/O: small enough to be copied inline instead of by a `memcpy` call).
enum Home {
    /// `std::alloc` with `cap` bytes aligned to [`BUF_ALIGN`].
    Heap,
    Pool(Rc<Class>),
    /// A window on memory someone else owns (a bdev lending its blocks for a zero-copy read):
    /// the owner is kept alive until the buffer drops.
    Lent(Lender),
}

/// What keeps lent memory alive (see [`IoBuf::lent`]): a lending channel makes one and clones
/// it (a non-atomic count) into every buffer it lends. A thin pointer, unlike `Rc<dyn Any>`.
#[derive(Clone)]
pub struct Lender(Rc<LenderInner>);

struct LenderInner {
    #[allow(dead_code)]
    owner: Box<dyn std::any::Any>,
    /// The lent memory is large (a RAM namespace): worth prefetching before it is read.
    cold: bool,
}

impl Lender {
    /// A lender keeping `owner` (e.g. the mapping lent from) alive while any lent buffer lives.
    /// Its memory is taken to be out of the CPU's caches (see [`IoBuf::prefetch_lent`]).
    pub fn new(owner: impl std::any::Any) -> Lender {
        Self::with(owner, true)
    }

    /// As [`Lender::new`], for a few KiB lent over and over (the null bdev's zeros): always
    /// cached, never prefetched.
    pub fn cached(owner: impl std::any::Any) -> Lender {
        Self::with(owner, false)
    }

    fn with(owner: impl std::any::Any, cold: bool) -> Lender {
        Lender(Rc::new(LenderInner {
            owner: Box::new(owner),
            cold,
        }))
    }
}

impl Lender {
    /// True if both are the same lender (clones of one).
    pub fn same(&self, other: &Lender) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Lender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lender")
    }
}

/// An owned, 4096-aligned I/O buffer with a length (≤ capacity), or (see [`IoBuf::lent`]) a
/// window on a bdev's own memory lent for a zero-copy read.
pub struct IoBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
    home: Home,
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

impl IoBuf {
    /// A zero-filled buffer from the heap (control paths and tests; not pooled).
    pub fn heap(len: usize) -> IoBuf {
        let cap = len.max(1).next_multiple_of(BUF_ALIGN);
        let layout = Layout::from_size_align(cap, BUF_ALIGN).expect("buffer layout");
        // SAFETY: layout has non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        IoBuf {
            ptr,
            len,
            cap,
            home: Home::Heap,
        }
    }

    /// A heap buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> IoBuf {
        let mut b = IoBuf::heap(data.len());
        b.copy_from_slice(data);
        b
    }

    /// A buffer that is a window on `len` bytes at `ptr`, owned by `owner` (kept alive until
    /// the buffer drops). A bdev lends its memory this way for zero-copy reads: the holder
    /// reads the blocks where they live. Writing through it writes the owner's memory (or
    /// faults: the null bdev lends read-only zeros), so holders only read it. Its alignment
    /// is the owner's (a block, not necessarily 4096 bytes).
    ///
    /// # Safety
    /// `ptr..ptr+len` must be initialised memory that stays mapped while `owner` lives.
    pub unsafe fn lent(ptr: NonNull<u8>, len: usize, owner: Lender) -> IoBuf {
        IoBuf {
            ptr,
            len,
            cap: len,
            home: Home::Lent(owner),
        }
    }

    /// Whether this buffer is lent memory of a bdev (see [`IoBuf::lent`]).
    pub fn is_lent(&self) -> bool {
        matches!(self.home, Home::Lent(_))
    }

    /// What keeps this lent buffer's memory alive (None if it is not lent). A stage passing
    /// a base's window on holds it in the [`Lender`] it lends the window under.
    pub fn lender(&self) -> Option<&Lender> {
        match &self.home {
            Home::Lent(l) => Some(l),
            _ => None,
        }
    }

    /// If this buffer is lent memory that is likely out of the caches (a RAM namespace, not
    /// the null bdev's zeros), starts loading its first `max` bytes: see [`IoBuf::prefetch`].
    #[inline]
    pub fn prefetch_lent(&self, max: usize) {
        if let Home::Lent(l) = &self.home {
            if l.0.cold {
                self.prefetch(max);
            }
        }
    }

    /// Asks the CPU to start loading the first `max` bytes (at most `len`) into its caches,
    /// ahead of a read (a hint: no effect on the contents, no fault on any address).
    #[inline]
    pub fn prefetch(&self, max: usize) {
        #[cfg(target_arch = "x86_64")]
        for off in (0..self.len.min(max)).step_by(64) {
            // SAFETY: prefetch is a hint that never faults or changes memory; `off < len`
            // keeps the address inside this buffer anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    self.ptr.as_ptr().add(off).cast(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = max;
    }

    /// Bytes in use.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes available.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the length in use (must be ≤ capacity). New bytes keep whatever they held.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "IoBuf::set_len beyond capacity");
        self.len = len;
    }

    /// Raw pointer to the start (for I/O submission).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Raw mutable pointer to the start (for I/O submission).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for `cap` ≥ `len` initialised bytes (pool buffers are zeroed on
        // first allocation) and owned by this IoBuf.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in Deref, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        match &self.home {
            // SAFETY: allocated in `heap` with this layout (`cap` never changes), owned by us.
            Home::Heap => unsafe {
                std::alloc::dealloc(
                    self.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(self.cap, BUF_ALIGN),
                )
            },
            Home::Pool(class) => class.free.borrow_mut().push(self.ptr),
            Home::Lent(_) => {}
        }
    }
}

/// A per-thread pool of aligned buffers.
pub struct BufPool {
    classes: Vec<Rc<Class>>,
}

thread_local! {
    static POOL: BufPool = BufPool::new(DEFAULT_CLASS_LIMIT);
}

/// Counters of one size class (for stats and leak checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassStats {
    /// Buffer size of the class.
    pub size: usize,
    /// Buffers ever allocated from the OS.
    pub allocated: usize,
    /// Buffers currently on the free list.
    pub free: usize,
}

impl BufPool {
    fn new(limit: usize) -> Self {
        let classes = (0..NUM_CLASSES)
            .map(|i| {
                Rc::new(Class {
                    size: 1 << (MIN_CLASS_SHIFT + i as u32),
                    free: RefCell::new(Vec::new()),
                    allocated: Cell::new(0),
                    limit: Cell::new(limit),
                })
            })
            .collect();
        Self { classes }
    }

    fn class_for(&self, len: usize) -> Option<&Rc<Class>> {
        let want = len.max(1).next_power_of_two().max(1 << MIN_CLASS_SHIFT);
        let idx = want.trailing_zeros().checked_sub(MIN_CLASS_SHIFT)? as usize;
        self.classes.get(idx)
    }

    fn get(&self, len: usize) -> Option<IoBuf> {
        let class = self.class_for(len)?;
        let ptr = match class.free.borrow_mut().pop() {
            Some(p) => p,
            None => {
                if (class.allocated.get() + 1) * class.size > class.limit.get() {
                    return None;
                }
                let layout = Layout::from_size_align(class.size, BUF_ALIGN).ok()?;
                // SAFETY: layout has non-zero size.
                let p = unsafe { std::alloc::alloc_zeroed(layout) };
                class.allocated.set(class.allocated.get() + 1);
                NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
            }
        };
        Some(IoBuf {
            ptr,
            len,
            cap: class.size,
            home: Home::Pool(class.clone()),
        })
    }
}

/// Takes a buffer of at least `len` bytes (length set to `len`) from this thread's pool.
/// `None` if `len` exceeds 1 MiB or the size class is exhausted: queue and retry later.
pub fn alloc(len: usize) -> Option<IoBuf> {
    POOL.with(|p| p.get(len))
}

/// Sets the per-class byte bound of this thread's pool.
pub fn set_class_limit(bytes: usize) {
    POOL.with(|p| p.classes.iter().for_each(|c| c.limit.set(bytes)));
}

/// Counters of this thread's pool, one entry per size class.
pub fn pool_stats() -> Vec<ClassStats> {
    POOL.with(|p| {
        p.classes
            .iter()
            .map(|c| ClassStats {
                size: c.size,
                allocated: c.allocated.get(),
                free: c.free.borrow().len(),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_buffers_are_aligned_recycled_and_bounded() {
        set_class_limit(4 * 8192);
        let a = alloc(5000).unwrap();
        assert_eq!(a.len(), 5000);
        assert_eq!(a.capacity(), 8192);
        assert_eq!(a.as_ptr() as usize % BUF_ALIGN, 0);
        let p = a.as_ptr();
        drop(a);
        let b = alloc(8192).unwrap();
        assert_eq!(b.as_ptr(), p, "buffer not recycled");
        let more: Vec<_> = (0..3).map(|_| alloc(8000).unwrap()).collect();
        assert!(alloc(8000).is_none(), "class bound not enforced");
        drop(more);
        drop(b);
        let s = pool_stats().into_iter().find(|c| c.size == 8192).unwrap();
        assert_eq!((s.allocated, s.free), (4, 4));
        assert!(alloc((1 << 20) + 1).is_none());
        set_class_limit(DEFAULT_CLASS_LIMIT);
    }

    #[test]
    fn heap_buffers() {
        let mut h = IoBuf::from_slice(b"abc");
        assert_eq!(&h[..], b"abc");
        h.set_len(4096);
        assert_eq!(h[3], 0);
        assert_eq!(h.as_ptr() as usize % BUF_ALIGN, 0);
    }
}
