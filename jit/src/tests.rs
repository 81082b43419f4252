//! Differential tests: each program runs in the plain interpreter and in
//! the interpreter with the JIT tier translating every block at first
//! sight; the final states (flags materialised) and memory must agree.

use std::sync::Arc;

use emu_core::cpu::{cr0, efer, reg, seg};
use emu_core::interp::{Interpreter, Step};
use emu_core::{Bus, CpuState, DescriptorTable, GuestMemory, MachineContext, MachineControl, Segment, Vcpu};
use iced_x86::code_asm::*;

use super::Translator;

pub(super) const CODE: u64 = 0x1_0000;
const STACK_TOP: u64 = 0x3_0000;
/// Read-write data, 4 KiB pages; the page at `HOLE` is not present and
/// the one at `READ_ONLY` is read-only.
const DATA: u64 = 0x4_0000;
pub(super) const HOLE: u64 = 0x5_0000;
pub(super) const READ_ONLY: u64 = 0x6_0000;
pub(super) const HANDLERS: u64 = 0x9000;
const MEM_SIZE: u64 = 4 << 20;
const COMPARED: usize = 0x8_0000;

/// What the tests' machines share: a GDT at 0x6000 (null, 64-bit code
/// 0x08, data 0x10), an IDT at 0x7000 whose vector `v` leads to a HLT at
/// `HANDLERS + 16 v`, and a 64-bit CPL-0 state over the page tables at
/// 0x1000, at `rip`.
pub(super) fn cpl0_long_mode(mem: &GuestMemory, rip: u64) -> CpuState {
    mem.write_u64(0x6008, 0x00af_9b00_0000_ffff).unwrap();
    mem.write_u64(0x6010, 0x00cf_9300_0000_ffff).unwrap();
    for v in 0..32u64 {
        let h = HANDLERS + 16 * v;
        let low = (h & 0xffff) | 0x08 << 16 | 0x8e << 40 | ((h >> 16) & 0xffff) << 48;
        mem.write_u64(0x7000 + 16 * v, low).unwrap();
        mem.write_u64(0x7008 + 16 * v, h >> 32).unwrap();
    }
    mem.write(HANDLERS, &[0xf4; 512]).unwrap();
    let mut s = CpuState::reset();
    s.cr0 = cr0::PE | cr0::PG | cr0::ET;
    s.cr3 = 0x1000;
    s.cr4 = emu_core::mmu::cr4::PAE;
    s.efer = efer::LME | efer::LMA;
    s.segs[seg::CS] = Segment::flat(0x8, true, true);
    for r in [seg::DS, seg::ES, seg::SS, seg::FS, seg::GS] {
        s.segs[r] = Segment::flat(0x10, false, false);
    }
    s.gdtr = DescriptorTable { base: 0x6000, limit: 0x17 };
    s.idtr = DescriptorTable { base: 0x7000, limit: 32 * 16 - 1 };
    s.rip = rip;
    s
}

/// A 64-bit CPL-0 machine: 4 KiB identity pages over the first 2 MiB
/// (with a hole and a read-only page), an IDT whose vector `v` leads to a
/// HLT at `HANDLERS + 16 v`.
pub(super) fn machine(code: &[u8]) -> Interpreter {
    machine_with(code, Bus::new(), MachineControl::new())
}

/// [`machine`] with these port devices and this control.
pub(super) fn machine_with(code: &[u8], pio: Bus, control: Arc<MachineControl>) -> Interpreter {
    let mem = GuestMemory::new(MEM_SIZE).unwrap();
    mem.write_u64(0x1000, 0x2003).unwrap();
    mem.write_u64(0x2000, 0x3003).unwrap();
    mem.write_u64(0x3000, 0x4003).unwrap();
    for page in 0..512u64 {
        let addr = page << 12;
        let bits = match addr {
            HOLE => 0,
            READ_ONLY => 0x1,
            _ => 0x3,
        };
        if bits != 0 {
            mem.write_u64(0x4000 + 8 * page, addr | bits).unwrap();
        }
    }
    mem.write(CODE, code).unwrap();
    for i in 0..0x1000u64 {
        mem.write(DATA + i, &[(i * 37 + 11) as u8]).unwrap();
        mem.write(READ_ONLY + i, &[(i * 13 + 5) as u8]).unwrap();
    }
    let mut s = cpl0_long_mode(&mem, CODE);
    // WP, so the read-only page is read-only at CPL 0 too.
    s.cr0 |= 1 << 16;
    s.segs[seg::FS].base = 0x100;
    s.segs[seg::GS].base = DATA + 0x800;
    for (i, g) in s.gpr.iter_mut().enumerate() {
        *g = 0x0123_4567_89ab_cdefu64.rotate_left(7 * i as u32) ^ (i as u64 * 0x1111);
    }
    s.gpr[reg::RSP] = STACK_TOP;
    s.gpr[reg::RBX] = DATA;
    let ctx = MachineContext { memory: Arc::new(mem), pio: Arc::new(pio), mmio: Arc::new(Bus::new()), control };
    Interpreter::new(ctx, s)
}

struct Outcome {
    state: CpuState,
    memory: Vec<u8>,
    native_runs: u64,
    retired: u64,
}

/// How a test program runs: interpreted, or translated with the first tier
/// compiled by the baseline backend or by Cranelift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Interp,
    Baseline,
    Cranelift,
}

fn run(code: &[u8], backend: Backend, setup: &dyn Fn(&mut CpuState)) -> Outcome {
    let mut cpu = machine(code);
    setup(cpu.state_mut());
    let mem = Arc::clone(&machine_memory(&cpu));
    if backend != Backend::Interp {
        let mut translator = Translator::new().unwrap();
        translator.set_baseline(backend == Backend::Baseline);
        cpu.set_translator(Box::new(translator));
        cpu.set_jit_threshold(0);
    }
    let mut halted = false;
    for _ in 0..100_000 {
        match cpu.step_block() {
            Step::Executed => {}
            Step::Halted => {
                halted = true;
                break;
            }
            Step::Stopped(r) => panic!("stopped: {r:?} at {:#x}", cpu.state().rip),
        }
    }
    assert!(halted, "no HLT reached");
    let native_runs = cpu.stats().events.iter().find(|(k, _)| k == "jit: native block runs").map_or(0, |e| e.1);
    let mut memory = vec![0; COMPARED];
    mem.read(0, &mut memory).unwrap();
    Outcome { retired: cpu.retired(), state: Vcpu::state(&mut cpu).unwrap(), memory, native_runs }
}

fn machine_memory(cpu: &Interpreter) -> Arc<GuestMemory> {
    cpu.memory()
}

pub(super) fn assemble(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE).unwrap()
}

/// Runs `code` interpreted and translated (the first tier by each
/// backend) and checks that they agree; returns the translated state.
pub(super) fn same_with(code: &[u8], setup: &dyn Fn(&mut CpuState)) -> CpuState {
    let interp = run(code, Backend::Interp, setup);
    let mut last = None;
    for backend in [Backend::Cranelift, Backend::Baseline] {
        let jit = run(code, backend, setup);
        assert!(jit.native_runs > 0, "nothing ran natively ({backend:?})");
        let (a, b) = (&interp.state, &jit.state);
        assert_eq!(a.gpr, b.gpr, "registers differ (interp, {backend:?})");
        assert_eq!(a.rip, b.rip, "rip ({backend:?})");
        assert_eq!(a.rflags, b.rflags, "rflags {:#x} vs {:#x} ({backend:?})", a.rflags, b.rflags);
        assert_eq!(a.cr2, b.cr2, "cr2 ({backend:?})");
        // Counted across tail calls too (each region counts on).
        assert_eq!(interp.retired, jit.retired, "instructions retired ({backend:?})");
        // The rest of a lazy record is dead once it is materialised.
        let normal = |s: &CpuState| {
            let mut s = s.clone();
            if s.lazy.op == emu_core::cpu::FlagsOp::Materialized {
                s.lazy = Default::default();
            }
            s
        };
        assert_eq!(normal(a), normal(b), "states differ ({backend:?})");
        if let Some(i) = interp.memory.iter().zip(&jit.memory).position(|(x, y)| x != y) {
            panic!("memory differs at {i:#x}: {:#x} vs {:#x} ({backend:?})", interp.memory[i], jit.memory[i]);
        }
        last = Some(jit.state);
    }
    last.expect("two backends ran")
}

pub(super) fn same(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> CpuState {
    same_with(&assemble(f), &|_| {})
}

/// Sets RFLAGS' arithmetic bits to each of a few patterns.
pub(super) fn flag_patterns() -> [u64; 4] {
    [0x2, 0x2 | 0x8d5, 0x2 | 0x1, 0x2 | 0x840]
}

#[test]
fn mov_all_sizes_and_partial_registers() {
    same(|a| {
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.mov(al, 0x99)?;
        a.mov(ah, 0xaa)?;
        a.mov(bx, 0xbbcc)?;
        a.mov(ecx, 0xdead_beefu32)?;
        a.mov(dh, al)?;
        a.mov(sil, al)?;
        a.mov(dl, ah)?;
        a.mov(r9w, ax)?;
        a.mov(r10d, r9d)?;
        a.mov(r11, rax)?;
        a.mov(bh, ch)?;
        a.mov(r12b, 0x7f)?;
        a.mov(qword_ptr(rbx + 0x10), rax)?;
        a.mov(dword_ptr(rbx + 0x18), 0x8000_0001u32)?;
        a.mov(word_ptr(rbx + 0x20), 0x1234)?;
        a.mov(r14, 3u64)?;
        a.mov(word_ptr(rbx + r14 * 8 + 0x40), 0x1234)?;
        a.mov(byte_ptr(rbx + 0x21), ah)?;
        a.mov(edi, dword_ptr(rbx + 0x10))?;
        a.mov(r8w, word_ptr(rbx + 0x11))?;
        a.mov(bpl, byte_ptr(rbx + 0x13))?;
        a.mov(ch, byte_ptr(rbx + 0x14))?;
        a.mov(qword_ptr(rbx + 0x28), -5)?;
        a.mov(r13, qword_ptr(rbx + 0x28))?;
        a.mov(rdx, qword_ptr(0x4_0030u64))?;
        Ok(())
    });
}

#[test]
fn movzx_movsx_lea() {
    same(|a| {
        let mut here = a.create_label();
        a.set_label(&mut here)?;
        a.mov(rax, 0x8899_aabb_ccdd_eeffu64)?;
        a.movzx(ecx, al)?;
        a.movzx(rdx, ax)?;
        a.movsx(rsi, al)?;
        a.movsx(edi, ax)?;
        a.movsx(dx, ah)?;
        a.movsx(r8w, al)?;
        a.movsxd(r9, eax)?;
        a.movzx(r10d, byte_ptr(rbx + 3))?;
        a.movsx(r11, word_ptr(rbx + 5))?;
        a.movsxd(r12, dword_ptr(rbx + 7))?;
        a.lea(r13, qword_ptr(rax + rcx * 4 + 0x1234))?;
        a.lea(r14d, dword_ptr(rax + rdx * 8 - 1))?;
        a.lea(r15w, word_ptr(rsi + rdi))?;
        a.lea(rbp, qword_ptr(here))?;
        a.lea(eax, dword_ptr(ecx + edx * 2 + 7))?;
        Ok(())
    });
}

#[test]
fn alu_every_size_and_form() {
    for flags in flag_patterns() {
        let code = assemble(|a| {
            a.mov(rax, 0x7fff_ffff_ffff_ff80u64)?;
            a.mov(rcx, 0x8000_0000_0000_0081u64)?;
            a.add(al, cl)?;
            a.adc(ah, 0x7f)?;
            a.sub(ax, cx)?;
            a.sbb(eax, ecx)?;
            a.and(rax, rcx)?;
            a.or(dl, 0x80u32 as i32)?;
            a.xor(rdx, rax)?;
            a.cmp(rdx, rcx)?;
            a.test(esi, edi)?;
            a.add(qword_ptr(rbx + 8), rax)?;
            a.adc(dword_ptr(rbx + 12), -1)?;
            a.sub(word_ptr(rbx + 2), si)?;
            a.sbb(byte_ptr(rbx + 1), 3)?;
            a.and(rdi, qword_ptr(rbx + 16))?;
            a.or(byte_ptr(rbx + 30), bh)?;
            a.xor(dword_ptr(rbx + 40), 0x5555_5555)?;
            a.cmp(byte_ptr(rbx + 7), 0x80u32 as i32)?;
            a.test(qword_ptr(rbx + 8), rcx)?;
            a.adc(r8, r9)?;
            a.sbb(r10w, 0x7fff)?;
            Ok(())
        });
        same_with(&code, &|s| s.set_flags(flags));
    }
}

#[test]
fn unary_and_shifts() {
    for flags in flag_patterns() {
        let code = assemble(|a| {
            a.inc(al)?;
            a.dec(cx)?;
            a.neg(edx)?;
            a.not(rsi)?;
            a.inc(qword_ptr(rbx + 8))?;
            a.dec(byte_ptr(rbx + 1))?;
            a.neg(word_ptr(rbx + 4))?;
            a.not(dword_ptr(rbx + 12))?;
            a.mov(r8, 0x8000_0000_0000_0001u64)?;
            a.inc(r8)?;
            a.shl(r8, 1)?;
            a.shr(r9d, 5)?;
            a.sar(r10w, 15)?;
            a.sal(r11b, 7)?;
            a.shl(byte_ptr(rbx + 3), 9)?;
            a.shr(qword_ptr(rbx + 16), 63)?;
            a.sar(dword_ptr(rbx + 20), 31)?;
            a.shl(r12d, 32)?;
            a.shr(r13b, 8)?;
            a.sar(r14, 1)?;
            a.shl(r15w, 17)?;
            a.imul_2(rax, rcx)?;
            a.imul_2(edx, dword_ptr(rbx + 8))?;
            a.imul_3(si, di, -3)?;
            a.imul_3(r8, qword_ptr(rbx + 16), 0x7fff_ffff)?;
            a.mov(r9d, 0x10000u32)?;
            a.imul_2(r9d, r9d)?;
            a.mov(r10, 3u64)?;
            a.imul_3(r10, r10, 5)?;
            Ok(())
        });
        same_with(&code, &|s| s.set_flags(flags));
    }
}

#[test]
fn flags_feed_jcc_setcc_cmovcc_adc() {
    use iced_x86::code_asm::CodeAssembler as A;
    type Op = fn(&mut A) -> Result<(), IcedError>;
    // Flag producers: each leaves a different lazy record (or none).
    let producers: [Op; 9] = [
        |a| a.cmp(rax, rcx),
        |a| a.cmp(al, cl),
        |a| a.sub(ax, cx),
        |a| a.add(eax, ecx),
        |a| a.test(rax, rcx),
        |a| a.inc(cl),
        |a| a.neg(rax),
        |a| a.sbb(rax, rcx),
        |a| a.shl(eax, 3),
    ];
    let operands: [(u64, u64); 5] =
        [(5, 7), (7, 5), (0x80, 0x7f), (0x8000_0000_0000_0000, 1), (0xffff_ffff_ffff_ffff, 0xffff_ffff_ffff_ffff)];
    for produce in producers {
        for (x, y) in operands {
            let code = assemble(|a| {
                a.mov(rax, x)?;
                a.mov(rcx, y)?;
                produce(a)?;
                a.seto(byte_ptr(rbx))?;
                a.setno(byte_ptr(rbx + 1))?;
                a.setb(byte_ptr(rbx + 2))?;
                a.setae(dl)?;
                a.sete(dh)?;
                a.setne(sil)?;
                a.setbe(dil)?;
                a.seta(r8b)?;
                a.sets(r9b)?;
                a.setns(r10b)?;
                a.setp(r11b)?;
                a.setnp(r12b)?;
                a.setl(r13b)?;
                a.setge(r14b)?;
                a.setle(r15b)?;
                a.setg(byte_ptr(rbx + 3))?;
                a.cmovl(rbp, rax)?;
                a.cmovg(edx, dword_ptr(rbx + 4))?;
                a.cmovb(si, cx)?;
                a.adc(rdi, 0)?;
                Ok(())
            });
            same_with(&code, &|_| {});
            // Each condition as a branch right after the producer.
            for cc in 0..16 {
                let code = assemble(|a| {
                    let mut taken = a.create_label();
                    a.mov(rax, x)?;
                    a.mov(rcx, y)?;
                    produce(a)?;
                    match cc {
                        0 => a.jo(taken)?,
                        1 => a.jno(taken)?,
                        2 => a.jb(taken)?,
                        3 => a.jae(taken)?,
                        4 => a.je(taken)?,
                        5 => a.jne(taken)?,
                        6 => a.jbe(taken)?,
                        7 => a.ja(taken)?,
                        8 => a.js(taken)?,
                        9 => a.jns(taken)?,
                        10 => a.jp(taken)?,
                        11 => a.jnp(taken)?,
                        12 => a.jl(taken)?,
                        13 => a.jge(taken)?,
                        14 => a.jle(taken)?,
                        _ => a.jg(taken)?,
                    }
                    a.mov(edx, 1)?;
                    a.hlt()?;
                    a.set_label(&mut taken)?;
                    a.mov(edx, 2)?;
                    Ok(())
                });
                same_with(&code, &|_| {});
            }
        }
    }
}

#[test]
fn stack_calls_and_loops() {
    let s = same(|a| {
        let mut f = a.create_label();
        let mut top = a.create_label();
        let mut out = a.create_label();
        let mut fin = a.create_label();
        a.mov(ecx, 10)?;
        a.xor(eax, eax)?;
        a.set_label(&mut top)?;
        a.push(rcx)?;
        a.push(0x1234)?;
        a.push(-8)?;
        a.push(qword_ptr(rbx + 8))?;
        a.call(f)?;
        a.pop(rdx)?;
        a.pop(r8)?;
        a.pop(r9w)?;
        a.add(rsp, 6)?;
        a.pop(rcx)?;
        a.dec(ecx)?;
        a.jne(top)?;
        a.lea(rdx, qword_ptr(out))?;
        a.push(rdx)?;
        a.ret()?;
        a.set_label(&mut f)?;
        a.add(rax, rcx)?;
        a.push(rax)?;
        a.pop(r11)?;
        a.ret_1(0)?;
        a.set_label(&mut out)?;
        a.push(rax)?;
        a.push(rax)?;
        a.lea(rdi, qword_ptr(rsp + 16))?;
        a.lea(rdx, qword_ptr(fin))?;
        a.mov(qword_ptr(rbx + 0x100), rdx)?;
        a.call(qword_ptr(rbx + 0x100))?;
        a.set_label(&mut fin)?;
        Ok(())
    });
    let _ = s;
}

#[test]
fn page_crossing_and_faults() {
    // A read across the end of DATA's last page into the hole: #PF, with
    // RIP, registers and CR2 exact.
    let s = same(|a| {
        a.mov(rax, 1u64)?;
        a.add(rcx, rax)?;
        a.mov(edx, dword_ptr(rbx + 0xffe))?;
        a.mov(esi, dword_ptr(HOLE - 2))?;
        a.mov(rdi, 7u64)?;
        Ok(())
    });
    // The interpreter reports the last byte's address for a crossing access.
    assert!((HOLE..HOLE + 4).contains(&s.cr2), "cr2 {:#x}", s.cr2);
    // A write to the read-only page, and a push into the hole.
    let s = same(|a| {
        a.inc(rax)?;
        a.add(qword_ptr(READ_ONLY + 8), rax)?;
        a.inc(rcx)?;
        Ok(())
    });
    assert_eq!(s.cr2, READ_ONLY + 8);
}

#[test]
fn faulting_push_and_non_canonical() {
    same(|a| {
        a.mov(rax, 5u64)?;
        a.push(rax)?;
        a.mov(qword_ptr(HOLE + 0x10), rax)?;
        a.mov(rcx, 6u64)?;
        Ok(())
    });
}

#[test]
fn non_canonical_access() {
    // A non-canonical access: #GP from the helper.
    same(|a| {
        a.mov(rax, 0x8000_0000_0000_0000u64)?;
        a.cmp(rax, rcx)?;
        a.mov(rdx, qword_ptr(rax))?;
        Ok(())
    });
}

#[test]
fn segment_bases_and_crossing_reads() {
    // FS/GS bases and a crossing read that succeeds.
    same(|a| {
        a.mov(rax, qword_ptr(rbx + 0xffd))?;
        a.mov(rcx, qword_ptr(0x1000u64).gs())?;
        a.mov(qword_ptr(0x10u64).fs(), rcx)?;
        a.add(dword_ptr(0x7feu64).gs(), eax)?;
        Ok(())
    });
}

#[test]
fn fallbacks_mid_block() {
    for flags in flag_patterns() {
        let code = assemble(|a| {
            a.mov(rax, 0x1234_5678u64)?;
            a.cmp(rax, rcx)?;
            a.imul_2(rax, rcx)?;
            a.add(rax, 3)?;
            a.bswap(rax)?;
            a.bsf(rdx, rax)?;
            a.shl(rax, cl)?;
            a.xchg(rax, rdx)?;
            a.pushfq()?;
            a.cmp(al, 3)?;
            a.pop(r8)?;
            a.mul(rcx)?;
            a.setb(r9b)?;
            a.lahf()?;
            a.cld()?;
            a.cmc()?;
            a.adc(r10, 1)?;
            Ok(())
        });
        same_with(&code, &|s| s.set_flags(flags));
    }
}

#[test]
fn self_modifying_code() {
    // The store patches the immediate of the next MOV in the same block.
    let code = assemble(|a| {
        let mut patch = a.create_label();
        a.mov(ecx, 3)?;
        a.lea(rdx, qword_ptr(patch))?;
        a.mov(dword_ptr(rdx + 1), ecx)?;
        a.set_label(&mut patch)?;
        a.mov(eax, 1)?;
        a.add(eax, 10)?;
        Ok(())
    });
    let s = same_with(&code, &|_| {});
    assert_eq!(s.gpr[reg::RAX], 13);
    // A loop that rewrites its own body through a fallback (XCHG).
    let code = assemble(|a| {
        let mut patch = a.create_label();
        a.mov(ecx, 4)?;
        a.xor(esi, esi)?;
        a.set_label(&mut patch)?;
        a.mov(eax, 1)?;
        a.add(esi, eax)?;
        a.lea(edx, dword_ptr(rcx + 5))?;
        a.lea(rdi, qword_ptr(patch))?;
        a.xchg(dword_ptr(rdi + 1), edx)?;
        a.dec(ecx)?;
        a.jne(patch)?;
        Ok(())
    });
    let s = same_with(&code, &|_| {});
    assert_eq!(s.gpr[reg::RSI], 1 + 9 + 8 + 7);
}

#[test]
fn stores_onto_pages_holding_code_are_left_to_the_interpreter() {
    // PUSH with the stack in the running code's page: each push leaves the
    // instruction (and its RSP update) to the interpreter.
    let code = assemble(|a| {
        let mut top = a.create_label();
        let mut again = a.create_label();
        let mut done = a.create_label();
        a.mov(ecx, 5)?;
        a.xor(ebx, ebx)?;
        a.lea(rsp, qword_ptr(top))?;
        a.set_label(&mut again)?;
        a.push(rcx)?;
        a.pop(rax)?;
        a.add(rbx, rax)?;
        a.dec(ecx)?;
        a.jne(again)?;
        a.jmp(done)?;
        a.db(&[0xcc; 64])?;
        a.set_label(&mut top)?;
        a.nop()?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    let s = same_with(&code, &|_| {});
    assert_eq!(s.gpr[reg::RBX], 5 + 4 + 3 + 2 + 1);
    // CALL pushing its return address onto the code page, and a store
    // that crosses from the page before into the code page.
    let code = assemble(|a| {
        let mut top = a.create_label();
        let mut callee = a.create_label();
        let mut done = a.create_label();
        a.lea(rsp, qword_ptr(top))?;
        a.call(callee)?;
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.mov(rdi, CODE - 4)?;
        a.mov(qword_ptr(rdi), rax)?;
        a.mov(rdx, qword_ptr(rdi))?;
        a.jmp(done)?;
        a.set_label(&mut callee)?;
        a.mov(esi, 7)?;
        a.ret()?;
        a.db(&[0xcc; 32])?;
        a.set_label(&mut top)?;
        a.nop()?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    let s = same_with(&code, &|_| {});
    assert_eq!((s.gpr[reg::RSI], s.gpr[reg::RDX]), (7, 0x1122_3344_5566_7788));
}

#[test]
fn a_lone_block_of_fallbacks_stays_interpreted_when_asked() {
    // CPUID is left to the fallback; the block is CPUID and the HLT.
    let code = assemble(|a| a.cpuid());
    let stat = |cpu: &Interpreter, name: &str| cpu.stats().events.iter().find(|(k, _)| k == name).map_or(0, |e| e.1);
    for interpret in [false, true] {
        let mut cpu = machine(&code);
        let mut translator = Translator::new().unwrap();
        if interpret {
            translator.interpret_fallback_blocks();
        }
        cpu.set_translator(Box::new(translator));
        cpu.set_jit_threshold(0);
        while cpu.step_block() == Step::Executed {}
        assert_eq!(stat(&cpu, "jit: native block runs") == 0, interpret);
        assert_eq!(stat(&cpu, "jit: left interpreted (mostly fallbacks)"), u64::from(interpret));
    }
}
