//! `ballast-perf`: an spdk_nvme_perf-class load generator.
//!
//! Drives an NVMe/TCP target (`-r 'trtype:tcp traddr:127.0.0.1 trsvcid:4420 subnqn:…'`) with
//! one I/O queue per core, or an in-process bdev (`--bdev null|malloc`, to measure the engine
//! without the network). Each core keeps `-q` commands in flight from a reactor poller, records
//! every completion's latency in an HDR histogram, prints live per-second progress, then a
//! per-core and total summary (IOPS, MiB/s, avg/min/max, p50…p99.99), or JSON with `--json`.
//!
//! ```text
//!  main thread: admin queue (keep-alive), progress ticker, summary
//!  reactor per core: poller ─ submit ≤ q ─► IoQpair / bdev channel ─► completions ─► histogram
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_bench::data::Data;
use ballast_engine::{BdevIo, IoBuf, IoCallback, IoChannel, IoSink, IoStatus, IoType, SgList};
use ballast_nvme::host::{HostCompletion, HostOp, HostOpts, IoQpair, Session};
use ballast_reactor::{PollStatus, Runtime, RuntimeConfig};
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ballast-perf",
    version,
    about = "NVMe/TCP and bdev load generator"
)]
struct Args {
    /// Queue depth per core.
    #[arg(short = 'q', long, default_value_t = 32)]
    depth: usize,
    /// I/O size in bytes.
    #[arg(short = 'o', long, default_value_t = 4096)]
    size: usize,
    /// Workload: read, write, randread, randwrite, rw (sequential mix), randrw.
    #[arg(short = 'w', long, default_value = "randread")]
    workload: String,
    /// Read percentage for rw/randrw.
    #[arg(short = 'M', long, default_value_t = 50)]
    readpct: u32,
    /// Seconds to run.
    #[arg(short = 't', long, default_value_t = 10)]
    time: u64,
    /// Seconds of warm-up excluded from the results.
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
    /// In-process bdev instead of a target: null, malloc, or crypto (AES-XTS over malloc).
    #[arg(long)]
    bdev: Option<String>,
    /// Size of the in-process bdev in MiB.
    #[arg(long, default_value_t = 1024)]
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

/// Per-core results.
struct CoreResult {
    core: usize,
    hist: Histogram<u64>,
    ios: u64,
    errors: u64,
    elapsed: Duration,
}

/// Live counters shared with the progress ticker.
struct Live {
    ios: AtomicU64,
    errors: AtomicU64,
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

fn parse_target(s: &str) -> Result<(SocketAddr, String, Option<String>, u32), String> {
    let mut kv = HashMap::new();
    for part in s.split_whitespace() {
        let (k, v) = part
            .split_once(':')
            .ok_or_else(|| format!("bad target field {part:?} (want key:value)"))?;
        kv.insert(k.to_ascii_lowercase(), v.to_string());
    }
    if kv.get("trtype").map(|t| t.to_ascii_lowercase()) != Some("tcp".into()) {
        return Err("target: trtype:tcp is required".into());
    }
    let addr = kv.get("traddr").ok_or("target: traddr missing")?;
    let port = kv.get("trsvcid").map(String::as_str).unwrap_or("4420");
    let ip: std::net::IpAddr = addr
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| format!("target: traddr {addr:?} is not an IP address"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("target: trsvcid {port:?} is not a port"))?;
    let nqn = kv
        .get("subnqn")
        .cloned()
        .unwrap_or_else(|| "nqn.2026-11.io.ballast:default".into());
    let ns = kv.get("ns").map(|n| n.parse().unwrap_or(1)).unwrap_or(1);
    Ok((
        SocketAddr::new(ip, port),
        nqn,
        kv.get("hostnqn").cloned(),
        ns,
    ))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("ballast-perf: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let (pattern, readpct) = match args.workload.as_str() {
        "read" => (Pattern::Seq, 100),
        "write" => (Pattern::Seq, 0),
        "randread" => (Pattern::Rand, 100),
        "randwrite" => (Pattern::Rand, 0),
        "rw" => (Pattern::Seq, args.readpct.min(100)),
        "randrw" => (Pattern::Rand, args.readpct.min(100)),
        w => return Err(format!("unknown workload {w:?}")),
    };
    if args.size == 0 || args.depth == 0 {
        return Err("size and depth must be > 0".into());
    }
    if Data::parse(&args.data).is_none() {
        return Err(format!("--data {:?}: want fill, text or random", args.data));
    }
    let cores = ballast_reactor::parse_core_mask(&args.cores).map_err(|e| e.to_string())?;
    let rt = Runtime::start(RuntimeConfig {
        cores: cores.clone(),
        pin: !args.no_pin,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let h = rt.handle();
    let live = Arc::new(Live {
        ios: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(args.warmup == 0));
    let results: Arc<std::sync::Mutex<Vec<CoreResult>>> = Arc::default();

    let mut session = None;
    let (block_size, blocks) = match (&args.target, &args.bdev) {
        (Some(t), None) => {
            let (addr, nqn, hostnqn, nsid) = parse_target(t)?;
            let mut o = HostOpts {
                hdgst: args.hdgst,
                ddgst: args.ddgst,
                queue_size: (args.depth + 1).min(u16::MAX as usize) as u16,
                ..Default::default()
            };
            if let Some(hn) = hostnqn {
                o.hostnqn = hn;
            }
            let mut s =
                Session::connect(addr, &nqn, cores.len() as u16, &o).map_err(|e| e.to_string())?;
            if (s.io_queues as usize) < cores.len() {
                return Err(format!(
                    "target granted {} I/O queues, {} needed",
                    s.io_queues,
                    cores.len()
                ));
            }
            let ns = s.namespace(nsid).map_err(|e| e.to_string())?;
            for (i, &core) in cores.iter().enumerate() {
                let conn = s.io_queue(i as u16 + 1).map_err(|e| e.to_string())?;
                let cfg = CoreCfg::new(&args, pattern, readpct, ns.block_size, ns.blocks, core);
                let (live, stop, measuring, results) = (
                    live.clone(),
                    stop.clone(),
                    measuring.clone(),
                    results.clone(),
                );
                h.call(core, move || {
                    start_tcp_core(conn, nsid, cfg, live, stop, measuring, results)
                })
                .map_err(|e| e.to_string())??;
            }
            let (bs, nb) = (ns.block_size, ns.blocks);
            session = Some(s);
            (bs, nb)
        }
        (None, Some(kind)) => {
            let bs = 512u32;
            let nb = args.bdev_size_mib * 1024 * 1024 / bs as u64;
            let name = format!("perf_{kind}0");
            match kind.as_str() {
                "null" => ballast_engine::backend::null::create(&name, nb, bs, None)
                    .map_err(|e| e.to_string())?,
                "malloc" => ballast_engine::backend::malloc::create(
                    ballast_engine::backend::malloc::MallocOpts {
                        name: name.clone(),
                        num_blocks: nb,
                        block_size: bs,
                        uuid: None,
                    },
                )
                .map_err(|e| e.to_string())?,
                "crypto" => {
                    // AES-XTS-256 stage over a malloc bdev (issue 6's "crypto volume").
                    let base = format!("{name}_base");
                    ballast_engine::backend::malloc::create(
                        ballast_engine::backend::malloc::MallocOpts {
                            name: base.clone(),
                            num_blocks: nb,
                            block_size: bs,
                            uuid: None,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                    let k1: Vec<u8> = (0..32u8).collect();
                    let k2: Vec<u8> = (0..32u8).map(|x| x ^ 0x5A).collect();
                    ballast_engine::backend::crypto::key_create("perf_key", "AES_XTS", &k1, &k2)
                        .map_err(|e| e.to_string())?;
                    ballast_engine::backend::crypto::create(&name, &base, "perf_key")
                        .map_err(|e| e.to_string())?
                }
                k => return Err(format!("--bdev {k:?}: want null, malloc or crypto")),
            };
            let desc =
                Arc::new(ballast_engine::bdev::open(&name, None).map_err(|e| e.to_string())?);
            for &core in &cores {
                let cfg = CoreCfg::new(&args, pattern, readpct, bs, nb, core);
                let (live, stop, measuring, results, desc) = (
                    live.clone(),
                    stop.clone(),
                    measuring.clone(),
                    results.clone(),
                    desc.clone(),
                );
                h.call(core, move || {
                    let ch = desc.channel().map_err(|e| e.to_string())?;
                    start_bdev_core(ch, cfg, live, stop, measuring, results)
                })
                .map_err(|e| e.to_string())??;
            }
            (bs, nb)
        }
        _ => return Err("give exactly one of -r TARGET or --bdev null|malloc".into()),
    };
    let _ = (block_size, blocks);

    // Warm-up, then the measured run with per-second progress.
    let t0 = Instant::now();
    let mut last = (0u64, Instant::now());
    let mut ka = Instant::now();
    let total = Duration::from_secs(args.warmup + args.time);
    while t0.elapsed() < total {
        std::thread::sleep(Duration::from_millis(100));
        if !measuring.load(Ordering::Relaxed) && t0.elapsed() >= Duration::from_secs(args.warmup) {
            measuring.store(true, Ordering::Release);
            last = (live.ios.load(Ordering::Relaxed), Instant::now());
        }
        if let Some(s) = session.as_mut() {
            if ka.elapsed() > Duration::from_secs(5) {
                s.keep_alive().map_err(|e| format!("keep-alive: {e}"))?;
                ka = Instant::now();
            }
        }
        if last.1.elapsed() >= Duration::from_secs(1) {
            let n = live.ios.load(Ordering::Relaxed);
            let dt = last.1.elapsed().as_secs_f64();
            if !args.quiet && !args.json {
                let iops = (n - last.0) as f64 / dt;
                eprintln!(
                    "[{:>5.1}s] {:>10.0} IOPS {:>9.1} MiB/s{}",
                    t0.elapsed().as_secs_f64(),
                    iops,
                    iops * args.size as f64 / 1048576.0,
                    if measuring.load(Ordering::Relaxed) {
                        ""
                    } else {
                        "  (warm-up)"
                    }
                );
            }
            last = (n, Instant::now());
        }
    }
    stop.store(true, Ordering::Release);
    let t = Instant::now();
    while results.lock().unwrap().len() < cores.len() {
        if t.elapsed() > Duration::from_secs(30) {
            return Err("cores did not drain their I/O within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.shutdown();
    let mut res = std::mem::take(&mut *results.lock().unwrap());
    res.sort_by_key(|r| r.core);
    report(&args, &res);
    if let Some(kind) = &args.bdev {
        let _ = ballast_engine::bdev::delete(&format!("perf_{kind}0"));
    }
    let errors: u64 = res.iter().map(|r| r.errors).sum();
    if errors > 0 {
        return Err(format!("{errors} I/O errors"));
    }
    Ok(())
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
    fn new(a: &Args, pattern: Pattern, readpct: u32, bs: u32, blocks: u64, core: usize) -> Self {
        let nlb = (a.size as u64).div_ceil(bs as u64).max(1) as u32;
        CoreCfg {
            depth: a.depth,
            size: nlb as usize * bs as usize,
            data: Data::parse(&a.data).unwrap_or(Data::Fill),
            load: Load {
                pattern,
                readpct,
                nlb,
                span: (blocks / nlb as u64).max(1),
                next_seq: core as u64 * 997,
                rng: 0x9E37_79B9_7F4A_7C15 ^ (core as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            },
            core,
        }
    }
}

/// Per-core accounting common to both back ends.
struct Meter {
    hist: Histogram<u64>,
    started: Vec<Instant>,
    ios: u64,
    errors: u64,
    t_measure: Option<Instant>,
    t_end: Option<Instant>,
    live: Arc<Live>,
    measuring: Arc<AtomicBool>,
}

impl Meter {
    fn new(depth: usize, live: Arc<Live>, measuring: Arc<AtomicBool>) -> Self {
        Meter {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"),
            started: vec![Instant::now(); depth],
            ios: 0,
            errors: 0,
            t_measure: None,
            t_end: None,
            live,
            measuring,
        }
    }
    fn done(&mut self, slot: usize, ok: bool, now: Instant) {
        self.live.ios.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors += 1;
            self.live.errors.fetch_add(1, Ordering::Relaxed);
        }
        if self.measuring.load(Ordering::Relaxed) && self.t_end.is_none() {
            if self.t_measure.is_none() {
                self.t_measure = Some(now);
                return;
            }
            self.ios += 1;
            let ns = now.duration_since(self.started[slot]).as_nanos() as u64;
            let _ = self.hist.record(ns.max(1));
        }
    }
    /// The measured interval ends (stop seen); completions after it are not counted.
    fn end(&mut self, now: Instant) {
        if self.t_end.is_none() {
            self.t_end = Some(now);
        }
    }
    fn finish(self, core: usize) -> CoreResult {
        let end = self.t_end.unwrap_or_else(Instant::now);
        CoreResult {
            core,
            elapsed: self
                .t_measure
                .map_or(Duration::ZERO, |t| end.saturating_duration_since(t)),
            hist: self.hist,
            ios: self.ios,
            errors: self.errors,
        }
    }
}

type Results = Arc<std::sync::Mutex<Vec<CoreResult>>>;

fn start_tcp_core(
    conn: ballast_nvme::host::IoQueueConn,
    nsid: u32,
    mut cfg: CoreCfg,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    results: Results,
) -> Result<(), String> {
    let mut qp = IoQpair::new(conn);
    let depth = cfg.depth.min(qp.depth());
    ballast_reactor::add_wake_fd(qp.fd()).map_err(|e| e.to_string())?;
    let mut meter = Some(Meter::new(depth, live, measuring));
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
                m.started[slot] = now;
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
                m.done(slot, c.status.is_success(), now);
                bufs[slot] = c.buf;
            }
        }
        if stopping && (inflight == 0 || qp.failure().is_some()) {
            let m = meter.take().expect("meter");
            results.lock().unwrap().push(m.finish(core));
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
    Ok(())
}

struct BdevSink {
    done: RefCell<Vec<(u64, bool, SgList)>>,
}

impl IoSink for BdevSink {
    fn io_done(&self, mut io: BdevIo) {
        let ok = io.status == IoStatus::Success;
        let bufs = std::mem::take(&mut io.bufs);
        self.done.borrow_mut().push((io.tag, ok, bufs));
    }
}

fn start_bdev_core(
    ch: IoChannel,
    mut cfg: CoreCfg,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    results: Results,
) -> Result<(), String> {
    let depth = cfg.depth;
    let sink = Rc::new(BdevSink {
        done: RefCell::new(Vec::with_capacity(depth)),
    });
    let mut meter = Some(Meter::new(depth, live, measuring));
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
    let mut batch: Vec<(u64, bool, SgList)> = Vec::with_capacity(depth);
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
                m.started[slot] = now;
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
            for (tag, ok, sg) in batch.drain(..) {
                inflight -= 1;
                m.done(tag as usize, ok, now);
                bufs[tag as usize] = Some(sg);
            }
        }
        if stopping && inflight == 0 {
            let m = meter.take().expect("meter");
            results.lock().unwrap().push(m.finish(core));
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

fn summary(h: &Histogram<u64>, ios: u64, secs: f64, size: usize) -> serde_json::Value {
    let us = |v: u64| v as f64 / 1000.0;
    let iops = if secs > 0.0 { ios as f64 / secs } else { 0.0 };
    serde_json::json!({
        "ios": ios,
        "iops": iops.round(),
        "mib_s": (iops * size as f64 / 1048576.0 * 10.0).round() / 10.0,
        "lat_us": {
            "avg": (h.mean() / 10.0).round() / 100.0,
            "min": us(h.min()),
            "max": us(h.max()),
            "p50": us(h.value_at_quantile(0.50)),
            "p90": us(h.value_at_quantile(0.90)),
            "p99": us(h.value_at_quantile(0.99)),
            "p99_9": us(h.value_at_quantile(0.999)),
            "p99_99": us(h.value_at_quantile(0.9999)),
        }
    })
}

fn report(args: &Args, res: &[CoreResult]) {
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let mut ios = 0;
    let mut secs: f64 = 0.0;
    let mut per_core = Vec::new();
    for r in res {
        let _ = total.add(&r.hist);
        ios += r.ios;
        let s = r.elapsed.as_secs_f64();
        secs = secs.max(s);
        let mut v = summary(&r.hist, r.ios, s, args.size);
        v["core"] = serde_json::json!(r.core);
        v["errors"] = serde_json::json!(r.errors);
        per_core.push(v);
    }
    let tot = summary(&total, ios, secs, args.size);
    if args.json {
        let out = serde_json::json!({
            "workload": args.workload, "size": args.size, "depth": args.depth,
            "target": args.target, "bdev": args.bdev, "seconds": secs,
            "cores": per_core, "total": tot,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return;
    }
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
}
