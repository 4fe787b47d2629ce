// Shared by several test binaries; each uses a subset of the helpers.
#![allow(dead_code)]

//! Network-namespace helpers shared by the kernel tests: create and remove namespaces, run
//! commands inside them (optionally as another uid/gid), and bound waits.

use std::process::{Child, Command, Output, Stdio};

/// A network namespace removed on drop (with every process started in it).
pub struct Netns {
    /// Its name (`ip netns` name).
    pub name: String,
    children: Vec<Child>,
}

impl Netns {
    /// Creates `<prefix>-<pid>-<n>` with loopback up; `None` (and a visible SKIP) when
    /// namespaces cannot be created here.
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

    /// A command inside the namespace.
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }

    /// Runs a shell line inside the namespace and asserts success.
    pub fn sh(&self, line: &str) -> String {
        let out = self
            .cmd("sh", &["-c", line])
            .output()
            .expect("run in netns");
        assert!(
            out.status.success(),
            "`{line}` in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a shell line inside the namespace, returning its output whatever the status.
    pub fn try_sh(&self, line: &str) -> Output {
        self.cmd("sh", &["-c", line])
            .output()
            .expect("run in netns")
    }

    /// Feeds `input` to a command inside the namespace.
    pub fn with_input(&self, program: &str, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(program, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts a background process inside the namespace (killed on drop).
    pub fn spawn(&mut self, line: &str) {
        let child = self
            .cmd("sh", &["-c", line])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in netns");
        self.children.push(child);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").arg(pid).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The iptables-init binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_iptables-init")
}

/// Dry-run output of iptables-init with `args` (clean environment).
pub fn dry_run(args: &[&str]) -> String {
    let out = Command::new(bin())
        .env_clear()
        .args(args)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
