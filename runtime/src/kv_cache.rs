//! How the KV cache stores the keys and values it holds: f32, f16 (the
//! default: half the bytes, like llama.cpp's), or int8 in blocks of
//! [`KV_BLOCK`] numbers along each head's row with one f16 scale a block
//! (a little over a quarter of f32, like llama.cpp's `q8_0` cache).
//!
//! A cache is a table of slots (positions), each holding `heads` rows of
//! `width` numbers (per KV head with grouped-query attention; one row of
//! the latent and rope key with MLA). Number `i` of a slot sits at `slot ·
//! stride + i` whatever the type, so the attention code indexes all three
//! alike; int8 blocks never straddle two heads, their scales sit at `slot
//! · blocks + head · head_blocks + j`. This module only writes rows and
//! lends views: the reading side is [`crate::kernels::scalar::KvRows`].
//! Never allocates.

use crate::arena::{buffer_bytes, Arena};
use crate::error::Error;
use crate::kernels::scalar::KvRows;
use half::f16;

/// Numbers an int8 cache block holds (and shares a scale).
pub const KV_BLOCK: usize = 32;

/// What the KV cache stores per cached number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvCacheType {
    /// 4 bytes: exact.
    F32,
    /// 2 bytes, round to nearest even.
    #[default]
    F16,
    /// 1 byte plus an f16 scale per [`KV_BLOCK`] numbers of a head's row.
    Q8,
}

impl KvCacheType {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            KvCacheType::F32 => "f32",
            KvCacheType::F16 => "f16",
            KvCacheType::Q8 => "q8",
        }
    }

    /// Arena bytes of a cache of `slots` slots, each `heads` rows of
    /// `width` numbers.
    pub fn cache_bytes(self, slots: usize, heads: usize, width: usize) -> usize {
        let numbers = slots * heads * width;
        match self {
            KvCacheType::F32 => buffer_bytes::<f32>(numbers),
            KvCacheType::F16 => buffer_bytes::<u16>(numbers),
            KvCacheType::Q8 => {
                buffer_bytes::<i8>(numbers)
                    + buffer_bytes::<u16>(slots * heads * width.div_ceil(KV_BLOCK))
            }
        }
    }
}

/// One cache (the keys, or the values) in its type.
pub(crate) enum KvStore<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [u16]),
    Q8 {
        qs: &'a mut [i8],
        scales: &'a mut [u16],
    },
}

/// The rows one cached position holds (keys, or values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    /// Rows a slot holds.
    pub heads: usize,
    /// Numbers a row holds.
    pub width: usize,
}

impl KvShape {
    /// Numbers between consecutive slots.
    pub fn stride(self) -> usize {
        self.heads * self.width
    }

    /// int8 blocks (scales) of one row, and between consecutive slots.
    pub fn row_blocks(self) -> usize {
        self.width.div_ceil(KV_BLOCK)
    }

    /// int8 blocks between consecutive slots.
    pub fn scale_stride(self) -> usize {
        self.heads * self.row_blocks()
    }
}

impl<'a> KvStore<'a> {
    /// A zeroed cache of `slots` slots of `shape` from the arena (as many
    /// bytes as [`KvCacheType::cache_bytes`] counts).
    pub fn take(
        arena: &mut Arena<'a>,
        kind: KvCacheType,
        slots: usize,
        shape: KvShape,
    ) -> Result<Self, Error> {
        let numbers = slots * shape.stride();
        Ok(match kind {
            KvCacheType::F32 => KvStore::F32(arena.take(numbers, 0.0f32)?),
            KvCacheType::F16 => KvStore::F16(arena.take(numbers, 0u16)?),
            KvCacheType::Q8 => KvStore::Q8 {
                qs: arena.take(numbers, 0i8)?,
                scales: arena.take(slots * shape.scale_stride(), 0u16)?,
            },
        })
    }

    /// Stores slot `slot`'s rows from `src` (`shape.stride()` numbers).
    pub fn write(&mut self, shape: KvShape, slot: usize, src: &[f32]) {
        let stride = shape.stride();
        let at = slot * stride;
        let src = &src[..stride];
        match self {
            KvStore::F32(c) => c[at..at + stride].copy_from_slice(src),
            KvStore::F16(c) => c[at..at + stride]
                .iter_mut()
                .zip(src)
                .for_each(|(h, &x)| *h = f16::from_f32(x).to_bits()),
            KvStore::Q8 { qs, scales } => {
                let blocks = shape.scale_stride();
                let qs = &mut qs[at..at + stride];
                let scales = &mut scales[slot * blocks..(slot + 1) * blocks];
                let rows = qs
                    .chunks_exact_mut(shape.width)
                    .zip(src.chunks_exact(shape.width));
                let mut scales = scales.iter_mut();
                for (q_row, row) in rows {
                    for (q, x) in q_row.chunks_mut(KV_BLOCK).zip(row.chunks(KV_BLOCK)) {
                        let scale = scales.next().expect("scale_stride counts every block");
                        *scale = quantize_block(x, q);
                    }
                }
            }
        }
    }

    /// The numbers from number `at` and scales from block `block_at` on
    /// (a head's first row in slot 0).
    pub fn rows(&self, at: usize, block_at: usize) -> KvRows<'_> {
        match self {
            KvStore::F32(c) => KvRows::F32(&c[at..]),
            KvStore::F16(c) => KvRows::F16(&c[at..]),
            KvStore::Q8 { qs, scales } => KvRows::Q8 {
                qs: &qs[at..],
                scales: &scales[block_at..],
            },
        }
    }
}

/// `x` (at most [`KV_BLOCK`] numbers) as int8 `q` with the f16 scale it
/// returns: the largest magnitude maps to ±127, the others round to
/// nearest against the stored (f16-rounded) scale.
fn quantize_block(x: &[f32], q: &mut [i8]) -> u16 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = f16::from_f32(amax / 127.0);
    let d = scale.to_f32();
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = crate::quant::round_half_away(v * inv).clamp(-127, 127) as i8;
    }
    scale.to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::scalar::f16_to_f32;

    fn shape() -> KvShape {
        KvShape {
            heads: 2,
            width: 40, // a full block and a short one per row
        }
    }

    fn row(seed: f32) -> [f32; 80] {
        core::array::from_fn(|i| libm::sinf(seed + i as f32 * 0.37) * (1.0 + i as f32 / 8.0))
    }

    /// A 64-byte aligned region, as a session's arena is.
    #[repr(align(64))]
    struct Region([u8; 8192]);

    #[test]
    fn the_bytes_counted_are_the_bytes_taken() {
        let mut region = Region([0; 8192]);
        for kind in [KvCacheType::F32, KvCacheType::F16, KvCacheType::Q8] {
            let bytes = kind.cache_bytes(3, 2, 40);
            let exact = &mut region.0[..bytes];
            assert!(KvStore::take(&mut Arena::new(exact, bytes), kind, 3, shape()).is_ok());
            let short = &mut region.0[..bytes - 1];
            assert!(KvStore::take(&mut Arena::new(short, bytes), kind, 3, shape()).is_err());
        }
        assert_eq!(KvCacheType::F16.cache_bytes(10, 4, 64), 5120);
        assert_eq!(KvCacheType::Q8.cache_bytes(10, 4, 64), 2560 + 192);
    }

    #[test]
    fn rows_read_back_within_the_type_precision() {
        let mut region = Region([0; 8192]);
        for kind in [KvCacheType::F32, KvCacheType::F16, KvCacheType::Q8] {
            let mut arena = Arena::new(&mut region.0, 8192);
            let mut store = KvStore::take(&mut arena, kind, 3, shape()).unwrap();
            let (a, b) = (row(0.5), row(2.0));
            store.write(shape(), 2, &a);
            store.write(shape(), 0, &b);
            for (slot, want) in [(2usize, &a), (0, &b)] {
                let amax = |h: usize, i: usize| {
                    let block = &want[h * 40 + i / 32 * 32..][..if i < 32 { 32 } else { 8 }];
                    block.iter().fold(0.0f32, |m, v| m.max(v.abs()))
                };
                for (n, &w) in want.iter().enumerate() {
                    let (h, i) = (n / 40, n % 40);
                    let at = slot * 80 + n;
                    let block_at = slot * 4 + h * 2 + i / 32;
                    let got = match store.rows(0, 0) {
                        KvRows::F32(c) => c[at],
                        KvRows::F16(c) => f16_to_f32(c[at]),
                        KvRows::Q8 { qs, scales } => qs[at] as f32 * f16_to_f32(scales[block_at]),
                    };
                    let tol = match kind {
                        KvCacheType::F32 => 0.0,
                        KvCacheType::F16 => w.abs() / 1024.0,
                        KvCacheType::Q8 => amax(h, i) / 127.0 * 0.51 + amax(h, i) / 2048.0,
                    };
                    assert!(
                        (got - w).abs() <= tol,
                        "{kind:?} slot {slot} number {n}: {got} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_all_zero_block_stays_zero() {
        let mut q = [5i8; 7];
        let scale = quantize_block(&[0.0; 7], &mut q);
        assert_eq!((scale, q), (0, [0; 7]));
    }
}
