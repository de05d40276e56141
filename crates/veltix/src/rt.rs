//! The shared tokio runtime behind the synchronous API, and small clock helpers. (How the
//! blocking face waits for it is `blocking`.)

use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

/// The runtime a new async server or client runs on: the current tokio runtime, or the shared
/// one ([`handle`]) outside any runtime.
pub(crate) fn current_or_shared() -> Handle {
    Handle::try_current().unwrap_or_else(|_| handle())
}

/// The process-wide runtime used by the blocking API: one multi-threaded runtime for every
/// `Server` and `Client`, so a program with many clients does not pay a runtime each.
///
/// It has [`io_threads`] workers. Synchronous handlers do not run there (they run on the
/// process-wide handler pool, `pool`), so the I/O threads only read, decode, route, write and
/// poll async handlers' futures.
pub(crate) fn handle() -> Handle {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(io_threads())
            .thread_name("veltix-io")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the veltix I/O runtime: {e}"))
    })
    .handle()
    .clone()
}

/// I/O threads of the shared runtime: `VELTIX_IO_THREADS` if set to a positive number, else
/// half the CPUs (at least one); the other half is left to the handler pool.
///
/// Measured with `veltix bench` on 2 vCPUs: with 2 I/O workers, tokio wakes the idle worker
/// for work the busy one already has, and a loopback ping round trip took 2x as long (p50
/// 26-32 us against 16-17 us with one worker; p99 76-102 us against 35-48 us), with the same
/// burst and stress throughput.
pub(crate) fn io_threads() -> usize {
    std::env::var("VELTIX_IO_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            (cpus / 2).max(1)
        })
}

/// `CLOCK_MONOTONIC` in milliseconds, what Python 1.6.9 writes in the Gen 1 header timestamp, so
/// a Python 1.6.9 peer on the same host computes a sensible `Response.latency` from our frames.
pub(crate) fn monotonic_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1000 + (t.tv_nsec as u64) / 1_000_000
}
