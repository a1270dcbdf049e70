//! f16 weights: the RVV matvec (and batched product, one matvec a token).

use core::arch::asm;

use super::F16_MAGIC;
use crate::kernels::{check_float, scalar, Activations};

pub(crate) fn matvec_f16_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 2);
    if !(w.as_ptr() as usize).is_multiple_of(2) {
        return scalar::matvec_f16(w, row_bytes, x, out);
    }
    for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        let sum: f32;
        // SAFETY: V is present (see `kernels::table`); the loop reads `cols` f16s
        // from the row (2-byte aligned: `w` is and row_bytes = 2 · cols) and
        // `cols` f32s from x, `vl` at a time, advancing by what it read.
        unsafe {
            asm!(
                ".option push",
                ".option arch, +v",
                "vsetvli {t}, zero, e32, m4, ta, ma",
                "vmv.v.i v8, 0",
                "vmv.v.i v4, 0",
                "beqz {n}, 2f",
                "1:",
                // Tail-undisturbed for the accumulator, mask-undisturbed
                // for the inf/NaN fix-up in the conversion.
                "vsetvli {t}, {n}, e32, m4, tu, mu",
                "vle16.v v12, ({w})",
                "vzext.vf2 v16, v12",
                f16_bits_to_f32!("v20", "v16"),
                "vle32.v v16, ({x})",
                "vfmacc.vv v8, v20, v16",
                "slli {u}, {t}, 1",
                "add {w}, {w}, {u}",
                "slli {u}, {t}, 2",
                "add {x}, {x}, {u}",
                "sub {n}, {n}, {t}",
                "bnez {n}, 1b",
                "2:",
                "vsetvli {t}, zero, e32, m4, ta, ma",
                "vfredusum.vs v4, v8, v4",
                "vfmv.f.s {sum}, v4",
                ".option pop",
                w = inout(reg) row.as_ptr() => _,
                x = inout(reg) x.f32s.as_ptr() => _,
                n = inout(reg) cols => _,
                t = out(reg) _,
                u = out(reg) _,
                m7fff = in(reg) 0x7fffu32,
                m7bff = in(reg) 0x7bffu32,
                m8000 = in(reg) 0x8000u32,
                exp = in(reg) 0x7f80_0000u32,
                magic = in(freg) F16_MAGIC,
                sum = lateout(freg) sum,
                out("v0") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v12") _, out("v13") _, out("v14") _, out("v15") _,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                options(readonly, nostack),
            );
        }
        *o = sum;
    }
}

crate::kernels::matmul_per_token!(matmul_f16_rvv, matvec_f16_rvv, F16);
