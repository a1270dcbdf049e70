//! RV32IMAC firmware (qemu virt): the tiny MoE in flash, every buffer in a
//! static arena, tokens printed on the NS16550A UART; the SiFive test device
//! gives qemu's exit status (0 success, 1 failure).
#![no_std]
#![no_main]

use core::fmt::Write;
use core::ptr::addr_of_mut;

use mote_demo::{Aligned, NEW_TOKENS};

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("MOTE_DEMO_MODEL")));
static mut ARENA: Aligned<[u8; 256 * 1024]> = Aligned([0; 256 * 1024]);

const UART: *mut u8 = 0x1000_0000 as *mut u8;
const TEST_DEVICE: *mut u32 = 0x0010_0000 as *mut u32;

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // SAFETY: the virt machine's NS16550A: LSR at +5 (bit 5: THR
            // empty), THR at +0; MMIO, volatile.
            unsafe {
                while core::ptr::read_volatile(UART.add(5)) & 0x20 == 0 {}
                core::ptr::write_volatile(UART, b);
            }
        }
        Ok(())
    }
}

fn exit(code: u32) -> ! {
    let value = if code == 0 {
        0x5555
    } else {
        0x3333 | (code << 16)
    };
    // SAFETY: the virt machine's SiFive test device: writing it ends qemu.
    unsafe { core::ptr::write_volatile(TEST_DEVICE, value) };
    loop {}
}

#[riscv_rt::entry]
fn main() -> ! {
    // SAFETY: `main` runs once on the single hart and makes the only
    // reference to ARENA.
    let arena = unsafe { &mut (*addr_of_mut!(ARENA)).0 };
    let mut tokens = [0u32; NEW_TOKENS];
    match mote_demo::generate(&MODEL.0, arena, &mut tokens) {
        Ok(arena_bytes) => {
            let _ = write!(Uart, "tokens:");
            for (i, t) in tokens.iter().enumerate() {
                let _ = write!(Uart, "{}{}", if i == 0 { " " } else { "," }, t);
            }
            let _ = writeln!(Uart, "\narena bytes: {arena_bytes}");
            exit(0)
        }
        Err(e) => {
            let _ = writeln!(Uart, "mote: {e}");
            exit(1)
        }
    }
}

#[export_name = "ExceptionHandler"]
fn exception_handler(_: &riscv_rt::TrapFrame) -> ! {
    exit(2)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Uart, "panic: {info}");
    exit(3)
}
