//! The rayon pool every kernel runs on. Its size comes from `CORTEX_NUM_THREADS` (default: all
//! cores) and can be changed at run time with [`set_num_threads`]; work started earlier keeps the
//! pool it started on.
//!
//! The workers run at a lower scheduling priority than the rest of the process (nice +10 by
//! default, `CORTEX_WORKER_NICE` to change, 0 to keep). The pool takes every core, and on a
//! small machine Node's main thread then waited behind the workers for its time slice: the
//! event loop stalled for up to 70 ms in a 2-core run. With the workers niced, the kernel
//! preempts them the moment the main thread wakes; when nothing else wants the CPU they keep
//! all of it, so training throughput does not change (benches/eventloop.ts measures both).

use std::sync::{Arc, OnceLock, RwLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::{Error, Result};

fn slot() -> &'static RwLock<Arc<ThreadPool>> {
    static POOL: OnceLock<RwLock<Arc<ThreadPool>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let from_env = std::env::var("CORTEX_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok());
        let n = from_env.filter(|&n| n > 0).unwrap_or_else(default_threads);
        RwLock::new(Arc::new(build(n).expect("cannot start the cortex-nn thread pool")))
    })
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn build(n: usize) -> Result<ThreadPool> {
    ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("cortex-nn-{i}"))
        .start_handler(|_| lower_priority())
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start a pool of {n} threads: {e}")))
}

/// The pool new work runs on.
pub fn pool() -> Arc<ThreadPool> {
    slot().read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Runs `f` on the cortex-nn pool, so every rayon call inside it uses our threads.
pub fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}

thread_local! {
    /// A one-thread pool whose only worker is this thread (rayon's `use_current_thread`).
    static SERIAL: std::cell::OnceCell<Option<ThreadPool>> = const { std::cell::OnceCell::new() };
}

/// Runs `f` on the calling thread with every kernel serial: no hop to the pool and no cross-
/// thread wake-ups. For small work (a batch-1 predict) those hops cost more than the second core
/// saves; the profile of a batch-1 MLP predict showed more time in the scheduler than in GEMM.
pub fn run_serial<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    SERIAL.with(|cell| {
        let pool = cell.get_or_init(|| {
            ThreadPoolBuilder::new()
                .num_threads(1)
                .use_current_thread()
                .thread_name(|_| "cortex-nn-serial".into())
                .build()
                .ok()
        });
        match pool {
            // This thread is the pool's worker, so `install` runs `f` right here.
            Some(pool) => pool.install(f),
            None => run(f),
        }
    })
}

/// Number of threads kernels use.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Resizes the pool (at least 1 thread).
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Invalid(
            "setNumThreads: expected a positive integer, got 0".into(),
        ));
    }
    let new_pool = Arc::new(build(n)?);
    *slot().write().unwrap_or_else(|e| e.into_inner()) = new_pool;
    Ok(())
}

/// Nice value of the worker threads: `CORTEX_WORKER_NICE` (0..=19), default 10.
fn worker_nice() -> i32 {
    std::env::var("CORTEX_WORKER_NICE")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .map(|n| n.clamp(0, 19))
        .unwrap_or(10)
}

/// Lowers the calling thread's priority (Linux: `setpriority` on the thread id affects that
/// thread only). Best effort: a failure leaves the thread at normal priority.
#[cfg(target_os = "linux")]
fn lower_priority() {
    let nice = worker_nice();
    if nice > 0 {
        // SAFETY: plain syscalls on the calling thread, no pointers involved.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid, nice);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_serial_runs_on_the_calling_thread_with_one_kernel_thread() {
        let caller = std::thread::current().id();
        let (thread, n) = run_serial(|| (std::thread::current().id(), rayon::current_num_threads()));
        assert_eq!((thread, n), (caller, 1));
        // A second call reuses the thread's pool, and parallel iterators inside it still work.
        let sum: u64 = run_serial(|| {
            use rayon::prelude::*;
            (0..1000u64).into_par_iter().sum()
        });
        assert_eq!(sum, 499_500);
    }
}
