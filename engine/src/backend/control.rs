//! Control-path I/O of the stages: metadata reads and writes issued from a control thread
//! (create, open, rebuild) on the main reactor, waited for with a timeout.
//!
//! ```text
//!  control thread ── ios ──► main reactor: one channel per descriptor, every I/O submitted
//!        ▲                                   │
//!        └──── (index, data | status) ◄──────┘ completions, in any order
//! ```

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
                descs[io.child]
                    .lock()
                    .unwrap()
                    .as_ref()
                    .and_then(|d| BdevDesc::channel(d).ok())
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
