//! In-process 4 KiB random I/O per core through the bdev layer: one pinned reactor keeps QD
//! I/Os in flight through an `IoSink` with buffers pooled once (see `ballast_bench::bdev`).
//! Reported as I/Os per second (criterion `Throughput::Elements`, one element per I/O).
//!
//! * `bdev/null/{randread,randwrite}/qd{32,1}` — resubmit from the completion (bdevperf).
//! * `bdev/null/randread/qd32_poller` — a reactor poller refills the queue instead.
//! * `bdev/malloc/{randread,randwrite}/qd32` — 256 MiB malloc bdev, pre-filled.
//! * `bdev_uring/randread/qd32` — uring bdev on a 1 GiB file under /var/tmp (written once, so
//!   reads hit real blocks; `BALLAST_BENCH_FILE` overrides the path).
//!
//! After each bench the allocations made on the reactor per I/O are printed (expected 0).

use std::cell::Cell;
use std::path::PathBuf;
use std::time::Duration;

use ballast_bench::alloc::Counting;
use ballast_bench::bdev::{drop_page_cache, prepare_file, BdevLoad, LoadSpec, Submit};
use ballast_bench::{bench_core, start_runtime};
use ballast_engine::backend::{malloc, null, uring};
use ballast_engine::{bdev, IoType};
use ballast_reactor::Runtime;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static ALLOC: Counting = Counting;

const IO: usize = 4096;
const MALLOC_BYTES: u64 = 256 << 20;
const FILE_BYTES: u64 = 1 << 30;

fn spec(bdev: &str, op: IoType, qd: usize, submit: Submit) -> LoadSpec {
    LoadSpec {
        bdev: bdev.into(),
        op,
        qd,
        io_size: IO,
        submit,
        sequential: false,
    }
}

/// One criterion bench of `spec` on reactor `core`; prints allocations per I/O afterwards.
fn bench_load(c: &mut Criterion, group: &str, name: &str, rt: &Runtime, core: usize, s: LoadSpec) {
    let load = BdevLoad::setup(rt.handle(), core, s);
    let ios = Cell::new(0u64);
    let allocs = Cell::new(Some(0u64));
    let errors = Cell::new(0u64);
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let r = load.run(iters);
            ios.set(ios.get() + r.ios);
            allocs.set(allocs.get().zip(r.allocs).map(|(a, b)| a + b));
            errors.set(errors.get() + r.errors);
            r.elapsed
        })
    });
    g.finish();
    if ios.get() > 0 {
        let per_io = allocs
            .get()
            .map(|a| format!("{:.4}", a as f64 / ios.get() as f64))
            .unwrap_or_else(|| "n/a".into());
        eprintln!(
            "  {group}/{name}: {} I/Os, {} errors, allocations per I/O on the reactor: {per_io}",
            ios.get(),
            errors.get()
        );
    }
    load.teardown();
}

fn bdev_inprocess(c: &mut Criterion) {
    ALLOC.mark_installed();
    let core = bench_core();
    let rt = start_runtime(&[core], Duration::from_secs(3600));

    null::create("bench_null", FILE_BYTES / IO as u64, IO as u32, None).expect("null bdev");
    for (qd, label) in [(32, "qd32"), (1, "qd1")] {
        for (op, opname) in [(IoType::Read, "randread"), (IoType::Write, "randwrite")] {
            let s = spec("bench_null", op, qd, Submit::FromCallback);
            bench_load(c, "bdev", &format!("null/{opname}/{label}"), &rt, core, s);
        }
    }
    let s = spec("bench_null", IoType::Read, 32, Submit::FromPoller);
    bench_load(c, "bdev", "null/randread/qd32_poller", &rt, core, s);
    bdev::delete("bench_null").expect("delete null");

    malloc::create(malloc::MallocOpts {
        name: "bench_malloc".into(),
        num_blocks: MALLOC_BYTES / IO as u64,
        block_size: IO as u32,
        uuid: None,
    })
    .expect("malloc bdev");
    // Touch every block once so reads copy real pages, not the shared zero page.
    let mut fill = spec("bench_malloc", IoType::Write, 32, Submit::FromCallback);
    fill.sequential = true;
    let l = BdevLoad::setup(rt.handle(), core, fill);
    l.run(MALLOC_BYTES / IO as u64);
    l.teardown();
    for (op, opname) in [(IoType::Read, "randread"), (IoType::Write, "randwrite")] {
        let s = spec("bench_malloc", op, 32, Submit::FromCallback);
        bench_load(c, "bdev", &format!("malloc/{opname}/qd32"), &rt, core, s);
    }
    bdev::delete("bench_malloc").expect("delete malloc");
    rt.shutdown();
}

fn bdev_uring(c: &mut Criterion) {
    let path = std::env::var_os("BALLAST_BENCH_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/ballast-bench-uring.img"));
    match prepare_file(&path, FILE_BYTES) {
        Ok(true) => eprintln!("  wrote {} ({} MiB)", path.display(), FILE_BYTES >> 20),
        Ok(false) => {}
        Err(e) => {
            eprintln!(
                "  skipping uring bench: cannot prepare {}: {e}",
                path.display()
            );
            return;
        }
    }
    drop_page_cache(&path);
    let core = bench_core();
    let rt = start_runtime(&[core], Duration::from_secs(3600));
    let b = uring::create(uring::UringOpts {
        name: "bench_uring".into(),
        filename: path.to_string_lossy().into_owned(),
        block_size: IO as u32,
        uuid: None,
    })
    .expect("uring bdev");
    let direct = b
        .describe()
        .into_iter()
        .find(|(k, _)| k == "o_direct")
        .map(|(_, v)| v)
        .unwrap_or_default();
    eprintln!("  uring bdev on {} (o_direct={direct})", path.display());
    let s = spec("bench_uring", IoType::Read, 32, Submit::FromCallback);
    bench_load(c, "bdev_uring", "randread/qd32", &rt, core, s);
    bdev::delete("bench_uring").expect("delete uring");
    rt.shutdown();
}

/// Short runs: the figures of record come from several runs and their median (BENCHMARKS.md);
/// command-line flags (`--measurement-time`, ...) still override these.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bdev_inprocess, bdev_uring
}
criterion_main!(benches);
