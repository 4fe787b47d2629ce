//! Returning freed heap memory to the operating system. Start-up decodes and translates a
//! large config through big temporary structures (the descriptor pool, JSON trees); glibc
//! keeps that memory in its arenas unless asked, and the proxy's resident size is a figure
//! operators watch. Also what the process uses, for `server.memory_*` and `/memory`.

/// After config work (start-up, `/config_dump`): drops the resident copy of the embedded
/// descriptor set when no one holds the decoded pool, and asks the allocator to hand free
/// pages back to the OS (glibc `malloc_trim`; a no-op elsewhere).
pub fn release_free_memory() {
    xds_client::descriptors::release_embedded_set();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
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
