//! Serving the CSI services on a Unix socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::controller::ControllerService;
use crate::error::{Error, Result};
use crate::identity::IdentityService;
use crate::nodes::Nodes;
use crate::pb::controller_server::ControllerServer;
use crate::pb::identity_server::IdentityServer;

/// How long one JSON-RPC call to a ballastd may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Which services to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Identity + Controller.
    Controller,
    /// Identity only, for now (the Node service is not built yet).
    Node,
}

/// The socket path of a CSI endpoint: `unix:///abs/path`, `unix:/abs/path` or a bare
/// absolute path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let p = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if !p.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "endpoint {endpoint:?}: expected unix:///absolute/path"
        )));
    }
    Ok(PathBuf::from(p))
}

/// Binds `path`; a stale socket file (nothing listening) is replaced, a live one refused.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::io(
                format!("{}", path.display()),
                std::io::Error::new(std::io::ErrorKind::AddrInUse, "a server is listening there"),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("removing stale {}", path.display()), e))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    UnixListener::bind(path).map_err(|e| Error::io(format!("binding {}", path.display()), e))
}

/// Serves `mode`'s services for the nodes of `cfg` on `listener` until `shutdown` resolves.
pub async fn serve(
    mode: Mode,
    cfg: &Config,
    listener: UnixListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let nodes = Arc::new(Nodes::new(cfg, RPC_TIMEOUT));
    let identity = IdentityServer::new(IdentityService::new(
        nodes.clone(),
        mode == Mode::Controller,
    ));
    let mut router = tonic::transport::Server::builder().add_service(identity);
    if mode == Mode::Controller {
        router = router.add_service(ControllerServer::new(ControllerService::new(nodes)));
    }
    router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").unwrap(),
            Path::new("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("unix:/csi/csi.sock").unwrap(),
            Path::new("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("/csi/csi.sock").unwrap(),
            Path::new("/csi/csi.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:10000").is_err());
        assert!(socket_path("unix://relative.sock").is_err());
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("csi.sock");
        drop(std::os::unix::net::UnixListener::bind(&p).unwrap()); // stale file stays
        let live = bind(&p).unwrap();
        assert!(bind(&p).is_err());
        drop(live);
    }
}
