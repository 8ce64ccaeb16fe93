//! SPDK's error bdev over JSON-RPC, with the bodies rpc.py v25.09 sends: create over a base,
//! arm and clear injections, save_config after its base, refusals, delete.

mod common;

use ballast_engine::backend::error;
use ballast_engine::IoType;
use common::{sub, Daemon};
use serde_json::json;

#[test]
fn error_bdev_over_rpc() {
    let d = Daemon::new();
    let mut c = d.client();
    let base = d.name("M0");
    c.malloc(&base, 256, 512);
    // bdev_error_create M0
    let ee = c.ok("bdev_error_create", json!({"base_name": base}));
    let ee = ee.as_str().unwrap().to_string();
    assert_eq!(ee, format!("EE_{base}"));
    let b = &c.ok("bdev_get_bdevs", json!({"name": ee}))[0];
    assert_eq!(b["product_name"], json!("error"));
    assert_eq!(b["driver_specific"]["error"]["base_bdev_name"], json!(base));
    // bdev_error_inject_error EE_M0 write failure -n 3
    c.ok(
        "bdev_error_inject_error",
        json!({"name": ee, "io_type": "write", "error_type": "failure", "num": 3}),
    );
    assert_eq!(error::remaining(&ee, IoType::Write).unwrap(), 3);
    assert_eq!(error::remaining(&ee, IoType::Read).unwrap(), 0);
    // ... read corrupt_data -n 1 --corrupt-offset 8 --corrupt-value 255; "num" absent is 1.
    c.ok(
        "bdev_error_inject_error",
        json!({"name": ee, "io_type": "read", "error_type": "corrupt_data",
               "corrupt_offset": 8, "corrupt_value": 255}),
    );
    assert_eq!(error::remaining(&ee, IoType::Read).unwrap(), 1);
    // ... EE_M0 clear failure
    c.ok(
        "bdev_error_inject_error",
        json!({"name": ee, "io_type": "clear", "error_type": "failure"}),
    );
    assert_eq!(error::remaining(&ee, IoType::Write).unwrap(), 0);
    for (params, what) in [
        (
            json!({"name": ee, "io_type": "reed", "error_type": "failure"}),
            "io_type",
        ),
        (
            json!({"name": ee, "io_type": "read", "error_type": "boom"}),
            "error_type",
        ),
        (
            json!({"name": ee, "io_type": "read", "error_type": "corrupt_data"}),
            "corrupt_value",
        ),
    ] {
        let (code, msg) = c.err("bdev_error_inject_error", params);
        assert_eq!(code, -32602, "{msg}");
        assert!(msg.contains(what), "{msg}");
    }
    let (code, _) = c.err(
        "bdev_error_inject_error",
        json!({"name": base, "io_type": "all", "error_type": "failure"}),
    );
    assert_eq!(code, -19, "injecting into a bdev that is not an error bdev");
    // Saved after its base, with its UUID.
    let cfg = c.ok("save_config", json!(null));
    let entries = sub(&cfg, "bdev")["config"].as_array().unwrap().clone();
    let at = |m: &str, n: &str| {
        entries
            .iter()
            .position(|e| {
                e["method"] == json!(m)
                    && (e["params"]["name"] == json!(n) || e["params"]["base_name"] == json!(n))
            })
            .unwrap_or_else(|| panic!("{m} {n} not saved: {entries:?}"))
    };
    assert!(at("bdev_malloc_create", &base) < at("bdev_error_create", &base));
    assert_eq!(
        entries[at("bdev_error_create", &base)]["params"]["uuid"],
        b["uuid"]
    );
    // The base is claimed; bdev_error_delete deletes the stage only.
    let (code, _) = c.err("bdev_malloc_delete", json!({"name": base}));
    assert_eq!(code, -16);
    c.ok("bdev_error_delete", json!({"name": ee}));
    c.ok("bdev_malloc_delete", json!({"name": base}));
}
