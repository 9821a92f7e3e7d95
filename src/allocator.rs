//! Keeping freed memory for reuse. A forward pass over a batch of long
//! windows allocates and frees hundreds of megabytes; by default glibc hands
//! large blocks back to the kernel at once, and the next pass pays for
//! faulting in fresh zeroed pages (29% of QA time in a profile). Raising the
//! mmap and trim thresholds keeps those pages in the heap.

/// Blocks up to this size come from the heap (glibc's maximum).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 * 1024 * 1024;
/// Free memory kept at the top of the heap before it is returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = i32::MAX;
/// Extra heap requested each time it grows.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: i32 = 256 * 1024 * 1024;

/// Applies the thresholds; returns whether the allocator took them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn retain_freed_memory() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is called at
    // start-up before the model threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            && libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn retain_freed_memory() -> bool {
    false
}
