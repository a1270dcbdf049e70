//! The small model built into the binary, so `mote run --prompt ...` works
//! on a fresh clone with no file to fetch: `tools/models/tiny-kjv.mote`, a
//! 4-expert MoE trained by `tools/train/train.py` (feature `builtin-model`,
//! on by default; board builds turn it off to save the bytes).

/// Keeps the file 64-byte aligned, as a memory map would be.
#[cfg(feature = "builtin-model")]
#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

#[cfg(feature = "builtin-model")]
static ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../models/tiny-kjv.mote"));

/// The built-in model's file (empty without the `builtin-model` feature).
#[cfg(feature = "builtin-model")]
pub static MODEL: &[u8] = &ALIGNED.0;

/// The built-in model's file (empty without the `builtin-model` feature).
#[cfg(not(feature = "builtin-model"))]
pub static MODEL: &[u8] = &[];

/// The built-in model read like a file: not addressable, so that under a
/// memory budget its experts are paged into slots as a file's would be.
pub struct Unmapped(pub mote::SliceStorage<'static>);

impl mote::Storage for Unmapped {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), mote::StorageError> {
        self.0.read_at(offset, dst)
    }
}
