//! One JSON-RPC 2.0 exchange with the daemon over its Unix socket: connect, write one request,
//! read until one complete JSON value has arrived, and classify it as a result or an error.
//!
//! ```text
//!  connect (-r N retries, 0.2 s apart)
//!    ─► write {"jsonrpc":"2.0","id":1,"method":…,"params":…}\n
//!    ─► read chunks until the buffer holds one whole JSON value (deadline: -t)
//!    ─► Reply::Result | Reply::Error
//! ```
//!
//! The write side stays open while waiting: a server may treat end-of-input as "client gone"
//! and drop the reply.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Deserializer, Value};

/// The id of the one request a run sends.
const REQUEST_ID: u64 = 1;

/// Pause between connection attempts, as rpc.py's `-r`.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct Options {
    /// The daemon's RPC socket.
    pub socket: PathBuf,
    /// How long to wait for the response (sending included).
    pub timeout: Duration,
    /// Extra connection attempts before giving up.
    pub conn_retries: u32,
    /// Echo the request and the response on stderr.
    pub verbose: bool,
}

/// What the daemon answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The `result` member.
    Result(Value),
    /// The `error` member.
    Error(RpcError),
}

/// A JSON-RPC error object, as the daemon sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// `code` (absent only from a non-conforming server).
    pub code: Option<i64>,
    /// `message`.
    pub message: String,
    /// `data`, if any.
    pub data: Option<Value>,
}

/// Why no reply could be had. Every variant names the socket, so the operator knows which
/// daemon was asked.
#[derive(Debug)]
pub enum Error {
    /// The socket could not be connected to.
    Connect { socket: PathBuf, source: io::Error },
    /// Writing the request failed.
    Send { socket: PathBuf, source: io::Error },
    /// Reading the response failed.
    Receive { socket: PathBuf, source: io::Error },
    /// No complete response within the timeout.
    Timeout {
        socket: PathBuf,
        after: Duration,
        received: usize,
    },
    /// The daemon closed the connection before a complete response; `received` bytes of one.
    Closed { socket: PathBuf, received: usize },
    /// The daemon sent something that is not a JSON-RPC response to our request.
    Malformed { socket: PathBuf, detail: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { socket, source } => {
                let socket = socket.display();
                let reason = os_reason(source);
                match source.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                        write!(
                            f,
                            "cannot connect to {socket}: {reason} — is ballastd running?"
                        )
                    }
                    io::ErrorKind::PermissionDenied => write!(
                        f,
                        "cannot connect to {socket}: {reason} — the socket is open only to the \
                         daemon's user"
                    ),
                    _ => write!(f, "cannot connect to {socket}: {reason}"),
                }
            }
            Error::Send { socket, source } => {
                write!(
                    f,
                    "cannot send the request to {}: {}",
                    socket.display(),
                    os_reason(source)
                )
            }
            Error::Receive { socket, source } => write!(
                f,
                "cannot read the response from {}: {}",
                socket.display(),
                os_reason(source)
            ),
            Error::Timeout {
                socket,
                after,
                received,
            } => {
                write!(
                    f,
                    "no response from {} within {} s (-t sets the timeout)",
                    socket.display(),
                    after.as_secs_f64()
                )?;
                if *received > 0 {
                    write!(f, "; {received} bytes of an incomplete response arrived")?;
                }
                Ok(())
            }
            Error::Closed { socket, received } => {
                write!(
                    f,
                    "{} closed the connection before responding",
                    socket.display()
                )?;
                if *received > 0 {
                    write!(
                        f,
                        " in full ({received} bytes of an incomplete response arrived)"
                    )?;
                }
                Ok(())
            }
            Error::Malformed { socket, detail } => {
                write!(f, "invalid response from {}: {detail}", socket.display())
            }
        }
    }
}

impl std::error::Error for Error {}

impl fmt::Display for RpcError {
    /// `<message> (code <code>)`, then `data` on a line of its own: a string as is, anything
    /// else as pretty JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = self.code {
            write!(f, " (code {code})")?;
        }
        match &self.data {
            None => Ok(()),
            Some(Value::String(data)) => write!(f, "\ndata: {data}"),
            Some(data) => {
                let data = serde_json::to_string_pretty(data).map_err(|_| fmt::Error)?;
                write!(f, "\ndata: {data}")
            }
        }
    }
}

/// The request line: `{"jsonrpc":"2.0","id":1,"method":…}` plus `params` when there are any,
/// and a newline (whitespace between values; it makes the stream readable when traced).
pub fn encode_request(method: &str, params: Option<Value>) -> Vec<u8> {
    let mut request = json!({ "jsonrpc": "2.0", "id": REQUEST_ID, "method": method });
    if let Some(params) = params {
        request["params"] = params;
    }
    let mut bytes = request.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Sends one request and waits for its response.
pub fn call(opts: &Options, method: &str, params: Option<Value>) -> Result<Reply, Error> {
    let request = encode_request(method, params);
    let mut stream = connect(opts)?;
    let deadline = Instant::now() + opts.timeout;
    if opts.verbose {
        eprint!("request: {}", String::from_utf8_lossy(&request));
    }
    send(&mut stream, &request, deadline).map_err(|source| Error::Send {
        socket: opts.socket.clone(),
        source,
    })?;
    let response = receive(&mut stream, deadline, opts)?;
    if opts.verbose {
        eprintln!("response: {response}");
    }
    interpret(response).map_err(|detail| Error::Malformed {
        socket: opts.socket.clone(),
        detail,
    })
}

fn connect(opts: &Options) -> Result<UnixStream, Error> {
    let mut attempts_left = opts.conn_retries;
    loop {
        match UnixStream::connect(&opts.socket) {
            Ok(stream) => return Ok(stream),
            Err(_) if attempts_left > 0 => {
                attempts_left -= 1;
                thread::sleep(RETRY_INTERVAL);
            }
            Err(source) => {
                return Err(Error::Connect {
                    socket: opts.socket.clone(),
                    source,
                })
            }
        }
    }
}

fn send(stream: &mut UnixStream, request: &[u8], deadline: Instant) -> io::Result<()> {
    stream.set_write_timeout(Some(
        remaining(deadline).unwrap_or(Duration::from_millis(1)),
    ))?;
    stream.write_all(request)?;
    stream.flush()
}

/// Reads until the buffer starts with one complete JSON value; an incomplete one means "read
/// more", anything else after the value is ignored.
fn receive(stream: &mut UnixStream, deadline: Instant, opts: &Options) -> Result<Value, Error> {
    let socket = || opts.socket.clone();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(value) = first_value(&buf).map_err(|detail| Error::Malformed {
            socket: socket(),
            detail,
        })? {
            return Ok(value);
        }
        let Some(left) = remaining(deadline) else {
            return Err(Error::Timeout {
                socket: socket(),
                after: opts.timeout,
                received: buf.len(),
            });
        };
        stream
            .set_read_timeout(Some(left))
            .map_err(|source| Error::Receive {
                socket: socket(),
                source,
            })?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(Error::Closed {
                    socket: socket(),
                    received: non_blank_len(&buf),
                })
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The read timeout expired: the deadline check above reports it.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Error::Closed {
                    socket: socket(),
                    received: non_blank_len(&buf),
                })
            }
            Err(source) => {
                return Err(Error::Receive {
                    socket: socket(),
                    source,
                })
            }
        }
    }
}

/// The first JSON value in `buf`, `None` while it is incomplete (or only whitespace so far).
pub fn first_value(buf: &[u8]) -> Result<Option<Value>, String> {
    match Deserializer::from_slice(buf).into_iter::<Value>().next() {
        None => Ok(None),
        Some(Ok(value)) => Ok(Some(value)),
        Some(Err(e)) if e.is_eof() => Ok(None),
        Some(Err(e)) => Err(format!("not JSON: {e}")),
    }
}

/// Checks the envelope and splits it into result or error.
pub fn interpret(response: Value) -> Result<Reply, String> {
    let Value::Object(mut response) = response else {
        return Err(format!("expected a response object, got {response}"));
    };
    if response.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(format!(
            "no \"jsonrpc\":\"2.0\" in {}",
            Value::Object(response)
        ));
    }
    if let Some(error) = response.remove("error") {
        // A parse error answers with "id": null, since the server could not read ours.
        return match response.get("id") {
            Some(id) if !id.is_null() && *id != json!(REQUEST_ID) => Err(format!(
                "error response for request id {id}, but ours is {REQUEST_ID}"
            )),
            _ => parse_error_object(error).map(Reply::Error),
        };
    }
    if response.get("id") != Some(&json!(REQUEST_ID)) {
        let id = response.get("id").cloned().unwrap_or(Value::Null);
        return Err(format!(
            "response for request id {id}, but ours is {REQUEST_ID}"
        ));
    }
    match response.remove("result") {
        Some(result) => Ok(Reply::Result(result)),
        None => Err(format!(
            "neither \"result\" nor \"error\" in {}",
            Value::Object(response)
        )),
    }
}

fn parse_error_object(error: Value) -> Result<RpcError, String> {
    let Value::Object(mut error) = error else {
        return Err(format!("\"error\" is not an object: {error}"));
    };
    let message = match error.remove("message") {
        Some(Value::String(message)) => message,
        Some(other) => other.to_string(),
        None => "(no message)".to_string(),
    };
    Ok(RpcError {
        code: error.get("code").and_then(Value::as_i64),
        message,
        data: error.remove("data"),
    })
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

fn non_blank_len(buf: &[u8]) -> usize {
    buf.iter().filter(|b| !b.is_ascii_whitespace()).count()
}

/// The OS's description without std's " (os error N)" suffix.
fn os_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_params_only_when_given() {
        let with: Value =
            serde_json::from_slice(&encode_request("m", Some(json!({"a": 1})))).unwrap();
        assert_eq!(
            with,
            json!({"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"a": 1}})
        );
        let without = encode_request("spdk_get_version", None);
        assert_eq!(without.last(), Some(&b'\n'));
        let without: Value = serde_json::from_slice(&without).unwrap();
        assert_eq!(
            without,
            json!({"jsonrpc": "2.0", "id": 1, "method": "spdk_get_version"})
        );
    }

    #[test]
    fn first_value_waits_for_a_complete_value() {
        assert_eq!(first_value(b""), Ok(None));
        assert_eq!(first_value(b"  \n"), Ok(None));
        assert_eq!(first_value(b"{\"jsonrpc\":\"2.0\",\"res"), Ok(None));
        assert_eq!(first_value(b"{\"a\":[1,2"), Ok(None));
        assert_eq!(first_value(b"{\"a\":1}"), Ok(Some(json!({"a": 1}))));
        // Whatever follows the first value is not ours to read.
        assert_eq!(
            first_value(b" {\"a\":1}\n{\"b\""),
            Ok(Some(json!({"a": 1})))
        );
        assert!(first_value(b"HTTP/1.1 400").is_err());
        assert!(first_value(b"{\"a\" 1}").is_err());
    }

    #[test]
    fn interpret_splits_result_and_error() {
        let ok = json!({"jsonrpc": "2.0", "id": 1, "result": {"x": true}});
        assert_eq!(interpret(ok), Ok(Reply::Result(json!({"x": true}))));

        let err = json!({"jsonrpc": "2.0", "id": 1,
                         "error": {"code": -32602, "message": "Invalid params", "data": "name"}});
        let expected = RpcError {
            code: Some(-32602),
            message: "Invalid params".into(),
            data: Some(json!("name")),
        };
        assert_eq!(interpret(err), Ok(Reply::Error(expected)));

        let parse = json!({"jsonrpc": "2.0", "id": null,
                           "error": {"code": -32700, "message": "Parse error"}});
        assert!(matches!(
            interpret(parse),
            Ok(Reply::Error(RpcError {
                code: Some(-32700),
                ..
            }))
        ));
    }

    #[test]
    fn interpret_rejects_what_is_not_our_response() {
        for bad in [
            json!([{"jsonrpc": "2.0", "id": 1, "result": 1}]),
            json!({"id": 1, "result": 1}),
            json!({"jsonrpc": "2.0", "id": 2, "result": 1}),
            json!({"jsonrpc": "2.0", "result": 1}),
            json!({"jsonrpc": "2.0", "id": 1}),
            json!({"jsonrpc": "2.0", "id": 7, "error": {"code": 1, "message": "x"}}),
            json!({"jsonrpc": "2.0", "id": 1, "error": "boom"}),
        ] {
            assert!(interpret(bad.clone()).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn rpc_error_display() {
        let plain = RpcError {
            code: Some(-32601),
            message: "Method not found".into(),
            data: None,
        };
        assert_eq!(plain.to_string(), "Method not found (code -32601)");
        let with_data = RpcError {
            code: Some(-17),
            message: "File exists".into(),
            data: Some(json!({"name": "Malloc0"})),
        };
        assert_eq!(
            with_data.to_string(),
            "File exists (code -17)\ndata: {\n  \"name\": \"Malloc0\"\n}"
        );
    }

    #[test]
    fn connect_error_names_the_socket_and_hints() {
        // ENOENT is 2 on Linux.
        let source = io::Error::from_raw_os_error(2);
        let e = Error::Connect {
            socket: "/var/tmp/ballast.sock".into(),
            source,
        };
        assert_eq!(
            e.to_string(),
            "cannot connect to /var/tmp/ballast.sock: No such file or directory \
             — is ballastd running?"
        );
    }
}
