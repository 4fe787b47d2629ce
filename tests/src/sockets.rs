//! Socket options of a running proxy's own sockets, read from outside it: a test cannot
//! see the option of the far end of its connection from its own socket, so it borrows the
//! proxy's socket through `pidfd_getfd(2)` (root, or ptrace rights, is needed) and asks.

use nix::libc;
use std::os::fd::{FromRawFd, OwnedFd};

/// The proxy-side socket of the loopback TCP connection `local_port` <-> `remote_port`
/// (as the proxy sees it) in process `pid`: its fd number there, or `None` while the
/// proxy has not accepted it yet.
fn socket_fd(pid: u32, local_port: u16, remote_port: u16) -> Option<i32> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    let (local, remote) = (
        format!("0100007F:{local_port:04X}"),
        format!("0100007F:{remote_port:04X}"),
    );
    let inode = table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str()) && cols.get(2) == Some(&remote.as_str()))
            .then(|| cols.get(9).map(|s| s.to_string()))
            .flatten()
    })?;
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_str() == Some(&target)))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
}

/// Whether Nagle's algorithm is off (`TCP_NODELAY`) on process `pid`'s socket of the
/// loopback connection `local_port` <-> `remote_port`; `None` while it is not accepted.
pub fn tcp_nodelay(pid: u32, local_port: u16, remote_port: u16) -> Option<bool> {
    let fd = socket_fd(pid, local_port, remote_port)?;
    // SAFETY: plain syscalls; each returned descriptor is owned by the OwnedFd made of it.
    let borrowed = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0);
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let copy = libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            fd,
            0,
        );
        assert!(
            copy >= 0,
            "pidfd_getfd: {}",
            std::io::Error::last_os_error()
        );
        OwnedFd::from_raw_fd(copy as i32)
    };
    Some(
        nix::sys::socket::getsockopt(&borrowed, nix::sys::socket::sockopt::TcpNoDelay)
            .expect("getsockopt TCP_NODELAY"),
    )
}

/// How many sockets process `pid` holds open (its `/proc/<pid>/fd` entries that are
/// sockets): a leak of connections shows here even when memory stays flat.
pub fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}
