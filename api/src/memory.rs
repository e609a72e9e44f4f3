//! The server's memory: jemalloc's settings and statistics, and transparent huge pages off.

/// jemalloc's settings, read when it starts (before `main`); `_RJEM_MALLOC_CONF` in the
/// environment overrides them. Background threads purge freed pages on a timer, so memory
/// a thread freed goes back to the kernel even when that thread then sleeps (a blocking
/// pool thread, an idle SQL worker): without them, and with mimalloc before, the server's
/// memory kept growing under steady load (benches/RESULTS.md, "Soak"). Dirty pages are
/// given back after about a second, and straight away rather than through a second lazy
/// ("muzzy") stage, whose pages the kernel reclaims only under pressure but which count in
/// the RSS operators watch.
#[cfg(not(feature = "system-allocator"))]
#[allow(non_upper_case_globals, unsafe_code)]
// SAFETY: jemalloc reads this NUL-terminated string once, at its start; it is never written.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// What the allocator holds, for `/metrics`: bytes the program has allocated, and bytes of
/// physical memory the allocator keeps mapped (data, metadata and freed pages not yet given
/// back). Their gap is memory held for reuse; RSS beyond `resident` is not the heap's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    pub allocated: u64,
    pub resident: u64,
}

/// The allocator's statistics, or `None` with the system allocator.
pub fn allocator_stats() -> Option<AllocatorStats> {
    #[cfg(not(feature = "system-allocator"))]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        // Statistics are a snapshot taken when the epoch advances.
        epoch::advance().ok()?;
        Some(AllocatorStats {
            allocated: stats::allocated::read().ok()? as u64,
            resident: stats::resident::read().ok()? as u64,
        })
    }
    #[cfg(feature = "system-allocator")]
    None
}

/// Turns transparent huge pages off for this process: the kernel's khugepaged would
/// otherwise fill memory the allocator had given back into whole 2 MiB pages again (with
/// mimalloc, which asked for huge pages, a third of the server's memory under the soak
/// benchmark's load was such pages: benches/RESULTS.md, "Soak"). The process-wide flag
/// covers memory mapped before `main` too; the cost is fewer TLB hits for the analytics
/// paths.
#[allow(unsafe_code)] // prctl takes and returns plain integers; std has no wrapper
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE reads only its integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(feature = "system-allocator"))]
    fn the_settings_are_one_nul_terminated_string() {
        let text = std::ffi::CStr::from_bytes_with_nul(malloc_conf).unwrap();
        assert!(text.to_str().unwrap().contains("background_thread:true"));
    }

    #[test]
    #[cfg(not(feature = "system-allocator"))]
    fn the_statistics_see_an_allocation() {
        // Other tests allocate and free meanwhile: compare with the block's own size.
        let block = vec![1u8; 256 << 20];
        let during = allocator_stats().unwrap();
        assert!(during.allocated >= 256 << 20, "{during:?}");
        assert!(during.resident >= 256 << 20, "{during:?}");
        assert_eq!(block[block.len() - 1], 1);
    }

    #[test]
    #[cfg(not(feature = "system-allocator"))]
    fn jemalloc_runs_with_the_settings_above() {
        assert!(tikv_jemalloc_ctl::background_thread::read().unwrap());
    }
}
