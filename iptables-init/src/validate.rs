//! `--run-validation`: proves the rules really redirect. A listener on the probe port (as
//! the proxy's inbound port would be) accepts a connection the kernel redirected there from
//! an address nobody listens on; success means the redirect works. istio-iptables exits
//! 126 when it does not.

use crate::config::Config;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The address the probe connects to: routed through ISTIO_OUTPUT, not local to anyone.
const PROBE_TARGET: &str = "10.255.255.254:80";

/// Whether a connection to an outside address reaches the probe listener through the
/// outbound redirect.
pub fn redirect_works(c: &Config) -> bool {
    let Ok(listener) = TcpListener::bind(("127.0.0.1", c.proxy_port.parse().unwrap_or(15001)))
    else {
        return false;
    };
    let _ = listener.set_nonblocking(true);
    let token = format!("meshproxy-probe-{}", std::process::id());
    let deadline = Instant::now() + c.probe_timeout;
    let sender = {
        let token = token.clone();
        std::thread::spawn(move || {
            if let Ok(mut s) = TcpStream::connect_timeout(
                &PROBE_TARGET.parse().expect("static address"),
                Duration::from_secs(2),
            ) {
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
            ok = s.read_exact(&mut buf).is_ok() && buf == token.as_bytes();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = sender.join();
    ok
}
