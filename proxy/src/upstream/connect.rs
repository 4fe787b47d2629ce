//! Connecting to an upstream host: TCP (connect timeout, keepalive, source bind, no
//! Nagle) or unix socket, then TLS when the cluster has a transport socket.

use super::cluster::Cluster;
use super::host::{Host, HostAddress};
use super::source::UpstreamSource;
use crate::io::{BoxIo, CountingIo};
use std::net::SocketAddr;
use std::sync::Arc;

/// A TLS client config for one connection, read from the cluster's TLS context once.
#[derive(Clone)]
pub struct ClientTls {
    /// The rustls config (with the ALPN the caller wants).
    pub config: Arc<rustls::ClientConfig>,
    /// The SNI to send (`None`: the host's address).
    pub sni: Option<String>,
    /// Whether the context's client key batches signatures, so the handshake runs on the
    /// handshake pool.
    pub batching: bool,
}

/// Why a connection could not be made (rendered into Envoy's transport failure reason).
#[derive(Debug)]
pub enum ConnectError {
    /// `connect_timeout` elapsed.
    Timeout,
    /// The socket connect failed.
    Io(std::io::Error),
    /// The TLS handshake failed.
    Tls(String),
    /// The cluster's TLS secrets have not arrived.
    SecretsPending,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("delayed connect error: Connection timed out"),
            ConnectError::Io(e) => match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    f.write_str("delayed connect error: Connection refused")
                }
                _ => write!(f, "delayed connect error: {e}"),
            },
            ConnectError::Tls(e) => write!(f, "TLS_error:|{e}"),
            ConnectError::SecretsPending => f.write_str("TLS_error:|secrets not ready"),
        }
    }
}

/// A connected (and possibly TLS-wrapped) upstream stream.
pub struct Connected {
    /// The stream; reads and writes count into the cluster's byte stats.
    pub io: BoxIo,
    /// ALPN protocol negotiated by TLS.
    pub alpn: Option<Vec<u8>>,
    /// Local address of the socket.
    pub local: Option<SocketAddr>,
    /// The peer workload the cluster's TCP metadata exchange learnt, if it ran.
    pub peer: Option<Arc<crate::istio::workload::Workload>>,
}

async fn tcp(
    cluster: &Cluster,
    addr: SocketAddr,
    source: Option<UpstreamSource>,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // The downstream's source (original_src) wins over the cluster's bind address, as in
    // Envoy where its socket option binds before the cluster's source is considered.
    let bound = match source {
        Some(s) => s.apply(&socket, addr)?,
        None => false,
    };
    if let Some(bind) = cluster.config.bind_address.filter(|_| !bound) {
        if bind.is_ipv4() == addr.is_ipv4() {
            socket.set_reuseaddr(true)?;
            socket.bind(bind)?;
        }
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    if let Some(k) = cluster.config.keepalive {
        let mut ka = socket2::TcpKeepalive::new();
        if let Some(t) = k.time {
            ka = ka.with_time(t);
        }
        if let Some(i) = k.interval {
            ka = ka.with_interval(i);
        }
        if let Some(p) = k.probes {
            ka = ka.with_retries(p);
        }
        socket2::SockRef::from(&stream).set_tcp_keepalive(&ka)?;
    }
    Ok(stream)
}

/// Connects to `host`; `tls` is the client config to use (with the ALPN the pool wants),
/// `source` the downstream's address to connect from (`original_src`), if any.
pub async fn connect(
    cluster: &Cluster,
    host: &Host,
    tls: Option<ClientTls>,
    source: Option<UpstreamSource>,
) -> Result<Connected, ConnectError> {
    let rx = cluster.stats().cx_rx_bytes.clone();
    let tx = cluster.stats().cx_tx_bytes.clone();
    let fut = async {
        match &host.address {
            HostAddress::Tcp(a) => {
                let s = tcp(cluster, *a, source).await.map_err(ConnectError::Io)?;
                let local = s.local_addr().ok();
                Ok::<_, ConnectError>((Box::new(CountingIo::new(s, rx, tx)) as BoxIo, local))
            }
            HostAddress::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(ConnectError::Io)?;
                Ok((Box::new(CountingIo::new(s, rx, tx)) as BoxIo, None))
            }
        }
    };
    let (io, local) = match tokio::time::timeout(cluster.config.connect_timeout, fut).await {
        Ok(r) => r?,
        Err(_) => return Err(ConnectError::Timeout),
    };
    let Some(ClientTls {
        config,
        sni,
        batching,
    }) = tls
    else {
        return Ok(Connected {
            io,
            alpn: None,
            local,
            peer: None,
        });
    };
    let name = match &sni {
        Some(s) => rustls::pki_types::ServerName::try_from(s.clone())
            .map_err(|e| ConnectError::Tls(e.to_string()))?,
        None => match &host.address {
            HostAddress::Tcp(a) => rustls::pki_types::ServerName::IpAddress(a.ip().into()),
            HostAddress::Unix(_) => rustls::pki_types::ServerName::try_from("localhost")
                .map_err(|e| ConnectError::Tls(e.to_string()))?,
        },
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let handshake = crate::tls::multibuffer::handshake(batching, connector.connect(name, io));
    let stream = match tokio::time::timeout(cluster.config.connect_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Tls(e.to_string())),
        Err(_) => return Err(ConnectError::Timeout),
    };
    let session = stream.get_ref().1;
    let alpn = session.alpn_protocol().map(|a| a.to_vec());
    // Every TLS connection, pooled or not, updates the host's upstream principal.
    if let Some(san) = session
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(crate::tls::san::first_uri)
    {
        host.set_peer_uri_san(san);
    }
    let (io, peer) = match &cluster.config.upstream_exchange {
        Some(x) => x.run(alpn.as_deref(), Box::new(stream)).await,
        None => (Box::new(stream) as BoxIo, None),
    };
    Ok(Connected {
        io,
        alpn,
        local,
        peer,
    })
}
