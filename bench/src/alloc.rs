//! A global allocator wrapper that counts allocations per thread, to check that a data path
//! allocates nothing per I/O. A bench opts in with
//! `#[global_allocator] static A: ballast_bench::alloc::Counting = ballast_bench::alloc::Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting `alloc`/`realloc` calls of each thread.
pub struct Counting;

#[inline]
fn count() {
    // `try_with`: no panic while the thread-local is being torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call unchanged to `System`, which upholds the GlobalAlloc contract;
// the counter is a const-initialised thread-local Cell that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours (non-zero-size layout), forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from System, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from System with `layout`; the caller upholds new_size's rules.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

impl Counting {
    /// Records that this allocator is the global one (call once from `main`/bench set-up).
    pub fn mark_installed(&self) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

/// Allocations made so far by the calling thread, or `None` if [`Counting`] is not installed.
pub fn thread_allocs() -> Option<u64> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| ALLOCS.try_with(Cell::get).unwrap_or(0))
}
