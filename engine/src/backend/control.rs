//! Control-path I/O of the stages: metadata reads and writes issued from a control thread
//! (create, open, rebuild) on the main reactor, waited for with a timeout.
//!
//! ```text
//!  control thread ── ios ──► main reactor: one channel per descriptor, every I/O submitted
//!        ▲                                   │
//!        └──── (index, data | status) ◄──────┘ completions, in any order
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use ballast_reactor::RuntimeHandle;

use crate::bdev::{BdevDesc, BdevIo, IoCallback, IoStatus, IoType, SgList};
use crate::buf::IoBuf;

/// A base descriptor a stage shares with its control path (`None` once released).
pub(crate) type SharedDesc = Arc<Mutex<Option<BdevDesc>>>;

/// One control-path I/O: which descriptor, operation, byte offset and length, data to write.
pub(crate) struct CtlIo {
    pub(crate) child: usize,
    pub(crate) op: IoType,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) data: Vec<u8>,
}

/// Why a batch did not run to the end.
pub(crate) enum CtlFail {
    /// The main reactor did not take it.
    Reactor(String),
    /// An answer did not come within the timeout.
    Timeout,
}

/// Each I/O's data read (empty for other operations), or its failure status.
pub(crate) type CtlResults = Vec<std::result::Result<Vec<u8>, IoStatus>>;

/// Runs `ios` on the main reactor at once and waits for all of them, each up to `timeout`.
pub(crate) fn control_io(
    rt: &RuntimeHandle,
    descs: &[SharedDesc],
    ios: Vec<CtlIo>,
    timeout: Duration,
) -> std::result::Result<CtlResults, CtlFail> {
    let n = ios.len();
    let (tx, rx) = mpsc::sync_channel(n.max(1));
    let descs: Vec<_> = descs.to_vec();
    rt.send_retry(rt.main_core(), move || {
        // One channel per descriptor for the whole batch (a remote child connects a queue
        // for each channel it opens).
        let mut chans: Vec<Option<Option<crate::bdev::IoChannel>>> = vec![None; descs.len()];
        for (k, io) in ios.into_iter().enumerate() {
            let tx = tx.clone();
            let slot = chans[io.child].get_or_insert_with(|| {
                let d = descs[io.child].lock().unwrap();
                let d = d.as_ref()?;
                BdevDesc::channel(d)
                    .map_err(|e| {
                        tracing::warn!(bdev = %d.bdev().name(),
                            "control I/O: no channel to the bdev: {e}");
                    })
                    .ok()
            });
            let ch = match slot {
                Some(ch) => ch.clone(),
                None => {
                    let _ = tx.send((k, Err(IoStatus::Removed)));
                    continue;
                }
            };
            let bs = ch.bdev().block_size() as u64;
            let mut sg = SgList::new();
            match io.op {
                IoType::Write => sg.push(IoBuf::from_slice(&io.data)),
                IoType::Read => sg.push(IoBuf::heap(io.len as usize)),
                _ => {}
            }
            let cb = IoCallback::Fn(Box::new(move |done: BdevIo| {
                let r = match done.status {
                    IoStatus::Success => {
                        Ok(done.bufs.first().map(|b| b.to_vec()).unwrap_or_default())
                    }
                    st => Err(st),
                };
                let _ = tx.send((k, r));
            }));
            ch.submit(BdevIo::new(io.op, io.offset / bs, io.len / bs, sg, 0, cb));
        }
    })
    .map_err(|e| CtlFail::Reactor(e.to_string()))?;
    let mut out: Vec<Option<std::result::Result<Vec<u8>, IoStatus>>> = vec![None; n];
    for _ in 0..n {
        let (k, r) = rx.recv_timeout(timeout).map_err(|_| CtlFail::Timeout)?;
        out[k] = Some(r);
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every I/O answered"))
        .collect())
}

thread_local! {
    /// Channels held open on the main reactor by live [`Hold`]s, by hold.
    static HELD: RefCell<HashMap<u64, Vec<crate::bdev::IoChannel>>> = RefCell::default();
}

static NEXT_HOLD: AtomicU64 = AtomicU64::new(1);

/// Keeps the main reactor's channels to some descriptors open while it lives, so a run of
/// [`control_io`] batches (a rebuild's windows) reuses them instead of opening new ones each
/// time — for a remote bdev, a new connection and queue per batch.
pub(crate) struct Hold {
    rt: RuntimeHandle,
    id: u64,
}

/// Holds the main reactor's channels to `descs` (those that open) until the [`Hold`] drops.
pub(crate) fn hold(rt: &RuntimeHandle, descs: &[SharedDesc]) -> Hold {
    let id = NEXT_HOLD.fetch_add(1, Ordering::Relaxed);
    // The bdevs, not the descriptors: a claim must go when its descriptor drops.
    let bdevs: Vec<_> = descs
        .iter()
        .filter_map(|d| d.lock().unwrap().as_ref().map(|d| d.bdev().clone()))
        .collect();
    let _ = rt.send_retry(rt.main_core(), move || {
        let chans: Vec<_> = bdevs
            .iter()
            .filter_map(|b| crate::bdev::channel_for(b).ok())
            .collect();
        HELD.with(|h| h.borrow_mut().insert(id, chans));
    });
    Hold { rt: rt.clone(), id }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let id = self.id;
        let _ = self.rt.send_retry(self.rt.main_core(), move || {
            HELD.with(|h| h.borrow_mut().remove(&id));
        });
    }
}
