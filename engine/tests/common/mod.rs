//! Test support: drive bdev I/O synchronously from the test thread through reactors, and the
//! one conformance body every bdev implementation must pass.
#![allow(dead_code)]

pub mod lossy;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use ballast_engine::{bdev, BdevIo, IoBuf, IoCallback, IoChannel, IoStatus, IoType, SgList};
use ballast_reactor::{Runtime, RuntimeConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    /// Channels (and their descriptors) kept open on each reactor between test operations.
    static CHANNELS: RefCell<HashMap<String, (bdev::BdevDesc, IoChannel)>> = RefCell::default();
}

/// Reactors plus a synchronous I/O driver.
pub struct Harness {
    pub rt: Runtime,
}

impl Harness {
    pub fn new(reactors: usize) -> Self {
        let rt = Runtime::start(RuntimeConfig {
            cores: (0..reactors).collect(),
            pin: false,
            ..Default::default()
        })
        .unwrap();
        Harness { rt }
    }

    /// Runs one I/O on `core` against bdev `name`; returns its status and the bytes read.
    /// `split_seed` splits the data buffer into 1-4 pieces of random length.
    #[allow(clippy::too_many_arguments)]
    pub fn io(
        &self,
        core: usize,
        name: &str,
        op: IoType,
        offset_blocks: u64,
        num_blocks: u64,
        data: Option<Vec<u8>>,
        read_len: usize,
        split_seed: Option<u64>,
    ) -> (IoStatus, Vec<u8>) {
        let (tx, rx) = mpsc::sync_channel(1);
        let name = name.to_string();
        self.rt
            .send(core, move || {
                let ch = CHANNELS.with(|c| {
                    let mut c = c.borrow_mut();
                    if !c.contains_key(&name) {
                        let desc = bdev::open(&name, None).expect("open bdev");
                        let ch = desc.channel().expect("channel");
                        c.insert(name.clone(), (desc, ch));
                    }
                    c[&name].1.clone()
                });
                let bytes = data.unwrap_or_else(|| vec![0xA5; read_len]);
                let bufs = split(&bytes, split_seed);
                let cb = IoCallback::Fn(Box::new(move |io: BdevIo| {
                    let mut out = Vec::new();
                    for b in io.bufs.iter() {
                        out.extend_from_slice(b);
                    }
                    let _ = tx.send((io.status, out));
                }));
                ch.submit(BdevIo::new(op, offset_blocks, num_blocks, bufs, 0, cb));
            })
            .unwrap();
        rx.recv_timeout(Duration::from_secs(30))
            .expect("I/O completion never arrived")
    }

    /// Drops the channels this harness kept open on every reactor.
    pub fn close_channels(&self) {
        for core in self.rt.cores() {
            self.rt
                .call(core, || CHANNELS.with(|c| c.borrow_mut().clear()))
                .unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.close_channels();
    }
}

/// Splits `data` into 1..=4 heap buffers of random lengths (or one buffer if no seed).
fn split(data: &[u8], seed: Option<u64>) -> SgList {
    let mut out = SgList::new();
    let Some(seed) = seed else {
        out.push(IoBuf::from_slice(data));
        return out;
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let pieces = rng.gen_range(1..=4usize).min(data.len().max(1));
    let mut cuts: Vec<usize> = (1..pieces).map(|_| rng.gen_range(1..data.len())).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut start = 0;
    for c in cuts.into_iter().chain(std::iter::once(data.len())) {
        out.push(IoBuf::from_slice(&data[start..c]));
        start = c;
    }
    out
}

/// Fills `data` with compressible, text-like bytes (words from a small vocabulary), so
/// compressing stages take their compressed path as well as their raw one.
pub fn text_like(rng: &mut SmallRng, data: &mut [u8]) {
    const WORDS: &[&[u8]] = &[
        b"block ",
        b"volume ",
        b"chunk ",
        b"the ",
        b"of ",
        b"nvme ",
        b"reactor ",
        b"queue ",
        b"write ",
        b"read ",
        b"\n",
        b"ballast ",
        b"compress ",
        b"0123 ",
        b"and ",
    ];
    let mut at = 0;
    while at < data.len() {
        let w = WORDS[rng.gen_range(0..WORDS.len())];
        let n = w.len().min(data.len() - at);
        data[at..at + n].copy_from_slice(&w[..n]);
        at += n;
    }
}

/// Creates malloc bdev `name`.
pub fn malloc_named(name: &str, bs: u32, blocks: u64) {
    ballast_engine::backend::malloc::create(ballast_engine::backend::malloc::MallocOpts {
        name: name.into(),
        num_blocks: blocks,
        block_size: bs,
        uuid: None,
    })
    .unwrap();
}

/// What the bdev under test keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Reads return what was written (malloc, uring, pipelines).
    Persistent,
    /// Writes vanish, reads are zeros (null).
    Discard,
}

/// The shared conformance body: random writes/reads verified byte-exact against a model,
/// flush, write-zeroes, unmap, out-of-range and length errors.
pub fn conformance(h: &Harness, name: &str, model_kind: Model, seed: u64) {
    conformance_from(h, name, model_kind, seed, None)
}

/// [`conformance`] on a bdev that holds `initial` to begin with (zeros if `None`): a clone
/// of a snapshot, an lvol written before it was snapshotted.
pub fn conformance_from(
    h: &Harness,
    name: &str,
    model_kind: Model,
    seed: u64,
    initial: Option<Vec<u8>>,
) {
    let b = bdev::lookup(name).expect("bdev registered");
    let bs = b.block_size() as usize;
    let nb = b.num_blocks();
    let mut model = initial.unwrap_or_else(|| vec![0u8; nb as usize * bs]);
    assert_eq!(
        model.len(),
        nb as usize * bs,
        "{name}: initial content size"
    );
    let mut rng = SmallRng::seed_from_u64(seed);
    let cores = h.rt.cores();
    let check = |model: &Vec<u8>, off: u64, n: u64, got: &[u8], what: &str| {
        let want: &[u8] = &model[off as usize * bs..(off + n) as usize * bs];
        if model_kind == Model::Discard {
            assert!(
                got.iter().all(|&x| x == 0),
                "{name}: {what}: null bdev read non-zero"
            );
        } else if got != want {
            let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
            panic!("{name}: {what}: mismatch at byte {first} of read off={off} n={n}");
        }
    };

    for i in 0..300u64 {
        let core = cores[i as usize % cores.len()];
        let n = rng.gen_range(1..=64u64.min(nb));
        let off = rng.gen_range(0..=nb - n);
        if rng.gen_bool(0.55) {
            let mut data = vec![0u8; n as usize * bs];
            if rng.gen_bool(0.5) {
                rng.fill(&mut data[..]);
            } else {
                text_like(&mut rng, &mut data);
            }
            let (st, back) = h.io(
                core,
                name,
                IoType::Write,
                off,
                n,
                Some(data.clone()),
                0,
                Some(i),
            );
            assert_eq!(st, IoStatus::Success, "{name}: write off={off} n={n}");
            assert!(
                back == data,
                "{name}: write off={off} n={n} changed the caller's buffers"
            );
            if model_kind == Model::Persistent {
                model[off as usize * bs..(off + n) as usize * bs].copy_from_slice(&data);
            }
        } else {
            let (st, got) = h.io(
                core,
                name,
                IoType::Read,
                off,
                n,
                None,
                n as usize * bs,
                Some(i),
            );
            assert_eq!(st, IoStatus::Success, "{name}: read off={off} n={n}");
            check(&model, off, n, &got, "random read");
        }
    }

    // Flush.
    let (st, _) = h.io(cores[0], name, IoType::Flush, 0, nb, None, 0, None);
    assert_eq!(st, IoStatus::Success, "{name}: flush");

    // Write zeroes and unmap: the ranges read back as zeros; neighbours are untouched.
    for op in [IoType::WriteZeroes, IoType::Unmap] {
        let n = rng.gen_range(1..=nb.min(300));
        let off = rng.gen_range(0..=nb - n);
        let (st, _) = h.io(cores[0], name, op, off, n, None, 0, None);
        assert_eq!(st, IoStatus::Success, "{name}: {op:?}");
        model[off as usize * bs..(off + n) as usize * bs].fill(0);
        let lo = off.saturating_sub(2);
        let hi = (off + n + 2).min(nb);
        let (st, got) = h.io(
            cores[0],
            name,
            IoType::Read,
            lo,
            hi - lo,
            None,
            (hi - lo) as usize * bs,
            None,
        );
        assert_eq!(st, IoStatus::Success);
        check(&model, lo, hi - lo, &got, "read after zeroing");
    }

    // Errors: out of range (including u64 overflow), bad lengths. The bdev is left intact.
    let bad: &[(IoType, u64, u64, usize, IoStatus)] = &[
        (IoType::Read, nb, 1, bs, IoStatus::OutOfRange),
        (IoType::Read, nb - 1, 2, 2 * bs, IoStatus::OutOfRange),
        (IoType::Write, u64::MAX, 2, 2 * bs, IoStatus::OutOfRange),
        (IoType::WriteZeroes, nb - 1, 2, 0, IoStatus::OutOfRange),
        (IoType::Unmap, nb, 1, 0, IoStatus::OutOfRange),
        (IoType::Read, 0, 1, bs + 1, IoStatus::InvalidLength),
        (IoType::Write, 0, 2, bs, IoStatus::InvalidLength),
        (IoType::Read, 0, 0, 0, IoStatus::InvalidLength),
    ];
    for &(op, off, n, len, want) in bad {
        let data = (op == IoType::Write).then(|| vec![0xEE; len]);
        let (st, _) = h.io(cores[0], name, op, off, n, data, len, None);
        assert_eq!(st, want, "{name}: {op:?} off={off} n={n} len={len}");
    }

    // Full read-back against the model, in chunks.
    let chunk = 256u64.min(nb);
    let mut off = 0;
    while off < nb {
        let n = chunk.min(nb - off);
        let (st, got) = h.io(
            cores[1 % cores.len()],
            name,
            IoType::Read,
            off,
            n,
            None,
            n as usize * bs,
            None,
        );
        assert_eq!(st, IoStatus::Success);
        check(&model, off, n, &got, "final verify");
        off += n;
    }
}

/// Opens `name` on the harness's first reactor, submits the I/O `make` builds from the bdev's
/// block size and the completion callback, and returns what `report` reads off the completed
/// I/O (there, while its buffers are still the bdev's to lend).
pub fn submit_one<R: Send + 'static>(
    h: &Harness,
    name: &str,
    make: impl FnOnce(u32, ballast_engine::IoCallback) -> ballast_engine::BdevIo + Send + 'static,
    report: impl FnOnce(&mut ballast_engine::BdevIo) -> R + Send + 'static,
) -> R {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let name = name.to_string();
    h.rt.send(h.rt.cores()[0], move || {
        let desc = bdev::open(&name, None).unwrap();
        let ch = desc.channel().unwrap();
        let bs = desc.bdev().block_size();
        let keep = (desc, ch.clone());
        let cb = IoCallback::Fn(Box::new(move |mut io: BdevIo| {
            drop(keep);
            let _ = tx.send(report(&mut io));
        }));
        ch.submit(make(bs, cb));
    })
    .unwrap();
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()
}

/// A zero-copy read of `nb` blocks at `off`: (status, buffers, first buffer lent?, its
/// address, the data).
pub fn lend_read(
    h: &Harness,
    name: &str,
    op: IoType,
    off: u64,
    nb: u64,
    with_buf: bool,
) -> (IoStatus, usize, bool, usize, Vec<u8>) {
    submit_one(
        h,
        name,
        move |bs, cb| {
            let mut bufs = SgList::new();
            if with_buf {
                bufs.push(IoBuf::heap(nb as usize * bs as usize));
            }
            let mut io = BdevIo::new(op, off, nb, bufs, 0, cb);
            io.lend = true;
            io
        },
        |io| {
            let first = io.bufs.first();
            (
                io.status,
                io.bufs.len(),
                first.is_some_and(|b| b.is_lent()),
                first.map_or(0, |b| b.as_ptr() as usize),
                first.map_or(Vec::new(), |b| b.to_vec()),
            )
        },
    )
}

thread_local! {
    /// Lent buffers a test keeps out on a reactor (see [`lend_read_keep`]).
    static KEPT: RefCell<Vec<SgList>> = RefCell::default();
}

/// As [`lend_read`] (no buffer given), but the buffers stay out on the reactor until
/// [`release_kept`]: a holder that has not sent them yet. Returns (status, data).
pub fn lend_read_keep(h: &Harness, name: &str, off: u64, nb: u64) -> (IoStatus, Vec<u8>) {
    submit_one(
        h,
        name,
        move |_, cb| {
            let mut io = BdevIo::new(IoType::Read, off, nb, SgList::new(), 0, cb);
            io.lend = true;
            io
        },
        |io| {
            let data = io.bufs.first().map_or(Vec::new(), |b| b.to_vec());
            let kept = std::mem::take(&mut io.bufs);
            KEPT.with(|k| k.borrow_mut().push(kept));
            (io.status, data)
        },
    )
}

/// Drops the buffers [`lend_read_keep`] kept out (on every reactor of `h`).
pub fn release_kept(h: &Harness) {
    for core in h.rt.cores() {
        h.rt.handle()
            .call(core, || KEPT.with(|k| k.borrow_mut().clear()))
            .unwrap();
    }
}

/// Mirror `name` over `children` (panics naming it if it cannot be made).
pub fn mirror_over(h: &Harness, name: &str, children: &[&str]) {
    ballast_engine::backend::mirror::create(
        &h.rt.handle(),
        ballast_engine::backend::mirror::MirrorOpts {
            name: name.into(),
            children: children.iter().map(|c| c.to_string()).collect(),
            uuid: None,
            region_bytes: None,
        },
    )
    .unwrap_or_else(|e| panic!("mirror {name}: {e}"));
}
