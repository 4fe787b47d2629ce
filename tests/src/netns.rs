//! Network namespaces for tests that need real interception: "pods" (namespaces) on a
//! bridge, commands run inside them, and sockets created inside them from the test
//! process itself (a thread that joins the namespace creates the socket; the socket stays
//! in that namespace whichever thread uses it afterwards).

use std::process::{Child, Command, Output, Stdio};

/// A network namespace, removed on drop with every process started in it.
pub struct Netns {
    /// Its `ip netns` name.
    pub name: String,
    children: Vec<Child>,
}

impl Netns {
    /// Creates `<prefix>-<pid>-<n>` with loopback up; `None` (and a visible SKIP) where
    /// namespaces cannot be created. Under CI a failure to create one is a test failure:
    /// `.ci/run` runs as root with iproute2 installed.
    pub fn create(prefix: &str) -> Option<Netns> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").is_err(),
                "network namespaces must work in CI (root, iproute2)"
            );
            eprintln!("SKIP: cannot create network namespaces here (needs root and iproute2)");
            return None;
        }
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.sh("ip link set lo up");
        Some(ns)
    }

    /// `program args` inside the namespace.
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }

    /// Runs a shell line inside the namespace, asserting success; its stdout.
    pub fn sh(&self, line: &str) -> String {
        let out = self.try_sh(line);
        assert!(
            out.status.success(),
            "`{line}` in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a shell line inside the namespace, whatever its exit status.
    pub fn try_sh(&self, line: &str) -> Output {
        self.cmd("sh", &["-c", line])
            .output()
            .expect("run in netns")
    }

    /// Feeds `input` to `program args` inside the namespace; its output.
    pub fn with_input(&self, program: &str, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(program, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in the namespace");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }

    /// Starts `command` inside the namespace in the background (killed on drop).
    pub fn spawn(&mut self, mut command: Command) {
        self.children
            .push(command.spawn().expect("spawn in the namespace"));
    }

    /// Starts a shell line inside the namespace in the background, output discarded
    /// (killed on drop).
    pub fn spawn_sh(&mut self, line: &str) {
        let mut c = self.cmd("sh", &["-c", line]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        self.spawn(c);
    }

    /// Starts meshproxy inside the namespace as an injected sidecar runs: gid 1337, which
    /// Istio's redirect rules exempt, with uid `uid` (1337 in REDIRECT mode; 0 in TPROXY
    /// mode, where the injector runs the proxy as root for IP_TRANSPARENT), one worker, on
    /// `bootstrap` written to `dir` (its log goes to `dir/stderr`). Returns the
    /// bootstrap's path.
    pub fn spawn_sidecar(
        &mut self,
        dir: &std::path::Path,
        bootstrap: &str,
        uid: u32,
    ) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("bootstrap.json");
        std::fs::write(&path, bootstrap).expect("write the bootstrap");
        // Readable by uid 1337.
        for (p, mode) in [(dir, 0o755), (path.as_path(), 0o644)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .expect("permissions");
        }
        let bin = crate::proxy::meshproxy_bin();
        let mut c = self.cmd(
            "setpriv",
            &[
                "--reuid",
                &uid.to_string(),
                "--regid",
                "1337",
                "--clear-groups",
                bin.to_str().expect("utf-8 path"),
                "-c",
                path.to_str().expect("utf-8 path"),
                "--concurrency",
                "1",
            ],
        );
        c.stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).expect("log file"));
        self.spawn(c);
        path
    }

    /// Runs `f` on a thread that has joined this namespace, so the sockets `f` creates
    /// (listeners, client connections) live in it.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("join the namespace");
            f()
        })
        .join()
        .expect("thread inside the namespace")
    }

    /// A TCP listener bound inside the namespace.
    pub fn bind(&self, addr: &str) -> std::net::TcpListener {
        let addr = addr.to_string();
        self.enter(move || std::net::TcpListener::bind(&addr).expect("bind in the namespace"))
    }

    /// A TCP connection made from inside the namespace.
    pub fn connect(&self, addr: &str) -> std::io::Result<std::net::TcpStream> {
        let addr: std::net::SocketAddr = addr.parse().expect("socket address");
        self.enter(move || {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Hosts on one layer-2 segment: a bridge in a namespace of its own and one namespace per
/// host, host `i` at `10.<net>.0.<i+1>/24` on its `eth0`.
pub struct Lan {
    /// The hosts, in the order asked for.
    pub hosts: Vec<Netns>,
    net: u8,
    /// The namespace holding the bridge (dropped last).
    _bridge: Netns,
}

impl Lan {
    /// Creates `count` hosts on subnet `10.<net>.0.0/24`; `None` where namespaces cannot
    /// be created (see [`Netns::create`]).
    pub fn create(prefix: &str, net: u8, count: usize) -> Option<Lan> {
        let bridge = Netns::create(&format!("{prefix}-br"))?;
        bridge.sh("ip link add br0 type bridge && ip link set br0 up");
        let mut hosts = Vec::new();
        for i in 0..count {
            let host = Netns::create(&format!("{prefix}-h{i}"))?;
            bridge.sh(&format!(
                "ip link add p{i} type veth peer name eth0 netns {} && ip link set p{i} master br0 && ip link set p{i} up",
                host.name
            ));
            host.sh(&format!(
                "ip addr add 10.{net}.0.{}/24 dev eth0 && ip link set eth0 up",
                i + 1
            ));
            hosts.push(host);
        }
        Some(Lan {
            hosts,
            net,
            _bridge: bridge,
        })
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.net, i + 1)
    }
}
