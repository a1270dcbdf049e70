//! f32 helpers with no format or kernel meaning, used by `quant`, the
//! kernels and the forward pass alike. They exist because `core`'s own
//! versions can cost firmware size: `f32::clamp`'s assertion message pulls
//! in float formatting, several KiB of `.text`. This module never imports
//! other modules of the crate (any of them may import it).

/// `x` limited to `lo..=hi` (NaN stays NaN), as `f32::clamp` but without
/// its `lo <= hi` assertion, whose float-formatting panic message costs
/// firmware several KiB of `.text`.
#[inline]
pub(crate) fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}
