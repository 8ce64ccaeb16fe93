//! An in-process bdev workload in the style of SPDK's bdevperf: one reactor keeps `qd` random
//! I/Os of `io_size` bytes in flight on one bdev through an [`IoSink`], with buffers taken once
//! from the reactor's pool and recycled through the completions, so nothing is allocated per
//! I/O (checked with [`crate::alloc::thread_allocs`] when the counting allocator is installed).
//!
//! Two ways to keep the queue full:
//! * [`Submit::FromCallback`] (bdevperf): each completion submits the next I/O;
//! * [`Submit::FromPoller`]: completions only count, a reactor poller refills the queue (so
//!   every batch of `qd` I/Os goes through a reactor loop iteration too).

use std::cell::{Cell, RefCell};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

use ballast_engine::{bdev, BdevIo, IoCallback, IoChannel, IoSink, IoStatus, IoType, SgList};
use ballast_reactor::{PollStatus, PollerHandle, RuntimeHandle};

use crate::alloc::thread_allocs;

/// Who refills the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// The completion callback submits the next I/O (as bdevperf).
    FromCallback,
    /// A reactor poller tops the queue up to `qd` every loop iteration.
    FromPoller,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Bdev name.
    pub bdev: String,
    /// Read or Write.
    pub op: IoType,
    /// I/Os kept in flight.
    pub qd: usize,
    /// Bytes per I/O (a multiple of the block size).
    pub io_size: usize,
    /// Who refills the queue.
    pub submit: Submit,
    /// Walk the bdev in order instead of at random (e.g. to pre-fill it).
    pub sequential: bool,
}

/// Outcome of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunResult {
    /// I/Os completed.
    pub ios: u64,
    /// From the first submission to the last completion, measured on the reactor.
    pub elapsed: Duration,
    /// Allocations made by the reactor thread during the run (`None` without the counter).
    pub allocs: Option<u64>,
    /// I/Os that completed with an error.
    pub errors: u64,
}

impl RunResult {
    /// Completed I/Os per second.
    pub fn iops(&self) -> f64 {
        self.ios as f64 / self.elapsed.as_secs_f64()
    }
}

struct IoLoad {
    ch: IoChannel,
    _desc: bdev::BdevDesc,
    op: IoType,
    qd: usize,
    io_blocks: u64,
    /// Number of `io_size` slots in the bdev (random offsets are slot × io_blocks).
    slots: u64,
    submit: Submit,
    sequential: bool,
    rng: Cell<u64>,
    /// This load as a sink (a cycle, broken at teardown): one Rc clone per I/O, no allocation.
    me: RefCell<Option<Rc<dyn IoSink>>>,
    free: RefCell<Vec<SgList>>,
    target: Cell<u64>,
    submitted: Cell<u64>,
    completed: Cell<u64>,
    in_flight: Cell<usize>,
    errors: Cell<u64>,
    t0: Cell<Instant>,
    allocs0: Cell<Option<u64>>,
    done: RefCell<Option<SyncSender<RunResult>>>,
    poller: Cell<Option<PollerHandle>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<IoLoad>>> = const { RefCell::new(None) };
}

impl IoLoad {
    #[inline]
    fn next_slot(&self) -> u64 {
        if self.sequential {
            let x = self.rng.get();
            self.rng.set(x + 1);
            return x % self.slots;
        }
        // xorshift64*, then Lemire's multiply-shift instead of a division.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((r as u128 * self.slots as u128) >> 64) as u64
    }

    #[inline]
    fn submit_one(&self) {
        let bufs = self
            .free
            .borrow_mut()
            .pop()
            .expect("a free buffer per queue slot");
        let offset = self.next_slot() * self.io_blocks;
        let sink = self.me.borrow().as_ref().expect("load is live").clone();
        self.submitted.set(self.submitted.get() + 1);
        self.in_flight.set(self.in_flight.get() + 1);
        self.ch.submit(BdevIo::new(
            self.op,
            offset,
            self.io_blocks,
            bufs,
            0,
            IoCallback::Sink(sink),
        ));
    }

    fn start(&self, n: u64, tx: SyncSender<RunResult>) {
        self.target.set(n);
        self.submitted.set(0);
        self.completed.set(0);
        self.errors.set(0);
        *self.done.borrow_mut() = Some(tx);
        self.allocs0.set(thread_allocs());
        self.t0.set(Instant::now());
        let first = n.min(self.qd as u64);
        for _ in 0..first {
            self.submit_one();
        }
    }

    fn refill(&self) -> PollStatus {
        let mut n = 0;
        while self.in_flight.get() < self.qd && self.submitted.get() < self.target.get() {
            self.submit_one();
            n += 1;
        }
        (n > 0).into()
    }
}

impl IoSink for IoLoad {
    #[inline]
    fn io_done(&self, mut io: BdevIo) {
        self.in_flight.set(self.in_flight.get() - 1);
        let completed = self.completed.get() + 1;
        self.completed.set(completed);
        if io.status != IoStatus::Success {
            self.errors.set(self.errors.get() + 1);
        }
        let bufs = std::mem::take(&mut io.bufs);
        drop(io);
        self.free.borrow_mut().push(bufs);
        if completed == self.target.get() {
            let elapsed = self.t0.get().elapsed();
            let allocs = thread_allocs().zip(self.allocs0.get()).map(|(a, b)| a - b);
            if let Some(tx) = self.done.borrow_mut().take() {
                let _ = tx.send(RunResult {
                    ios: completed,
                    elapsed,
                    allocs,
                    errors: self.errors.get(),
                });
            }
        } else if self.submit == Submit::FromCallback && self.submitted.get() < self.target.get() {
            self.submit_one();
        }
    }
}

/// A workload set up on one reactor; dropped (or [`BdevLoad::teardown`]) to remove it.
pub struct BdevLoad {
    rt: RuntimeHandle,
    core: usize,
    /// Bytes per I/O.
    pub io_size: usize,
}

impl BdevLoad {
    /// Opens `spec.bdev` on reactor `core`, takes its channel and `qd` pooled buffers.
    pub fn setup(rt: RuntimeHandle, core: usize, spec: LoadSpec) -> BdevLoad {
        let io_size = spec.io_size;
        rt.call(core, move || {
            let desc = bdev::open(&spec.bdev, None).expect("open bdev");
            let ch = desc.channel().expect("io channel");
            let bs = ch.bdev().block_size() as usize;
            assert_eq!(io_size % bs, 0, "io_size not a multiple of the block size");
            let io_blocks = (io_size / bs) as u64;
            let slots = ch.bdev().num_blocks() / io_blocks;
            let mut free = Vec::with_capacity(spec.qd);
            for i in 0..spec.qd {
                let mut b = ballast_engine::buf::alloc(io_size).expect("pooled buffer");
                b.fill(i as u8 ^ 0xa5);
                let mut sg = SgList::new();
                sg.push(b);
                free.push(sg);
            }
            let load = Rc::new(IoLoad {
                ch,
                _desc: desc,
                op: spec.op,
                qd: spec.qd,
                io_blocks,
                slots,
                submit: spec.submit,
                sequential: spec.sequential,
                rng: Cell::new(if spec.sequential {
                    0
                } else {
                    0x9e37_79b9_7f4a_7c15
                }),
                me: RefCell::new(None),
                free: RefCell::new(free),
                target: Cell::new(0),
                submitted: Cell::new(0),
                completed: Cell::new(0),
                in_flight: Cell::new(0),
                errors: Cell::new(0),
                t0: Cell::new(Instant::now()),
                allocs0: Cell::new(None),
                done: RefCell::new(None),
                poller: Cell::new(None),
            });
            let sink: Rc<dyn IoSink> = load.clone();
            *load.me.borrow_mut() = Some(sink);
            if spec.submit == Submit::FromPoller {
                let l = load.clone();
                let h = ballast_reactor::register_poller("bench_refill", move || l.refill())
                    .expect("register poller");
                load.poller.set(Some(h));
            }
            CURRENT.with(|c| {
                let old = c.borrow_mut().replace(load);
                assert!(old.is_none(), "one bench load per reactor");
            });
        })
        .expect("set up load");
        BdevLoad { rt, core, io_size }
    }

    /// Runs `n` I/Os and waits for the last completion.
    pub fn run(&self, n: u64) -> RunResult {
        let (tx, rx) = sync_channel(1);
        self.rt
            .send(self.core, move || {
                let load = CURRENT.with(|c| c.borrow().clone()).expect("load set up");
                load.start(n, tx);
            })
            .expect("start run");
        rx.recv().expect("run result")
    }

    /// Removes the load from its reactor (closes the channel and the descriptor).
    pub fn teardown(self) {
        drop(self)
    }
}

impl Drop for BdevLoad {
    fn drop(&mut self) {
        let _ = self.rt.call(self.core, || {
            if let Some(load) = CURRENT.with(|c| c.borrow_mut().take()) {
                if let Some(h) = load.poller.take() {
                    ballast_reactor::unregister_poller(h);
                }
                load.me.borrow_mut().take();
            }
        });
    }
}

/// Makes sure `path` is a fully written (not sparse) file of `size` bytes: created sparse,
/// then written once with a pattern, so that reads hit real blocks. Reuses a file that is
/// already complete. Returns true if it had to (re)write it.
pub fn prepare_file(path: &Path, size: u64) -> std::io::Result<bool> {
    if let Ok(md) = std::fs::metadata(path) {
        if md.len() == size && md.blocks() * 512 >= size {
            return Ok(false);
        }
    }
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    f.set_len(size)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let n = chunk.len().min((size - off) as usize);
        chunk[..8].copy_from_slice(&off.to_le_bytes());
        chunk[n - 8..n].copy_from_slice(&(!off).to_le_bytes());
        f.write_all(&chunk[..n])?;
        off += n as u64;
    }
    f.sync_all()?;
    Ok(true)
}

/// Drops `path`'s pages from the page cache (so buffered reads go to the device).
pub fn drop_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::File::open(path) {
        // SAFETY: posix_fadvise on an fd we own for the whole call; advisory only.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}
