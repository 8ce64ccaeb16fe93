//! Crash consistency of the compression stage, end to end: a write acknowledged before a Flush
//! that was itself acknowledged survives `kill -9` of the daemon, and the chunk map never
//! points at garbage.
//!
//! ```text
//!  test (host library, 2 I/O queues)              ballastd (-c config, 2 reactors)
//!  write storm: random 1..=64-block writes  ──►   nqn…:crash ns 1 = Comp0 (compress, 16 KiB)
//!  every block stamped (lba, generation)            └─ [Crypt0 (AES-XTS) └─] Base0 (uring)
//!  Flush every ~50 writes                                                    └─ base.img
//!  SIGKILL while writes are in flight ──────────► gone; base.img stays
//!  restart with the same base, read back every block, check it against the model
//! ```
//!
//! The model keeps, per block, the *committed* generation (written by a write acknowledged
//! before a Flush that was acknowledged) and every generation written after it (acknowledged
//! or in flight). After the restart each block must read exactly one of those (zeros for
//! "nothing committed yet"): an older one is a lost write, an error is a map entry pointing at
//! garbage, anything else is garbage. Concurrent writes never overlap by block (they do share
//! chunks), so a block's generations are ordered by submission.
//!
//! What `kill -9` can and cannot show: the base is a file, whose page cache outlives the
//! daemon, so only what the daemon had not yet handed to the kernel is lost. The test catches
//! lost updates, a map or allocator that is wrong after a reopen, and anything that leaves
//! garbage on the base; an ordering bug whose window is the microseconds before a map write
//! is submitted (say, completing a write before its map block is written) needs a power-loss
//! model of the base to be seen reliably.
//!
//! `CRASH_SEED=n` replays a run's random choices (the seed is printed; the kill point still
//! depends on timing).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ballast_engine::IoBuf;
use ballast_nvme::host::{HostCompletion, HostOp, HostOpts, IoQpair, Session};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const NQN: &str = "nqn.2026-11.io.ballast:crash";
const BS: usize = 512;
/// Blocks of a 16 KiB chunk.
const CHUNK: u64 = 16 * 1024 / BS as u64;
/// The storm writes the first 4 MiB, so blocks are rewritten several times per round.
const REGION: u64 = 8192;
/// Blocks read back past the region (must read zeros).
const MARGIN: u64 = 4 * CHUNK;
/// Little more than the region needs (a ~5 MiB volume): the unit allocator wraps every few
/// hundred writes, so units freed by copy-on-write are rewritten within a round.
const BASE_BYTES: u64 = 6 << 20;
const QUEUES: usize = 2;
/// Commands in flight per queue (16 in all).
const QD: usize = 8;
const MAX_NLB: u32 = 64;
/// How long any wait (start, drain, read-back) may take.
const LIMIT: Duration = Duration::from_secs(20);

/// The storage stack under the namespace.
#[derive(Clone, Copy, Debug)]
enum Stack {
    /// Compress over uring.
    Compress,
    /// Compress over crypto (AES-XTS) over uring.
    CompressOverCrypto,
}

/// A scratch directory (base file, config, RPC socket, daemon logs); kept if the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("crash-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        // Sparse: the compress stage only writes its map, the superblock and what is stored.
        std::fs::File::create(d.join("base.img"))
            .unwrap()
            .set_len(BASE_BYTES)
            .unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("crash test: files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The daemon's configuration (save_config's format); `algo` is that of new writes.
fn config(dir: &Path, port: u16, stack: Stack, algo: &str) -> Value {
    let mut compress = json!({"base_bdev_name": "Base0", "name": "Comp0", "algorithm": algo,
        "chunk_size": CHUNK as usize * BS});
    if algo == "zstd" {
        compress["level"] = json!(3);
    }
    let mut bdevs = vec![json!({"method": "bdev_uring_create", "params": {
        "name": "Base0",
        "filename": dir.join("base.img").to_str().unwrap(),
        "block_size": BS,
    }})];
    let mut keys = vec![];
    if let Stack::CompressOverCrypto = stack {
        keys.push(json!({"method": "accel_crypto_key_create", "params": {
            "name": "k0", "cipher": "AES_XTS",
            "key": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            "key2": "f0e0d0c0b0a090807060504030201000f0e0d0c0b0a090807060504030201000",
        }}));
        bdevs.push(json!({"method": "bdev_crypto_create", "params":
            {"base_bdev_name": "Base0", "name": "Crypt0", "key_name": "k0"}}));
        compress["base_bdev_name"] = json!("Crypt0");
    }
    bdevs.push(json!({"method": "bdev_compress_create", "params": compress}));
    json!({"subsystems": [
        {"subsystem": "accel", "config": keys},
        {"subsystem": "bdev", "config": bdevs},
        {"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
            {"method": "nvmf_create_subsystem", "params": {
                "nqn": NQN, "serial_number": "CRASH0000001", "model_number": "ballast-crash",
                "allow_any_host": true,
            }},
            {"method": "nvmf_subsystem_add_ns", "params": {
                "nqn": NQN, "namespace": {"nsid": 1, "bdev_name": "Comp0"},
            }},
            {"method": "nvmf_subsystem_add_listener", "params": {
                "nqn": NQN,
                "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
                    "trsvcid": port.to_string()},
            }},
        ]},
    ]})
}

/// A running ballastd; killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Daemon {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Daemon {
    /// Starts ballastd on `config` and waits until its NVMe/TCP port accepts.
    fn start(dir: &Path, run: usize, port: u16, config: &Value) -> Daemon {
        let cfg = dir.join(format!("config-{run}.json"));
        std::fs::write(&cfg, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let log = dir.join(format!("ballastd-{run}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_ballastd"))
            .args(["-m", "0x3", "--no-pin", "-r"])
            .arg(dir.join("rpc.sock"))
            .arg("-c")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ballastd");
        let mut d = Daemon {
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let t = Instant::now();
        while TcpStream::connect_timeout(&d.addr, Duration::from_millis(200)).is_err() {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("ballastd exited ({st}) before listening:\n{}", d.log_tail());
            }
            assert!(
                t.elapsed() < LIMIT,
                "ballastd never listened:\n{}",
                d.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `kill -9`.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; the daemon must shut down in order and exit 0.
    fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a valid signal on our own child (not yet reaped: wait() has not
        // been called on it), so the pid cannot have been reused.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let t = Instant::now();
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t.elapsed() < LIMIT,
                "ballastd ignored SIGTERM:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            st.success(),
            "ballastd exited with {st}:\n{}",
            self.log_tail()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ----------------------------------------------------------------------- block images ----

/// The 512 bytes of block `lba` as written by generation `gen`: a header naming both, then
/// text (even generations, compressible) or noise (odd generations, incompressible).
fn image(lba: u64, gen: u64) -> [u8; BS] {
    let mut b = [0u8; BS];
    b[0..8].copy_from_slice(&lba.to_le_bytes());
    b[8..16].copy_from_slice(&gen.to_le_bytes());
    if gen.is_multiple_of(2) {
        let mut s = String::new();
        while s.len() < BS {
            let _ = write!(
                s,
                "block {lba} generation {gen}: the quick brown fox jumps. "
            );
        }
        b[16..].copy_from_slice(&s.as_bytes()[..BS - 16]);
    } else {
        let mut x = (lba ^ gen.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for c in b[16..].chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
    }
    b
}

/// Which generation block `lba` holds (0: zeros), or `None` if it is not one we wrote.
fn identify(lba: u64, b: &[u8]) -> Option<u64> {
    if b.iter().all(|&x| x == 0) {
        return Some(0);
    }
    let at = u64::from_le_bytes(b[0..8].try_into().unwrap());
    let gen = u64::from_le_bytes(b[8..16].try_into().unwrap());
    (at == lba && gen > 0 && b == image(lba, gen)).then_some(gen)
}

// ------------------------------------------------------------------------------ model ----

/// What may be in one block after a crash.
#[derive(Clone, Default)]
struct BlockModel {
    /// Durable generation (0: zeros).
    committed: u64,
    /// Generations written after it (acknowledged but not flushed, or in flight), in order.
    later: Vec<u64>,
}

struct Model {
    blocks: Vec<BlockModel>,
    next_gen: u64,
    /// Writes acknowledged this round, in order: (lba, nlb, gen).
    acked: Vec<(u64, u32, u64)>,
    /// `acked[..committed_upto]` are durable.
    committed_upto: usize,
}

impl Model {
    fn new() -> Model {
        Model {
            blocks: vec![BlockModel::default(); (REGION + MARGIN) as usize],
            next_gen: 1,
            acked: Vec::new(),
            committed_upto: 0,
        }
    }

    /// A Flush submitted when `acked.len()` was `upto` was acknowledged.
    fn commit(&mut self, upto: usize) {
        for &(lba, nlb, gen) in &self.acked[self.committed_upto.min(upto)..upto] {
            for b in &mut self.blocks[lba as usize..(lba + nlb as u64) as usize] {
                if gen > b.committed {
                    b.committed = gen;
                    b.later.retain(|&g| g > gen);
                }
            }
        }
        self.committed_upto = self.committed_upto.max(upto);
    }
}

/// What a command in flight was.
enum Pending {
    Write { lba: u64, nlb: u32, gen: u64 },
    Flush { upto: usize },
    Read { lba: u64, nlb: u32 },
}

impl Pending {
    fn describe(&self) -> String {
        match self {
            Pending::Write { lba, nlb, gen } => {
                format!("write of generation {gen} ({nlb} blocks at {lba})")
            }
            Pending::Flush { .. } => "flush".into(),
            Pending::Read { lba, nlb } => format!("read of {nlb} blocks at {lba}"),
        }
    }
}

/// The host side: a session and its I/O queues, all polled from the test thread.
struct Host {
    _session: Session,
    qps: Vec<IoQpair>,
    inflight: [usize; QUEUES],
    pending: HashMap<u64, (usize, Pending)>,
    next_tag: u64,
    blocks: u64,
}

impl Host {
    fn connect(addr: SocketAddr) -> Host {
        let o = HostOpts {
            queue_size: 32,
            ..Default::default()
        };
        let mut s = Session::connect(addr, NQN, QUEUES as u16, &o).expect("connect");
        assert_eq!(s.io_queues as usize, QUEUES);
        let ns = s.namespace(1).unwrap();
        assert_eq!(ns.block_size as usize, BS);
        assert!(
            ns.blocks >= REGION + MARGIN,
            "namespace of {} blocks",
            ns.blocks
        );
        let qps = (1..=QUEUES as u16)
            .map(|q| IoQpair::new(s.io_queue(q).unwrap()))
            .collect();
        Host {
            _session: s,
            qps,
            inflight: [0; QUEUES],
            pending: HashMap::new(),
            next_tag: 0,
            blocks: ns.blocks,
        }
    }

    /// A queue with room, if any.
    fn queue(&self) -> Option<usize> {
        (0..QUEUES)
            .filter(|&q| self.inflight[q] < QD)
            .min_by_key(|&q| self.inflight[q])
    }

    fn submit(&mut self, q: usize, op: HostOp, lba: u64, nlb: u32, buf: Option<IoBuf>, p: Pending) {
        let tag = self.next_tag;
        self.next_tag += 1;
        // The host refuses nlb 0, even for a Flush (which ignores it).
        let nlb_cmd = if op == HostOp::Flush { 1 } else { nlb };
        if self.qps[q].submit(op, 1, lba, nlb_cmd, buf, tag).is_err() {
            panic!("submit on queue {q} refused: {:?}", self.qps[q].failure());
        }
        self.inflight[q] += 1;
        self.pending.insert(tag, (q, p));
    }

    /// Polls every queue; returns the finished commands.
    fn poll(&mut self) -> Vec<(Pending, HostCompletion)> {
        let mut out = Vec::new();
        let mut did = false;
        for qp in &mut self.qps {
            did |= qp.poll(&mut out);
        }
        if !did {
            std::thread::sleep(Duration::from_micros(100));
        }
        out.into_iter()
            .map(|c| {
                let (q, p) = self.pending.remove(&c.tag).expect("known tag");
                self.inflight[q] -= 1;
                (p, c)
            })
            .collect()
    }
}

// ------------------------------------------------------------------------ the phases ----

/// A write of 1..=64 blocks in the region: often across a chunk boundary, sometimes whole
/// chunks, otherwise anywhere.
fn pick_write(rng: &mut SmallRng) -> (u64, u32) {
    let nlb = rng.gen_range(1..=MAX_NLB);
    let lba = match rng.gen_range(0..10) {
        0..=3 => {
            // Straddles a chunk boundary (when longer than one block).
            let boundary = rng.gen_range(1..REGION / CHUNK) * CHUNK;
            boundary - rng.gen_range(1..=nlb.max(2) as u64 - 1).min(boundary)
        }
        4..=5 => {
            let n = rng.gen_range(1..=2u32) * CHUNK as u32;
            return (rng.gen_range(0..REGION / CHUNK - 1) * CHUNK, n);
        }
        _ => rng.gen_range(0..=REGION - nlb as u64),
    };
    (lba.min(REGION - nlb as u64), nlb)
}

/// Writes for 300..700 ms (at random), then kills the daemon with a full queue of writes in
/// flight and collects what the host hears back.
/// Returns (writes, flushes acknowledged, writes in flight at the kill).
fn storm(
    host: &mut Host,
    daemon: Daemon,
    model: &mut Model,
    rng: &mut SmallRng,
    seed: u64,
) -> (usize, usize, usize) {
    let mut busy = vec![false; REGION as usize];
    let t = Instant::now();
    let kill_at = Duration::from_millis(rng.gen_range(300..700));
    let mut flush_every = rng.gen_range(40..=60);
    let (mut writes, mut since_flush, mut flushes) = (0, 0, 0);
    let mut daemon = Some(daemon);
    let mut at_kill = 0;
    loop {
        while daemon.is_some() {
            let Some(q) = host.queue() else { break };
            if since_flush >= flush_every {
                let upto = model.acked.len();
                host.submit(q, HostOp::Flush, 0, 0, None, Pending::Flush { upto });
                since_flush = 0;
                flush_every = rng.gen_range(40..=60);
                continue;
            }
            // Blocks of concurrent writes never overlap (chunks may).
            let Some((lba, nlb)) = (0..8)
                .map(|_| pick_write(rng))
                .find(|&(l, n)| !busy[l as usize..(l + n as u64) as usize].contains(&true))
            else {
                break;
            };
            let gen = model.next_gen;
            model.next_gen += 1;
            let mut data = Vec::with_capacity(nlb as usize * BS);
            for b in lba..lba + nlb as u64 {
                data.extend_from_slice(&image(b, gen));
                model.blocks[b as usize].later.push(gen);
                busy[b as usize] = true;
            }
            host.submit(
                q,
                HostOp::Write,
                lba,
                nlb,
                Some(IoBuf::from_slice(&data)),
                Pending::Write { lba, nlb, gen },
            );
            writes += 1;
            since_flush += 1;
        }
        let writes_in_flight = host
            .pending
            .values()
            .filter(|(_, p)| matches!(p, Pending::Write { .. }))
            .count();
        if daemon.is_some() && t.elapsed() >= kill_at && writes_in_flight >= QD {
            at_kill = writes_in_flight;
            daemon.take().unwrap().kill9();
        }
        if daemon.is_none() && host.pending.is_empty() {
            break;
        }
        assert!(t.elapsed() < kill_at + LIMIT, "storm stuck (seed {seed})");
        for (p, c) in host.poll() {
            let ok = c.status.is_success();
            // Before the kill nothing may fail; after it, the queues fail what is in flight.
            assert!(
                ok || daemon.is_none(),
                "seed {seed}: {} failed in the storm: {:?}",
                p.describe(),
                c.status
            );
            match p {
                Pending::Write { lba, nlb, gen } => {
                    busy[lba as usize..(lba + nlb as u64) as usize].fill(false);
                    if ok {
                        model.acked.push((lba, nlb, gen));
                    }
                }
                Pending::Flush { upto } if ok => {
                    model.commit(upto);
                    flushes += 1;
                }
                _ => {}
            }
        }
    }
    (writes, flushes, at_kill)
}

/// Reads every block of the region and margin (and the namespace's last chunk) and checks it
/// against the model; then flushes and makes what was read the committed state. Returns
/// (blocks holding a write that was not flushed, blocks holding data).
fn verify(host: &mut Host, model: &mut Model, seed: u64, what: &str) -> (usize, usize) {
    let mut ranges: Vec<(u64, u32)> = (0..REGION + MARGIN)
        .step_by(MAX_NLB as usize)
        .map(|l| (l, MAX_NLB))
        .collect();
    ranges.push((host.blocks - CHUNK, CHUNK as u32));
    let mut found = vec![0u64; (REGION + MARGIN) as usize];
    let mut bad = Vec::new();
    let t = Instant::now();
    let mut next = 0;
    while next < ranges.len() || !host.pending.is_empty() {
        while next < ranges.len() {
            let Some(q) = host.queue() else { break };
            let (lba, nlb) = ranges[next];
            let buf = IoBuf::heap(nlb as usize * BS);
            host.submit(
                q,
                HostOp::Read,
                lba,
                nlb,
                Some(buf),
                Pending::Read { lba, nlb },
            );
            next += 1;
        }
        assert!(t.elapsed() < LIMIT, "read-back stuck");
        for (p, c) in host.poll() {
            let Pending::Read { lba, nlb } = p else {
                unreachable!()
            };
            assert!(
                c.status.is_success(),
                "{what} (seed {seed}): read of {nlb} blocks at {lba} failed with {:?}: the map \
                 points at garbage",
                c.status
            );
            let buf = c.buf.unwrap();
            for (i, b) in buf.chunks_exact(BS).enumerate() {
                let at = lba + i as u64;
                let m = model.blocks.get(at as usize).cloned().unwrap_or_default();
                let got = identify(at, b);
                let fine = got.is_some_and(|g| g == m.committed || m.later.contains(&g));
                if !fine {
                    bad.push(format!(
                        "block {at} (chunk {}): read {}, committed {}, written since {:?}",
                        at / CHUNK,
                        match got {
                            Some(0) => "zeros".to_string(),
                            Some(g) => format!("generation {g}"),
                            None => format!("garbage {:02x?}", &b[..24]),
                        },
                        m.committed,
                        m.later
                    ));
                }
                if let (Some(g), Some(f)) = (got, found.get_mut(at as usize)) {
                    *f = g;
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{what} (seed {seed}): {} blocks read wrong after kill -9:\n{}",
        bad.len(),
        bad[..bad.len().min(40)].join("\n")
    );
    let unflushed = model
        .blocks
        .iter()
        .zip(&found)
        .filter(|(m, &g)| g != m.committed)
        .count();
    let holding = found.iter().filter(|&&g| g != 0).count();
    // What was read is now the state; a Flush makes it the committed one.
    host.submit(0, HostOp::Flush, 0, 0, None, Pending::Flush { upto: 0 });
    while !host.pending.is_empty() {
        assert!(t.elapsed() < LIMIT, "flush stuck");
        for (_, c) in host.poll() {
            assert!(c.status.is_success(), "flush after restart: {:?}", c.status);
        }
    }
    for (m, g) in model.blocks.iter_mut().zip(found) {
        m.committed = g;
        m.later.clear();
    }
    model.acked.clear();
    model.committed_upto = 0;
    (unflushed, holding)
}

/// `rounds` cycles of storm, kill -9, restart and verify on `stack`, then a clean shutdown.
fn crash_rounds(name: &str, stack: Stack, rounds: usize) {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("{name}: seed {seed} (CRASH_SEED={seed} to replay)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = Scratch::new(name);
    let port = free_port();
    let mut model = Model::new();
    let algo = |run: usize| if run % 2 == 1 { "zstd" } else { "lz4" };
    let started = Instant::now();
    let mut daemon = Daemon::start(&dir.0, 0, port, &config(&dir.0, port, stack, algo(0)));
    let mut host = Host::connect(daemon.addr);
    for round in 1..=rounds {
        let (writes, flushes, at_kill) = storm(&mut host, daemon, &mut model, &mut rng, seed);
        drop(host);
        assert!(
            flushes > 0,
            "round {round}: no Flush was acknowledged before the kill"
        );
        daemon = Daemon::start(
            &dir.0,
            round,
            port,
            &config(&dir.0, port, stack, algo(round)),
        );
        host = Host::connect(daemon.addr);
        let (unflushed, holding) = verify(
            &mut host,
            &mut model,
            seed,
            &format!("{name} round {round}"),
        );
        eprintln!(
            "{name} round {round}: {writes} writes, {flushes} flushes acknowledged, killed with \
             {at_kill} writes in flight; after restart {holding} blocks hold data, {unflushed} of \
             them from writes never flushed ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    drop(host);
    daemon.stop();
}

#[test]
fn compress_survives_kill9_during_write_storm() {
    crash_rounds("compress", Stack::Compress, 3);
}

#[test]
fn compress_over_crypto_survives_kill9_during_write_storm() {
    crash_rounds("compress-crypto", Stack::CompressOverCrypto, 1);
}
