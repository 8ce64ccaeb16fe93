//! Remote NVMe-oF/TCP namespaces as bdevs (SPDK's `bdev_nvme_attach_controller`): pipelines
//! and replication can stack on a namespace of another node as on a local disk.
//!
//! ```text
//!  attach ─► Session (admin queue; keep-alive thread: reconnects with backoff; after
//!            ctrlr_loss_timeout I/O fails, and reconnecting goes on)   │ generation
//!  bdev "<name>n<nsid>" ─ per-reactor channel ─► IoQpair (own I/O queue, polled on that
//!            reactor; on failure I/O waits and is retried on a new queue; once the controller
//!            is given up, I/O fails with ENXIO)
//! ```
//!
//! A channel connects its I/O queue when first created (a blocking connect on that reactor:
//! control path, one round trip on a LAN). Queue IDs come from the controller's grant; more
//! channels than granted queues fail to open with a clear error.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_engine::bdev::{self, BackendChannel, BdevBackend, BdevInfo, BdevIo, Completions};
use ballast_engine::{Bdev, IoBuf, IoStatus, IoType};

use crate::host::{HostCompletion, HostOp, HostOpts, IoQpair, Session};
use crate::spec::Status;

/// How to attach a remote controller.
#[derive(Debug, Clone)]
pub struct AttachOpts {
    /// Controller name; bdevs are named `<name>n<nsid>`.
    pub name: String,
    /// Target address.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host options (NQN, digests, queue size, KATO).
    pub host: HostOpts,
    /// Give the controller up after this long without a connection.
    pub ctrlr_loss_timeout: Duration,
    /// Wait between reconnect attempts.
    pub reconnect_delay: Duration,
    /// I/O queues to ask for (one per reactor that uses the bdevs).
    pub io_queues: u16,
}

/// Public facts of an attached controller.
#[derive(Debug, Clone)]
pub struct RemoteInfo {
    /// Controller name.
    pub name: String,
    /// Options it was attached with.
    pub opts: AttachOpts,
    /// Its bdevs.
    pub bdevs: Vec<String>,
    /// Connected now?
    pub connected: bool,
    /// Given up after the controller-loss timeout?
    pub failed: bool,
    /// Reconnections so far.
    pub reconnects: u64,
}

struct Ctrl {
    opts: AttachOpts,
    session: Mutex<Option<Session>>,
    /// Bumps on every new admin connection; channels reconnect their queue when it changes.
    gen: AtomicU64,
    next_qid: AtomicU16,
    /// I/O queue IDs whose channel closed, with the connection generation they belong to and
    /// when they were freed: reused (a short while later, once the target has seen the old
    /// connection go) so channels that come and go do not use the grant up.
    free_qids: Mutex<Vec<(u16, u64, Instant)>>,
    granted: AtomicU16,
    failed: AtomicBool,
    /// The admin queue is lost (the association is being re-established): I/O queues of the
    /// old association are given up, their commands retried on the new ones.
    lost: AtomicBool,
    stop: AtomicBool,
    bdevs: Mutex<Vec<String>>,
    /// The controller's maximum transfer size in bytes.
    max_xfer: AtomicU64,
}

fn s_max_xfer(c: &Ctrl) -> usize {
    c.max_xfer.load(Ordering::Acquire).max(4096) as usize
}

static CTRLS: Mutex<BTreeMap<String, Arc<Ctrl>>> = Mutex::new(BTreeMap::new());

/// Errors of attach/detach, as plain messages with the RPC code to use.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The name is taken.
    #[error("controller {0} already exists")]
    Exists(String),
    /// No such controller.
    #[error("controller {0} not found")]
    NotFound(String),
    /// Connecting failed.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// Registering a bdev failed.
    #[error(transparent)]
    Bdev(#[from] ballast_engine::Error),
}

/// Connects to the controller, registers a bdev per active namespace and starts the
/// keep-alive/reconnect thread. Returns the bdev names.
pub fn attach(opts: AttachOpts) -> Result<Vec<String>, RemoteError> {
    ballast_engine::bdev::validate_name(&opts.name)?;
    if CTRLS.lock().unwrap().contains_key(&opts.name) {
        return Err(RemoteError::Exists(opts.name));
    }
    let mut s = Session::connect(opts.addr, &opts.subnqn, opts.io_queues.max(1), &opts.host)?;
    let granted = s.io_queues;
    // Namespaces 1..=32 that are active (Identify Namespace succeeds).
    let mut nss = Vec::new();
    for nsid in 1..=32u32 {
        if let Ok(ns) = s.namespace(nsid) {
            nss.push(ns);
        }
    }
    let ctrl = Arc::new(Ctrl {
        opts: opts.clone(),
        session: Mutex::new(Some(s)),
        gen: AtomicU64::new(1),
        next_qid: AtomicU16::new(1),
        free_qids: Mutex::new(Vec::new()),
        granted: AtomicU16::new(granted),
        failed: AtomicBool::new(false),
        lost: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        bdevs: Mutex::new(Vec::new()),
        max_xfer: AtomicU64::new(128 * 1024),
    });
    {
        let mut m = CTRLS.lock().unwrap();
        if m.contains_key(&opts.name) {
            return Err(RemoteError::Exists(opts.name));
        }
        m.insert(opts.name.clone(), ctrl.clone());
    }
    let mut names = Vec::new();
    for ns in nss {
        let name = format!("{}n{}", opts.name, ns.nsid);
        let info = BdevInfo::new(&name, ns.block_size, ns.blocks);
        match bdev::register(
            info,
            Box::new(RemoteBackend {
                ctrl: ctrl.clone(),
                nsid: ns.nsid,
            }),
        ) {
            Ok(b) => names.push(b.name().to_string()),
            Err(e) => {
                for n in &names {
                    let _ = bdev::delete(n);
                }
                CTRLS.lock().unwrap().remove(&opts.name);
                return Err(e.into());
            }
        }
    }
    *ctrl.bdevs.lock().unwrap() = names.clone();
    let c = ctrl.clone();
    std::thread::Builder::new()
        .name("nvme-keepalive".into())
        .spawn(move || keepalive(c))
        .map_err(|e| crate::host::HostError::Io {
            addr: opts.addr,
            op: "spawning the keep-alive thread",
            source: e,
        })?;
    tracing::info!(name = %opts.name, addr = %opts.addr, subnqn = %opts.subnqn,
        bdevs = ?names, "remote controller attached");
    Ok(names)
}

/// Deletes the controller's bdevs (refused while one is claimed) and disconnects.
pub fn detach(name: &str) -> Result<(), RemoteError> {
    let ctrl = CTRLS
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .ok_or_else(|| RemoteError::NotFound(name.into()))?;
    let bdevs = ctrl.bdevs.lock().unwrap().clone();
    for b in &bdevs {
        if let Some(by) = bdev::lookup(b).and_then(|x| x.claimed_by()) {
            return Err(ballast_engine::Error::Claimed {
                bdev: b.clone(),
                by,
            }
            .into());
        }
    }
    for b in &bdevs {
        let _ = bdev::delete(b);
    }
    ctrl.stop.store(true, Ordering::Release);
    CTRLS.lock().unwrap().remove(name);
    tracing::info!(name, "remote controller detached");
    Ok(())
}

/// Every attached controller, by name.
pub fn list() -> Vec<RemoteInfo> {
    CTRLS
        .lock()
        .unwrap()
        .iter()
        .map(|(n, c)| RemoteInfo {
            name: n.clone(),
            opts: c.opts.clone(),
            bdevs: c.bdevs.lock().unwrap().clone(),
            connected: c.session.lock().unwrap().is_some(),
            failed: c.failed.load(Ordering::Acquire),
            reconnects: c.gen.load(Ordering::Acquire) - 1,
        })
        .collect()
}

/// Keep-alive and admin reconnect loop of one controller.
fn keepalive(c: Arc<Ctrl>) {
    let o = &c.opts;
    let period = Duration::from_millis((o.host.kato_ms as u64 / 3).clamp(200, 5000));
    let mut lost_since: Option<Instant> = None;
    while !c.stop.load(Ordering::Acquire) {
        std::thread::sleep(if lost_since.is_some() {
            o.reconnect_delay
        } else {
            period
        });
        // Given up (I/O fails) but still tried: a replica node that comes back is found, and
        // a mirror over it sees `reconnects` move and re-adds it.
        let given_up = c.failed.load(Ordering::Acquire);
        let mut s = c.session.lock().unwrap();
        match s.as_mut() {
            Some(sess) => {
                if let Err(e) = sess.keep_alive() {
                    tracing::warn!(name = %o.name, "admin queue lost: {e}; reconnecting");
                    *s = None;
                    c.lost.store(true, Ordering::Release);
                    lost_since = Some(Instant::now());
                }
            }
            None => match Session::connect(o.addr, &o.subnqn, o.io_queues.max(1), &o.host) {
                Ok(sess) => {
                    c.granted.store(sess.io_queues, Ordering::Release);
                    c.next_qid.store(1, Ordering::Release);
                    c.free_qids.lock().unwrap().clear();
                    *s = Some(sess);
                    c.gen.fetch_add(1, Ordering::AcqRel);
                    c.lost.store(false, Ordering::Release);
                    c.failed.store(false, Ordering::Release);
                    lost_since = None;
                    if given_up {
                        tracing::warn!(name = %o.name,
                            "controller is back after its ctrlr_loss_timeout: I/O resumes");
                    } else {
                        tracing::info!(name = %o.name, "controller reconnected");
                    }
                }
                Err(e) => {
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if given_up {
                        tracing::debug!(name = %o.name, "reconnect after giving up failed: {e}");
                    } else if since.elapsed() >= o.ctrlr_loss_timeout {
                        c.failed.store(true, Ordering::Release);
                        tracing::error!(name = %o.name,
                            "controller lost for {:?} (ctrlr_loss_timeout): I/O fails until it is back: {e}",
                            since.elapsed());
                    } else {
                        tracing::debug!(name = %o.name, "reconnect failed: {e}");
                    }
                }
            },
        }
    }
}

struct RemoteBackend {
    ctrl: Arc<Ctrl>,
    nsid: u32,
}

impl BdevBackend for RemoteBackend {
    fn product_name(&self) -> &'static str {
        "NVMe disk"
    }
    fn supports(&self, op: IoType) -> bool {
        matches!(
            op,
            IoType::Read | IoType::Write | IoType::Flush | IoType::WriteZeroes | IoType::Unmap
        )
    }
    fn create_channel(&self) -> ballast_engine::Result<Box<dyn BackendChannel>> {
        let mut ch = RemoteChannel {
            ctrl: self.ctrl.clone(),
            nsid: self.nsid,
            qp: None,
            qid: 0,
            gen: 0,
            fd: None,
            slots: Vec::new(),
            pending: VecDeque::new(),
            comps: Vec::new(),
            retry_at: Instant::now(),
            max_xfer: 128 * 1024,
            room: None,
        };
        ch.connect()
            .map_err(|why| ballast_engine::Error::InvalidParam {
                param: "channel",
                why,
            })?;
        Ok(Box::new(ch))
    }
    fn describe(&self) -> Vec<(String, String)> {
        let o = &self.ctrl.opts;
        vec![
            ("trtype".into(), "TCP".into()),
            ("traddr".into(), o.addr.ip().to_string()),
            ("trsvcid".into(), o.addr.port().to_string()),
            ("subnqn".into(), o.subnqn.clone()),
            ("nsid".into(), self.nsid.to_string()),
        ]
    }
    fn reconnects(&self) -> u64 {
        self.ctrl.gen.load(Ordering::Acquire) - 1
    }
    fn transport_lost(&self) -> Option<bool> {
        Some(self.ctrl.failed.load(Ordering::Acquire))
    }
}

/// How long a closed channel's queue ID rests before another channel takes it.
const QID_REUSE_AFTER: Duration = Duration::from_millis(0);
/// How often connecting a reused queue ID is tried again (2 ms apart) while the target still
/// holds the old connection's queue (reuse only happens once the grant is used up).
const QID_REUSE_TRIES: u32 = 25;

/// Most I/O a channel parks while its queue is down or full.
const MAX_PENDING: usize = 4096;

/// One bdev I/O in flight: sent directly (one command carrying its single buffer), or in
/// parts (several commands of at most the controller's transfer size, with bounce buffers).
struct Slot {
    io: BdevIo,
    direct: bool,
    parts: u32,
    status: IoStatus,
}

/// Bits of a command tag that hold the slot; the rest is the part's byte offset.
const SLOT_BITS: u32 = 16;

struct RemoteChannel {
    ctrl: Arc<Ctrl>,
    nsid: u32,
    qp: Option<IoQpair>,
    /// The queue ID `qp` holds (0: none).
    qid: u16,
    gen: u64,
    fd: Option<RawFd>,
    slots: Vec<Option<Slot>>,
    pending: VecDeque<BdevIo>,
    comps: Vec<HostCompletion>,
    retry_at: Instant,
    /// Largest transfer per command (the controller's MDTS; 128 KiB if it has none).
    max_xfer: usize,
    /// Commands or data waiting for room in the socket wake the reactor (see
    /// [`ballast_reactor::SendRoom`]); one per connected queue.
    room: Option<ballast_reactor::SendRoom>,
}

impl RemoteChannel {
    fn connect(&mut self) -> Result<(), String> {
        self.release_qid();
        let c = self.ctrl.clone();
        let not_connected = || format!("controller {} is not connected", c.opts.name);
        if c.session.lock().unwrap().is_none() {
            return Err(not_connected());
        }
        let gen = c.gen.load(Ordering::Acquire);
        // A new queue ID while the grant lasts; then one a closed channel left.
        let fresh = {
            let q = c.next_qid.fetch_add(1, Ordering::AcqRel);
            if q > c.granted.load(Ordering::Acquire) {
                c.next_qid.fetch_sub(1, Ordering::AcqRel);
                None
            } else {
                Some(q)
            }
        };
        let reused = match fresh {
            Some(_) => None,
            None => {
                let mut free = c.free_qids.lock().unwrap();
                free.retain(|&(_, g, _)| g == gen);
                let ready = free
                    .iter()
                    .position(|&(_, _, at)| at.elapsed() >= QID_REUSE_AFTER);
                ready.map(|i| free.swap_remove(i).0)
            }
        };
        let Some(qid) = fresh.or(reused) else {
            return Err(format!(
                "controller {}: no I/O queue left ({} granted; attach with more io_queues)",
                c.opts.name,
                c.granted.load(Ordering::Acquire)
            ));
        };
        // A reused ID may still be held by the old connection until the target sees it
        // close (a few ms): tried again for a short while, the session lock let go between.
        let mut tries = 0;
        let conn = loop {
            let r = {
                let sess = c.session.lock().unwrap();
                let Some(s) = sess.as_ref() else {
                    c.free_qids.lock().unwrap().push((qid, gen, Instant::now()));
                    return Err(not_connected());
                };
                s.io_queue(qid).inspect(|_| {
                    c.max_xfer.store(
                        if s.ctrl.max_xfer == 0 {
                            1 << 20
                        } else {
                            s.ctrl.max_xfer as u64
                        },
                        Ordering::Release,
                    );
                })
            };
            match r {
                Ok(conn) => break conn,
                Err(e) if reused.is_some() && tries < QID_REUSE_TRIES => {
                    tries += 1;
                    tracing::debug!(name = %c.opts.name, qid, "queue ID still in use: {e}");
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    // Not connected: the ID stays free for the next try.
                    c.free_qids.lock().unwrap().push((qid, gen, Instant::now()));
                    return Err(e.to_string());
                }
            }
        };
        let mx = s_max_xfer(&self.ctrl);
        let qp = IoQpair::new(conn);
        self.max_xfer = mx;
        if let Some(fd) = self.fd.take() {
            ballast_reactor::remove_wake_fd(fd);
        }
        let fd = qp.fd();
        let _ = ballast_reactor::add_wake_fd(fd);
        self.fd = Some(fd);
        self.room = Some(ballast_reactor::SendRoom::new(fd));
        self.slots.resize_with(qp.depth(), || None);
        self.qp = Some(qp);
        self.qid = qid;
        self.gen = gen;
        Ok(())
    }

    /// Gives this channel's queue ID back (its connection is closed or being replaced).
    fn release_qid(&mut self) {
        if self.qid != 0 {
            self.ctrl
                .free_qids
                .lock()
                .unwrap()
                .push((self.qid, self.gen, Instant::now()));
            self.qid = 0;
        }
    }

    /// Starts `io` on the queue, or hands it back if the queue is down or full.
    #[allow(clippy::result_large_err)] // moves the I/O back by value: no allocation
    fn start(&mut self, mut io: BdevIo) -> Result<(), BdevIo> {
        let Some(qp) = self.qp.as_mut().filter(|q| q.failure().is_none()) else {
            return Err(io);
        };
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            return Err(io);
        };
        let total: usize = io.bufs.iter().map(|b| b.len()).sum();
        let data_op = matches!(io.op, IoType::Read | IoType::Write);
        let max = self.max_xfer;
        let direct = !data_op || (io.bufs.len() == 1 && total <= max);
        let parts = if direct { 1 } else { total.div_ceil(max) };
        if qp.free_slots() < parts {
            return Err(io);
        }
        let nsid = self.nsid;
        let hop = match io.op {
            IoType::Read => HostOp::Read,
            IoType::Write => HostOp::Write,
            IoType::Flush => HostOp::Flush,
            IoType::Unmap => HostOp::Deallocate,
            _ => HostOp::WriteZeroes,
        };
        let tag = |off: usize| slot as u64 | (off as u64) << SLOT_BITS;
        if direct {
            let buf = if data_op { io.bufs.pop() } else { None };
            let nlb = io.num_blocks.min(u32::MAX as u64) as u32;
            if let Err(b) = qp.submit(hop, nsid, io.offset_blocks, nlb, buf, tag(0)) {
                if let Some(b) = b {
                    io.bufs.push(b);
                }
                return Err(io);
            }
        } else {
            let bs = total as u64 / io.num_blocks.max(1);
            let mut off = 0usize;
            while off < total {
                let n = (total - off).min(max);
                let mut b = ballast_engine::buf::alloc(n).unwrap_or_else(|| IoBuf::heap(n));
                if io.op == IoType::Write {
                    copy_out(&io.bufs, off, &mut b[..n]);
                }
                let lba = io.offset_blocks + off as u64 / bs;
                let nlb = (n as u64 / bs) as u32;
                // Slots were counted above: this cannot be refused.
                let _ = qp.submit(hop, nsid, lba, nlb, Some(b), tag(off));
                off += n;
            }
        }
        self.slots[slot] = Some(Slot {
            io,
            direct,
            parts: parts as u32,
            status: IoStatus::Success,
        });
        Ok(())
    }

    fn finish(&mut self, c: HostCompletion, done: &mut Completions) -> bool {
        let slot = (c.tag & ((1 << SLOT_BITS) - 1)) as usize;
        let off = (c.tag >> SLOT_BITS) as usize;
        let retry = c.status == Status::TRANSIENT_TRANSPORT_ERROR
            && !self.ctrl.failed.load(Ordering::Acquire);
        let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        if let Some(b) = c.buf {
            if s.direct {
                s.io.bufs.push(b);
            } else if s.io.op == IoType::Read && c.status.is_success() {
                copy_in(&mut s.io.bufs, off, &b);
            }
        }
        let st = if c.status.is_success() {
            IoStatus::Success
        } else if retry {
            IoStatus::Aborted
        } else if c.status == Status::LBA_OUT_OF_RANGE {
            IoStatus::OutOfRange
        } else {
            IoStatus::Failed(libc::EIO)
        };
        if st != IoStatus::Success && s.status == IoStatus::Success {
            s.status = st;
        }
        s.parts -= 1;
        if s.parts > 0 {
            return true;
        }
        let s = self.slots[slot].take().expect("slot in use");
        if s.status == IoStatus::Aborted {
            // The queue died under it: run it again on the next queue (its buffers are
            // intact; a read's are simply filled again).
            self.pending.push_front(s.io);
        } else {
            done.complete(s.io, s.status);
        }
        true
    }
}

/// Copies bytes `off..off + dst.len()` of the scatter list `src` into `dst`.
fn copy_out(src: &[IoBuf], mut off: usize, dst: &mut [u8]) {
    let mut w = 0;
    for b in src {
        if off >= b.len() {
            off -= b.len();
            continue;
        }
        let n = (b.len() - off).min(dst.len() - w);
        dst[w..w + n].copy_from_slice(&b[off..off + n]);
        w += n;
        off = 0;
        if w == dst.len() {
            break;
        }
    }
}

/// Copies `src` into the scatter list `dst` at byte offset `off`.
fn copy_in(dst: &mut [IoBuf], mut off: usize, src: &[u8]) {
    let mut r = 0;
    for b in dst.iter_mut() {
        if off >= b.len() {
            off -= b.len();
            continue;
        }
        let n = (b.len() - off).min(src.len() - r);
        b[off..off + n].copy_from_slice(&src[r..r + n]);
        r += n;
        off = 0;
        if r == src.len() {
            break;
        }
    }
}

impl BackendChannel for RemoteChannel {
    fn submit(&mut self, io: BdevIo, done: &mut Completions) {
        if self.ctrl.failed.load(Ordering::Acquire) {
            done.complete(io, IoStatus::Failed(libc::ENXIO));
            return;
        }
        if !self.pending.is_empty() {
            if self.pending.len() >= MAX_PENDING {
                done.complete(io, IoStatus::NoMemory);
            } else {
                self.pending.push_back(io);
            }
            return;
        }
        if let Err(io) = self.start(io) {
            self.pending.push_back(io);
        }
    }

    fn poll(&mut self, done: &mut Completions) -> bool {
        let mut did = false;
        if self.ctrl.failed.load(Ordering::Acquire) {
            while let Some(io) = self.pending.pop_front() {
                done.complete(io, IoStatus::Failed(libc::ENXIO));
                did = true;
            }
        }
        // A queue of an association that is gone (admin queue lost, a newer one made, or the
        // controller given up) may never answer — a link cut sends no reset: it is given up,
        // and the poll below completes its commands (retried on the next queue, or failed if
        // the controller is given up).
        let stale = self.ctrl.lost.load(Ordering::Acquire)
            || self.ctrl.failed.load(Ordering::Acquire)
            || self.ctrl.gen.load(Ordering::Acquire) != self.gen;
        if stale {
            if let Some(qp) = self.qp.as_mut().filter(|q| q.failure().is_none()) {
                qp.abort("the controller's association is gone");
            }
        }
        if let Some(qp) = self.qp.as_mut() {
            did |= qp.poll(&mut self.comps);
            // A target that reads slowly must not leave our commands or write data stranded
            // while this reactor sleeps (each poll with bytes waiting counts as no progress).
            if let Some(room) = self.room.as_mut() {
                did |= room.after_send(qp.send_pending(), false);
            }
        }
        let mut comps = std::mem::take(&mut self.comps);
        for c in comps.drain(..) {
            did |= self.finish(c, done);
        }
        self.comps = comps;
        // A dead queue: reconnect once the admin side has (new generation), with backoff.
        let dead = self.qp.as_ref().is_some_and(|q| q.failure().is_some()) || self.qp.is_none();
        if dead && !self.ctrl.failed.load(Ordering::Acquire) && Instant::now() >= self.retry_at {
            let newer = self.ctrl.gen.load(Ordering::Acquire) != self.gen;
            if newer || self.qp.is_none() {
                self.qp = None;
                match self.connect() {
                    Ok(()) => {
                        tracing::info!(name = %self.ctrl.opts.name, "I/O queue reconnected");
                        did = true;
                    }
                    Err(e) => {
                        tracing::debug!("I/O queue reconnect: {e}");
                        self.retry_at = Instant::now() + self.ctrl.opts.reconnect_delay;
                    }
                }
            } else {
                // Only this queue died: reset the controller (drop the admin queue); the
                // keep-alive thread reconnects it and every channel follows the new one.
                let mut s = self.ctrl.session.lock().unwrap();
                if self.ctrl.gen.load(Ordering::Acquire) == self.gen && s.is_some() {
                    tracing::warn!(name = %self.ctrl.opts.name, "I/O queue lost: resetting the controller");
                    *s = None;
                    self.ctrl.lost.store(true, Ordering::Release);
                }
                drop(s);
                self.retry_at = Instant::now() + self.ctrl.opts.reconnect_delay;
            }
        }
        while let Some(io) = self.pending.pop_front() {
            match self.start(io) {
                Ok(()) => did = true,
                Err(io) => {
                    self.pending.push_front(io);
                    break;
                }
            }
        }
        did
    }
}

impl Drop for RemoteChannel {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            ballast_reactor::remove_wake_fd(fd);
        }
        // The connection closes with `qp`, just after this.
        self.release_qid();
    }
}

/// Looks a remote bdev's controller name up (for save_config).
pub fn controller_of(bdev: &Bdev) -> Option<String> {
    CTRLS
        .lock()
        .unwrap()
        .iter()
        .find(|(_, c)| c.bdevs.lock().unwrap().iter().any(|b| b == bdev.name()))
        .map(|(n, _)| n.clone())
}
