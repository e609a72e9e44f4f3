//! The server's memory and the kernel: transparent huge pages off.

/// Turns transparent huge pages off for this process. mimalloc asks for them on its arenas
/// (`MADV_HUGEPAGE`), and the kernel's khugepaged then fills memory the allocator had given
/// back into whole 2 MiB pages again: under the soak benchmark's load a third of the
/// server's memory was such pages (benches/RESULTS.md, "Soak"). The process-wide flag covers
/// the arenas reserved before `main` too; the cost is fewer TLB hits for the analytics
/// paths. Like `MIMALLOC_ALLOW_THP=0`, but not left to the environment.
#[allow(unsafe_code)] // prctl takes and returns plain integers; std has no wrapper
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE reads only its integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
