//! Scaffolding of the daemon tests: a scratch directory, a ballastd child process (killed on
//! drop) with a blocking JSON-RPC client, free ports on 127.0.0.1, and the check that a
//! daemon fails fast before it listens.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a daemon may take to come up or to go.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A scratch directory (config, RPC socket, logs); kept if the test fails.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{}-{name}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }

    /// Writes `config` to `name` and returns its path.
    pub fn config(&self, name: &str, config: &Value) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let test = env!("CARGO_CRATE_NAME");
            eprintln!("{test} test: files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A ballastd child; killed (SIGKILL) when dropped, so a failing test leaves none behind.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    pub sock: PathBuf,
}

impl Daemon {
    /// Spawns ballastd (one reactor, unpinned) with `-r sock` and `args`; stderr goes to `log`.
    pub fn spawn(dir: &Scratch, name: &str, sock: &Path, args: &[&str]) -> Daemon {
        let log = dir.path(&format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_ballastd"))
            .args(["-m", "0x1", "--no-pin", "-r"])
            .arg(sock)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ballastd");
        Daemon {
            child,
            log,
            sock: sock.to_path_buf(),
        }
    }

    /// Spawns ballastd and waits until it answers JSON-RPC.
    pub fn start(dir: &Scratch, name: &str, args: &[&str]) -> Daemon {
        let sock = dir.path(&format!("{name}.sock"));
        let mut d = Daemon::spawn(dir, name, &sock, args);
        let t = Instant::now();
        loop {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("ballastd exited ({st}) before serving:\n{}", d.log());
            }
            if UnixStream::connect(&d.sock).is_ok() {
                break;
            }
            assert!(t.elapsed() < LIMIT, "ballastd never served:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        // Bound is not yet served: the first answer says it is up.
        d.call("framework_wait_init", Value::Null).unwrap();
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One JSON-RPC call on a fresh connection: the result, or (code, message).
    pub fn call(&self, method: &str, params: Value) -> Result<Value, (i64, String)> {
        let mut req = json!({"jsonrpc": "2.0", "id": 1, "method": method});
        if !params.is_null() {
            req["params"] = params;
        }
        let r = rpc(&self.sock, &req);
        match r.get("error") {
            Some(e) => Err((
                e["code"].as_i64().unwrap(),
                e["message"].as_str().unwrap().to_string(),
            )),
            None => Ok(r["result"].clone()),
        }
    }

    /// Waits for the daemon to exit, up to `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                t.elapsed() < limit,
                "ballastd still running after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM; the daemon must shut down in order and exit 0.
    pub fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a valid signal on our own child, not yet reaped (wait() has not
        // returned for it), so the pid cannot have been reused.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let st = self.wait(LIMIT);
        assert!(st.success(), "ballastd exited with {st}:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `req` to the Unix socket at `path` and reads one newline-terminated JSON value.
pub fn rpc(path: &Path, req: &Value) -> Value {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(req.to_string().as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// Runs a daemon that must fail to start: it has to exit non-zero within `limit`, and its
/// NVMe/TCP port must never accept, neither while it runs nor after. Returns its stderr.
pub fn expect_fast_failure(mut d: Daemon, port: u16, limit: Duration) -> String {
    let t = Instant::now();
    let st = loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            TcpStream::connect_timeout(&loopback(port), Duration::from_millis(100)).is_err(),
            "the failing daemon accepted an NVMe/TCP connection:\n{}",
            d.log()
        );
        assert!(
            t.elapsed() < limit,
            "ballastd took over {limit:?} to fail:\n{}",
            d.log()
        );
        // Often: a listener that opens and closes again quickly must not slip through.
        std::thread::sleep(Duration::from_micros(200));
    };
    let took = t.elapsed();
    assert!(!st.success(), "ballastd succeeded:\n{}", d.log());
    assert_eq!(st.code(), Some(1), "{}", d.log());
    assert!(took < limit, "took {took:?}");
    assert!(TcpStream::connect_timeout(&loopback(port), Duration::from_millis(200)).is_err());
    // The probes above can miss a listener that opened and closed between two of them; the
    // log cannot.
    let log = d.log();
    assert!(
        !log.contains("NVMe/TCP listener started"),
        "the failing daemon listened:\n{log}"
    );
    log
}
