//! Transparent proxying on sockets: `IP_TRANSPARENT` for listeners that accept TPROXY'd
//! connections (Envoy's `Listener.transparent`), and the source address an upstream
//! connection takes from its downstream (the `original_src` listener filter), so the
//! application behind an inbound sidecar in TPROXY mode sees its real client's address.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// Sets `IP_TRANSPARENT` (IPv4 sockets) or `IPV6_TRANSPARENT` (IPv6 sockets): a listener
/// with it accepts connections TPROXY delivers for non-local destinations, an upstream
/// socket with it may bind a non-local source. Needs `CAP_NET_ADMIN`.
pub fn set_transparent(socket: &impl AsRawFd, ipv6: bool) -> std::io::Result<()> {
    let (level, name) = if ipv6 {
        (libc::SOL_IPV6, libc::IPV6_TRANSPARENT)
    } else {
        (libc::SOL_IP, libc::IP_TRANSPARENT)
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The source an upstream connection must use instead of its cluster's: the downstream
/// client's address, set by the `original_src` listener filter. Part of the connection
/// pool key, so connections of different clients are never shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamSource {
    /// The downstream remote address's IP (the port is left to the kernel).
    pub ip: IpAddr,
    /// `SO_MARK` for the upstream socket (0: none), which Istio's TPROXY rules use to
    /// route the application's replies back to the proxy.
    pub mark: u32,
}

impl UpstreamSource {
    /// Prepares `socket` for a connection to `destination`: transparent, marked and bound
    /// to the client's IP. Returns false (nothing done) when the families differ, as the
    /// client's address cannot be a source for that destination.
    pub fn apply(
        &self,
        socket: &tokio::net::TcpSocket,
        destination: SocketAddr,
    ) -> std::io::Result<bool> {
        if self.ip.is_ipv4() != destination.is_ipv4() {
            return Ok(false);
        }
        set_transparent(socket, self.ip.is_ipv6())?;
        if self.mark != 0 {
            socket2::SockRef::from(socket).set_mark(self.mark)?;
        }
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(self.ip, 0))?;
        Ok(true)
    }
}
