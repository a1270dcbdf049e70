//! `prefill` and `step` never touch the global allocator. A counting
//! allocator counts the allocations made on the measuring thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use mote::{DType, Limits, Model, Plan, Session, SliceStorage};
use mote_tests::{convert, reference};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards every call to the system allocator unchanged; it only
// bumps a counter on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations_in(|| drop(std::hint::black_box(vec![1u8; 100]))) >= 1);
}

#[test]
fn prefill_and_32_steps_allocate_nothing() {
    let r = reference("mixtral-tiny");
    for dtype in [DType::F32, DType::F16, DType::Q8, DType::Q4] {
        let file = convert("mixtral-tiny", "f32", dtype);
        let model = Model::open(SliceStorage::new(&file)).unwrap();
        let limits = Limits {
            max_context: (r.prompt.len() + 32) as u32,
            ..Limits::default()
        };
        let plan = Plan::new(&model, &limits).unwrap();
        let mut arena = vec![0u8; plan.arena_bytes()];
        let mut session = Session::new(&model, &plan, &mut arena).unwrap();
        let mut steps = 0;
        let n = allocations_in(|| {
            let mut next = mote_tests::argmax(session.prefill(&r.prompt).unwrap());
            for _ in 0..32 {
                next = mote_tests::argmax(session.step(next).unwrap());
                steps += 1;
            }
        });
        assert_eq!(steps, 32);
        assert_eq!(n, 0, "{dtype}: {n} allocations in prefill + 32 steps");
    }
}
