//! Splitting a step's matrix-vector products across threads: each thread
//! takes its share of every matrix's rows. Without `std` (or with one
//! thread) everything runs on the caller's thread.

use crate::error::Error;
use crate::kernels::{Activations, BatchActs, Kernels, Matrix};

/// One matrix-vector product of a parallel region: `out` has `w.rows` values.
pub struct MatvecJob<'x> {
    /// The weights.
    pub w: Matrix<'x>,
    /// The input.
    pub x: Activations<'x>,
    /// Start of the `w.rows` outputs (disjoint from every other job's).
    pub out: *mut f32,
}

/// One batched product of a parallel region: `out` has `x.tokens × w.rows`
/// values, token-major.
pub struct MatmulJob<'x> {
    /// The weights.
    pub w: Matrix<'x>,
    /// The tokens' inputs.
    pub x: BatchActs<'x>,
    /// Start of the outputs (disjoint from every other job's).
    pub out: *mut f32,
}

/// Work below this many weight bytes runs on one thread: waking the
/// others costs more than it saves.
#[cfg(feature = "std")]
const MIN_PARALLEL_BYTES: usize = 32 * 1024;

/// The threads a session computes with.
pub struct Parallel {
    #[cfg(feature = "std")]
    pool: Option<crate::threads::ThreadPool>,
}

impl core::fmt::Debug for Parallel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Parallel({} threads)", self.threads())
    }
}

impl Parallel {
    /// `threads` threads in all (the caller's included).
    pub fn new(threads: u32) -> Result<Self, Error> {
        #[cfg(feature = "std")]
        {
            let pool = if threads > 1 {
                let pool = crate::threads::ThreadPool::new(threads as usize).map_err(|e| {
                    Error::Storage(crate::error::StorageError::Io {
                        code: e.raw_os_error().unwrap_or(-1),
                    })
                })?;
                Some(pool)
            } else {
                None
            };
            Ok(Parallel { pool })
        }
        #[cfg(not(feature = "std"))]
        {
            if threads > 1 {
                return Err(Error::BadLimits {
                    reason: "more than one thread needs the std feature",
                });
            }
            Ok(Parallel {})
        }
    }

    /// Threads in use.
    pub fn threads(&self) -> usize {
        #[cfg(feature = "std")]
        if let Some(p) = &self.pool {
            return p.threads();
        }
        1
    }

    /// Runs every job, rows split across the threads.
    pub fn run(&self, kernels: &Kernels, jobs: &[MatvecJob<'_>]) {
        let bytes: usize = jobs.iter().map(|j| j.w.data.len()).sum();
        #[cfg(feature = "std")]
        if let Some(pool) = &self.pool {
            if bytes >= MIN_PARALLEL_BYTES {
                let jobs = SendJobs(jobs);
                pool.run(&|t, n| run_share(kernels, jobs.get(), t, n));
                return;
            }
        }
        let _ = bytes;
        run_share(kernels, jobs, 0, 1);
    }
}

impl Parallel {
    /// Calls `f(item)` for every item in `0..items`, each thread taking a
    /// contiguous share.
    pub fn for_each(&self, items: usize, f: &(dyn Fn(usize) + Sync)) {
        let share = |t: usize, n: usize| (items * t / n..items * (t + 1) / n).for_each(f);
        #[cfg(feature = "std")]
        if let Some(pool) = &self.pool {
            if items > 1 {
                pool.run(&share);
                return;
            }
        }
        share(0, 1);
    }
}

impl Parallel {
    /// Runs every batched product, each thread taking a share of the tokens
    /// (its outputs are then one contiguous run).
    pub fn run_batch(&self, kernels: &Kernels, jobs: &[MatmulJob<'_>]) {
        #[cfg(feature = "std")]
        if let Some(pool) = &self.pool {
            if jobs.iter().any(|j| j.x.tokens > 1) {
                let jobs = SendBatch(jobs);
                pool.run(&|t, n| run_batch_share(kernels, jobs.get(), t, n));
                return;
            }
        }
        run_batch_share(kernels, jobs, 0, 1);
    }
}

/// Batched jobs shared with the worker threads.
#[cfg(feature = "std")]
struct SendBatch<'j, 'x>(&'j [MatmulJob<'x>]);
// SAFETY: inputs are shared reads; each thread writes only the outputs of
// its own tokens (see `run_batch_share`); the region ends before `run_batch` returns.
#[cfg(feature = "std")]
unsafe impl Sync for SendBatch<'_, '_> {}

#[cfg(feature = "std")]
impl<'j, 'x> SendBatch<'j, 'x> {
    fn get(&self) -> &'j [MatmulJob<'x>] {
        self.0
    }
}

/// Thread `t` of `n` computes every job for its tokens.
fn run_batch_share(kernels: &Kernels, jobs: &[MatmulJob<'_>], t: usize, n: usize) {
    for job in jobs {
        let tokens = (job.x.tokens * t / n)..(job.x.tokens * (t + 1) / n);
        if tokens.is_empty() {
            continue;
        }
        let rows = job.w.rows;
        // SAFETY: `out` points at `x.tokens * rows` f32s written by this
        // region only; token ranges of the threads are disjoint.
        let out = unsafe {
            core::slice::from_raw_parts_mut(job.out.add(tokens.start * rows), tokens.len() * rows)
        };
        let x = job.x.slice(tokens);
        if x.tokens == 1 {
            kernels.matvec(&job.w, &x.token(0, job.w.cols), out);
        } else {
            kernels.matmul(&job.w, &x, out);
        }
    }
}

/// A raw pointer handed to worker threads that write disjoint parts of it.
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);
// SAFETY: only used for buffers whose parts are written by one thread each
// (the caller's contract); the region ends before the buffer is used again.
unsafe impl<T> Sync for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T> Send for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole wrapper).
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// Jobs shared with the worker threads.
#[cfg(feature = "std")]
struct SendJobs<'j, 'x>(&'j [MatvecJob<'x>]);
// SAFETY: the jobs' inputs are shared reads; each thread writes only its
// own row range of each `out` (see `run_share`), and `Parallel::run`
// returns only after every thread finished.
#[cfg(feature = "std")]
unsafe impl Sync for SendJobs<'_, '_> {}

#[cfg(feature = "std")]
impl<'j, 'x> SendJobs<'j, 'x> {
    fn get(&self) -> &'j [MatvecJob<'x>] {
        self.0
    }
}

/// Thread `t` of `n` computes its rows of every job.
fn run_share(kernels: &Kernels, jobs: &[MatvecJob<'_>], t: usize, n: usize) {
    for job in jobs {
        // Shares start at a multiple of the layout's row group (four rows
        // of a rows4 matrix are stored together).
        let group = job.w.layout.row_group();
        let cut = |t: usize| (job.w.rows.div_ceil(group) * t / n * group).min(job.w.rows);
        let rows = cut(t)..cut(t + 1);
        if rows.is_empty() {
            continue;
        }
        let w = job.w.rows(rows.clone());
        // SAFETY: `out` points at `job.w.rows` f32s that nothing else reads
        // or writes during the region; the row ranges of the threads are
        // disjoint, so this slice is this thread's alone.
        let out = unsafe { core::slice::from_raw_parts_mut(job.out.add(rows.start), rows.len()) };
        kernels.matvec(&w, &job.x, out);
    }
}
