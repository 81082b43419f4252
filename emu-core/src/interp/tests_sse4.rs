//! Tests of SSSE3, SSE4.1 and SSE4.2 beyond the oracle's random
//! snippets (`oracle/tests/interp_vs_host.rs`, which covers the XMM forms
//! with masked exceptions): the MMX forms of SSSE3 and a sample of XMM
//! forms against the host, with `tests_fpu`'s harness; unmasked SIMD
//! exceptions, alignment and enable checks; the CPUID bits.

use iced_x86::code_asm::*;

use super::cpuid::{cpuid, Platform};
use super::fault::{vector, Fault};
use super::tests_fpu::{asm, cpu_for, run_one, run_sse, Case, CR4_OSFXSR, CR4_OSXMMEXCPT, MEM};
use crate::cpu::reg;

/// Whether the host runs the instructions compared with it.
fn host_has_sse42() -> bool {
    let ok = std::arch::is_x86_feature_detected!("ssse3")
        && std::arch::is_x86_feature_detected!("sse4.1")
        && std::arch::is_x86_feature_detected!("sse4.2");
    if !ok {
        eprintln!("host lacks SSSE3/SSE4.1/SSE4.2: comparison skipped");
    }
    ok
}

#[test]
fn cpuid_advertises_ssse3_and_sse4() {
    let (_, _, leaf1_ecx, _) = cpuid(1, 0, Platform::default());
    for bit in [9, 19, 20] {
        assert_ne!(leaf1_ecx & (1 << bit), 0, "leaf 1 ECX bit {bit}");
    }
}

#[test]
fn ssse3_mmx_forms_match_host() {
    if !host_has_sse42() {
        return;
    }
    macro_rules! mmx {
        ($v:ident, $name:literal, $m:ident) => {
            $v.push(Case::new(concat!($name, " mm"), |a| a.$m(mm0, mm1)));
            $v.push(Case::new(concat!($name, " mm,m64"), |a| a.$m(mm2, qword_ptr(rsi))));
        };
    }
    let mut v = Vec::new();
    for imm in [0u32, 3, 7, 8, 13, 15, 16, 200] {
        v.push(Case::new("palignr mm", move |a| a.palignr(mm3, mm4, imm)));
    }
    mmx!(v, "pshufb", pshufb);
    mmx!(v, "phaddw", phaddw);
    mmx!(v, "phaddd", phaddd);
    mmx!(v, "phaddsw", phaddsw);
    mmx!(v, "phsubw", phsubw);
    mmx!(v, "phsubd", phsubd);
    mmx!(v, "phsubsw", phsubsw);
    mmx!(v, "pmaddubsw", pmaddubsw);
    mmx!(v, "pmulhrsw", pmulhrsw);
    mmx!(v, "psignb", psignb);
    mmx!(v, "psignw", psignw);
    mmx!(v, "psignd", psignd);
    mmx!(v, "pabsb", pabsb);
    mmx!(v, "pabsw", pabsw);
    mmx!(v, "pabsd", pabsd);
    v.push(Case::new("palignr mm,m64", |a| a.palignr(mm3, qword_ptr(rsi), 5)));
    run_sse(&v, 150, 0x5353_3300);
}

#[test]
fn sse4_sample_matches_host() {
    if !host_has_sse42() {
        return;
    }
    let mut v = Vec::new();
    for imm in 0..16u32 {
        v.push(Case::new("roundps", move |a| a.roundps(xmm0, xmm1, imm)));
        v.push(Case::new("roundsd", move |a| a.roundsd(xmm2, xmm3, imm)));
    }
    v.push(Case::new("roundss m32", |a| a.roundss(xmm0, dword_ptr(rsi), 4)));
    v.push(Case::new("roundpd m128", |a| a.roundpd(xmm0, xmmword_ptr(rsi), 1)));
    for imm in [0xffu32, 0x71, 0xf1, 0x3c, 0x0f, 0xa5] {
        v.push(Case::new("dpps", move |a| a.dpps(xmm4, xmm5, imm)));
        v.push(Case::new("dppd", move |a| a.dppd(xmm4, xmm5, imm)));
    }
    v.push(Case::new("ptest", |a| a.ptest(xmm0, xmm1)));
    v.push(Case::new("ptest self", |a| a.ptest(xmm0, xmm0)));
    v.push(Case::new("pblendvb", |a| a.pblendvb(xmm3, xmm1)));
    v.push(Case::new("blendvpd m128", |a| a.blendvpd(xmm3, xmmword_ptr(rsi))));
    v.push(Case::new("insertps", |a| a.insertps(xmm0, xmm1, 0x9a)));
    v.push(Case::new("insertps m32", |a| a.insertps(xmm0, dword_ptr(rsi), 0xe1)));
    v.push(Case::new("extractps", |a| a.extractps(eax, xmm1, 2)));
    v.push(Case::new("extractps m32", |a| a.extractps(dword_ptr(rsi), xmm1, 3)));
    v.push(Case::new("pextrb r64", |a| a.pextrb(rax, xmm1, 13)));
    v.push(Case::new("pextrb m8", |a| a.pextrb(byte_ptr(rsi + 3), xmm1, 9)));
    v.push(Case::new("pextrw m16", |a| a.pextrw(word_ptr(rsi), xmm1, 6)));
    v.push(Case::new("pextrq", |a| a.pextrq(rcx, xmm1, 1)));
    v.push(Case::new("pinsrb m8", |a| a.pinsrb(xmm1, byte_ptr(rsi + 5), 17)));
    v.push(Case::new("pinsrd", |a| a.pinsrd(xmm1, ecx, 2)));
    v.push(Case::new("pinsrq", |a| a.pinsrq(xmm1, rax, 1)));
    v.push(Case::new("pmovsxbw m64", |a| a.pmovsxbw(xmm1, qword_ptr(rsi))));
    v.push(Case::new("pmovzxbq m16", |a| a.pmovzxbq(xmm1, word_ptr(rsi))));
    v.push(Case::new("pmovsxdq", |a| a.pmovsxdq(xmm1, xmm2)));
    v.push(Case::new("phminposuw", |a| a.phminposuw(xmm1, xmm2)));
    v.push(Case::new("mpsadbw", |a| a.mpsadbw(xmm1, xmm2, 7)));
    v.push(Case::new("movntdqa", |a| a.movntdqa(xmm1, xmmword_ptr(rsi))));
    v.push(Case::new("packusdw", |a| a.packusdw(xmm1, xmm2)));
    v.push(Case::new("pcmpgtq", |a| a.pcmpgtq(xmm1, xmm2)));
    for imm in [0x00u32, 0x04, 0x08, 0x0c, 0x1d, 0x32, 0x4e, 0x7b] {
        v.push(Case::new("pcmpistri", move |a| a.pcmpistri(xmm1, xmm2, imm)));
        v.push(Case::new("pcmpestrm", move |a| a.pcmpestrm(xmm1, xmmword_ptr(rsi + 3), imm)));
        v.push(Case::new("pcmpestri64", move |a| a.pcmpestri64(xmm1, xmm2, imm)));
    }
    v.push(Case::new("crc32 r32,r8", |a| a.crc32(eax, cl)));
    v.push(Case::new("crc32 r32,m16", |a| a.crc32(edx, word_ptr(rsi))));
    v.push(Case::new("crc32 r64,r64", |a| a.crc32(rax, rcx)));
    run_sse(&v, 100, 0x5e42_0001);
}

/// A CPU running `code` with RSI at the memory operand.
fn cpu_at(code: &[u8]) -> super::Interpreter {
    let mut cpu = cpu_for(code);
    cpu.s.gpr[reg::RSI] = MEM;
    cpu
}

#[test]
fn unmasked_exceptions_leave_the_destination() {
    let xm = Fault::exception(vector::XM);
    let half = u128::from(1.5f32.to_bits()) * 0x0000_0001_0000_0001_0000_0001_0000_0001;
    // ROUNDPS of 1.5 is inexact: #XM with PE unmasked, unless imm8[3]
    // suppresses it.
    for (imm, osxmmexcpt, expect) in [(0, true, Err(xm.clone())), (0, false, Err(Fault::ud())), (8, true, Ok(()))] {
        let code = asm(|a| a.roundps(xmm0, xmm1, imm));
        let mut cpu = cpu_at(&code);
        if !osxmmexcpt {
            cpu.s.cr4 &= !CR4_OSXMMEXCPT;
        }
        cpu.s.fx.mxcsr = 0x1f80 & !(0x20 << 7);
        cpu.s.fx.xmm[1] = half;
        cpu.s.fx.xmm[0] = 7;
        assert_eq!(run_one(&mut cpu), expect, "imm {imm}");
        if expect.is_ok() {
            assert_eq!(cpu.s.fx.xmm[0], u128::from(2f32.to_bits()) * 0x0000_0001_0000_0001_0000_0001_0000_0001);
            assert_eq!(cpu.s.fx.mxcsr & 0x3f, 0, "PE suppressed");
        } else {
            assert_eq!(cpu.s.fx.xmm[0], 7, "destination unchanged");
            assert_eq!(cpu.s.fx.mxcsr & 0x3f, 0x20, "PE recorded");
        }
    }
    // ROUNDSD of an SNaN with IE unmasked.
    let code = asm(|a| a.roundsd(xmm0, xmm1, 4));
    let mut cpu = cpu_at(&code);
    cpu.s.fx.mxcsr = 0x1f80 & !(1 << 7);
    cpu.s.fx.xmm[1] = 0x7ff0_0000_0000_0001;
    assert_eq!(run_one(&mut cpu), Err(xm.clone()));
    assert_eq!(cpu.s.fx.mxcsr & 0x3f, 1);
    // DPPS overflowing with OE unmasked: OE and PE recorded, no result.
    let code = asm(|a| a.dpps(xmm0, xmm1, 0xff));
    let mut cpu = cpu_at(&code);
    cpu.s.fx.mxcsr = 0x1f80 & !(8 << 7);
    let big = u128::from(f32::MAX.to_bits()) * 0x0000_0001_0000_0001_0000_0001_0000_0001;
    cpu.s.fx.xmm[0] = big;
    cpu.s.fx.xmm[1] = big;
    assert_eq!(run_one(&mut cpu), Err(xm));
    assert_eq!(cpu.s.fx.xmm[0], big);
    assert_eq!(cpu.s.fx.mxcsr & 0x3f, 0x28);
    // Masked, the same sum is +inf in every selected element.
    let mut cpu = cpu_at(&code);
    cpu.s.fx.xmm[0] = big;
    cpu.s.fx.xmm[1] = big;
    assert_eq!(run_one(&mut cpu), Ok(()));
    assert_eq!(cpu.s.fx.xmm[0], u128::from(f32::INFINITY.to_bits()) * 0x0000_0001_0000_0001_0000_0001_0000_0001);
}

#[test]
fn alignment_and_enable_checks() {
    let cases: [(&str, Vec<u8>, bool); 6] = [
        ("movntdqa", asm(|a| a.movntdqa(xmm0, xmmword_ptr(rsi + 8))), false),
        ("ptest", asm(|a| a.ptest(xmm0, xmmword_ptr(rsi + 4))), false),
        ("pshufb", asm(|a| a.pshufb(xmm0, xmmword_ptr(rsi + 1))), false),
        ("pcmpistri", asm(|a| a.pcmpistri(xmm0, xmmword_ptr(rsi + 1), 0)), true),
        ("pcmpestrm", asm(|a| a.pcmpestrm(xmm0, xmmword_ptr(rsi + 7), 0)), true),
        ("pmovzxbw", asm(|a| a.pmovzxbw(xmm0, qword_ptr(rsi + 3))), true),
    ];
    for (name, code, unaligned_ok) in &cases {
        let mut cpu = cpu_at(code);
        let expect = if *unaligned_ok { Ok(()) } else { Err(Fault::gp0()) };
        assert_eq!(run_one(&mut cpu), expect, "{name}");
    }
    // CR4.OSFXSR clear: #UD; CR0.TS: #NM; MMX forms: #UD under CR0.EM.
    const EM: u64 = 4;
    const TS: u64 = 8;
    let code = asm(|a| a.pcmpistri(xmm0, xmm1, 0));
    let mut cpu = cpu_at(&code);
    cpu.s.cr4 &= !CR4_OSFXSR;
    assert_eq!(run_one(&mut cpu), Err(Fault::ud()));
    let mut cpu = cpu_at(&code);
    cpu.s.cr0 |= TS;
    assert_eq!(run_one(&mut cpu), Err(Fault::nm()));
    let code = asm(|a| a.pshufb(mm0, mm1));
    let mut cpu = cpu_at(&code);
    cpu.s.cr0 |= EM;
    assert_eq!(run_one(&mut cpu), Err(Fault::ud()));
    // CRC32 is a general-purpose instruction: no SSE checks.
    let code = asm(|a| a.crc32(eax, cl));
    let mut cpu = cpu_at(&code);
    cpu.s.cr4 &= !CR4_OSFXSR;
    cpu.s.cr0 |= TS | EM;
    assert_eq!(run_one(&mut cpu), Ok(()));
}

#[test]
fn pcmpistri_finds_a_substring() {
    let code = asm(|a| a.pcmpistri(xmm0, xmm1, 0x0c));
    let mut cpu = cpu_at(&code);
    let text = |s: &[u8]| s.iter().enumerate().fold(0u128, |r, (i, &b)| r | u128::from(b) << (8 * i));
    cpu.s.fx.xmm[0] = text(b"world");
    cpu.s.fx.xmm[1] = text(b"hello, world!");
    run_one(&mut cpu).unwrap();
    assert_eq!(cpu.s.gpr[reg::RCX], 7);
    let f = cpu.s.flags();
    use crate::cpu::flags;
    assert_eq!(f & (flags::CF | flags::ZF | flags::SF | flags::OF | flags::AF | flags::PF), flags::CF | flags::ZF | flags::SF);
}
