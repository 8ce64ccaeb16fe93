//! The compression stage over JSON-RPC: create, stats, save_config order, delete. These need
//! the compress engine (engine::backend::compress); the parameter checks that do not are in
//! `server.rs` (compress_create_params_are_checked_before_the_engine).

mod common;

use common::{sub, Client, Daemon};
use serde_json::{json, Value};

/// Position of the `method` entry for bdev `name` in the "bdev" config of `cfg`.
fn position(cfg: &Value, method: &str, name: &str) -> usize {
    sub(cfg, "bdev")["config"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["method"] == method && e["params"]["name"] == json!(name))
        .unwrap_or_else(|| panic!("no {method} for {name} in {cfg}"))
}

/// A daemon, a client, and an 8 MiB malloc bdev named after `tag` (its name returned).
fn with_malloc(tag: &str, block_size: u32) -> (Daemon, Client, String) {
    let d = Daemon::new();
    let mut c = d.client();
    let base = d.name(tag);
    c.malloc(&base, (8 << 20) / u64::from(block_size), block_size);
    (d, c, base)
}

#[test]

fn create_stats_save_delete_on_malloc() {
    let (_d, mut c, base) = with_malloc("CM", 512);
    let comp = c.ok("bdev_compress_create", json!({"base_bdev_name": base}));
    let comp = comp.as_str().unwrap().to_string();
    assert_eq!(comp, format!("COMP_{base}"), "the engine's default name");
    let b = c.ok("bdev_get_bdevs", json!({"name": comp}));
    assert_eq!(b[0]["product_name"], json!("compress"));
    let base_info = c.ok("bdev_get_bdevs", json!({"name": base}));
    assert_eq!(base_info[0]["claimed"], json!(true));

    let stats = c.ok("bdev_compress_get_stats", json!({"name": comp}));
    let s = &stats[0];
    assert_eq!(s["name"], json!(comp));
    assert_eq!(s["base_bdev_name"], json!(base));
    assert_eq!(s["algorithm"], json!("lz4"));
    assert!(s.get("level").is_none(), "level is zstd only: {s}");
    assert_eq!(
        s["chunk_size"],
        json!(4096),
        "default on a 512-byte-block base"
    );
    assert_eq!(s["mapped_bytes"], json!(0));
    assert!(s["logical_bytes"].as_u64().unwrap() > 0, "{s}");
    assert!(s["allocated_bytes"].is_u64(), "{s}");
    assert!(s["compression_ratio"].is_f64(), "{s}");
    let all = c.ok("bdev_compress_get_stats", Value::Null);
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == json!(comp)));

    let cfg = c.ok("save_config", Value::Null);
    let at = position(&cfg, "bdev_compress_create", &comp);
    assert!(position(&cfg, "bdev_malloc_create", &base) < at);
    let params = &sub(&cfg, "bdev")["config"][at]["params"];
    assert_eq!(
        *params,
        json!({"base_bdev_name": base, "name": comp, "algorithm": "lz4", "chunk_size": 4096})
    );

    assert_eq!(
        c.ok("bdev_compress_delete", json!({"name": comp})),
        json!(true)
    );
    let (code, _) = c.err("bdev_compress_get_stats", json!({"name": comp}));
    assert_eq!(code, -19);
    let (code, _) = c.err("bdev_compress_delete", json!({"name": comp}));
    assert_eq!(code, -19);
    c.ok("bdev_malloc_delete", json!({"name": base}));
}

#[test]

fn zstd_with_spdk_spellings_and_level_in_stats() {
    let (d, mut c, base) = with_malloc("ZM", 4096);
    let name = d.name("Zc");
    c.ok(
        "bdev_compress_create",
        json!({"base_bdev_name": base, "name": name, "comp_algo": "zstd", "comp_level": 3,
               "chunk_size": 65536, "pm_path": "/mnt/pmem", "lb_size": 4096}),
    );
    let s = &c.ok("bdev_compress_get_stats", json!({"name": name}))[0];
    assert_eq!(
        (&s["algorithm"], &s["level"], &s["chunk_size"]),
        (&json!("zstd"), &json!(3), &json!(65536))
    );
    c.ok("bdev_compress_delete", json!({"name": name}));
    c.ok("bdev_malloc_delete", json!({"name": base}));
}

#[test]

fn crypto_over_compress_is_saved_after_it() {
    let (d, mut c, base) = with_malloc("SM", 512);
    let (comp, key, crypt) = (d.name("Sc"), d.name("Sk"), d.name("Scrypt"));
    c.ok(
        "bdev_compress_create",
        json!({"base_bdev_name": base, "name": comp}),
    );
    c.ok(
        "accel_crypto_key_create",
        json!({"cipher": "AES_XTS", "name": key,
               "key": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
               "key2": "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"}),
    );
    c.ok(
        "bdev_crypto_create",
        json!({"base_bdev_name": comp, "name": crypt, "key_name": key}),
    );
    let cfg = c.ok("save_config", Value::Null);
    let malloc = position(&cfg, "bdev_malloc_create", &base);
    let compress = position(&cfg, "bdev_compress_create", &comp);
    let crypto = position(&cfg, "bdev_crypto_create", &crypt);
    assert!(malloc < compress && compress < crypto, "{cfg}");
    c.ok("bdev_crypto_delete", json!({"name": crypt}));
    c.ok("bdev_compress_delete", json!({"name": comp}));
    c.ok("bdev_malloc_delete", json!({"name": base}));
}

#[test]

fn create_on_a_missing_base_is_enodev() {
    let d = Daemon::new();
    let mut c = d.client();
    let (code, msg) = c.err(
        "bdev_compress_create",
        json!({"base_bdev_name": d.name("nothere")}),
    );
    assert_eq!(code, -19, "{msg}");
    assert!(msg.contains(&d.name("nothere")), "{msg}");
}
