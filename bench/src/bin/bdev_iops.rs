//! `ballast-bdev-iops`: in-process 4 KiB random I/O per core through the bdev layer, as medians
//! of several timed runs (the figures of BENCHMARKS.md; `benches/bdev.rs` is the criterion
//! twin for regression tracking).
//!
//! One reactor, pinned to the highest core and spinning (one-hour idle threshold), keeps QD
//! I/Os in flight on one bdev (see `ballast_bench::bdev`), buffers taken once from the pool.
//! Each workload: a warm-up run, then `--runs` runs of about `--secs` seconds each; the table
//! shows the median, min and max I/O rate and the reactor thread's allocations per I/O.
//!
//! Workloads (`--only SUBSTRING` picks some):
//! * `null/{randread,randwrite}/qd32` — the completion submits the next I/O (bdevperf);
//! * `null/randread/{qd32,qd128}_poller` — a reactor poller refills the queue every loop;
//! * `malloc/{randread,randwrite}/qd32` — 256 MiB malloc bdev, pre-filled;
//! * `floor/memcpy_{read,write}` — the same random 4 KiB copies without ballast (a plain loop
//!   on the same core over a 256 MiB region): the malloc bdev's floor on this machine;
//! * `uring/randread/qd32` — uring bdev (O_DIRECT) on a 1 GiB file, `--file` (default
//!   `/var/tmp/ballast-bench-uring.img`, written once with data so reads hit real blocks).

use std::path::PathBuf;
use std::time::Duration;

use ballast_bench::alloc::Counting;
use ballast_bench::baseline::{pin_current, CopyDir, CopyFloor};
use ballast_bench::bdev::{drop_page_cache, prepare_file, BdevLoad, LoadSpec, Submit};
use ballast_bench::{bench_core, start_runtime};
use ballast_engine::backend::{malloc, null, uring};
use ballast_engine::{bdev, IoType};
use ballast_reactor::Runtime;

#[global_allocator]
static ALLOC: Counting = Counting;

const IO: usize = 4096;
const MALLOC_BYTES: u64 = 256 << 20;
const NULL_BYTES: u64 = 1 << 30;
const FILE_BYTES: u64 = 1 << 30;

struct Args {
    runs: usize,
    secs: f64,
    only: Option<String>,
    file: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        runs: 5,
        secs: 1.0,
        only: None,
        file: PathBuf::from("/var/tmp/ballast-bench-uring.img"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--runs" => a.runs = val("--runs").parse().unwrap_or_else(|_| usage("--runs N")),
            "--secs" => a.secs = val("--secs").parse().unwrap_or_else(|_| usage("--secs S")),
            "--only" => a.only = Some(val("--only")),
            "--file" => a.file = PathBuf::from(val("--file")),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a.runs = a.runs.max(1);
    a
}

fn usage(why: &str) -> ! {
    if !why.is_empty() {
        eprintln!("error: {why}");
    }
    eprintln!("usage: ballast-bdev-iops [--runs N] [--secs S] [--only SUBSTRING] [--file PATH]");
    std::process::exit(if why.is_empty() { 0 } else { 2 })
}

struct Row {
    name: String,
    /// I/O rates of the runs, sorted.
    rates: Vec<f64>,
    allocs_per_io: Option<f64>,
    errors: u64,
    note: String,
}

impl Row {
    fn median(&self) -> f64 {
        self.rates[self.rates.len() / 2]
    }
}

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

/// Runs `s` on `core`: a warm-up to size the runs, then `args.runs` runs of ~`args.secs`.
fn measure(args: &Args, rt: &Runtime, core: usize, name: &str, s: LoadSpec, note: &str) -> Row {
    let load = BdevLoad::setup(rt.handle(), core, s);
    let warm = load.run(20_000);
    let warm = load.run(((warm.iops() * args.secs / 4.0) as u64).max(1000));
    let n = ((warm.iops() * args.secs) as u64).max(1000);
    let (mut ios, mut allocs, mut errors) = (0u64, Some(0u64), 0u64);
    let mut rates = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let r = load.run(n);
        ios += r.ios;
        errors += r.errors;
        allocs = allocs.zip(r.allocs).map(|(a, b)| a + b);
        rates.push(r.iops());
    }
    load.teardown();
    rates.sort_by(f64::total_cmp);
    let row = Row {
        name: name.into(),
        rates,
        allocs_per_io: allocs.map(|a| a as f64 / ios as f64),
        errors: errors + warm.errors,
        note: note.into(),
    };
    eprintln!("  {name}: median {:.3} M I/O/s", row.median() / 1e6);
    row
}

fn floor(args: &Args, core: usize, dir: CopyDir, name: &str) -> Row {
    let name = name.to_string();
    let runs = args.runs;
    let secs = args.secs;
    let rates = std::thread::spawn(move || {
        pin_current(core);
        let mut f = CopyFloor::new(MALLOC_BYTES as usize);
        let warm = f.run(200_000, dir);
        let n = ((200_000.0 / warm.as_secs_f64()) * secs) as u64;
        let mut rates: Vec<f64> = (0..runs)
            .map(|_| n as f64 / f.run(n, dir).as_secs_f64())
            .collect();
        rates.sort_by(f64::total_cmp);
        rates
    })
    .join()
    .expect("floor thread");
    let row = Row {
        name,
        rates,
        allocs_per_io: None,
        errors: 0,
        note: "plain memcpy loop, no ballast".into(),
    };
    eprintln!(
        "  {}: median {:.3} M copies/s",
        row.name,
        row.median() / 1e6
    );
    row
}

fn main() {
    ALLOC.mark_installed();
    let args = parse_args();
    let want = |name: &str| match &args.only {
        Some(o) => name.contains(o.as_str()),
        None => true,
    };
    let core = bench_core();
    let rt = start_runtime(&[core], Duration::from_secs(3600));
    eprintln!(
        "1 reactor on core {core}, {} runs of ~{} s per workload, 4 KiB random I/O",
        args.runs, args.secs
    );
    let mut rows = Vec::new();

    null::create("bench_null", NULL_BYTES / IO as u64, IO as u32, None).expect("null bdev");
    let null_loads = [
        ("null/randread/qd32", IoType::Read, 32, Submit::FromCallback),
        (
            "null/randwrite/qd32",
            IoType::Write,
            32,
            Submit::FromCallback,
        ),
        (
            "null/randread/qd32_poller",
            IoType::Read,
            32,
            Submit::FromPoller,
        ),
        (
            "null/randread/qd128_poller",
            IoType::Read,
            128,
            Submit::FromPoller,
        ),
        (
            "null/randwrite/qd128_poller",
            IoType::Write,
            128,
            Submit::FromPoller,
        ),
    ];
    for (name, op, qd, submit) in null_loads {
        if want(name) {
            let note = if op == IoType::Read {
                "reads zero-fill the 4 KiB buffer"
            } else {
                ""
            };
            rows.push(measure(
                &args,
                &rt,
                core,
                name,
                spec("bench_null", op, qd, submit),
                note,
            ));
        }
    }
    bdev::delete("bench_null").expect("delete null");

    if want("malloc") {
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
        for (name, op) in [
            ("malloc/randread/qd32", IoType::Read),
            ("malloc/randwrite/qd32", IoType::Write),
        ] {
            let s = spec("bench_malloc", op, 32, Submit::FromCallback);
            rows.push(measure(&args, &rt, core, name, s, "256 MiB region"));
        }
        bdev::delete("bench_malloc").expect("delete malloc");
    }
    let floor_at = rows.len();

    if want("uring") {
        match prepare_file(&args.file, FILE_BYTES) {
            Ok(wrote) => {
                if wrote {
                    eprintln!("  wrote {} ({} MiB)", args.file.display(), FILE_BYTES >> 20);
                }
                drop_page_cache(&args.file);
                let b = uring::create(uring::UringOpts {
                    name: "bench_uring".into(),
                    filename: args.file.to_string_lossy().into_owned(),
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
                let note = format!("1 GiB file {}, o_direct={direct}", args.file.display());
                let s = spec("bench_uring", IoType::Read, 32, Submit::FromCallback);
                rows.push(measure(&args, &rt, core, "uring/randread/qd32", s, &note));
                bdev::delete("bench_uring").expect("delete uring");
            }
            Err(e) => eprintln!(
                "  skipping uring: cannot prepare {}: {e}",
                args.file.display()
            ),
        }
    }
    rt.shutdown();
    // The floors run after the (spinning) reactor has gone, on the same core.
    for (name, dir) in [
        ("floor/memcpy_write", CopyDir::Write),
        ("floor/memcpy_read", CopyDir::Read),
    ] {
        if want(name) {
            rows.insert(floor_at, floor(&args, core, dir, name));
        }
    }

    println!(
        "\n4 KiB random I/O, one reactor on core {core}; {} runs of ~{} s each",
        args.runs, args.secs
    );
    println!(
        "{:<30} {:>11} {:>11} {:>11} {:>9} {:>8}  note",
        "workload", "median/s", "min/s", "max/s", "ns/I/O", "alloc/IO"
    );
    for r in &rows {
        let m = r.median();
        let allocs = r
            .allocs_per_io
            .map(|a| format!("{a:.4}"))
            .unwrap_or_else(|| "-".into());
        let errs = if r.errors > 0 {
            format!(" ({} ERRORS)", r.errors)
        } else {
            String::new()
        };
        println!(
            "{:<30} {:>11} {:>11} {:>11} {:>9.1} {:>8}  {}{errs}",
            r.name,
            fmt_rate(m),
            fmt_rate(r.rates[0]),
            fmt_rate(*r.rates.last().expect("runs")),
            1e9 / m,
            allocs,
            r.note
        );
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.3} M", r / 1e6)
    } else {
        format!("{:.1} k", r / 1e3)
    }
}
