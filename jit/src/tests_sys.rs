//! Differential tests for `lower_sys` and PSHUFB: the no-ops, RDTSC,
//! PUSHFQ/POPFQ, LEAVE, CLI/STI, against the interpreter.

use emu_core::cpu::reg;
use iced_x86::code_asm::*;

use super::tests::{assemble, flag_patterns, same, same_with, HOLE, READ_ONLY};

#[test]
fn hints_are_no_ops() {
    same(|a| {
        a.add(rax, rcx)?;
        a.pause()?;
        a.prefetcht0(byte_ptr(rbx))?;
        a.prefetchnta(byte_ptr(HOLE))?;
        a.prefetcht1(byte_ptr(rbx + 0x40))?;
        a.lfence()?;
        a.mfence()?;
        a.sfence()?;
        a.adc(rdx, 5)?;
        Ok(())
    });
}

#[test]
fn rdtsc_clears_upper_halves() {
    // The TSC differs between runs: only its shape is compared.
    same(|a| {
        a.mov(rax, -1i64)?;
        a.mov(rdx, -1i64)?;
        a.rdtsc()?;
        a.shr(rax, 32)?;
        a.shr(rdx, 32)?;
        a.rdtsc()?;
        a.mov(r8, rdx)?;
        a.shr(r8, 32)?;
        a.xor(eax, eax)?;
        a.xor(edx, edx)?;
        Ok(())
    });
}

#[test]
fn rdtscp_reads_tsc_aux_into_ecx() {
    // ECX from IA32_TSC_AUX (its low half, the rest of RCX cleared); the
    // TSC itself only by shape.
    let code = assemble(|a| {
        a.mov(rcx, -1i64)?;
        a.rdtscp()?;
        a.shr(rax, 32)?;
        a.shr(rdx, 32)?;
        Ok(())
    });
    same_with(&code, &|s| s.msrs.tsc_aux = 0xdead_beef_1234_5678);
}

#[test]
fn pushfq_popfq_every_flag_state() {
    for f in flag_patterns() {
        let code = assemble(|a| {
            a.pushfq()?;
            a.pop(rcx)?;
            a.cmp(rax, rdx)?;
            a.pushfq()?;
            a.pop(rsi)?;
            a.add(rax, rdx)?;
            a.pushfq()?;
            // Flip every bit POPFQ may change (and some it may not).
            a.xor(qword_ptr(rsp), 0x0047_7fd5)?;
            a.popfq()?;
            a.pushfq()?;
            a.pop(rdi)?;
            Ok(())
        });
        same_with(&code, &|s| s.set_flags(f | 0x200));
    }
}

#[test]
fn popfq_keeps_iopl_and_if_by_privilege() {
    // IOPL 0 at CPL 0: both may change; the image sets IOPL 3 and clears IF.
    same(|a| {
        a.push(0x3002)?;
        a.popfq()?;
        a.pushfq()?;
        a.pop(rax)?;
        a.push(0x0202)?;
        a.popfq()?;
        Ok(())
    });
}

#[test]
fn leave_and_its_fault() {
    same(|a| {
        a.push(rbp)?;
        a.mov(rbp, rsp)?;
        a.sub(rsp, 0x40)?;
        a.mov(qword_ptr(rbp - 8), rcx)?;
        a.leave()?;
        a.mov(rbp, HOLE + 0x10)?;
        a.leave()?;
        Ok(())
    });
    same(|a| {
        a.mov(rbp, READ_ONLY + 0x20)?;
        a.leave()?;
        Ok(())
    });
}

#[test]
fn cli_sti_and_the_shadow() {
    for f in [0x2u64, 0x202] {
        let code = assemble(|a| {
            a.add(rax, rcx)?;
            a.cli()?;
            a.pushfq()?;
            a.pop(rdx)?;
            a.sub(rax, rcx)?;
            a.sti()?;
            a.pushfq()?;
            a.pop(rsi)?;
            a.cli()?;
            Ok(())
        });
        let s = same_with(&code, &|s| s.set_flags(f));
        assert_eq!(s.gpr[reg::RSI] & 0x200, 0x200);
    }
}

#[test]
fn pshufb_registers_and_memory() {
    same(|a| {
        a.movdqu(xmm0, xmmword_ptr(rbx))?;
        a.movdqu(xmm1, xmmword_ptr(rbx + 0x10))?;
        a.movdqu(xmm2, xmmword_ptr(rbx + 0x80))?;
        a.pshufb(xmm0, xmm1)?;
        a.pshufb(xmm2, xmmword_ptr(rbx + 0x20))?;
        a.pshufb(xmm1, xmm1)?;
        a.movdqu(xmmword_ptr(rbx + 0x200), xmm0)?;
        a.movdqu(xmmword_ptr(rbx + 0x210), xmm2)?;
        // Misaligned memory: #GP from the interpreter.
        a.pshufb(xmm3, xmmword_ptr(rbx + 0x21))?;
        Ok(())
    });
}

#[test]
fn mov_from_segment_registers() {
    same(|a| {
        a.mov(eax, ss)?;
        a.mov(ecx, cs)?;
        a.mov(dx, ds)?;
        a.mov(r9, fs)?;
        a.mov(si, gs)?;
        a.mov(edi, es)?;
        Ok(())
    });
}
