//! `--run-validation`: proves the rules really redirect. A listener on the proxy's
//! outbound port accepts a connection the kernel redirected there from an address and
//! port nobody listens on (`--iptables-probe-port`), and checks that the original
//! destination it reads is that probe address. istio-iptables exits 126 when it is not.

use crate::config::Config;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The address the probe dials: routed through ISTIO_OUTPUT, not local to anyone.
const PROBE_IP: [u8; 4] = [10, 255, 255, 254];

fn original_destination(s: &TcpStream) -> Option<SocketAddr> {
    let a = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::OriginalDst).ok()?;
    Some(SocketAddr::new(
        std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
        u16::from_be(a.sin_port),
    ))
}

/// Whether a connection to the probe address reaches the proxy port through the outbound
/// redirect, with the probe address as its original destination.
pub fn redirect_works(c: &Config) -> bool {
    let Ok(listener) = TcpListener::bind(("127.0.0.1", c.proxy_port.parse().unwrap_or(15001)))
    else {
        return false;
    };
    let _ = listener.set_nonblocking(true);
    let target = SocketAddr::from((PROBE_IP, c.probe_port));
    let token = format!("meshproxy-probe-{}", std::process::id());
    let deadline = Instant::now() + c.probe_timeout;
    let sender = {
        let token = token.clone();
        std::thread::spawn(move || {
            if let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                let _ = s.write_all(token.as_bytes());
            }
        })
    };
    let mut ok = false;
    while Instant::now() < deadline {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = vec![0u8; token.len()];
            ok = s.read_exact(&mut buf).is_ok()
                && buf == token.as_bytes()
                && original_destination(&s) == Some(target);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = sender.join();
    ok
}
