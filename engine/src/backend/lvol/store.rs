//! An open store: its metadata state behind one mutex, the committer that makes changes
//! durable (a poller on the main reactor), and loading (replay) and formatting.
//!
//! ```text
//!  change(record) ─► State::apply (memory) ─► queue ─► committer (main reactor poller):
//!    [flush]? ─► log blocks ─► [flush]? ─► committed = seq ─► waiters (channels, control)
//!    log half full ─► checkpoint (whole state) to the other area ─► flush ─► superblock
//! ```
//!
//! A change is durable when `committed` reaches its sequence number. Changes are applied in
//! memory first, so the data path sees them at once, but nothing that depends on one is
//! acknowledged before it is durable (see the channel). On a base with a volatile write
//! cache every commit ends with a flush, and one that follows data the metadata points at
//! (a copied cluster, zeroed clusters) starts with one.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_reactor::{PollStatus, RuntimeHandle};

use super::format::{self, Checkpoint, Layout, Record, Superblock, MD_BLOCK};
use super::state::State;
use crate::backend::control::{control_io, CtlFail, CtlIo, SharedDesc};
use crate::bdev::{self, Bdev, BdevIo, IoCallback, IoStatus, IoType, SgList};
use crate::buf::IoBuf;
use crate::error::{Error, Result};

/// How long a control-path metadata I/O or commit may take.
pub(crate) const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// The metadata and what the committer needs of it (one mutex; held for microseconds).
pub(crate) struct Inner {
    pub(crate) st: State,
    queue: Vec<Vec<u8>>,
    queue_preflush: bool,
    /// Sequence number of the newest change (queued or committed).
    pub(crate) queued_seq: u64,
    next_block: u64,
    ckpt_seq: u64,
    sb_gen: u64,
    active_ckpt: u8,
    /// Writes to a freshly mapped cluster wait until its Map is durable: (lvol, cluster) →
    /// the change's sequence number.
    pub(crate) pending_map: HashMap<(u32, u64), u64>,
    /// Clusters being copied (copy-on-write) for a write: others wait.
    pub(crate) cow_busy: HashSet<(u32, u64)>,
    /// The committer takes no new batch while > 0 (checkers read the metadata).
    paused: u32,
    busy: bool,
}

/// An open store.
pub(crate) struct Store {
    pub(crate) uuid: uuid::Uuid,
    pub(crate) layout: Layout,
    pub(crate) base: SharedDesc,
    pub(crate) base_bdev: Arc<Bdev>,
    write_cache: bool,
    pub(crate) rt: RuntimeHandle,
    pub(crate) inner: Mutex<Inner>,
    /// Windows on the base its lvols lent for zero-copy reads (see [`super::lend`]).
    pub(crate) lends: Arc<super::lend::LendCounts>,
    /// Sequence number of the newest durable change.
    pub(crate) committed: AtomicU64,
    /// `Inner::queued_seq` mirrored outside the mutex: an idle committer (it polls on every
    /// loop of the main reactor) sees that nothing was queued without locking the metadata.
    queued: AtomicU64,
    /// The committer met an I/O error: nothing more becomes durable.
    pub(crate) failed: AtomicBool,
    closed: AtomicBool,
    /// Serialises control operations (create, snapshot, delete, ...).
    pub(crate) ctl: Mutex<()>,
    /// Registered lvol bdevs, by lvol id.
    pub(crate) bdevs: Mutex<HashMap<u32, super::LvolHandle>>,
}

fn ctl_err(base: &str, what: &str, e: CtlFail) -> Error {
    match e {
        CtlFail::Reactor(m) => Error::Busy(format!("{what} on {base}: {m}")),
        CtlFail::Timeout => Error::Busy(format!("{what} on {base}: timed out")),
    }
}

/// Reads `len` bytes at `off` of `desc` (control path).
pub(crate) fn read(rt: &RuntimeHandle, desc: &SharedDesc, off: u64, len: u64) -> Result<Vec<u8>> {
    let base = desc
        .lock()
        .unwrap()
        .as_ref()
        .map(|d| d.bdev().name().to_string())
        .unwrap_or_default();
    let io = CtlIo {
        child: 0,
        op: IoType::Read,
        offset: off,
        len,
        data: Vec::new(),
    };
    match control_io(rt, std::slice::from_ref(desc), vec![io], CONTROL_TIMEOUT)
        .map_err(|e| ctl_err(&base, "metadata read", e))?
        .pop()
    {
        Some(Ok(d)) => Ok(d),
        Some(Err(st)) => Err(Error::Busy(format!("metadata read on {base}: {st:?}"))),
        None => Err(Error::Busy(format!("metadata read on {base}: no answer"))),
    }
}

/// Runs `ios` (writes, flushes, write-zeroes) in order, each after the previous completed.
pub(crate) fn run(rt: &RuntimeHandle, desc: &SharedDesc, ios: Vec<CtlIo>) -> Result<()> {
    let base = desc
        .lock()
        .unwrap()
        .as_ref()
        .map(|d| d.bdev().name().to_string())
        .unwrap_or_default();
    for io in ios {
        let op = io.op;
        match control_io(rt, std::slice::from_ref(desc), vec![io], CONTROL_TIMEOUT)
            .map_err(|e| ctl_err(&base, "metadata I/O", e))?
            .pop()
        {
            Some(Ok(_)) => {}
            Some(Err(st)) => return Err(Error::Busy(format!("{op:?} on {base}: {st:?}"))),
            None => return Err(Error::Busy(format!("{op:?} on {base}: no answer"))),
        }
    }
    Ok(())
}

pub(crate) fn write_io(off: u64, data: Vec<u8>) -> CtlIo {
    CtlIo {
        child: 0,
        op: IoType::Write,
        offset: off,
        len: data.len() as u64,
        data,
    }
}

pub(crate) fn op_io(op: IoType, off: u64, len: u64) -> CtlIo {
    CtlIo {
        child: 0,
        op,
        offset: off,
        len,
        data: Vec::new(),
    }
}

/// Clears `len` bytes at `off` of the base (write-zeroes, else unmap, else written zeros):
/// freed clusters must read as zeros, since a thin lvol's new cluster is not zeroed again.
pub(crate) fn clear_ios(base: &Bdev, off: u64, len: u64) -> Vec<CtlIo> {
    if base.supports(IoType::WriteZeroes) {
        vec![op_io(IoType::WriteZeroes, off, len)]
    } else if base.supports(IoType::Unmap) {
        vec![op_io(IoType::Unmap, off, len)]
    } else {
        let step = 1 << 20;
        (0..len.div_ceil(step))
            .map(|k| {
                let n = step.min(len - k * step);
                write_io(off + k * step, vec![0; n as usize])
            })
            .collect()
    }
}

/// What the metadata on a bdev holds (the loader's and the checker's view).
pub(crate) struct Loaded {
    pub(crate) sb: Superblock,
    pub(crate) st: State,
    pub(crate) next_block: u64,
    pub(crate) log_blocks: u64,
}

/// Reads a store's metadata from `desc`: `Ok(None)` if the bdev holds no store.
pub(crate) fn load(rt: &RuntimeHandle, desc: &SharedDesc) -> Result<Option<Loaded>> {
    let bdev = desc.lock().unwrap().as_ref().map(|d| d.bdev().clone());
    let bdev = bdev.ok_or_else(|| Error::Removing("lvol store base".into()))?;
    let bytes = bdev.num_blocks() * bdev.block_size() as u64;
    if bytes < 2 * MD_BLOCK {
        return Ok(None);
    }
    let head = read(rt, desc, 0, 2 * MD_BLOCK)?;
    let (a, b) = head.split_at(MD_BLOCK as usize);
    if !Superblock::has_magic(a) && !Superblock::has_magic(b) {
        return Ok(None);
    }
    let sb = match (Superblock::decode(a), Superblock::decode(b)) {
        (Ok(x), Ok(y)) => {
            if x.gen >= y.gen {
                x
            } else {
                y
            }
        }
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => x,
        (Err(e), Err(_)) => return Err(e),
    };
    let l = sb.layout;
    if l.block_size != bdev.block_size() || l.data_start + l.cluster_sz > bytes {
        return Err(Error::Corrupt(format!(
            "the store's geometry (block size {}, data at {}) does not fit {} ({} bytes, \
             block size {})",
            l.block_size,
            l.data_start,
            bdev.name(),
            bytes,
            bdev.block_size()
        )));
    }
    let len = sb.ckpt_len.div_ceil(MD_BLOCK) * MD_BLOCK;
    let raw = read(rt, desc, l.ckpt_off(sb.ckpt), len.max(MD_BLOCK))?;
    let raw = &raw[..sb.ckpt_len as usize];
    if crc32c::crc32c(raw) != sb.ckpt_crc {
        return Err(Error::Corrupt("checkpoint checksum mismatch".into()));
    }
    let ck = Checkpoint::decode(raw)?;
    if ck.seq != sb.ckpt_seq {
        return Err(Error::Corrupt("checkpoint and superblock disagree".into()));
    }
    let room = l.clusters(bytes);
    if ck.total > room || ck.lvols.len() > l.max_lvols as usize {
        return Err(Error::Corrupt(format!(
            "checkpoint beyond the store's limits ({} clusters, {} lvols; room for {room} \
             and {})",
            ck.total,
            ck.lvols.len(),
            l.max_lvols
        )));
    }
    let mut st = State::from_checkpoint(&ck).map_err(Error::Corrupt)?;
    st.limit = room;
    let log = read(rt, desc, l.log_off(), l.log_blocks as u64 * MD_BLOCK)?;
    // Blocks of whole commits applied, and the records of the commit being read (with
    // their blocks): a commit cut short by the power is not applied at all.
    let mut n = 0;
    let mut commit: Vec<(u64, Record)> = Vec::new();
    let mut more = None;
    for k in 0..l.log_blocks as u64 {
        let seq = sb.ckpt_seq + k;
        let off = (l.log_block_off(seq) - l.log_off()) as usize;
        match format::read_log_block(&log[off..off + MD_BLOCK as usize], seq) {
            None => break,
            Some(Err(e)) => return Err(e),
            // Not the block the commit's previous one announced: the commit ends short.
            Some(Ok((_, m))) if more.is_some_and(|left: u32| left.checked_sub(1) != Some(m)) => {
                break
            }
            Some(Ok((recs, m))) => {
                commit.extend(recs.into_iter().map(|r| (seq, r)));
                more = Some(m);
                if m == 0 {
                    for (s, r) in commit.drain(..) {
                        st.apply(&r)
                            .map_err(|e| Error::Corrupt(format!("log block {s}: {e}")))?;
                    }
                    more = None;
                    n = k + 1;
                }
            }
        }
    }
    Ok(Some(Loaded {
        next_block: sb.ckpt_seq + n,
        sb,
        st,
        log_blocks: n,
    }))
}

/// Writes a new, empty store's metadata (superblock slots cleared first, log zeroed, the
/// checkpoint, then the superblock).
pub(crate) fn format(
    rt: &RuntimeHandle,
    desc: &SharedDesc,
    uuid: uuid::Uuid,
    layout: Layout,
    name: &str,
    total: u64,
) -> Result<Superblock> {
    let st = State::new(name, total);
    let ck = st.checkpoint(1).encode();
    let sb = Superblock {
        gen: 1,
        uuid,
        layout,
        ckpt: 0,
        ckpt_len: ck.len() as u64,
        ckpt_crc: crc32c::crc32c(&ck),
        ckpt_seq: 1,
    };
    let mut ckb = ck;
    ckb.resize(ckb.len().div_ceil(MD_BLOCK as usize) * MD_BLOCK as usize, 0);
    let flush = op_io(IoType::Flush, 0, 0);
    let bdev = desc.lock().unwrap().as_ref().map(|d| d.bdev().clone());
    let can_flush = bdev.is_some_and(|b| b.supports(IoType::Flush));
    let mut ios = vec![
        write_io(0, vec![0; 2 * MD_BLOCK as usize]),
        write_io(
            layout.log_off(),
            vec![0; (layout.log_blocks as u64 * MD_BLOCK) as usize],
        ),
        write_io(layout.ckpt_off(0), ckb),
    ];
    if can_flush {
        ios.push(flush);
    }
    ios.push(write_io(MD_BLOCK * (sb.gen % 2), sb.encode()));
    if can_flush {
        ios.push(op_io(IoType::Flush, 0, 0));
    }
    run(rt, desc, ios)?;
    Ok(sb)
}

impl Store {
    /// The store over `desc` (claimed already) with loaded metadata; starts its committer.
    pub(crate) fn start(
        rt: &RuntimeHandle,
        desc: SharedDesc,
        sb: &Superblock,
        st: State,
        next_block: u64,
    ) -> Result<Arc<Store>> {
        let base_bdev = desc
            .lock()
            .unwrap()
            .as_ref()
            .map(|d| d.bdev().clone())
            .ok_or_else(|| Error::Removing("lvol store base".into()))?;
        let store = Arc::new(Store {
            uuid: sb.uuid,
            layout: sb.layout,
            // A remote namespace may sit on a volatile cache whatever it says: flushed too.
            write_cache: (base_bdev.info().write_cache || base_bdev.product_name() == "NVMe disk")
                && base_bdev.supports(IoType::Flush),
            base_bdev,
            base: desc,
            rt: rt.clone(),
            inner: Mutex::new(Inner {
                st,
                queue: Vec::new(),
                queue_preflush: false,
                queued_seq: 0,
                next_block,
                ckpt_seq: sb.ckpt_seq,
                sb_gen: sb.gen,
                active_ckpt: sb.ckpt,
                pending_map: HashMap::new(),
                cow_busy: HashSet::new(),
                paused: 0,
                busy: false,
            }),
            lends: Arc::default(),
            committed: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            ctl: Mutex::new(()),
            bdevs: Mutex::new(HashMap::new()),
        });
        let s = store.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.send_retry(rt.main_core(), move || {
            let _ = tx.send(Committer::start(s));
        })
        .map_err(|e| Error::Busy(format!("lvol store committer: {e}")))?;
        rx.recv_timeout(CONTROL_TIMEOUT)
            .map_err(|_| Error::Busy("lvol store committer did not start".into()))??;
        Ok(store)
    }

    pub(crate) fn name(&self) -> String {
        self.inner.lock().unwrap().st.name.clone()
    }

    /// Applies `rec` in memory and queues it; returns its sequence number.
    pub(crate) fn change(&self, inner: &mut Inner, rec: &Record, preflush: bool) -> Result<u64> {
        inner.st.apply(rec).map_err(|e| {
            tracing::error!(store = %self.uuid, "metadata change refused: {e}");
            Error::Corrupt(e)
        })?;
        let mut v = Vec::with_capacity(32);
        rec.encode(&mut v);
        inner.queue.push(v);
        inner.queue_preflush |= preflush;
        inner.queued_seq += 1;
        self.queued.store(inner.queued_seq, Ordering::Release);
        Ok(inner.queued_seq)
    }

    /// [`Store::change`] for each of `recs` in order; returns the last one's sequence number
    /// (0 for none).
    pub(crate) fn change_all(
        &self,
        inner: &mut Inner,
        recs: &[Record],
        preflush: bool,
    ) -> Result<u64> {
        let mut seq = 0;
        for r in recs {
            seq = self.change(inner, r, preflush)?;
        }
        Ok(seq)
    }

    /// Wakes the committer if it may be asleep on another thread.
    pub(crate) fn kick(&self) {
        if ballast_reactor::current_core() != Some(self.rt.main_core()) {
            let _ = self.rt.send(self.rt.main_core(), || {});
        }
    }

    /// True once change `seq` is durable (Err if it never will be).
    pub(crate) fn is_durable(&self, seq: u64) -> std::result::Result<bool, ()> {
        if self.committed.load(Ordering::Acquire) >= seq {
            Ok(true)
        } else if self.failed.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire) {
            Err(())
        } else {
            Ok(false)
        }
    }

    /// Waits (control path) until change `seq` is durable.
    pub(crate) fn wait(&self, seq: u64) -> Result<()> {
        self.kick();
        let t0 = Instant::now();
        let mut nap = Duration::from_micros(5);
        loop {
            match self.is_durable(seq) {
                Ok(true) => return Ok(()),
                Err(()) => {
                    return Err(Error::Busy(format!(
                        "lvol store {}: metadata could not be written",
                        self.uuid
                    )))
                }
                Ok(false) => {}
            }
            if t0.elapsed() > CONTROL_TIMEOUT {
                return Err(Error::Busy(format!(
                    "lvol store {}: metadata write timed out",
                    self.uuid
                )));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }

    /// Stops taking new commits and waits for the one in flight (the checker reads then).
    pub(crate) fn pause(&self, on: bool) {
        {
            let mut g = self.inner.lock().unwrap();
            if on {
                g.paused += 1;
            } else {
                g.paused = g.paused.saturating_sub(1);
            }
        }
        self.kick();
        if on {
            let t0 = Instant::now();
            while self.inner.lock().unwrap().busy && t0.elapsed() < CONTROL_TIMEOUT {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Stops the committer after what is queued is durable.
    pub(crate) fn close(&self) {
        let seq = self.inner.lock().unwrap().queued_seq;
        let _ = self.wait(seq);
        self.closed.store(true, Ordering::Release);
        self.kick();
    }

    /// Block offset on the base of logical cluster data in data cluster `phys`.
    pub(crate) fn cluster_block(&self, phys: u32) -> u64 {
        self.layout.cluster_block(phys)
    }
}

/// One step of a commit.
enum Step {
    Write(u64, Vec<u8>),
    Flush,
}

/// After the steps: what the commit makes durable.
struct Batch {
    seq: u64,
    /// A checkpoint: (superblock generation, area, log block it starts at).
    ckpt: Option<(u64, u8, u64)>,
    next_block: u64,
}

/// The committer: one batch of steps at a time, on the main reactor.
struct Committer {
    store: Arc<Store>,
    /// The newest change taken into a commit (all up to it are out of the queue).
    taken: u64,
    ch: crate::bdev::IoChannel,
    steps: std::collections::VecDeque<Step>,
    batch: Option<Batch>,
    /// The step in flight: None, or Some(status once done).
    inflight: Rc<Cell<Option<IoStatus>>>,
    waiting: Cell<bool>,
    handle: RefCell<Option<ballast_reactor::PollerHandle>>,
}

impl Committer {
    fn start(store: Arc<Store>) -> Result<()> {
        let ch = crate::bdev::channel_for(&store.base_bdev)?;
        let shared = Rc::new(RefCell::new(Committer {
            store: store.clone(),
            taken: 0,
            ch,
            steps: Default::default(),
            batch: None,
            inflight: Rc::new(Cell::new(None)),
            waiting: Cell::new(false),
            handle: RefCell::new(None),
        }));
        let name = format!("lvs_commit:{}", store.uuid);
        let s2 = shared.clone();
        let h = ballast_reactor::register_poller(name, move || s2.borrow_mut().poll())
            .map_err(|_| Error::NotOnReactor("lvol store committer"))?;
        *shared.borrow().handle.borrow_mut() = Some(h);
        Ok(())
    }

    fn poll(&mut self) -> PollStatus {
        if self.waiting.get() {
            let Some(st) = self.inflight.take() else {
                return PollStatus::Idle;
            };
            self.waiting.set(false);
            if st != IoStatus::Success {
                tracing::error!(store = %self.store.uuid, "metadata write failed: {st:?}");
                self.store.failed.store(true, Ordering::Release);
                self.steps.clear();
                self.batch = None;
                self.store.inner.lock().unwrap().busy = false;
                return PollStatus::Busy;
            }
        }
        if let Some(step) = self.steps.pop_front() {
            self.submit(step);
            return PollStatus::Busy;
        }
        if let Some(b) = self.batch.take() {
            let mut g = self.store.inner.lock().unwrap();
            if let Some((gen, area, start)) = b.ckpt {
                g.sb_gen = gen;
                g.active_ckpt = area;
                g.ckpt_seq = start;
            }
            g.next_block = b.next_block;
            let committed = b.seq;
            g.pending_map.retain(|_, s| *s > committed);
            g.busy = false;
            self.store.committed.store(committed, Ordering::Release);
            return PollStatus::Busy;
        }
        if self.store.closed.load(Ordering::Acquire) || self.store.failed.load(Ordering::Acquire) {
            if let Some(h) = self.handle.borrow_mut().take() {
                ballast_reactor::unregister_poller(h);
            }
            return PollStatus::Idle;
        }
        self.next_batch()
    }

    fn submit(&mut self, step: Step) {
        let done = self.inflight.clone();
        let cb = IoCallback::Fn(Box::new(move |io: BdevIo| done.set(Some(io.status))));
        let bs = self.store.layout.block_size as u64;
        let io = match step {
            Step::Write(off, data) => {
                let mut sg = SgList::new();
                let n = data.len() as u64 / bs;
                sg.push(IoBuf::from_slice(&data));
                BdevIo::new(IoType::Write, off / bs, n, sg, 0, cb)
            }
            Step::Flush => BdevIo::new(IoType::Flush, 0, 0, SgList::new(), 0, cb),
        };
        self.waiting.set(true);
        self.ch.submit(io);
    }

    /// Takes what is queued: a log append, or a checkpoint when the log is half full.
    fn next_batch(&mut self) -> PollStatus {
        let s = &self.store;
        let l = s.layout;
        // Nothing queued since the last commit was taken: no need to lock. A change made
        // on another thread is seen here after its kick (a message to this reactor).
        if s.queued.load(Ordering::Acquire) == self.taken {
            return PollStatus::Idle;
        }
        let mut g = s.inner.lock().unwrap();
        if g.queue.is_empty() {
            self.taken = g.queued_seq;
            return PollStatus::Idle;
        }
        if g.paused > 0 {
            return PollStatus::Idle;
        }
        let cap = MD_BLOCK as usize - format::LOG_HDR;
        // Everything queued goes in one commit (packed as log_blocks does), so a change of
        // several records (a thick create and its runs) is never split between two commits;
        // replay applies a commit whole or not at all. A commit that would take the log past
        // half its ring becomes a checkpoint instead (which holds every change made so far).
        let (mut blocks, mut fill) = (1usize, 0usize);
        for r in &g.queue {
            if fill + r.len() > cap {
                blocks += 1;
                fill = 0;
            }
            fill += r.len();
        }
        let take = g.queue.len();
        let preflush = std::mem::take(&mut g.queue_preflush) && s.write_cache;
        let used = g.next_block + blocks as u64 - g.ckpt_seq;
        if used > l.log_blocks as u64 / 2 {
            // Checkpoint: the whole state (every change applied so far) replaces the log,
            // encoded straight from the state (under the lock: no copy of it in between).
            let seq = g.queued_seq;
            let start = g.next_block;
            let ck = g.st.encode_checkpoint(start);
            g.queue.clear();
            self.taken = seq;
            if ck.len() as u64 > l.ckpt_bytes {
                tracing::error!(store = %s.uuid, bytes = ck.len(), "checkpoint too large");
                s.failed.store(true, Ordering::Release);
                return PollStatus::Busy;
            }
            let area = 1 - g.active_ckpt;
            let gen = g.sb_gen + 1;
            let sb = Superblock {
                gen,
                uuid: s.uuid,
                layout: l,
                ckpt: area,
                ckpt_len: ck.len() as u64,
                ckpt_crc: crc32c::crc32c(&ck),
                ckpt_seq: start,
            };
            g.busy = true;
            drop(g);
            let mut ckb = ck;
            ckb.resize(ckb.len().div_ceil(MD_BLOCK as usize) * MD_BLOCK as usize, 0);
            if preflush {
                self.steps.push_back(Step::Flush);
            }
            self.steps.push_back(Step::Write(l.ckpt_off(area), ckb));
            if s.write_cache {
                self.steps.push_back(Step::Flush);
            }
            self.steps
                .push_back(Step::Write(MD_BLOCK * (gen % 2), sb.encode()));
            if s.write_cache {
                self.steps.push_back(Step::Flush);
            }
            self.batch = Some(Batch {
                seq,
                ckpt: Some((gen, area, start)),
                next_block: start,
            });
            return PollStatus::Busy;
        }
        let recs: Vec<Vec<u8>> = g.queue.drain(..take).collect();
        if !g.queue.is_empty() {
            // Those left behind keep their preflush need (conservatively).
            g.queue_preflush |= preflush;
        }
        let seq = g.queued_seq - g.queue.len() as u64;
        self.taken = seq;
        let first = g.next_block;
        g.busy = true;
        drop(g);
        let data = format::log_blocks(&recs, first);
        let n = data.len() as u64 / MD_BLOCK;
        if preflush {
            self.steps.push_back(Step::Flush);
        }
        // The ring may wrap inside the batch: one write per contiguous part.
        let mut k = 0;
        while k < n {
            let pos = (first + k) % l.log_blocks as u64;
            let run = (l.log_blocks as u64 - pos).min(n - k);
            let part = data[(k * MD_BLOCK) as usize..((k + run) * MD_BLOCK) as usize].to_vec();
            self.steps
                .push_back(Step::Write(l.log_block_off(first + k), part));
            k += run;
        }
        if s.write_cache {
            self.steps.push_back(Step::Flush);
        }
        self.batch = Some(Batch {
            seq,
            ckpt: None,
            next_block: first + n,
        });
        PollStatus::Busy
    }
}

/// Opens the store on `bdev_name` if it holds one (examine): `Ok(None)` if not.
pub(crate) fn open_existing(
    rt: &RuntimeHandle,
    bdev_name: &str,
    in_use: &dyn Fn(uuid::Uuid, &str) -> Option<String>,
) -> Result<Option<Arc<Store>>> {
    let mut d = bdev::open(bdev_name, None)?;
    // Claimed first, so nothing else writes the bdev while the store is looked at (a bdev
    // claimed already — exported, a stage's base, a store being created — is not examined).
    if d.claim("lvol store (examine)").is_err() {
        return Ok(None);
    }
    let desc: SharedDesc = Arc::new(Mutex::new(Some(d)));
    let Some(mut ld) = load(rt, &desc)? else {
        return Ok(None);
    };
    // A second path to a store that is open already (two bdevs on one file or namespace):
    // refused before anything is written, or this one would rewrite the live store's
    // superblock under it.
    if let Some(why) = in_use(ld.sb.uuid, &ld.st.name) {
        return Err(Error::Exists(why));
    }
    // Copies that never finished: their clusters are zeroed and freed; then a checkpoint of
    // the recovered state (also resets the log).
    let reserved: Vec<u32> = ld.st.reserved.iter().copied().collect();
    if !reserved.is_empty() {
        let bdev = desc.lock().unwrap().as_ref().unwrap().bdev().clone();
        let l = ld.sb.layout;
        let mut ios = Vec::new();
        for &p in &reserved {
            ios.extend(clear_ios(
                &bdev,
                l.data_start + p as u64 * l.cluster_sz,
                l.cluster_sz,
            ));
        }
        if bdev.supports(IoType::Flush) {
            ios.push(op_io(IoType::Flush, 0, 0));
        }
        run(rt, &desc, ios)?;
        ld.st.unreserve_all();
        tracing::info!(
            bdev = bdev_name,
            clusters = reserved.len(),
            "lvol store: unfinished copies cleared"
        );
    }
    {
        let mut g = desc.lock().unwrap();
        let name = ld.st.name.clone();
        g.as_mut().unwrap().claim(&format!("lvol store {name}"))?;
    }
    let errs = ld.st.check();
    if !errs.is_empty() {
        return Err(Error::Corrupt(format!(
            "the store's metadata fails its checks: {}",
            errs.join("; ")
        )));
    }
    let store = Store::start(rt, desc, &ld.sb, ld.st, ld.next_block)?;
    // A checkpoint now: the log restarts, the recovered state is on disk.
    store.checkpoint_now()?;
    Ok(Some(store))
}

impl Store {
    /// Forces a checkpoint (the next commit) and waits for it.
    pub(crate) fn checkpoint_now(&self) -> Result<()> {
        let seq = {
            let mut g = self.inner.lock().unwrap();
            // A no-op change makes the committer run; the log appears full so it checkpoints.
            g.next_block = g.ckpt_seq + self.layout.log_blocks as u64;
            let name = g.st.name.clone();
            self.change(&mut g, &Record::RenameStore { name }, false)?
        };
        self.wait(seq)
    }
}
