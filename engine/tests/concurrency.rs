//! I/O from several reactors at once to one bdev, and shutdown with I/O in flight.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ballast_engine::backend::{malloc, uring};
use ballast_engine::{bdev, BdevIo, IoBuf, IoCallback, IoSink, IoStatus, IoType, SgList};
use ballast_reactor::{PollStatus, PollerHandle, Runtime, RuntimeConfig};
use common::{conformance, malloc_named, Harness, Model};

/// A reactor-local workload: keeps `qd` writes/reads in flight to its own stripe of the bdev,
/// each block stamped with (core, block, generation) and verified on read-back, until shutdown.
struct Workload {
    ch: ballast_engine::IoChannel,
    core: u64,
    first: u64,
    blocks: u64,
    qd: usize,
    in_flight: Cell<usize>,
    stopping: Cell<bool>,
    next: Cell<u64>,
    written: RefCell<Vec<u64>>, // last generation written per block (0 = never)
    submitted: Arc<AtomicU64>,
    completed: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    me: Cell<Option<PollerHandle>>,
    _desc: bdev::BdevDesc,
}

fn stamp(buf: &mut [u8], core: u64, block: u64, gen: u64) {
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let v = core << 56 ^ block << 24 ^ gen ^ (i as u64).rotate_left(17);
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
}

impl IoSink for Workload {
    fn io_done(&self, io: BdevIo) {
        self.in_flight.set(self.in_flight.get() - 1);
        self.completed.fetch_add(1, Ordering::Relaxed);
        if io.status != IoStatus::Success {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let block = io.offset_blocks;
        let gen = io.tag;
        if io.op == IoType::Read && gen != 0 {
            let mut want = vec![0u8; io.bufs[0].len()];
            stamp(&mut want, self.core, block, gen);
            if io.bufs[0][..] != want[..] {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Workload {
    fn tick(self: &Rc<Self>) -> PollStatus {
        while !self.stopping.get() && self.in_flight.get() < self.qd {
            let n = self.next.get();
            self.next.set(n + 1);
            let rel = (n * 7919) % self.blocks;
            let block = self.first + rel;
            let bs = self.ch.bdev().block_size() as usize;
            let mut buf = IoBuf::heap(bs);
            let mut bufs = SgList::new();
            let last = self.written.borrow()[rel as usize];
            // Alternate: write a new generation, or read back the last one written (only when no
            // write to that block can be in flight: blocks are visited in a fixed cycle).
            let (op, tag) = if n.is_multiple_of(2) || last == 0 {
                let gen = n + 1;
                stamp(&mut buf, self.core, block, gen);
                self.written.borrow_mut()[rel as usize] = gen;
                (IoType::Write, gen)
            } else {
                (IoType::Read, last)
            };
            bufs.push(buf);
            self.in_flight.set(self.in_flight.get() + 1);
            self.submitted.fetch_add(1, Ordering::Relaxed);
            let sink: Rc<dyn IoSink> = self.clone();
            self.ch
                .submit(BdevIo::new(op, block, 1, bufs, tag, IoCallback::Sink(sink)));
        }
        if self.stopping.get() && self.in_flight.get() == 0 {
            if let Some(h) = self.me.take() {
                ballast_reactor::unregister_poller(h);
            }
        }
        PollStatus::Busy
    }
}

fn run_workloads(bdev_name: &str, reactors: usize, qd: usize) {
    let rt = Runtime::start(RuntimeConfig {
        cores: (0..reactors).collect(),
        pin: false,
        ..Default::default()
    })
    .unwrap();
    let submitted = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let total = bdev::lookup(bdev_name).unwrap().num_blocks();
    let stripe = total / reactors as u64;
    for core in rt.cores() {
        let (s, c, e) = (submitted.clone(), completed.clone(), errors.clone());
        let name = bdev_name.to_string();
        rt.call(core, move || {
            let desc = bdev::open(&name, None).unwrap();
            let w = Rc::new(Workload {
                ch: desc.channel().unwrap(),
                core: core as u64,
                first: core as u64 * stripe,
                blocks: stripe.min(4099),
                qd,
                in_flight: Cell::new(0),
                stopping: Cell::new(false),
                next: Cell::new(0),
                written: RefCell::new(vec![0; stripe.min(4099) as usize]),
                submitted: s,
                completed: c,
                errors: e,
                me: Cell::new(None),
                _desc: desc,
            });
            let w2 = w.clone();
            let h = ballast_reactor::register_poller("workload", move || w2.tick()).unwrap();
            w.me.set(Some(h));
            let w3 = w.clone();
            ballast_reactor::on_shutdown(move || w3.stopping.set(true)).unwrap();
        })
        .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while completed.load(Ordering::Relaxed) < 20_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "workload made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Shut down with I/O in flight: every submitted I/O must complete, none lost.
    rt.shutdown();
    let (s, c) = (
        submitted.load(Ordering::SeqCst),
        completed.load(Ordering::SeqCst),
    );
    assert_eq!(s, c, "I/O lost at shutdown: submitted {s}, completed {c}");
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "data errors under concurrency"
    );
}

#[test]
fn malloc_several_reactors_then_shutdown_in_flight() {
    malloc::create(malloc::MallocOpts {
        name: "conc_malloc".into(),
        num_blocks: 16384,
        block_size: 512,
        uuid: None,
    })
    .unwrap();
    run_workloads("conc_malloc", 3, 32);
    bdev::delete("conc_malloc").unwrap();
}

#[test]
fn uring_several_reactors_then_shutdown_in_flight() {
    let dir = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("ballast-conc-{}.img", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4096 * 8192)
        .unwrap();
    uring::create(uring::UringOpts {
        name: "conc_uring".into(),
        filename: path.to_string_lossy().into_owned(),
        block_size: 4096,
        uuid: None,
    })
    .unwrap();
    run_workloads("conc_uring", 2, 32);
    bdev::delete("conc_uring").unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn conformance_on_four_reactors() {
    // The same body, with operations spread over more reactors than cores.
    let h = Harness::new(4);
    malloc::create(malloc::MallocOpts {
        name: "conc_conf".into(),
        num_blocks: 4096,
        block_size: 4096,
        uuid: None,
    })
    .unwrap();
    conformance(&h, "conc_conf", Model::Persistent, 9);
}

#[test]
fn compress_several_reactors_then_shutdown_in_flight() {
    // Neighbouring blocks share 16 KiB chunks: every write is a read-modify-write racing
    // others on its chunk, from three reactors, until shutdown with I/O in flight.
    use ballast_engine::backend::compress;
    let h = Harness::new(1);
    malloc_named("conc_zbase", 512, 32768);
    compress::create(
        &h.rt.handle(),
        compress::CompressOpts {
            name: Some("conc_comp".into()),
            base: "conc_zbase".into(),
            ..Default::default()
        },
    )
    .unwrap();
    run_workloads("conc_comp", 3, 32);
    drop(h);
    bdev::delete("conc_comp").unwrap();
}
