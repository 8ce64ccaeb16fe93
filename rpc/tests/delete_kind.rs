//! Each `bdev_<kind>_delete` deletes bdevs of its own kind only: aimed at a bdev of another
//! kind it answers SPDK's -19 ("No such device", naming the kind it found) and the bdev stays,
//! with its data.

mod common;

use common::Daemon;
use serde_json::{json, Value};

const K1: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const K2: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

#[test]
fn a_delete_aimed_at_another_kind_is_refused_and_deletes_nothing() {
    let d = Daemon::new();
    let mut c = d.client();
    // One bdev of every kind the delete methods serve.
    let malloc = d.name("M0");
    c.malloc(&malloc, 256, 512);
    let nul = d.name("N0");
    c.ok(
        "bdev_null_create",
        json!({"name": nul, "num_blocks": 256, "block_size": 512}),
    );
    let file = format!("/var/tmp/{}.img", d.name("U0"));
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let uring = d.name("U0");
    c.ok(
        "bdev_uring_create",
        json!({"name": uring, "filename": file, "block_size": 512}),
    );
    let key = d.name("k0");
    c.ok(
        "accel_crypto_key_create",
        json!({"cipher": "AES_XTS", "key": K1, "key2": K2, "name": key}),
    );
    let crypt_base = d.name("M1");
    c.malloc(&crypt_base, 256, 512);
    let crypto = d.name("C0");
    c.ok(
        "bdev_crypto_create",
        json!({"base_bdev_name": crypt_base, "name": crypto, "key_name": key}),
    );
    let comp_base = d.name("M2");
    c.malloc(&comp_base, 4096, 512);
    let compress = d.name("Z0");
    c.ok(
        "bdev_compress_create",
        json!({"base_bdev_name": comp_base, "name": compress}),
    );

    let err_base = d.name("M3");
    c.malloc(&err_base, 256, 512);
    let errbdev = c.ok("bdev_error_create", json!({"base_name": err_base}));
    let errbdev = errbdev.as_str().unwrap().to_string();

    let (ra, rb, raid) = (d.name("Ra"), d.name("Rb"), d.name("R0"));
    c.malloc(&ra, 8192, 512);
    c.malloc(&rb, 8192, 512);
    c.ok(
        "bdev_raid_create",
        json!({"name": raid, "raid_level": "raid1", "base_bdevs": [ra, rb]}),
    );

    let kinds: [(&str, &str, &String); 7] = [
        ("bdev_malloc_delete", "malloc", &malloc),
        ("bdev_null_delete", "null", &nul),
        ("bdev_uring_delete", "uring", &uring),
        ("bdev_crypto_delete", "crypto", &crypto),
        ("bdev_compress_delete", "compress", &compress),
        ("bdev_error_delete", "error", &errbdev),
        ("bdev_raid_delete", "raid", &raid),
    ];
    let uuid_of = |c: &mut common::Client, n: &str| -> Value {
        c.ok("bdev_get_bdevs", json!({"name": n}))[0]["uuid"].clone()
    };
    let before: Vec<Value> = kinds.iter().map(|k| uuid_of(&mut c, k.2)).collect();
    for (method, own, _) in kinds {
        for (_, found, name) in kinds.iter().filter(|k| k.1 != own) {
            let (code, msg) = c.err(method, json!({"name": name}));
            assert_eq!(code, -19, "{method} on a {found} bdev: {msg}");
            assert!(
                msg.contains("No such device")
                    && msg.contains(&format!("is a {found} bdev"))
                    && msg.contains(&format!("not a {own} bdev")),
                "{method} on a {found} bdev: {msg}"
            );
            // Also when named by UUID.
            let u = uuid_of(&mut c, name);
            let (code, _) = c.err(method, json!({"name": u}));
            assert_eq!(code, -19, "{method} on a {found} bdev named by uuid");
        }
    }
    // Nothing was deleted: every bdev is still there, the same one.
    let after: Vec<Value> = kinds.iter().map(|k| uuid_of(&mut c, k.2)).collect();
    assert_eq!(before, after);

    // Each method deletes its own kind (stages first: they claim their bases).
    for (method, _, name) in [
        kinds[3], kinds[4], kinds[5], kinds[6], kinds[0], kinds[1], kinds[2],
    ] {
        assert_eq!(c.ok(method, json!({"name": name})), json!(true), "{method}");
        let (code, msg) = c.err(method, json!({"name": name}));
        assert_eq!(code, -19, "{method} twice: {msg}");
    }
    std::fs::remove_file(&file).unwrap();
}
