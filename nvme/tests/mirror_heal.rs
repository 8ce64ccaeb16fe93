//! A mirror over two remote replicas heals itself: a replica that becomes unreachable for
//! longer than the controller-loss timeout is faulted (writes go on without it); when its
//! target is reachable again the controller reconnects, and the mirror re-adds the replica and
//! copies only the regions written meanwhile. With self-healing off it stays out.

mod common;
#[path = "../../engine/tests/common/mod.rs"]
mod conformance;

use std::time::Duration;

use ballast_engine::backend::mirror::{self, rebuild, MemberState, MirrorOpts, META_BYTES};
use ballast_engine::{IoStatus, IoType};
use ballast_nvme::remote;
use common::{TestTarget, BLOCK};
use conformance::Harness;

fn attach(t: &TestTarget, name: &str) -> String {
    common::attach_remote(
        t,
        name,
        2,
        Duration::from_millis(800),
        Duration::from_millis(100),
    )
    .remove(0)
}

/// Makes target `t` unreachable: no listener, every connection closed.
fn cut(t: &TestTarget) {
    t.target.remove_listener(&t.nqn, t.addr).unwrap();
    let th = t.rt.handle();
    for c in th.cores() {
        th.call(c, || {
            ballast_nvme::target::tcp::close_all_local("test: replica cut off")
        })
        .unwrap();
    }
}

fn write(h: &Harness, off: u64, v: u8) {
    let d = vec![v; 4096];
    let (st, _) = h.io(
        (off % 2) as usize,
        "Heal",
        IoType::Write,
        off,
        8,
        Some(d),
        0,
        None,
    );
    assert_eq!(st, IoStatus::Success, "write at {off}");
}

#[test]
fn a_replica_that_comes_back_is_re_added_and_partially_rebuilt() {
    let (t1, t2) = (TestTarget::new(1), TestTarget::new(1));
    let (r1, r2) = (attach(&t1, "HealA"), attach(&t2, "HealB"));
    let h = Harness::new(2);
    mirror::create(
        &h.rt.handle(),
        MirrorOpts {
            name: "Heal".into(),
            children: vec![r1.clone(), r2.clone()],
            uuid: None,
            region_bytes: None,
        },
    )
    .unwrap();
    let nb = ballast_engine::bdev::lookup("Heal").unwrap().num_blocks();
    for off in (0..nb).step_by(1024) {
        write(&h, off, 0x11);
    }
    // Written with both in: swept once idle (the healer does it every few seconds).
    mirror::heal::sweep("Heal").unwrap();
    assert_eq!(mirror::get("Heal").unwrap().dirty_regions, 0);
    // Self-healing off: the replica is cut off, faulted, comes back — and stays out.
    let mut o = rebuild::options();
    o.self_heal = false;
    rebuild::set_options(o).unwrap();
    cut(&t2);
    // Writes stall while the controller tries to reconnect, then go on without it.
    write(&h, 64, 0x22);
    write(&h, 5000, 0x23);
    let state = |i: usize| mirror::get("Heal").unwrap().members[i].state;
    assert_eq!(state(1), MemberState::Faulted);
    assert_eq!(state(0), MemberState::InSync);
    t2.target.add_listener(&t2.nqn, t2.addr).unwrap();
    t1.wait_for("the controller to reconnect", 10, || {
        remote::list()
            .iter()
            .any(|r| r.name == "HealB" && r.connected && !r.failed)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        state(1),
        MemberState::Faulted,
        "re-added with self_heal off"
    );
    // On: the healer re-adds it by itself and copies only the two regions written.
    o.self_heal = true;
    rebuild::set_options(o).unwrap();
    t1.wait_for("the rebuild to end", 20, || {
        mirror::get("Heal").unwrap().last_rebuild.is_some()
    });
    assert_eq!(state(1), MemberState::InSync);
    let last = mirror::get("Heal").unwrap().last_rebuild.unwrap();
    assert_eq!(last.kind, rebuild::Kind::Partial, "{last:?}");
    assert_eq!(
        last.bytes_copied,
        2 * mirror::REGION_BYTES as u64,
        "{last:?}"
    );
    assert_eq!(mirror::get("Heal").unwrap().dirty_regions, 0);
    // Both replicas hold the same data, read over NVMe/TCP.
    let off = META_BYTES / BLOCK as u64;
    let len = (nb * BLOCK as u64) as usize;
    let (s1, a) = h.io(0, &r1, IoType::Read, off, nb, None, len, None);
    let (s2, b) = h.io(1, &r2, IoType::Read, off, nb, None, len, None);
    assert_eq!((s1, s2), (IoStatus::Success, IoStatus::Success));
    assert!(a == b, "the replicas differ");
    assert_eq!(a[64 * BLOCK as usize], 0x22);
    h.close_channels();
    ballast_engine::bdev::delete("Heal").unwrap();
    drop(h);
    t1.wait_for("the mirror's claims to go", 5, || {
        remote::detach("HealA").is_ok()
    });
    t1.wait_for("the mirror's claims to go", 5, || {
        remote::detach("HealB").is_ok()
    });
}
