//! `prefill` and `step`, encoding, sampling and decoding text never touch the global allocator, on the caller's
//! thread or on the session's worker threads. A counting allocator counts
//! every allocation in the process while a measurement is on; the whole
//! test is one function so that no other test allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mote::{
    DType, FaultyStorage, Limits, Model, Plan, Sampler, SamplerConfig, Session, SliceStorage,
    TextDecoder, Tokenizer,
};
use mote_tests::{convert, fixture, reference};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards every call to the system allocator unchanged; it only
// bumps a counter on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
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
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made anywhere in the process while `f` runs.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn prefill_and_32_steps_allocate_nothing_with_one_and_two_threads() {
    // The counter works: a worker thread's allocation is seen too.
    assert!(
        allocations_in(|| {
            std::thread::scope(|s| {
                s.spawn(|| drop(std::hint::black_box(vec![1u8; 100])));
            })
        }) >= 1
    );

    for family in [
        "mixtral-tiny",
        "olmoe-tiny",
        "qwen3moe-tiny",
        "deepseekv2-tiny",
        "deepseekv3-tiny",
        "gptoss-tiny",
    ] {
        every_dtype_allocates_nothing(family);
    }
    text_in_and_out_allocates_nothing();
}

/// Encoding a prompt, sampling, and streaming the text back out.
fn text_in_and_out_allocates_nothing() {
    let text = "Hello, world! It's 2026: naïve café, cafe\u{301}, 你好 🙂\n\n  end";
    for name in [
        "gpt2-bytelevel",
        "llama3-bytelevel",
        "qwen2-bytelevel",
        "o200k-bytelevel",
        "llama2-sentencepiece",
        "mistral-metaspace",
    ] {
        let folder = fixture("tokenizers").join(name);
        let section = mote_quantize::read_tokenizer(&folder, &mut Vec::new())
            .unwrap()
            .unwrap();
        let tok = Tokenizer::parse(&section).unwrap();
        let mut ids = vec![0u32; tok.max_tokens(text.len())];
        let mut piece = vec![0u8; tok.max_decoded_bytes()];
        let mut whole = vec![0u8; tok.max_decoded_bytes() * ids.len()];
        let mut candidates = vec![0u32; tok.vocab_size() as usize];
        let mut logits: Vec<f32> = (0..tok.vocab_size())
            .map(|i| ((i * 7919) % 113) as f32 * 0.05)
            .collect();
        let mut sampler = Sampler::new(
            SamplerConfig {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.9,
                min_p: 0.01,
                repetition_penalty: 1.1,
                seed: 7,
            },
            &mut candidates,
        );
        let mut streamed = 0;
        let n = allocations_in(|| {
            let k = tok.encode(text, true, &mut ids).unwrap();
            let mut dec = TextDecoder::new(true);
            for &id in &ids[..k] {
                streamed += dec.push(&tok, id, &mut piece).unwrap().len();
            }
            streamed += dec.finish(&mut piece).unwrap().len();
            tok.decode(&ids[..k], true, &mut whole).unwrap();
            for _ in 0..8 {
                let next = sampler.sample(&mut logits, &ids[..k]);
                let _ = dec.push(&tok, next, &mut piece).unwrap();
            }
        });
        assert!(
            streamed >= text.len() - 2,
            "{name}: {streamed} bytes streamed"
        );
        assert_eq!(
            n, 0,
            "{name}: {n} allocations encoding, sampling and decoding"
        );
    }
}

fn every_dtype_allocates_nothing(family: &str) {
    let r = reference(family);
    for dtype in [DType::F32, DType::F16, DType::Q8, DType::Q4, DType::Mxfp4] {
        let file = convert(family, "f32", dtype);
        let model = Model::open(SliceStorage::new(&file)).unwrap();
        for (threads, prefill_batch) in [(1, 1), (1, 64), (2, 4), (2, 64)] {
            let limits = Limits {
                max_context: (r.prompt.len() + 32) as u32,
                threads,
                prefill_batch,
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
            assert_eq!(
                n, 0,
                "{family} {dtype}, {threads} threads, batch {prefill_batch}: {n} allocations"
            );
        }

        // Paging: non-addressable storage, a budget of a quarter of the experts.
        let paged = Model::open(FaultyStorage::new(SliceStorage::new(&file))).unwrap();
        let base = Limits {
            max_context: (r.prompt.len() + 32) as u32,
            threads: 2,
            ..Limits::default()
        };
        let mut plan = Plan::new(&paged, &base).unwrap();
        let mut experts = plan.experts.unwrap();
        experts.slots = experts.experts / 4;
        plan.experts = Some(experts);
        let limits = Limits {
            memory_budget_bytes: Some(plan.arena_bytes() as u64),
            verify_experts: true,
            ..base
        };
        let plan = Plan::new(&paged, &limits).unwrap();
        let mut arena = vec![0u8; plan.arena_bytes()];
        let mut session = Session::new(&paged, &plan, &mut arena).unwrap();
        let n = allocations_in(|| {
            let mut next = mote_tests::argmax(session.prefill(&r.prompt).unwrap());
            for _ in 0..32 {
                next = mote_tests::argmax(session.step(next).unwrap());
            }
        });
        let stats = session.cache_stats();
        assert!(stats.misses > 0, "the paged run must page");
        assert!(stats.prefetches > 0, "the reader must read ahead");
        assert_eq!(
            n, 0,
            "{dtype}, paged: {n} allocations in prefill + 32 steps"
        );
    }
}
