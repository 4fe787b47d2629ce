//! Accepted downstream sockets (TCP or unix) with non-consuming peeks for the inspectors
//! and the original destination the kernel recorded before a REDIRECT.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use tokio::io::Interest;

/// An accepted connection before any listener filter ran.
pub enum Downstream {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// Unix-domain socket.
    Unix(tokio::net::UnixStream),
}

impl Downstream {
    fn peek_once(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let fd = match self {
            Downstream::Tcp(s) => s.as_raw_fd(),
            Downstream::Unix(s) => s.as_raw_fd(),
        };
        nix::sys::socket::recv(fd, buf, nix::sys::socket::MsgFlags::MSG_PEEK)
            .map_err(std::io::Error::from)
    }

    /// Waits until at least `min` bytes are buffered (or the peer stops sending) and
    /// returns what is there without consuming it.
    pub async fn peek(&self, min: usize, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        let cap = min.clamp(64, 64 * 1024);
        buf.resize(cap, 0);
        loop {
            let n = match self {
                Downstream::Tcp(s) => {
                    s.async_io(Interest::READABLE, || self.peek_once(buf))
                        .await?
                }
                Downstream::Unix(s) => {
                    s.async_io(Interest::READABLE, || self.peek_once(buf))
                        .await?
                }
            };
            if n >= min || n == 0 || n == cap {
                buf.truncate(n);
                return Ok(n);
            }
            // Fewer bytes than needed are queued: wait for more to arrive.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Consumes exactly `n` bytes (a PROXY protocol header).
    pub async fn discard(&mut self, n: usize) -> std::io::Result<()> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0; n];
        match self {
            Downstream::Tcp(s) => s.read_exact(&mut buf).await.map(|_| ()),
            Downstream::Unix(s) => s.read_exact(&mut buf).await.map(|_| ()),
        }
    }

    /// The destination before iptables REDIRECT (SO_ORIGINAL_DST), if any.
    pub fn original_dst(&self) -> Option<SocketAddr> {
        let Downstream::Tcp(s) = self else {
            return None;
        };
        let local = s.local_addr().ok()?;
        if local.is_ipv4() {
            let a = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::OriginalDst).ok()?;
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        } else {
            let a =
                nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::Ip6tOriginalDst).ok()?;
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
        }
    }

    /// Into a boxed stream for TLS or the codec.
    pub fn into_io(self) -> crate::io::BoxIo {
        match self {
            Downstream::Tcp(s) => Box::new(s),
            Downstream::Unix(s) => Box::new(s),
        }
    }
}
