//! Routines shared by the test programs: COM1 output, hex printing and the
//! debug-exit. Each works in 16-, 32- and 64-bit code unless its name says
//! otherwise.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

const COM1: u32 = 0x3f8;
const DEBUG_EXIT: u32 = 0xf4;

/// 115200 8N1, FIFOs on, as a BIOS leaves COM1.
pub fn uart_init(a: &mut CodeAssembler) -> Result<(), IcedError> {
    for (port, value) in [(COM1 + 3, 0x80u32), (COM1, 1), (COM1 + 1, 0), (COM1 + 3, 3), (COM1 + 2, 0xc7), (COM1 + 4, 3)] {
        a.mov(dx, port)?;
        a.mov(al, value)?;
        a.out(dx, al)?;
    }
    Ok(())
}

/// Writes `value` to the debug-exit port, then halts in case it returns.
pub fn debug_exit(a: &mut CodeAssembler, value: u32) -> Result<(), IcedError> {
    let mut again = a.create_label();
    a.mov(dx, DEBUG_EXIT)?;
    a.mov(eax, value)?;
    a.out(dx, eax)?;
    a.set_label(&mut again)?;
    a.hlt()?;
    a.jmp(again)
}

/// `putc`: sends AL to COM1 once the transmitter is empty; keeps registers.
pub fn putc_routine(a: &mut CodeAssembler, label: &mut CodeLabel) -> Result<(), IcedError> {
    let mut wait = a.create_label();
    a.set_label(label)?;
    a.push(dx)?;
    a.push(ax)?;
    a.set_label(&mut wait)?;
    a.mov(dx, COM1 + 5)?;
    a.in_(al, dx)?;
    a.test(al, 0x20)?;
    a.jz(wait)?;
    a.pop(ax)?;
    a.mov(dx, COM1)?;
    a.out(dx, al)?;
    a.pop(dx)?;
    a.ret()
}

/// `puts`: prints the NUL-terminated string at DS:SI (16-bit code).
pub fn puts_routine16(a: &mut CodeAssembler, label: &mut CodeLabel, putc: CodeLabel) -> Result<(), IcedError> {
    let mut done = a.create_label();
    a.set_label(label)?;
    let next = *label;
    a.lodsb()?;
    a.test(al, al)?;
    a.jz(done)?;
    a.call(putc)?;
    a.jmp(next)?;
    a.set_label(&mut done)?;
    a.ret()
}

/// `puts`: prints the NUL-terminated string at ESI (32-bit code).
pub fn puts_routine32(a: &mut CodeAssembler, label: &mut CodeLabel, putc: CodeLabel) -> Result<(), IcedError> {
    puts_routine16(a, label, putc)
}

/// `puts`: prints the NUL-terminated string at RSI (64-bit code).
pub fn puts_routine64(a: &mut CodeAssembler, label: &mut CodeLabel, putc: CodeLabel) -> Result<(), IcedError> {
    puts_routine16(a, label, putc)
}

/// Emits the digit in AL's low nibble, in lower-case hex.
fn nibble_out(a: &mut CodeAssembler, putc: CodeLabel) -> Result<(), IcedError> {
    let mut digit = a.create_label();
    a.and(al, 0xf)?;
    a.add(al, b'0' as u32)?;
    a.cmp(al, b'9' as u32)?;
    a.jbe(digit)?;
    a.add(al, (b'a' - b'9' - 1) as u32)?;
    a.set_label(&mut digit)?;
    a.call(putc)
}

/// `puthex16`: prints AX as four hex digits (16-bit code).
pub fn puthex16_routine(a: &mut CodeAssembler, label: &mut CodeLabel, putc: CodeLabel) -> Result<(), IcedError> {
    let mut next = a.create_label();
    a.set_label(label)?;
    a.push(cx)?;
    a.push(bx)?;
    a.mov(bx, ax)?;
    a.mov(cx, 4u32)?;
    a.set_label(&mut next)?;
    a.rol(bx, 4)?;
    a.mov(al, bl)?;
    nibble_out(a, putc)?;
    a.loop_(next)?;
    a.pop(bx)?;
    a.pop(cx)?;
    a.ret()
}

/// `puthex32`: prints EAX as eight hex digits (32-bit code).
pub fn puthex32_routine(a: &mut CodeAssembler, label: &mut CodeLabel, putc: CodeLabel) -> Result<(), IcedError> {
    let mut next = a.create_label();
    a.set_label(label)?;
    a.push(ecx)?;
    a.push(ebx)?;
    a.mov(ebx, eax)?;
    a.mov(ecx, 8u32)?;
    a.set_label(&mut next)?;
    a.rol(ebx, 4)?;
    a.mov(al, bl)?;
    nibble_out(a, putc)?;
    a.loop_(next)?;
    a.pop(ebx)?;
    a.pop(ecx)?;
    a.ret()
}

/// `puthex64`: prints RAX as sixteen hex digits (64-bit code).
pub fn puthex64_routine(a: &mut CodeAssembler, label: &mut CodeLabel, putc: CodeLabel) -> Result<(), IcedError> {
    let mut next = a.create_label();
    a.set_label(label)?;
    a.push(rcx)?;
    a.push(rbx)?;
    a.mov(rbx, rax)?;
    a.mov(ecx, 16u32)?;
    a.set_label(&mut next)?;
    a.rol(rbx, 4)?;
    a.mov(al, bl)?;
    nibble_out(a, putc)?;
    a.loop_(next)?;
    a.pop(rbx)?;
    a.pop(rcx)?;
    a.ret()
}

/// Writes a 64-bit interrupt gate for `vector` to `target` (through the
/// long-mode ROMs' code selector 0x18, DPL 0) into the IDT at `idt`.
/// Clobbers RAX.
pub fn interrupt_gate64(a: &mut CodeAssembler, idt: u64, vector: u64, target: CodeLabel) -> Result<(), IcedError> {
    let e = idt + 16 * vector;
    a.lea(rax, ptr(target))?;
    a.mov(word_ptr(e), ax)?;
    a.mov(word_ptr(e + 2), 0x18u32)?;
    a.mov(word_ptr(e + 4), 0x8e00u32)?;
    a.shr(rax, 16)?;
    a.mov(word_ptr(e + 6), ax)?;
    a.shr(rax, 16)?;
    a.mov(dword_ptr(e + 8), eax)?;
    a.mov(dword_ptr(e + 12), 0u32)
}
