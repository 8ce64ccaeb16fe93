//! Listeners on port 0: the kernel picks the port, and the target records, reports, serves and
//! removes the listener by the port actually bound, never by 0.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ballast_nvme::spec::{self, Status};
use common::{Host, TestTarget};

#[test]
fn port_zero_listener_reports_serves_and_removes_by_the_bound_port() {
    let t = TestTarget::new(1);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let bound = t.target.add_listener(&t.nqn, any).unwrap();
    assert_eq!(bound.ip(), any.ip());
    assert_ne!(bound.port(), 0, "add_listener returned port 0");
    // The subsystem and the target know the listener by its real port only.
    let ls: Vec<SocketAddr> = t.subsys.listeners().iter().map(|l| l.0).collect();
    assert!(ls.contains(&bound), "{ls:?} lacks {bound}");
    assert!(ls.iter().all(|a| a.port() != 0), "port 0 recorded: {ls:?}");
    assert!(t.target.listen_addrs().iter().all(|a| a.0.port() != 0));
    // Something accepts there, and it is our target: a host connects to the subsystem.
    TcpStream::connect_timeout(&bound, Duration::from_secs(5)).unwrap();
    let (mut a, _) = Host::admin(bound, &t.nqn, false, false);
    assert_eq!(
        a.identify(spec::CNS_CONTROLLER, 0).cqe.status,
        Status::SUCCESS
    );
    // The discovery log lists the real port.
    let (mut d, _) = Host::admin(t.addr, ballast_nvme::target::DISCOVERY_NQN, false, false);
    let log = d.get_log(spec::LOG_DISCOVERY, 3072);
    let (_, entries) = spec::parse_discovery_log(&log.data).unwrap();
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .any(|e| e.trsvcid == bound.port().to_string()),
        "discovery log lacks port {}",
        bound.port()
    );
    assert!(entries.iter().all(|e| e.trsvcid != "0"));
    // A second port-0 listener gets a port of its own.
    let other = t.target.add_listener(&t.nqn, any).unwrap();
    assert_ne!(other.port(), 0);
    assert_ne!(other, bound);
    // Removal by the bound port works, disconnects the controller that came through it, and
    // closes the socket; asking to remove port 0 is refused (no such listener).
    assert!(t.target.remove_listener(&t.nqn, any).is_err());
    t.target.remove_listener(&t.nqn, bound).unwrap();
    a.expect_closed();
    assert!(!t.subsys.listeners().iter().any(|l| l.0 == bound));
    assert!(TcpStream::connect_timeout(&bound, Duration::from_secs(5)).is_err());
    t.target.remove_listener(&t.nqn, other).unwrap();
}
