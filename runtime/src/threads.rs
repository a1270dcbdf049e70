//! A persistent worker pool (std builds): created with the session, it runs
//! one job at a time on every thread, the caller's included. Starting a job
//! spawns nothing and allocates nothing; workers spin briefly between jobs
//! and then sleep until the next one.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::vec::Vec;

/// A job: called once on every thread with `(thread index, thread count)`.
type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// The job of the current generation; written only while no worker runs one.
    job: UnsafeCell<Option<*const Job>>,
    generation: AtomicUsize,
    pending: AtomicUsize,
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Workers that finished starting up (thread start-up allocates).
    ready: AtomicUsize,
    sleeping: Vec<AtomicBool>,
    threads: usize,
}

// SAFETY: `job` is written by the caller of `run` only while every worker
// is idle (pending == 0), published by the Release increment of
// `generation`, and read by workers after their Acquire load of it; the
// pointee is `Sync` and outlives the job because `run` waits for `pending`
// to reach zero before returning.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// Spins before a worker goes to sleep (about 50 µs).
const SPINS: u32 = 20_000;
/// Longest sleep before a worker looks at the generation again.
const PARK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(10);

/// The pool. Dropping it stops and joins the workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<(JoinHandle<()>, Thread)>,
}

impl core::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.shared.threads)
    }
}

impl ThreadPool {
    /// A pool of `threads` threads in all: the caller and `threads - 1` workers.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            sleeping: (0..threads).map(|_| AtomicBool::new(false)).collect(),
            threads,
        });
        let mut workers = Vec::with_capacity(threads - 1);
        for index in 1..threads {
            let s = Arc::clone(&shared);
            let handle = thread::Builder::new()
                .name(std::format!("mote-{index}"))
                .spawn(move || worker(&s, index))?;
            let t = handle.thread().clone();
            workers.push((handle, t));
        }
        // Return only once every worker runs: their start-up (names, guard
        // pages) allocates, and must not fall into a step.
        while shared.ready.load(Ordering::Acquire) < threads - 1 {
            thread::yield_now();
        }
        Ok(ThreadPool { shared, workers })
    }

    /// Threads in the pool, the caller's included.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Runs `job(index, threads)` on every thread and returns when all are done.
    pub fn run(&self, job: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.shared.threads;
        if n == 1 {
            job(0, 1);
            return;
        }
        // SAFETY: no worker runs a job now (the previous `run` waited for
        // pending == 0), so nothing reads `job` while it is written. The
        // lifetime is erased; `run` outlives the job's use (see `Shared`).
        unsafe {
            let ptr: *const Job =
                core::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static Job>(job);
            *self.shared.job.get() = Some(ptr);
        }
        self.shared.pending.store(n - 1, Ordering::Relaxed);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        for (i, (_, t)) in self.workers.iter().enumerate() {
            // After the RMW above (see `worker`).
            if self.shared.sleeping[i + 1].load(Ordering::SeqCst) {
                t.unpark();
            }
        }
        job(0, n);
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            core::hint::spin_loop();
        }
        if self.shared.panicked.load(Ordering::Relaxed) {
            panic!("a mote worker thread panicked");
        }
    }
}

fn worker(s: &Shared, index: usize) {
    // Touch the thread handle once so that `park` later allocates nothing.
    let _ = thread::current();
    s.ready.fetch_add(1, Ordering::Release);
    let mut seen = 0;
    loop {
        let mut spins = 0u32;
        let generation = loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen || s.stop.load(Ordering::Relaxed) {
                break g;
            }
            spins += 1;
            if spins < SPINS {
                core::hint::spin_loop();
            } else {
                // Read-modify-writes on both sides (`swap` here, the
                // generation's `fetch_add` in `run`): either `run` sees this
                // worker asleep or the worker sees the new generation. Plain
                // SeqCst stores and loads would do in the memory model, but
                // qemu-user on x86 hosts was seen to reorder an aarch64
                // `stlr` before a later `ldar` (a worker slept through a job:
                // the cross tests hung); locked host RMWs cannot be. The
                // timeout bounds any wake-up still lost.
                s.sleeping[index].swap(true, Ordering::SeqCst);
                if s.generation.fetch_add(0, Ordering::SeqCst) == seen
                    && !s.stop.load(Ordering::SeqCst)
                {
                    thread::park_timeout(PARK_TIMEOUT);
                }
                s.sleeping[index].store(false, Ordering::SeqCst);
            }
        };
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        seen = generation;
        // SAFETY: the Acquire load of `generation` above synchronises with
        // the Release increment in `run`, which followed the write of `job`;
        // `run` keeps the job alive until `pending` reaches zero.
        let job = unsafe { (*s.job.get()).map(|p| &*p) };
        if let Some(job) = job {
            let ok =
                std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| job(index, s.threads)));
            if ok.is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, t) in &self.workers {
            t.unpark();
        }
        for (h, _) in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_every_job_once() {
        let pool = ThreadPool::new(3).unwrap();
        let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..1000 {
            pool.run(&|i, n| {
                assert_eq!(n, 3);
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1000));
    }

    #[test]
    fn sleeping_workers_wake_up() {
        let pool = ThreadPool::new(2).unwrap();
        let count = AtomicUsize::new(0);
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(20)); // workers park
            pool.run(&|_, _| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(count.load(Ordering::Relaxed), 6);
    }
}
