//! Test scaffolding: real ballastd daemons (the release binary, one per node, each on a
//! socket in its own temp dir and without any NVMe/TCP listener), ballast-csi served on a
//! temp Unix socket, and tonic clients over that socket.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ballast_csi::config::{Config, Node, NODE_TOPOLOGY_KEY};
use ballast_csi::pb;
use ballast_csi::pb::controller_client::ControllerClient;
use ballast_csi::pb::identity_client::IdentityClient;
use ballast_csi::pb::node_client::NodeClient;
use ballast_csi::pb::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use ballast_csi::server::{self, Mode as ServeMode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint, Uri};

pub const MIB: u64 = 1 << 20;
/// Cluster size of the test stores: 4 MiB (ballast's default), so rounding is visible.
pub const CLUSTER: u64 = 4 * MIB;
/// Test store: a 128 MiB malloc bdev.
pub const POOL_MIB: u64 = 128;

/// The ballastd binary: $BALLASTD, else target/release/ballastd, else target/debug/ballastd
/// (ci/test.sh builds the release binaries before cargo test).
pub fn ballastd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BALLASTD") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("ballastd");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "no ballastd binary under {}: run `cargo build --release -p ballastd` first, \
         or set BALLASTD",
        target.display()
    );
}

/// A running ballastd with its RPC socket in a temp dir; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts ballastd (no default subsystem, no listener) and waits until it answers.
    pub fn start() -> Daemon {
        Daemon::start_with(&[], &["--default-size-mib", "0"])
    }

    /// Starts ballastd as `wrap... ballastd --no-pin -m 0x1 -r SOCK args...` (e.g. wrapped in
    /// `ip netns exec NS`, or with `-c CONFIG`) and waits until it answers.
    pub fn start_with(wrap: &[&str], args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ballast.sock");
        let log = std::fs::File::create(dir.path().join("ballastd.log")).unwrap();
        let bin = ballastd_bin();
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .args(["--no-pin", "-m", "0x1", "-r"])
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ballastd");
        let d = Daemon {
            child: Some(child),
            sock,
            _dir: dir,
        };
        let t0 = Instant::now();
        while d.call("spdk_get_version", Value::Null).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "ballastd did not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// Starts ballastd with a malloc bdev and lvol store `lvs0` (4 MiB clusters).
    pub fn with_store() -> Daemon {
        let d = Daemon::start();
        d.ok(
            "bdev_malloc_create",
            json!({"name": "Pool0", "num_blocks": POOL_MIB * MIB / 4096, "block_size": 4096}),
        );
        d.ok(
            "bdev_lvol_create_lvstore",
            json!({"bdev_name": "Pool0", "lvs_name": "lvs0", "cluster_sz": CLUSTER}),
        );
        d
    }

    /// A blocking JSON-RPC call (the test's own view of the node, independent of the
    /// driver's client).
    pub fn call(&self, method: &str, params: Value) -> Result<Value, (i64, String)> {
        let mut s = StdUnixStream::connect(&self.sock).map_err(|e| (0, e.to_string()))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = json!({"jsonrpc": "2.0", "id": 1, "method": method});
        if !params.is_null() {
            req["params"] = params;
        }
        s.write_all(req.to_string().as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 65536];
        let v: Value = loop {
            let n = s.read(&mut b).map_err(|e| (0, e.to_string()))?;
            assert!(n > 0, "ballastd closed the connection");
            buf.extend_from_slice(&b[..n]);
            if let Ok(v) = serde_json::from_slice(&buf) {
                break v;
            }
        };
        match v.get("error") {
            Some(e) => Err((e["code"].as_i64().unwrap(), e["message"].to_string())),
            None => Ok(v["result"].clone()),
        }
    }

    pub fn ok(&self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e:?}"))
    }

    /// Free bytes of lvs0, as ballastd reports them.
    pub fn free_bytes(&self) -> u64 {
        let s = &self.ok("bdev_lvol_get_lvstores", json!({"lvs_name": "lvs0"}))[0];
        s["free_clusters"].as_u64().unwrap() * s["cluster_size"].as_u64().unwrap()
    }

    /// The lvol bdev `name` (UUID or alias) as ballastd shows it, or None.
    pub fn lvol(&self, name: &str) -> Option<Value> {
        match self.call("bdev_get_bdevs", json!({"name": name})) {
            Ok(v) => Some(v[0].clone()),
            Err((-19, _)) => None,
            Err(e) => panic!("bdev_get_bdevs {name}: {e:?}"),
        }
    }

    /// The last lines of the daemon's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self._dir.path().join("ballastd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Stops the daemon now (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node of the CSI config: id, its daemon's socket and topology segments.
pub fn node(id: &str, sock: &Path, segments: &[(&str, &str)]) -> Node {
    let mut topology: std::collections::BTreeMap<String, String> = segments
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    topology.insert(NODE_TOPOLOGY_KEY.into(), id.into());
    Node {
        id: id.into(),
        rpc_socket: sock.to_path_buf(),
        lvs: "lvs0".into(),
        nvmf: None,
        topology,
        mirror_host_nqn: None,
    }
}

/// ballast-csi serving on a temp socket, with connected clients; stopped on drop.
pub struct Csi {
    pub identity: IdentityClient<Channel>,
    pub ctrl: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<ballast_csi::Result<()>>>,
    pub sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Csi {
    /// The controller over `nodes`.
    pub async fn start(nodes: Vec<Node>) -> Csi {
        let cfg = Config { nodes }.validated().unwrap();
        Csi::start_mode(ServeMode::Controller(cfg)).await
    }

    pub async fn start_mode(mode: ServeMode) -> Csi {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("csi.sock");
        let listener = server::Listener::Unix(server::bind(&sock).unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(mode, listener, async {
                let _ = rx.await;
            })
            .await
        });
        let ch = connect(&sock).await;
        Csi {
            identity: IdentityClient::new(ch.clone()),
            ctrl: ControllerClient::new(ch.clone()),
            node: NodeClient::new(ch),
            stop: Some(tx),
            task: Some(task),
            sock,
            _dir: dir,
        }
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for Csi {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A gRPC channel over the Unix socket at `path` (the URI is a placeholder tonic needs).
pub async fn connect(path: &Path) -> Channel {
    let path = path.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .unwrap()
}

/// A mount capability (ext4) with access mode `m`.
pub fn mount_cap(m: Mode) -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: m as i32 }),
    }
}

pub fn rwo() -> Vec<pb::VolumeCapability> {
    vec![mount_cap(Mode::SingleNodeWriter)]
}

/// A CreateVolume request: `name`, required bytes (0: none), RWO, parameters.
pub fn create_req(name: &str, required: u64, params: &[(&str, &str)]) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.into(),
        capacity_range: (required > 0).then_some(pb::CapacityRange {
            required_bytes: required as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: rwo(),
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

pub fn topology(kv: &[(&str, &str)]) -> pb::Topology {
    pb::Topology {
        segments: kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

pub type R<T> = Result<tonic::Response<T>, tonic::Status>;

/// The error code of a call that must fail, with its message for diagnostics.
pub fn code<T: std::fmt::Debug>(r: R<T>) -> (tonic::Code, String) {
    let s = r.expect_err("the call should fail");
    (s.code(), s.message().to_string())
}

pub fn vol(r: R<pb::CreateVolumeResponse>) -> pb::Volume {
    r.expect("CreateVolume").into_inner().volume.unwrap()
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
