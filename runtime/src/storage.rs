//! Where a model's bytes come from: flash, a byte slice, a file, a memory map.
//!
//! `read_at` takes `&self` so that sessions can share one model and a reader
//! thread can page experts while the compute thread works; storages with
//! mutable device state keep it behind their own lock.

use crate::error::StorageError;

/// Random-access, read-only bytes.
pub trait Storage {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// True when the storage holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `dst` with the bytes at `offset..offset + dst.len()`.
    fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), StorageError>;

    /// All bytes, when they are already addressable (slice, mmap, XIP
    /// flash): weights are then used in place, with no copy.
    fn as_slice(&self) -> Option<&[u8]> {
        None
    }

    /// A hint that `offset..offset + len` will be read soon: a storage that
    /// can start reading in the background (the OS read-ahead, a DMA
    /// engine) does so. Never required, never fails.
    fn prefetch(&self, _offset: u64, _len: u64) {}
}

/// `Sync` where threads exist (std builds: worker threads read expert
/// slices in parallel), nothing on single-threaded `no_std` targets, so a
/// driver holding a `RefCell` still works there.
#[cfg(feature = "std")]
pub trait MaybeSync: Sync {}
#[cfg(feature = "std")]
impl<T: Sync + ?Sized> MaybeSync for T {}
/// `Sync` where threads exist (std builds), nothing on `no_std` targets.
#[cfg(not(feature = "std"))]
pub trait MaybeSync {}
#[cfg(not(feature = "std"))]
impl<T: ?Sized> MaybeSync for T {}

/// Checks that `offset..offset + len` lies inside `storage_len` bytes.
pub fn check_range(offset: u64, len: u64, storage_len: u64) -> Result<(), StorageError> {
    match offset.checked_add(len) {
        Some(end) if end <= storage_len => Ok(()),
        _ => Err(StorageError::OutOfRange {
            offset,
            len,
            storage_len,
        }),
    }
}

/// A model held in memory: `include_bytes!`, memory-mapped flash, a test buffer.
#[derive(Debug, Clone, Copy)]
pub struct SliceStorage<'a> {
    bytes: &'a [u8],
}

impl<'a> SliceStorage<'a> {
    /// Wraps `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        SliceStorage { bytes }
    }
}

impl Storage for SliceStorage<'_> {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), StorageError> {
        check_range(offset, dst.len() as u64, self.len())?;
        let start = offset as usize;
        dst.copy_from_slice(&self.bytes[start..start + dst.len()]);
        Ok(())
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(self.bytes)
    }
}

impl<S: Storage + ?Sized> Storage for &S {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), StorageError> {
        (**self).read_at(offset, dst)
    }
    fn as_slice(&self) -> Option<&[u8]> {
        (**self).as_slice()
    }
    fn prefetch(&self, offset: u64, len: u64) {
        (**self).prefetch(offset, len)
    }
}

/// A storage that fails on demand, for testing what a session does when a
/// read fails (a flash error, an unplugged card). It is never addressable,
/// so a model on it pages its experts like one on a file.
#[derive(Debug)]
pub struct FaultyStorage<S> {
    inner: S,
    /// Reads of more than this many bytes fail (`usize::MAX`: none).
    fail_larger_than: core::sync::atomic::AtomicUsize,
    /// Reads that failed so far.
    failures: core::sync::atomic::AtomicUsize,
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner`; no read fails until [`FaultyStorage::fail_reads_larger_than`].
    pub fn new(inner: S) -> Self {
        FaultyStorage {
            inner,
            fail_larger_than: core::sync::atomic::AtomicUsize::new(usize::MAX),
            failures: core::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// From now on, reads of more than `bytes` bytes fail with an I/O error.
    pub fn fail_reads_larger_than(&self, bytes: usize) {
        self.fail_larger_than
            .store(bytes, core::sync::atomic::Ordering::SeqCst);
    }

    /// Every read succeeds again.
    pub fn heal(&self) {
        self.fail_reads_larger_than(usize::MAX);
    }

    /// Reads that failed so far.
    pub fn failures(&self) -> usize {
        self.failures.load(core::sync::atomic::Ordering::SeqCst)
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), StorageError> {
        use core::sync::atomic::Ordering;
        if dst.len() > self.fail_larger_than.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            // Leave garbage behind, as a failed DMA might.
            dst.iter_mut().for_each(|b| *b = 0xa5);
            return Err(StorageError::Io { code: 5 });
        }
        self.inner.read_at(offset, dst)
    }
}

#[cfg(feature = "std")]
impl<S: Storage + ?Sized> Storage for std::boxed::Box<S> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), StorageError> {
        (**self).read_at(offset, dst)
    }
    fn as_slice(&self) -> Option<&[u8]> {
        (**self).as_slice()
    }
    fn prefetch(&self, offset: u64, len: u64) {
        (**self).prefetch(offset, len)
    }
}

#[cfg(feature = "std")]
mod std_storage {
    use std::fs::File;
    use std::path::Path;

    use super::{check_range, Storage};
    use crate::error::StorageError;

    fn io_error(e: &std::io::Error) -> StorageError {
        StorageError::Io {
            code: e.raw_os_error().unwrap_or(-1),
        }
    }

    /// A file read with positional reads (`pread`): nothing is mapped, so
    /// only the bytes the session copies count against its memory. On
    /// Linux the file is opened for random access (`POSIX_FADV_RANDOM`):
    /// every read is of bytes the session uses (an expert, a row, the
    /// resident weights), so the kernel's read-ahead only spends device
    /// bandwidth and page cache on neighbours (1.6–1.8× the bytes asked for
    /// on the storage benchmark).
    #[derive(Debug)]
    pub struct FileStorage {
        file: File,
        len: u64,
    }

    impl FileStorage {
        /// Opens `path` for reading.
        pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
            let file = File::open(path)?;
            let len = file.metadata()?.len();
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: a plain syscall on a file descriptor this value
                // owns; it reads no memory of ours. A failure only leaves
                // read-ahead on, so its result is ignored.
                unsafe {
                    libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
                }
            }
            Ok(FileStorage { file, len })
        }
    }

    impl Storage for FileStorage {
        fn len(&self) -> u64 {
            self.len
        }

        fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), StorageError> {
            check_range(offset, dst.len() as u64, self.len)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::FileExt;
                self.file
                    .read_exact_at(dst, offset)
                    .map_err(|e| io_error(&e))
            }
            #[cfg(windows)]
            {
                use std::os::windows::fs::FileExt;
                let mut done = 0;
                while done < dst.len() {
                    let n = self
                        .file
                        .seek_read(&mut dst[done..], offset + done as u64)
                        .map_err(|e| io_error(&e))?;
                    if n == 0 {
                        return Err(StorageError::Io { code: -1 });
                    }
                    done += n;
                }
                Ok(())
            }
        }

        /// Asks the OS to start reading the range into its page cache
        /// (`posix_fadvise(WILLNEED)`), so the later `pread` is a copy.
        fn prefetch(&self, offset: u64, len: u64) {
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: a plain syscall on a file descriptor this value
                // owns; it reads no memory of ours and its result is ignored.
                unsafe {
                    libc::posix_fadvise(
                        self.file.as_raw_fd(),
                        offset as libc::off_t,
                        len as libc::off_t,
                        libc::POSIX_FADV_WILLNEED,
                    );
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = (offset, len);
        }
    }

    /// A memory-mapped file: weights are used in place, paged by the OS.
    #[derive(Debug)]
    pub struct MmapStorage {
        map: memmap2::Mmap,
    }

    impl MmapStorage {
        /// Maps `path` read-only.
        pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
            let file = File::open(path)?;
            // SAFETY: the map is read-only and private to this process; like
            // every mmap reader we rely on the file not being truncated or
            // rewritten while mapped (the quantizer writes a new file and
            // renames it, which leaves an existing map intact).
            let map = unsafe { memmap2::Mmap::map(&file)? };
            Ok(MmapStorage { map })
        }

        /// Maps `path` and faults every page in now (`MAP_POPULATE`), so
        /// that the first tokens do not pay for page faults.
        pub fn open_populated(path: impl AsRef<Path>) -> std::io::Result<Self> {
            let file = File::open(path)?;
            // SAFETY: as in `open`.
            let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
            Ok(MmapStorage { map })
        }
    }

    impl Storage for MmapStorage {
        fn len(&self) -> u64 {
            self.map.len() as u64
        }

        fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), StorageError> {
            check_range(offset, dst.len() as u64, self.len())?;
            let start = offset as usize;
            dst.copy_from_slice(&self.map[start..start + dst.len()]);
            Ok(())
        }

        fn as_slice(&self) -> Option<&[u8]> {
            Some(&self.map)
        }
    }
}

#[cfg(feature = "std")]
pub use std_storage::{FileStorage, MmapStorage};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_reads_are_bounds_checked() {
        let s = SliceStorage::new(&[1, 2, 3, 4]);
        let mut b = [0u8; 2];
        s.read_at(2, &mut b).unwrap();
        assert_eq!(b, [3, 4]);
        assert!(matches!(
            s.read_at(3, &mut b),
            Err(StorageError::OutOfRange { .. })
        ));
        assert!(matches!(
            s.read_at(u64::MAX, &mut b),
            Err(StorageError::OutOfRange { .. })
        ));
    }
}
