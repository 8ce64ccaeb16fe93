//! `ballastd --save-config PATH`: the configuration is kept in PATH as RPCs change it, so a
//! daemon killed with SIGKILL and restarted with `-c PATH --save-config PATH` comes back with
//! everything; getters and failed calls leave PATH alone; a replay that fails keeps PATH; a
//! PATH that cannot be kept is refused at start; a write that fails is logged, and the RPC
//! still answers what the method returned.
//!
//! Whether PATH was written is told by its inode: every write renames a new file over it. A
//! hard link to the old file ([`Witness`]) keeps the old inode from being reused.

mod common;

use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const NQN: &str = "nqn.2026-11.io.ballast:kept";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:0f5e7c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b";

/// PATH as it is on disk: inode (a new one at every write) and content.
#[derive(Debug, PartialEq)]
struct OnDisk {
    ino: u64,
    text: String,
}

fn on_disk(path: &Path) -> OnDisk {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    OnDisk {
        ino: m.ino(),
        text: std::fs::read_to_string(path).unwrap(),
    }
}

/// A hard link to PATH as it is now: while it lives, a file written over PATH cannot get the
/// old inode back, so [`Witness::replaced`] sees every write.
struct Witness {
    path: PathBuf,
    link: PathBuf,
    old: OnDisk,
}

impl Witness {
    fn new(path: &Path) -> Witness {
        let link = path.with_extension("witness");
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(path, &link).unwrap();
        let old = on_disk(&link);
        Witness {
            path: path.to_path_buf(),
            link,
            old,
        }
    }

    /// Whether PATH was written since; if not, it must hold what it held.
    fn replaced(&self) -> bool {
        let now = on_disk(&self.path);
        if now.ino == self.old.ino {
            assert_eq!(now.text, self.old.text, "written in place");
        }
        now.ino != self.old.ino
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

/// PATH holds exactly what save_config returns, private (0600), and no temporary file is
/// left beside it; returns it as it is on disk.
fn assert_kept(d: &Daemon, path: &Path, step: &str) -> OnDisk {
    let live = d.call("save_config", Value::Null).unwrap();
    let disk = on_disk(path);
    let saved: Value = serde_json::from_str(&disk.text).unwrap();
    assert_eq!(
        saved, live,
        "{step}: the file is not what save_config returns"
    );
    let mode = std::fs::metadata(path).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "{step}: mode {mode:o}");
    let tmp = format!("{}.tmp", path.display());
    assert!(!Path::new(&tmp).exists(), "{step}: {tmp} left behind");
    disk
}

/// Calls `method`, which must succeed and write PATH anew; checks what PATH then holds.
fn change(d: &Daemon, path: &Path, method: &str, params: Value) -> OnDisk {
    let w = Witness::new(path);
    d.call(method, params)
        .unwrap_or_else(|e| panic!("{method}: {e:?}\n{}", d.log()));
    assert!(w.replaced(), "{method} did not write the file");
    assert_kept(d, path, method)
}

fn listen_address(port: u16) -> Value {
    json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
        "trsvcid": port.to_string()})
}

#[test]
fn the_configuration_survives_kill_9() {
    let dir = Scratch::new("survive");
    let path = dir.path("config.json");
    let p = path.to_str().unwrap();
    let port = free_port();
    // Without -c: the (empty) embedded default is saved once it is applied.
    let mut d = Daemon::start(
        &dir,
        "first",
        &["--default-size-mib", "0", "--save-config", p],
    );
    let disk = assert_kept(&d, &path, "start");
    assert_eq!(
        serde_json::from_str::<Value>(&disk.text).unwrap()["subsystems"][2]["config"],
        json!([])
    );
    let steps = [
        (
            "bdev_malloc_create",
            json!({"name": "Malloc0", "num_blocks": 2048, "block_size": 512}),
        ),
        (
            "accel_crypto_key_create",
            json!({"name": "k0", "cipher": "AES_XTS",
                "key": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                "key2": "f0e0d0c0b0a090807060504030201000f0e0d0c0b0a090807060504030201000"}),
        ),
        (
            "bdev_crypto_create",
            json!({"base_bdev_name": "Malloc0", "name": "Crypt0", "key_name": "k0"}),
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": NQN, "serial_number": "KEPT0001", "allow_any_host": false}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "Crypt0"}}),
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": NQN, "listen_address": listen_address(port)}),
        ),
        ("nvmf_subsystem_add_host", json!({"nqn": NQN, "host": HOST})),
    ];
    for (method, params) in steps {
        change(&d, &path, method, params);
    }
    let disk = on_disk(&path);
    assert!(
        disk.text.contains("f0e0d0c0b0a09080"),
        "the key is not saved"
    );

    // Getters do not write; neither do failed calls, alone or in a batch.
    let w = Witness::new(&path);
    for (method, params) in [
        ("bdev_get_bdevs", Value::Null),
        ("nvmf_get_subsystems", Value::Null),
        ("save_config", Value::Null),
        ("framework_get_config", json!({"name": "bdev"})),
        ("spdk_get_version", Value::Null),
        ("rpc_get_methods", Value::Null),
    ] {
        d.call(method, params).unwrap();
        assert!(!w.replaced(), "{method} wrote the file");
    }
    for (method, params) in [
        (
            "bdev_malloc_create",
            json!({"name": "Malloc0", "num_blocks": 2048, "block_size": 512}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "NoSuchBdev"}}),
        ),
        ("bdev_malloc_delete", json!({"name": "NoSuchBdev"})),
        ("nvmf_create_subsystem", json!({"nqn": "not an nqn"})),
        ("no_such_method", Value::Null),
    ] {
        d.call(method, params).unwrap_err();
        assert!(!w.replaced(), "failed {method} wrote the file");
    }
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "bdev_malloc_delete",
            "params": {"name": "NoSuchBdev"}},
        {"jsonrpc": "2.0", "id": 2, "method": "bdev_get_bdevs"},
    ]);
    let r = rpc(&d.sock, &batch);
    assert!(r[0].get("error").is_some(), "{r}");
    assert!(
        !w.replaced(),
        "a batch of a failure and a getter wrote the file"
    );
    // A change as a notification (no answer) is saved too, before the next answer.
    rpc_notify(
        &d.sock,
        &json!({"jsonrpc": "2.0", "method": "bdev_null_create",
            "params": {"name": "Null0", "num_blocks": 64, "block_size": 512}}),
    );
    let saved = assert_kept(&d, &path, "notification");
    assert!(w.replaced(), "a notification's change was not saved");
    assert!(saved.text.contains("Null0"));
    drop(w);

    // kill -9, then back from the file alone.
    let before = serde_json::from_str::<Value>(&saved.text).unwrap();
    let w = Witness::new(&path);
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let d = Daemon::start(&dir, "second", &["-c", p, "--save-config", p]);
    let mut names: Vec<String> = d
        .call("bdev_get_bdevs", Value::Null)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["Crypt0", "Malloc0", "Null0"]);
    let s = d.call("nvmf_get_subsystems", json!({"nqn": NQN})).unwrap();
    assert_eq!(s[0]["namespaces"][0]["bdev_name"], json!("Crypt0"), "{s}");
    assert_eq!(s[0]["hosts"][0]["nqn"], json!(HOST), "{s}");
    assert_eq!(s[0]["allow_any_host"], json!(false), "{s}");
    assert_eq!(
        s[0]["listen_addresses"][0]["trsvcid"],
        json!(port.to_string()),
        "{s}"
    );
    TcpStream::connect_timeout(&loopback(port), Duration::from_secs(5)).unwrap();
    // Replayed, then written once: the same document, in a new file.
    let again = assert_kept(&d, &path, "restart");
    assert!(w.replaced(), "the replay was not saved");
    assert_eq!(serde_json::from_str::<Value>(&again.text).unwrap(), before);
    // And the restarted daemon keeps it too.
    change(
        &d,
        &path,
        "nvmf_subsystem_remove_host",
        json!({"nqn": NQN, "host": HOST}),
    );
    d.stop();
}

/// Writes `req` (no id: no answer comes) and closes the connection.
fn rpc_notify(sock: &Path, req: &Value) {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.write_all(req.to_string().as_bytes()).unwrap();
}

#[test]
fn a_replay_that_fails_part_way_leaves_the_file_as_it_was() {
    let dir = Scratch::new("failed-replay");
    let cfg = json!({"subsystems": [
        {"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params":
                {"name": "Malloc0", "num_blocks": 2048, "block_size": 512}},
        ]},
        {"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_subsystem", "params": {"nqn": NQN, "allow_any_host": true}},
            {"method": "nvmf_subsystem_add_ns", "params": {"nqn": NQN,
                "namespace": {"bdev_name": "NoSuchBdev"}}},
        ]},
    ]});
    let path = dir.config("config.json", &cfg);
    let p = path.to_str().unwrap();
    let before = on_disk(&path);
    let w = Witness::new(&path);
    let sock = dir.path("d.sock");
    let mut d = Daemon::spawn(&dir, "d", &sock, &["-c", p, "--save-config", p]);
    let st = d.wait(LIMIT);
    assert_eq!(st.code(), Some(1), "{}", d.log());
    let log = d.log();
    assert!(log.contains("NoSuchBdev"), "{log}");
    assert!(
        log.contains("saved configuration is kept as it was"),
        "{log}"
    );
    assert!(!w.replaced(), "the failed replay wrote the file");
    assert_eq!(on_disk(&path), before);
    assert!(!dir.path("config.json.tmp").exists());
}

#[test]
fn paths_that_cannot_be_kept_are_refused_at_start() {
    let dir = Scratch::new("refused");
    std::fs::create_dir(dir.path("a-dir")).unwrap();
    for (path, why) in [
        (
            dir.path("no-such-dir/config.json"),
            "No such file or directory",
        ),
        (dir.path("a-dir"), "Is a directory"),
        // Not even root creates a file in /proc.
        (
            "/proc/ballast-config.json".into(),
            "cannot create a file beside it",
        ),
    ] {
        let port = free_port();
        let l = format!("127.0.0.1:{port}");
        let sock = dir.path("d.sock");
        let p = path.to_str().unwrap();
        let args = ["-l", &l, "--default-size-mib", "8", "--save-config", p];
        let d = Daemon::spawn(&dir, "d", &sock, &args);
        let err = expect_fast_failure(d, port, Duration::from_secs(3));
        assert!(
            err.contains(&format!("ballastd: --save-config {p}: ")) && err.contains(why),
            "{p}: {err}"
        );
        assert!(!sock.exists(), "{p}: the daemon got as far as its socket");
    }
}

#[test]
fn a_write_that_fails_is_logged_and_the_call_still_succeeds() {
    let dir = Scratch::new("write-fails");
    let path = dir.path("config.json");
    let p = path.to_str().unwrap();
    let d = Daemon::start(&dir, "d", &["--default-size-mib", "0", "--save-config", p]);
    assert_kept(&d, &path, "start");
    // A non-empty directory where the file was: the rename over it fails.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("x"), "").unwrap();
    d.call(
        "bdev_null_create",
        json!({"name": "Null0", "num_blocks": 64, "block_size": 512}),
    )
    .unwrap();
    let log = d.log();
    assert!(
        log.contains("configuration not saved") && log.contains(p) && log.contains("errno="),
        "{log}"
    );
    assert!(!dir.path("config.json.tmp").exists());
    // Once the path can be written again, the next change saves everything.
    std::fs::remove_dir_all(&path).unwrap();
    d.call(
        "bdev_null_create",
        json!({"name": "Null1", "num_blocks": 64, "block_size": 512}),
    )
    .unwrap();
    assert_kept(&d, &path, "rewritten");
    assert!(on_disk(&path).text.contains("\"Null0\""));
    d.stop();
}

#[test]
fn a_burst_of_changes_is_saved_in_few_writes() {
    let dir = Scratch::new("burst");
    let path = dir.path("config.json");
    let p = path.to_str().unwrap();
    let d = Daemon::start(&dir, "d", &["--default-size-mib", "0", "--save-config", p]);
    d.call("log_set_print_level", json!({"level": "DEBUG"}))
        .unwrap();
    let saves = |d: &Daemon| d.log().matches("configuration saved").count();
    let base = saves(&d);
    // 32 creates written at once on one connection: queued together, saved together.
    const N: usize = 32;
    let reqs: String = (0..N)
        .map(|i| {
            json!({"jsonrpc": "2.0", "id": i, "method": "bdev_null_create",
                "params": {"name": format!("Null{i}"), "num_blocks": 64, "block_size": 512}})
            .to_string()
        })
        .collect();
    let answers = rpc_many(&d.sock, &reqs, N);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a["id"], json!(i), "answers out of order: {answers:?}");
        assert!(a.get("result").is_some(), "{a}");
    }
    let writes = saves(&d) - base;
    assert!(
        (1..=N / 4).contains(&writes),
        "{writes} writes for {N} changes"
    );
    let kept: Value = serde_json::from_str(&on_disk(&path).text).unwrap();
    assert_eq!(kept, d.call("save_config", Value::Null).unwrap());
    d.stop();
}

/// Writes `reqs` (JSON values back to back) on one connection and reads `n` answers.
fn rpc_many(sock: &Path, reqs: &str, n: usize) -> Vec<Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(reqs.as_bytes()).unwrap();
    BufReader::new(&s)
        .lines()
        .take(n)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}
