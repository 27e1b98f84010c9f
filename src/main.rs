//! The `contabo-rotator` binary: all work is in the library (`cli::main`).

fn main() -> std::process::ExitCode {
    tune_malloc();
    contabo_rotator::cli::main()
}

/// Three glibc malloc tunables, each unless the environment sets it (an
/// explicit `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_` or
/// `glibc.malloc.mxfast` in `GLIBC_TUNABLES` still wins), so that no unit,
/// container or shell has to set them.
///
/// - **One arena.** glibc gives each thread that allocates its own arena
///   (up to eight per core), and memory freed in one arena is not reused by
///   another: with the runtime's workers and blocking threads taking turns
///   on one pass, peak RSS was 22.7 MiB at 3,000 credentials and 108 MiB at
///   30,000, against 18.7 and 75 MiB with one arena (and less CPU: the work
///   is I/O-bound, so the lock is not contended).
/// - **A fixed mmap threshold of 128 KiB**, glibc's starting value. By
///   default glibc raises the threshold to the size of each mmapped block
///   freed (up to 32 MiB), so after the first large buffers (rendered
///   aggregate files, the records' and outbox's lists) are freed, later
///   ones come from the heap and leave holes in it that the heap's top
///   cannot give back. Fixed, a block of 128 KiB or more is always mapped
///   and returned whole when freed: 30,000 credentials 27.7-28.5 to
///   27.0-27.1 MiB peak RSS (five runs against four; 3,000 credentials and
///   CPU time within the runs' noise).
/// - **No fastbins.** glibc keeps freed blocks of up to 128 bytes in
///   per-size lists without merging them with their free neighbours, so
///   the many short-lived small blocks of a pass (parsed listings, request
///   headers) left the heap in pieces between the long-lived ones (the
///   values, the user list). With `M_MXFAST` at 0 they are merged when
///   freed (the per-thread cache, which holds a few blocks per size, stays).
///   30,000 credentials at 0 ms, runs alternated: concurrency 8, 23.4 /
///   23.7 to 22.8 / 23.4 MiB; concurrency 32, 25.4 / 26.1 to 24.9 / 25.6
///   (0.9-1.1 MiB less in a first trial through `GLIBC_TUNABLES`); 3,000
///   credentials and CPU time within the runs' noise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    // SAFETY (all three calls): called first thing in `main`, before any other
    // thread exists; mallopt only sets an allocator tunable.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    }
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    if !tunables.to_string_lossy().contains("glibc.malloc.mxfast") {
        unsafe { libc::mallopt(libc::M_MXFAST, 0) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
