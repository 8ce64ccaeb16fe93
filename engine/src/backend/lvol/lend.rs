//! Zero-copy reads through an lvol: a read of one allocated cluster is passed to the base
//! with [`BdevIo::lend`](crate::bdev::BdevIo::lend) and the base's window on its memory
//! (malloc's RAM) goes back to the caller (the NVMe/TCP target, which sends it to the socket).
//!
//! The hazard is reuse: a window stays in use until the socket has sent it, and a cluster
//! freed meanwhile (lvol deleted, shrunk, a snapshot merged) is cleared and may be handed to
//! another lvol — the window would then show zeros or another volume's data. So every window
//! an lvol lends is counted, by epoch, and a store frees nothing until the windows lent before
//! the free are all returned (an RCU-style grace period):
//!
//! ```text
//!  channel: lent read ─► window re-lent under the channel's epoch lender
//!           (one Lender per channel per epoch: its token counts +1 in live[epoch & 1],
//!            -1 when the lender's last window drops; no allocation per read)
//!  free:    drain(): epoch += 1 ─► each reactor drops its channels' old lenders
//!           ─► wait until live[old & 1] == 0 (bounded: a host that stops reading its socket
//!              makes the delete fail with Busy, never frees under a window)
//!           ─► clear the clusters, record the free
//! ```
//!
//! Windows of zeros (unallocated clusters) come from the process's read-only zero mapping
//! (the null bdev's); they need no counting.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ballast_reactor::RuntimeHandle;
use std::time::{Duration, Instant};

use crate::buf::{IoBuf, Lender};
use crate::error::{Error, Result};

/// Windows lent by a store's lvols, per epoch (two live epochs at most).
#[derive(Default)]
pub(crate) struct LendCounts {
    epoch: AtomicU64,
    /// Channel lenders alive per epoch parity (each counts until its last window drops).
    live: [AtomicU64; 2],
    /// The reactors (of whichever runtime) where the store's lvol channels lend.
    reactors: Mutex<Vec<(RuntimeHandle, usize)>>,
}

/// Owner of a channel's epoch lender: keeps the base's memory mapped and counts in its epoch.
struct Token {
    counts: Arc<LendCounts>,
    slot: usize,
    _base: Lender,
}

impl Drop for Token {
    fn drop(&mut self) {
        self.counts.live[self.slot].fetch_sub(1, Ordering::AcqRel);
    }
}

/// A channel's current lender: its epoch, the base lender it holds and the lender itself
/// (None until its first lent read of an epoch).
type Cell = RefCell<Option<(u64, Lender, Lender)>>;

thread_local! {
    /// The lend cells of the lvol channels on this reactor (see [`drop_old`]).
    static CELLS: RefCell<Vec<Weak<Cell>>> = const { RefCell::new(Vec::new()) };
}

/// The lending side of an lvol channel (lives on its reactor).
pub(crate) struct ChannelLend {
    counts: Arc<LendCounts>,
    cell: Rc<Cell>,
    /// The process's read-only window of zeros (the null bdev's), lent for reads of
    /// unallocated clusters; it keeps nothing alive.
    zeros: Option<(Lender, NonNull<u8>)>,
}

impl ChannelLend {
    /// On the channel's reactor.
    pub(crate) fn new(counts: Arc<LendCounts>) -> ChannelLend {
        let cell: Rc<Cell> = Rc::default();
        CELLS.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|w| w.strong_count() > 0);
            c.push(Rc::downgrade(&cell));
        });
        if let (Some(rt), Some(core)) = (ballast_reactor::handle(), ballast_reactor::current_core())
        {
            let mut r = counts.reactors.lock().unwrap();
            if !r.iter().any(|(h, c)| *c == core && h.same(&rt)) {
                r.push((rt, core));
            }
        }
        ChannelLend {
            counts,
            cell,
            zeros: crate::backend::null::zeros().map(|z| (Lender::cached(()), z)),
        }
    }

    /// `b` (a base's lent window) re-lent under this channel's lender of the current epoch;
    /// a buffer that is not lent is returned as it is.
    pub(crate) fn wrap(&self, b: IoBuf) -> IoBuf {
        let Some(base) = b.lender() else { return b };
        let e = self.counts.epoch.load(Ordering::Acquire);
        let mut cell = self.cell.borrow_mut();
        let current = matches!(&*cell, Some((ce, bl, _)) if *ce == e && bl.same(base));
        if !current {
            let slot = (e & 1) as usize;
            self.counts.live[slot].fetch_add(1, Ordering::AcqRel);
            let token = Token {
                counts: self.counts.clone(),
                slot,
                _base: base.clone(),
            };
            *cell = Some((e, base.clone(), Lender::new(token)));
        }
        let l = cell.as_ref().expect("set above").2.clone();
        let ptr = NonNull::new(b.as_ptr().cast_mut()).expect("lent window");
        // SAFETY: `ptr..ptr+len` is the base's lent window, initialised memory that stays
        // mapped while the base's lender lives (IoBuf::lent's contract for `b`); the new
        // buffer's lender holds that lender (Token::_base) until the new buffer and all its
        // siblings drop.
        unsafe { IoBuf::lent(ptr, b.len(), l) }
    }

    /// A window of `len` zeros (a heap buffer beyond the zero window, or without one).
    pub(crate) fn zeros(&self, len: usize) -> IoBuf {
        match &self.zeros {
            Some((l, ptr)) if len <= crate::backend::null::ZERO_WINDOW => {
                // SAFETY: `ptr` maps ZERO_WINDOW >= len readable bytes of zeros for the whole
                // process (read-only, never unmapped).
                unsafe { IoBuf::lent(*ptr, len, l.clone()) }
            }
            _ => IoBuf::heap(len),
        }
    }
}

/// On a reactor: drops every lvol channel's epoch lender there (each takes a new one at its
/// next lent read), so only windows still out keep an old epoch alive.
fn drop_old() {
    CELLS.with(|c| {
        for w in c.borrow().iter() {
            if let Some(cell) = w.upgrade() {
                match cell.try_borrow_mut() {
                    Ok(mut g) => *g = None,
                    // Not reachable (a channel borrows its cell only inside `wrap`): the
                    // drain would wait for this lender until its timeout.
                    Err(_) => tracing::warn!("lvol lent reads: a channel's lender is in use"),
                }
            }
        }
    });
}

/// Waits until every window `s`'s lvols lent so far is returned (call before clusters are
/// cleared or freed). Busy if they are not back within `timeout`.
pub(crate) fn drain(counts: &LendCounts, timeout: Duration) -> Result<()> {
    if counts.live.iter().all(|n| n.load(Ordering::Acquire) == 0) {
        // No channel holds a lender: nothing is out (a read being looked up is covered by
        // the freeze of the lvols the caller changes).
        return Ok(());
    }
    let t0 = Instant::now();
    // Windows left over from an earlier drain that timed out are in the other slot (nothing
    // new goes there until the flip): they go first.
    let e = counts.epoch.load(Ordering::Acquire);
    wait_zero(&counts.live[((e + 1) & 1) as usize], t0, timeout)?;
    let old = counts.epoch.fetch_add(1, Ordering::AcqRel);
    let reactors = counts.reactors.lock().unwrap().clone();
    for (rt, core) in reactors {
        // A runtime that has stopped has dropped its channels (and their lenders).
        if let Err(e) = rt.call(core, drop_old) {
            tracing::debug!(core, "lvol lent reads: reactor gone: {e}");
        }
    }
    // A timeout here leaves them for the next drain's first wait.
    wait_zero(&counts.live[(old & 1) as usize], t0, timeout)
}

fn wait_zero(n: &AtomicU64, t0: Instant, timeout: Duration) -> Result<()> {
    let mut nap = Duration::from_micros(5);
    while n.load(Ordering::Acquire) > 0 {
        if t0.elapsed() > timeout {
            return Err(Error::Busy(
                "read data lent to a host is not sent yet (a host not reading its socket?)".into(),
            ));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(1));
    }
    Ok(())
}
