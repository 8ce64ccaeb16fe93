//! `ballast-perf`: an spdk_nvme_perf-class load generator.
//!
//! Drives an NVMe/TCP target (`-r 'trtype:tcp traddr:127.0.0.1 trsvcid:4420 subnqn:…'`) with
//! one I/O queue per core, or an in-process bdev (`--bdev null|malloc`, to measure the engine
//! without the network). Each core keeps `-q` commands in flight from a reactor poller, records
//! every completion's latency in an HDR histogram, prints live per-second progress, then a
//! per-core and total summary (IOPS, MiB/s, avg/min/max, p50…p99.99), or JSON with `--json`.
//!
//! Options are checked before any I/O: sizes against the block size, the device and the
//! controller's MDTS, the depth against what the target grants (it says when it uses less).
//! Only successful I/Os count in IOPS, MiB/s and latency; failed ones are counted apart, by
//! NVMe (or bdev) status in words, and make the exit status 1. Usage errors exit with 2.
//!
//! ```text
//!  main thread: admin queue (keep-alive), progress ticker, summary
//!  reactor per core: poller ─ submit ≤ q ─► IoQpair / bdev channel ─► completions ─► histogram
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_bench::data::Data;
use ballast_bench::perf_meter::{self, CoreResult, Failure, Failures, Live, Meter};
use ballast_bench::perf_opts::{self, parse_target, Trid};
use ballast_bench::status_words::host_error;
use ballast_engine::{BdevIo, IoBuf, IoCallback, IoChannel, IoSink, IoStatus, IoType, SgList};
use ballast_nvme::host::{HostCompletion, HostOp, HostOpts, IoQpair, Session};
use ballast_reactor::{PollStatus, Runtime, RuntimeConfig};
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ballast-perf",
    version,
    about = "NVMe/TCP and bdev load generator"
)]
struct Args {
    /// Queue depth per core, 1..=65535. A target may grant fewer entries per queue (its
    /// MQES): perf then says so and uses, and reports, the granted depth.
    #[arg(short = 'q', long, default_value_t = 32, value_parser = perf_opts::parse_depth)]
    depth: usize,
    /// I/O size in bytes: a multiple of the block size (512 for --bdev), at most the device
    /// size and, with -r, the controller's maximum data transfer size (MDTS).
    #[arg(short = 'o', long, default_value_t = 4096, value_parser = perf_opts::parse_size)]
    size: usize,
    /// Workload: read, write, randread, randwrite, rw (sequential mix), randrw.
    #[arg(short = 'w', long, default_value = "randread")]
    workload: String,
    /// Read percentage of rw/randrw, 0..=100 (the other workloads ignore it).
    #[arg(short = 'M', long, default_value_t = 50, value_parser = perf_opts::parse_readpct)]
    readpct: u32,
    /// Seconds measured, at least 1 (after the warm-up).
    #[arg(short = 't', long, default_value_t = 10, value_parser = perf_opts::parse_time)]
    time: u64,
    /// Seconds of warm-up before the measured time (0 = none). Its I/Os are not in the
    /// results; its failures are.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Cores (mask 0x2, list [1] or range) running the load.
    #[arg(short = 'c', long, default_value = "0x1")]
    cores: String,
    /// Do not pin the load threads.
    #[arg(long)]
    no_pin: bool,
    /// Target: 'trtype:tcp traddr:A trsvcid:P subnqn:N [hostnqn:H] [ns:1]'.
    #[arg(short = 'r', long)]
    target: Option<String>,
    /// In-process bdev instead of a target: null, malloc, crypto (AES-XTS over malloc),
    /// mirror2/mirror3 (a 2- or 3-way mirror over malloc children), or lvol/lvol-thin (a
    /// thick or thin lvol, 4 MiB clusters, in a store on a malloc base).
    #[arg(long)]
    bdev: Option<String>,
    /// Size of the in-process bdev in MiB (≥ 1; 512-byte blocks).
    #[arg(long, default_value_t = 1024, value_parser = perf_opts::parse_bdev_mib)]
    bdev_size_mib: u64,
    /// Header digests.
    #[arg(long)]
    hdgst: bool,
    /// Data digests.
    #[arg(long)]
    ddgst: bool,
    /// Data written: fill (one byte value per buffer), text (text-like, lz4 ≈ 2.5×) or
    /// random (incompressible). Matters for compressing volumes.
    #[arg(long, default_value = "fill")]
    data: String,
    /// Machine-readable summary.
    #[arg(long)]
    json: bool,
    /// No live progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    Seq,
    Rand,
}

struct Load {
    pattern: Pattern,
    readpct: u32,
    nlb: u32,
    span: u64,
    next_seq: u64,
    rng: u64,
}

impl Load {
    fn next(&mut self) -> (bool, u64) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let read = (self.rng % 100) < self.readpct as u64;
        let lba = match self.pattern {
            Pattern::Rand => (self.rng >> 11) % self.span * self.nlb as u64,
            Pattern::Seq => {
                let l = self.next_seq;
                self.next_seq = (self.next_seq + 1) % self.span;
                l * self.nlb as u64
            }
        };
        (read, lba)
    }
}

/// Why perf stopped: a usage error (exit status 2, as clap's) or a failure (1).
#[derive(Debug)]
enum Fail {
    Usage(String),
    Run(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail::Run(s)
    }
}

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(()) => {}
        Err(Fail::Usage(e)) => {
            eprintln!("ballast-perf: {e}");
            std::process::exit(2);
        }
        Err(Fail::Run(e)) => {
            eprintln!("ballast-perf: {e}");
            std::process::exit(1);
        }
    }
}

/// What every core runs, checked against the device.
struct Plan {
    pattern: Pattern,
    readpct: u32,
    /// Depth asked for (a target's queue may grant less).
    depth: usize,
    size: usize,
    nlb: u32,
    blocks: u64,
    data: Data,
}

/// State the main thread shares with every core's poller.
#[derive(Clone, Default)]
struct Shared {
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<CoreResult>>>,
}

/// The connected target, kept for keep-alives.
struct Connected {
    session: Session,
    trid: Trid,
    hostnqn: String,
}

const ONE_OF: &str = "give exactly one of -r TARGET or --bdev null|malloc|crypto";

fn run(args: Args) -> Result<(), Fail> {
    let (pattern, readpct) = match args.workload.as_str() {
        "read" => (Pattern::Seq, 100),
        "write" => (Pattern::Seq, 0),
        "randread" => (Pattern::Rand, 100),
        "randwrite" => (Pattern::Rand, 0),
        "rw" => (Pattern::Seq, args.readpct),
        "randrw" => (Pattern::Rand, args.readpct),
        w => {
            return Err(Fail::Usage(format!(
                "-w {w:?}: want read, write, randread, randwrite, rw or randrw"
            )))
        }
    };
    let data = Data::parse(&args.data)
        .ok_or_else(|| Fail::Usage(format!("--data {:?}: want fill, text or random", args.data)))?;
    if args.target.is_some() == args.bdev.is_some() {
        return Err(Fail::Usage(ONE_OF.into()));
    }
    if let Some(k) = args.bdev.as_deref() {
        let kinds = [
            "null",
            "malloc",
            "crypto",
            "mirror2",
            "mirror3",
            "lvol",
            "lvol-thin",
        ];
        if !kinds.contains(&k) {
            return Err(Fail::Usage(format!(
                "--bdev {k:?}: want null, malloc, crypto, mirror2, mirror3, lvol or lvol-thin"
            )));
        }
    }
    let cores = ballast_reactor::parse_core_mask(&args.cores)
        .map_err(|e| Fail::Usage(format!("-c {}: {e}", args.cores)))?;
    let mut plan = Plan {
        pattern,
        readpct,
        depth: args.depth,
        size: args.size,
        nlb: 0,
        blocks: 0,
        data,
    };
    let rt = Runtime::start(RuntimeConfig {
        cores: cores.clone(),
        pin: !args.no_pin,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let sh = Shared::default();
    sh.measuring.store(args.warmup == 0, Ordering::Relaxed);
    let (mut conn, depth) = match (&args.target, &args.bdev) {
        (Some(t), _) => {
            let trid = parse_target(t).map_err(Fail::Usage)?;
            let (c, depth) = start_target(&args, trid, &mut plan, &cores, &rt, &sh)?;
            (Some(c), depth)
        }
        (None, Some(kind)) => {
            start_bdev(&args, kind, &mut plan, &cores, &rt, &sh)?;
            (None, args.depth)
        }
        (None, None) => return Err(Fail::Usage(ONE_OF.into())),
    };
    if let Some(note) = perf_opts::depth_note(args.depth, depth) {
        eprintln!("ballast-perf: {note}");
    }
    clock(&args, plan.size, conn.as_mut(), &sh)?;
    sh.stop.store(true, Ordering::Release);
    let t = Instant::now();
    while sh.results.lock().unwrap().len() < cores.len() {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(Fail::Run(
                "cores did not drain their I/O within 30 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.shutdown();
    let mut res = std::mem::take(&mut *sh.results.lock().unwrap());
    res.sort_by_key(|r| r.core);
    report(&args, &plan, depth, &res);
    if let Some(kind) = &args.bdev {
        let _ = ballast_engine::bdev::delete(&format!("perf_{kind}0"));
    }
    let mut problems = Vec::new();
    let mut failures = Failures::default();
    for r in &res {
        failures.merge(&r.failures);
        if let Some((why, lost)) = &r.queue_failure {
            problems.push(format!(
                "core {}: I/O queue failed ({lost} I/Os lost): {why}",
                r.core
            ));
        }
    }
    problems.extend(failures.lines());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Fail::Run(problems.join("; ")))
    }
}

/// Connects to the target, checks the options against its namespace and controller, and
/// starts one I/O queue per core; returns the session and the depth the queues allow.
fn start_target(
    args: &Args,
    trid: Trid,
    plan: &mut Plan,
    cores: &[usize],
    rt: &Runtime,
    sh: &Shared,
) -> Result<(Connected, usize), Fail> {
    let mut o = HostOpts {
        hdgst: args.hdgst,
        ddgst: args.ddgst,
        queue_size: (args.depth + 1).min(u16::MAX as usize) as u16,
        ..Default::default()
    };
    if let Some(hn) = &trid.hostnqn {
        o.hostnqn = hn.clone();
    }
    let words = |e, qid| host_error(&e, &trid.subnqn, trid.addr, &o.hostnqn, qid);
    let mut s = Session::connect(trid.addr, &trid.subnqn, cores.len() as u16, &o)
        .map_err(|e| words(e, 0))?;
    if (s.io_queues as usize) < cores.len() {
        return Err(Fail::Run(format!(
            "target granted {} I/O queues, {} needed",
            s.io_queues,
            cores.len()
        )));
    }
    let ns = s.namespace(trid.nsid).map_err(|e| words(e, 0))?;
    let on = format!("namespace {} of {}", trid.nsid, trid.subnqn);
    plan.nlb =
        perf_opts::io_blocks(args.size, ns.block_size, ns.blocks, &on).map_err(Fail::Usage)?;
    plan.blocks = ns.blocks;
    perf_opts::max_transfer(args.size, s.ctrl.max_xfer).map_err(Fail::Usage)?;
    let likely = args
        .depth
        .min(s.ctrl.mqes.saturating_sub(1).max(1) as usize);
    perf_opts::buffer_memory(cores.len(), likely, args.size, perf_opts::physical_memory())
        .map_err(Fail::Usage)?;
    let mut depth = args.depth;
    for (i, &core) in cores.iter().enumerate() {
        let qid = i as u16 + 1;
        let conn = s.io_queue(qid).map_err(|e| words(e, qid))?;
        let (cfg, sh, nsid) = (CoreCfg::new(plan, core), sh.clone(), trid.nsid);
        let granted = rt
            .handle()
            .call(core, move || start_tcp_core(conn, nsid, cfg, sh))
            .map_err(|e| e.to_string())??;
        depth = depth.min(granted);
    }
    let hostnqn = o.hostnqn;
    Ok((
        Connected {
            session: s,
            trid,
            hostnqn,
        },
        depth,
    ))
}

/// Checks the options against an in-process bdev of `kind`, creates it and starts a
/// channel per core.
fn start_bdev(
    args: &Args,
    kind: &str,
    plan: &mut Plan,
    cores: &[usize],
    rt: &Runtime,
    sh: &Shared,
) -> Result<(), Fail> {
    let bs = 512u32;
    let nb = args.bdev_size_mib * 1024 * 1024 / bs as u64;
    let name = format!("perf_{kind}0");
    plan.nlb = perf_opts::io_blocks(args.size, bs, nb, &format!("the {kind} bdev"))
        .map_err(Fail::Usage)?;
    plan.blocks = nb;
    perf_opts::buffer_memory(
        cores.len(),
        args.depth,
        args.size,
        perf_opts::physical_memory(),
    )
    .map_err(Fail::Usage)?;
    let name = create_bdev(kind, &name, nb, bs, &rt.handle())?;
    let desc = Arc::new(ballast_engine::bdev::open(&name, None).map_err(|e| e.to_string())?);
    for &core in cores {
        let (cfg, sh, desc) = (CoreCfg::new(plan, core), sh.clone(), desc.clone());
        rt.handle()
            .call(core, move || {
                let ch = desc.channel().map_err(|e| e.to_string())?;
                start_bdev_core(ch, cfg, sh)
            })
            .map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Runs the warm-up, then the measured time, printing per-second progress and keeping the
/// target's session alive.
fn clock(
    args: &Args,
    size: usize,
    mut conn: Option<&mut Connected>,
    sh: &Shared,
) -> Result<(), Fail> {
    let (live, measuring) = (&sh.live, &sh.measuring);
    let warmup = Duration::from_secs(args.warmup);
    let total = warmup.saturating_add(Duration::from_secs(args.time));
    let t0 = Instant::now();
    let counts = || {
        (
            live.ios.load(Ordering::Relaxed),
            live.errors.load(Ordering::Relaxed),
        )
    };
    let mut last = (0u64, 0u64, t0);
    let mut ka = Instant::now();
    loop {
        let el = t0.elapsed();
        if el >= total {
            return Ok(());
        }
        // Wake at the end of the warm-up or of the run, or in 100 ms.
        let next = if measuring.load(Ordering::Relaxed) {
            total
        } else {
            warmup
        };
        std::thread::sleep(next.saturating_sub(el).min(Duration::from_millis(100)));
        if let Some(c) = conn.as_deref_mut() {
            if ka.elapsed() > Duration::from_secs(5) {
                c.session.keep_alive().map_err(|e| {
                    let t = &c.trid;
                    let why = host_error(&e, &t.subnqn, t.addr, &c.hostnqn, 0);
                    format!("keep-alive: {why}")
                })?;
                ka = Instant::now();
            }
        }
        if last.2.elapsed() >= Duration::from_secs(1) {
            let (n, e) = counts();
            if !args.quiet && !args.json {
                let iops = (n - last.0) as f64 / last.2.elapsed().as_secs_f64();
                let failed = e - last.1;
                eprintln!(
                    "[{:>5.1}s] {:>10.0} IOPS {:>9.1} MiB/s{}{}",
                    t0.elapsed().as_secs_f64(),
                    iops,
                    iops * size as f64 / 1048576.0,
                    if failed > 0 {
                        format!(" {failed:>9} failed")
                    } else {
                        String::new()
                    },
                    if measuring.load(Ordering::Relaxed) {
                        ""
                    } else {
                        "  (warm-up)"
                    }
                );
            }
            last = (n, e, Instant::now());
        }
        if !measuring.load(Ordering::Relaxed) && t0.elapsed() >= warmup {
            measuring.store(true, Ordering::Release);
            let (n, e) = counts();
            last = (n, e, Instant::now());
        }
    }
}

/// Creates the in-process bdev `name` of kind null, malloc, crypto, mirror2/3 or lvol(-thin);
/// returns the name to open (an lvol's is its UUID).
fn create_bdev(
    kind: &str,
    name: &str,
    nb: u64,
    bs: u32,
    rt: &ballast_reactor::RuntimeHandle,
) -> Result<String, String> {
    use ballast_engine::backend::{crypto, malloc, mirror, null};
    let mk_malloc = |name: String| {
        malloc::create(malloc::MallocOpts {
            name,
            num_blocks: nb,
            block_size: bs,
            uuid: None,
        })
    };
    let r = match kind {
        "null" => null::create(name, nb, bs, None),
        "malloc" => mk_malloc(name.to_string()),
        "crypto" => {
            // AES-XTS-256 stage over a malloc bdev (issue 6's "crypto volume").
            let base = format!("{name}_base");
            mk_malloc(base.clone()).map_err(|e| e.to_string())?;
            let k1: Vec<u8> = (0..32u8).collect();
            let k2: Vec<u8> = (0..32u8).map(|x| x ^ 0x5A).collect();
            crypto::key_create("perf_key", "AES_XTS", &k1, &k2).map_err(|e| e.to_string())?;
            crypto::create(name, &base, "perf_key")
        }
        "mirror2" | "mirror3" => {
            // A 2- or 3-way mirror over malloc children (each with the mirror's 1 MiB of
            // metadata in front of the data).
            let n = if kind == "mirror2" { 2 } else { 3 };
            let meta = mirror::META_BYTES / bs as u64;
            let mut children = Vec::new();
            for i in 0..n {
                let c = format!("{name}_c{i}");
                malloc::create(malloc::MallocOpts {
                    name: c.clone(),
                    num_blocks: nb + meta,
                    block_size: bs,
                    uuid: None,
                })
                .map_err(|e| e.to_string())?;
                children.push(c);
            }
            mirror::create(
                rt,
                mirror::MirrorOpts {
                    name: name.to_string(),
                    children,
                    uuid: None,
                    region_bytes: None,
                },
            )
        }
        "lvol" | "lvol-thin" => {
            // An lvol in a store (4 MiB clusters) on a malloc base with room for the store's
            // metadata: thick (every cluster allocated: the overwrite and read path) or thin
            // (clusters allocated by first writes).
            use ballast_engine::backend::lvol;
            let base = format!("{name}_base");
            malloc::create(malloc::MallocOpts {
                name: base.clone(),
                num_blocks: nb + (64 << 20) / bs as u64,
                block_size: bs,
                uuid: None,
            })
            .map_err(|e| e.to_string())?;
            let opts = lvol::LvsOpts {
                bdev_name: base,
                lvs_name: format!("{name}_lvs"),
                cluster_sz: None,
                clear_method: lvol::ClearMethod::Unmap,
            };
            lvol::create_lvstore(rt, &opts).map_err(|e| e.to_string())?;
            let thin = kind == "lvol-thin";
            let c = lvol::ClearMethod::Unmap;
            let l = lvol::create_lvol(None, Some(&opts.lvs_name), "v", nb * bs as u64, thin, c)
                .map_err(|e| e.to_string())?;
            return Ok(l.uuid.to_string());
        }
        k => {
            return Err(format!(
                "--bdev {k:?}: want null, malloc, crypto, mirror2, mirror3, lvol or lvol-thin"
            ))
        }
    };
    r.map(|_| name.to_string()).map_err(|e| e.to_string())
}

/// A heap buffer of `len` bytes holding `data` for queue slot `slot`.
fn data_buf(data: Data, len: usize, slot: usize) -> IoBuf {
    let mut b = IoBuf::heap(len);
    data.fill(&mut b, slot);
    b
}

struct CoreCfg {
    depth: usize,
    size: usize,
    data: Data,
    load: Load,
    core: usize,
}

impl CoreCfg {
    fn new(p: &Plan, core: usize) -> Self {
        CoreCfg {
            depth: p.depth,
            size: p.size,
            data: p.data,
            load: Load {
                pattern: p.pattern,
                readpct: p.readpct,
                nlb: p.nlb,
                span: (p.blocks / p.nlb as u64).max(1),
                next_seq: core as u64 * 997,
                rng: 0x9E37_79B9_7F4A_7C15 ^ (core as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            },
            core,
        }
    }
}

fn start_tcp_core(
    conn: ballast_nvme::host::IoQueueConn,
    nsid: u32,
    mut cfg: CoreCfg,
    sh: Shared,
) -> Result<usize, String> {
    let mut qp = IoQpair::new(conn);
    let depth = cfg.depth.min(qp.depth());
    ballast_reactor::add_wake_fd(qp.fd()).map_err(|e| e.to_string())?;
    let mut meter = Some(Meter::new(depth, sh.live, sh.measuring));
    let (stop, results) = (sh.stop, sh.results);
    let mut bufs: Vec<Option<IoBuf>> = (0..depth)
        .map(|i| Some(data_buf(cfg.data, cfg.size, i)))
        .collect();
    let mut comps: Vec<HostCompletion> = Vec::with_capacity(depth);
    let mut inflight = 0usize;
    let core = cfg.core;
    let handle: Rc<RefCell<Option<ballast_reactor::PollerHandle>>> = Rc::default();
    let h2 = handle.clone();
    let fd = qp.fd();
    let p = ballast_reactor::register_poller(format!("perf_tcp_{core}"), move || {
        let Some(m) = meter.as_mut() else {
            return PollStatus::Idle;
        };
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            m.end(Instant::now());
        }
        // Refill.
        if !stopping {
            let now = Instant::now();
            for (slot, b) in bufs.iter_mut().enumerate() {
                let Some(buf) = b.take() else { continue };
                let (read, lba) = cfg.load.next();
                let op = if read { HostOp::Read } else { HostOp::Write };
                m.start(slot, now);
                match qp.submit(op, nsid, lba, cfg.load.nlb, Some(buf), slot as u64) {
                    Ok(()) => inflight += 1,
                    Err(buf) => {
                        *b = buf;
                        break;
                    }
                }
            }
        }
        let did = qp.poll(&mut comps);
        if !comps.is_empty() {
            let now = Instant::now();
            for c in comps.drain(..) {
                inflight -= 1;
                let slot = c.tag as usize;
                let outcome = if c.status.is_success() {
                    Ok(())
                } else {
                    Err(Failure::Nvme(c.status))
                };
                m.done(slot, outcome, now);
                bufs[slot] = c.buf;
            }
        }
        if stopping && (inflight == 0 || qp.failure().is_some()) {
            let m = meter.take().expect("meter");
            let broke = qp.failure().map(|why| (why.to_string(), inflight));
            results.lock().unwrap().push(m.finish(core, broke));
            ballast_reactor::remove_wake_fd(fd);
            if let Some(h) = h2.borrow_mut().take() {
                ballast_reactor::unregister_poller(h);
            }
            return PollStatus::Idle;
        }
        PollStatus::from(did || inflight > 0)
    })
    .map_err(|e| e.to_string())?;
    *handle.borrow_mut() = Some(p);
    Ok(depth)
}

type BdevDone = (u64, Result<(), Failure>, SgList);

struct BdevSink {
    done: RefCell<Vec<BdevDone>>,
}

impl IoSink for BdevSink {
    fn io_done(&self, mut io: BdevIo) {
        let outcome = match io.status {
            IoStatus::Success => Ok(()),
            s => Err(Failure::Bdev(s)),
        };
        let bufs = std::mem::take(&mut io.bufs);
        self.done.borrow_mut().push((io.tag, outcome, bufs));
    }
}

fn start_bdev_core(ch: IoChannel, mut cfg: CoreCfg, sh: Shared) -> Result<(), String> {
    let depth = cfg.depth;
    let sink = Rc::new(BdevSink {
        done: RefCell::new(Vec::with_capacity(depth)),
    });
    let mut meter = Some(Meter::new(depth, sh.live, sh.measuring));
    let (stop, results) = (sh.stop, sh.results);
    let mut bufs: Vec<Option<SgList>> = (0..depth)
        .map(|i| {
            let mut v = SgList::new();
            v.push(data_buf(cfg.data, cfg.size, i));
            Some(v)
        })
        .collect();
    let mut inflight = 0usize;
    let core = cfg.core;
    let handle: Rc<RefCell<Option<ballast_reactor::PollerHandle>>> = Rc::default();
    let h2 = handle.clone();
    let mut batch: Vec<BdevDone> = Vec::with_capacity(depth);
    let p = ballast_reactor::register_poller(format!("perf_bdev_{core}"), move || {
        let Some(m) = meter.as_mut() else {
            return PollStatus::Idle;
        };
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            m.end(Instant::now());
        }
        if !stopping {
            let now = Instant::now();
            for (slot, b) in bufs.iter_mut().enumerate() {
                let Some(sg) = b.take() else { continue };
                let (read, lba) = cfg.load.next();
                let op = if read { IoType::Read } else { IoType::Write };
                m.start(slot, now);
                inflight += 1;
                let cb: Rc<dyn IoSink> = sink.clone();
                ch.submit(BdevIo::new(
                    op,
                    lba,
                    cfg.load.nlb as u64,
                    sg,
                    slot as u64,
                    IoCallback::Sink(cb),
                ));
            }
        }
        std::mem::swap(&mut *sink.done.borrow_mut(), &mut batch);
        let did = !batch.is_empty();
        if did {
            let now = Instant::now();
            for (tag, outcome, sg) in batch.drain(..) {
                inflight -= 1;
                m.done(tag as usize, outcome, now);
                bufs[tag as usize] = Some(sg);
            }
        }
        if stopping && inflight == 0 {
            let m = meter.take().expect("meter");
            results.lock().unwrap().push(m.finish(core, None));
            if let Some(h) = h2.borrow_mut().take() {
                ballast_reactor::unregister_poller(h);
            }
            return PollStatus::Idle;
        }
        PollStatus::from(did || inflight > 0)
    })
    .map_err(|e| e.to_string())?;
    *handle.borrow_mut() = Some(p);
    Ok(())
}

/// Prints the summary: per core and total, of the successful I/Os of the measured interval,
/// then the failed I/Os by status. `depth` is the depth used (≤ the one asked for).
fn report(args: &Args, plan: &Plan, depth: usize, res: &[CoreResult]) {
    let mut total = perf_meter::histogram();
    let mut ios = 0;
    let mut secs: f64 = 0.0;
    let mut failures = Failures::default();
    let mut per_core = Vec::new();
    for r in res {
        let _ = total.add(&r.hist);
        ios += r.ios;
        failures.merge(&r.failures);
        let s = r.elapsed.as_secs_f64();
        secs = secs.max(s);
        let mut v = perf_meter::summary(&r.hist, r.ios, s, plan.size);
        v["core"] = serde_json::json!(r.core);
        v["errors"] = serde_json::json!(r.failures.total());
        v["queue_failure"] = serde_json::json!(r.queue_failure.as_ref().map(|(why, _)| why));
        per_core.push(v);
    }
    let mut tot = perf_meter::summary(&total, ios, secs, plan.size);
    tot["errors"] = serde_json::json!(failures.total());
    if args.json {
        let out = serde_json::json!({
            "workload": args.workload, "read_pct": plan.readpct,
            "size": plan.size, "depth": depth, "depth_requested": plan.depth,
            "target": args.target, "bdev": args.bdev,
            "warmup_seconds": args.warmup, "seconds": secs,
            "cores": per_core, "total": tot, "failures": failures.json(),
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return;
    }
    println!(
        "{}: {}-byte I/Os, queue depth {} per core, {} core{}, {:.2} s measured",
        args.workload,
        plan.size,
        depth,
        res.len(),
        if res.len() == 1 { "" } else { "s" },
        secs
    );
    println!(
        "{:<8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "core", "IOPS", "MiB/s", "avg(us)", "min", "max", "p50", "p90", "p99", "p99.9", "p99.99"
    );
    let line = |name: String, v: &serde_json::Value| {
        let l = &v["lat_us"];
        println!(
            "{:<8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            v["iops"],
            v["mib_s"],
            l["avg"],
            l["min"],
            l["max"],
            l["p50"],
            l["p90"],
            l["p99"],
            l["p99_9"],
            l["p99_99"]
        );
    };
    for v in &per_core {
        line(format!("core {}", v["core"]), v);
    }
    line("total".into(), &tot);
    for l in failures.lines() {
        println!("{l} (not counted above)");
    }
}
