//! The `ballast-csi` binary: flags, serving on the endpoint, SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ballast_csi::pb;
use ballast_csi::pb::controller_client::ControllerClient;
use ballast_csi::pb::identity_client::IdentityClient;
use common::*;

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_binary_serves_its_endpoint_and_stops_on_sigterm() {
    let d = Daemon::with_store();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nodes.json");
    std::fs::write(
        &cfg,
        serde_json::json!({"nodes": [{"id": "n1", "rpc_socket": d.sock, "lvs": "lvs0",
                                       "nvmf": {"addr": "127.0.0.1", "port": 4420}}]})
        .to_string(),
    )
    .unwrap();
    let sock = dir.path().join("csi.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ballast-csi"))
        .arg("controller")
        .arg("--endpoint")
        .arg(format!("unix://{}", sock.display()))
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the CSI socket did not appear", || sock.exists());

    let ch = connect(&sock).await;
    let info = IdentityClient::new(ch.clone())
        .get_plugin_info(pb::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "csi.ballast.io");
    let v = ControllerClient::new(ch)
        .create_volume(create_req("pvc-bin", 4 * MIB, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(v.volume_id.starts_with("v1:n1:"), "{}", v.volume_id);
    assert!(d.lvol("lvs0/csi-pvc-bin").is_some());

    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut status = None;
    wait_for("ballast-csi did not stop on SIGTERM", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "exit status {status:?}");
    assert!(!sock.exists(), "the socket file is left behind");
}

#[test]
fn bad_flags_and_configs_are_refused() {
    let bin = env!("CARGO_BIN_EXE_ballast-csi");
    let dir = tempfile::tempdir().unwrap();
    // No --config for the controller: clap's usage error.
    let out = Command::new(bin).arg("controller").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A config naming a node twice.
    let cfg = dir.path().join("bad.json");
    std::fs::write(&cfg, r#"{"nodes":[{"id":"a"},{"id":"a"}]}"#).unwrap();
    let out = Command::new(bin)
        .args([
            "controller",
            "--endpoint",
            "unix:///tmp/never.sock",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("given twice"), "{err}");
    // The node service (it mounts as root) on TCP; the controller beyond the loopback.
    let out = Command::new(bin)
        .args(["node", "--node-name", "n1"])
        .args(["--host-nqn", "nqn.2014-08.org.nvmexpress:uuid:x"])
        .args(["--endpoint", "tcp://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unix://"));
    std::fs::write(&cfg, r#"{"nodes":[{"id":"a"}]}"#).unwrap();
    let out = Command::new(bin)
        .args(["controller", "--endpoint", "tcp://0.0.0.0:1", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    // A node id that is not a host NQN.
    let out = Command::new(bin)
        .args(["node", "--node-name", "n1", "--host-nqn", "node-1"])
        .args(["--endpoint", "unix:///tmp/never.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("host NQN"));
}
