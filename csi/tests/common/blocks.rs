//! Block I/O on a ballastd bdev for tests that check data (snapshots, clones): the bdev is
//! exported as namespace 1 of a test subsystem listening on 127.0.0.1 (the test host's NQN
//! added, never allow_any_host) and read or written with ballast's NVMe/TCP host library.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ballast_engine::IoBuf;
use ballast_nvme::host::{HostOp, HostOpts, IoQpair, Session};
use ballast_nvme::spec::Status;
use serde_json::json;

use super::Daemon;

/// The block size of the test stores.
pub const BLOCK: usize = 4096;
const HOSTNQN: &str = "nqn.2026-11.io.ballast:csi-test-host";

/// A bdev exported for the duration of a value (unexported on drop, so the driver may
/// delete or snapshot it afterwards without a namespace holding it).
pub struct Export<'a> {
    d: &'a Daemon,
    nqn: String,
    addr: SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl<'a> Export<'a> {
    /// Exports bdev `bdev` (an lvol's UUID or alias) of daemon `d`.
    pub fn new(d: &'a Daemon, bdev: &str) -> Export<'a> {
        let nqn = format!(
            "nqn.2026-11.io.ballast:csi-test-{}",
            uuid::Uuid::new_v4().simple()
        );
        let port = free_port();
        d.ok(
            "nvmf_create_subsystem",
            json!({"nqn": nqn, "allow_any_host": false}),
        );
        d.ok(
            "nvmf_subsystem_add_host",
            json!({"nqn": nqn, "host": HOSTNQN}),
        );
        d.ok(
            "nvmf_subsystem_add_ns",
            json!({"nqn": nqn, "namespace": {"bdev_name": bdev}}),
        );
        d.ok(
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "adrfam": "ipv4",
                "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
        );
        Export {
            d,
            nqn,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn io(&self, op: HostOp, lba: u64, buf: IoBuf) -> IoBuf {
        let (_s, mut qp) = self.connect();
        Self::run(&mut qp, op, lba, buf)
    }

    fn connect(&self) -> (Session, IoQpair) {
        let o = HostOpts {
            hostnqn: HOSTNQN.into(),
            queue_size: 4,
            ..Default::default()
        };
        let s = Session::connect(self.addr, &self.nqn, 1, &o).expect("connect");
        let qp = IoQpair::new(s.io_queue(1).expect("I/O queue"));
        (s, qp)
    }

    fn run(qp: &mut IoQpair, op: HostOp, lba: u64, buf: IoBuf) -> IoBuf {
        let nlb = (buf.len() / BLOCK) as u32;
        qp.submit(op, 1, lba, nlb, Some(buf), 1)
            .map_err(|_| "submit refused")
            .unwrap();
        let mut out = Vec::new();
        let t0 = Instant::now();
        while out.is_empty() {
            if !qp.poll(&mut out) {
                std::thread::sleep(Duration::from_micros(200));
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{op:?} timed out");
        }
        let c = out.pop().unwrap();
        assert_eq!(c.status, Status::SUCCESS, "{op:?} at lba {lba}");
        c.buf.expect("the buffer comes back")
    }

    /// Writes `data` (whole blocks) at block `lba`.
    pub fn write(&self, lba: u64, data: &[u8]) {
        self.io(HostOp::Write, lba, IoBuf::from_slice(data));
    }

    /// Reads `blocks` blocks at block `lba`.
    #[allow(dead_code)]
    pub fn read(&self, lba: u64, blocks: usize) -> Vec<u8> {
        self.io(HostOp::Read, lba, IoBuf::heap(blocks * BLOCK))
            .to_vec()
    }

    /// Writes over one connection, one write at a time, while `next(k)` gives the k-th
    /// write's block and data (whole blocks, ≤ 128 KiB); returns how many it wrote.
    #[allow(dead_code)]
    pub fn write_while(&self, mut next: impl FnMut(u64) -> Option<(u64, Vec<u8>)>) -> u64 {
        let (_s, mut qp) = self.connect();
        let mut k = 0;
        while let Some((lba, data)) = next(k) {
            Self::run(&mut qp, HostOp::Write, lba, IoBuf::from_slice(&data));
            k += 1;
        }
        k
    }

    /// Reads `blocks` blocks at block `lba` over one connection, 128 KiB at a time (the
    /// target's default max_io_size).
    #[allow(dead_code)]
    pub fn read_many(&self, lba: u64, blocks: usize) -> Vec<u8> {
        let (_s, mut qp) = self.connect();
        let mut out = Vec::with_capacity(blocks * BLOCK);
        while out.len() < blocks * BLOCK {
            let at = (out.len() / BLOCK) as u64;
            let n = (blocks - at as usize).min(32);
            let b = Self::run(&mut qp, HostOp::Read, lba + at, IoBuf::heap(n * BLOCK));
            out.extend_from_slice(&b);
        }
        out
    }
}

impl Drop for Export<'_> {
    fn drop(&mut self) {
        let _ = self
            .d
            .call("nvmf_delete_subsystem", json!({"nqn": self.nqn}));
    }
}

/// `blocks` blocks of bytes that depend on `seed`.
pub fn pattern(seed: u8, blocks: usize) -> Vec<u8> {
    (0..blocks * BLOCK)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}
