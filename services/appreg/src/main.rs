//! The `appreg` binary: see `appreg --help`.

/// jemalloc rather than the system allocator: the api's request path allocates many small,
/// short-lived values across threads, where glibc's malloc spent about a third of the api's CPU
/// time per create (README "Benchmarks", throughput).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    appreg::main()
}
