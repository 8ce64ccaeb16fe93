//! JSON-RPC server tests: every method with valid and invalid params, framing and protocol
//! errors, concurrent clients, misbehaving clients, live changes, save → load → save.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ballast_rpc::{Context, RpcServer};
use common::{free_port, sub, wait, Daemon};
use serde_json::{json, Value};

#[test]
fn framework_methods() {
    let d = Daemon::new();
    let mut c = d.client();
    let m = c.ok("rpc_get_methods", Value::Null);
    assert!(m
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "nvmf_create_subsystem"));
    let v = c.ok("spdk_get_version", Value::Null);
    assert!(v["version"].as_str().unwrap().starts_with("ballast v"));
    assert_eq!(c.ok("framework_wait_init", Value::Null), json!(true));
    let r = c.ok("framework_get_reactors", Value::Null);
    assert_eq!(r["reactors"].as_array().unwrap().len(), 2);
    assert!(r["reactors"][0]["busy"].is_u64());
    let t = c.ok("thread_get_stats", Value::Null);
    assert_eq!(t["threads"].as_array().unwrap().len(), 2);
    let (code, msg) = c.err("no_such_method", Value::Null);
    assert_eq!(code, -32601);
    assert!(msg.contains("no_such_method"));
    let (code, _) = c.err("spdk_get_version", json!({"x": 1}));
    assert_eq!(code, -32602);
    let (code, msg) = c.err("spdk_kill_instance", json!({"sig_name": "SIGFOO"}));
    assert_eq!(code, -32602);
    assert!(msg.contains("sig_name"));
}

#[test]
fn bdev_methods() {
    let d = Daemon::new();
    let mut c = d.client();
    let m0 = d.name("M0");
    assert_eq!(
        c.ok(
            "bdev_malloc_create",
            json!({"name": m0, "num_blocks": 2048, "block_size": 512})
        ),
        json!(m0)
    );
    // Duplicate name.
    let (code, msg) = c.err(
        "bdev_malloc_create",
        json!({"name": m0, "num_blocks": 2048, "block_size": 512}),
    );
    assert_eq!(code, -17);
    assert!(msg.contains("already exists"), "{msg}");
    // Missing, wrong type, unknown, bad values: the message names the parameter.
    for (p, needle) in [
        (json!({"name": "x", "block_size": 512}), "num_blocks"),
        (
            json!({"name": "x", "num_blocks": "8", "block_size": 512}),
            "num_blocks",
        ),
        (
            json!({"name": "x", "num_blocks": 8, "block_size": 512, "colour": 1}),
            "colour",
        ),
        (
            json!({"name": "x", "num_blocks": 8, "block_size": 1000}),
            "block_size",
        ),
        (
            json!({"name": "x", "num_blocks": 0, "block_size": 512}),
            "num_blocks",
        ),
        (
            json!({"name": "x", "num_blocks": 8, "block_size": 512, "uuid": "nope"}),
            "uuid",
        ),
    ] {
        let (code, msg) = c.err("bdev_malloc_create", p.clone());
        assert_eq!(code, -32602, "{p}");
        assert!(msg.contains(needle), "{p}: {msg}");
    }
    let uuid = "6a2b1a8c-6a3c-4d3b-9d3e-2f3c4b5a6d7e";
    let n0 = d.name("N0");
    c.ok(
        "bdev_null_create",
        json!({"name": n0, "num_blocks": 4096, "block_size": 4096, "uuid": uuid}),
    );
    let b = c.ok("bdev_get_bdevs", json!({"name": n0}));
    assert_eq!(b[0]["uuid"], json!(uuid));
    assert_eq!(b[0]["block_size"], json!(4096));
    assert_eq!(b[0]["product_name"], json!("Null disk"));
    assert_eq!(b[0]["claimed"], json!(false));
    // Lookup by alias/uuid-less names fails clearly.
    let (code, msg) = c.err("bdev_get_bdevs", json!({"name": d.name("missing")}));
    assert_eq!(code, -19);
    assert!(msg.contains("not found"));
    // uring on a file.
    let file = format!("/var/tmp/{}.img", d.name("U0"));
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let u0 = d.name("U0");
    c.ok(
        "bdev_uring_create",
        json!({"name": u0, "filename": file, "block_size": 512}),
    );
    let (code, _) = c.err(
        "bdev_uring_create",
        json!({"name": d.name("U1"), "filename": "/nonexistent/x"}),
    );
    assert_ne!(code, 0);
    let st = c.ok("bdev_get_iostat", json!({"name": u0}));
    assert_eq!(st["bdevs"][0]["num_read_ops"], json!(0));
    for (m, n) in [
        ("bdev_malloc_delete", &m0),
        ("bdev_null_delete", &n0),
        ("bdev_uring_delete", &u0),
    ] {
        assert_eq!(c.ok(m, json!({"name": n})), json!(true));
        let (code, _) = c.err(m, json!({"name": n}));
        assert_eq!(code, -19, "deleting {n} twice");
    }
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn nvmf_methods_and_live_changes() {
    let d = Daemon::new();
    let mut c = d.client();
    let nqn = d.nqn("a");
    let m0 = d.name("M0");
    c.ok(
        "bdev_malloc_create",
        json!({"name": m0, "num_blocks": 2048, "block_size": 512}),
    );
    // SPDK scripts pass options ballast has no use for; they are accepted.
    c.ok(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "max_queue_depth": 64, "num_shared_buffers": 511, "zcopy": false}),
    );
    let (code, msg) = c.err("nvmf_create_transport", json!({"trtype": "TCP"}));
    assert_eq!(code, -17, "{msg}");
    let (code, msg) = c.err("nvmf_create_transport", json!({"trtype": "RDMA"}));
    assert_eq!(code, -32602);
    assert!(msg.contains("trtype"));
    let (_, msg) = c.err(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "bogus_opt": 1}),
    );
    assert!(msg.contains("bogus_opt"));
    let t = c.ok("nvmf_get_transports", Value::Null);
    assert_eq!(t[0]["max_queue_depth"], json!(64));

    c.ok(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "serial_number": "SN42", "model_number": "M", "allow_any_host": false}),
    );
    let (code, _) = c.err("nvmf_create_subsystem", json!({"nqn": nqn}));
    assert_eq!(code, -17);
    let (code, msg) = c.err("nvmf_create_subsystem", json!({"nqn": "not-an-nqn"}));
    assert_eq!(code, -32602, "{msg}");
    let (code, _) = c.err("nvmf_subsystem_add_ns", json!({"nqn": nqn}));
    assert_eq!(code, -32602);
    let nsid = c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": m0, "nguid": "00112233445566778899AABBCCDDEEFF"}}),
    );
    assert_eq!(nsid, json!(1));
    // The bdev is claimed now: deleting it fails clearly.
    let (code, msg) = c.err("bdev_malloc_delete", json!({"name": m0}));
    assert_eq!(code, -16);
    assert!(msg.contains("claimed") && msg.contains(&nqn), "{msg}");
    let (code, _) = c.err(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": m0}}),
    );
    assert_ne!(code, 0, "a claimed bdev cannot be added twice");
    let (code, msg) = c.err(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": d.name("M1"), "nguid": "xyz"}}),
    );
    assert_eq!(code, -32602);
    assert!(msg.contains("nguid"), "{msg}");

    let port = free_port();
    let la = json!({"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
    c.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": la}),
    );
    let (code, _) = c.err(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": la}),
    );
    assert_eq!(code, -32602);
    let (_, msg) = c.err(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "traddr": "localhost", "trsvcid": "1"}}),
    );
    assert!(msg.contains("traddr"), "{msg}");
    let (_, msg) = c.err(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "adrfam": "ipv6", "traddr": "127.0.0.1", "trsvcid": "1"}}),
    );
    assert!(msg.contains("adrfam"), "{msg}");
    c.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": nqn, "host": "nqn.2014-08.org.nvmexpress:uuid:1"}),
    );
    let (code, msg) = c.err(
        "nvmf_subsystem_add_host",
        json!({"nqn": nqn, "host": "bad host"}),
    );
    assert_eq!(code, -32602);
    assert!(msg.contains("host"));
    c.ok(
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": nqn, "allow_any_host": true}),
    );
    let subs = c.ok("nvmf_get_subsystems", json!({"nqn": nqn}));
    let s = &subs[0];
    assert_eq!(s["serial_number"], json!("SN42"));
    assert_eq!(s["allow_any_host"], json!(true));
    assert_eq!(s["namespaces"][0]["bdev_name"], json!(m0));
    assert_eq!(
        s["namespaces"][0]["nguid"],
        json!("00112233445566778899AABBCCDDEEFF")
    );
    assert_eq!(s["listen_addresses"][0]["trsvcid"], json!(port.to_string()));
    assert_eq!(
        s["hosts"][0]["nqn"],
        json!("nqn.2014-08.org.nvmexpress:uuid:1")
    );
    let all = c.ok("nvmf_get_subsystems", Value::Null);
    assert_eq!(all[0]["subtype"], json!("Discovery"));
    assert_eq!(
        c.ok("nvmf_subsystem_get_controllers", json!({"nqn": nqn})),
        json!([])
    );
    assert_eq!(
        c.ok("nvmf_subsystem_get_qpairs", json!({"nqn": nqn})),
        json!([])
    );
    let l = c.ok("nvmf_subsystem_get_listeners", json!({"nqn": nqn}));
    assert_eq!(l[0]["address"]["traddr"], json!("127.0.0.1"));
    let (code, _) = c.err("nvmf_subsystem_get_listeners", json!({"nqn": d.nqn("zzz")}));
    assert_eq!(code, -19);

    // A connected host shows up as a controller with queue pairs.
    let mut h = TestHost::connect(port, &nqn);
    let ctrls = c.ok("nvmf_subsystem_get_controllers", json!({"nqn": nqn}));
    assert_eq!(ctrls.as_array().unwrap().len(), 1);
    assert_eq!(ctrls[0]["hostnqn"], json!(HOSTNQN));
    let q = c.ok("nvmf_subsystem_get_qpairs", json!({"nqn": nqn}));
    assert_eq!(q[0]["qid"], json!(0));
    // Removing the host from the allowed list (with allow_any_host off) disconnects it.
    c.ok(
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": nqn, "allow_any_host": false}),
    );
    c.ok(
        "nvmf_subsystem_remove_host",
        json!({"nqn": nqn, "host": "nqn.2014-08.org.nvmexpress:uuid:1"}),
    );
    h.expect_closed();
    wait(|| c.ok("nvmf_subsystem_get_controllers", json!({"nqn": nqn})) == json!([]));
    // Removing the listener disconnects controllers that came through it.
    c.ok(
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": nqn, "allow_any_host": true}),
    );
    let mut h = TestHost::connect(port, &nqn);
    c.ok(
        "nvmf_subsystem_remove_listener",
        json!({"nqn": nqn, "listen_address": la}),
    );
    h.expect_closed();
    wait(|| c.ok("nvmf_subsystem_get_controllers", json!({"nqn": nqn})) == json!([]));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    c.ok("nvmf_subsystem_remove_ns", json!({"nqn": nqn, "nsid": 1}));
    let (code, _) = c.err("nvmf_subsystem_remove_ns", json!({"nqn": nqn, "nsid": 1}));
    assert_ne!(code, 0);
    c.ok("bdev_malloc_delete", json!({"name": m0}));
    c.ok("nvmf_delete_subsystem", json!({"nqn": nqn}));
    let (code, _) = c.err("nvmf_delete_subsystem", json!({"nqn": nqn}));
    assert_eq!(code, -19);
    let (code, _) = c.err(
        "nvmf_delete_subsystem",
        json!({"nqn": "nqn.2014-08.org.nvmexpress.discovery"}),
    );
    assert_eq!(code, -32602);
}

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:1";

/// Just enough of an NVMe/TCP host to hold an admin queue open.
struct TestHost(std::net::TcpStream);

impl TestHost {
    fn connect(port: u16, nqn: &str) -> Self {
        use ballast_nvme::{pdu, spec};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 128];
        pdu::IcReq {
            pfv: 0,
            hpda: 0,
            hdgst: false,
            ddgst: false,
            maxr2t: 0,
        }
        .encode(&mut b);
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
        let data = spec::ConnectData {
            hostid: [1; 16],
            cntlid: 0xFFFF,
            subnqn: nqn.into(),
            hostnqn: HOSTNQN.into(),
        }
        .to_bytes();
        let sqe = spec::ConnectCmd {
            recfmt: 0,
            qid: 0,
            sqsize: 31,
            cattr: 0,
            kato: 0,
        }
        .to_sqe(1, true);
        let mut h = vec![0u8; 72];
        pdu::encode_capsule_cmd(&mut h, &sqe, data.len() as u32, false, false);
        h.extend_from_slice(&data);
        s.write_all(&h).unwrap();
        let mut r = [0u8; 24];
        s.read_exact(&mut r).unwrap();
        let cqe = spec::Cqe::from_bytes(&r[8..24]);
        assert_eq!(cqe.status, spec::Status::SUCCESS, "connect");
        TestHost(s)
    }

    fn expect_closed(&mut self) {
        let mut b = [0u8; 64];
        loop {
            match self.0.read(&mut b) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected close: {e}"),
            }
        }
    }
}

#[test]
fn protocol_errors_batches_and_bad_clients() {
    let d = Daemon::new();
    let mut good = d.client();
    // Not JSON-RPC 2.0, bad method type, params not an object.
    let mut c = d.client();
    for bad in [&br#""1.0""#[..], b"2", b"null"] {
        let mut req = br#"{"jsonrpc":"#.to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(br#","id":1,"method":"spdk_get_version"}"#);
        c.send_raw(&req);
        let r = c.recv();
        assert_eq!(r["error"]["code"], json!(-32600), "{r}");
        assert_eq!(r["jsonrpc"], json!("2.0"));
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.contains("jsonrpc must be \"2.0\""), "{msg}");
    }
    // As in SPDK, a request without "jsonrpc" is served; the response says "2.0".
    c.send_raw(br#"{"id":4,"method":"framework_wait_init"}"#);
    let r = c.recv();
    assert_eq!(r["result"], json!(true), "{r}");
    assert_eq!(r["id"], json!(4));
    assert_eq!(r["jsonrpc"], json!("2.0"));
    c.send_raw(br#"{"jsonrpc":"2.0","id":2,"method":7}"#);
    assert_eq!(c.recv()["error"]["code"], json!(-32600));
    c.send_raw(br#"{"jsonrpc":"2.0","id":3,"method":"spdk_get_version","params":5}"#);
    assert_eq!(c.recv()["error"]["code"], json!(-32600));
    // A batch with a notification: two answers, in order.
    c.send_raw(
        br#"[{"jsonrpc":"2.0","id":10,"method":"framework_wait_init"},
             {"jsonrpc":"2.0","method":"framework_wait_init"},
             {"jsonrpc":"2.0","id":11,"method":"nope"}]"#,
    );
    let r = c.recv();
    let r = r.as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["result"], json!(true));
    assert_eq!(r[1]["error"]["code"], json!(-32601));
    c.send_raw(b"[]");
    assert_eq!(c.recv()["error"]["code"], json!(-32600));
    // A notification alone gets no answer; the next request does.
    c.send_raw(br#"{"jsonrpc":"2.0","method":"framework_wait_init"}"#);
    c.send_raw(br#"{"jsonrpc":"2.0","id":12,"method":"framework_wait_init"}"#);
    assert_eq!(c.recv()["id"], json!(12));
    // Two requests in one write, and one split across writes.
    c.send_raw(
        br#"{"jsonrpc":"2.0","id":13,"method":"framework_wait_init"}{"jsonrpc":"2.0","id":14,"#,
    );
    assert_eq!(c.recv()["id"], json!(13));
    std::thread::sleep(Duration::from_millis(50));
    c.send_raw(br#""method":"framework_wait_init"}"#);
    assert_eq!(c.recv()["id"], json!(14));
    // Garbage: a parse error, then the server closes this connection only.
    c.send_raw(b"{this is not json}");
    assert_eq!(c.recv()["error"]["code"], json!(-32700));
    let mut b = [0u8; 16];
    assert_eq!(c.s.read(&mut b).unwrap(), 0);
    // A partial request followed by a hang-up, and an oversized one.
    let mut p = d.client();
    p.send_raw(br#"{"jsonrpc":"2.0","id":1,"meth"#);
    drop(p);
    let mut big = d.client();
    let mut huge = br#"{"jsonrpc":"2.0","id":1,"method":""#.to_vec();
    huge.resize(ballast_rpc::server::MAX_REQUEST + 1024, b'a');
    let _ = big.s.write_all(&huge);
    let r = big.recv();
    assert_eq!(r["error"]["code"], json!(-32600));
    // The well-behaved client never noticed.
    assert_eq!(good.ok("framework_wait_init", Value::Null), json!(true));
}

#[test]
fn errors_quoting_huge_values_are_capped() {
    let d = Daemon::new();
    let mut c = d.client();
    let huge = "x".repeat(1 << 20);
    // A 1 MiB method name: "Method not found", short.
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": format!("bdev_{huge}")});
    c.send_raw(req.to_string().as_bytes());
    let r = c.recv();
    let len = r.to_string().len();
    assert!(len < 2048, "{len}-byte response");
    assert_eq!(r["error"]["code"], json!(-32601));
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("Method not found: bdev_xxx"), "{msg}");
    assert!(msg.len() <= ballast_rpc::server::MAX_ERROR_MESSAGE);
    assert!(msg.contains("bytes elided"), "{msg}");
    // A 1 MiB bdev name: "not found", short, and still saying so after the name.
    let (code, msg) = c.err("bdev_get_bdevs", json!({"name": huge}));
    assert_eq!(code, -19);
    assert!(
        msg.len() <= ballast_rpc::server::MAX_ERROR_MESSAGE,
        "{}",
        msg.len()
    );
    assert!(msg.starts_with("bdev xxx"), "{msg}");
    assert!(msg.ends_with("xxx not found"), "{msg}");
    // Short messages are untouched.
    let (_, msg) = c.err("bdev_get_bdevs", json!({"name": "nope"}));
    assert_eq!(msg, "bdev nope not found");
    // The server is fine.
    assert_eq!(c.ok("framework_wait_init", Value::Null), json!(true));
}

#[test]
fn cap_keeps_head_and_tail_on_char_boundaries() {
    use ballast_rpc::server::cap;
    assert_eq!(cap("short", 1024), "short");
    let s = format!("{}{}", "é".repeat(3000), " tail");
    for max in [64, 100, 1023, 1024] {
        let c = cap(&s, max);
        assert!(c.len() <= max, "{} > {max}", c.len());
        assert!(c.starts_with('é') && c.ends_with(" tail"), "{c}");
        // What was kept plus what was elided is the whole.
        let elided: usize = c
            .split(" … (")
            .nth(1)
            .and_then(|x| x.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let marker = format!(" … ({elided} bytes elided) … ");
        assert_eq!(c.len() - marker.len() + elided, s.len());
    }
}

#[test]
fn bind_then_serve() {
    let d = Daemon::new();
    let path = PathBuf::from(format!("{}.bound", d.path.display()));
    // A live socket (served or only bound) is refused by bind as by start.
    assert!(matches!(
        RpcServer::bind(&d.path),
        Err(ballast_rpc::Error::SocketInUse(_))
    ));
    let b = RpcServer::bind(&path).unwrap();
    assert!(matches!(
        RpcServer::bind(&path),
        Err(ballast_rpc::Error::SocketInUse(_))
    ));
    // Dropped unserved: the file goes.
    drop(b);
    assert!(!path.exists());
    // A client that connects before serving starts waits, and is answered once it does.
    let b = RpcServer::bind(&path).unwrap();
    let mut early = std::os::unix::net::UnixStream::connect(&path).unwrap();
    early
        .write_all(br#"{"jsonrpc":"2.0","id":7,"method":"framework_wait_init"}"#)
        .unwrap();
    let ctx = Context::new(
        d.ctx.rt.clone(),
        d.ctx.target.clone(),
        Arc::new(AtomicBool::new(false)),
    );
    let s = b.serve(ctx).unwrap();
    early
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&early), &mut line).unwrap();
    let r: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(r["id"], json!(7));
    assert_eq!(r["result"], json!(true));
    s.stop();
    assert!(!path.exists());
}

#[test]
fn concurrent_clients() {
    let d = Arc::new(Daemon::new());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let d = d.clone();
            std::thread::spawn(move || {
                let mut c = d.client();
                let name = d.name(&format!("C{i}"));
                for _ in 0..20 {
                    c.ok(
                        "bdev_malloc_create",
                        json!({"name": name, "num_blocks": 64, "block_size": 512}),
                    );
                    let b = c.ok("bdev_get_bdevs", json!({"name": name}));
                    assert_eq!(b[0]["num_blocks"], json!(64));
                    c.ok("bdev_malloc_delete", json!({"name": name}));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn save_load_save_is_identical() {
    let d1 = Daemon::new();
    let mut c = d1.client();
    let m0 = d1.name("M0");
    let n0 = d1.name("N0");
    let nqn = d1.nqn("s");
    c.ok(
        "bdev_malloc_create",
        json!({"name": m0, "num_blocks": 2048, "block_size": 4096}),
    );
    c.ok(
        "bdev_null_create",
        json!({"name": n0, "num_blocks": 100, "block_size": 512}),
    );
    c.ok(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "in_capsule_data_size": 4096}),
    );
    c.ok(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "serial_number": "S1", "max_namespaces": 8}),
    );
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": m0, "nsid": 3}}),
    );
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": n0}}),
    );
    c.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": nqn, "host": "nqn.2014-08.org.nvmexpress:uuid:9"}),
    );
    let port = free_port();
    c.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
    );
    let only_ours = |v: &Value, prefix: &str| -> Value {
        let mut v = v.clone();
        for s in v["subsystems"].as_array_mut().unwrap() {
            if let Some(cfg) = s["config"].as_array_mut() {
                cfg.retain(|e| {
                    let p = &e["params"];
                    e["method"] == "nvmf_create_transport"
                        || p["name"].as_str().is_some_and(|n| n.starts_with(prefix))
                        || p["nqn"].as_str().is_some_and(|n| n.contains(prefix))
                });
            }
        }
        v
    };
    let saved = only_ours(&c.ok("save_config", Value::Null), &d1.prefix);
    assert_eq!(sub(&saved, "nvmf")["config"].as_array().unwrap().len(), 6);
    drop(c);
    drop(d1); // deletes its subsystems and bdevs, frees the port
    let d2 = Daemon::new();
    let mut c = d2.client();
    c.ok("load_config", saved.clone());
    let again = only_ours(&c.ok("save_config", Value::Null), &saved_prefix(&saved));
    assert_eq!(again, saved);
    // Invalid documents are refused clearly.
    let (code, msg) = c.err("load_config", json!({"nope": 1}));
    assert_eq!(code, -32602);
    assert!(msg.contains("subsystems"));
    let (_, msg) = c.err(
        "load_config",
        json!({"subsystems": [{"subsystem": "bdev", "config": [{"method": "bdev_foo_create", "params": {}}]}]}),
    );
    assert!(msg.contains("bdev_foo_create"));
    // SPDK-only tuning methods are skipped.
    c.ok(
        "load_config",
        json!({"subsystems": [{"subsystem": "iobuf", "config": [{"method": "iobuf_set_options", "params": {"small_pool_count": 8192}}]}]}),
    );
    // Clean up what d2 loaded under d1's names.
    let prefix = saved_prefix(&saved);
    for s in d2.ctx.target.subsystems() {
        if s.nqn.contains(&prefix) {
            d2.ctx.target.delete_subsystem(&s.nqn).unwrap();
        }
    }
    for b in ballast_engine::bdev::list() {
        if b.name().starts_with(&prefix) {
            ballast_engine::bdev::delete(b.name()).unwrap();
        }
    }
}

fn saved_prefix(saved: &Value) -> String {
    let name = sub(saved, "bdev")["config"][0]["params"]["name"]
        .as_str()
        .unwrap();
    name.trim_end_matches("M0").to_string()
}

#[test]
fn live_socket_is_not_stolen_and_stale_one_is_replaced() {
    let d = Daemon::new();
    let target = d.ctx.target.clone();
    let ctx = Context::new(d.ctx.rt.clone(), target, Arc::new(AtomicBool::new(false)));
    match RpcServer::start(ctx.clone(), &d.path) {
        Err(ballast_rpc::Error::SocketInUse(_)) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a live socket was stolen"),
    }
    // A stale socket file (nobody listening) is replaced.
    let stale = PathBuf::from(format!("{}.stale", d.path.display()));
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let s = RpcServer::start(ctx, &stale).unwrap();
    let mode = std::fs::metadata(&stale).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    s.stop();
    assert!(!stale.exists());
}

#[test]
fn nvme_attach_controller_loops_back_to_our_own_target() {
    let d = Daemon::new();
    let mut c = d.client();
    let nqn = d.nqn("remote");
    let m0 = d.name("RM0");
    c.ok(
        "bdev_malloc_create",
        json!({"name": m0, "num_blocks": 4096, "block_size": 512}),
    );
    c.ok(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "allow_any_host": true}),
    );
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": m0}}),
    );
    let port = free_port();
    c.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
    );
    let name = d.name("Nvme");
    let bdevs = c.ok(
        "bdev_nvme_attach_controller",
        json!({"name": name, "trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string(),
               "subnqn": nqn, "adrfam": "ipv4"}),
    );
    assert_eq!(bdevs, json!([format!("{name}n1")]));
    let b = c.ok("bdev_get_bdevs", json!({"name": format!("{name}n1")}));
    assert_eq!(b[0]["product_name"], json!("NVMe disk"));
    assert_eq!(b[0]["num_blocks"], json!(4096));
    let ctrls = c.ok("bdev_nvme_get_controllers", json!({"name": name}));
    assert_eq!(ctrls[0]["ctrlrs"][0]["state"], json!("enabled"));
    let cfg = c.ok("save_config", Value::Null);
    assert!(sub(&cfg, "bdev")["config"]
        .as_array()
        .unwrap()
        .iter()
        .any(
            |e| e["method"] == "bdev_nvme_attach_controller" && e["params"]["name"] == json!(name)
        ));
    let (code, _) = c.err(
        "bdev_nvme_attach_controller",
        json!({"name": name, "trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string(), "subnqn": nqn}),
    );
    assert_eq!(code, -17);
    let (code, msg) = c.err(
        "bdev_nvme_attach_controller",
        json!({"name": d.name("Nvme2"), "trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "1", "subnqn": nqn}),
    );
    assert_ne!(code, 0);
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    c.ok("bdev_nvme_detach_controller", json!({"name": name}));
    let (code, _) = c.err("bdev_nvme_detach_controller", json!({"name": name}));
    assert_eq!(code, -19);
}

#[test]
fn crypto_keys_and_stage_over_rpc() {
    let d = Daemon::new();
    let mut c = d.client();
    let base = d.name("CB");
    let key = d.name("key");
    let name = d.name("Crypt");
    c.ok(
        "bdev_malloc_create",
        json!({"name": base, "num_blocks": 1024, "block_size": 512}),
    );
    let k1 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let k2 = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    c.ok(
        "accel_crypto_key_create",
        json!({"cipher": "AES_XTS", "key": k1, "key2": k2, "name": key}),
    );
    let (code, _) = c.err(
        "accel_crypto_key_create",
        json!({"cipher": "AES_XTS", "key": k1, "key2": k2, "name": key}),
    );
    assert_eq!(code, -17);
    let (_, msg) = c.err(
        "accel_crypto_key_create",
        json!({"cipher": "AES_XTS", "key": "zz", "key2": k2, "name": d.name("k2")}),
    );
    assert!(msg.contains("key"), "{msg}");
    let (_, msg) = c.err(
        "accel_crypto_key_create",
        json!({"cipher": "AES_XTS", "key": k1, "key2": k1, "name": d.name("k3")}),
    );
    assert!(msg.contains("differ"), "{msg}");
    // Listing never shows key material.
    let keys = c.ok("accel_crypto_keys_get", json!({"key_name": key}));
    assert_eq!(keys[0]["key_bits"], json!(256));
    assert!(!keys.to_string().contains(&k1[..16]));
    assert_eq!(
        c.ok(
            "bdev_crypto_create",
            json!({"base_bdev_name": base, "name": name, "key_name": key})
        ),
        json!(name)
    );
    let (code, _) = c.err(
        "bdev_crypto_create",
        json!({"base_bdev_name": base, "name": d.name("x"), "key_name": "nokey"}),
    );
    assert_eq!(code, -19);
    let b = c.ok("bdev_get_bdevs", json!({"name": name}));
    assert_eq!(b[0]["product_name"], json!("crypto"));
    assert!(
        !b.to_string().contains(&k1[..16]),
        "bdev_get_bdevs must not show keys"
    );
    let (code, msg) = c.err("accel_crypto_key_destroy", json!({"key_name": key}));
    assert_eq!(code, -16, "{msg}");
    let (code, _) = c.err("bdev_malloc_delete", json!({"name": base}));
    assert_eq!(code, -16);
    // save_config carries the key (as SPDK does) in "accel", the stage after its base.
    let cfg = c.ok("save_config", Value::Null);
    assert!(sub(&cfg, "accel")["config"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["params"]["name"] == json!(key) && e["params"]["key"] == json!(k1)));
    let bcfg = sub(&cfg, "bdev")["config"].as_array().unwrap().clone();
    let pos = |m: &str, n: &str| {
        bcfg.iter()
            .position(|e| e["method"] == m && (e["params"]["name"] == json!(n)))
            .unwrap()
    };
    assert!(pos("bdev_malloc_create", &base) < pos("bdev_crypto_create", &name));
    c.ok("bdev_crypto_delete", json!({"name": name}));
    wait(|| {
        c.call("accel_crypto_key_destroy", json!({"key_name": key}))
            .is_ok()
    });
    c.ok("bdev_malloc_delete", json!({"name": base}));
}

#[test]
fn compress_create_params_are_checked_before_the_engine() {
    let d = Daemon::new();
    let mut c = d.client();
    let base = d.name("ZB");
    c.malloc(&base, 1024, 512);
    // Each refused with -32602 and a message naming what is wrong; the base stays unclaimed.
    for (p, needle) in [
        (
            json!({"base_bdev_name": base, "algorithm": "lz5"}),
            "algorithm \"lz5\"",
        ),
        (
            json!({"base_bdev_name": base, "comp_algo": "deflate"}),
            "algorithm \"deflate\"",
        ),
        (
            json!({"base_bdev_name": base, "algorithm": "lz4", "level": 3}),
            "level",
        ),
        (
            json!({"base_bdev_name": base, "comp_algo": "LZ4", "comp_level": 1}),
            "level",
        ),
        (
            json!({"base_bdev_name": base, "algorithm": "zstd", "level": 20}),
            "level 20",
        ),
        (json!({"base_bdev_name": base, "level": 0}), "level 0"),
        (
            json!({"base_bdev_name": base, "chunk_size": 12288}),
            "chunk_size 12288",
        ),
        (
            json!({"base_bdev_name": base, "chunk_size": 2048}),
            "chunk_size 2048",
        ),
        (
            json!({"base_bdev_name": base, "chunk_size": 262144}),
            "chunk_size 262144",
        ),
        (
            json!({"base_bdev_name": base, "chunk_size": -1}),
            "chunk_size",
        ),
        (
            json!({"name": "x", "algorithm": "lz4"}),
            "missing field `base_bdev_name`",
        ),
        (json!({"base_bdev_name": base, "colour": "red"}), "colour"),
        (
            json!({"base_bdev_name": base, "algorithm": "lz4", "comp_algo": "lz4"}),
            "duplicate field",
        ),
    ] {
        let (code, msg) = c.err("bdev_compress_create", p.clone());
        assert_eq!(code, -32602, "{p}: {msg}");
        assert!(msg.contains(needle), "{p}: {msg}");
    }
    let b = c.ok("bdev_get_bdevs", json!({"name": base}));
    assert_eq!(b[0]["claimed"], json!(false));
    // SPDK's pm_path and lb_size are accepted (and ignored): whatever the engine answers, it
    // is not an unknown-field error.
    if let Err((_, msg)) = c.call(
        "bdev_compress_create",
        json!({"base_bdev_name": d.name("nobase"), "pm_path": "/mnt/pmem", "lb_size": 4096}),
    ) {
        assert!(!msg.contains("unknown field"), "{msg}");
    }
    let (code, _) = c.err("bdev_compress_get_stats", json!({"name": d.name("none")}));
    assert_eq!(code, -19);
    let (code, msg) = c.err("bdev_compress_get_stats", json!({"base": "x"}));
    assert_eq!(code, -32602);
    assert!(msg.contains("base"), "{msg}");
    let (code, _) = c.err("bdev_compress_delete", json!({"name": d.name("none")}));
    assert_eq!(code, -19);
    let methods = c.ok("rpc_get_methods", Value::Null);
    for m in [
        "bdev_compress_create",
        "bdev_compress_delete",
        "bdev_compress_get_stats",
    ] {
        assert!(methods.as_array().unwrap().contains(&json!(m)), "{m}");
    }
}
