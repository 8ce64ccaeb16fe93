//! `ballast-lvol-meta`: latency of the lvol store's metadata operations, called in process
//! through the engine's API (as the RPC methods call it), and what 10 000 lvols cost.
//!
//! ```text
//!  caller thread (core 1) ── lvol::create_lvol / snapshot / clone / resize / delete_lvol
//!        │ records applied in memory, then wait until durable
//!        ▼
//!  reactor (core 0): the store's committer ── log block [+ flush] ──► base: malloc | uring file
//! ```
//!
//! Per base (`ram`: a malloc bdev; `file`: a uring bdev over a sparse file), on a store with
//! 4 MiB clusters, `--iters` cycles of: create a thin 1 GiB lvol `v` (timed), write a 4 KiB
//! block into `--write-clusters` of its clusters (not timed), snapshot `v` as `s`, clone `s`
//! as `c`, grow `v` to 2 GiB, shrink it back, delete `c` and `v` (two "delete" samples), then
//! delete `s` (which frees the written clusters). Each operation answers once its metadata is
//! durable, as the RPC does; on a file every commit ends with a flush (fdatasync).
//!
//! Scale (`ram` only): `--count` thin lvols created one after the other in one store on an
//! overcommitted 64 GiB malloc base (16 384 clusters, so the store may hold 16 384 lvols):
//! the total time, the per-create latency of the first and the last thousand, the store's
//! metadata memory ([`lvol::lvstore_mem_bytes`]) and the process's resident-set growth, again
//! once each lvol has one cluster written (skipped with `--write-clusters 0`); then `--iters` /
//! 5 more operation cycles among those lvols, and the time to delete them all.
//!
//! The reactor keeps ballastd's default 1 ms idle threshold, so an operation that finds it
//! asleep pays its wake-up, as an RPC to an idle daemon does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ballast_bench::baseline::pin_current;
use ballast_bench::{can_pin, start_runtime, summarize, Summary};
use ballast_engine::backend::lvol::{self, ClearMethod, LvsOpts};
use ballast_engine::backend::{malloc, uring};
use ballast_engine::{bdev, BdevIo, IoBuf, IoCallback, IoType, SgList};
use ballast_reactor::Runtime;
use clap::Parser;

const GIB: u64 = 1 << 30;
const CLUSTER: u64 = 4 << 20;
const BLOCK: u32 = 4096;
/// Base of the latency runs (both kinds): 1024 clusters.
const OPS_BASE: u64 = 4 * GIB;
/// Base of the 10 000-lvol run: 16 384 clusters (the store's lvol limit follows its clusters).
const SCALE_BASE: u64 = 64 * GIB;

#[derive(Parser, Debug)]
#[command(name = "ballast-lvol-meta", about = "lvol metadata operation latency")]
struct Args {
    /// Operation cycles per base (each: create, snapshot, clone, grow, shrink, 3 deletes).
    #[arg(long, default_value_t = 1000)]
    iters: usize,
    /// Operation cycles on the file base (each commit there waits for a flush).
    #[arg(long, default_value_t = 200)]
    file_iters: usize,
    /// Lvols of the scale run (0: skip it).
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Clusters of `v` written (one 4 KiB block each) before it is snapshotted.
    #[arg(long, default_value_t = 4)]
    write_clusters: u64,
    /// Bases to measure: ram, file or both.
    #[arg(long, default_value = "both", value_parser = ["ram", "file", "both"])]
    base: String,
    /// The file of the file base (created sparse, removed afterwards).
    #[arg(long, default_value = "/var/tmp/ballast-lvol-meta.img")]
    file: PathBuf,
    /// Core of the reactor; the caller thread is pinned to the other core of a 2-core box.
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// Machine-readable results (one JSON object).
    #[arg(long)]
    json: bool,
}

/// Latency samples by operation, in the order first recorded.
#[derive(Default)]
struct Samples(Vec<(&'static str, Vec<Duration>)>);

impl Samples {
    fn time<T>(&mut self, op: &'static str, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let r = f();
        let d = t0.elapsed();
        match self.0.iter_mut().find(|(n, _)| *n == op) {
            Some((_, v)) => v.push(d),
            None => self.0.push((op, vec![d])),
        }
        r
    }

    fn summaries(mut self) -> Vec<(&'static str, Summary)> {
        self.0.iter_mut().map(|(n, v)| (*n, summarize(v))).collect()
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Resident set of this process in bytes (/proc/self/statm), after the allocator has given
/// back the free memory it can (so freed heap does not count).
fn rss() -> u64 {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

/// Writes one 4 KiB block at the start of each of the first `clusters` clusters of bdev
/// `name`, from the reactor on `core`, and waits for them.
fn write_clusters(rt: &Runtime, core: usize, name: &str, clusters: u64) {
    if clusters == 0 {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = name.to_string();
    rt.call(core, move || {
        let desc = bdev::open(&name, None).expect("open lvol");
        let ch = desc.channel().expect("lvol channel");
        let per = CLUSTER / BLOCK as u64;
        for k in 0..clusters {
            let mut sg = SgList::new();
            sg.push(IoBuf::from_slice(&[0x5a; BLOCK as usize]));
            let tx = tx.clone();
            let cb = IoCallback::Fn(Box::new(move |io: BdevIo| {
                let _ = tx.send(io.status);
            }));
            ch.submit(BdevIo::new(IoType::Write, k * per, 1, sg, 0, cb));
        }
        // The channel and descriptor go when the last completion has run: keep them in a
        // thread-local of this reactor until the caller asks to drop them.
        HELD.with(|h| h.borrow_mut().push((desc, ch)));
    })
    .expect("reactor call");
    for _ in 0..clusters {
        let st = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("write completion");
        assert!(st.is_ok(), "write to {clusters} clusters: {st:?}");
    }
    rt.call(core, || HELD.with(|h| h.borrow_mut().clear()))
        .expect("reactor call");
}

thread_local! {
    static HELD: std::cell::RefCell<Vec<(bdev::BdevDesc, ballast_engine::IoChannel)>> =
        std::cell::RefCell::default();
}

fn make_store(rt: &Runtime, bdev_name: &str, lvs: &str) {
    lvol::create_lvstore(
        &rt.handle(),
        &LvsOpts {
            bdev_name: bdev_name.into(),
            lvs_name: lvs.into(),
            cluster_sz: Some(CLUSTER),
            clear_method: ClearMethod::Unmap,
        },
    )
    .expect("create lvol store");
}

fn create(lvs: &str, name: &str) {
    lvol::create_lvol(None, Some(lvs), name, GIB, true, ClearMethod::Unmap)
        .unwrap_or_else(|e| panic!("create {lvs}/{name}: {e}"));
}

/// One operation cycle on lvol names `v{i}`, `s{i}`, `c{i}` of store `lvs`.
fn cycle(rt: &Runtime, core: usize, lvs: &str, i: usize, write: u64, smp: &mut Samples) {
    let (v, s, c) = (format!("v{i}"), format!("s{i}"), format!("c{i}"));
    let (va, sa, ca) = (
        format!("{lvs}/{v}"),
        format!("{lvs}/{s}"),
        format!("{lvs}/{c}"),
    );
    smp.time("create (thin, 1 GiB)", || create(lvs, &v));
    write_clusters(rt, core, &va, write);
    smp.time("snapshot", || lvol::snapshot(&va, &s).expect("snapshot"));
    smp.time("clone", || lvol::clone(&sa, &c).expect("clone"));
    smp.time("resize (grow 1 → 2 GiB)", || {
        lvol::resize(&va, 2 * GIB).expect("grow")
    });
    smp.time("resize (shrink 2 → 1 GiB)", || {
        lvol::resize(&va, GIB).expect("shrink")
    });
    smp.time("delete (thin lvol)", || {
        lvol::delete_lvol(&ca).expect("delete clone")
    });
    smp.time("delete (thin lvol)", || {
        lvol::delete_lvol(&va).expect("delete origin")
    });
    smp.time("delete (snapshot, frees its clusters)", || {
        lvol::delete_lvol(&sa).expect("delete snapshot")
    });
}

fn report(title: &str, rows: &[(&'static str, Summary)], json: &mut serde_json::Value) {
    let mut out = serde_json::Map::new();
    println!("\n{title}");
    println!("| operation | n | p50 (µs) | p99 (µs) | min (µs) | max (µs) |");
    println!("|---|---|---|---|---|---|");
    for (op, s) in rows {
        println!(
            "| {op} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            s.n,
            us(s.p50),
            us(s.p99),
            us(s.min),
            us(s.max)
        );
        out.insert(
            (*op).to_string(),
            serde_json::json!({"n": s.n, "p50_us": us(s.p50), "p99_us": us(s.p99),
                "min_us": us(s.min), "max_us": us(s.max)}),
        );
    }
    json[title] = serde_json::Value::Object(out);
}

fn ops_run(
    rt: &Runtime,
    core: usize,
    kind: &str,
    iters: usize,
    args: &Args,
) -> Vec<(&'static str, Summary)> {
    let bname = format!("meta_{kind}");
    match kind {
        "ram" => {
            malloc::create(malloc::MallocOpts {
                name: bname.clone(),
                num_blocks: OPS_BASE / BLOCK as u64,
                block_size: BLOCK,
                uuid: None,
            })
            .expect("malloc base");
        }
        _ => {
            let f = std::fs::File::create(&args.file).expect("create the base file");
            f.set_len(OPS_BASE).expect("size the base file");
            drop(f);
            uring::create(uring::UringOpts {
                name: bname.clone(),
                filename: args.file.to_string_lossy().into_owned(),
                block_size: BLOCK,
                uuid: None,
            })
            .expect("uring base");
        }
    }
    let lvs = format!("lvs_{kind}");
    make_store(rt, &bname, &lvs);
    let mut smp = Samples::default();
    // A few cycles first (not kept): page faults of fresh metadata, first allocations.
    let mut warm = Samples::default();
    for i in 0..5.min(iters) {
        cycle(
            rt,
            core,
            &lvs,
            1_000_000 + i,
            args.write_clusters,
            &mut warm,
        );
    }
    for i in 0..iters {
        cycle(rt, core, &lvs, i, args.write_clusters, &mut smp);
    }
    let rep = lvol::check(&rt.handle(), &bname).expect("check");
    assert!(
        rep.errors.is_empty(),
        "store inconsistent: {:?}",
        rep.errors
    );
    lvol::delete_lvstore(None, Some(&lvs)).expect("delete store");
    bdev::delete(&bname).expect("delete base");
    if kind == "file" {
        let _ = std::fs::remove_file(&args.file);
    }
    smp.summaries()
}

fn scale_run(rt: &Runtime, core: usize, args: &Args, json: &mut serde_json::Value) {
    let n = args.count;
    malloc::create_with(
        malloc::MallocOpts {
            name: "meta_scale".into(),
            num_blocks: SCALE_BASE / BLOCK as u64,
            block_size: BLOCK,
            uuid: None,
        },
        true,
    )
    .expect("malloc base (overcommitted)");
    make_store(rt, "meta_scale", "lvs_scale");
    let mem0 = lvol::lvstore_mem_bytes(None, Some("lvs_scale")).expect("mem");
    let rss0 = rss();
    let mut each = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        create("lvs_scale", &format!("vol{i:05}"));
        each.push(t.elapsed());
    }
    let total = t0.elapsed();
    let mem1 = lvol::lvstore_mem_bytes(None, Some("lvs_scale")).expect("mem");
    let rss1 = rss();
    let k = 1000.min(n);
    let first = summarize(&mut each[..k].to_vec());
    let last = summarize(&mut each[n - k..].to_vec());
    let all = summarize(&mut each);
    let md = mem1 - mem0;
    let grow = rss1.saturating_sub(rss0);
    println!("\nScale: {n} thin 1 GiB lvols in one store (64 GiB malloc base, 4 MiB clusters)");
    println!(
        "- created in {:.2} s ({:.0} µs each on average); per create p50 {:.0} µs, p99 {:.0} µs",
        total.as_secs_f64(),
        us(total) / n as f64,
        us(all.p50),
        us(all.p99)
    );
    println!(
        "- first {k}: p50 {:.0} µs, p99 {:.0} µs; last {k}: p50 {:.0} µs, p99 {:.0} µs",
        us(first.p50),
        us(first.p99),
        us(last.p50),
        us(last.p99)
    );
    println!(
        "- metadata memory (lvstore_mem_bytes): {:.2} MiB for {n} lvols ({:.0} B per lvol; empty \
         store {:.1} KiB)",
        md as f64 / (1 << 20) as f64,
        md as f64 / n as f64,
        mem0 as f64 / 1024.0
    );
    println!(
        "- process RSS growth: {:.2} MiB ({:.0} B per lvol; bdevs, names, metadata, and the base's \
         written metadata pages)",
        grow as f64 / (1 << 20) as f64,
        grow as f64 / n as f64
    );
    json["scale"] = serde_json::json!({
        "count": n, "create_total_s": total.as_secs_f64(),
        "create_p50_us": us(all.p50), "create_p99_us": us(all.p99),
        "first_p50_us": us(first.p50), "last_p50_us": us(last.p50),
        "first_p99_us": us(first.p99), "last_p99_us": us(last.p99),
        "mem_bytes": md, "mem_empty_store_bytes": mem0, "rss_growth_bytes": grow,
    });
    // The same lvols once written: one 4 KiB block in one cluster of each (the store has
    // 16 384 clusters: room for one each).
    if args.write_clusters > 0 {
        let t0 = Instant::now();
        for i in 0..n {
            write_clusters(rt, core, &format!("lvs_scale/vol{i:05}"), 1);
        }
        let took = t0.elapsed();
        let mem2 = lvol::lvstore_mem_bytes(None, Some("lvs_scale")).expect("mem");
        let rss2 = rss();
        let data = n as u64 * BLOCK as u64;
        println!(
            "- once each has one cluster written ({:.1} s): metadata memory {:.2} MiB ({:.0} B per \
             lvol); RSS growth since the first create {:.2} MiB, of which {:.2} MiB are the \
             written data's pages",
            took.as_secs_f64(),
            (mem2 - mem0) as f64 / (1 << 20) as f64,
            (mem2 - mem0) as f64 / n as f64,
            rss2.saturating_sub(rss0) as f64 / (1 << 20) as f64,
            data as f64 / (1 << 20) as f64
        );
        json["scale"]["written_clusters_each"] = serde_json::json!(1);
        json["scale"]["written_mem_bytes"] = serde_json::json!(mem2 - mem0);
        json["scale"]["written_rss_growth_bytes"] = serde_json::json!(rss2.saturating_sub(rss0));
    }
    let mut smp = Samples::default();
    for i in 0..(args.iters / 5).max(1) {
        cycle(rt, core, "lvs_scale", i, args.write_clusters, &mut smp);
    }
    report(
        &format!("Operations with {n} lvols in the store (RAM base)"),
        &smp.summaries(),
        json,
    );
    let t0 = Instant::now();
    for i in 0..n {
        lvol::delete_lvol(&format!("lvs_scale/vol{i:05}")).expect("delete");
    }
    let del = t0.elapsed();
    println!(
        "- deleting the {n} lvols: {:.2} s ({:.0} µs each)",
        del.as_secs_f64(),
        us(del) / n as f64
    );
    json["scale"]["delete_total_s"] = serde_json::json!(del.as_secs_f64());
    let rep = lvol::check(&rt.handle(), "meta_scale").expect("check");
    assert!(
        rep.errors.is_empty(),
        "store inconsistent: {:?}",
        rep.errors
    );
    lvol::delete_lvstore(None, Some("lvs_scale")).expect("delete store");
    bdev::delete("meta_scale").expect("delete base");
}

fn main() {
    let args = Args::parse();
    let core = args.core;
    let rt = start_runtime(&[core], Duration::from_millis(1));
    let other = if core == 0 { 1 } else { 0 };
    if can_pin(&[other]) {
        pin_current(other);
    }
    let mut json = serde_json::json!({});
    let kinds: Vec<&str> = match args.base.as_str() {
        "ram" => vec!["ram"],
        "file" => vec!["file"],
        _ => vec!["ram", "file"],
    };
    for kind in kinds {
        let iters = if kind == "file" {
            args.file_iters
        } else {
            args.iters
        };
        let rows = ops_run(&rt, core, kind, iters, &args);
        let title = match kind {
            "ram" => "RAM base (malloc, 4 GiB, 4 MiB clusters)".to_string(),
            _ => format!(
                "File base (uring, sparse 4 GiB file {}, 4 MiB clusters; a flush per commit)",
                args.file.display()
            ),
        };
        report(&title, &rows, &mut json);
    }
    if args.count > 0 && args.base != "file" {
        scale_run(&rt, core, &args, &mut json);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json).expect("json"));
    }
    drop(rt);
}
