//! The gRPC channel to a management server: HTTP/2 over TCP or a unix pipe (pilot-agent
//! serves xDS on `./etc/istio/proxy/XDS`), optionally inside TLS.

use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::transport::{Channel, Endpoint};

/// Where the management server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket path (a leading `@` names an abstract socket).
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// TLS towards the management server: the client config (its ALPN is forced to `h2`)
/// and the SNI / name the server certificate is checked against.
#[derive(Clone)]
pub struct ClientTls {
    /// The rustls client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The server name to send and verify.
    pub server_name: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// A byte stream to the server, plain or TLS, over TCP or unix.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

async fn open(target: Target, tls: Option<ClientTls>) -> std::io::Result<TokioIo<Box<dyn Io>>> {
    let raw: Box<dyn Io> = match &target {
        Target::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
        Target::Unix(p) => Box::new(connect_unix(p).await?),
    };
    let Some(tls) = tls else {
        return Ok(TokioIo::new(raw));
    };
    let mut config = (*tls.config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, raw)
        .await?;
    Ok(TokioIo::new(Box::new(stream)))
}

async fn connect_unix(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    let text = path.to_string_lossy();
    if let Some(name) = text.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
        s.set_nonblocking(true)?;
        return tokio::net::UnixStream::from_std(s);
    }
    tokio::net::UnixStream::connect(path).await
}

/// Connects an HTTP/2 gRPC channel (the first connection is made before returning, so a
/// dead server is reported here rather than on the first call).
pub async fn connect(target: &Target, tls: Option<&ClientTls>) -> Result<Channel, String> {
    let target = target.clone();
    let tls = tls.cloned();
    let connector = tower::service_fn(move |_: http::Uri| open(target.clone(), tls.clone()));
    Endpoint::from_static("http://xds.meshproxy")
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            use std::error::Error;
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        })
}
