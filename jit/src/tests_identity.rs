//! Loads through the identity pages (`mmu::IdentityPages`): a 64-bit
//! CPL-0 machine whose 2 MiB pages map to themselves, as a kernel
//! decompressor's do. Native code reads those pages past the TLB; the
//! interpreter and the JIT tier must still agree when the mapping changes
//! under the code and for accesses across a page's end.

use std::sync::Arc;

use emu_core::cpu::reg;
use emu_core::interp::{Interpreter, Step};
use emu_core::{Bus, CpuState, GuestMemory, MachineContext, MachineControl, Vcpu};
use iced_x86::code_asm::*;

use super::tests::{cpl0_long_mode, HANDLERS};
use super::Translator;

const CODE: u64 = 0x20_0000;
const PD: u64 = 0x3000;
const PAGE: u64 = 2 << 20;

/// 16 MiB, identity-mapped with eight 2 MiB pages (accessed and dirty,
/// as Linux presets them), every byte of pages 2 to 7 a function of its
/// address, `code` at 2 MiB and an IDT whose vector `v` leads to a HLT at
/// `HANDLERS + 16 v`.
fn machine(code: &[u8]) -> Interpreter {
    let mem = GuestMemory::new(16 << 20).unwrap();
    mem.write_u64(0x1000, 0x2000 | 0x23).unwrap();
    mem.write_u64(0x2000, PD | 0x23).unwrap();
    for i in 0..8u64 {
        mem.write_u64(PD + 8 * i, (i * PAGE) | 0xe3).unwrap();
    }
    for addr in (2 * PAGE..8 * PAGE).step_by(8) {
        mem.write_u64(addr, addr.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap();
    }
    mem.write(CODE, code).unwrap();
    let mut s = cpl0_long_mode(&mem, CODE);
    s.gpr[reg::RSP] = 0x8000;
    let ctx = MachineContext { memory: Arc::new(mem), pio: Arc::new(Bus::new()), mmio: Arc::new(Bus::new()), control: MachineControl::new() };
    Interpreter::new(ctx, s)
}

fn run(code: &[u8], jit: bool) -> CpuState {
    let mut cpu = machine(code);
    if jit {
        cpu.set_translator(Box::new(Translator::new().unwrap()));
        cpu.set_jit_threshold(0);
    }
    for _ in 0..100_000 {
        match cpu.step_block() {
            Step::Executed => {}
            Step::Halted => {
                let mut s = Vcpu::state(&mut cpu).unwrap();
                s.lazy = Default::default();
                return s;
            }
            Step::Stopped(r) => panic!("stopped: {r:?} at {:#x}", cpu.state().rip),
        }
    }
    panic!("no HLT reached");
}

/// Assembles `body` after a first block that loads from page 2 and jumps
/// on (that block is translated before any TLB fill; the rest after, with
/// the identity pages held), and ends it with HLT.
fn program(body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut next = a.create_label();
    a.mov(rax, qword_ptr(2 * PAGE)).unwrap();
    a.jmp(next).unwrap();
    a.set_label(&mut next).unwrap();
    a.nop().unwrap();
    body(&mut a).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE).unwrap()
}

fn agree(code: &[u8]) -> CpuState {
    let (interp, jit) = (run(code, false), run(code, true));
    assert_eq!(interp.gpr, jit.gpr, "registers differ (interp, jit)");
    assert_eq!(interp.rip, jit.rip, "rip");
    jit
}

#[test]
fn loads_of_every_size_agree_up_to_a_page_end_and_across_it() {
    let state = agree(&program(|a| {
        // Page 4 maps to page 6 from here on (INVLPG): an access that
        // starts in page 3 and ends in page 4 reads both mappings.
        a.mov(rbx, PD + 8 * 4)?;
        a.mov(rcx, (6 * PAGE) | 0xe3)?;
        a.mov(qword_ptr(rbx), rcx)?;
        a.mov(rdx, 4 * PAGE)?;
        a.invlpg(byte_ptr(rdx))?;
        a.mov(rsi, 4 * PAGE - 8)?;
        a.mov(r8, qword_ptr(rsi))?;
        // Page 3 is held now: these read past the TLB.
        a.mov(r14, qword_ptr(rsi - 0x1000))?;
        a.mov(r15d, dword_ptr(rsi + 4))?;
        a.movzx(ebp, word_ptr(rsi + 6))?;
        a.add(r14, qword_ptr(rsi - 0x10_0000))?;
        a.mov(r9, qword_ptr(rsi + 4))?;
        a.mov(r10d, dword_ptr(rsi + 6))?;
        a.movzx(r11d, word_ptr(rsi + 7))?;
        a.movzx(r12d, byte_ptr(rsi + 8))?;
        a.mov(r13, qword_ptr(rsi + 1))?;
        Ok(())
    }));
    let word = |addr: u64| addr.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    assert_eq!(state.gpr[reg::R8], word(4 * PAGE - 8));
    // Bytes 4..8 of page 3's last word, then page 6's first bytes.
    assert_eq!(state.gpr[9], word(4 * PAGE - 8) >> 32 | word(6 * PAGE) << 32);
    assert_eq!(state.gpr[12], word(6 * PAGE) & 0xff);
    assert_eq!(state.gpr[14], word(4 * PAGE - 8 - 0x1000).wrapping_add(word(4 * PAGE - 8 - 0x10_0000)));
    assert_eq!(state.gpr[15], word(4 * PAGE - 8) >> 32);
    assert_eq!(state.gpr[reg::RBP], word(4 * PAGE - 8) >> 48);
}

#[test]
fn a_page_remapped_and_invalidated_reads_its_new_frame() {
    let state = agree(&program(|a| {
        a.mov(rsi, 5 * PAGE + 0x100)?;
        a.mov(r8, qword_ptr(rsi))?;
        // Page 5 now maps page 7; INVLPG makes the change seen.
        a.mov(rbx, PD + 8 * 5)?;
        a.mov(rcx, (7 * PAGE) | 0xe3)?;
        a.mov(qword_ptr(rbx), rcx)?;
        a.invlpg(byte_ptr(rsi))?;
        a.mov(r9, qword_ptr(rsi))?;
        // And back, through a CR3 write this time.
        a.mov(rcx, (5 * PAGE) | 0xe3)?;
        a.mov(qword_ptr(rbx), rcx)?;
        a.mov(rax, cr3)?;
        a.mov(cr3, rax)?;
        a.mov(r10, qword_ptr(rsi))?;
        // Not present: #PF (vector 14's HLT), CR2 the address.
        a.mov(qword_ptr(rbx), 0)?;
        a.invlpg(byte_ptr(rsi))?;
        a.mov(r11, qword_ptr(rsi))?;
        Ok(())
    }));
    let word = |addr: u64| addr.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    assert_eq!(state.gpr[reg::R8], word(5 * PAGE + 0x100));
    assert_eq!(state.gpr[9], word(7 * PAGE + 0x100));
    assert_eq!(state.gpr[10], word(5 * PAGE + 0x100));
    assert_eq!(state.rip, HANDLERS + 16 * 14 + 1);
    assert_eq!(state.cr2, 5 * PAGE + 0x100);
}

#[test]
fn an_optimised_loop_leaves_loads_missing_the_identity_pages_to_the_interpreter() {
    use emu_core::interp::HOT_LOOP_BACK_EDGES;
    // Reads pages 2 to 5 in turn, dropping the page from the TLB (and the
    // identity pages) every 4,096 iterations: the optimised code's next
    // load there misses, leaves it to the interpreter, which holds the
    // page again, and the code runs on.
    let code = program(|a| {
        let mut top = a.create_label();
        let mut skip = a.create_label();
        a.mov(ecx, 3 * HOT_LOOP_BACK_EDGES)?;
        a.set_label(&mut top)?;
        a.mov(esi, ecx)?;
        a.shr(esi, 12)?;
        a.and(esi, 3)?;
        a.shl(esi, 21)?;
        a.add(rsi, 2 * PAGE as i32)?;
        a.test(ecx, 0xfff)?;
        a.jne(skip)?;
        a.invlpg(byte_ptr(rsi))?;
        a.set_label(&mut skip)?;
        a.add(rax, qword_ptr(rsi + 0x100))?;
        a.xor(rax, qword_ptr(rsi + 0x1f_fff8))?;
        a.dec(ecx)?;
        a.jne(top)?;
        Ok(())
    });
    let mut interp = machine(&code);
    super::tests_chain::to_hlt(&mut interp);
    let mut cpu = machine(&code);
    cpu.set_translator(Box::new(Translator::new().unwrap()));
    cpu.set_jit_threshold(20);
    super::tests_chain::to_hlt(&mut cpu);
    assert_eq!(Vcpu::state(&mut interp).unwrap().gpr, Vcpu::state(&mut cpu).unwrap().gpr, "registers differ (interp, jit)");
    let stat = |name| super::tests_chain::stat(&cpu, name);
    assert_eq!(stat("jit: loops optimized"), 1);
    let misses = stat("jit: TLB misses left to the interpreter");
    assert!((16..=256).contains(&misses), "{misses} misses left to the interpreter");
    assert_eq!(stat("jit: loops compiled again for their misses"), 0);
}
