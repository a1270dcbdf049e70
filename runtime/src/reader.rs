//! The expert reader: reads of expert groups into their slots, started
//! before the session needs them and run while it computes.
//!
//! One of three ways, chosen when the session starts:
//! - the storage's own background reads ([`Storage::reads_in_background`]:
//!   a DMA or QSPI driver's `start_read` / `poll_read`), with or without
//!   `std`;
//! - with `std`, one I/O thread that takes the session's reads from a
//!   queue, reads needed now before reads ahead, each in pieces of
//!   1 MiB so that a cancelled read stops within one piece;
//! - else each read runs when it is started (then nothing overlaps and the
//!   session starts no reads ahead: [`Reader::overlaps`]).
//!
//! The reader knows slots only by number: the expert cache decides which
//! slot a read fills and publishes it once the read was collected here
//! (`poll` or `wait`, exactly once per read). This module must never
//! allocate after [`Reader::new`], and must never let a read run past the
//! session call that started it: the session collects every read before
//! it returns, and a panic unwinding out of a step stops the I/O thread's
//! reads too ([`Reader::guard`]).

use crate::error::StorageError;
use crate::storage::{ReadStart, Storage};

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every byte is in the slot.
    Read,
    /// The storage failed.
    Failed(StorageError),
    /// It was cancelled before it finished.
    Cancelled,
}

/// The reader's view of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadState {
    /// No read to collect.
    Idle,
    /// The read ended (on start, for reads that run at once), `bytes` read.
    Ended { outcome: Outcome, bytes: usize },
    /// The storage reads `len` bytes in the background under `id`.
    Background {
        id: u32,
        len: usize,
        cancelled: bool,
    },
    /// The I/O thread has it.
    #[cfg(feature = "std")]
    Thread { cancelled: bool },
}

/// Bytes of one slot's [`ReadState`] as the plan counts them.
pub(crate) const READ_STATE_BYTES: usize = 48;
const _: () = assert!(core::mem::size_of::<ReadState>() <= READ_STATE_BYTES);

/// The session's reads.
pub(crate) struct Reader<'a> {
    state: &'a mut [ReadState],
    background: bool,
    in_flight: u32,
    /// Nanoseconds spent in [`Reader::wait`] for reads still running.
    pub(crate) blocked_ns: u64,
    #[cfg(feature = "std")]
    thread: Option<io_thread::IoThread>,
}

impl<'a> Reader<'a> {
    /// A reader for `state.len()` slots of a model on `storage`.
    pub(crate) fn new<S: Storage + crate::storage::MaybeSync>(
        state: &'a mut [ReadState],
        storage: &S,
    ) -> Result<Self, crate::error::Error> {
        state.fill(ReadState::Idle);
        let background = storage.reads_in_background();
        #[cfg(feature = "std")]
        let thread = match background {
            true => None,
            false => Some(io_thread::IoThread::new(state.len()).map_err(|e| {
                crate::error::Error::Storage(StorageError::Io {
                    code: e.raw_os_error().unwrap_or(-1),
                })
            })?),
        };
        Ok(Reader {
            state,
            background,
            in_flight: 0,
            blocked_ns: 0,
            #[cfg(feature = "std")]
            thread,
        })
    }

    /// True when started reads run while the session computes (so reading
    /// predicted experts ahead can pay).
    pub(crate) fn overlaps(&self) -> bool {
        #[cfg(feature = "std")]
        if self.thread.is_some() {
            return true;
        }
        self.background
    }

    /// Reads started and not yet collected.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// True when slot `slot`'s read was cancelled and not yet collected.
    pub(crate) fn cancelled(&self, slot: usize) -> bool {
        match self.state[slot] {
            ReadState::Background { cancelled, .. } => cancelled,
            #[cfg(feature = "std")]
            ReadState::Thread { cancelled } => cancelled,
            ReadState::Ended { .. } | ReadState::Idle => false,
        }
    }

    /// Starts reading `len` bytes at `offset` of `storage` into `dst`, for
    /// slot `slot`; `urgent` reads (needed now) go before the others.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `len` bytes and untouched by
    /// anything else until this slot's read is collected (`poll` returned
    /// `Some`, or `wait` returned), and `storage` must outlive that too.
    pub(crate) unsafe fn start<S: Storage + crate::storage::MaybeSync>(
        &mut self,
        storage: &S,
        slot: usize,
        offset: u64,
        dst: *mut u8,
        len: usize,
        urgent: bool,
    ) {
        debug_assert_eq!(self.state[slot], ReadState::Idle);
        self.in_flight += 1;
        #[cfg(feature = "std")]
        if let Some(thread) = &self.thread {
            let storage: &(dyn Storage + Sync) = storage;
            // SAFETY: the caller keeps `dst` and `storage` alive and
            // untouched until the read is collected, which the I/O thread
            // signals only after its last use of either.
            unsafe { thread.start(slot, storage, offset, dst, len, urgent) };
            self.state[slot] = ReadState::Thread { cancelled: false };
            return;
        }
        let _ = urgent;
        // SAFETY: passed on from the caller.
        self.state[slot] = match unsafe { storage.start_read(offset, dst, len) } {
            Ok(ReadStart::Done) => ReadState::Ended {
                outcome: Outcome::Read,
                bytes: len,
            },
            Ok(ReadStart::Pending(id)) => ReadState::Background {
                id,
                len,
                cancelled: false,
            },
            Err(e) => ReadState::Ended {
                outcome: Outcome::Failed(e),
                bytes: 0,
            },
        };
    }

    /// Asks slot `slot`'s read to stop early (the I/O thread drops it if it
    /// has not started it, or stops after the current piece; background
    /// and immediate reads run to their end). It must still be collected.
    pub(crate) fn cancel(&mut self, slot: usize) {
        match &mut self.state[slot] {
            ReadState::Background { cancelled, .. } => *cancelled = true,
            #[cfg(feature = "std")]
            ReadState::Thread { cancelled } => {
                *cancelled = true;
                if let Some(thread) = &self.thread {
                    thread.cancel(slot);
                }
            }
            ReadState::Ended { .. } | ReadState::Idle => {}
        }
    }

    /// Slot `slot`'s read's outcome and bytes read, if it ended (collected:
    /// the slot's bytes are the caller's again).
    pub(crate) fn poll<S: Storage>(
        &mut self,
        storage: &S,
        slot: usize,
    ) -> Option<(Outcome, usize)> {
        let ended = match self.state[slot] {
            ReadState::Idle => return None,
            ReadState::Ended { outcome, bytes } => (outcome, bytes),
            ReadState::Background { id, len, cancelled } => match storage.poll_read(id) {
                None => return None,
                Some(Ok(())) if cancelled => (Outcome::Cancelled, len),
                Some(Ok(())) => (Outcome::Read, len),
                Some(Err(e)) => (Outcome::Failed(e), 0),
            },
            #[cfg(feature = "std")]
            ReadState::Thread { .. } => self.thread.as_ref().and_then(|t| t.poll(slot))?,
        };
        self.state[slot] = ReadState::Idle;
        self.in_flight -= 1;
        Some(ended)
    }

    /// Waits for slot `slot`'s read (moving it before reads ahead) and
    /// collects it.
    pub(crate) fn wait<S: Storage>(&mut self, storage: &S, slot: usize) -> (Outcome, usize) {
        if let Some(ended) = self.poll(storage, slot) {
            return ended;
        }
        #[cfg(feature = "std")]
        let t0 = std::time::Instant::now();
        let ended = loop {
            #[cfg(feature = "std")]
            if let (ReadState::Thread { .. }, Some(thread)) = (self.state[slot], &self.thread) {
                thread.wait(slot);
            }
            if let Some(ended) = self.poll(storage, slot) {
                break ended;
            }
            core::hint::spin_loop();
        };
        #[cfg(feature = "std")]
        {
            self.blocked_ns += t0.elapsed().as_nanos() as u64;
        }
        ended
    }

    /// Something whose drop during a panic stops the I/O thread's reads
    /// and waits until none runs (so no read outlives an unwinding step).
    #[cfg(feature = "std")]
    pub(crate) fn guard(&self) -> Option<io_thread::PanicGuard> {
        self.thread.as_ref().map(|t| t.guard())
    }
}

#[cfg(feature = "std")]
mod io_thread {
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    use std::thread::JoinHandle;
    use std::vec::Vec;

    use super::Outcome;
    use crate::storage::Storage;

    /// Bytes the I/O thread reads at a time: the most a cancelled read goes
    /// on for, and small enough for the device's request queue.
    pub(crate) const PIECE: usize = 1 << 20;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Stage {
        Idle,
        Queued,
        Running,
        Ended(Outcome),
    }

    /// One slot's read.
    #[derive(Clone, Copy)]
    struct Job {
        stage: Stage,
        storage: Option<*const (dyn Storage + Sync + 'static)>,
        offset: u64,
        dst: *mut u8,
        len: usize,
        done: usize,
        urgent: bool,
        cancel: bool,
        seq: u64,
    }

    const IDLE: Job = Job {
        stage: Stage::Idle,
        storage: None,
        offset: 0,
        dst: core::ptr::null_mut(),
        len: 0,
        done: 0,
        urgent: false,
        cancel: false,
        seq: 0,
    };

    struct Queue {
        jobs: Vec<Job>,
        seq: u64,
        ready: bool,
        stop: bool,
    }

    struct Shared {
        queue: Mutex<Queue>,
        /// To the I/O thread: a job was queued, or stop.
        work: Condvar,
        /// To the session: a job ended.
        ended: Condvar,
    }

    // SAFETY: the raw pointers in `Job` (the storage, a slot's bytes) are
    // used by the I/O thread only while the job runs; `Reader::start`'s
    // caller keeps both alive and untouched until the job is collected,
    // which happens after the thread marked it ended under the lock. The
    // storage is `Sync`.
    unsafe impl Send for Shared {}
    // SAFETY: as above; every other field is behind the mutex.
    unsafe impl Sync for Shared {}

    fn lock(s: &Shared) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves plain data: go on.
        s.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The thread and its queue of one job per slot.
    pub(crate) struct IoThread {
        shared: Arc<Shared>,
        handle: Option<JoinHandle<()>>,
    }

    impl IoThread {
        /// Spawns the thread, with room for a job per slot of `slots`.
        pub(crate) fn new(slots: usize) -> std::io::Result<Self> {
            let shared = Arc::new(Shared {
                queue: Mutex::new(Queue {
                    jobs: std::vec![IDLE; slots],
                    seq: 0,
                    ready: false,
                    stop: false,
                }),
                work: Condvar::new(),
                ended: Condvar::new(),
            });
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name("mote-io".into())
                .spawn(move || run(&s))?;
            // Return once the thread runs: its start-up allocates.
            let mut q = lock(&shared);
            while !q.ready {
                q = shared.ended.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            drop(q);
            Ok(IoThread {
                shared,
                handle: Some(handle),
            })
        }

        /// Queues slot `slot`'s read.
        ///
        /// # Safety
        ///
        /// As [`super::Reader::start`]: `storage` and `dst` stay valid, and
        /// `dst` untouched, until the job is collected with `poll`.
        pub(crate) unsafe fn start(
            &self,
            slot: usize,
            storage: &(dyn Storage + Sync),
            offset: u64,
            dst: *mut u8,
            len: usize,
            urgent: bool,
        ) {
            // SAFETY: only the lifetime is erased; the pointer is used while
            // the job runs, which the caller keeps `storage` alive for.
            let storage: *const (dyn Storage + Sync + 'static) = unsafe {
                core::mem::transmute::<&(dyn Storage + Sync), &'static (dyn Storage + Sync)>(
                    storage,
                )
            };
            let mut q = lock(&self.shared);
            q.seq += 1;
            let seq = q.seq;
            q.jobs[slot] = Job {
                stage: Stage::Queued,
                storage: Some(storage),
                offset,
                dst,
                len,
                done: 0,
                urgent,
                cancel: false,
                seq,
            };
            drop(q);
            self.shared.work.notify_one();
        }

        /// Drops slot `slot`'s job if it has not started, else asks it to
        /// stop after its current piece.
        pub(crate) fn cancel(&self, slot: usize) {
            let mut q = lock(&self.shared);
            let job = &mut q.jobs[slot];
            match job.stage {
                Stage::Queued => job.stage = Stage::Ended(Outcome::Cancelled),
                Stage::Running => job.cancel = true,
                Stage::Idle | Stage::Ended(_) => {}
            }
        }

        /// Slot `slot`'s outcome and bytes read, once its job ended (the
        /// slot is then free of the thread).
        pub(crate) fn poll(&self, slot: usize) -> Option<(Outcome, usize)> {
            let mut q = lock(&self.shared);
            let job = &mut q.jobs[slot];
            match job.stage {
                Stage::Ended(outcome) => {
                    let done = job.done;
                    *job = IDLE;
                    Some((outcome, done))
                }
                _ => None,
            }
        }

        /// Blocks until slot `slot`'s job ended, moving it before the reads
        /// ahead if it has not started.
        pub(crate) fn wait(&self, slot: usize) {
            let mut q = lock(&self.shared);
            q.jobs[slot].urgent = true;
            while matches!(q.jobs[slot].stage, Stage::Queued | Stage::Running) {
                q = self.shared.ended.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        }

        pub(crate) fn guard(&self) -> PanicGuard {
            PanicGuard(Arc::clone(&self.shared))
        }
    }

    /// See [`super::Reader::guard`].
    pub(crate) struct PanicGuard(Arc<Shared>);

    impl Drop for PanicGuard {
        fn drop(&mut self) {
            if std::thread::panicking() {
                quiesce(&self.0);
            }
        }
    }

    /// Cancels every job and waits until none runs.
    fn quiesce(s: &Shared) {
        let mut q = lock(s);
        for job in q.jobs.iter_mut() {
            match job.stage {
                Stage::Queued => job.stage = Stage::Ended(Outcome::Cancelled),
                Stage::Running => job.cancel = true,
                Stage::Idle | Stage::Ended(_) => {}
            }
        }
        while q.jobs.iter().any(|j| j.stage == Stage::Running) {
            q = s.ended.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    impl Drop for IoThread {
        fn drop(&mut self) {
            quiesce(&self.shared);
            lock(&self.shared).stop = true;
            self.shared.work.notify_one();
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    fn run(s: &Shared) {
        let mut q = lock(s);
        q.ready = true;
        s.ended.notify_all();
        loop {
            if q.stop {
                return;
            }
            let next = (0..q.jobs.len())
                .filter(|&i| q.jobs[i].stage == Stage::Queued)
                .min_by_key(|&i| (!q.jobs[i].urgent, q.jobs[i].seq));
            let Some(i) = next else {
                q = s.work.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            q.jobs[i].stage = Stage::Running;
            let job = q.jobs[i];
            drop(q);
            let mut done = 0;
            let mut outcome = Outcome::Read;
            while done < job.len {
                let n = PIECE.min(job.len - done);
                // SAFETY: the job runs, so its starter keeps the storage
                // alive and the slot's `len` bytes at `dst` for this thread
                // alone until it is marked ended below.
                let (storage, dst) = unsafe {
                    (
                        &*job.storage.expect("a queued job has a storage"),
                        core::slice::from_raw_parts_mut(job.dst.add(done), n),
                    )
                };
                if let Err(e) = storage.read_at(job.offset + done as u64, dst) {
                    outcome = Outcome::Failed(e);
                    break;
                }
                done += n;
                if done < job.len && lock(s).jobs[i].cancel {
                    outcome = Outcome::Cancelled;
                    break;
                }
            }
            q = lock(s);
            q.jobs[i].done = done;
            q.jobs[i].stage = Stage::Ended(outcome);
            s.ended.notify_all();
        }
    }
}
