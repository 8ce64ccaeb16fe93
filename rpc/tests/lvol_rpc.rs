//! Logical volumes over SPDK's lvol RPCs, with the bodies rpc.py v25.09 and v26.09 send: stores
//! (create, list, rename, grow, check, delete), thick and thin lvols, snapshots and clones,
//! resize, inflate, decouple, read-only, rename, delete; `bdev_get_bdevs`'
//! `driver_specific.lvol`; save_config order around lvols; and the requests refused before the
//! store is asked (`*_before_the_store`: bad or missing parameters, bdevs of another kind).

mod common;

use common::{sub, Client, Daemon};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
const INVALID_PARAMS: i64 = -32602;

/// `method` must fail with `code` and a message naming `what`.
fn fails(c: &mut Client, method: &str, params: Value, code: i64, what: &str) {
    let (got, msg) = c.err(method, params.clone());
    assert_eq!(got, code, "{method} {params}: {msg}");
    assert!(
        msg.contains(what),
        "{method} {params}: {msg:?} lacks {what:?}"
    );
}

/// `method` must be refused as invalid params (-32602), the message naming `what`.
fn refused(c: &mut Client, method: &str, params: Value, what: &str) {
    fails(c, method, params, INVALID_PARAMS, what);
}

/// `method` must find no such device (SPDK's -19), the message naming `what`.
fn no_device(c: &mut Client, method: &str, params: Value, what: &str) {
    fails(c, method, params, -19, what);
}

/// A daemon with a 64 MiB malloc bdev (512-byte blocks) holding store `lvs` (1 MiB clusters).
/// Its stores are deleted at the end through the socket, so a test that fails half-way does
/// not leave its base claimed.
struct Pool {
    d: Daemon,
    c: Client,
    base: String,
    lvs: String,
    uuid: String,
}

impl Pool {
    fn new(tag: &str) -> Self {
        let d = Daemon::new();
        let mut c = d.client();
        let base = d.name(&format!("{tag}M"));
        c.malloc(&base, 64 * MIB / 512, 512);
        let lvs = d.name(&format!("{tag}lvs"));
        // rpc.py 25.9: bdev_lvol_create_lvstore BASE LVS -c 1048576 --clear-method unmap
        let uuid = c.ok(
            "bdev_lvol_create_lvstore",
            json!({"bdev_name": base, "lvs_name": lvs, "cluster_sz": MIB,
                   "clear_method": "unmap"}),
        );
        let uuid = uuid.as_str().expect("the store's UUID").to_string();
        uuid::Uuid::parse_str(&uuid).expect("a UUID");
        Pool {
            d,
            c,
            base,
            lvs,
            uuid,
        }
    }

    fn bdev(&mut self, name: &str) -> Value {
        self.c.ok("bdev_get_bdevs", json!({"name": name}))[0].clone()
    }

    fn lvol(&mut self, name: &str) -> Value {
        self.bdev(name)["driver_specific"]["lvol"].clone()
    }

    fn store(&mut self) -> Value {
        let lvs = self.lvs.clone();
        self.c
            .ok("bdev_lvol_get_lvstores", json!({"lvs_name": lvs}))
            .as_array()
            .and_then(|a| a.first().cloned())
            .expect("the store is listed")
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let prefix = self.d.prefix.clone();
        if let Ok(Value::Array(all)) = self.c.call("bdev_lvol_get_lvstores", Value::Null) {
            for s in all.iter().filter_map(|s| s["name"].as_str()) {
                if s.starts_with(&prefix) {
                    let _ = self
                        .c
                        .call("bdev_lvol_delete_lvstore", json!({"lvs_name": s}));
                }
            }
        }
    }
}

#[test]
fn lvstore_lifecycle_over_rpc() {
    let mut p = Pool::new("life");
    let s = p.store();
    assert_eq!(s["uuid"], json!(p.uuid));
    assert_eq!(s["base_bdev"], json!(p.base));
    assert_eq!(s["cluster_size"], json!(MIB));
    assert_eq!(s["block_size"], json!(512));
    let total = s["total_data_clusters"].as_u64().unwrap();
    assert!(total > 0 && total < 64, "{s}");
    assert_eq!(s["free_clusters"], json!(total));
    let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "SPDK's seven fields: {keys:?}");
    // All stores, by UUID (any case), by name.
    let all = p.c.ok("bdev_lvol_get_lvstores", Value::Null);
    assert!(all.as_array().unwrap().contains(&s));
    let upper = p.uuid.to_uppercase();
    assert_eq!(
        p.c.ok("bdev_lvol_get_lvstores", json!({"uuid": upper})),
        json!([s])
    );
    // The base is the store's now.
    let (code, _) = p.c.err("bdev_malloc_delete", json!({"name": p.base}));
    assert_eq!(code, -16);
    let again = json!({"bdev_name": p.base, "lvs_name": p.d.name("other")});
    assert!(p.c.call("bdev_lvol_create_lvstore", again).is_err());
    // The checker finds it consistent.
    let r =
        p.c.ok("bdev_lvol_check_lvstore", json!({"bdev_name": p.base}));
    assert_eq!(r["consistent"], json!(true), "{r}");
    assert_eq!(r["errors"], json!([]));
    assert_eq!(r["lvols"], json!(0));
    assert_eq!(r["total_clusters"], json!(total));
    assert_eq!(r["free_clusters"], json!(total));
    // Rename; the old name is gone.
    let new = p.d.name("renamed");
    let old = std::mem::replace(&mut p.lvs, new.clone());
    p.c.ok(
        "bdev_lvol_rename_lvstore",
        json!({"old_name": old, "new_name": new}),
    );
    assert_eq!(p.store()["uuid"], json!(p.uuid));
    let (code, _) = p.c.err("bdev_lvol_get_lvstores", json!({"lvs_name": old}));
    assert_eq!(code, -19);
    // Grow (the base did not grow: nothing changes).
    assert_eq!(
        p.c.ok("bdev_lvol_grow_lvstore", json!({"lvs_name": new})),
        json!(true)
    );
    assert_eq!(p.store()["total_data_clusters"], json!(total));
    // Unknown stores are SPDK's -19.
    let stranger = "5f0c6a0e-2b1d-4f55-9a53-7c0e6d1a2b3c";
    for (method, params) in [
        ("bdev_lvol_get_lvstores", json!({"uuid": stranger})),
        ("bdev_lvol_delete_lvstore", json!({"uuid": stranger})),
        ("bdev_lvol_grow_lvstore", json!({"lvs_name": "nope"})),
        ("bdev_lvol_get_lvols", json!({"lvs_name": "nope"})),
        (
            "bdev_lvol_rename_lvstore",
            json!({"old_name": "nope", "new_name": "x"}),
        ),
    ] {
        no_device(&mut p.c, method, params, "not found");
    }
    // Delete by UUID: the base is free again.
    assert_eq!(
        p.c.ok("bdev_lvol_delete_lvstore", json!({"uuid": p.uuid})),
        json!(true)
    );
    let (code, _) = p.c.err("bdev_lvol_get_lvstores", json!({"uuid": p.uuid}));
    assert_eq!(code, -19);
    assert_eq!(
        p.c.ok("bdev_malloc_delete", json!({"name": p.base})),
        json!(true)
    );
}

#[test]
fn lvols_snapshots_and_clones_over_rpc() {
    let mut p = Pool::new("vol");
    let lvs = p.lvs.clone();
    let free0 = p.store()["free_clusters"].as_u64().unwrap();
    // rpc.py 25.9: bdev_lvol_create -l LVS thick 4 (no thin_provision, no clear_method).
    let thick = p.c.ok(
        "bdev_lvol_create",
        json!({"lvol_name": "thick", "size_in_mib": 4, "lvs_name": lvs}),
    );
    let thick = thick.as_str().unwrap().to_string();
    uuid::Uuid::parse_str(&thick).expect("an lvol bdev is named by its UUID");
    // rpc.py 26.9: -u UUID -t -c default, thin_provision always sent; and the older byte size.
    let thin = p.c.ok(
        "bdev_lvol_create",
        json!({"lvol_name": "thin", "size": 8 * MIB, "thin_provision": true,
               "uuid": p.uuid, "clear_method": "default"}),
    );
    let thin = thin.as_str().unwrap().to_string();
    let b = p.bdev(&thick);
    assert_eq!(b["product_name"], json!("Logical Volume"));
    assert_eq!(b["name"], json!(thick));
    assert_eq!(b["uuid"], json!(thick));
    assert!(b["aliases"]
        .as_array()
        .unwrap()
        .contains(&json!(format!("{lvs}/thick"))));
    assert_eq!(b["num_blocks"], json!(4 * MIB / 512));
    assert_eq!(
        b["driver_specific"]["lvol"],
        json!({"lvol_store_uuid": p.uuid, "base_bdev": p.base, "thin_provision": false,
               "num_allocated_clusters": 4, "snapshot": false, "clone": false,
               "esnap_clone": false})
    );
    assert_eq!(
        p.lvol(&format!("{lvs}/thin"))["thin_provision"],
        json!(true)
    );
    assert_eq!(p.store()["free_clusters"], json!(free0 - 4));
    // bdev_lvol_get_lvols, all of the store's, by name and by UUID.
    let l = p.c.ok("bdev_lvol_get_lvols", json!({"lvs_name": lvs}));
    assert_eq!(
        l,
        p.c.ok("bdev_lvol_get_lvols", json!({"lvs_uuid": p.uuid}))
    );
    let l = l.as_array().unwrap();
    assert_eq!(l.len(), 2);
    let t = l.iter().find(|v| v["uuid"] == json!(thin)).unwrap();
    assert_eq!(
        t,
        &json!({"alias": format!("{lvs}/thin"), "uuid": thin, "name": "thin",
                "is_thin_provisioned": true, "is_snapshot": false, "is_clone": false,
                "is_esnap_clone": false, "is_degraded": false,
                "lvs": {"name": lvs, "uuid": p.uuid}, "num_allocated_clusters": 0})
    );
    // Snapshot: read-only, the origin becomes its clone.
    let snap = p.c.ok(
        "bdev_lvol_snapshot",
        json!({"lvol_name": format!("{lvs}/thin"), "snapshot_name": "snap"}),
    );
    let snap = snap.as_str().unwrap().to_string();
    let s = p.lvol(&snap);
    assert_eq!(
        (s["snapshot"].clone(), s["clones"].clone()),
        (json!(true), json!(["thin"]))
    );
    assert!(s.get("base_snapshot").is_none());
    let t = p.lvol(&thin);
    assert_eq!(
        (t["clone"].clone(), t["base_snapshot"].clone()),
        (json!(true), json!("snap"))
    );
    assert!(t.get("clones").is_none());
    // Clone the snapshot; a writable lvol is no snapshot to clone.
    let cl = p.c.ok(
        "bdev_lvol_clone",
        json!({"snapshot_name": format!("{lvs}/snap"), "clone_name": "cl"}),
    );
    let cl = cl.as_str().unwrap().to_string();
    assert_eq!(p.lvol(&cl)["base_snapshot"], json!("snap"));
    let mut clones: Vec<Value> = p.lvol(&snap)["clones"].as_array().unwrap().clone();
    clones.sort_by_key(|v| v.to_string());
    assert_eq!(clones, [json!("cl"), json!("thin")]);
    assert!(p
        .c
        .call(
            "bdev_lvol_clone",
            json!({"snapshot_name": thick, "clone_name": "bad"})
        )
        .is_err());
    // Resize (MiB and bytes): bdev_get_bdevs shows the live size.
    p.c.ok(
        "bdev_lvol_resize",
        json!({"name": format!("{lvs}/thin"), "size_in_mib": 16}),
    );
    assert_eq!(p.bdev(&thin)["num_blocks"], json!(16 * MIB / 512));
    p.c.ok("bdev_lvol_resize", json!({"name": thick, "size": 2 * MIB}));
    assert_eq!(p.bdev(&thick)["num_blocks"], json!(2 * MIB / 512));
    // Inflate one clone, decouple the other: neither is a clone after.
    p.c.ok("bdev_lvol_inflate", json!({"name": cl}));
    p.c.ok("bdev_lvol_decouple_parent", json!({"name": thin}));
    assert_eq!(p.lvol(&cl)["clone"], json!(false));
    assert_eq!(
        p.lvol(&cl)["thin_provision"],
        json!(false),
        "inflated: thick"
    );
    assert_eq!(p.lvol(&thin)["clone"], json!(false));
    assert_eq!(p.lvol(&snap)["clones"], json!([]));
    // Read-only, rename (the alias follows, the bdev name stays).
    p.c.ok("bdev_lvol_set_read_only", json!({"name": thick}));
    p.c.ok(
        "bdev_lvol_rename",
        json!({"old_name": format!("{lvs}/thick"), "new_name": "thick2"}),
    );
    assert_eq!(p.bdev(&format!("{lvs}/thick2"))["name"], json!(thick));
    // What the store refuses: unknown lvols, a store too small, a name taken.
    for (method, params) in [
        (
            "bdev_lvol_snapshot",
            json!({"lvol_name": format!("{lvs}/nope"), "snapshot_name": "s2"}),
        ),
        ("bdev_lvol_delete", json!({"name": format!("{lvs}/nope")})),
        (
            "bdev_lvol_create",
            json!({"lvol_name": "x", "size_in_mib": 1, "lvs_name": "nope"}),
        ),
    ] {
        no_device(&mut p.c, method, params, "not found");
    }
    let (code, msg) = p.c.err(
        "bdev_lvol_create",
        json!({"lvol_name": "huge", "size_in_mib": 1024, "lvs_name": lvs}),
    );
    assert_eq!(code, -28, "a thick lvol larger than the store: {msg}");
    assert!(p
        .c
        .call(
            "bdev_lvol_create",
            json!({"lvol_name": "thin", "size_in_mib": 1, "lvs_name": lvs})
        )
        .is_err());
    // Deletes; the store is empty and whole again.
    for v in [&snap, &cl, &thin, &thick] {
        assert_eq!(p.c.ok("bdev_lvol_delete", json!({"name": v})), json!(true));
    }
    assert_eq!(
        p.c.ok("bdev_lvol_get_lvols", json!({"lvs_name": lvs})),
        json!([])
    );
    assert_eq!(p.store()["free_clusters"], json!(free0));
    let r =
        p.c.ok("bdev_lvol_check_lvstore", json!({"bdev_name": p.base}));
    assert_eq!(r["errors"], json!([]), "{r}");
}

#[test]
fn save_config_puts_what_stands_on_an_lvol_after_its_stores_base() {
    // Store on an error bdev over a malloc bdev, an lvol in it, an error bdev on the lvol:
    // EE_<lvol uuid> sorts before EE_<prefix>..., yet must be replayed after it (examine
    // brings the lvol back when the store's base appears).
    let d = Daemon::new();
    let mut c = d.client();
    let m = d.name("Zm");
    c.malloc(&m, 32 * MIB / 512, 512);
    let ee = c.ok("bdev_error_create", json!({"base_name": m}));
    let ee = ee.as_str().unwrap().to_string();
    let lvs = d.name("cfg");
    c.ok(
        "bdev_lvol_create_lvstore",
        json!({"bdev_name": ee, "lvs_name": lvs, "cluster_sz": MIB}),
    );
    let v = c.ok(
        "bdev_lvol_create",
        json!({"lvol_name": "v", "size_in_mib": 2, "lvs_name": lvs, "thin_provision": true}),
    );
    let v = v.as_str().unwrap().to_string();
    let top = c.ok("bdev_error_create", json!({"base_name": v}));
    let top = top.as_str().unwrap().to_string();
    assert!(top < ee, "the test needs {top} to sort before {ee}");
    let cfg = c.ok("save_config", Value::Null);
    let entries = sub(&cfg, "bdev")["config"].as_array().unwrap().clone();
    assert!(
        !entries
            .iter()
            .any(|e| e["method"].as_str().unwrap().starts_with("bdev_lvol")),
        "no store or lvol is saved: {entries:?}"
    );
    let pos = |base: &str| {
        entries
            .iter()
            .position(|e| e["method"] == "bdev_error_create" && e["params"]["base_name"] == base)
            .unwrap_or_else(|| panic!("no error bdev on {base}: {entries:?}"))
    };
    assert!(pos(&m) < pos(&v), "{entries:?}");
    assert_eq!(
        entries.last().unwrap(),
        &json!({"method": "bdev_wait_for_examine"})
    );
    c.ok("bdev_error_delete", json!({"name": top}));
    c.ok("bdev_lvol_delete_lvstore", json!({"lvs_name": lvs}));
    c.ok("bdev_error_delete", json!({"name": ee}));
}

#[test]
fn a_saved_config_brings_a_store_on_a_file_back_by_examine() {
    use ballast_engine::backend::lvol;
    let d = Daemon::new();
    let mut c = d.client();
    let file = format!("/var/tmp/{}.img", d.name("lvkeep"));
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(32 * MIB))
        .unwrap();
    let u = d.name("U");
    c.ok(
        "bdev_uring_create",
        json!({"name": u, "filename": file, "block_size": 512}),
    );
    let lvs = d.name("keep");
    c.ok(
        "bdev_lvol_create_lvstore",
        json!({"bdev_name": u, "lvs_name": lvs, "cluster_sz": MIB}),
    );
    let v = c.ok(
        "bdev_lvol_create",
        json!({"lvol_name": "v", "size_in_mib": 4, "lvs_name": lvs, "thin_provision": true}),
    );
    let top = c.ok("bdev_error_create", json!({"base_name": v}));
    // This test's part of the saved bdev config: the base, the stage on the lvol, the wait.
    let cfg = c.ok("save_config", Value::Null);
    let mine: Vec<Value> = sub(&cfg, "bdev")["config"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            let p = &e["params"];
            p["name"] == json!(u) || p["base_name"] == v || p.is_null()
        })
        .cloned()
        .collect();
    assert_eq!(mine.len(), 3, "{mine:?}");
    // Down: the stage deleted, the store unloaded (it stays on the file), the base deleted.
    c.ok("bdev_error_delete", json!({"name": top}));
    lvol::unload_lvstore(None, Some(&lvs)).unwrap();
    c.ok("bdev_uring_delete", json!({"name": u}));
    no_device(
        &mut c,
        "bdev_lvol_get_lvstores",
        json!({"lvs_name": lvs}),
        "not found",
    );
    // Replayed with examine on (as ballastd runs): the store and its lvol come back with the
    // base, so the stage on the lvol can be made again.
    lvol::enable_examine(Some(&d.ctx.rt));
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": mine}]});
    let replay = c.call("load_config", doc);
    lvol::wait_for_examine(std::time::Duration::from_secs(30));
    lvol::enable_examine(None);
    replay.unwrap();
    let l = c.ok("bdev_lvol_get_lvols", json!({"lvs_name": lvs}));
    assert_eq!(l[0]["uuid"], v, "{l}");
    assert_eq!(l[0]["is_thin_provisioned"], json!(true));
    assert_eq!(c.ok("bdev_get_bdevs", json!({"name": top}))[0]["name"], top);
    c.ok("bdev_error_delete", json!({"name": top}));
    c.ok("bdev_lvol_delete_lvstore", json!({"lvs_name": lvs}));
    c.ok("bdev_uring_delete", json!({"name": u}));
    let _ = std::fs::remove_file(&file);
}

/// `base` with the members of `extra` added (or replaced).
fn with(base: &Value, extra: Value) -> Value {
    let mut v = base.clone();
    let Value::Object(extra) = extra else {
        panic!("{extra} is not an object")
    };
    v.as_object_mut().unwrap().extend(extra);
    v
}

#[test]
fn store_params_are_checked_before_the_store() {
    let d = Daemon::new();
    let mut c = d.client();
    let m = d.name("M");
    c.malloc(&m, 2048, 512);
    let lvs = json!({"bdev_name": m, "lvs_name": "lvs"});
    let u = "5f0c6a0e-2b1d-4f55-9a53-7c0e6d1a2b3c";
    let both = json!({"uuid": u, "lvs_name": "x"});
    let cases = [
        (
            "bdev_lvol_create_lvstore",
            json!({"bdev_name": m}),
            "lvs_name",
        ),
        (
            "bdev_lvol_create_lvstore",
            with(&lvs, json!({"clear_method": "shred"})),
            "clear_method \"shred\"",
        ),
        // "default" is an lvol's clear method, not a store's.
        (
            "bdev_lvol_create_lvstore",
            with(&lvs, json!({"clear_method": "default"})),
            "clear_method",
        ),
        (
            "bdev_lvol_create_lvstore",
            with(&lvs, json!({"cluster_sz": 3000})),
            "power of two",
        ),
        (
            "bdev_lvol_create_lvstore",
            with(&lvs, json!({"cluster_sz": "4M"})),
            "cluster_sz",
        ),
        (
            "bdev_lvol_create_lvstore",
            with(&lvs, json!({"lvs_name": "l".repeat(64)})),
            "at most 63",
        ),
        (
            "bdev_lvol_create_lvstore",
            with(&lvs, json!({"typo": 1})),
            "typo",
        ),
        // A store is named by uuid xor lvs_name.
        ("bdev_lvol_delete_lvstore", json!({}), "uuid or lvs_name"),
        ("bdev_lvol_delete_lvstore", Value::Null, "uuid or lvs_name"),
        ("bdev_lvol_delete_lvstore", both.clone(), "not both"),
        (
            "bdev_lvol_delete_lvstore",
            json!({"uuid": "nope"}),
            "uuid \"nope\"",
        ),
        ("bdev_lvol_grow_lvstore", json!({}), "uuid or lvs_name"),
        ("bdev_lvol_grow_lvstore", both.clone(), "not both"),
        ("bdev_lvol_get_lvstores", both, "not both"),
        (
            "bdev_lvol_get_lvols",
            json!({"lvs_uuid": u, "lvs_name": "x"}),
            "not both",
        ),
        (
            "bdev_lvol_get_lvols",
            json!({"lvs_uuid": "12"}),
            "lvs_uuid \"12\"",
        ),
        (
            "bdev_lvol_get_lvols",
            json!({"uuid": u}),
            "unknown field `uuid`",
        ),
        (
            "bdev_lvol_rename_lvstore",
            json!({"old_name": "a"}),
            "new_name",
        ),
        (
            "bdev_lvol_rename_lvstore",
            json!({"old_name": "a", "new_name": ""}),
            "new_name must not be empty",
        ),
        ("bdev_lvol_check_lvstore", json!({}), "bdev_name"),
    ];
    for (method, params, what) in cases {
        refused(&mut c, method, params, what);
    }
    // rpc.py's -m and -s are accepted (and ignored): this fails on the unknown bdev only.
    let md = json!({"bdev_name": d.name("nope"), "lvs_name": "lvs", "clear_method": "NONE",
                    "num_md_pages_per_cluster_ratio": 100, "md_page_size": 4096});
    no_device(&mut c, "bdev_lvol_create_lvstore", md, "No such device");
    let nope = json!({"bdev_name": d.name("nope")});
    no_device(&mut c, "bdev_lvol_check_lvstore", nope, "not found");
}

#[test]
fn lvol_params_are_checked_before_the_store() {
    let d = Daemon::new();
    let mut c = d.client();
    let v = json!({"lvol_name": "v", "lvs_name": "lvs"});
    let sized = with(&v, json!({"size_in_mib": 4}));
    let u = "5f0c6a0e-2b1d-4f55-9a53-7c0e6d1a2b3c";
    let create = |extra| ("bdev_lvol_create", with(&v, extra));
    let create4 = |extra| ("bdev_lvol_create", with(&sized, extra));
    let resize = |extra| ("bdev_lvol_resize", with(&json!({"name": "lvs/v"}), extra));
    let cases = [
        (
            (
                "bdev_lvol_create",
                json!({"lvol_name": "v", "size_in_mib": 4}),
            ),
            "uuid or lvs_name",
        ),
        (create4(json!({"uuid": u})), "not both"),
        (create(json!({})), "size_in_mib"),
        (create(json!({"size_in_mib": 0})), "size_in_mib must be > 0"),
        (create(json!({"size": 0})), "size must be > 0"),
        (create4(json!({"size": 4096})), "not both"),
        (create(json!({"size_in_mib": "4"})), "size_in_mib"),
        (create(json!({"size_in_mib": 1.5})), "size_in_mib"),
        (create(json!({"size_in_mib": -1})), "size_in_mib"),
        (create(json!({"size_in_mib": u64::MAX})), "too large"),
        (
            create4(json!({"clear_method": "shred"})),
            "clear_method \"shred\"",
        ),
        (create4(json!({"thin_provision": "yes"})), "thin_provision"),
        (create4(json!({"lvol_name": "v".repeat(64)})), "at most 63"),
        (create4(json!({"lvol_name": ""})), "empty"),
        (
            create4(json!({"lvol_priority_class": 1})),
            "lvol_priority_class",
        ),
        (resize(json!({})), "size_in_mib"),
        (resize(json!({"size_in_mib": 0})), "> 0"),
        (resize(json!({"size_in_mib": 1, "size": 1})), "not both"),
        (
            ("bdev_lvol_snapshot", json!({"lvol_name": "lvs/v"})),
            "snapshot_name",
        ),
        (
            (
                "bdev_lvol_clone",
                json!({"snapshot_name": "lvs/s", "clone_name": ""}),
            ),
            "empty",
        ),
        (("bdev_lvol_inflate", json!({})), "name"),
        (
            (
                "bdev_lvol_rename",
                json!({"old_name": "lvs/v", "new_name": "n".repeat(64)}),
            ),
            "at most 63",
        ),
    ];
    for ((method, params), what) in cases {
        refused(&mut c, method, params, what);
    }
    // No bdev of that name: no lvol either (SPDK's -19).
    let nope = d.name("nope");
    for (method, params) in [
        (
            "bdev_lvol_snapshot",
            json!({"lvol_name": nope, "snapshot_name": "s"}),
        ),
        (
            "bdev_lvol_clone",
            json!({"snapshot_name": nope, "clone_name": "c"}),
        ),
        ("bdev_lvol_inflate", json!({"name": nope})),
        ("bdev_lvol_resize", json!({"name": nope, "size_in_mib": 1})),
    ] {
        no_device(&mut c, method, params, "not found");
    }
}

#[test]
fn lvol_methods_refuse_bdevs_of_another_kind_before_the_store() {
    let d = Daemon::new();
    let mut c = d.client();
    let m = d.name("M");
    c.malloc(&m, 2048, 512);
    for (method, params) in [
        ("bdev_lvol_delete", json!({"name": m})),
        (
            "bdev_lvol_snapshot",
            json!({"lvol_name": m, "snapshot_name": "s"}),
        ),
        (
            "bdev_lvol_clone",
            json!({"snapshot_name": m, "clone_name": "c"}),
        ),
        ("bdev_lvol_resize", json!({"name": m, "size_in_mib": 1})),
        ("bdev_lvol_resize", json!({"name": m, "size": 4096})),
        ("bdev_lvol_inflate", json!({"name": m})),
        ("bdev_lvol_decouple_parent", json!({"name": m})),
        ("bdev_lvol_set_read_only", json!({"name": m})),
        ("bdev_lvol_rename", json!({"old_name": m, "new_name": "x"})),
    ] {
        let what = format!("No such device: bdev {m} is a malloc bdev, not a lvol bdev");
        no_device(&mut c, method, params, &what);
    }
    // Still there, still writable, unchanged.
    let b = &c.ok("bdev_get_bdevs", json!({"name": m}))[0];
    assert_eq!(b["num_blocks"], json!(2048));
    assert_eq!(b["driver_specific"].get("lvol"), None);
}

#[test]
fn ballast_rpc_lvol_subcommands_reach_the_daemon_before_the_store() {
    let d = Daemon::new();
    let mut c = d.client();
    let m = d.name("M");
    c.malloc(&m, 2048, 512);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ballast-rpc"))
            .arg("-s")
            .arg(&d.path)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    // rpc.py's -m and -s reach the daemon and are accepted: only the bdev is missing.
    let nope = d.name("nope");
    let (code, err) = run(&[
        "bdev_lvol_create_lvstore",
        &nope,
        "lvs",
        "-c",
        "1048576",
        "-m",
        "100",
        "-s",
        "4096",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("No such device") && err.contains("-19"),
        "{err}"
    );
    let (code, err) = run(&["bdev_lvol_delete", &m]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is a malloc bdev, not a lvol bdev"), "{err}");
    // Refused by the client itself (usage: exit 2): no store named, size 0.
    for args in [
        &["bdev_lvol_create", "v", "4"][..],
        &["bdev_lvol_create", "-l", "lvs", "v", "0"],
        &["bdev_lvol_delete_lvstore"],
    ] {
        assert_eq!(run(args).0, Some(2), "{args:?}");
    }
}
