//! Starting the daemon binary: it claims its RPC socket before it listens anywhere (and exits
//! at once when it cannot), refuses the embedded default's flags with `-c`, applies the
//! transport flags under a config's own transport options, and does not echo huge values into
//! its log.
//!
//! Every daemon runs on 127.0.0.1 with free ports and a socket in a scratch directory, and is
//! killed if a test fails.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[test]
fn rpc_socket_of_a_live_daemon_is_refused_at_once_before_listening() {
    let dir = Scratch::new("live");
    let port_a = free_port();
    let la = format!("127.0.0.1:{port_a}");
    let a = Daemon::start(&dir, "a", &["-l", &la, "--default-size-mib", "8"]);
    let port_b = free_port();
    let lb = format!("127.0.0.1:{port_b}");
    let b = Daemon::spawn(&dir, "b", &a.sock, &["-l", &lb, "--default-size-mib", "8"]);
    let err = expect_fast_failure(b, port_b, Duration::from_secs(3));
    let sock = a.sock.display().to_string();
    assert!(
        err.contains(&format!("ballastd: {sock} is in use by a running daemon")),
        "{err}"
    );
    // The first daemon kept its socket and its listener.
    a.call("spdk_get_version", Value::Null).unwrap();
    TcpStream::connect_timeout(&loopback(port_a), Duration::from_secs(5)).unwrap();
    a.stop();
}

#[test]
fn rpc_socket_in_a_missing_directory_fails_at_once_before_listening() {
    let dir = Scratch::new("nodir");
    let sock = dir.path("no-such-dir/x.sock");
    let port = free_port();
    let l = format!("127.0.0.1:{port}");
    let d = Daemon::spawn(&dir, "d", &sock, &["-l", &l, "--default-size-mib", "8"]);
    let err = expect_fast_failure(d, port, Duration::from_secs(3));
    assert!(
        err.contains(&format!("ballastd: bind {}: ", sock.display())),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
}

#[test]
fn a_config_that_fails_to_apply_exits_at_once() {
    // The listener starts, then a later entry fails: the daemon stops its listener before the
    // reactors, rather than waiting out their drain timeout.
    let dir = Scratch::new("badcfg");
    let port = free_port();
    let nqn = "nqn.2026-11.io.ballast:badcfg";
    let cfg = dir.config(
        "c.json",
        &json!({"subsystems": [{"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_subsystem", "params": {"nqn": nqn, "allow_any_host": true}},
            {"method": "nvmf_subsystem_add_listener", "params": {"nqn": nqn,
                "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
                    "trsvcid": port.to_string()}}},
            {"method": "nvmf_subsystem_add_ns", "params": {"nqn": nqn,
                "namespace": {"bdev_name": "NoSuchBdev"}}},
        ]}]}),
    );
    let mut d = Daemon::spawn(
        &dir,
        "d",
        &dir.path("d.sock"),
        &["-c", cfg.to_str().unwrap()],
    );
    let t = Instant::now();
    let st = d.wait(Duration::from_secs(3));
    assert_eq!(st.code(), Some(1), "{}", d.log());
    assert!(t.elapsed() < Duration::from_secs(3));
    let log = d.log();
    assert!(log.contains("ballastd: configuration: "), "{log}");
    assert!(!log.contains("drain timeout"), "{log}");
    assert!(
        !dir.path("d.sock").exists(),
        "the socket file was left behind"
    );
}

#[test]
fn embedded_default_flags_are_refused_with_config() {
    let dir = Scratch::new("conflict");
    let cfg = dir.config("empty.json", &json!({"subsystems": []}));
    let cfg = cfg.to_str().unwrap();
    // The built-in default value given explicitly is refused too.
    for (flag, value, what) in [
        ("-l", "127.0.0.1:4420", "the listeners"),
        ("--listen", "127.0.0.1:1", "the listeners"),
        ("--default-size-mib", "1024", "the bdevs"),
        ("--default-block-size", "4096", "the bdevs"),
        (
            "--default-nqn",
            "nqn.2026-11.io.ballast:default",
            "the subsystems",
        ),
    ] {
        let sock = dir.path("c.sock");
        let mut d = Daemon::spawn(&dir, "c", &sock, &["-c", cfg, flag, value]);
        let st = d.wait(Duration::from_secs(5));
        let err = d.log();
        assert_eq!(st.code(), Some(2), "{flag}: {err}");
        let shown = if flag == "--listen" { "-l" } else { flag };
        assert!(
            err.contains(&format!(
                "{shown} applies to the embedded default only; with -c {what} come from the \
                 config file"
            )),
            "{flag}: {err}"
        );
        assert!(
            !sock.exists(),
            "{flag}: the daemon got as far as its socket"
        );
    }
}

#[test]
fn transport_flags_fill_in_what_the_config_leaves_out() {
    let dir = Scratch::new("transport");
    let flags = [
        "--max-queue-depth",
        "64",
        "--in-capsule-data-size",
        "4096",
        "--max-io-size",
        "65536",
        "--no-c2h-success",
    ];
    let transports = |d: &Daemon| {
        let v = d.call("nvmf_get_transports", Value::Null).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        v[0].clone()
    };
    let create = |params: Value| {
        json!({"subsystems": [{"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_transport", "params": params},
        ]}]})
    };
    // The config creates the transport without options: the flags apply.
    let cfg = dir.config("bare.json", &create(json!({"trtype": "TCP"})));
    let mut args = vec!["-c", cfg.to_str().unwrap()];
    args.extend(flags);
    let d = Daemon::start(&dir, "bare", &args);
    let t = transports(&d);
    assert_eq!(t["max_queue_depth"], json!(64), "{t}");
    assert_eq!(t["in_capsule_data_size"], json!(4096), "{t}");
    assert_eq!(t["max_io_size"], json!(65536), "{t}");
    assert_eq!(t["io_unit_size"], json!(65536), "{t}");
    assert_eq!(t["c2h_success"], json!(false), "{t}");
    d.stop();
    // The config sets some: its values win, the flags fill in the rest.
    let cfg = dir.config(
        "own.json",
        &create(json!({"trtype": "TCP", "max_queue_depth": 32, "c2h_success": true})),
    );
    let mut args = vec!["-c", cfg.to_str().unwrap()];
    args.extend(flags);
    let d = Daemon::start(&dir, "own", &args);
    let t = transports(&d);
    assert_eq!(t["max_queue_depth"], json!(32), "{t}");
    assert_eq!(t["c2h_success"], json!(true), "{t}");
    assert_eq!(t["in_capsule_data_size"], json!(4096), "{t}");
    d.stop();
    // No nvmf_create_transport at all: the first listener creates the transport with the
    // flags. (Port 0: the listener is reported with the port it got.)
    let cfg = dir.config("none.json", &json!({"subsystems": []}));
    let d = Daemon::start(
        &dir,
        "none",
        &["-c", cfg.to_str().unwrap(), "--max-queue-depth", "64"],
    );
    assert_eq!(
        d.call("nvmf_get_transports", Value::Null).unwrap(),
        json!([])
    );
    let nqn = "nqn.2026-11.io.ballast:none";
    d.call(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "allow_any_host": true}),
    )
    .unwrap();
    d.call(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": {"trtype": "TCP", "adrfam": "IPv4",
            "traddr": "127.0.0.1", "trsvcid": "0"}}),
    )
    .unwrap();
    let t = transports(&d);
    assert_eq!(t["max_queue_depth"], json!(64), "{t}");
    assert_eq!(t["c2h_success"], json!(true), "{t}");
    let ls = d
        .call("nvmf_subsystem_get_listeners", json!({"nqn": nqn}))
        .unwrap();
    let port: u16 = ls[0]["address"]["trsvcid"]
        .as_str()
        .unwrap_or_else(|| panic!("{ls}"))
        .parse()
        .unwrap();
    assert_ne!(port, 0, "{ls}");
    TcpStream::connect_timeout(&loopback(port), Duration::from_secs(5)).unwrap();
    d.stop();
}

#[test]
fn huge_names_are_not_echoed_whole() {
    let dir = Scratch::new("huge");
    let cfg = dir.config("empty.json", &json!({"subsystems": []}));
    let d = Daemon::start(&dir, "huge", &["-c", cfg.to_str().unwrap()]);
    let huge = "n".repeat(1 << 20);
    let r = rpc(
        &d.sock,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "bdev_get_bdevs", "params": {"name": huge}}),
    );
    assert!(r.to_string().len() < 2048, "{} bytes", r.to_string().len());
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("bdev nnn") && msg.ends_with("nnn not found"),
        "{msg}"
    );
    let r = rpc(&d.sock, &json!({"jsonrpc": "2.0", "id": 2, "method": huge}));
    assert!(r.to_string().len() < 2048, "{} bytes", r.to_string().len());
    assert_eq!(r["error"]["code"], json!(-32601));
    d.stop();
    let log = std::fs::metadata(dir.path("huge.log")).unwrap().len();
    assert!(log < 16 << 10, "a {log}-byte log");
}

#[test]
fn huge_bdev_names_are_refused_without_being_logged() {
    let dir = Scratch::new("hugename");
    let cfg = dir.config("empty.json", &json!({"subsystems": []}));
    let d = Daemon::start(&dir, "hugename", &["-c", cfg.to_str().unwrap()]);
    let huge = "m".repeat(15 << 20);
    let (code, msg) = d
        .call(
            "bdev_malloc_create",
            json!({"name": huge, "num_blocks": 8, "block_size": 512}),
        )
        .unwrap_err();
    assert_eq!(code, -32602);
    assert!(msg.contains("at most 255"), "{msg}");
    assert!(msg.len() < 2048);
    assert_eq!(d.call("bdev_get_bdevs", Value::Null).unwrap(), json!([]));
    d.stop();
    let log = std::fs::metadata(dir.path("hugename.log")).unwrap().len();
    assert!(log < 16 << 10, "a {log}-byte log");
}

#[test]
fn log_set_print_level_changes_what_the_daemon_logs() {
    let dir = Scratch::new("loglevel");
    let cfg = dir.config("empty.json", &json!({"subsystems": []}));
    let d = Daemon::start(&dir, "loglevel", &["-c", cfg.to_str().unwrap()]);
    let create = |name: &str| {
        d.call(
            "bdev_null_create",
            json!({"name": name, "num_blocks": 8, "block_size": 512}),
        )
        .unwrap();
    };
    assert_eq!(
        d.call("log_get_print_level", Value::Null).unwrap(),
        json!("NOTICE")
    );
    d.call("log_set_print_level", json!({"level": "ERROR"}))
        .unwrap();
    assert_eq!(
        d.call("log_get_print_level", Value::Null).unwrap(),
        json!("ERROR")
    );
    create("QuietNull");
    d.call("log_set_print_level", json!({"level": "info"}))
        .unwrap();
    create("LoudNull");
    let (code, msg) = d
        .call("log_set_print_level", json!({"level": "LOUD"}))
        .unwrap_err();
    assert_eq!(code, -32602);
    assert!(msg.contains("NOTICE"), "{msg}");
    let log = d.log();
    assert!(!log.contains("QuietNull"), "{log}");
    assert!(log.contains("LoudNull"), "{log}");
    d.stop();
}

#[test]
fn a_config_saved_by_spdk_v25_09_starts_the_daemon() {
    let dir = Scratch::new("spdkcfg");
    // Port 0: the daemon binds a free one and reports it (no race for a port picked here).
    let text = include_str!("../../rpc/tests/fixtures/spdk-v25.09-nvmf_tgt-save_config.json")
        .replace("\"4420\"", "\"0\"");
    let cfg = dir.config("spdk.json", &serde_json::from_str(&text).unwrap());
    let d = Daemon::start(&dir, "spdkcfg", &["-c", cfg.to_str().unwrap()]);
    let s = d
        .call(
            "nvmf_get_subsystems",
            json!({"nqn": "nqn.2016-06.io.spdk:cnode1"}),
        )
        .unwrap();
    assert_eq!(s[0]["namespaces"][0]["bdev_name"], json!("Crypto0"));
    let port: u16 = s[0]["listen_addresses"][0]["trsvcid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(port, 0);
    std::net::TcpStream::connect(loopback(port)).expect("listener serves");
    let t = &d.call("nvmf_get_transports", Value::Null).unwrap()[0];
    assert_eq!(t["in_capsule_data_size"], json!(4096));
    // The sections of SPDK subsystems ballast lacks were skipped, and said so.
    let log = d.log();
    for m in [
        "iobuf_set_options",
        "sock_impl_set_options",
        "nvmf_set_config",
    ] {
        assert!(log.contains(m) && log.contains("skipping"), "{m}:\n{log}");
    }
    d.stop();
}
