//! The demo both firmwares run: open a `.mote` model that sits in flash,
//! plan for a short context, generate greedily into a caller's buffer.
//! Everything lives in the static arena the firmware hands in; nothing is
//! allocated (there is no allocator).
#![no_std]

use mote::sample::argmax;
use mote::{Error, Limits, Model, Plan, Session, SliceStorage};

/// The prompt every target (and the host check) uses.
pub const PROMPT: [u32; 4] = [1, 17, 42, 99];
/// Tokens generated after the prompt.
pub const NEW_TOKENS: usize = 8;

/// A byte array aligned like the `.mote` data region, for `include_bytes!`.
#[repr(C, align(64))]
pub struct Aligned<T: ?Sized>(pub T);

/// Generates `out.len()` tokens greedily after [`PROMPT`] (EOS ignored, as
/// the host check does) and returns the arena bytes the plan needed.
pub fn generate(model: &[u8], arena: &mut [u8], out: &mut [u32]) -> Result<usize, Error> {
    let model = Model::open(SliceStorage::new(model))?;
    model.verify_checksums()?;
    let limits = Limits {
        max_context: (PROMPT.len() + out.len()) as u32,
        prefill_batch: 1,
        ..Limits::default()
    };
    let plan = Plan::new(&model, &limits)?;
    let needed = plan.arena_bytes();
    let mut session = Session::new(&model, &plan, arena)?;
    let mut next = argmax(session.prefill(&PROMPT)?);
    let n = out.len();
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = next;
        if i + 1 < n {
            next = argmax(session.step(next)?);
        }
    }
    Ok(needed)
}
