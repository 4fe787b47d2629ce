//! Returning freed heap memory to the operating system. Start-up decodes and translates a
//! large config through big temporary structures (the descriptor pool, JSON trees); glibc
//! keeps that memory in its arenas unless asked, and the proxy's resident size is a figure
//! operators watch.

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
