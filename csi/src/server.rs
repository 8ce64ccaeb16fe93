//! Serving the CSI services on a Unix socket (what kubelet and the sidecars use) or, for
//! tests and tools, on a TCP address of the loopback.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

use crate::config::Config;
use crate::controller::ControllerService;
use crate::error::{Error, Result};
use crate::identity::IdentityService;
use crate::node::{NodeOptions, NodeService};
use crate::nodes::Nodes;
use crate::pb::controller_server::ControllerServer;
use crate::pb::identity_server::IdentityServer;
use crate::pb::node_server::NodeServer;

/// How long one JSON-RPC call to a ballastd may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Which services to serve.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Identity + Controller over the ballastd nodes of a config.
    Controller(Config),
    /// Identity + Node on the machine it runs on.
    Node(NodeOptions),
}

/// A CSI endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///abs/path`, `unix:/abs/path` or a bare absolute path.
    Unix(PathBuf),
    /// `tcp://ADDR:PORT` on a loopback address: tests and tools only (kubelet and the
    /// sidecars always use the Unix socket).
    Tcp(SocketAddr),
}

impl Endpoint {
    pub fn parse(endpoint: &str) -> Result<Endpoint> {
        if let Some(a) = endpoint.strip_prefix("tcp://") {
            let addr: SocketAddr = a.parse().map_err(|_| {
                Error::InvalidArgument(format!("endpoint {endpoint:?}: expected tcp://ADDR:PORT"))
            })?;
            return Ok(Endpoint::Tcp(addr));
        }
        socket_path(endpoint).map(Endpoint::Unix)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The socket path of a Unix CSI endpoint: `unix:///abs/path`, `unix:/abs/path` or a bare
/// absolute path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let p = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if !p.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "endpoint {endpoint:?}: expected unix:///absolute/path or tcp://ADDR:PORT"
        )));
    }
    Ok(PathBuf::from(p))
}

/// Binds `path`; a stale socket file (nothing listening) is replaced, a live one refused.
pub fn bind(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(Error::io(
                format!("{}", path.display()),
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is there: not replaced",
                ),
            ));
        }
    }
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

/// A bound endpoint.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    pub async fn bind(e: &Endpoint) -> Result<Listener> {
        Ok(match e {
            Endpoint::Unix(p) => Listener::Unix(bind(p)?),
            Endpoint::Tcp(a) if !a.ip().is_loopback() => {
                return Err(Error::InvalidArgument(format!(
                    "endpoint {e}: a TCP endpoint is served on a loopback address only (tests \
                     and tools on this machine); kubelet and the sidecars use unix://"
                )))
            }
            Endpoint::Tcp(a) => Listener::Tcp(
                TcpListener::bind(a)
                    .await
                    .map_err(|err| Error::io(format!("binding {a}"), err))?,
            ),
        })
    }
}

/// Serves `mode`'s services on `listener` until `shutdown` resolves.
pub async fn serve(
    mode: Mode,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let mut server = tonic::transport::Server::builder();
    let router = match mode {
        Mode::Controller(cfg) => {
            let nodes = Arc::new(Nodes::new(&cfg, RPC_TIMEOUT));
            server
                .add_service(IdentityServer::new(IdentityService::controller(
                    nodes.clone(),
                )))
                .add_service(ControllerServer::new(ControllerService::new(nodes)))
        }
        Mode::Node(opts) => server
            .add_service(IdentityServer::new(IdentityService::node()))
            .add_service(NodeServer::new(NodeService::new(opts))),
    };
    match listener {
        Listener::Unix(l) => {
            router
                .serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown)
                .await?
        }
        Listener::Tcp(l) => {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(l), shutdown)
                .await?
        }
    }
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
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:10000").unwrap(),
            Endpoint::Tcp("127.0.0.1:10000".parse().unwrap())
        );
        assert!(Endpoint::parse("tcp://localhost").is_err());
        // Clients may call any address; a server listens on the loopback only.
        let any = Endpoint::parse("tcp://0.0.0.0:10000").unwrap();
        assert!(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(Listener::bind(&any))
            .is_err());
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
        // Anything but a socket is never replaced.
        let f = dir.path().join("file");
        std::fs::write(&f, "x").unwrap();
        assert!(bind(&f).is_err());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "x");
    }
}
