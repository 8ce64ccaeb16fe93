//! The Unix-socket JSON-RPC server: a poller on the main reactor does all socket I/O and
//! framing; a control thread executes the methods.
//!
//! Framing follows SPDK: requests are JSON values written back to back on the stream (no
//! delimiter needed); each response is one JSON value followed by a newline. A value that
//! cannot be parsed gets a -32700 response and the connection is closed (the stream cannot be
//! resynchronised); other connections are unaffected.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ballast_reactor::{PollStatus, RuntimeHandle};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde_json::{json, Value};

use crate::config_file::ConfigFile;
use crate::error::{Error, RpcError, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR};
use crate::methods::{ConfigEffect, Context};

/// Shortest gap between two looks for new RPC clients.
const ACCEPT_INTERVAL: Duration = Duration::from_micros(500);
/// Largest request accepted (bytes of one JSON value).
pub const MAX_REQUEST: usize = 16 << 20;
/// Most simultaneous client connections.
pub const MAX_CLIENTS: usize = 64;
/// Requests queued for the control thread.
const QUEUE: usize = 256;

/// A running RPC server. Dropping it does not stop it; call [`RpcServer::stop`].
pub struct RpcServer {
    path: PathBuf,
    rt: RuntimeHandle,
    poller: Option<ballast_reactor::PollerHandle>,
    worker: Option<std::thread::JoinHandle<()>>,
    req_tx: Option<Sender<Job>>,
}

struct Job {
    conn: u64,
    req: Value,
}

struct Conn {
    id: u64,
    s: UnixStream,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Responses not yet produced by the worker.
    pending: usize,
    /// Close once the output is flushed.
    closing: bool,
    eof: bool,
}

/// An RPC socket bound (and listening: clients that connect wait in the backlog) but not yet
/// served. Lets a daemon claim its socket before it does anything else, and serve it once it
/// is ready. Dropping it unserved closes the socket and removes the socket file.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    /// `None` once handed to the server.
    l: Option<UnixListener>,
    /// Device and inode of the socket file we created, so that dropping an unserved socket
    /// never removes a file someone else put at `path` since.
    file_id: Option<(u64, u64)>,
    /// Where the configuration is kept as it changes ([`BoundSocket::keep_config`]).
    keep: Option<ConfigFile>,
}

impl RpcServer {
    /// Binds `path` (replacing a stale socket, refusing a live one) and starts serving on the
    /// main reactor of `ctx.rt`: [`RpcServer::bind`] then [`BoundSocket::serve`].
    pub fn start(ctx: Arc<Context>, path: &Path) -> Result<RpcServer, Error> {
        Self::bind(path)?.serve(ctx)
    }

    /// Binds and listens on `path` without serving yet. A socket file that a live process
    /// answers on is refused ([`Error::SocketInUse`]); one nobody answers on (left by a daemon
    /// that died) is replaced. The socket is made owner-only (0600).
    pub fn bind(path: &Path) -> Result<BoundSocket, Error> {
        use std::os::unix::fs::MetadataExt;
        let p = path.display().to_string();
        let io = |op, source| Error::Io {
            op,
            path: p.clone(),
            source,
        };
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::SocketInUse(p));
            }
            std::fs::remove_file(path).map_err(|e| io("removing stale socket", e))?;
            tracing::info!(path = %p, "replaced a stale RPC socket");
        }
        let l = UnixListener::bind(path).map_err(|e| io("bind", e))?;
        let file_id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let bound = BoundSocket {
            path: path.to_path_buf(),
            l: Some(l),
            file_id,
            keep: None,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("chmod", e))?;
        if let Some(l) = &bound.l {
            l.set_nonblocking(true)
                .map_err(|e| io("set_nonblocking", e))?;
        }
        Ok(bound)
    }
}

impl BoundSocket {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Once served, keeps the configuration in `file`: after each RPC that succeeded and may
    /// have changed it ([`crate::methods::ConfigEffect::Changes`]), the control thread writes
    /// what `save_config` returns to `file` before it answers. A write that fails is logged;
    /// the answer stays what the method returned.
    pub fn keep_config(mut self, file: ConfigFile) -> Self {
        self.keep = Some(file);
        self
    }

    /// Starts serving the socket on the main reactor of `ctx.rt`, with a control thread
    /// executing the methods.
    pub fn serve(mut self, ctx: Arc<Context>) -> Result<RpcServer, Error> {
        let p = self.path.display().to_string();
        let io = |op, source| Error::Io {
            op,
            path: p.clone(),
            source,
        };
        let (req_tx, req_rx) = bounded::<Job>(QUEUE);
        let (resp_tx, resp_rx) = bounded::<(u64, Vec<u8>)>(QUEUE);
        let rt = ctx.rt.clone();
        let main = rt.main_core();
        let wctx = ctx.clone();
        let wrt = rt.clone();
        let keep = self.keep.take();
        let worker = std::thread::Builder::new()
            .name("ballast-rpc".into())
            .spawn(move || worker(wctx, req_rx, resp_tx, wrt, main, keep))
            .map_err(|e| io("spawning the rpc thread", e))?;
        let tx = req_tx.clone();
        let l = self.l.take().expect("a bound socket is served once");
        let poller = rt.call(main, move || -> Result<_, ballast_reactor::Error> {
            ballast_reactor::add_wake_fd(l.as_raw_fd())?;
            let mut st = PollState {
                gate: ballast_reactor::AcceptGate::new(l.as_raw_fd(), ACCEPT_INTERVAL),
                l,
                conns: Vec::new(),
                next_id: 1,
                req_tx: tx,
                resp_rx,
            };
            ballast_reactor::register_poller("rpc", move || st.poll())
        });
        let poller = match poller {
            Ok(Ok(h)) => h,
            Ok(Err(e)) | Err(e) => {
                // The listener went with the closure; stop the worker and remove the file.
                drop(req_tx);
                let _ = worker.join();
                return Err(e.into());
            }
        };
        tracing::info!(path = %p, "JSON-RPC server listening");
        // From here the server owns the socket file (RpcServer::stop removes it).
        self.file_id = None;
        Ok(RpcServer {
            path: self.path.clone(),
            rt,
            poller: Some(poller),
            worker: Some(worker),
            req_tx: Some(req_tx),
        })
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some(id) = self.file_id else { return };
        drop(self.l.take());
        let ours = std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == id)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl RpcServer {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving: unregisters the poller (closing client connections), stops the control
    /// thread and removes the socket file.
    pub fn stop(mut self) {
        if let Some(p) = self.poller.take() {
            let _ = self.rt.call(self.rt.main_core(), move || {
                ballast_reactor::unregister_poller(p)
            });
        }
        drop(self.req_tx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

struct PollState {
    l: UnixListener,
    conns: Vec<Conn>,
    next_id: u64,
    gate: ballast_reactor::AcceptGate,
    req_tx: Sender<Job>,
    resp_rx: Receiver<(u64, Vec<u8>)>,
}

impl Drop for PollState {
    fn drop(&mut self) {
        ballast_reactor::remove_wake_fd(self.l.as_raw_fd());
        for c in &self.conns {
            ballast_reactor::remove_wake_fd(c.s.as_raw_fd());
        }
    }
}

impl PollState {
    /// Accepts every waiting client; true if any came.
    fn accept_all(&mut self) -> bool {
        let mut busy = false;
        loop {
            match self.l.accept() {
                Ok((s, _)) => {
                    busy = true;
                    if self.conns.len() >= MAX_CLIENTS || s.set_nonblocking(true).is_err() {
                        tracing::warn!("rpc: too many clients, refusing one");
                        continue;
                    }
                    if ballast_reactor::add_wake_fd(s.as_raw_fd()).is_err() {
                        continue;
                    }
                    self.conns.push(Conn {
                        id: self.next_id,
                        s,
                        rx: Vec::new(),
                        tx: Vec::new(),
                        pending: 0,
                        closing: false,
                        eof: false,
                    });
                    self.next_id += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("rpc accept: {e}");
                    break;
                }
            }
        }
        busy
    }

    fn poll(&mut self) -> PollStatus {
        let mut busy = false;
        // Accept: at most every ACCEPT_INTERVAL and only if a client is waiting.
        if self.gate.open() {
            busy |= self.accept_all();
        }
        // Responses from the worker.
        while let Ok((id, bytes)) = self.resp_rx.try_recv() {
            busy = true;
            if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
                c.pending = c.pending.saturating_sub(1);
                c.tx.extend_from_slice(&bytes);
            }
        }
        // Read, frame, dispatch, write.
        for c in self.conns.iter_mut() {
            busy |= c.read_and_dispatch(&self.req_tx);
            busy |= c.flush();
        }
        self.conns.retain(|c| {
            let done = (c.closing || c.eof) && c.tx.is_empty() && (c.closing || c.pending == 0);
            if done {
                ballast_reactor::remove_wake_fd(c.s.as_raw_fd());
            }
            !done
        });
        // Unflushed output (a slow reader): keep polling rather than sleep on readability.
        if self.conns.iter().any(|c| !c.tx.is_empty()) {
            busy = true;
        }
        PollStatus::from(busy)
    }
}

impl Conn {
    fn read_and_dispatch(&mut self, req_tx: &Sender<Job>) -> bool {
        if self.closing || self.eof {
            return false;
        }
        let mut did = false;
        let mut buf = [0u8; 16384];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    did = true;
                    break;
                }
                Ok(n) => {
                    did = true;
                    self.rx.extend_from_slice(&buf[..n]);
                    if self.rx.len() > MAX_REQUEST {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.eof = true;
                    break;
                }
            }
        }
        if did {
            self.frame(req_tx);
        }
        did
    }

    /// Splits complete JSON values off the receive buffer and queues them for the worker.
    fn frame(&mut self, req_tx: &Sender<Job>) {
        let mut used = 0;
        let mut fatal = None;
        let mut busy = Vec::new();
        {
            let mut it = serde_json::Deserializer::from_slice(&self.rx).into_iter::<Value>();
            loop {
                match it.next() {
                    None => {
                        used = it.byte_offset();
                        break;
                    }
                    Some(Ok(v)) => {
                        used = it.byte_offset();
                        match req_tx.try_send(Job {
                            conn: self.id,
                            req: v,
                        }) {
                            Ok(()) => self.pending += 1,
                            Err(TrySendError::Full(j)) => {
                                busy.push(j.req.get("id").cloned().unwrap_or(Value::Null));
                            }
                            Err(TrySendError::Disconnected(_)) => {
                                fatal = Some(RpcError::new(-32603, "server shutting down"));
                                break;
                            }
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => {
                        fatal = Some(RpcError::new(PARSE_ERROR, format!("Parse error: {e}")));
                        break;
                    }
                }
            }
        }
        self.rx.drain(..used);
        for id in busy {
            self.respond_err(
                id,
                RpcError::new(-16, "server busy: too many requests queued"),
            );
        }
        if fatal.is_none() && self.rx.len() > MAX_REQUEST {
            fatal = Some(RpcError::new(
                INVALID_REQUEST,
                format!("request larger than {MAX_REQUEST} bytes"),
            ));
        }
        if fatal.is_none() && self.eof && self.rx.iter().any(|b| !b.is_ascii_whitespace()) {
            fatal = Some(RpcError::new(PARSE_ERROR, "Parse error: truncated request"));
        }
        if let Some(e) = fatal {
            self.respond_err(Value::Null, e);
            self.rx.clear();
            self.closing = true;
        }
    }

    fn respond_err(&mut self, id: Value, e: RpcError) {
        let v = error_response(id, e);
        self.tx.extend_from_slice(v.to_string().as_bytes());
        self.tx.push(b'\n');
    }

    fn flush(&mut self) -> bool {
        let mut did = false;
        while !self.tx.is_empty() {
            match self.s.write(&self.tx) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx.drain(..n);
                    did = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    // Peer gone: drop what we had for it.
                    self.tx.clear();
                    self.eof = true;
                    self.closing = true;
                    break;
                }
            }
        }
        did
    }
}

/// Most answers held back while the configuration waits to be written (see [`worker`]).
const MAX_HELD: usize = 64;

/// Executes the queued requests one by one. With a [`ConfigFile`], a request that changed the
/// configuration has it written before its answer goes out, so an answered change survives a
/// crash. Requests already queued behind such a one are executed first and their answers held
/// (up to [`MAX_HELD`]), so a burst costs one write; the answers then go out in order.
fn worker(
    ctx: Arc<Context>,
    rx: Receiver<Job>,
    tx: Sender<(u64, Vec<u8>)>,
    rt: RuntimeHandle,
    main: usize,
    keep: Option<ConfigFile>,
) {
    let mut held: Vec<(u64, Vec<u8>)> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut changed = false;
        while let Some(job) = next.take() {
            held.push((job.conn, execute(&ctx, job.req, &mut changed)));
            if changed && keep.is_some() && held.len() < MAX_HELD {
                next = rx.try_recv().ok();
            }
        }
        if let (true, Some(file)) = (changed, &keep) {
            file.save(&ctx);
        }
        for out in held.drain(..) {
            if tx.send(out).is_err() {
                return;
            }
        }
        // Wake the main reactor so its poller picks the responses up.
        let _ = rt.send_retry(main, || {});
    }
}

/// Executes one request; returns its response's bytes (none for a notification) and sets
/// `changed` when a method that may change the configuration succeeded.
fn execute(ctx: &Context, req: Value, changed: &mut bool) -> Vec<u8> {
    // A method that panics answers -32603 and the server goes on (a panic must not leave the
    // daemon without its control plane).
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle_value_tracked(ctx, req, changed)
    }))
    .unwrap_or_else(|_| {
        tracing::error!("rpc: a method panicked; answered with an internal error");
        // What it did before it panicked may have changed the configuration.
        *changed = true;
        Some(error_response(
            id,
            RpcError::new(
                INTERNAL_ERROR,
                "internal error: the method failed unexpectedly",
            ),
        ))
    });
    match out {
        Some(v) => {
            let mut b = v.to_string().into_bytes();
            b.push(b'\n');
            b
        }
        None => Vec::new(),
    }
}

/// Handles one JSON value (request, notification or batch); returns the response, if any.
pub fn handle_value(ctx: &Context, v: Value) -> Option<Value> {
    handle_value_tracked(ctx, v, &mut false)
}

/// [`handle_value`], setting `changed` when a method that may change the configuration
/// succeeded (a request of a batch, a notification).
fn handle_value_tracked(ctx: &Context, v: Value, changed: &mut bool) -> Option<Value> {
    match v {
        Value::Array(items) if items.is_empty() => Some(error_response(
            Value::Null,
            RpcError::new(INVALID_REQUEST, "Invalid request: empty batch"),
        )),
        Value::Array(items) => {
            let out: Vec<Value> = items
                .into_iter()
                .filter_map(|r| handle_one(ctx, r, changed))
                .collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        r => handle_one(ctx, r, changed),
    }
}

/// Longest error message sent in a response or logged (bytes); longer ones lose their middle.
pub const MAX_ERROR_MESSAGE: usize = 1024;
/// Longest method name quoted in a log line (bytes).
const MAX_LOGGED_METHOD: usize = 128;

/// An error response; its message is capped at [`MAX_ERROR_MESSAGE`] bytes.
fn error_response(id: Value, e: RpcError) -> Value {
    let message = cap(&e.message, MAX_ERROR_MESSAGE);
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": message}})
}

pub use crate::error::cap;

fn handle_one(ctx: &Context, r: Value, changed: &mut bool) -> Option<Value> {
    let Value::Object(mut m) = r else {
        return Some(error_response(
            Value::Null,
            RpcError::new(INVALID_REQUEST, "Invalid request: not an object"),
        ));
    };
    let id = m.remove("id");
    let notification = id.is_none();
    let id = id.unwrap_or(Value::Null);
    if !matches!(id, Value::Null | Value::Number(_) | Value::String(_)) {
        return Some(error_response(
            Value::Null,
            RpcError::new(INVALID_REQUEST, "Invalid request: bad id"),
        ));
    }
    // SPDK accepts requests without "jsonrpc"; a present one must say "2.0".
    if m.get("jsonrpc").is_some_and(|v| v.as_str() != Some("2.0")) {
        return Some(error_response(
            id,
            RpcError::new(
                INVALID_REQUEST,
                "Invalid request: jsonrpc must be \"2.0\" (or absent)",
            ),
        ));
    }
    let Some(Value::String(method)) = m.remove("method") else {
        return Some(error_response(
            id,
            RpcError::new(INVALID_REQUEST, "Invalid request: method must be a string"),
        ));
    };
    let params = m.remove("params");
    if !matches!(
        params,
        None | Some(Value::Object(_)) | Some(Value::Array(_))
    ) {
        return Some(error_response(
            id,
            RpcError::new(INVALID_REQUEST, "Invalid request: params must be an object"),
        ));
    }
    let res = crate::methods::call(ctx, &method, params);
    if res.is_ok() && crate::methods::config_effect(&method) == Some(ConfigEffect::Changes) {
        *changed = true;
    }
    if notification {
        return None;
    }
    Some(match res {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(e) => {
            tracing::info!(
                method = %cap(&method, MAX_LOGGED_METHOD),
                "rpc error: {} (code {})",
                cap(&e.message, MAX_ERROR_MESSAGE),
                e.code
            );
            error_response(id, e)
        }
    })
}
