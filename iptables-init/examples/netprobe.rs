//! Test helper for the network-namespace tests (built by `cargo test`, never shipped):
//!
//! - `netprobe stub`: the stand-in proxy. Listens on TCP 15001/15006 (IPv4 and IPv6, with
//!   IPv4 IP_TRANSPARENT when allowed) and UDP 15053; answers each connection with
//!   `<port> <original destination>` (SO_ORIGINAL_DST, or the local address under TPROXY).
//! - `netprobe server <name> <addr:port>...`: answers `<name> <port>` on each address, and
//!   `<name>-dns` on UDP 53.
//! - `netprobe client <addr:port> [<source ip> | udp]`: prints the first line received.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

fn original_destination(s: &TcpStream) -> String {
    let local = s.local_addr().expect("local address");
    let orig = if local.is_ipv4() {
        nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::OriginalDst)
            .ok()
            .map(|a| {
                SocketAddr::new(
                    std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                    u16::from_be(a.sin_port),
                )
            })
    } else {
        nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::Ip6tOriginalDst)
            .ok()
            .map(|a| {
                SocketAddr::new(
                    std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into(),
                    u16::from_be(a.sin6_port),
                )
            })
    };
    orig.unwrap_or(local).to_string()
}

fn listen(addr: SocketAddr, transparent: bool) -> TcpListener {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).expect("reuse");
    if addr.is_ipv6() {
        s.set_only_v6(true).expect("v6only");
    }
    // TPROXY delivers to sockets with IP_TRANSPARENT (the TPROXY test is IPv4 only).
    if transparent && addr.is_ipv4() {
        let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::IpTransparent, &true);
    }
    s.bind(&addr.into())
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s.listen(64).expect("listen");
    s.into()
}

fn serve(l: TcpListener, answer: impl Fn(&TcpStream) -> String + Send + 'static) {
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let line = answer(&c);
            let _ = c.write_all(format!("{line}\n").as_bytes());
        }
    });
}

fn udp(addr: &str, reply: String) {
    let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{reply}\n").as_bytes(), from);
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("stub") => {
            for port in [15001u16, 15006] {
                for ip in ["0.0.0.0", "::"] {
                    let l = listen(SocketAddr::new(ip.parse().expect("ip"), port), true);
                    serve(l, move |c| format!("{port} {}", original_destination(c)));
                }
            }
            udp("0.0.0.0:15053", "dns-captured".into());
            std::thread::park();
        }
        Some("server") => {
            let name = args[1].clone();
            for spec in &args[2..] {
                let addr: SocketAddr = spec.parse().expect("address");
                let name = name.clone();
                serve(listen(addr, false), move |c| {
                    format!("{name} {}", c.local_addr().map(|a| a.port()).unwrap_or(0))
                });
            }
            if name == "peer" {
                udp("0.0.0.0:53", format!("{name}-dns"));
            }
            std::thread::park();
        }
        Some("client") => {
            let target: SocketAddr = args[1].parse().expect("target");
            let mut buf = [0u8; 512];
            if args.get(2).map(String::as_str) == Some("udp") {
                let s = UdpSocket::bind(if target.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                })
                .expect("udp");
                s.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                s.send_to(b"q", target).expect("send");
                let n = s.recv(&mut buf).unwrap_or(0);
                print!("{}", String::from_utf8_lossy(&buf[..n]));
                return;
            }
            let domain = if target.is_ipv4() {
                socket2::Domain::IPV4
            } else {
                socket2::Domain::IPV6
            };
            let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
            if let Some(src) = args.get(2) {
                s.bind(&SocketAddr::new(src.parse().expect("source"), 0).into())
                    .expect("bind source");
            }
            if s.connect_timeout(&target.into(), Duration::from_secs(3))
                .is_err()
            {
                return;
            }
            let mut c: TcpStream = s.into();
            c.set_read_timeout(Some(Duration::from_secs(3)))
                .expect("timeout");
            let n = c.read(&mut buf).unwrap_or(0);
            let _ = c.as_raw_fd();
            print!("{}", String::from_utf8_lossy(&buf[..n]));
        }
        _ => {
            eprintln!("usage: netprobe stub | server <name> <addr:port>... | client <addr:port> [<source ip> | udp]");
            std::process::exit(2);
        }
    }
}
