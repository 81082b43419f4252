//! Unit tests of the interpreter on small hand-assembled programs.

use std::sync::Arc;

use iced_x86::code_asm::*;

use super::*;
use crate::cpu::{flags, reg, seg};

/// A 64-bit flat machine with identity-mapped paging over 16 MiB, the
/// program at 0x10000 and a stack below 0x8000.
pub(crate) fn long_mode_cpu(code: &[u8]) -> Interpreter {
    long_mode_cpu_on(Arc::new(GuestMemory::new(16 << 20).unwrap()), Bus::new(), code)
}

/// As [`long_mode_cpu`], over `mem` (16 MiB) with `pio` as its port bus.
fn long_mode_cpu_on(mem: Arc<GuestMemory>, pio: Bus, code: &[u8]) -> Interpreter {
    // PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 with 2 MiB pages.
    mem.write_u64(0x1000, 0x2003).unwrap();
    mem.write_u64(0x2000, 0x3003).unwrap();
    for i in 0..8u64 {
        mem.write_u64(0x3000 + 8 * i, (i << 21) | 0x83).unwrap();
    }
    mem.write(0x1_0000, code).unwrap();
    let mut s = CpuState::reset();
    s.cr0 = crate::cpu::cr0::PE | crate::cpu::cr0::PG | crate::cpu::cr0::ET;
    s.cr3 = 0x1000;
    s.cr4 = crate::mmu::cr4::PAE;
    s.efer = crate::cpu::efer::LME | crate::cpu::efer::LMA;
    s.segs[seg::CS] = crate::cpu::Segment::flat(0x8, true, true);
    for r in [seg::DS, seg::ES, seg::SS, seg::FS, seg::GS] {
        s.segs[r] = crate::cpu::Segment::flat(0x10, false, false);
    }
    s.rip = 0x1_0000;
    s.gpr[reg::RSP] = 0x8000;
    let ctx = MachineContext { memory: mem, pio: Arc::new(pio), mmio: Arc::new(Bus::new()), control: MachineControl::new() };
    Interpreter::new(ctx, s)
}

fn run(cpu: &mut Interpreter, steps: usize) {
    for _ in 0..steps {
        match cpu.step() {
            Step::Executed => {}
            other => panic!("stopped early: {other:?} at {:#x}", cpu.s.rip),
        }
    }
}

fn assemble64(f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.assemble(0x1_0000).unwrap()
}

#[test]
fn arithmetic_and_flags() {
    let code = assemble64(|a| {
        a.mov(rax, 5u64)?;
        a.add(rax, 7)?;
        a.sub(rax, 12)?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    run(&mut cpu, 3);
    assert_eq!(cpu.s.gpr[reg::RAX], 0);
    assert_ne!(cpu.s.flags() & flags::ZF, 0);
    assert_eq!(cpu.s.rip, 0x1_0000 + code.len() as u64);
}

#[test]
fn calls_and_stack() {
    let code = assemble64(|a| {
        let mut f = a.create_label();
        let mut end = a.create_label();
        a.mov(ecx, 3u32)?;
        a.call(f)?;
        a.jmp(end)?;
        a.set_label(&mut f)?;
        a.push(rcx)?;
        a.pop(rdx)?;
        a.lea(rax, qword_ptr(rdx + rdx * 2 + 1))?;
        a.ret()?;
        a.set_label(&mut end)?;
        a.nop()?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    run(&mut cpu, 8);
    assert_eq!(cpu.s.gpr[reg::RAX], 10);
    assert_eq!(cpu.s.gpr[reg::RSP], 0x8000);
}

#[test]
fn string_ops_and_memory() {
    let code = assemble64(|a| {
        a.mov(rdi, 0x20_0000u64)?;
        a.mov(eax, 0xabu32)?;
        a.mov(ecx, 100u32)?;
        a.rep().stosb()?;
        a.mov(rsi, 0x20_0000u64)?;
        a.lodsb()?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    run(&mut cpu, 6);
    assert_eq!(cpu.s.gpr[reg::RCX], 0);
    assert_eq!(cpu.s.gpr[reg::RDI], 0x20_0064);
    assert_eq!(cpu.mem.read_u32(0x20_0060).unwrap(), 0xabab_abab);
    assert_eq!(cpu.mem.read_u32(0x20_0064).unwrap(), 0);
}

#[test]
fn divide_by_zero_without_idt_is_a_triple_fault() {
    let code = assemble64(|a| {
        a.xor(ecx, ecx)?;
        a.div(rcx)?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    run(&mut cpu, 1);
    assert_eq!(cpu.step(), Step::Stopped(crate::control::StopReason::TripleFault));
}

/// Steps until RIP reaches `end` (a repeated string instruction yields
/// every 1024 elements and runs again).
fn run_to(cpu: &mut Interpreter, end: u64) {
    for _ in 0..100 {
        if cpu.s.rip == end {
            return;
        }
        run(cpu, 1);
    }
    panic!("RIP {:#x} never reached {end:#x}", cpu.s.rip);
}

#[test]
fn repeated_stores_and_copies_cross_pages_and_stop_where_they_should() {
    let code = assemble64(|a| {
        // 1500 qwords from 0x20_0ff8: a first page of one element, then
        // two whole pages and part of a fourth.
        a.mov(rdi, 0x20_0ff8u64)?;
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.mov(ecx, 1500u32)?;
        a.rep().stosq()?;
        // Copy 5000 bytes of it to an odd address.
        a.mov(rsi, 0x20_0ff8u64)?;
        a.mov(rdi, 0x30_0003u64)?;
        a.mov(ecx, 5000u32)?;
        a.rep().movsb()?;
        a.nop()?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    let end = 0x1_0000 + code.len() as u64 - 1;
    run_to(&mut cpu, end);
    assert_eq!(cpu.s.gpr[reg::RCX], 0);
    assert_eq!(cpu.s.gpr[reg::RSI], 0x20_0ff8 + 5000);
    assert_eq!(cpu.s.gpr[reg::RDI], 0x30_0003 + 5000);
    assert_eq!(cpu.mem.read_u64(0x20_0ff0).unwrap(), 0, "nothing before the start");
    for i in [0u64, 1, 2, 511, 512, 1499] {
        assert_eq!(cpu.mem.read_u64(0x20_0ff8 + 8 * i).unwrap(), 0x1122_3344_5566_7788, "element {i}");
    }
    assert_eq!(cpu.mem.read_u64(0x20_0ff8 + 8 * 1500).unwrap(), 0, "nothing after the end");
    assert_eq!(cpu.mem.read_u64(0x30_0003 + 4992).unwrap(), 0x1122_3344_5566_7788);
    assert_eq!(cpu.mem.read_u32(0x30_0003 + 5000).unwrap(), 0);
    assert_eq!(cpu.mem.read_u32(0x30_0003 - 4).unwrap(), 0);
}

#[test]
fn a_forward_copy_onto_its_own_source_repeats_the_pattern() {
    // REP MOVSB with the destination one byte above the source copies the
    // first byte all along, element by element, as the hardware does (a
    // memmove would shift the bytes instead).
    let code = assemble64(|a| {
        a.mov(rsi, 0x20_0000u64)?;
        a.mov(rdi, 0x20_0001u64)?;
        a.mov(ecx, 300u32)?;
        a.rep().movsb()?;
        a.nop()?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    cpu.mem.write(0x20_0000, &(1..=255u8).collect::<Vec<_>>()).unwrap();
    let end = 0x1_0000 + code.len() as u64 - 1;
    run_to(&mut cpu, end);
    let mut out = vec![0u8; 301];
    cpu.mem.read(0x20_0000, &mut out).unwrap();
    assert!(out.iter().all(|&b| b == 1), "{out:?}");
}

/// REP MOVS/STOS in both directions, across pages and overlapping every
/// way, against a model that moves one element at a time.
#[test]
fn repeated_moves_and_stores_match_an_element_by_element_model() {
    const BASE: u64 = 0x20_0000;
    const AREA: usize = 0x4000;
    let cases: &[(bool, usize, bool, u64, u64, u64)] = &[
        // (copy, element size, DF, source, destination, count)
        (true, 8, false, 0x0ff8, 0x2003, 700),
        (true, 1, false, 0x1000, 0x1001, 3000),
        (true, 4, false, 0x1004, 0x1000, 2000),
        (true, 8, true, 0x2ff8, 0x3ff0, 900),
        (true, 8, true, 0x2000, 0x2008, 500),
        (true, 2, true, 0x2ffe, 0x2ff0, 1500),
        (true, 1, true, 0x1800, 0x17ff, 1800),
        (false, 8, true, 0, 0x2ffc, 1000),
        (false, 2, false, 0, 0x0fff, 2500),
        (false, 1, true, 0, 0x3fff, 0x3fff),
    ];
    for &(copy, size, down, src, dst, count) in cases {
        let code = assemble64(|a| {
            if down {
                a.std()?;
            }
            match (copy, size) {
                (true, 1) => a.rep().movsb()?,
                (true, 2) => a.rep().movsw()?,
                (true, 4) => a.rep().movsd()?,
                (true, _) => a.rep().movsq()?,
                (false, 1) => a.rep().stosb()?,
                (false, 2) => a.rep().stosw()?,
                (false, 4) => a.rep().stosd()?,
                (false, _) => a.rep().stosq()?,
            }
            a.nop()?;
            Ok(())
        });
        let mut cpu = long_mode_cpu(&code);
        let mut model: Vec<u8> = (0..AREA).map(|i| (i * 7 + i / 256) as u8).collect();
        cpu.mem.write(BASE, &model).unwrap();
        cpu.s.gpr[reg::RSI] = BASE + src;
        cpu.s.gpr[reg::RDI] = BASE + dst;
        cpu.s.gpr[reg::RCX] = count;
        cpu.s.gpr[reg::RAX] = 0x8877_6655_4433_2211;
        run_to(&mut cpu, 0x1_0000 + code.len() as u64 - 1);
        let (mut s_at, mut d_at) = (src as i64, dst as i64);
        let step = if down { -(size as i64) } else { size as i64 };
        for _ in 0..count {
            for b in 0..size {
                let byte = if copy { model[s_at as usize + b] } else { 0x8877_6655_4433_2211u64.to_le_bytes()[b] };
                model[d_at as usize + b] = byte;
            }
            s_at += step;
            d_at += step;
        }
        let mut got = vec![0u8; AREA];
        cpu.mem.read(BASE, &mut got).unwrap();
        let case = format!("copy {copy} size {size} down {down} src {src:#x} dst {dst:#x} count {count}");
        assert!(got == model, "{case}: first difference at {:#x}", got.iter().zip(&model).position(|(a, b)| a != b).unwrap_or(0));
        assert_eq!(cpu.s.gpr[reg::RCX], 0, "{case}");
        assert_eq!(cpu.s.gpr[reg::RDI], (BASE as i64 + d_at) as u64, "{case}");
        if copy {
            assert_eq!(cpu.s.gpr[reg::RSI], (BASE as i64 + s_at) as u64, "{case}");
        }
    }
}

#[test]
fn a_repeated_store_over_cached_code_is_seen() {
    // REP STOSB overwrites the INC that follows it (already decoded as
    // part of the block) with NOPs.
    let code = assemble64(|a| {
        let mut patch = a.create_label();
        a.xor(ebx, ebx)?;
        a.lea(rdi, qword_ptr(patch))?;
        a.mov(eax, 0x90u32)?;
        a.mov(ecx, 2u32)?;
        a.rep().stosb()?;
        a.set_label(&mut patch)?;
        a.inc(ebx)?;
        a.nop()?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    run_to(&mut cpu, 0x1_0000 + code.len() as u64 - 1);
    assert_eq!(cpu.s.gpr[reg::RBX], 0, "the INC was overwritten");
}

#[test]
fn invlpg_of_a_remapped_code_page_is_seen_and_of_a_data_page_costs_nothing() {
    // 4 KiB pages at 16 MiB: the PD entry points at a page table at 0x9000
    // whose first entry maps the code page, at 0xa000, then at 0xb000.
    let code = assemble64(|a| {
        a.mov(rax, 0x100_0000u64)?;
        // Twice: a block runs from the jump cache from its second run on.
        a.call(rax)?;
        a.call(rax)?;
        a.mov(ecx, 0xb003u32)?;
        a.mov(qword_ptr(0x9000u64), rcx)?;
        a.invlpg(byte_ptr(0x100_1000u64))?; // another page: nothing to drop
        a.invlpg(byte_ptr(0x100_0000u64))?;
        a.call(rax)?;
        a.nop()?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    cpu.mem.write_u64(0x3000 + 8 * 8, 0x9003).unwrap();
    cpu.mem.write_u64(0x9000, 0xa003).unwrap();
    cpu.mem.write_u64(0x9008, 0xc003).unwrap();
    cpu.mem.write(0xa000, &[0xbb, 1, 0, 0, 0, 0xc3]).unwrap(); // mov ebx, 1; ret
    cpu.mem.write(0xb000, &[0xbb, 2, 0, 0, 0, 0xc3]).unwrap(); // mov ebx, 2; ret
    // MOV RAX, two CALLs and the callee's two each, MOV ECX, the
    // page-table write.
    run(&mut cpu, 9);
    assert_eq!(cpu.s.gpr[reg::RBX], 1);
    let epoch = cpu.tlb.epoch();
    run(&mut cpu, 1);
    assert_eq!(cpu.tlb.epoch(), epoch, "no code cached from that page");
    run(&mut cpu, 1);
    assert_eq!(cpu.tlb.epoch(), epoch + 1, "the jump cache holds code from this one");
    run(&mut cpu, 3);
    assert_eq!(cpu.s.gpr[reg::RBX], 2, "the page's new contents ran");
}

#[test]
fn self_modifying_code_is_seen() {
    // mov byte [rip+patch], 0x90-style: overwrite an instruction that has
    // already been decoded and cached, then run it again.
    let code = assemble64(|a| {
        let mut patch = a.create_label();
        a.xor(ebx, ebx)?;
        a.set_label(&mut patch)?;
        a.inc(ebx)?; // ff c3, patched to 90 90 (two NOPs) below
        a.mov(word_ptr(patch), 0x9090u32)?;
        a.cmp(ebx, 3)?;
        a.jb(patch)?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    run(&mut cpu, 12);
    assert_eq!(cpu.s.gpr[reg::RBX], 1, "the patched INC must not run again");
}

#[test]
fn jumping_to_unmapped_memory_is_a_triple_fault_not_a_panic() {
    // No IDT: the #PF cannot be delivered, nor the #DF after it.
    let code = assemble64(|a| {
        a.mov(rax, 0x4000_0000u64)?;
        a.jmp(rax)?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    run(&mut cpu, 2);
    assert_eq!(cpu.step(), Step::Stopped(crate::control::StopReason::TripleFault));
    assert_eq!(cpu.s.cr2, 0x4000_0000);
}

#[test]
fn garbage_bytes_never_panic() {
    // Every byte pattern either executes, faults or stops the machine.
    let mut seed = 0x1234_5678_9abc_def0u64;
    for _ in 0..200 {
        let code: Vec<u8> = (0..64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut cpu = long_mode_cpu(&code);
        for _ in 0..64 {
            if let Step::Stopped(_) = cpu.step() {
                break;
            }
        }
    }
}

#[test]
fn zero_count_32_bit_shifts_still_clear_the_upper_half() {
    // Found by the host-CPU oracle: `ror edx, 0`, `shl r10d, cl` with
    // CL = 32 and `shrd r8d, ebp, 0x20` write their 32-bit destination,
    // which zero-extends, even though the flags stay untouched.
    let code = assemble64(|a| {
        a.mov(rdx, 0xffff_ffff_1234_5678u64)?;
        a.ror(edx, 0)?;
        a.mov(r10, 0xffff_ffff_0000_0001u64)?;
        a.mov(ecx, 32u32)?;
        a.shl(r10d, cl)?;
        a.mov(r8, 0xaaaa_aaaa_5555_5555u64)?;
        a.shrd(r8d, ebp, 0x20)?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    run(&mut cpu, 7);
    assert_eq!(cpu.s.gpr[reg::RDX], 0x1234_5678);
    assert_eq!(cpu.s.gpr[10], 1);
    assert_eq!(cpu.s.gpr[8], 0x5555_5555);
}

/// A machine in real mode (or, with `protected`, flat 32-bit protected
/// mode without an IDT) running `code` from 0x10000 with random registers.
fn legacy_cpu(code: &[u8], protected: bool, regs: &[u64; 16]) -> Interpreter {
    let mut cpu = long_mode_cpu(code);
    let mut s = CpuState::reset();
    s.gpr = *regs;
    if protected {
        s.cr0 = crate::cpu::cr0::PE | crate::cpu::cr0::ET;
        s.segs[seg::CS] = crate::cpu::Segment::flat(0x8, true, false);
        for r in [seg::DS, seg::ES, seg::SS, seg::FS, seg::GS] {
            s.segs[r] = crate::cpu::Segment::flat(0x10, false, false);
        }
        s.rip = 0x1_0000;
    } else {
        s.segs[seg::CS] = crate::cpu::Segment::real_mode(0x1000, true);
        s.rip = 0;
    }
    s.idtr = crate::cpu::DescriptorTable { base: 0, limit: if protected { 0 } else { 0x3ff } };
    cpu.s = s;
    cpu.state_changed();
    cpu
}

#[test]
fn random_code_in_every_mode_never_panics() {
    // "The guest never crashes the host": random bytes from random register
    // states in real, protected and long mode must execute, fault, or stop
    // the machine, never panic (test builds keep overflow checks on).
    let mut seed = 0x0bad_cafe_f00d_d00du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..std::env::var("POPEK_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(600u64) {
        let code: Vec<u8> = (0..48).map(|_| next() as u8).collect();
        let regs: [u64; 16] = std::array::from_fn(|_| if next() & 1 == 0 { next() } else { next() & 0xffff });
        let mut cpu = match round % 3 {
            0 => legacy_cpu(&code, false, &regs),
            1 => legacy_cpu(&code, true, &regs),
            _ => {
                let mut c = long_mode_cpu(&code);
                c.s.gpr = regs;
                c
            }
        };
        for _ in 0..48 {
            if let Step::Stopped(_) = cpu.step() {
                break;
            }
        }
    }
}

#[test]
fn linux_microcode_revision_msr_is_readable() {
    // Linux's early_init_intel writes IA32_BIOS_SIGN_ID, runs CPUID and
    // reads it back without a fixup: it must not #GP.
    let code = assemble64(|a| {
        a.mov(ecx, 0x8bu32)?;
        a.xor(eax, eax)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.mov(eax, 1u32)?;
        a.cpuid()?;
        a.mov(ecx, 0x8bu32)?;
        a.rdmsr()?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    run(&mut cpu, 8);
    assert_eq!(cpu.s.gpr[reg::RDX], 0);
    assert_eq!(cpu.s.rip, 0x1_0000 + code.len() as u64);
}

#[test]
fn a_read_crossing_into_a_missing_page_faults_at_that_page() {
    // The identity map ends at 16 MiB: a 4-byte read at 16 MiB - 2 faults
    // on the page at 16 MiB, and CR2 is that page's first byte, as the
    // host CPU reports it (not the access's last byte).
    let code = assemble64(|a| {
        a.mov(eax, 0x00ff_fffeu32)?;
        a.mov(ebx, dword_ptr(rax))?;
        Ok(())
    });
    let mut cpu = long_mode_cpu(&code);
    cpu.step();
    let _ = cpu.step();
    assert_eq!(cpu.s.cr2, 0x0100_0000);
}

#[test]
fn implicit_reads_use_the_supervisor_tlb_unless_smap_is_on() {
    let mut cpu = long_mode_cpu(&[0x90]);
    cpu.mem.write_u64(0x5000, 0x1122_3344_5566_7788).unwrap();
    // A descriptor-table read fills the supervisor set, so interrupt
    // delivery does not walk the page tables for every descriptor.
    assert_eq!(cpu.read_linear_implicit(0x5000, 8).unwrap(), 0x1122_3344_5566_7788);
    assert!(cpu.tlb.lookup(0x5000, crate::mmu::Access::Read, false).is_some());
    // Under SMAP an implicit access is not an explicit supervisor one: it
    // neither fills nor uses the TLB.
    cpu.s.cr4 |= crate::mmu::cr4::SMAP;
    cpu.tlb.flush(false);
    assert_eq!(cpu.read_linear_implicit(0x5000, 8).unwrap(), 0x1122_3344_5566_7788);
    assert!(cpu.tlb.lookup(0x5000, crate::mmu::Access::Read, false).is_none());
}

/// A device that, written to, writes `code` into guest memory at `at`
/// (DMA), once.
struct CodeWriter {
    memory: Arc<GuestMemory>,
    at: u64,
    code: Option<Vec<u8>>,
}

impl crate::BusDevice for CodeWriter {
    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {
        if let Some(code) = self.code.take() {
            self.memory.write(self.at, &code).unwrap();
        }
    }
}

#[test]
fn a_device_write_over_code_drops_it() {
    // `f` returns 1 until the device at port 0x80 writes a new `f` that
    // returns 100 over it: the next call must run the new one.
    let f = 0x1_0100u64;
    let code = assemble64(|a| {
        let mut again = a.create_label();
        a.xor(ebx, ebx)?;
        a.set_label(&mut again)?;
        a.call(f)?;
        a.add(ebx, eax)?;
        a.out(0x80, al)?;
        a.cmp(ebx, 50)?;
        a.jb(again)?;
        a.hlt()
    });
    let routine = |value: u32| {
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(eax, value).unwrap();
        a.ret().unwrap();
        a.assemble(f).unwrap()
    };
    let mem = Arc::new(GuestMemory::new(16 << 20).unwrap());
    mem.write(f, &routine(1)).unwrap();
    let mut pio = Bus::new();
    let writer = CodeWriter { memory: mem.clone(), at: f, code: Some(routine(100)) };
    pio.insert(Arc::new(std::sync::Mutex::new(writer)), 0x80, 1).unwrap();
    let mut cpu = long_mode_cpu_on(mem, pio, &code);
    for _ in 0..1000 {
        if cpu.step() != Step::Executed {
            break;
        }
    }
    assert_eq!(cpu.s.gpr[reg::RBX], 101, "the call after the write ran the new code");
}
