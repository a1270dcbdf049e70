//! Cortex-M4F firmware: the tiny MoE in flash, every buffer in a static
//! arena, tokens printed over semihosting; exit status 0 on success.
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hprint, hprintln};
use mote_demo::{Aligned, NEW_TOKENS};

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("MOTE_DEMO_MODEL")));
static mut ARENA: Aligned<[u8; 256 * 1024]> = Aligned([0; 256 * 1024]);

#[entry]
fn main() -> ! {
    // SAFETY: `main` runs once, before any interrupt could touch ARENA, and
    // this is the only reference ever made to it.
    let arena = unsafe { &mut (*addr_of_mut!(ARENA)).0 };
    let mut tokens = [0u32; NEW_TOKENS];
    match mote_demo::generate(&MODEL.0, arena, &mut tokens) {
        Ok(arena_bytes) => {
            hprint!("tokens:");
            for (i, t) in tokens.iter().enumerate() {
                hprint!("{}{}", if i == 0 { " " } else { "," }, t);
            }
            hprintln!("\narena bytes: {}", arena_bytes);
            debug::exit(debug::EXIT_SUCCESS);
        }
        Err(e) => {
            hprintln!("mote: {}", e);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    loop {}
}

#[exception]
unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}
