//! A small async JSON-RPC 2.0 client for ballastd's Unix socket (SPDK's protocol: one
//! request object, one response object, no framing beyond the JSON itself; ballastd ends
//! each response with a newline, which is not relied on).
//!
//! Each call opens its own connection, so calls never queue behind each other and a
//! daemon restart between calls costs nothing; connecting to a local Unix socket is cheap.
//! Every call has a timeout (connect, send and answer together).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::{Error, Result};

/// ballastd's default RPC socket (`ballastd -r` changes it).
pub const DEFAULT_SOCKET: &str = "/var/tmp/ballast.sock";

/// Responses larger than this are refused (a full `bdev_get_bdevs` of thousands of lvols
/// stays well below).
const MAX_RESPONSE: usize = 64 << 20;

#[derive(Debug)]
pub struct RpcClient {
    node: String,
    socket: PathBuf,
    timeout: Duration,
    next_id: AtomicU64,
}

impl RpcClient {
    /// A client for node `node` (used in errors and logs) at `socket`.
    pub fn new(node: impl Into<String>, socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        RpcClient {
            node: node.into(),
            socket: socket.into(),
            timeout,
            next_id: AtomicU64::new(1),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Calls `method` with `params` (None: no params member) and returns the result.
    pub async fn call(&self, method: &str, params: Option<Value>) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(p) = params {
            req["params"] = p;
        }
        tracing::debug!(node = %self.node, method, "json-rpc call");
        let answer = tokio::time::timeout(self.timeout, self.exchange(&req))
            .await
            .map_err(|_| {
                self.unavailable(format!("{method}: no answer in {:?}", self.timeout))
            })??;
        self.result(method, id, answer)
    }

    /// [`call`](Self::call), the result decoded as `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<T> {
        let v = self.call(method, params).await?;
        serde_json::from_value(v).map_err(|e| self.protocol(method, e.to_string()))
    }

    async fn exchange(&self, req: &Value) -> Result<Value> {
        let mut s = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        let mut bytes = serde_json::to_vec(req).expect("a JSON value serializes");
        bytes.push(b'\n');
        s.write_all(&bytes)
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 16384];
        loop {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| self.unavailable(e.to_string()))?;
            if n == 0 {
                return Err(self.unavailable("connection closed before a complete answer"));
            }
            buf.extend_from_slice(&chunk[..n]);
            match serde_json::from_slice::<Value>(trim_end(&buf)) {
                Ok(v) => return Ok(v),
                Err(e) if e.is_eof() && buf.len() < MAX_RESPONSE => continue,
                Err(e) => return Err(self.protocol("(response)", e.to_string())),
            }
        }
    }

    fn result(&self, method: &str, id: u64, answer: Value) -> Result<Value> {
        if answer.get("id") != Some(&json!(id)) {
            return Err(self.protocol(
                method,
                format!("answer for id {:?}, asked {id}", answer.get("id")),
            ));
        }
        if let Some(e) = answer.get("error") {
            return Err(Error::Rpc {
                node: self.node.clone(),
                method: method.to_string(),
                code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
                    .to_string(),
            });
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| self.protocol(method, "neither result nor error"))
    }

    fn unavailable(&self, detail: impl Into<String>) -> Error {
        Error::Unavailable {
            node: self.node.clone(),
            socket: self.socket.clone(),
            detail: detail.into(),
        }
    }

    fn protocol(&self, method: &str, detail: impl Into<String>) -> Error {
        Error::Protocol {
            node: self.node.clone(),
            method: method.to_string(),
            detail: detail.into(),
        }
    }
}

/// The buffer without trailing whitespace (so a complete object followed by a newline
/// parses; serde_json would accept it anyway, this keeps EOF detection exact).
fn trim_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake daemon answering one connection with `answer(id)` split in two writes.
    async fn serve_once(path: &Path, answer: fn(u64) -> String) {
        let l = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req: Value = serde_json::from_slice(&buf[..n]).unwrap();
            let out = answer(req["id"].as_u64().unwrap());
            let (a, b) = out.split_at(out.len() / 2);
            s.write_all(a.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b.as_bytes()).await.unwrap();
        });
    }

    #[tokio::test]
    async fn answers_split_across_reads_and_errors_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.sock");
        serve_once(&p, |id| {
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"version":"x"}}}}"#)
        })
        .await;
        let c = RpcClient::new("n1", &p, Duration::from_secs(5));
        assert_eq!(
            c.call("spdk_get_version", None).await.unwrap()["version"],
            "x"
        );

        let p = dir.path().join("b.sock");
        serve_once(&p, |id| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-19,"message":"No such device"}}}}"#
            )
        })
        .await;
        let c = RpcClient::new("n1", &p, Duration::from_secs(5));
        let e = c
            .call("bdev_get_bdevs", Some(json!({"name": "x"})))
            .await
            .unwrap_err();
        assert_eq!(e.rpc_code(), Some(-19), "{e}");
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable() {
        let c = RpcClient::new("n1", "/nonexistent/ballast.sock", Duration::from_secs(1));
        let e = c.call("spdk_get_version", None).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    }
}
