//! Carves typed buffers out of the one memory region a session is given.
//! One of the few places that need `unsafe` (with the kernels, storage,
//! the thread pool and the parallel regions), each block explained.

use core::mem::{align_of, size_of};

use crate::error::Error;

/// Alignment of every buffer (one cache line; enough for any SIMD load).
pub const BUFFER_ALIGN: usize = 64;

/// Bytes a buffer of `n` values of `T` takes in the arena, alignment included.
pub const fn buffer_bytes<T>(n: usize) -> usize {
    (n * size_of::<T>()).div_ceil(BUFFER_ALIGN) * BUFFER_ALIGN
}

/// Hands out disjoint, aligned pieces of a byte region.
pub struct Arena<'a> {
    rest: &'a mut [u8],
    needed: usize,
    provided: usize,
}

impl<'a> Arena<'a> {
    /// Starts carving `region`; `needed` is the plan's total, reported if a
    /// take fails.
    pub fn new(region: &'a mut [u8], needed: usize) -> Self {
        let provided = region.len();
        Arena {
            rest: region,
            needed,
            provided,
        }
    }

    fn take_bytes(&mut self, bytes: usize, align: usize) -> Result<&'a mut [u8], Error> {
        let region = core::mem::take(&mut self.rest);
        let pad = region.as_ptr().align_offset(align);
        let total = pad.checked_add(bytes.div_ceil(BUFFER_ALIGN) * BUFFER_ALIGN);
        match total {
            Some(total) if total <= region.len() => {
                let (head, rest) = region.split_at_mut(total);
                self.rest = rest;
                Ok(&mut head[pad..pad + bytes])
            }
            _ => Err(Error::ArenaTooSmall {
                needed: self.needed,
                provided: self.provided,
            }),
        }
    }

    /// `n` values of `T`, each set to `value`.
    pub fn take<T: Copy>(&mut self, n: usize, value: T) -> Result<&'a mut [T], Error> {
        debug_assert!(align_of::<T>() <= BUFFER_ALIGN);
        let bytes = self.take_bytes(n * size_of::<T>(), BUFFER_ALIGN)?;
        let ptr = bytes.as_mut_ptr() as *mut T;
        for i in 0..n {
            // SAFETY: `ptr` is BUFFER_ALIGN-aligned (hence aligned for T) and
            // the region holds `n * size_of::<T>()` bytes that nothing else
            // borrows; each element is written before the slice is formed.
            unsafe { ptr.add(i).write(value) };
        }
        // SAFETY: all `n` elements were initialised above; the bytes are
        // borrowed mutably for 'a and handed out once.
        Ok(unsafe { core::slice::from_raw_parts_mut(ptr, n) })
    }

    /// `n` raw bytes (64-byte aligned), left as they are.
    pub fn take_raw(&mut self, n: usize) -> Result<&'a mut [u8], Error> {
        self.take_bytes(n, BUFFER_ALIGN)
    }

    /// `n` raw bytes aligned to `align` (a power of two, at least
    /// [`BUFFER_ALIGN`]: up to `align - BUFFER_ALIGN` bytes of padding),
    /// left as they are.
    pub fn take_aligned(&mut self, n: usize, align: usize) -> Result<&'a mut [u8], Error> {
        debug_assert!(align.is_power_of_two() && align >= BUFFER_ALIGN);
        self.take_bytes(n, align)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_are_aligned_and_disjoint() {
        let mut region = [0u8; 1024];
        let mut arena = Arena::new(&mut region, 1024);
        let a = arena.take(3, 1.5f32).unwrap();
        let b = arena.take(5, 7i8).unwrap();
        assert_eq!(a.as_ptr() as usize % BUFFER_ALIGN, 0);
        assert_eq!(b.as_ptr() as usize % BUFFER_ALIGN, 0);
        assert_eq!(a, &[1.5; 3]);
        assert_eq!(b, &[7; 5]);
        assert!(matches!(
            arena.take(4096, 0u8),
            Err(Error::ArenaTooSmall { .. })
        ));
    }
}
