//! The `contabo-rotator` binary: all work is in the library (`cli::main`).

fn main() -> std::process::ExitCode {
    tune_malloc();
    contabo_rotator::cli::main()
}

/// One glibc malloc arena, unless the environment sets the number
/// (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`),
/// so that no unit, container or shell has to.
///
/// glibc gives each thread that allocates its own arena (up to eight per
/// core), and memory freed in one arena is not reused by another: with the
/// runtime's workers and blocking threads taking turns on one pass, peak
/// RSS was 22.7 MiB at 3,000 credentials and 108 MiB at 30,000, against
/// 18.7 and 75 MiB with one arena (and less CPU: the work is I/O-bound, so
/// the lock is not contended). This is the binary's only allocator setting
/// and its only `unsafe` code; the library forbids `unsafe`. (A fixed mmap
/// threshold and no fastbins were tried too; each was within the runs'
/// noise at 3,000 credentials, and they were removed.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && !tunables
            .to_string_lossy()
            .contains("glibc.malloc.arena_max")
    {
        // SAFETY: called first thing in `main`, before any other thread
        // exists; mallopt only sets an allocator tunable.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
