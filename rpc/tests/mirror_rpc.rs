//! Replicated volumes over SPDK's raid RPCs, with the bodies rpc.py v25.09 sends: create a
//! raid1 over two children, list it in SPDK's shape, save it after its children, refuse what
//! it cannot do, delete it, and reassemble it from the children's superblocks.

mod common;

use common::{sub, Daemon};
use serde_json::json;

#[test]
fn raid1_over_rpc() {
    let d = Daemon::new();
    let mut c = d.client();
    let (a, b, r) = (d.name("Ma"), d.name("Mb"), d.name("R0"));
    c.malloc(&a, 8192, 512);
    c.malloc(&b, 8192, 512);
    // bdev_raid_create -n R0 -r raid1 -b "Ma Mb"  (rpc.py sends superblock: false)
    let create = json!({"name": r, "raid_level": "raid1", "base_bdevs": [a, b],
                        "superblock": false});
    assert_eq!(c.ok("bdev_raid_create", create.clone()), json!(true));
    // bdev_raid_get_bdevs all
    let l = c.ok("bdev_raid_get_bdevs", json!({"category": "all"}));
    let m = l
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == json!(r))
        .expect("listed");
    assert_eq!(m["state"], json!("online"));
    assert_eq!(m["raid_level"], json!("raid1"));
    assert_eq!(m["superblock"], json!(true));
    assert_eq!(m["num_base_bdevs_operational"], json!(2));
    assert_eq!(m["base_bdevs_list"][1]["name"], json!(b));
    assert_eq!(m["base_bdevs_list"][1]["state"], json!("in_sync"));
    assert_eq!(m["base_bdevs_list"][0]["data_offset"], json!(2048));
    let uuid = m["uuid"].clone();
    assert!(c
        .ok("bdev_raid_get_bdevs", json!({"category": "offline"}))
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["name"] != json!(r)));
    let bd = &c.ok("bdev_get_bdevs", json!({"name": r}))[0];
    assert_eq!(bd["product_name"], json!("raid"));
    assert_eq!(bd["num_blocks"], json!(8192 - 2048));
    assert_eq!(bd["driver_specific"]["raid"]["raid_level"], json!("raid1"));
    // The children are claimed; deletes aimed at the wrong kind are refused.
    assert_eq!(c.err("bdev_malloc_delete", json!({"name": a})).0, -16);
    assert_eq!(c.err("bdev_malloc_delete", json!({"name": r})).0, -19);
    for (params, what) in [
        (
            json!({"name": d.name("X"), "raid_level": "raid0", "base_bdevs": [a, b],
                "strip_size_kb": 64}),
            "raid_level",
        ),
        (
            json!({"name": d.name("X"), "raid_level": "1", "base_bdevs": [a]}),
            "2 to 5",
        ),
        (
            json!({"name": d.name("X"), "raid_level": "1", "base_bdevs": [a, b],
                "strip_size_kb": 64}),
            "strip_size_kb",
        ),
    ] {
        let (code, msg) = c.err("bdev_raid_create", params);
        assert!(code == -32602 || code == -16, "{code} {msg}");
        assert!(msg.contains(what) || code == -16, "{msg}");
    }
    // bdev_raid_add_base_bdev R0 Ma: only a faulted member is re-added (rebuilt).
    let (code, msg) = c.err(
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": r, "base_bdev": a}),
    );
    assert_eq!(code, -16, "{msg}");
    let (code, msg) = c.err(
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": r, "base_bdev": d.name("stranger")}),
    );
    assert_eq!(code, -19, "{msg}");
    // A new bdev needs an empty slot.
    let e = d.name("Me");
    c.malloc(&e, 8192, 512);
    let (code, msg) = c.err(
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": r, "base_bdev": e}),
    );
    assert_eq!(code, -32602);
    assert!(msg.contains("no empty slot"), "{msg}");
    assert!(m.get("process").is_none(), "no rebuild running");
    assert_eq!(m["region_size_kb"], json!(64));
    assert_eq!(m["dirty_regions"], json!(0));
    // bdev_raid_set_options: SPDK's window and cap, ballast's self_heal; saved when not the
    // defaults; a window out of range refused.
    let opts = json!({"process_window_size_kb": 256, "process_max_bandwidth_mb_sec": 0,
                      "self_heal": false});
    assert_eq!(c.ok("bdev_raid_set_options", opts.clone()), json!(true));
    let (code, msg) = c.err(
        "bdev_raid_set_options",
        json!({"process_window_size_kb": 0}),
    );
    assert_eq!(code, -32602);
    assert!(msg.contains("process_window_size_kb"), "{msg}");
    // bdev_raid_remove_base_bdev Mb: its slot empties, the raid goes on degraded; the last
    // in-sync member is refused; a stranger is -19.
    c.ok("bdev_raid_remove_base_bdev", json!({"name": b}));
    assert_eq!(
        c.err("bdev_raid_remove_base_bdev", json!({"name": a})).0,
        -16
    );
    assert_eq!(
        c.err(
            "bdev_raid_remove_base_bdev",
            json!({"name": d.name("nobody")})
        )
        .0,
        -19
    );
    let m = &c.ok("bdev_raid_get_bdevs", json!({"name": r}))[0];
    assert_eq!(m["num_base_bdevs_discovered"], json!(1));
    assert_eq!(m["base_bdevs_list"][1]["name"], json!(null));
    assert_eq!(m["base_bdevs_list"][1]["needs_full_rebuild"], json!(true));
    // The freed child can be deleted; the new one fills the slot with a full copy.
    c.ok("bdev_malloc_delete", json!({"name": b}));
    c.ok(
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": r, "base_bdev": e}),
    );
    let t = std::time::Instant::now();
    let m = loop {
        let m = c.ok("bdev_raid_get_bdevs", json!({"name": r}))[0].clone();
        if m.get("last_rebuild").is_some() {
            break m;
        }
        assert!(t.elapsed().as_secs() < 20, "not rebuilt: {m}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(m["base_bdevs_list"][1]["name"], json!(e));
    assert_eq!(m["base_bdevs_list"][1]["state"], json!("in_sync"));
    assert!(m.get("process").is_none(), "{m}");
    assert_eq!(m["last_rebuild"]["kind"], json!("full"));
    assert_eq!(m["last_rebuild"]["outcome"], json!("in_sync"));
    assert_eq!(
        m["last_rebuild"]["bytes_copied"],
        json!((8192 - 2048) * 512)
    );
    let b = e;
    // Saved after both children.
    let cfg = c.ok("save_config", json!(null));
    let entries = sub(&cfg, "bdev")["config"].as_array().unwrap().clone();
    let pos = |n: &str| {
        entries
            .iter()
            .position(|e| e["params"]["name"] == json!(n))
            .unwrap_or_else(|| panic!("{n} not saved"))
    };
    assert!(pos(&a) < pos(&r) && pos(&b) < pos(&r));
    let saved = entries[pos(&r)].clone();
    assert_eq!(saved["method"], json!("bdev_raid_create"));
    assert_eq!(saved["params"]["uuid"], uuid);
    assert_eq!(saved["params"]["base_bdevs"], json!([a, b]));
    assert_eq!(entries[0]["method"], json!("bdev_raid_set_options"));
    assert_eq!(entries[0]["params"], opts);
    c.ok(
        "bdev_raid_set_options",
        json!({"process_window_size_kb": 1024, "self_heal": true}),
    );
    // bdev_raid_delete R0, then the saved entry reassembles it from the superblocks.
    c.ok("bdev_raid_delete", json!({"name": r}));
    assert_eq!(c.err("bdev_raid_delete", json!({"name": r})).0, -19);
    c.ok("bdev_raid_create", saved["params"].clone());
    let m = &c.ok(
        "bdev_raid_get_bdevs",
        json!({"category": "online", "name": r}),
    )[0];
    assert_eq!(m["uuid"], uuid, "reassembled, not made anew");
    // rpc.py 26.x: bdev_raid_delete with clear_sb wipes the superblocks: the children make
    // a new mirror next time.
    c.ok("bdev_raid_delete", json!({"name": r, "clear_sb": true}));
    c.ok(
        "bdev_raid_create",
        json!({"name": r, "raid_level": "raid1", "base_bdevs": [a, b]}),
    );
    let m = &c.ok("bdev_raid_get_bdevs", json!({"name": r}))[0];
    assert_ne!(m["uuid"], uuid, "wiped, so made anew");
    c.ok("bdev_raid_delete", json!({"name": r, "clear_sb": false}));
    c.ok("bdev_malloc_delete", json!({"name": a}));
    c.ok("bdev_malloc_delete", json!({"name": b}));
}

/// ballast's `bdev_raid_quiesce` / `bdev_raid_unquiesce`: shown in `bdev_raid_get_bdevs`,
/// idempotent, ended by its deadline, refusals with plain messages.
#[test]
fn raid_quiesce_over_rpc() {
    let d = Daemon::new();
    let mut c = d.client();
    let (a, b, r) = (d.name("Qa"), d.name("Qb"), d.name("Q0"));
    c.malloc(&a, 8192, 512);
    c.malloc(&b, 8192, 512);
    c.ok(
        "bdev_raid_create",
        json!({"name": r, "raid_level": "raid1", "base_bdevs": [a, b]}),
    );
    let get = |c: &mut common::Client| c.ok("bdev_raid_get_bdevs", json!({"name": r}))[0].clone();
    assert_eq!(get(&mut c)["quiesced"], json!(false));
    assert!(get(&mut c).get("quiesce_remaining_ms").is_none());
    let q = json!({"name": r, "timeout_ms": 20000});
    assert_eq!(c.ok("bdev_raid_quiesce", q.clone()), json!(true));
    let m = get(&mut c);
    assert_eq!(m["quiesced"], json!(true), "{m}");
    let left = m["quiesce_remaining_ms"].as_u64().unwrap();
    assert!(left > 10_000 && left <= 20_000, "{m}");
    assert_eq!(c.ok("bdev_raid_quiesce", q), json!(true), "again: renewed");
    let unq = json!({"name": r});
    assert_eq!(c.ok("bdev_raid_unquiesce", unq.clone()), json!(true));
    assert_eq!(c.ok("bdev_raid_unquiesce", unq.clone()), json!(false));
    assert_eq!(get(&mut c)["quiesced"], json!(false));
    // The default deadline, and one that passes: the mirror resumes by itself.
    assert_eq!(c.ok("bdev_raid_quiesce", json!({"name": r})), json!(true));
    let left = get(&mut c)["quiesce_remaining_ms"].as_u64().unwrap();
    assert!(left > 5_000 && left <= 10_000, "default 10 s: {left}");
    c.ok("bdev_raid_quiesce", json!({"name": r, "timeout_ms": 150}));
    common::wait(|| get(&mut c)["quiesced"] == json!(false));
    assert_eq!(c.ok("bdev_raid_unquiesce", unq), json!(false));
    // Refusals.
    for (params, code, what) in [
        (json!({"name": d.name("none")}), -19, "not found"),
        (json!({"name": r, "timeout_ms": 0}), -32602, "timeout_ms"),
        (
            json!({"name": r, "timeout_ms": 3_600_000}),
            -32602,
            "timeout_ms",
        ),
        (json!({"name": r, "timeout": 5}), -32602, "unknown field"),
        (json!({}), -32602, "name"),
    ] {
        let (got, msg) = c.err("bdev_raid_quiesce", params.clone());
        assert_eq!(got, code, "{params}: {msg}");
        assert!(msg.contains(what), "{params}: {msg}");
    }
    let (got, msg) = c.err("bdev_raid_unquiesce", json!({"name": d.name("none")}));
    assert_eq!(got, -19, "{msg}");
    assert_eq!(get(&mut c)["quiesced"], json!(false));
    // Not part of the configuration.
    let cfg = c.ok("save_config", json!(null));
    assert!(!cfg.to_string().contains("quiesce"), "{cfg}");
    c.ok("bdev_raid_delete", json!({"name": r}));
    c.ok("bdev_malloc_delete", json!({"name": a}));
    c.ok("bdev_malloc_delete", json!({"name": b}));
}
