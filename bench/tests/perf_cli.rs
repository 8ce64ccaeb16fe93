//! `ballast-perf` as a user runs it: impossible options are refused with a message (exit
//! status 2), a run reports the size and depth it used, and against an in-process NVMe/TCP
//! target (127.0.0.1, a free port) a refused Connect and an I/O size above MDTS are
//! explained in words, a depth above the target's queue size is announced, and failed I/Os
//! are counted apart from IOPS.
//!
//! ```text
//!  test ─ spawn ─► ballast-perf --bdev null …           (in the child: reactor + null bdev)
//!  test ─ spawn ─► ballast-perf -r 'trtype:tcp …' ──TCP──► TestTarget (this process:
//!                                                          reactor, malloc bdev, subsystem)
//! ```

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_engine::backend::malloc;
use ballast_nvme::target::{Subsystem, Target, TransportOpts};
use ballast_reactor::{Runtime, RuntimeConfig};

/// What a `ballast-perf` run left.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `ballast-perf args…` (unpinned), killing it after 30 s.
fn perf(args: &[&str]) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ballast-perf"))
        .arg("--no-pin")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ballast-perf");
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        so.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        se.read_to_string(&mut s).unwrap();
        s
    });
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("ballast-perf {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

const NULL: &[&str] = &["--bdev", "null", "--bdev-size-mib", "16"];

/// `ballast-perf` on the null bdev with `extra` must refuse with exit status 2, saying
/// `why`, and print no results.
fn refused(extra: &[&str], why: &str) {
    let time: &[&str] = if extra.contains(&"-t") {
        &[]
    } else {
        &["-t", "1"]
    };
    let args: Vec<&str> = NULL
        .iter()
        .chain(&["--warmup", "0"])
        .chain(time)
        .chain(extra)
        .copied()
        .collect();
    let o = perf(&args);
    assert_eq!(o.code, Some(2), "{extra:?}: stderr {:?}", o.stderr);
    assert!(o.stderr.contains(why), "{extra:?}: stderr {:?}", o.stderr);
    assert!(
        !o.stdout.contains("IOPS"),
        "{extra:?}: stdout {:?}",
        o.stdout
    );
}

fn json(o: &Out) -> serde_json::Value {
    serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?} stderr {:?}", o.stdout, o.stderr))
}

#[test]
fn size_not_a_multiple_of_the_block_size_is_refused() {
    refused(
        &["-o", "7"],
        "-o 7: the I/O size must be a multiple of the block size, 512 bytes",
    );
}

#[test]
fn read_percentage_above_100_is_refused() {
    refused(
        &["-w", "randrw", "-M", "150"],
        "the read percentage is 0..=100",
    );
}

#[test]
fn zero_seconds_is_refused() {
    refused(&["-t", "0"], "the run time must be at least 1 second");
}

#[test]
fn zero_depth_is_refused() {
    refused(&["-q", "0"], "the queue depth must be at least 1");
}

#[test]
fn short_run_reports_the_size_and_depth_used() {
    let o = perf(&[
        "--bdev",
        "null",
        "--bdev-size-mib",
        "16",
        "-t",
        "1",
        "--warmup",
        "0",
        "-q",
        "4",
        "-o",
        "8192",
        "--json",
    ]);
    assert_eq!(o.code, Some(0), "stderr {:?}", o.stderr);
    let j = json(&o);
    assert_eq!(j["size"], 8192);
    assert_eq!(j["depth"], 4);
    assert_eq!(j["depth_requested"], 4);
    assert!(j["total"]["ios"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["total"]["errors"], 0);
    assert!(j["seconds"].as_f64().unwrap() > 0.5, "{j}");
}

// ---- against an in-process NVMe/TCP target ----

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// One subsystem with one 8 MiB malloc namespace, listening on 127.0.0.1 at a free port,
/// on one unpinned reactor of this process (the pattern of nvme/tests/common).
struct TestTarget {
    _rt: Runtime,
    target: Arc<Target>,
    subsys: Arc<Subsystem>,
    nqn: String,
    addr: SocketAddr,
    bdev: String,
}

impl TestTarget {
    fn new() -> Self {
        let rt = Runtime::start(RuntimeConfig {
            cores: vec![0],
            pin: false,
            ..Default::default()
        })
        .unwrap();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let bdev = format!("perfcli{}_{n}", std::process::id());
        malloc::create(malloc::MallocOpts {
            name: bdev.clone(),
            num_blocks: 16384,
            block_size: 512,
            uuid: None,
        })
        .unwrap();
        let target = Target::new(rt.handle(), TransportOpts::default()).unwrap();
        let nqn = format!("nqn.2026-11.io.ballast:perfcli{n}");
        let subsys = target
            .create_subsystem(&nqn, "PERFCLI01", "ballast-test", 32, true)
            .unwrap();
        subsys.add_ns(&bdev, Some(1), None, None, None).unwrap();
        // Port 0: the target binds a free port itself and says which (no race with other
        // tests for a port picked beforehand).
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let addr = target.add_listener(&nqn, any).unwrap();
        TestTarget {
            _rt: rt,
            target,
            subsys,
            nqn,
            addr,
            bdev,
        }
    }

    /// The `-r` transport ID of subsystem `nqn` at this target's address.
    fn trid(&self, nqn: &str) -> String {
        format!(
            "trtype:tcp traddr:127.0.0.1 trsvcid:{} subnqn:{nqn}",
            self.addr.port()
        )
    }
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        self.target.shutdown();
        let _ = self.target.delete_subsystem(&self.nqn);
        let _ = ballast_engine::bdev::delete(&self.bdev);
    }
}

#[test]
fn wrong_subnqn_is_explained_in_words() {
    let t = TestTarget::new();
    let wrong = "nqn.2026-11.io.ballast:nosuch";
    let o = perf(&["-r", &t.trid(wrong), "-t", "1", "--warmup", "0"]);
    assert_eq!(o.code, Some(1), "stderr {:?}", o.stderr);
    let want = format!(
        "connect to {wrong} at {} refused: Connect Invalid Parameters (sct 0x1 sc 0x82)",
        t.addr
    );
    assert!(o.stderr.contains(&want), "stderr {:?}", o.stderr);
    assert!(
        o.stderr.contains("is the subsystem NQN right"),
        "{}",
        o.stderr
    );
}

#[test]
fn io_size_above_mdts_is_refused() {
    let t = TestTarget::new();
    let mdts = TransportOpts::default().max_io_size;
    let size = (mdts * 2).to_string();
    let o = perf(&[
        "-r",
        &t.trid(&t.nqn),
        "-t",
        "1",
        "--warmup",
        "0",
        "-o",
        &size,
        "--json",
    ]);
    assert_eq!(o.code, Some(2), "stderr {:?}", o.stderr);
    let want = format!(
        "-o {size}: the I/O size is larger than the controller's maximum data transfer size \
         (MDTS) of {mdts} bytes"
    );
    assert!(o.stderr.contains(&want), "stderr {:?}", o.stderr);
    assert!(o.stdout.is_empty(), "stdout {:?}", o.stdout);
}

#[test]
fn depth_above_the_targets_queue_size_is_announced_and_reported() {
    let t = TestTarget::new();
    let granted = TransportOpts::default().max_queue_depth - 1;
    let o = perf(&[
        "-r",
        &t.trid(&t.nqn),
        "-t",
        "1",
        "--warmup",
        "0",
        "-q",
        "4096",
        "--json",
    ]);
    assert_eq!(o.code, Some(0), "stderr {:?}", o.stderr);
    let note =
        format!("queue depth 4096 requested, target allows {granted} per queue: using {granted}");
    assert!(o.stderr.contains(&note), "stderr {:?}", o.stderr);
    let j = json(&o);
    assert_eq!(j["depth"], granted);
    assert_eq!(j["depth_requested"], 4096);
    assert!(j["total"]["ios"].as_u64().unwrap() > 0, "{j}");
}

#[test]
fn failed_ios_are_counted_apart_with_their_status() {
    // The namespace goes away during the warm-up (hot removal on the target): every I/O of
    // the measured second fails, and none of them may count as IOPS or MiB/s.
    let t = TestTarget::new();
    let subsys = t.subsys.clone();
    let remover = std::thread::spawn(move || {
        let t0 = Instant::now();
        while subsys.controllers().is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "perf never connected"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        subsys.remove_ns(1).unwrap();
    });
    let o = perf(&[
        "-r",
        &t.trid(&t.nqn),
        "-t",
        "1",
        "--warmup",
        "1",
        "-q",
        "8",
        "--json",
    ]);
    remover.join().unwrap();
    assert_eq!(o.code, Some(1), "stderr {:?}", o.stderr);
    let j = json(&o);
    let failed = j["total"]["errors"].as_u64().unwrap();
    assert!(failed > 0, "{j}");
    assert_eq!(j["total"]["ios"], 0, "{j}");
    assert_eq!(j["total"]["iops"], 0.0, "{j}");
    assert_eq!(j["total"]["mib_s"], 0.0, "{j}");
    // Most frequent status first; in-flight I/Os of the removal may have others.
    let f = &j["failures"];
    let counted: u64 = f
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, failed, "{j}");
    let words = f[0]["status"].as_str().unwrap();
    assert_eq!(words, "Invalid Namespace or Format (sct 0x0 sc 0xb)", "{j}");
    let n = f[0]["count"].as_u64().unwrap();
    assert!(
        o.stderr.contains(&format!("{n} I/Os failed: {words}")),
        "stderr {:?}",
        o.stderr
    );
}
