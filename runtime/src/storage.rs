//! Where a model's bytes come from: flash, a byte slice, a file, a memory map.
//!
//! `read_at` takes `&self` so that sessions can share one model and the
//! expert reader's thread can page experts while the compute threads work;
//! storages with mutable device state keep it behind their own lock. A
//! storage whose device reads in the background (a DMA or QSPI engine)
//! says so and implements the split-phase pair `start_read` / `poll_read`.

use crate::error::StorageError;

/// How [`Storage::start_read`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStart {
    /// The bytes are in place.
    Done,
    /// The device is reading them; [`Storage::poll_read`] with this id
    /// says when it ended.
    Pending(u32),
}

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

    /// True when [`Storage::start_read`] returns before the bytes are in
    /// place (a DMA or QSPI engine reading in the background). A session
    /// then starts reading the experts it predicts while it computes, with
    /// the storage's own reads instead of its reader thread; without
    /// `std`, this is the only way reads overlap computing.
    fn reads_in_background(&self) -> bool {
        false
    }

    /// Starts reading `len` bytes at `offset` into `dst`. The default reads
    /// them now ([`ReadStart::Done`]); a background storage returns
    /// [`ReadStart::Pending`] and writes `dst` until [`Storage::poll_read`]
    /// reports the read ended. Range errors are returned here.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `len` bytes, and nothing may read,
    /// write or free those bytes until this returned `Done` or an error, or
    /// `poll_read` returned `Some` for the id it gave.
    unsafe fn start_read(
        &self,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<ReadStart, StorageError> {
        // SAFETY: the caller hands `dst` over for `len` bytes (see above).
        let dst = unsafe { core::slice::from_raw_parts_mut(dst, len) };
        self.read_at(offset, dst)?;
        Ok(ReadStart::Done)
    }

    /// Whether the background read `id` ended: `None` while it runs, then
    /// its result (once). Storages without background reads never give an
    /// id, so the default is never asked.
    fn poll_read(&self, _id: u32) -> Option<Result<(), StorageError>> {
        Some(Ok(()))
    }
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
    fn reads_in_background(&self) -> bool {
        (**self).reads_in_background()
    }
    unsafe fn start_read(
        &self,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<ReadStart, StorageError> {
        // SAFETY: the caller's guarantee is passed on unchanged.
        unsafe { (**self).start_read(offset, dst, len) }
    }
    fn poll_read(&self, id: u32) -> Option<Result<(), StorageError>> {
        (**self).poll_read(id)
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
    fn reads_in_background(&self) -> bool {
        (**self).reads_in_background()
    }
    unsafe fn start_read(
        &self,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<ReadStart, StorageError> {
        // SAFETY: the caller's guarantee is passed on unchanged.
        unsafe { (**self).start_read(offset, dst, len) }
    }
    fn poll_read(&self, id: u32) -> Option<Result<(), StorageError>> {
        (**self).poll_read(id)
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

    /// Alignment of the reads [`FileStorage::open_direct`] sends past the
    /// page cache: offset, length and buffer (a 4 KiB page; the file
    /// format starts every expert group on such a boundary).
    pub const DIRECT_ALIGN: usize = 4096;

    /// A file read with positional reads (`pread`): nothing is mapped, so
    /// only the bytes the session copies count against its memory. On
    /// Linux the file is opened for random access (`POSIX_FADV_RANDOM`):
    /// every read is of bytes the session uses (an expert, a row, the
    /// resident weights), so the kernel's read-ahead would only spend
    /// device bandwidth and page cache on neighbours (1.6–1.8× the bytes
    /// asked for on the storage benchmark).
    ///
    /// [`FileStorage::open_direct`] adds a descriptor opened with
    /// `O_DIRECT`: the aligned part of a read whose offset and buffer are
    /// [`DIRECT_ALIGN`]-aligned (an expert group into its slot) goes from
    /// the device into the buffer, so the page cache neither helps nor
    /// counts against a memory cgroup; the rest (a group's last partial
    /// page, the resident weights at load, embedding rows) is read through
    /// the page cache.
    #[derive(Debug)]
    pub struct FileStorage {
        file: File,
        direct: Option<File>,
        refusal: Option<std::io::Error>,
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
            Ok(FileStorage {
                file,
                direct: None,
                refusal: None,
                len,
            })
        }

        /// Opens `path` for reading, aligned reads bypassing the page cache
        /// (`O_DIRECT`, Linux). Where the system or filesystem refuses
        /// (tmpfs, other systems) the file is still opened, read through
        /// the page cache, and [`FileStorage::direct_refusal`] says why.
        pub fn open_direct(path: impl AsRef<Path>) -> std::io::Result<Self> {
            let mut storage = Self::open(path.as_ref())?;
            match open_o_direct(path.as_ref(), storage.len) {
                Ok(direct) => storage.direct = Some(direct),
                Err(e) => storage.refusal = Some(e),
            }
            Ok(storage)
        }

        /// True when aligned reads bypass the page cache.
        pub fn is_direct(&self) -> bool {
            self.direct.is_some()
        }

        /// Why [`FileStorage::open_direct`] fell back to the page cache.
        pub fn direct_refusal(&self) -> Option<&std::io::Error> {
            self.refusal.as_ref()
        }
    }

    /// A second descriptor on `path` with `O_DIRECT`, tried with one
    /// aligned read (some filesystems accept the flag and refuse the reads).
    #[cfg(target_os = "linux")]
    fn open_o_direct(path: &Path, len: u64) -> std::io::Result<File> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        if len >= DIRECT_ALIGN as u64 {
            let mut buf = std::vec![0u8; 2 * DIRECT_ALIGN];
            let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
            file.read_exact_at(&mut buf[at..at + DIRECT_ALIGN], 0)?;
        }
        Ok(file)
    }

    #[cfg(not(target_os = "linux"))]
    fn open_o_direct(_path: &Path, _len: u64) -> std::io::Result<File> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "O_DIRECT is Linux only",
        ))
    }

    /// Bytes at the start of a read of `dst` at `offset` that may go past
    /// the page cache: whole aligned pages from an aligned offset into an
    /// aligned buffer, else none.
    fn direct_part(offset: u64, dst: &[u8]) -> usize {
        let aligned = offset.is_multiple_of(DIRECT_ALIGN as u64)
            && (dst.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
        if aligned {
            dst.len() / DIRECT_ALIGN * DIRECT_ALIGN
        } else {
            0
        }
    }

    /// Fills `dst` from `file` at `offset`.
    fn pread_exact(file: &File, dst: &mut [u8], offset: u64) -> Result<(), StorageError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            file.read_exact_at(dst, offset).map_err(|e| io_error(&e))
        }
        #[cfg(windows)]
        {
            use std::os::windows::fs::FileExt;
            let mut done = 0;
            while done < dst.len() {
                let n = file
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

    impl Storage for FileStorage {
        fn len(&self) -> u64 {
            self.len
        }

        fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), StorageError> {
            check_range(offset, dst.len() as u64, self.len)?;
            let direct = self
                .direct
                .as_ref()
                .map(|file| (file, direct_part(offset, dst)));
            match direct {
                Some((file, head)) if head > 0 => {
                    let (pages, tail) = dst.split_at_mut(head);
                    pread_exact(file, pages, offset)?;
                    pread_exact(&self.file, tail, offset + head as u64)
                }
                _ => pread_exact(&self.file, dst, offset),
            }
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
pub use std_storage::{FileStorage, MmapStorage, DIRECT_ALIGN};

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
