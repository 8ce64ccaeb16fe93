//! The host library against a target that is not ours (ci/interop-host.sh runs this against
//! the Linux kernel's nvmet-tcp target in the QEMU guest). Ignored by default; run with
//! `BALLAST_EXT_TARGET=127.0.0.1:PORT BALLAST_EXT_NQN=nqn... cargo test -p ballast-nvme
//! --test external -- --ignored`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use ballast_engine::IoBuf;
use ballast_nvme::host::{HostOp, HostOpts, IoQpair, Session};
use ballast_nvme::spec::Status;

fn target() -> (SocketAddr, String) {
    let a = std::env::var("BALLAST_EXT_TARGET").expect("BALLAST_EXT_TARGET=ip:port");
    let n = std::env::var("BALLAST_EXT_NQN").expect("BALLAST_EXT_NQN");
    (a.parse().expect("ip:port"), n)
}

#[test]
#[ignore]
fn external_target_discover_connect_verify() {
    let (addr, nqn) = target();
    let entries = Session::discover(addr, &HostOpts::default()).expect("discovery");
    assert!(
        entries.iter().any(|e| e.subnqn == nqn),
        "discovery log lists {nqn}: {entries:?}"
    );
    for (hd, dd) in [(false, false), (true, true)] {
        let o = HostOpts {
            hdgst: hd,
            ddgst: dd,
            queue_size: 32,
            ..Default::default()
        };
        let mut s = Session::connect(addr, &nqn, 1, &o).expect("connect");
        assert!(s.io_queues >= 1);
        let ns = s.namespace(1).expect("namespace 1");
        eprintln!(
            "{addr} {nqn}: {:?}, model {:?}, max_xfer {}",
            ns, s.ctrl.model, s.ctrl.max_xfer
        );
        s.keep_alive().expect("keep-alive");
        let mut qp = IoQpair::new(s.io_queue(1).expect("I/O queue"));
        let bs = ns.block_size as usize;
        let max = if s.ctrl.max_xfer == 0 {
            131072
        } else {
            s.ctrl.max_xfer as usize
        };
        let sizes: Vec<usize> = [bs, 4096, 8192, 16384, 65536, 131072]
            .into_iter()
            .filter(|&l| l % bs == 0 && l <= max)
            .collect();
        let mut out = Vec::new();
        let mut layout = Vec::new();
        let mut lba = 64u64;
        for (i, &len) in sizes.iter().enumerate() {
            let data = common::pattern(len, 1000 + i as u64 + hd as u64);
            let nlb = (len / bs) as u32;
            qp.submit(
                HostOp::Write,
                1,
                lba,
                nlb,
                Some(IoBuf::from_slice(&data)),
                i as u64,
            )
            .unwrap();
            layout.push((lba, nlb, data));
            lba += nlb as u64 + 7;
        }
        common::run_until(&mut qp, &mut out, sizes.len(), Duration::from_secs(60));
        assert!(out.iter().all(|c| c.status == Status::SUCCESS), "{out:?}");
        out.clear();
        for (i, (lba, nlb, _)) in layout.iter().enumerate() {
            qp.submit(
                HostOp::Read,
                1,
                *lba,
                *nlb,
                Some(IoBuf::heap(*nlb as usize * bs)),
                i as u64,
            )
            .unwrap();
        }
        common::run_until(&mut qp, &mut out, sizes.len(), Duration::from_secs(60));
        for c in &out {
            assert_eq!(c.status, Status::SUCCESS);
            assert!(
                c.buf.as_ref().unwrap()[..] == layout[c.tag as usize].2[..],
                "read back {} B",
                layout[c.tag as usize].2.len()
            );
        }
        out.clear();
        qp.submit(HostOp::Flush, 1, 0, 1, None, 1).unwrap();
        qp.submit(HostOp::Read, 1, ns.blocks, 1, Some(IoBuf::heap(bs)), 2)
            .unwrap();
        common::run_until(&mut qp, &mut out, 2, Duration::from_secs(60));
        out.sort_by_key(|c| c.tag);
        assert_eq!(out[0].status, Status::SUCCESS, "flush");
        // ballast answers LBA Out of Range; Linux nvmet's block backend leaves the check to
        // the block layer and answers Internal Error. Either way it must be an error.
        assert!(!out[1].status.is_success(), "read past the end succeeded");
    }
}
