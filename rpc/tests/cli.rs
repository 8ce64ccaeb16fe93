//! The `ballast-rpc` binary against a fake JSON-RPC server on a Unix socket (the bytes it sends,
//! how it prints results and errors, and its exit status), and against an in-process daemon
//! (`common::Daemon`) for the methods whose output is the daemon's to make.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{free_port, Daemon};
use serde_json::{json, Deserializer, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ballast-rpc");

/// A private directory for one test's socket, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ballast-rpc-cli-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("rpc.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the fake server does once it has read a whole request.
enum Then {
    /// Writes these chunks, pausing between them.
    Reply(Vec<Vec<u8>>),
    /// Closes the connection.
    Close,
    /// Keeps the connection open, says nothing, until the client hangs up.
    Stall,
}

/// A one-connection JSON-RPC server on its own thread; `request()` gives what it read.
struct FakeServer {
    dir: TempDir,
    thread: Option<JoinHandle<Vec<u8>>>,
}

impl FakeServer {
    fn start(then: Then) -> Self {
        let dir = TempDir::new();
        let listener = UnixListener::bind(dir.socket()).unwrap();
        listener.set_nonblocking(true).unwrap();
        let thread = thread::spawn(move || {
            // A client that exits without connecting (e.g. a usage error) fails the test
            // instead of hanging it.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut conn = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "the client never connected"
                        );
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            };
            conn.set_nonblocking(false).unwrap();
            let request = read_request(&mut conn);
            match then {
                Then::Reply(chunks) => {
                    for (i, chunk) in chunks.iter().enumerate() {
                        if i > 0 {
                            thread::sleep(Duration::from_millis(30));
                        }
                        conn.write_all(chunk).unwrap();
                    }
                }
                Then::Close => {}
                Then::Stall => {
                    let _ = conn.read(&mut [0u8; 1]);
                }
            }
            request
        });
        FakeServer {
            dir,
            thread: Some(thread),
        }
    }

    /// Answers with `response` in one write.
    fn replying(response: Value) -> Self {
        Self::start(Then::Reply(vec![response.to_string().into_bytes()]))
    }

    fn socket(&self) -> PathBuf {
        self.dir.socket()
    }

    /// The raw bytes the client sent.
    fn request_bytes(&mut self) -> Vec<u8> {
        self.thread.take().unwrap().join().unwrap()
    }

    /// The one request the client sent, checked to be one JSON value and a newline.
    fn request(&mut self) -> Value {
        let bytes = self.request_bytes();
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "request not newline-terminated: {bytes:?}"
        );
        let mut values = Deserializer::from_slice(&bytes).into_iter::<Value>();
        let request = values.next().unwrap().unwrap();
        assert!(
            values.next().is_none(),
            "more than one value in {:?}",
            String::from_utf8_lossy(&bytes)
        );
        request
    }
}

/// Reads until the buffer holds a complete JSON value followed by the client's newline.
fn read_request(conn: &mut UnixStream) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let complete = match Deserializer::from_slice(&buf).into_iter::<Value>().next() {
            Some(Ok(_)) => buf.ends_with(b"\n"),
            Some(Err(e)) if !e.is_eof() => panic!("client sent invalid JSON: {e}"),
            _ => false,
        };
        if complete {
            return buf;
        }
        let n = conn.read(&mut chunk).expect("client request");
        assert!(
            n > 0,
            "client hung up after {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn run(socket: &Path, args: &[&str]) -> Output {
    run_with_stdin(socket, args, "")
}

fn run_with_stdin(socket: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn ok(result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "result": result})
}

#[test]
fn malloc_create_sends_spdk_params_and_prints_the_name_bare() {
    let mut server = FakeServer::replying(ok(json!("Malloc0")));
    let out = run(
        &server.socket(),
        &["bdev_malloc_create", "-b", "Malloc0", "64", "512"],
    );
    assert_eq!(
        server.request(),
        json!({"jsonrpc": "2.0", "id": 1, "method": "bdev_malloc_create",
               "params": {"name": "Malloc0", "num_blocks": 131072, "block_size": 512}})
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Malloc0\n");
    assert_eq!(stderr(&out), "");
}

#[test]
fn method_without_params_sends_no_params_member() {
    let mut server = FakeServer::replying(ok(json!({"version": "ballast v0.1.0"})));
    let out = run(&server.socket(), &["spdk_get_version"]);
    assert_eq!(
        server.request(),
        json!({"jsonrpc": "2.0", "id": 1, "method": "spdk_get_version"})
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn structured_result_is_pretty_json() {
    let bdevs = json!([{"name": "Malloc0", "block_size": 512, "num_blocks": 131072,
                        "uuid": "0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01", "claimed": false}]);
    let mut server = FakeServer::replying(ok(bdevs.clone()));
    let out = run(&server.socket(), &["bdev_get_bdevs", "-b", "Malloc0"]);
    assert_eq!(server.request()["params"], json!({"name": "Malloc0"}));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        serde_json::to_string_pretty(&bdevs).unwrap() + "\n"
    );
}

#[test]
fn true_result_prints_true() {
    let mut server = FakeServer::replying(ok(json!(true)));
    let out = run(
        &server.socket(),
        &[
            "nvmf_subsystem_allow_any_host",
            "nqn.2016-06.io.spdk:cnode1",
            "-d",
        ],
    );
    assert_eq!(
        server.request()["params"],
        json!({"nqn": "nqn.2016-06.io.spdk:cnode1", "allow_any_host": false})
    );
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "true\n")
    );
}

#[test]
fn error_response_goes_to_stderr_with_code_and_data_and_exit_1() {
    let mut server = FakeServer::replying(json!({"jsonrpc": "2.0", "id": 1, "error": {
        "code": -32602,
        "message": "bdev Malloc0 is claimed by subsystem nqn.2016-06.io.spdk:cnode1",
        "data": {"bdev": "Malloc0"}}}));
    let out = run(&server.socket(), &["bdev_malloc_delete", "Malloc0"]);
    assert_eq!(server.request()["params"], json!({"name": "Malloc0"}));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "error: bdev Malloc0 is claimed by subsystem nqn.2016-06.io.spdk:cnode1 (code -32602)\n\
         data: {\n  \"bdev\": \"Malloc0\"\n}\n"
    );
}

#[test]
fn method_not_found_error() {
    let mut server = FakeServer::replying(json!({"jsonrpc": "2.0", "id": 1,
        "error": {"code": -32601, "message": "Method not found"}}));
    let out = run(&server.socket(), &["call", "bdev_frobnicate"]);
    assert_eq!(
        server.request(),
        json!({"jsonrpc": "2.0", "id": 1, "method": "bdev_frobnicate"})
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: Method not found (code -32601)\n");
}

#[test]
fn response_in_pieces_is_reassembled() {
    let response = ok(json!({"subsystems": [{"subsystem": "bdev", "config": []}]})).to_string();
    let bytes = response.as_bytes();
    // Split inside a key, inside a string and right before the final brace.
    let chunks = vec![
        bytes[..5].to_vec(),
        bytes[5..23].to_vec(),
        bytes[23..bytes.len() - 1].to_vec(),
        b"}".to_vec(),
    ];
    let mut server = FakeServer::start(Then::Reply(chunks));
    let out = run(&server.socket(), &["save_config"]);
    assert_eq!(server.request()["method"], "save_config");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        printed,
        json!({"subsystems": [{"subsystem": "bdev", "config": []}]})
    );
}

#[test]
fn missing_socket_names_the_path_and_the_daemon() {
    let dir = TempDir::new();
    let out = run(&dir.socket(), &["spdk_get_version"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: cannot connect to {}: No such file or directory — is ballastd running?\n",
            dir.socket().display()
        )
    );
}

#[test]
fn stale_socket_is_connection_refused() {
    let dir = TempDir::new();
    drop(UnixListener::bind(dir.socket()).unwrap());
    let out = run(&dir.socket(), &["spdk_get_version"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot connect to {}: Connection refused",
            dir.socket().display()
        )),
        "{err}"
    );
    assert!(err.contains("is ballastd running?"), "{err}");
}

#[test]
fn default_socket_is_var_tmp_ballast_sock() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("/var/tmp/ballast.sock"));
}

#[test]
fn connect_retries_wait_for_a_daemon_that_is_starting() {
    let dir = TempDir::new();
    let socket = dir.socket();
    let child = Command::new(BIN)
        .arg("-s")
        .arg(&socket)
        .args(["-r", "25", "framework_wait_init"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let listener = UnixListener::bind(&socket).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let request: Value = serde_json::from_slice(&read_request(&mut conn)).unwrap();
    assert_eq!(request["method"], "framework_wait_init");
    conn.write_all(ok(json!(true)).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn silent_daemon_times_out() {
    let mut server = FakeServer::start(Then::Stall);
    let started = Instant::now();
    let out = run(&server.socket(), &["-t", "0.3", "thread_get_stats"]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "no response from {} within 0.3 s",
            server.socket().display()
        )),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(300), "took {elapsed:?}");
    server.request();
}

#[test]
fn daemon_hanging_up_without_a_response_is_an_error() {
    let mut server = FakeServer::start(Then::Close);
    let out = run(&server.socket(), &["nvmf_get_subsystems"]);
    server.request();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("closed the connection before responding"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn partial_response_then_hang_up_is_an_error() {
    let mut server = FakeServer::start(Then::Reply(vec![
        br#"{"jsonrpc":"2.0","id":1,"res"#.to_vec()
    ]));
    let out = run(&server.socket(), &["nvmf_get_subsystems"]);
    server.request();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("closed the connection before responding in full"),
        "{err}"
    );
}

#[test]
fn kill_instance_tolerates_the_daemon_exiting_before_it_answers() {
    let mut server = FakeServer::start(Then::Close);
    let out = run(&server.socket(), &["spdk_kill_instance", "SIGTERM"]);
    assert_eq!(
        server.request(),
        json!({"jsonrpc": "2.0", "id": 1, "method": "spdk_kill_instance",
               "params": {"sig_name": "SIGTERM"}})
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn garbage_response_is_an_error() {
    let mut server = FakeServer::start(Then::Reply(vec![
        b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()
    ]));
    let out = run(&server.socket(), &["rpc_get_methods"]);
    server.request();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!(
        "invalid response from {}",
        server.socket().display()
    )));
}

#[test]
fn response_to_another_id_is_an_error() {
    let mut server = FakeServer::replying(json!({"jsonrpc": "2.0", "id": 2, "result": true}));
    let out = run(&server.socket(), &["rpc_get_methods"]);
    server.request();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("response for request id 2, but ours is 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn load_config_sends_stdin_as_params() {
    let config = json!({"subsystems": [
        {"subsystem": "bdev", "config": [{"method": "bdev_malloc_create",
            "params": {"name": "Malloc0", "num_blocks": 2048, "block_size": 512}}]},
        {"subsystem": "nvmf", "config": [{"method": "nvmf_create_transport",
            "params": {"trtype": "TCP"}}]}]});
    let mut server = FakeServer::replying(ok(json!(true)));
    let out = run_with_stdin(
        &server.socket(),
        &["load_config"],
        &serde_json::to_string_pretty(&config).unwrap(),
    );
    assert_eq!(
        server.request(),
        json!({"jsonrpc": "2.0", "id": 1, "method": "load_config", "params": config})
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn load_config_with_empty_stdin_does_not_connect() {
    let dir = TempDir::new();
    let out = run(&dir.socket(), &["load_config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("stdin was empty"), "{}", stderr(&out));
}

#[test]
fn raw_call_with_inline_and_stdin_params() {
    let mut server = FakeServer::replying(ok(json!([])));
    let out = run(
        &server.socket(),
        &["call", "nvmf_get_subsystems", r#"{"nqn":"nqn.x"}"#],
    );
    assert_eq!(
        server.request(),
        json!({"jsonrpc": "2.0", "id": 1, "method": "nvmf_get_subsystems",
               "params": {"nqn": "nqn.x"}})
    );
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "[]\n")
    );

    let mut server = FakeServer::replying(ok(json!({})));
    let out = run_with_stdin(
        &server.socket(),
        &["call", "bdev_get_iostat", "-"],
        "{\"name\": \"Null0\"}\n",
    );
    assert_eq!(server.request()["params"], json!({"name": "Null0"}));
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "{}\n")
    );
}

#[test]
fn raw_call_with_invalid_json_does_not_connect() {
    let dir = TempDir::new();
    let out = run(
        &dir.socket(),
        &["call", "bdev_get_bdevs", "{name: Malloc0}"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: invalid JSON in params"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn listener_params_nest_under_listen_address() {
    let mut server = FakeServer::replying(ok(json!(true)));
    let out = run(
        &server.socket(),
        &[
            "nvmf_subsystem_add_listener",
            "nqn.2016-06.io.spdk:cnode1",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            "4420",
            "-f",
            "ipv4",
        ],
    );
    assert_eq!(
        server.request()["params"],
        json!({"nqn": "nqn.2016-06.io.spdk:cnode1",
               "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "4420",
                                  "adrfam": "ipv4"}})
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn verbose_traces_request_and_response_on_stderr() {
    let mut server = FakeServer::replying(ok(json!(true)));
    let out = run(
        &server.socket(),
        &["-v", "nvmf_subsystem_remove_ns", "nqn.x", "1"],
    );
    let sent = String::from_utf8(server.request_bytes()).unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains(&format!("request: {sent}")), "{err}");
    assert!(
        err.contains(r#"response: {"id":1,"jsonrpc":"2.0","result":true}"#),
        "{err}"
    );
    assert_eq!(stdout(&out), "true\n");
}

#[test]
fn usage_errors_exit_2_without_connecting() {
    let dir = TempDir::new();
    for args in [
        &["bdev_malloc_create", "64"][..],
        &["no_such_method"],
        &["nvmf_subsystem_add_listener", "nqn.x"],
    ] {
        let out = run(&dir.socket(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            !stderr(&out).contains("cannot connect"),
            "{args:?} tried to connect"
        );
    }
}

#[test]
fn each_method_has_help() {
    let out = Command::new(BIN)
        .args(["nvmf_subsystem_add_ns", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for expected in [
        "<NQN>",
        "<BDEV_NAME>",
        "--nsid",
        "--uuid",
        "--nguid",
        "--eui64",
    ] {
        assert!(help.contains(expected), "{expected} missing from:\n{help}");
    }
    let top = Command::new(BIN).arg("--help").output().unwrap();
    for method in [
        "bdev_malloc_create",
        "nvmf_create_transport",
        "load_config",
        "call",
    ] {
        assert!(
            stdout(&top).contains(method),
            "{method} missing from top-level help"
        );
    }
}

/// A saved config as the daemon returns it: it holds key material.
fn config_with_a_key() -> Value {
    json!({"subsystems": [
        {"subsystem": "accel", "config": [{"method": "accel_crypto_key_create",
            "params": {"name": "k0", "cipher": "AES_XTS", "key": "00112233", "key2": "44556677"}}]},
        {"subsystem": "bdev", "config": []}]})
}

/// A file in `dir` with `text` and mode `mode` (set explicitly: the umask does not matter).
fn file_with_mode(dir: &TempDir, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.0.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn save_config_output_file_is_private_even_if_it_existed_wider() {
    let config = config_with_a_key();
    let expected = serde_json::to_string_pretty(&config).unwrap() + "\n";
    let dir = TempDir::new();
    // An existing 0644 file, longer than the config: made 0600, old content gone.
    let old = file_with_mode(&dir, "old.json", &"x".repeat(expected.len() * 2), 0o644);
    let new = dir.0.join("new.json");
    for (path, flag) in [(&old, "-o"), (&new, "--output")] {
        let mut server = FakeServer::replying(ok(config.clone()));
        let out = run(
            &server.socket(),
            &["save_config", flag, path.to_str().unwrap()],
        );
        assert_eq!(server.request()["method"], json!("save_config"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "", "the config goes to the file only");
        assert_eq!(std::fs::read_to_string(path).unwrap(), expected);
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
}

#[test]
fn save_config_output_file_is_untouched_when_the_call_fails() {
    let dir = TempDir::new();
    let path = file_with_mode(&dir, "keep.json", "previous", 0o644);
    let mut server = FakeServer::replying(json!({"jsonrpc": "2.0", "id": 1,
        "error": {"code": -32603, "message": "boom"}}));
    let out = run(
        &server.socket(),
        &["save_config", "-o", path.to_str().unwrap()],
    );
    server.request();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "previous");
}

/// Runs the client with stdout redirected to `file`, as `ballast-rpc ARGS > file` does.
fn run_to_file(socket: &Path, args: &[&str], file: &Path) -> Output {
    let stdout = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(file)
        .unwrap();
    Command::new(BIN)
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn save_config_redirected_to_a_file_makes_it_private() {
    let config = config_with_a_key();
    let dir = TempDir::new();
    // What `> cfg.json` gives with a 022 umask.
    let path = file_with_mode(&dir, "cfg.json", "", 0o644);
    let mut server = FakeServer::replying(ok(config.clone()));
    let out = run_to_file(&server.socket(), &["save_config"], &path);
    server.request();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        serde_json::to_string_pretty(&config).unwrap() + "\n"
    );
    assert_eq!(mode(&path), 0o600);
    // Other methods leave a redirect's mode alone.
    let other = file_with_mode(&dir, "bdevs.json", "", 0o644);
    let mut server = FakeServer::replying(ok(json!([])));
    let out = run_to_file(&server.socket(), &["bdev_get_bdevs"], &other);
    server.request();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(mode(&other), 0o644);
}

#[test]
fn compress_create_sends_spdk_params() {
    let mut server = FakeServer::replying(ok(json!("COMP_Malloc0")));
    let out = run(
        &server.socket(),
        &[
            "bdev_compress_create",
            "-b",
            "Malloc0",
            "-a",
            "zstd",
            "-L",
            "3",
            "--chunk-size",
            "32768",
            "-l",
            "4096",
        ],
    );
    assert_eq!(
        server.request()["params"],
        json!({"base_bdev_name": "Malloc0", "algorithm": "zstd", "level": 3,
               "chunk_size": 32768})
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "COMP_Malloc0\n");
}

// ---- Against an in-process daemon ----

/// Malloc bdevs share one process-wide backing budget: a test that overcommits it takes this
/// for writing, so that no other test's malloc create runs (and is refused) meanwhile; tests
/// that create malloc bdevs take it for reading.
static MALLOC_BUDGET: RwLock<()> = RwLock::new(());

fn malloc_budget() -> RwLockReadGuard<'static, ()> {
    MALLOC_BUDGET.read().unwrap_or_else(|e| e.into_inner())
}

/// Runs the client against daemon `d` and returns its stdout, asserting exit status 0 and
/// nothing on stderr.
fn ok_out(d: &Daemon, args: &[&str]) -> String {
    let out = run(&d.path, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stderr(&out), "", "{args:?}");
    stdout(&out)
}

/// Runs the client against daemon `d` and returns its stdout as JSON.
fn ok_json(d: &Daemon, args: &[&str]) -> Value {
    let text = ok_out(d, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} printed {text:?}: {e}"))
}

/// Runs the client against daemon `d`, asserting exit status 1 and nothing on stdout; returns
/// stderr.
fn err_out(d: &Daemon, args: &[&str]) -> String {
    let out = run(&d.path, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
    assert_eq!(stdout(&out), "", "{args:?}");
    stderr(&out)
}

#[test]
fn log_set_print_level_then_get_prints_it() {
    let d = Daemon::new();
    assert_eq!(ok_out(&d, &["log_set_print_level", "DEBUG"]), "true\n");
    assert_eq!(ok_out(&d, &["log_get_print_level"]), "DEBUG\n");
    // SPDK's names in any case; the daemon answers with its own spelling.
    assert_eq!(ok_out(&d, &["log_set_print_level", "warning"]), "true\n");
    assert_eq!(ok_out(&d, &["log_get_print_level"]), "WARNING\n");
    let err = err_out(&d, &["log_set_print_level", "LOUD"]);
    assert!(
        err.starts_with("error: Invalid parameters: level LOUD is not one of DISABLED, ERROR"),
        "{err}"
    );
    assert_eq!(ok_out(&d, &["log_get_print_level"]), "WARNING\n");
    ok_out(&d, &["log_set_print_level", "NOTICE"]);
}

#[test]
fn framework_get_subsystems_and_get_config() {
    let _budget = malloc_budget();
    let d = Daemon::new();
    assert_eq!(
        ok_json(&d, &["framework_get_subsystems"]),
        json!([{"subsystem": "accel", "depends_on": []},
               {"subsystem": "bdev", "depends_on": ["accel"]},
               {"subsystem": "nvmf", "depends_on": ["bdev"]}])
    );
    let name = d.name("Cfg0");
    let uuid = "0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01";
    let created = ok_out(
        &d,
        &["bdev_malloc_create", "-b", &name, "-u", uuid, "1", "512"],
    );
    assert_eq!(created, format!("{name}\n"));
    let config = ok_json(&d, &["framework_get_config", "bdev"]);
    let entries = config.as_array().expect("an array of config entries");
    assert!(
        entries.contains(&json!({"method": "bdev_malloc_create",
            "params": {"name": name, "num_blocks": 2048, "block_size": 512, "uuid": uuid}})),
        "no malloc entry for {name} in {config:#}"
    );
    assert!(
        ok_json(&d, &["framework_get_config", "nvmf"]).is_array(),
        "nvmf config"
    );
    let err = err_out(&d, &["framework_get_config", "scsi"]);
    assert!(
        err.contains("subsystem scsi not found (ballast has accel, bdev, nvmf)"),
        "{err}"
    );
}

#[test]
fn bdev_wait_for_examine_returns_at_once() {
    let d = Daemon::new();
    assert_eq!(ok_out(&d, &["bdev_wait_for_examine"]), "true\n");
}

#[test]
fn nvmf_get_stats_has_a_poll_group_per_reactor() {
    let d = Daemon::new();
    let stats = ok_json(&d, &["nvmf_get_stats"]);
    assert_eq!(stats["tick_rate"], json!(1_000_000_000u64));
    let groups = stats["poll_groups"].as_array().expect("poll_groups");
    // The test daemon runs two reactors.
    assert_eq!(groups.len(), 2, "{stats:#}");
    assert_eq!(groups[0]["name"], json!("nvmf_tgt_poll_group_000"));
    for g in groups {
        assert!(g["current_admin_qpairs"].is_u64(), "{g}");
        assert!(g["current_io_qpairs"].is_u64(), "{g}");
    }
}

#[test]
fn iobuf_get_stats_has_the_pools_of_each_reactor() {
    let d = Daemon::new();
    let stats = ok_json(&d, &["iobuf_get_stats"]);
    let pools = stats.as_array().expect("an array");
    assert_eq!(pools.len(), 2, "{stats:#}");
    for p in pools {
        assert!(p["module"].is_string(), "{p}");
        assert!(p["classes"].is_array(), "{p}");
    }
}

#[test]
fn sock_impl_get_options_knows_posix_only() {
    let d = Daemon::new();
    let opts = ok_json(&d, &["sock_impl_get_options", "-i", "posix"]);
    assert_eq!(
        opts["enable_zerocopy_send_server"],
        json!(false),
        "{opts:#}"
    );
    assert_eq!(opts["tls_version"], json!(0), "{opts:#}");
    let err = err_out(&d, &["sock_impl_get_options", "--impl", "uring"]);
    assert!(err.contains("impl_name uring is not supported"), "{err}");
}

#[test]
fn bdev_nvme_controllers_over_the_cli() {
    let _budget = malloc_budget();
    let d = Daemon::new();
    // Nothing else in this test binary attaches controllers (they are process-wide).
    assert_eq!(ok_out(&d, &["bdev_nvme_get_controllers"]), "[]\n");

    let nqn = d.nqn("cli-remote");
    let closed = free_port().to_string();
    let name = d.name("Nvme");
    let err = err_out(
        &d,
        &[
            "bdev_nvme_attach_controller",
            "-b",
            &name,
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &closed,
            "-f",
            "ipv4",
            "-n",
            &nqn,
        ],
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");
    assert_eq!(ok_out(&d, &["bdev_nvme_get_controllers"]), "[]\n");

    // Loop back to the daemon's own target.
    let base = d.name("RM0");
    ok_out(&d, &["bdev_malloc_create", "-b", &base, "2", "512"]);
    ok_out(&d, &["nvmf_create_subsystem", &nqn, "-a"]);
    ok_out(&d, &["nvmf_subsystem_add_ns", &nqn, &base]);
    let port = free_port().to_string();
    ok_out(
        &d,
        &[
            "nvmf_subsystem_add_listener",
            &nqn,
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &port,
        ],
    );
    let attached = ok_out(
        &d,
        &[
            "bdev_nvme_attach_controller",
            "-b",
            &name,
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &port,
            "-n",
            &nqn,
            "-l",
            "-1",
            "-o",
            "1",
            "--num-io-queues",
            "1",
        ],
    );
    assert_eq!(attached, format!("{name}n1\n"), "rpc.py's print_array");
    let ctrls = ok_json(&d, &["bdev_nvme_get_controllers", "-n", &name]);
    assert_eq!(ctrls[0]["name"], json!(name), "{ctrls:#}");
    assert_eq!(ctrls[0]["bdevs"], json!([format!("{name}n1")]), "{ctrls:#}");
    let trid = &ctrls[0]["ctrlrs"][0]["trid"];
    assert_eq!(trid["trsvcid"], json!(port), "{ctrls:#}");
    assert_eq!(trid["subnqn"], json!(nqn), "{ctrls:#}");
    assert_eq!(trid["num_io_queues"], json!(1), "{ctrls:#}");
    let bdev = ok_json(&d, &["bdev_get_bdevs", "-b", &format!("{name}n1")]);
    assert_eq!(bdev[0]["num_blocks"], json!(4096), "{bdev:#}");

    // Detaching by a path that is not the controller's is refused.
    let err = err_out(&d, &["bdev_nvme_detach_controller", &name, "-s", &closed]);
    assert!(err.contains("has no path with trsvcid"), "{err}");
    assert_eq!(
        ok_out(
            &d,
            &[
                "bdev_nvme_detach_controller",
                &name,
                "-t",
                "tcp",
                "-s",
                &port
            ]
        ),
        "true\n"
    );
    assert_eq!(ok_out(&d, &["bdev_nvme_get_controllers"]), "[]\n");
    let err = err_out(&d, &["bdev_nvme_get_controllers", "-n", &name]);
    assert!(
        err.contains(&format!("controller {name} not found")),
        "{err}"
    );
}

/// Physical memory in MiB, as /proc/meminfo gives it.
fn mem_total_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib / 1024
}

#[test]
fn malloc_create_overcommit_makes_a_disk_larger_than_ram() {
    let _budget = MALLOC_BUDGET.write().unwrap_or_else(|e| e.into_inner());
    let d = Daemon::new();
    let name = d.name("Big0");
    let size = (2 * mem_total_mib()).to_string();
    let err = err_out(&d, &["bdev_malloc_create", "-b", &name, &size, "4096"]);
    assert!(err.contains("pass overcommit to create it anyway"), "{err}");
    assert_eq!(
        ok_out(
            &d,
            &[
                "bdev_malloc_create",
                "-b",
                &name,
                "--overcommit",
                &size,
                "4096"
            ]
        ),
        format!("{name}\n")
    );
    let bdev = ok_json(&d, &["bdev_get_bdevs", "-b", &name]);
    let blocks = 2 * mem_total_mib() * 256;
    assert_eq!(bdev[0]["num_blocks"], json!(blocks), "{bdev:#}");
    // Saved with the flag, so a replayed config creates it again.
    let cfg = ok_json(&d, &["save_config"]);
    let saved = common::sub(&cfg, "bdev")["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["params"]["name"] == json!(name))
        .cloned()
        .expect("saved");
    assert_eq!(saved["params"]["overcommit"], json!(true), "{saved}");
    assert_eq!(ok_out(&d, &["bdev_malloc_delete", &name]), "true\n");

    // rpc.py's -p: ballast's physical block is the data block.
    let small = d.name("Pbs0");
    assert_eq!(
        ok_out(
            &d,
            &["bdev_malloc_create", "-b", &small, "-p", "512", "1", "512"]
        ),
        format!("{small}\n")
    );
    let err = err_out(
        &d,
        &[
            "bdev_malloc_create",
            "-b",
            &d.name("Pbs1"),
            "-p",
            "4096",
            "1",
            "512",
        ],
    );
    assert!(
        err.contains("physical_block_size 4096 is not supported by ballast"),
        "{err}"
    );
}

#[test]
fn accel_crypto_key_create_help_shows_its_required_flags_as_required() {
    let out = Command::new(BIN)
        .args(["accel_crypto_key_create", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    let usage = help
        .lines()
        .find(|l| l.starts_with("Usage: "))
        .expect("a usage line");
    for flag in [
        "--cipher <CIPHER>",
        "--key <KEY>",
        "--key2 <KEY2>",
        "--name <NAME>",
    ] {
        assert!(usage.contains(flag), "{flag} missing from {usage:?}");
        assert!(
            !usage.contains(&format!("[{flag}]")),
            "{flag} shown as optional in {usage:?}"
        );
    }
    // The optional one is not in the usage line; in the option list, only the required ones
    // say "[required]".
    assert!(!usage.contains("--tweak-mode"), "{usage:?}");
    for (flag, required) in [
        ("-c, --cipher", true),
        ("-k, --key ", true),
        ("-e, --key2", true),
        ("-n, --name", true),
        ("-t, --tweak-mode", false),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("no {flag} line in:\n{help}"));
        assert_eq!(line.ends_with("[required]"), required, "{line:?}");
    }
}
