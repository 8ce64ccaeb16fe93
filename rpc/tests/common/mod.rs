//! Test scaffolding for the JSON-RPC server: an in-process daemon (reactors, target, RPC
//! socket) whose bdevs and subsystems carry a per-test prefix and are removed on drop, and a
//! blocking JSON-RPC client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_nvme::target::{Target, TransportOpts};
use ballast_reactor::{Runtime, RuntimeConfig};
use ballast_rpc::{Context, RpcServer};
use serde_json::{json, Value};

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub struct Daemon {
    _rt: Runtime,
    pub ctx: Arc<Context>,
    server: Option<RpcServer>,
    pub path: PathBuf,
    pub prefix: String,
}

impl Daemon {
    pub fn new() -> Self {
        let rt = Runtime::start(RuntimeConfig {
            cores: vec![0, 1],
            pin: false,
            ..Default::default()
        })
        .unwrap();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let path = PathBuf::from(format!("/tmp/ballast-rpc-test-{pid}-{n}.sock"));
        let target = Target::new(rt.handle(), TransportOpts::default()).unwrap();
        let ctx = Context::new(rt.handle(), target, Arc::new(AtomicBool::new(false)));
        let server = RpcServer::start(ctx.clone(), &path).unwrap();
        Daemon {
            _rt: rt,
            ctx,
            server: Some(server),
            path,
            prefix: format!("t{pid}x{n}"),
        }
    }

    /// A bdev name unique to this test.
    pub fn name(&self, s: &str) -> String {
        format!("{}{s}", self.prefix)
    }

    pub fn nqn(&self, s: &str) -> String {
        format!("nqn.2026-11.io.ballast:{}-{s}", self.prefix)
    }

    pub fn client(&self) -> Client {
        let s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { s, id: 0 }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let t = &self.ctx.target;
        for s in t.subsystems() {
            if s.nqn.contains(&self.prefix) {
                let _ = t.delete_subsystem(&s.nqn);
            }
        }
        for b in ballast_engine::bdev::list() {
            if b.name().starts_with(&self.prefix) {
                let _ = ballast_engine::bdev::delete(b.name());
            }
        }
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

pub struct Client {
    pub s: UnixStream,
    pub id: u64,
}

impl Client {
    pub fn send_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Reads one newline-terminated response.
    pub fn recv(&mut self) -> Value {
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        loop {
            let n = self.s.read(&mut b).unwrap();
            assert!(n > 0, "connection closed before a response");
            if b[0] == b'\n' {
                break;
            }
            buf.push(b[0]);
        }
        serde_json::from_slice(&buf).unwrap()
    }

    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, (i64, String)> {
        self.id += 1;
        let mut req = json!({"jsonrpc": "2.0", "id": self.id, "method": method});
        if !params.is_null() {
            req["params"] = params;
        }
        self.send_raw(req.to_string().as_bytes());
        let r = self.recv();
        assert_eq!(r["id"], json!(self.id));
        if let Some(e) = r.get("error") {
            return Err((
                e["code"].as_i64().unwrap(),
                e["message"].as_str().unwrap().to_string(),
            ));
        }
        Ok(r["result"].clone())
    }

    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {e:?}"))
    }

    /// Creates malloc bdev `name` (must succeed).
    pub fn malloc(&mut self, name: &str, num_blocks: u64, block_size: u32) {
        self.ok(
            "bdev_malloc_create",
            json!({"name": name, "num_blocks": num_blocks, "block_size": block_size}),
        );
    }

    pub fn err(&mut self, method: &str, params: Value) -> (i64, String) {
        match self.call(method, params) {
            Ok(v) => panic!("{method} should fail, returned {v}"),
            Err(e) => e,
        }
    }
}

/// A free loopback TCP port (bind, read, drop).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("condition not reached");
}

/// The config of subsystem `name` in a save_config document.
pub fn sub<'a>(cfg: &'a Value, name: &str) -> &'a Value {
    cfg["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == name)
        .unwrap_or_else(|| panic!("no {name} subsystem in {cfg}"))
}
