//! Differential tests of the lowerings in `lower_shift`, `lower_bits`,
//! `lower_muldiv`, `lower_string` and `lower_sse`: each program runs in the
//! interpreter and with every block translated (the harness of `tests`),
//! at every operand size, with flag consumers after the instructions,
//! memory operands and faults.

use emu_core::cpu::{reg, CpuState};
use iced_x86::code_asm::*;

use super::tests::{assemble, flag_patterns, same, same_with, HOLE, READ_ONLY};

/// Reads every flag into memory and a register, so flags (lazy or not)
/// are compared through their consumers too.
fn consume(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.setb(byte_ptr(rbx + 0x200))?;
    a.seto(byte_ptr(rbx + 0x201))?;
    a.sete(byte_ptr(rbx + 0x202))?;
    a.sets(byte_ptr(rbx + 0x203))?;
    a.setp(byte_ptr(rbx + 0x204))?;
    a.setl(byte_ptr(rbx + 0x205))?;
    a.adc(r15, 0)?;
    Ok(())
}

#[test]
fn shifts_by_cl_every_size_and_count() {
    for count in [0u32, 1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 200] {
        for flags in flag_patterns() {
            let code = assemble(|a| {
                a.mov(ecx, count)?;
                a.mov(rax, 0x8123_4567_89ab_cdefu64)?;
                a.cmp(rax, rdx)?;
                a.shl(al, cl)?;
                consume(a)?;
                a.shr(si, cl)?;
                consume(a)?;
                a.sar(edi, cl)?;
                consume(a)?;
                a.shl(r8, cl)?;
                consume(a)?;
                a.sal(r9d, cl)?;
                a.sar(r10, cl)?;
                consume(a)?;
                a.shr(byte_ptr(rbx + 3), cl)?;
                consume(a)?;
                a.sar(word_ptr(rbx + 6), cl)?;
                a.shl(dword_ptr(rbx + 8), cl)?;
                a.shr(qword_ptr(rbx + 16), cl)?;
                consume(a)?;
                a.shl(ah, cl)?;
                Ok(())
            });
            same_with(&code, &|s| s.set_flags(flags));
        }
    }
}

#[test]
fn shifts_by_an_immediate_leave_a_lazy_record_every_consumer_reads_alike() {
    // The record is read by conditions in the block (CF and OF of SHL
    // past the width, SHR's OF, SAR's CF), by ADC (the carry), by PUSHF
    // (all six flags), and by the next block from memory (a JMP between).
    for count in [1u32, 7, 8, 9, 15, 16, 17, 31, 32, 63] {
        let code = assemble(|a| {
            let mut next = a.create_label();
            a.mov(rax, 0x8123_4567_89ab_cdefu64)?;
            a.mov(rsi, rax)?;
            a.mov(rdi, rax)?;
            a.shl(al, count)?;
            consume(a)?;
            a.shr(si, count)?;
            consume(a)?;
            a.sar(edi, count)?;
            consume(a)?;
            a.shl(r8, count)?;
            a.pushfq()?;
            a.pop(r12)?;
            a.sar(r9w, count)?;
            a.jmp(next)?;
            a.set_label(&mut next)?;
            consume(a)?;
            a.shr(qword_ptr(rbx + 16), count)?;
            a.pushfq()?;
            a.pop(r13)?;
            a.sal(dword_ptr(rbx + 8), count)?;
            a.adc(r14, 0)?;
            Ok(())
        });
        same_with(&code, &|_| {});
    }
    // A fault right after a shift: the exception sees its flags.
    let s = same(|a| {
        a.mov(rax, 0x8000_0001u64)?;
        a.shl(eax, 1)?;
        a.mov(qword_ptr(HOLE + 8), rax)?;
        Ok(())
    });
    assert_eq!(s.cr2, HOLE + 8);
}

#[test]
fn rotates_every_size_and_count() {
    for count in [0u32, 1, 3, 8, 9, 16, 31, 32, 63] {
        for flags in flag_patterns() {
            let code = assemble(|a| {
                a.mov(ecx, count)?;
                a.add(rax, rdx)?;
                a.rol(al, cl)?;
                consume(a)?;
                a.ror(bh, cl)?;
                a.rol(si, cl)?;
                consume(a)?;
                a.ror(edi, cl)?;
                consume(a)?;
                a.rol(r8, cl)?;
                a.ror(r9, 1)?;
                consume(a)?;
                a.rol(r10d, 13)?;
                a.ror(r11w, 0)?;
                a.rol(qword_ptr(rbx + 16), cl)?;
                consume(a)?;
                a.ror(dword_ptr(rbx + 24), 5)?;
                a.rol(byte_ptr(rbx + 30), cl)?;
                consume(a)?;
                Ok(())
            });
            same_with(&code, &|s| s.set_flags(flags));
        }
    }
}

#[test]
fn double_shifts() {
    for count in [0u32, 1, 4, 15, 16, 17, 31, 32, 63] {
        let code = assemble(|a| {
            a.mov(ecx, count)?;
            a.shld(ax, dx, cl)?;
            consume(a)?;
            a.shrd(si, di, cl)?;
            consume(a)?;
            a.shld(r8d, r9d, cl)?;
            consume(a)?;
            a.shrd(r10, r11, cl)?;
            consume(a)?;
            a.shld(r12, r13, 7)?;
            a.shrd(r14d, eax, 31)?;
            consume(a)?;
            a.shld(qword_ptr(rbx + 8), rax, cl)?;
            a.shrd(word_ptr(rbx + 2), si, cl)?;
            consume(a)?;
            Ok(())
        });
        same_with(&code, &|_| {});
    }
}

#[test]
fn bit_tests_and_scans() {
    for flags in flag_patterns() {
        let code = assemble(|a| {
            a.mov(rcx, 45u64)?;
            a.bt(rax, rcx)?;
            consume(a)?;
            a.bts(edx, ecx)?;
            a.btr(si, 3)?;
            consume(a)?;
            a.btc(rdi, 63)?;
            a.bt(dword_ptr(rbx + 8), 33)?;
            consume(a)?;
            a.bts(qword_ptr(rbx + 16), rcx)?;
            a.mov(r8, -70i64)?;
            a.btr(qword_ptr(rbx + 0x40), r8)?;
            a.btc(word_ptr(rbx + 0x40), r8w)?;
            a.bt(dword_ptr(rbx + 0x40), ecx)?;
            consume(a)?;
            a.bsf(r9, rax)?;
            a.bsr(r10d, edx)?;
            consume(a)?;
            a.xor(r11d, r11d)?;
            a.mov(r12, -1i64)?;
            a.bsf(r12d, r11d)?;
            consume(a)?;
            a.bsr(r13w, word_ptr(rbx + 4))?;
            a.popcnt(r14, rax)?;
            consume(a)?;
            a.popcnt(ax, r11w)?;
            a.lzcnt(ecx, edx)?;
            consume(a)?;
            a.lzcnt(rdx, r11)?;
            a.tzcnt(esi, r11d)?;
            a.tzcnt(rdi, qword_ptr(rbx + 8))?;
            consume(a)?;
            a.bswap(eax)?;
            a.bswap(r8)?;
            Ok(())
        });
        same_with(&code, &|s| s.set_flags(flags));
    }
}

#[test]
fn exchanges_and_compare_exchange() {
    for flags in flag_patterns() {
        let code = assemble(|a| {
            a.xchg(rax, rcx)?;
            a.xchg(dl, dh)?;
            a.xchg(si, di)?;
            a.xchg(r8d, r9d)?;
            a.xchg(qword_ptr(rbx + 8), r10)?;
            a.xchg(word_ptr(rbx + 2), r11w)?;
            a.xadd(r12, r13)?;
            consume(a)?;
            a.xadd(eax, eax)?;
            a.lock().xadd(dword_ptr(rbx + 16), ecx)?;
            consume(a)?;
            a.xadd(bl, ah)?;
            a.mov(rbx, 0x4_0000u64)?;
            // Equal and different accumulators, register and memory.
            a.mov(rax, qword_ptr(rbx + 0x20))?;
            a.lock().cmpxchg(qword_ptr(rbx + 0x20), rdx)?;
            consume(a)?;
            a.cmpxchg(dword_ptr(rbx + 0x28), esi)?;
            consume(a)?;
            a.mov(ecx, eax)?;
            a.cmpxchg(ecx, edi)?;
            a.cmpxchg(r8d, edi)?;
            consume(a)?;
            a.cmpxchg(al, ch)?;
            a.cmpxchg(ax, ax)?;
            a.cmpxchg(word_ptr(rbx + 0x30), r9w)?;
            consume(a)?;
            Ok(())
        });
        same_with(&code, &|s| s.set_flags(flags));
    }
}

#[test]
fn multiply_divide_and_extend() {
    // (RAX, RDX, divisor): narrow and wide dividends, #DE from zero and
    // from quotients too wide.
    let operands: [(u64, u64, u64); 8] = [
        (0x1234_5678_9abc_def0, 0, 0x1_0000_0001),
        (0xdead_beef_0123_4567, 0x1234, 0xffff_ffff_ffff_fff1),
        (u64::MAX, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000),
        (0xffff_ffff_ffff_fff0, 0xffff_ffff_ffff_ffff, 7),
        (0x8000_0000_0000_0000, 0xffff_ffff_ffff_ffff, 0xffff_ffff_ffff_ffff),
        (100, 0, 0xffff_ffff_ffff_fffd),
        (0x7f, 3, 0x80),
        (5, 0, 0),
    ];
    for (x, d, y) in operands {
        for size in 0..4 {
            for signed in [false, true] {
                let code = assemble(|a| {
                    a.mov(rax, x)?;
                    a.mov(rdx, d)?;
                    a.mov(rcx, y)?;
                    a.mov(qword_ptr(rbx + 0x60), rcx)?;
                    match (size, signed) {
                        (0, false) => a.div(cl)?,
                        (0, true) => a.idiv(byte_ptr(rbx + 0x60))?,
                        (1, false) => a.div(word_ptr(rbx + 0x60))?,
                        (1, true) => a.idiv(cx)?,
                        (2, false) => a.div(ecx)?,
                        (2, true) => a.idiv(dword_ptr(rbx + 0x60))?,
                        (_, false) => a.div(qword_ptr(rbx + 0x60))?,
                        _ => a.idiv(rcx)?,
                    }
                    a.mov(rax, x)?;
                    match (size, signed) {
                        (0, false) => a.mul(cl)?,
                        (0, true) => a.imul(byte_ptr(rbx + 0x60))?,
                        (1, false) => a.mul(word_ptr(rbx + 0x60))?,
                        (1, true) => a.imul(cx)?,
                        (2, false) => a.mul(ecx)?,
                        (2, true) => a.imul(dword_ptr(rbx + 0x60))?,
                        (_, false) => a.mul(qword_ptr(rbx + 0x60))?,
                        _ => a.imul(rcx)?,
                    }
                    consume(a)?;
                    a.cbw()?;
                    a.cwd()?;
                    a.cwde()?;
                    a.cdq()?;
                    a.cdqe()?;
                    a.cqo()?;
                    Ok(())
                });
                same_with(&code, &|_| {});
            }
        }
    }
}

#[test]
fn a_wide_unsigned_divide_stays_native() {
    // A 64-bit DIV with RDX set (as libgcc's 128-bit division does), in a
    // loop: the quotient comes from a helper, never the interpreter.
    let code = assemble(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 300)?;
        a.mov(r8, 0xffff_ffff_ffff_fff1u64)?;
        a.set_label(&mut top)?;
        a.mov(rdx, rcx)?;
        a.mov(rax, 0x0123_4567_89ab_cdefu64)?;
        a.div(r8)?;
        a.add(r9, rax)?;
        a.add(r10, rdx)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        Ok(())
    });
    same_with(&code, &|_| {});
    let mut cpu = super::tests::machine(&code);
    cpu.set_translator(Box::new(super::Translator::new().unwrap()));
    cpu.set_jit_threshold(0);
    super::tests_chain::to_hlt(&mut cpu);
    assert_eq!(super::tests_chain::stat(&cpu, "jit: fallback Div"), 0);
    assert!(super::tests_chain::stat(&cpu, "jit: native block runs") > 0);
}

#[test]
fn strings_without_rep() {
    for df in [false, true] {
        let code = assemble(|a| {
            a.lea(rsi, qword_ptr(rbx + 0x100))?;
            a.lea(rdi, qword_ptr(rbx + 0x300))?;
            a.movsb()?;
            a.movsw()?;
            a.movsd()?;
            a.movsq()?;
            a.stosb()?;
            a.stosw()?;
            a.stosd()?;
            a.stosq()?;
            a.lodsb()?;
            a.lodsw()?;
            a.lodsd()?;
            a.lodsq()?;
            a.movsq()?;
            // A faulting destination: RSI and RDI stay.
            a.mov(rdi, HOLE + 8)?;
            a.movsd()?;
            Ok(())
        });
        same_with(&code, &|s| {
            if df {
                s.set_flags(0x402);
            }
        });
    }
}

#[test]
fn sse_moves_and_integer_ops() {
    let code = assemble(|a| {
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.movq(xmm0, rax)?;
        a.movd(xmm1, eax)?;
        a.movdqa(xmm2, xmmword_ptr(rbx + 0x10))?;
        a.movdqu(xmm3, xmmword_ptr(rbx + 0x13))?;
        a.movups(xmm4, xmmword_ptr(rbx + 0xff8))?;
        a.movaps(xmm5, xmm2)?;
        a.pxor(xmm5, xmm3)?;
        a.paddd(xmm5, xmmword_ptr(rbx + 0x20))?;
        a.paddb(xmm4, xmm3)?;
        a.paddw(xmm4, xmm2)?;
        a.paddq(xmm4, xmm5)?;
        a.psubd(xmm3, xmm0)?;
        a.psubb(xmm3, xmm4)?;
        a.punpckldq(xmm2, xmm3)?;
        a.punpckhbw(xmm3, xmm4)?;
        a.punpcklqdq(xmm0, xmm1)?;
        a.punpckhwd(xmm1, xmm5)?;
        a.pshufd(xmm6, xmm5, 0x1b)?;
        a.pcmpeqb(xmm6, xmm5)?;
        a.pcmpeqd(xmm7, xmm7)?;
        a.pand(xmm7, xmm2)?;
        a.pandn(xmm6, xmm3)?;
        a.por(xmm6, xmm1)?;
        a.xorps(xmm8, xmm8)?;
        a.andps(xmm8, xmm6)?;
        a.pslld(xmm2, 3)?;
        a.psrlq(xmm3, 70)?;
        a.psraw(xmm4, 20)?;
        a.psrad(xmm5, 4)?;
        a.pslldq(xmm6, 5)?;
        a.psrldq(xmm7, 9)?;
        a.pmovmskb(ecx, xmm6)?;
        a.movmskps(edx, xmm5)?;
        a.movd(esi, xmm3)?;
        a.movq(rdi, xmm4)?;
        a.movq(xmm9, xmm4)?;
        a.movdqa(xmmword_ptr(rbx + 0x40), xmm5)?;
        a.movdqu(xmmword_ptr(rbx + 0x55), xmm6)?;
        a.movq(qword_ptr(rbx + 0x70), xmm7)?;
        a.movd(dword_ptr(rbx + 0x78), xmm2)?;
        a.movq(xmm10, qword_ptr(rbx + 0x41))?;
        a.movd(xmm11, dword_ptr(rbx + 0x47))?;
        a.movdqu(xmm12, xmmword_ptr(rbx + 0x40))?;
        Ok(())
    });
    same_with(&code, &|s| s.cr4 |= 1 << 9);
}

#[test]
fn sse_faults() {
    // Misaligned MOVDQA: #GP; a store to the read-only page: #PF; the
    // SSE checks: #UD without OSFXSR, #NM with CR0.TS.
    let misaligned = assemble(|a| {
        a.movq(xmm0, rbx)?;
        a.movdqa(xmm1, xmmword_ptr(rbx + 8))?;
        Ok(())
    });
    same_with(&misaligned, &|s| s.cr4 |= 1 << 9);
    let read_only = assemble(|a| {
        a.pxor(xmm1, xmm1)?;
        a.movaps(xmmword_ptr(READ_ONLY + 0x10), xmm1)?;
        Ok(())
    });
    same_with(&read_only, &|s| s.cr4 |= 1 << 9);
    let off = assemble(|a| {
        a.inc(rax)?;
        a.pxor(xmm1, xmm1)?;
        Ok(())
    });
    same_with(&off, &|_| {});
    same_with(&off, &|s: &mut CpuState| {
        s.cr4 |= 1 << 9;
        s.cr0 |= 1 << 3;
    });
}

#[test]
fn faults_in_lowered_forms() {
    // #DE from DIV and IDIV (zero, overflow), a BTS into the read-only
    // page, a shift by CL of a page in the hole.
    same(|a| {
        a.mov(ecx, 0)?;
        a.inc(rax)?;
        a.div(ecx)?;
        Ok(())
    });
    same(|a| {
        a.mov(rax, 0x8000_0000_0000_0000u64)?;
        a.cqo()?;
        a.mov(rcx, -1i64)?;
        a.idiv(rcx)?;
        Ok(())
    });
    same(|a| {
        a.mov(edx, 5)?;
        a.mov(ecx, 2)?;
        a.div(ecx)?;
        Ok(())
    });
    same(|a| {
        a.bts(dword_ptr(READ_ONLY + 4), 3)?;
        Ok(())
    });
    let s = same(|a| {
        a.mov(ecx, 3)?;
        a.add(rax, rcx)?;
        a.shl(qword_ptr(HOLE + 8), cl)?;
        Ok(())
    });
    assert_eq!(s.cr2, HOLE + 8);
    let s = same(|a| {
        a.mov(rdx, 9u64)?;
        a.xchg(qword_ptr(READ_ONLY), rdx)?;
        Ok(())
    });
    assert_eq!(s.gpr[reg::RDX], 9);
}

#[test]
fn sse_scalar_moves_compares_and_fnstcw() {
    // Ordinary values, zeros of both signs, infinities, a quiet and a
    // signalling NaN and denormals (the last three go to the interpreter,
    // which sets MXCSR's IE or DE), as doubles and as singles.
    let doubles: [(f64, f64); 6] = [(1.5, 2.5), (2.5, 1.5), (3.0, 3.0), (0.0, -0.0), (f64::NEG_INFINITY, f64::INFINITY), (f64::MIN_POSITIVE, 0.0)];
    let specials = [(f64::NAN.to_bits(), 1f64.to_bits()), (1f64.to_bits(), 0x7ff0_0000_0000_0001), (1, 1f64.to_bits()), (2f64.to_bits(), 0x8000_0000_0000_0003)];
    let pairs = doubles.iter().map(|&(x, y)| (x.to_bits(), y.to_bits())).chain(specials);
    for (x, y) in pairs {
        let (xs, ys) = ((f64::from_bits(x) as f32).to_bits(), (f64::from_bits(y) as f32).to_bits());
        let code = assemble(|a| {
            a.mov(rax, x)?;
            a.mov(rcx, y)?;
            a.movq(xmm0, rax)?;
            a.movq(xmm1, rcx)?;
            a.comisd(xmm0, xmm1)?;
            consume(a)?;
            a.mov(qword_ptr(rbx + 0x30), rcx)?;
            a.ucomisd(xmm1, qword_ptr(rbx + 0x30))?;
            consume(a)?;
            a.ucomisd(xmm0, xmm1)?;
            consume(a)?;
            a.mov(eax, xs)?;
            a.mov(ecx, ys)?;
            a.movd(xmm2, eax)?;
            a.movd(xmm3, ecx)?;
            a.comiss(xmm2, xmm3)?;
            consume(a)?;
            a.ucomiss(xmm3, xmm2)?;
            consume(a)?;
            // The scalar moves: register to register keeps the upper
            // bytes, a load zeroes them, a store writes the low ones.
            a.pcmpeqd(xmm4, xmm4)?;
            a.movsd_2(xmm4, xmm0)?;
            a.pcmpeqd(xmm5, xmm5)?;
            a.movss(xmm5, xmm2)?;
            a.movsd_2(xmm6, qword_ptr(rbx + 0x30))?;
            a.movss(xmm7, dword_ptr(rbx + 0x31))?;
            a.movsd_2(qword_ptr(rbx + 0x81), xmm1)?;
            a.movss(dword_ptr(rbx + 0x90), xmm3)?;
            a.fnstcw(word_ptr(rbx + 0x98))?;
            Ok(())
        });
        same_with(&code, &|s| s.cr4 |= 1 << 9);
    }
}

#[test]
fn sse_scalar_faults() {
    // An unmasked invalid operation (MXCSR.IM clear) on a NaN: #XM from
    // the interpreter's cold path; FNSTCW to the read-only page: #PF; with
    // CR0.TS: #NM for both.
    let nan = assemble(|a| {
        a.mov(rax, f64::NAN.to_bits())?;
        a.movq(xmm0, rax)?;
        a.mov(dword_ptr(rbx + 0x10), 0x1f00)?;
        a.ldmxcsr(dword_ptr(rbx + 0x10))?;
        a.comisd(xmm0, xmm0)?;
        Ok(())
    });
    same_with(&nan, &|s| s.cr4 |= (1 << 9) | (1 << 10));
    let read_only = assemble(|a| {
        a.inc(rax)?;
        a.fnstcw(word_ptr(READ_ONLY + 0x10))?;
        Ok(())
    });
    same_with(&read_only, &|_| {});
    let ts = assemble(|a| {
        a.inc(rax)?;
        a.fnstcw(word_ptr(rbx + 0x10))?;
        a.movsd_2(xmm0, xmm1)?;
        Ok(())
    });
    same_with(&ts, &|s: &mut CpuState| {
        s.cr4 |= 1 << 9;
        s.cr0 |= 1 << 3;
    });
}

#[test]
fn palignr_every_shift() {
    // Both halves distinct, every shift from none to past both registers,
    // from a register and from (aligned) memory; a misaligned operand
    // faults (#GP) in the interpreter's cold path.
    for shift in [0u32, 1, 7, 15, 16, 17, 24, 31, 32, 200] {
        let code = assemble(|a| {
            a.movdqu(xmm0, xmmword_ptr(rbx + 0x10))?;
            a.movdqu(xmm1, xmmword_ptr(rbx + 0x23))?;
            a.movdqa(xmm2, xmm0)?;
            a.palignr(xmm0, xmm1, shift)?;
            a.palignr(xmm2, xmmword_ptr(rbx + 0x40), shift)?;
            a.palignr(xmm1, xmmword_ptr(rbx + 0x41), shift)?;
            Ok(())
        });
        same_with(&code, &|s| s.cr4 |= 1 << 9);
    }
}

#[test]
fn cmpxchg16b_equal_unequal_and_faults() {
    // Equal (RCX:RBX written, ZF set), unequal in either half (the operand
    // loaded into RDX:RAX, ZF clear), with the other flags kept; an
    // FS-based operand; then a misaligned one (#GP) and one on the
    // read-only page (#PF even when unequal: the operand is written back).
    for f in flag_patterns() {
        let code = assemble(|a| {
            a.mov(rax, qword_ptr(rbx + 0x20))?;
            a.mov(rdx, qword_ptr(rbx + 0x28))?;
            a.mov(rcx, 0x1111_2222_3333_4444u64)?;
            a.mov(r8, rbx)?;
            a.cmpxchg16b(xmmword_ptr(rbx + 0x20))?;
            consume(a)?;
            a.cmpxchg16b(xmmword_ptr(rbx + 0x20))?;
            consume(a)?;
            a.mov(rax, rbx)?;
            a.mov(rdx, qword_ptr(rbx + 0x48))?;
            a.cmpxchg16b(xmmword_ptr(rbx + 0x40))?;
            consume(a)?;
            a.cmpxchg16b(xmmword_ptr(0x700).fs())?;
            consume(a)?;
            Ok(())
        });
        same_with(&code, &|s| s.set_flags(f));
    }
    let misaligned = assemble(|a| {
        a.inc(rax)?;
        a.cmpxchg16b(xmmword_ptr(rbx + 0x18))?;
        Ok(())
    });
    same_with(&misaligned, &|_| {});
    let read_only = assemble(|a| {
        a.inc(rax)?;
        a.cmpxchg16b(xmmword_ptr(READ_ONLY + 0x10))?;
        Ok(())
    });
    same_with(&read_only, &|_| {});
}

#[test]
fn cmpxchg16b_under_lockstep_writes_through_the_helper() {
    // Lockstep journals every write of a native run to replay it under
    // the interpreter: a CMPXCHG16B that stored straight to the host page
    // went unjournaled, and the replay saw its result as the old value.
    // The store before it puts the page's write entry in the TLB, so that
    // the CMPXCHG16B takes its fast path.
    let code = assemble(|a| {
        a.mov(qword_ptr(rbx + 0x100), 0)?;
        a.mov(rax, qword_ptr(rbx + 0x20))?;
        a.mov(rdx, qword_ptr(rbx + 0x28))?;
        a.mov(rcx, 0x1111_2222_3333_4444u64)?;
        a.cmpxchg16b(xmmword_ptr(rbx + 0x20))?;
        a.setz(byte_ptr(rbx + 0x100))?;
        a.hlt()?;
        Ok(())
    });
    let mut cpu = super::tests::machine(&code);
    cpu.set_translator(Box::new(super::Translator::new().unwrap()));
    cpu.set_jit_threshold(0);
    cpu.set_lockstep(true);
    let end = (0..1000).find_map(|_| match cpu.step_block() {
        emu_core::interp::Step::Executed => None,
        other => Some(other),
    });
    assert_eq!(end, Some(emu_core::interp::Step::Halted), "lockstep stopped the run");
    assert!(super::tests_chain::stat(&cpu, "jit lockstep: native runs compared") > 0, "nothing ran natively");
}
