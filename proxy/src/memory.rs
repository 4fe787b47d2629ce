//! Returning freed heap memory to the operating system. Start-up decodes and translates a
//! large config through big temporary structures (the descriptor pool, JSON trees); glibc
//! keeps that memory in its arenas unless asked, and the proxy's resident size is a figure
//! operators watch. Also what the process uses, for `server.memory_*` and `/memory`.

/// Worker counts up to which every thread shares one glibc malloc arena.
const SHARED_ARENA_WORKERS: usize = 2;

/// Keeps a small proxy's threads on one malloc arena; call before any thread starts.
/// glibc gives each allocating thread an arena of its own (up to eight per core), and
/// start-up work spread over threads (the descriptor pool is decoded beside the bootstrap's
/// parsing) leaves free pages scattered over several arenas: 6–7 MB of the resident size
/// with 5000 clusters. Each thread's small-allocation cache (tcache) keeps the data path
/// off the shared arena's lock, and the side-by-side benchmark shows no throughput change
/// at one or two workers; with more workers glibc's default stays.
pub fn limit_arenas(workers: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if workers <= SHARED_ARENA_WORKERS {
        // SAFETY: mallopt only sets an allocator tunable; no thread has allocated yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = workers;
}

/// After config work (start-up, `/config_dump`, an xDS update): drops the resident copies
/// of the binary's clean read-only pages ([`drop_clean_binary_pages`]), and asks the
/// allocator to hand free pages back to the OS (glibc `malloc_trim`; a no-op elsewhere).
pub fn release_free_memory() {
    #[cfg(target_os = "linux")]
    drop_clean_binary_pages();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops the resident copies of the binary's read-only pages: its code, constants and the
/// embedded descriptor set. Config work runs much code that serving never runs (proto3
/// JSON, descriptor decoding, translation), and its pages would otherwise stay resident
/// for the process's life. They are clean and file-backed, so the kernel maps a page back
/// from the page cache when it is used again: what stays resident is what serving touches.
/// A mapping holding any private (written) page, such as relocated read-only data, is
/// left alone.
#[cfg(target_os = "linux")]
fn drop_clean_binary_pages() {
    use std::os::unix::fs::MetadataExt;
    let (Ok(exe), Ok(path), Ok(smaps)) = (
        std::fs::metadata("/proc/self/exe"),
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/smaps"),
    ) else {
        return;
    };
    let Some(path) = path.to_str() else {
        return;
    };
    for (start, end) in clean_read_only_mappings(&smaps, path, exe.ino()) {
        // SAFETY: the range is a whole mapping of our own executable that is read-only and
        // holds no private page: MADV_DONTNEED only unmaps page-cache copies, which the
        // kernel maps again from the file on the next access.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// The address ranges in `smaps` (the text of `/proc/self/smaps`) that map the file at
/// `path` with inode `inode` read-only (no `w`) and hold no anonymous (copied-on-write) page.
fn clean_read_only_mappings(smaps: &str, path: &str, inode: u64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            let perms = fields.next().unwrap_or("");
            let file_inode = fields.nth(2).and_then(|i| i.parse::<u64>().ok());
            let file = fields.collect::<Vec<_>>().join(" ");
            let ours = file_inode == Some(inode) && file == path;
            current =
                (ours && perms.starts_with('r') && !perms.contains('w')).then_some((start, end));
        } else if first == "Anonymous:" {
            let anonymous_kb = fields.next().and_then(|k| k.parse::<u64>().ok());
            if let (Some(range), Some(0)) = (current.take(), anonymous_kb) {
                out.push(range);
            }
        }
    }
    out
}

/// The process's memory as Envoy's `server.memory_*` gauges report it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Bytes the allocator has handed out and not had back.
    pub allocated: u64,
    /// Bytes the allocator holds from the OS (in use or free in its arenas).
    pub heap_size: u64,
    /// Resident bytes of the whole process.
    pub physical: u64,
}

/// Reads the allocator's counters (glibc `mallinfo2`) and the resident size.
pub fn usage() -> Usage {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let physical = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's own statistics.
        let m = unsafe { libc::mallinfo2() };
        Usage {
            allocated: (m.uordblks + m.hblkhd) as u64,
            heap_size: (m.arena + m.hblkhd) as u64,
            physical,
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    Usage {
        allocated: physical,
        heap_size: physical,
        physical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:01 4242 /usr/local/bin/envoy
Rss:                 512 kB
Anonymous:             0 kB
55d0a0100000-55d0a0800000 r-xp 00100000 fd:01 4242 /usr/local/bin/envoy
Rss:                6296 kB
Anonymous:             0 kB
55d0a0800000-55d0a0900000 r--p 00800000 fd:01 4242 /usr/local/bin/envoy
Rss:                 300 kB
Anonymous:           120 kB
55d0a0900000-55d0a0910000 rw-p 00900000 fd:01 4242 /usr/local/bin/envoy
Anonymous:            64 kB
7f0000000000-7f0000200000 r-xp 00000000 fd:01 777 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000300000-7f0000400000 r-xp 00000000 fd:01 4242 /other/fs/same-inode
Anonymous:             0 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
Anonymous:           132 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_binary_are_dropped() {
        assert_eq!(
            clean_read_only_mappings(SMAPS, "/usr/local/bin/envoy", 4242),
            vec![
                (0x55d0a0000000, 0x55d0a0100000),
                (0x55d0a0100000, 0x55d0a0800000),
            ],
            "relocated read-only data, writable data, libraries and another file with the \
             same inode stay"
        );
        assert!(clean_read_only_mappings(SMAPS, "/usr/local/bin/envoy", 1).is_empty());
    }

    #[test]
    fn the_running_binary_keeps_working_after_its_pages_are_dropped() {
        let before = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let ours = clean_read_only_mappings(
            &before,
            exe.to_str().unwrap(),
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&exe).unwrap()),
        );
        assert!(
            !ours.is_empty(),
            "the test binary's code is a clean mapping"
        );
        release_free_memory();
        // Code and constants come back from the page cache as they are used.
        let text: String = (0..3).map(|i| format!("{i}")).collect();
        assert_eq!(text, "012");
    }
}
