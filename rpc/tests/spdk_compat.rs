//! SPDK compatibility as users meet it: the exact requests SPDK v25.09's `rpc.py` sends (its
//! default fields included, as written from SPDK's schema and rpc.py's defaults), replayed
//! against ballast; and a configuration as SPDK v25.09's `save_config` writes it, with the
//! sections of subsystems ballast lacks, loaded as `ballastd -c` loads it.

mod common;

use common::{free_port, Daemon};
use serde_json::{json, Value};

const K1: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const K2: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// Sends `req` (a whole request object, as rpc.py writes it) and returns the response.
fn raw(c: &mut common::Client, req: Value) -> Value {
    c.send_raw(serde_json::to_string_pretty(&req).unwrap().as_bytes());
    c.recv()
}

fn result(c: &mut common::Client, req: Value) -> Value {
    let m = req["method"].clone();
    let r = raw(c, req);
    assert!(r.get("error").is_none(), "{m}: {r}");
    assert_eq!(r["jsonrpc"], json!("2.0"));
    r["result"].clone()
}

fn error(c: &mut common::Client, req: Value) -> (i64, String) {
    let m = req["method"].clone();
    let r = raw(c, req);
    let e = r
        .get("error")
        .unwrap_or_else(|| panic!("{m} should fail: {r}"));
    (
        e["code"].as_i64().unwrap(),
        e["message"].as_str().unwrap().into(),
    )
}

#[test]
fn requests_as_rpc_py_v25_09_sends_them() {
    let d = Daemon::new();
    let mut c = d.client();
    let (m0, n0, c0, k0) = (d.name("M0"), d.name("N0"), d.name("C0"), d.name("k0"));
    let nqn = d.nqn("cnode1");
    let host = "nqn.2014-08.org.nvmexpress:uuid:6b1f8d2e-4c1a-4f7e-9a3b-2d5c7e9f1a00";
    let rq = |method: &str, params: Value| {
        let mut r = json!({"jsonrpc": "2.0", "method": method, "id": 1});
        if !params.is_null() {
            r["params"] = params;
        }
        r
    };
    // bdev_malloc_create -b M0 64 512; bdev_null_create N0 64 512
    let r = result(
        &mut c,
        rq(
            "bdev_malloc_create",
            json!({"num_blocks": 131072, "block_size": 512, "name": m0,
                   "md_interleave": false, "dif_is_head_of_md": false}),
        ),
    );
    assert_eq!(r, json!(m0));
    result(
        &mut c,
        rq(
            "bdev_null_create",
            json!({"num_blocks": 131072, "block_size": 512, "name": n0,
                   "dif_is_head_of_md": false}),
        ),
    );
    // bdev_get_bdevs sends no params; bdev_get_iostat sends per_channel.
    let all = result(&mut c, rq("bdev_get_bdevs", Value::Null));
    let m = all
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == json!(m0))
        .expect("malloc listed");
    assert_eq!(m["assigned_rate_limits"]["rw_ios_per_sec"], json!(0));
    assert_eq!(m["supported_io_types"].as_object().unwrap().len(), 22);
    assert_eq!(m["supported_io_types"]["nvme_iov_md"], json!(false));
    assert_eq!(m["supported_io_types"]["write_zeroes"], json!(true));
    let st = result(&mut c, rq("bdev_get_iostat", json!({"per_channel": false})));
    assert!(st["bdevs"].as_array().unwrap().len() >= 2);
    result(&mut c, rq("bdev_wait_for_examine", Value::Null));
    // accel_crypto_key_create -c AES_XTS -k .. -e .. -n k0; bdev_crypto_create M0 C0 -n k0
    result(
        &mut c,
        rq(
            "accel_crypto_key_create",
            json!({"cipher": "AES_XTS", "key": K1, "key2": K2, "name": k0}),
        ),
    );
    result(
        &mut c,
        rq(
            "bdev_crypto_create",
            json!({"base_bdev_name": m0, "name": c0, "key_name": k0}),
        ),
    );
    let cb = result(&mut c, rq("bdev_get_bdevs", json!({"name": c0})));
    assert_eq!(cb[0]["driver_specific"]["crypto"]["key_name"], json!(k0));
    assert_eq!(cb[0]["driver_specific"]["crypto"]["name"], json!(c0));
    // nvmf_create_transport -t TCP (the transport may exist already: EEXIST is SPDK's answer).
    let r = raw(
        &mut c,
        rq(
            "nvmf_create_transport",
            json!({"no_srq": false, "c2h_success": true, "trtype": "TCP", "zcopy": false,
                   "dif_insert_or_strip": false, "no_wr_batching": false,
                   "disable_mappable_bar0": false, "disable_adaptive_irq": false,
                   "disable_shadow_doorbells": false, "disable_command_passthru": false}),
        ),
    );
    assert!(
        r.get("result").is_some() || r["error"]["code"] == json!(-17),
        "{r}"
    );
    // nvmf_create_subsystem NQN -a -s SN1
    result(
        &mut c,
        rq(
            "nvmf_create_subsystem",
            json!({"nqn": nqn, "serial_number": "SN1", "allow_any_host": true,
                   "ana_reporting": false, "passthrough": false, "enable_nssr": false}),
        ),
    );
    // nvmf_subsystem_add_ns NQN C0
    let nsid = result(
        &mut c,
        rq(
            "nvmf_subsystem_add_ns",
            json!({"nqn": nqn, "namespace": {"bdev_name": c0, "no_auto_visible": false,
                                            "hide_metadata": false}}),
        ),
    );
    assert_eq!(nsid, json!(1));
    // nvmf_subsystem_add_listener NQN -t tcp -a 127.0.0.1 -s PORT
    result(
        &mut c,
        rq(
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "secure_channel": false,
                   "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "0"}}),
        ),
    );
    // Port 0: the bound port is what every listing reports (and what removes it).
    let port = c.ok("nvmf_subsystem_get_listeners", json!({"nqn": nqn}))[0]["address"]["trsvcid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(port, "0");
    let saved = c.ok("save_config", Value::Null);
    assert!(
        common::sub(&saved, "nvmf")["config"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["params"]["listen_address"]["trsvcid"] == json!(port)),
        "the bound port is saved"
    );
    result(
        &mut c,
        rq("nvmf_subsystem_add_host", json!({"nqn": nqn, "host": host})),
    );
    result(
        &mut c,
        rq(
            "nvmf_subsystem_allow_any_host",
            json!({"nqn": nqn, "allow_any_host": false}),
        ),
    );
    let subs = result(&mut c, rq("nvmf_get_subsystems", Value::Null));
    let s = subs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == json!(nqn))
        .expect("subsystem listed");
    assert_eq!(s["namespaces"][0]["bdev_name"], json!(c0));
    assert_eq!(s["listen_addresses"][0]["trsvcid"], json!(port));
    assert_eq!(s["hosts"][0]["nqn"], json!(host));
    for m in [
        "nvmf_subsystem_get_controllers",
        "nvmf_subsystem_get_qpairs",
        "nvmf_subsystem_get_listeners",
    ] {
        result(&mut c, rq(m, json!({"nqn": nqn})));
    }
    for m in [
        "nvmf_get_transports",
        "nvmf_get_stats",
        "framework_get_reactors",
        "thread_get_stats",
        "spdk_get_version",
        "framework_wait_init",
        "iobuf_get_stats",
        "accel_crypto_keys_get",
        "bdev_nvme_get_controllers",
    ] {
        result(&mut c, rq(m, Value::Null));
    }
    let v = result(&mut c, rq("spdk_get_version", Value::Null));
    assert!(v["fields"]["commit"].is_string(), "{v}");
    let r = result(&mut c, rq("framework_get_reactors", Value::Null));
    assert_eq!(r["pid"], json!(std::process::id()));
    assert!(r["reactors"][0]["usr"].is_u64() && r["reactors"][0]["irq"].is_u64());
    let methods = result(
        &mut c,
        rq(
            "rpc_get_methods",
            json!({"current": false, "include_aliases": false}),
        ),
    );
    assert!(methods
        .as_array()
        .unwrap()
        .contains(&json!("framework_get_config")));
    // log_set_print_level DEBUG; log_get_print_level
    result(&mut c, rq("log_set_print_level", json!({"level": "DEBUG"})));
    assert_eq!(
        result(&mut c, rq("log_get_print_level", Value::Null)),
        json!("DEBUG")
    );
    result(
        &mut c,
        rq("log_set_print_level", json!({"level": "NOTICE"})),
    );
    let so = result(
        &mut c,
        rq("sock_impl_get_options", json!({"impl_name": "posix"})),
    );
    assert_eq!(so["enable_ktls"], json!(false));

    // save_config as rpc.py v25.09 builds it: framework_get_subsystems, then
    // framework_get_config for each, in order. It must equal ballast's own save_config.
    let subs = result(&mut c, rq("framework_get_subsystems", Value::Null));
    let mut built = Vec::new();
    for s in subs.as_array().unwrap() {
        let name = s["subsystem"].as_str().unwrap();
        for dep in s["depends_on"].as_array().unwrap() {
            assert!(
                built.iter().any(|b: &Value| b["subsystem"] == *dep),
                "{dep} first"
            );
        }
        let cfg = result(&mut c, rq("framework_get_config", json!({"name": name})));
        built.push(json!({"subsystem": name, "config": cfg}));
    }
    let own = result(&mut c, rq("save_config", Value::Null));
    assert_eq!(json!({"subsystems": built}), own);
    let (code, msg) = error(&mut c, rq("framework_get_config", json!({"name": "vhost"})));
    assert_eq!(code, -32602, "{msg}");

    // Parameters SPDK defines for features ballast lacks: refused by name at other values.
    for (method, params, param) in [
        (
            "bdev_malloc_create",
            json!({"num_blocks": 8, "block_size": 512, "name": d.name("X"), "md_size": 8}),
            "md_size",
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "secure_channel": true,
                   "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "0"}}),
            "secure_channel",
        ),
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": nqn, "host": "nqn.x:h2", "dhchap_key": "key0"}),
            "dhchap_key",
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": d.nqn("ana"), "ana_reporting": true}),
            "ana_reporting",
        ),
        (
            "nvmf_get_subsystems",
            json!({"tgt_name": "other"}),
            "tgt_name",
        ),
    ] {
        let (code, msg) = error(&mut c, rq(method, params));
        assert_eq!(code, -32602, "{method}: {msg}");
        assert!(
            msg.contains(param) && msg.contains("not supported"),
            "{method}: {msg}"
        );
    }
    // Names SPDK does not define still fail, named.
    let (code, msg) = error(
        &mut c,
        rq(
            "bdev_null_create",
            json!({"num_blocks": 8, "block_size": 512, "name": d.name("Y"), "md_sise": 0}),
        ),
    );
    assert_eq!(code, -32602);
    assert!(msg.contains("md_sise"), "{msg}");
    // Nothing was created by the refused requests.
    assert!(c
        .call("bdev_get_bdevs", json!({"name": d.name("X")}))
        .is_err());
    let (code, _) = error(
        &mut c,
        rq("nvmf_get_subsystems", json!({"nqn": d.nqn("ana")})),
    );
    assert_eq!(code, -19);

    // A request without "jsonrpc" is answered, as SPDK answers it.
    let r = raw(&mut c, json!({"method": "spdk_get_version", "id": 7}));
    assert_eq!(r["id"], json!(7));
    assert!(r.get("result").is_some(), "{r}");

    // A key in use is not destroyed, and the error says so in plain words.
    let (code, msg) = error(
        &mut c,
        rq("accel_crypto_key_destroy", json!({"key_name": k0})),
    );
    assert_eq!(code, -16);
    assert_eq!(
        msg,
        format!("crypto key {k0} is in use by 1 crypto bdev(s); delete them first")
    );

    // The deletes rpc.py sends.
    for (m, p) in [
        (
            "nvmf_subsystem_remove_host",
            json!({"nqn": nqn, "host": host}),
        ),
        (
            "nvmf_subsystem_remove_listener",
            json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1",
                                                   "trsvcid": port}}),
        ),
        ("nvmf_subsystem_remove_ns", json!({"nqn": nqn, "nsid": 1})),
        ("nvmf_delete_subsystem", json!({"nqn": nqn})),
        ("bdev_crypto_delete", json!({"name": c0})),
        ("accel_crypto_key_destroy", json!({"key_name": k0})),
        ("bdev_malloc_delete", json!({"name": m0})),
        ("bdev_null_delete", json!({"name": n0})),
    ] {
        result(&mut c, rq(m, p));
    }
}

/// A configuration as SPDK v25.09's save_config writes it for the features ballast has, with
/// every default field and the sections of SPDK subsystems ballast lacks
/// (tests/fixtures/spdk-v25.09-nvmf_tgt-save_config.json; ballastd's tests load the same file
/// with `-c`), its names, UUIDs and port made this test's own.
fn spdk_saved_config(d: &Daemon, port: u16) -> Value {
    let text = include_str!("fixtures/spdk-v25.09-nvmf_tgt-save_config.json");
    let (u_m0, u_n0) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let text = text
        .replace("\"Malloc0\"", &format!("\"{}\"", d.name("M0")))
        .replace("\"Null0\"", &format!("\"{}\"", d.name("N0")))
        .replace("\"Crypto0\"", &format!("\"{}\"", d.name("C0")))
        .replace("\"key0\"", &format!("\"{}\"", d.name("k0")))
        .replace("nqn.2016-06.io.spdk:cnode1", &d.nqn("saved"))
        .replace("\"4420\"", &format!("\"{port}\""))
        .replace("5e7c3a9a-1f43-4d6e-9c1b-2a8f0b7d6c55", &u_m0.to_string())
        .replace(
            "5E7C3A9A1F434D6E9C1B2A8F0B7D6C55",
            &u_m0.simple().to_string(),
        )
        .replace("0b8e54a1-77c2-4a0e-8d3f-9e6b1c2d3f40", &u_n0.to_string());
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_config_saved_by_spdk_v25_09_loads() {
    let d = Daemon::new();
    let mut c = d.client();
    let port = free_port();
    let cfg = spdk_saved_config(&d, port);
    ballast_rpc::config::load(&d.ctx, &cfg).unwrap_or_else(|e| panic!("load: {e}"));
    let nqn = d.nqn("saved");
    let s = &c.ok("nvmf_get_subsystems", json!({"nqn": nqn}))[0];
    assert_eq!(s["namespaces"][0]["bdev_name"], json!(d.name("C0")));
    assert_eq!(s["listen_addresses"][0]["trsvcid"], json!(port.to_string()));
    assert_eq!(s["allow_any_host"], json!(false));
    let m = &c.ok("bdev_get_bdevs", json!({"name": d.name("M0")}))[0];
    assert_eq!(
        m["uuid"],
        cfg["subsystems"][5]["config"][3]["params"]["uuid"]
    );
    assert_eq!(m["claimed"], json!(true));
    // The TCP listener serves.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("listener up");
    // A feature the file asks for at a value ballast cannot honour fails, naming it, and the
    // load stops there (nothing after it is applied).
    let d2 = Daemon::new();
    let mut bad = spdk_saved_config(&d2, free_port());
    bad["subsystems"][7]["config"][4]["params"]["ana_reporting"] = json!(true);
    let e = ballast_rpc::config::load(&d2.ctx, &bad).unwrap_err();
    assert!(
        e.message.contains("nvmf_create_subsystem") && e.message.contains("ana_reporting"),
        "{}",
        e.message
    );
    assert!(d2.ctx.target.subsystem(&d2.nqn("saved")).is_none());
}

#[test]
fn names_with_control_characters_or_too_long_are_refused_and_rpc_goes_on() {
    let d = Daemon::new();
    let mut c = d.client();
    let closed = free_port().to_string();
    for (method, params) in [
        (
            "bdev_nvme_attach_controller",
            json!({"name": "x\u{0}y", "trtype": "tcp", "traddr": "127.0.0.1",
                   "trsvcid": closed, "subnqn": "nqn.2026-11.io.ballast:none"}),
        ),
        (
            "bdev_malloc_create",
            json!({"name": format!("{}\nforged log line", d.name("L")), "num_blocks": 8,
                   "block_size": 512}),
        ),
        (
            "accel_crypto_key_create",
            json!({"cipher": "AES_XTS", "key": K1, "key2": K2, "name": "k".repeat(4096)}),
        ),
    ] {
        let (code, msg) = c.err(method, params);
        assert_eq!(code, -32602, "{method}: {msg}");
        assert!(
            msg.contains("control character") || msg.contains("at most 255"),
            "{method}: {msg}"
        );
    }
    // The server still answers.
    c.ok("spdk_get_version", Value::Null);
    assert_eq!(c.ok("bdev_nvme_get_controllers", Value::Null), json!([]));
}
