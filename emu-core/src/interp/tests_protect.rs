//! Tests of the protected-mode machinery: call gates, task switches, LAR,
//! LSL, VERR, VERW and ARPL, SYSCALL/SYSRET and SYSENTER/SYSEXIT, the BCD
//! instructions and BOUND, and virtual-8086 mode.
//!
//! Each test runs a small hand-assembled program on a machine whose GDT,
//! IDT, TSSs and LDT live in guest memory. Every IDT vector leads to a
//! stub that writes its vector number to `RECORD` and halts, so a test
//! reads the vector there and the error code and frame on the handler's
//! stack.

use std::sync::Arc;

use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions};

use super::fault::vector;
use super::segment::descriptor_to_segment;
use super::*;
use crate::control::StopReason;
use crate::cpu::{cr0, efer, flags, reg, seg, DescriptorTable, Segment};
use crate::mmu::cr4;

/// Where the exception stubs write the vector.
const RECORD: u64 = 0x600;
/// Where the test programs leave their results.
const OUT: u64 = 0x700;
const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const TSS0: u64 = 0x3000;
const TSS1: u64 = 0x3100;
const TSS2: u64 = 0x3200;
const LDT: u64 = 0x3800;
const PD0: u64 = 0x4000;
const PT0: u64 = 0x5000;
const PD1: u64 = 0xc000;
/// The ring-0 stack (TSS ESP0 / RSP0) grows down from here, in the page
/// at 0x6000.
const STACK0: u64 = 0x7000;
const STACK: u64 = 0x8000;
const USTACK: u64 = 0x9000;
const TASK1_STACK: u64 = 0x9800;
const TASK2_STACK: u64 = 0x9c00;
const CODE: u64 = 0x2_0000;
const KCODE: u64 = 0x2_0400;
const TASK1: u64 = 0x2_0800;
const STUBS: u64 = 0x5_0000;
const PML4: u64 = 0x4_0000;

/// GDT selectors of the protected-mode machine.
mod sel {
    pub const CODE0: u16 = 0x08;
    pub const DATA0: u16 = 0x10;
    pub const CODE3: u16 = 0x1b;
    pub const DATA3: u16 = 0x23;
    pub const TSS0: u16 = 0x28;
    pub const TSS1: u16 = 0x30;
    pub const LDT: u16 = 0x38;
    /// Free for each test's own gate.
    pub const GATE: u16 = 0x48;
    pub const TSS2: u16 = 0x50;
    /// An interrupt gate in the GDT (invalid for far transfers and LAR).
    pub const INT_GATE: u16 = 0x58;
}

/// GDT selectors of the long-mode machine (laid out for SYSRET with
/// STAR[63:48] = 0x18: compatibility code, data, 64-bit code).
mod lsel {
    pub const CODE0: u16 = 0x08;
    pub const DATA0: u16 = 0x10;
    pub const CODE32_3: u16 = 0x1b;
    pub const DATA3: u16 = 0x23;
    pub const CODE64_3: u16 = 0x2b;
    pub const TSS: u16 = 0x30;
    pub const GATE: u16 = 0x40;
}

const NT: u32 = flags::NT as u32;

fn seg_desc(base: u64, limit: u32, type_: u8, dpl: u8, bits: u32) -> u64 {
    Segment {
        base,
        limit,
        type_,
        s: 1,
        dpl,
        present: 1,
        l: u8::from(bits == 64),
        db: u8::from(bits == 32),
        g: u8::from(limit > 0xf_ffff),
        ..Segment::default()
    }
    .to_descriptor()
}

fn sys_desc(base: u64, limit: u32, type_: u8, dpl: u8) -> u64 {
    Segment { base, limit, type_, dpl, present: 1, ..Segment::default() }.to_descriptor()
}

fn gate_desc(selector: u16, offset: u64, type_: u8, dpl: u8, params: u8) -> u64 {
    (offset & 0xffff)
        | u64::from(selector) << 16
        | u64::from(params) << 32
        | u64::from(type_) << 40
        | u64::from(dpl) << 45
        | 1 << 47
        | ((offset >> 16) & 0xffff) << 48
}

fn w16(cpu: &Interpreter, addr: u64, v: u16) {
    cpu.mem.write(addr, &v.to_le_bytes()).unwrap();
}
fn w32(cpu: &Interpreter, addr: u64, v: u64) {
    cpu.mem.write_u32(addr, v as u32).unwrap();
}
fn w64(cpu: &Interpreter, addr: u64, v: u64) {
    cpu.mem.write_u64(addr, v).unwrap();
}
fn r16(cpu: &Interpreter, addr: u64) -> u64 {
    u64::from(cpu.mem.read_u32(addr).unwrap() & 0xffff)
}
fn r32(cpu: &Interpreter, addr: u64) -> u64 {
    u64::from(cpu.mem.read_u32(addr).unwrap())
}
fn r64(cpu: &Interpreter, addr: u64) -> u64 {
    cpu.mem.read_u64(addr).unwrap()
}
fn put(cpu: &Interpreter, addr: u64, bytes: &[u8]) {
    cpu.mem.write(addr, bytes).unwrap();
}
fn set_gdt(cpu: &Interpreter, selector: u16, raw: u64) {
    w64(cpu, GDT + u64::from(selector & !7), raw);
}
fn gdt_type(cpu: &Interpreter, selector: u16) -> u64 {
    (r64(cpu, GDT + u64::from(selector & !7)) >> 40) & 0xf
}
/// The dword `i` slots above the top of the current stack.
fn stack(cpu: &Interpreter, i: u64) -> u64 {
    r32(cpu, cpu.s.segs[seg::SS].base + cpu.s.gpr[reg::RSP] + 4 * i)
}
/// The qword `i` slots above the top of the current (64-bit) stack.
fn stack64(cpu: &Interpreter, i: u64) -> u64 {
    r64(cpu, cpu.s.gpr[reg::RSP] + 8 * i)
}

/// The segment cache for a GDT selector, as a load would make it.
fn cache(cpu: &Interpreter, selector: u16) -> Segment {
    descriptor_to_segment(selector, r64(cpu, GDT + u64::from(selector & !7)) | 1 << 40)
}

fn asm(bitness: u32, ip: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(bitness).unwrap();
    f(&mut a).unwrap();
    a.assemble(ip).unwrap()
}

/// The address after the first `n` instructions of `code`.
fn ip_after(code: &[u8], bitness: u32, ip: u64, n: usize) -> u64 {
    let mut d = Decoder::with_ip(bitness, code, ip, DecoderOptions::NONE);
    (0..n).fold(ip, |_, _| d.decode().next_ip())
}

fn new_machine() -> Interpreter {
    let ctx = MachineContext {
        memory: Arc::new(GuestMemory::new(16 << 20).unwrap()),
        pio: Arc::new(Bus::new()),
        mmio: Arc::new(Bus::new()),
        control: MachineControl::new(),
    };
    Interpreter::new(ctx, CpuState::reset())
}

/// A 32-bit protected-mode machine at CPL 0 without paging: flat ring-0
/// and ring-3 code and data, the running task's TSS (busy, ESP0 =
/// `STACK0`, no I/O bitmap), a second and third available TSS, an LDT, and
/// an IDT of DPL-3 interrupt gates to the recording stubs. `code` runs at
/// `CODE` with ESP = `STACK`.
pub(crate) fn protected_mode_cpu(code: &[u8]) -> Interpreter {
    let mut cpu = new_machine();
    let gdt = [
        0,
        seg_desc(0, 0xffff_ffff, 0xb, 0, 32),
        seg_desc(0, 0xffff_ffff, 0x3, 0, 32),
        seg_desc(0, 0xffff_ffff, 0xb, 3, 32),
        seg_desc(0, 0xffff_ffff, 0x3, 3, 32),
        sys_desc(TSS0, 0x67, 0xb, 0),
        sys_desc(TSS1, 0x67, 0x9, 0),
        sys_desc(LDT, 0x1f, 0x2, 0),
    ];
    for (i, d) in gdt.iter().enumerate() {
        set_gdt(&cpu, 8 * i as u16, *d);
    }
    set_gdt(&cpu, sel::TSS2, sys_desc(TSS2, 0x67, 0x9, 0));
    set_gdt(&cpu, sel::INT_GATE, gate_desc(sel::CODE0, KCODE, 0xe, 3, 0));
    // LDT: DPL-3 and DPL-0 data at 1 MiB.
    w64(&cpu, LDT, seg_desc(0x10_0000, 0xfff, 0x3, 3, 32));
    w64(&cpu, LDT + 8, seg_desc(0x10_0000, 0xfff, 0x3, 0, 32));
    for v in 0..=255u8 {
        let stub = STUBS + 16 * u64::from(v);
        w64(&cpu, IDT + 8 * u64::from(v), gate_desc(sel::CODE0, stub, 0xe, 3, 0));
        // mov dword ss:[RECORD], v; hlt (through SS, which is always
        // usable in a handler).
        let mut b = vec![0x36, 0xc7, 0x05];
        b.extend((RECORD as u32).to_le_bytes());
        b.extend(u32::from(v).to_le_bytes());
        b.push(0xf4);
        put(&cpu, stub, &b);
    }
    w32(&cpu, RECORD, u64::from(u32::MAX));
    w32(&cpu, TSS0 + 4, STACK0);
    w32(&cpu, TSS0 + 8, u64::from(sel::DATA0));
    w32(&cpu, TSS0 + 0x1c, PD0);
    w16(&cpu, TSS0 + 0x66, 0x68);
    put(&cpu, CODE, code);
    let s = &mut cpu.s;
    s.cr0 = cr0::PE | cr0::ET;
    s.gdtr = DescriptorTable { base: GDT, limit: 0x7ff };
    s.idtr = DescriptorTable { base: IDT, limit: 0x7ff };
    s.tr = descriptor_to_segment(sel::TSS0, gdt[5]);
    s.ldtr = descriptor_to_segment(sel::LDT, gdt[7]);
    s.rip = CODE;
    s.gpr[reg::RSP] = STACK;
    s.rflags = 0x2;
    let code0 = cache(&cpu, sel::CODE0);
    let data0 = cache(&cpu, sel::DATA0);
    cpu.s.segs = [data0, code0, data0, data0, data0, data0];
    cpu
}

/// Fills a 32-bit TSS image: ring-0 flat segments, the machine's LDT, EIP
/// and ESP as given, EFLAGS = 2, the other registers 0xa0 + their number.
fn write_task(cpu: &Interpreter, base: u64, eip: u64, stack_top: u64) {
    w32(cpu, base + 0x1c, PD0);
    w32(cpu, base + 0x20, eip);
    w32(cpu, base + 0x24, 0x2);
    for i in 0..8 {
        w32(cpu, base + 0x28 + 4 * i, 0xa0 + i);
    }
    w32(cpu, base + 0x38, stack_top);
    for (i, s) in [sel::DATA0, sel::CODE0, sel::DATA0, sel::DATA0, 0, 0].iter().enumerate() {
        w32(cpu, base + 0x48 + 4 * i as u64, u64::from(*s));
    }
    w32(cpu, base + 0x60, u64::from(sel::LDT));
    w16(cpu, base + 0x66, 0x68);
}

/// 32-bit paging: the first 4 MiB in 4 KiB user pages (the `supervisor`
/// ones excepted), the rest in 4 MiB user pages, identity-mapped.
fn enable_paging(cpu: &mut Interpreter, supervisor: &[u64]) {
    w32(cpu, PD0, PT0 | 0x7);
    for i in 1..4u64 {
        w32(cpu, PD0 + 4 * i, (i << 22) | 0x87);
    }
    for i in 0..1024u64 {
        let page = i << 12;
        w32(cpu, PT0 + 4 * i, page | if supervisor.contains(&page) { 0x3 } else { 0x7 });
    }
    cpu.s.cr4 |= cr4::PSE;
    cpu.s.cr3 = PD0;
    cpu.s.cr0 |= cr0::PG;
    cpu.state_changed();
}

/// Continues at CPL 3 (flat ring-3 segments) at `rip` with ESP = `rsp`.
fn enter_user(cpu: &mut Interpreter, code_sel: u16, data_sel: u16, entry: u64, stack_top: u64) {
    cpu.s.segs[seg::CS] = cache(cpu, code_sel);
    for r in [seg::ES, seg::SS, seg::DS, seg::FS, seg::GS] {
        cpu.s.segs[r] = cache(cpu, data_sel);
    }
    cpu.s.rip = entry;
    cpu.s.gpr[reg::RSP] = stack_top;
}

fn run_until_halt(cpu: &mut Interpreter, max: usize) {
    for _ in 0..max {
        match cpu.step() {
            Step::Executed => {}
            Step::Halted => return,
            Step::Stopped(r) => panic!("stopped: {r:?} at {:#x}", cpu.s.rip),
        }
    }
    panic!("no HLT within {max} steps (at {:#x})", cpu.s.rip);
}

fn run_until_rip(cpu: &mut Interpreter, rip: u64, max: usize) {
    for _ in 0..max {
        if cpu.s.rip == rip {
            return;
        }
        match cpu.step() {
            Step::Executed => {}
            other => panic!("{other:?} at {:#x}", cpu.s.rip),
        }
    }
    panic!("never reached {rip:#x} (at {:#x})", cpu.s.rip);
}

/// The vector recorded by the stubs.
fn recorded(cpu: &Interpreter) -> u64 {
    r32(cpu, RECORD)
}

// ---------------------------------------------------------------- call gates

#[test]
fn call_gate_to_the_same_level_pushes_cs_and_eip() {
    let code = asm(32, CODE, |a| {
        a.call_far(sel::GATE, 0)?;
        a.hlt()
    });
    let mut cpu = protected_mode_cpu(&code);
    set_gdt(&cpu, sel::GATE, gate_desc(sel::CODE0, KCODE, 0xc, 0, 0));
    put(&cpu, KCODE, &asm(32, KCODE, |a| {
        a.mov(eax, dword_ptr(esp))?;
        a.mov(ebx, dword_ptr(esp + 4))?;
        a.mov(ecx, esp)?;
        a.retf()
    }));
    run_until_halt(&mut cpu, 20);
    assert_eq!(cpu.s.gpr[reg::RAX], CODE + 7);
    assert_eq!(cpu.s.gpr[reg::RBX], u64::from(sel::CODE0));
    assert_eq!(cpu.s.gpr[reg::RCX], STACK - 8);
    assert_eq!(cpu.s.gpr[reg::RSP], STACK);
    assert_eq!(cpu.s.rip, CODE + 8);
    assert_eq!(recorded(&cpu), u64::from(u32::MAX));
}

#[test]
fn call_gate_to_ring0_switches_stacks_and_copies_parameters() {
    let code = asm(32, CODE, |a| {
        a.push(0x1111_1111i32)?;
        a.push(0x2222_2222i32)?;
        a.call_far(sel::GATE | 3, 0)?;
        a.mov(esi, esp)?;
        a.int3()
    });
    let ret = ip_after(&code, 32, CODE, 3);
    let mut cpu = protected_mode_cpu(&code);
    // The ring-0 stack page is supervisor-only: the pushes of the call
    // and of the later INT3 must be supervisor accesses.
    enable_paging(&mut cpu, &[STACK0 - 0x1000]);
    set_gdt(&cpu, sel::GATE, gate_desc(sel::CODE0, KCODE, 0xc, 3, 2));
    put(&cpu, KCODE, &asm(32, KCODE, |a| {
        for i in 0..6 {
            a.mov(eax, dword_ptr(esp + 4 * i))?;
            a.mov(dword_ptr(OUT + 4 * i as u64), eax)?;
        }
        a.mov(dword_ptr(OUT + 0x20), esp)?;
        // A ring-0 DS must not survive the return to ring 3.
        a.mov(ax, u32::from(sel::DATA0))?;
        a.mov(ds, ax)?;
        a.retf_1(8u32)
    }));
    enter_user(&mut cpu, sel::CODE3, sel::DATA3, CODE, USTACK);
    run_until_halt(&mut cpu, 50);
    assert_eq!(recorded(&cpu), 3);
    let frame: Vec<u64> = (0..6).map(|i| r32(&cpu, OUT + 4 * i)).collect();
    assert_eq!(frame, [ret, u64::from(sel::CODE3), 0x2222_2222, 0x1111_1111, USTACK - 8, u64::from(sel::DATA3)]);
    assert_eq!(r32(&cpu, OUT + 0x20), STACK0 - 24);
    // Back at CPL 3 with the parameters popped from both stacks.
    assert_eq!(cpu.s.gpr[reg::RSI], USTACK);
    assert_eq!(cpu.s.segs[seg::DS].selector, 0);
    assert_eq!(cpu.s.segs[seg::DS].unusable, 1);
    // The INT3 frame on the ring-0 stack.
    assert_eq!(cpu.s.gpr[reg::RSP], STACK0 - 20);
    assert_eq!(stack(&cpu, 1), u64::from(sel::CODE3));
    assert_eq!(stack(&cpu, 3), USTACK);
}

#[test]
fn sixteen_bit_call_gate_pushes_words() {
    const UCODE: u64 = 0xa000;
    const K16: u64 = 0xb000;
    let code = asm(32, UCODE, |a| {
        a.db(&[0x66, 0x68, 0x55, 0x55])?; // push word 0x5555
        a.call_far(sel::GATE | 3, 0)?;
        a.mov(esi, esp)?;
        a.int3()
    });
    let mut cpu = protected_mode_cpu(&[]);
    put(&cpu, UCODE, &code);
    set_gdt(&cpu, sel::GATE, gate_desc(sel::CODE0, K16, 0x4, 3, 1));
    put(&cpu, K16, &asm(32, K16, |a| {
        for i in 0..5 {
            a.mov(ax, word_ptr(esp + 2 * i))?;
            a.mov(word_ptr(OUT + 2 * i as u64), ax)?;
        }
        a.mov(dword_ptr(OUT + 0x20), esp)?;
        a.db(&[0x66, 0xca, 0x02, 0x00]) // o16 retf 2
    }));
    enter_user(&mut cpu, sel::CODE3, sel::DATA3, UCODE, USTACK);
    run_until_halt(&mut cpu, 50);
    assert_eq!(recorded(&cpu), 3);
    let frame: Vec<u64> = (0..5).map(|i| r16(&cpu, OUT + 2 * i)).collect();
    assert_eq!(frame, [ip_after(&code, 32, UCODE, 2), u64::from(sel::CODE3), 0x5555, USTACK - 2, u64::from(sel::DATA3)]);
    assert_eq!(r32(&cpu, OUT + 0x20), STACK0 - 10);
    assert_eq!(cpu.s.gpr[reg::RSI], USTACK);
}

#[test]
fn jmp_through_a_call_gate_keeps_the_stack() {
    let code = asm(32, CODE, |a| a.jmp_far(sel::GATE, 0));
    let mut cpu = protected_mode_cpu(&code);
    set_gdt(&cpu, sel::GATE, gate_desc(sel::CODE0, KCODE, 0xc, 0, 3));
    put(&cpu, KCODE, &asm(32, KCODE, |a| {
        a.mov(eax, 0x99u32)?;
        a.hlt()
    }));
    run_until_halt(&mut cpu, 10);
    assert_eq!(cpu.s.gpr[reg::RAX], 0x99);
    assert_eq!(cpu.s.gpr[reg::RSP], STACK);
    assert_eq!(cpu.s.segs[seg::CS].selector, sel::CODE0);
}

/// Runs a ring-3 far CALL (or JMP) to `GATE|3` with the gate (and
/// machine) as `setup` leaves them; returns the vector and error code.
/// #TS goes through a task gate (the ring-0 stack may be what is broken).
fn ring3_gate_fault(jump: bool, setup: impl FnOnce(&mut Interpreter)) -> (u64, u64) {
    let code = asm(32, CODE, |a| {
        if jump {
            a.jmp_far(sel::GATE | 3, 0)?;
        } else {
            a.call_far(sel::GATE | 3, 0)?;
        }
        a.int3()
    });
    let mut cpu = protected_mode_cpu(&code);
    set_gdt(&cpu, sel::GATE, gate_desc(sel::CODE0, KCODE, 0xc, 3, 0));
    put(&cpu, KCODE, &asm(32, KCODE, |a| a.hlt()));
    write_task(&cpu, TSS2, STUBS + 16 * 10, TASK2_STACK);
    w64(&cpu, IDT + 8 * 10, gate_desc(sel::TSS2, 0, 0x5, 0, 0));
    setup(&mut cpu);
    enter_user(&mut cpu, sel::CODE3, sel::DATA3, CODE, USTACK);
    run_until_halt(&mut cpu, 20);
    (recorded(&cpu), stack(&cpu, 0))
}

#[test]
fn call_gate_faults() {
    let gp = u64::from(vector::GP);
    let gate = u64::from(sel::GATE);
    // Gate DPL below CPL.
    assert_eq!(ring3_gate_fault(false, |c| set_gdt(c, sel::GATE, gate_desc(sel::CODE0, KCODE, 0xc, 0, 0))), (gp, gate));
    // Gate not present.
    assert_eq!(
        ring3_gate_fault(false, |c| set_gdt(c, sel::GATE, gate_desc(sel::CODE0, KCODE, 0xc, 3, 0) & !(1 << 47))),
        (u64::from(vector::NP), gate)
    );
    // The gate names a data segment, or the null selector.
    assert_eq!(ring3_gate_fault(false, |c| set_gdt(c, sel::GATE, gate_desc(sel::DATA0, KCODE, 0xc, 3, 0))), (gp, 0x10));
    assert_eq!(ring3_gate_fault(false, |c| set_gdt(c, sel::GATE, gate_desc(0, KCODE, 0xc, 3, 0))), (gp, 0));
    // JMP cannot change privilege through a gate.
    assert_eq!(ring3_gate_fault(true, |_| {}), (gp, u64::from(sel::CODE0)));
    // A bad ring-0 stack in the TSS.
    let ts = u64::from(vector::TS);
    assert_eq!(ring3_gate_fault(false, |c| w32(c, TSS0 + 8, u64::from(sel::CODE0))), (ts, u64::from(sel::CODE0)));
    assert_eq!(ring3_gate_fault(false, |c| w32(c, TSS0 + 8, 0)), (ts, 0));
    assert_eq!(ring3_gate_fault(false, |c| w32(c, TSS0 + 8, u64::from(sel::DATA3))), (ts, u64::from(sel::DATA3 & !3)));
    // An interrupt gate is no far-transfer target.
    assert_eq!(ring3_gate_fault(false, |c| set_gdt(c, sel::GATE, gate_desc(sel::CODE0, KCODE, 0xe, 3, 0))), (gp, gate));
}

// -------------------------------------------------------- long-mode machine

/// A long-mode machine at CPL 0 in 64-bit mode: 2 MiB user pages over the
/// first 16 MiB, the GDT of [`lsel`], a 64-bit TSS with RSP0 = `STACK0`,
/// and an IDT of DPL-3 64-bit interrupt gates to the recording stubs.
fn long_mode_machine(code: &[u8]) -> Interpreter {
    let mut cpu = new_machine();
    w64(&cpu, PML4, (PML4 + 0x1000) | 7);
    w64(&cpu, PML4 + 0x1000, (PML4 + 0x2000) | 7);
    for i in 0..8u64 {
        w64(&cpu, PML4 + 0x2000 + 8 * i, (i << 21) | 0x87);
    }
    let gdt = [
        0,
        seg_desc(0, 0xffff_ffff, 0xb, 0, 64),
        seg_desc(0, 0xffff_ffff, 0x3, 0, 32),
        seg_desc(0, 0xffff_ffff, 0xb, 3, 32),
        seg_desc(0, 0xffff_ffff, 0x3, 3, 32),
        seg_desc(0, 0xffff_ffff, 0xb, 3, 64),
        sys_desc(TSS0, 0x67, 0xb, 0),
        0,
    ];
    for (i, d) in gdt.iter().enumerate() {
        set_gdt(&cpu, 8 * i as u16, *d);
    }
    for v in 0..=255u8 {
        let stub = STUBS + 16 * u64::from(v);
        w64(&cpu, IDT + 16 * u64::from(v), gate_desc(lsel::CODE0, stub, 0xe, 3, 0));
        w64(&cpu, IDT + 16 * u64::from(v) + 8, 0);
        // mov dword [RECORD], v; hlt
        let mut b = vec![0xc7, 0x04, 0x25];
        b.extend((RECORD as u32).to_le_bytes());
        b.extend(u32::from(v).to_le_bytes());
        b.push(0xf4);
        put(&cpu, stub, &b);
    }
    w32(&cpu, RECORD, u64::from(u32::MAX));
    w64(&cpu, TSS0 + 4, STACK0);
    put(&cpu, CODE, code);
    let s = &mut cpu.s;
    s.cr0 = cr0::PE | cr0::PG | cr0::ET;
    s.cr3 = PML4;
    s.cr4 = cr4::PAE;
    s.efer = efer::LME | efer::LMA;
    s.gdtr = DescriptorTable { base: GDT, limit: 0x7ff };
    s.idtr = DescriptorTable { base: IDT, limit: 0xfff };
    s.tr = descriptor_to_segment(lsel::TSS, gdt[6]);
    s.rip = CODE;
    s.gpr[reg::RSP] = STACK;
    s.rflags = 0x2;
    let code0 = cache(&cpu, lsel::CODE0);
    let data0 = cache(&cpu, lsel::DATA0);
    cpu.s.segs = [data0, code0, data0, data0, data0, data0];
    cpu
}

#[test]
fn long_mode_call_gate_to_ring0_and_far_return() {
    let code = asm(64, CODE, |a| {
        a.call(fword_ptr(0x5000u64))?;
        a.mov(rsi, rsp)?;
        a.int3()
    });
    let mut cpu = long_mode_machine(&code);
    // The far pointer: any offset, the gate's selector.
    put(&cpu, 0x5000, &[0, 0, 0, 0, (lsel::GATE | 3) as u8, 0]);
    set_gdt(&cpu, lsel::GATE, gate_desc(lsel::CODE0, KCODE, 0xc, 3, 0));
    set_gdt(&cpu, lsel::GATE + 8, 0);
    put(&cpu, KCODE, &asm(64, KCODE, |a| {
        for i in 0..4 {
            a.mov(rax, qword_ptr(rsp + 8 * i))?;
            a.mov(qword_ptr(OUT + 8 * i as u64), rax)?;
        }
        a.mov(qword_ptr(OUT + 0x20), rsp)?;
        a.mov(ax, ss)?;
        a.mov(word_ptr(OUT + 0x28), ax)?;
        a.retf()
    }));
    enter_user(&mut cpu, lsel::CODE64_3, lsel::DATA3, CODE, USTACK);
    run_until_halt(&mut cpu, 50);
    assert_eq!(recorded(&cpu), 3);
    let frame: Vec<u64> = (0..4).map(|i| r64(&cpu, OUT + 8 * i)).collect();
    assert_eq!(frame, [ip_after(&code, 64, CODE, 1), u64::from(lsel::CODE64_3), USTACK, u64::from(lsel::DATA3)]);
    // RSP0 from the TSS, not aligned; SS null with RPL 0.
    assert_eq!(r64(&cpu, OUT + 0x20), STACK0 - 32);
    assert_eq!(r16(&cpu, OUT + 0x28), 0);
    assert_eq!(cpu.s.gpr[reg::RSI], USTACK);
    // The INT3 frame: from CPL 3, 64-bit.
    assert_eq!(stack64(&cpu, 1), u64::from(lsel::CODE64_3));
    assert_eq!(stack64(&cpu, 4), u64::from(lsel::DATA3));
}

#[test]
fn long_mode_gate_checks() {
    // The upper half's type field must be zero; a 32-bit target is #GP.
    const CODE32_0: u16 = 0x50;
    for (hi, target, want) in [(0x0000_0c00_0000_0000u64, lsel::CODE0, u64::from(lsel::GATE)), (0, CODE32_0, u64::from(CODE32_0))] {
        let code = asm(64, CODE, |a| a.call(fword_ptr(0x5000u64)));
        let mut cpu = long_mode_machine(&code);
        set_gdt(&cpu, CODE32_0, seg_desc(0, 0xffff_ffff, 0xb, 0, 32));
        put(&cpu, 0x5000, &[0, 0, 0, 0, lsel::GATE as u8, 0]);
        set_gdt(&cpu, lsel::GATE, gate_desc(target, KCODE, 0xc, 0, 0));
        set_gdt(&cpu, lsel::GATE + 8, hi);
        run_until_halt(&mut cpu, 10);
        assert_eq!((recorded(&cpu), stack64(&cpu, 0)), (u64::from(vector::GP), want));
    }
}

// ------------------------------------------------------------ task switches

#[test]
fn jmp_to_a_tss_and_back_through_a_task_gate() {
    let code = asm(32, CODE, |a| {
        a.mov(eax, 0xaaaau32)?;
        a.mov(ebx, 0xbbbbu32)?;
        a.jmp_far(sel::TSS1, 0)?;
        a.mov(ecx, eax)?;
        a.hlt()
    });
    let mut cpu = protected_mode_cpu(&code);
    let task1 = asm(32, TASK1, |a| {
        a.mov(dword_ptr(OUT), eax)?;
        a.mov(dword_ptr(OUT + 4), esp)?;
        a.str(word_ptr(OUT + 8))?;
        a.mov(eax, 0x5555u32)?;
        a.jmp_far(sel::GATE, 0)
    });
    put(&cpu, TASK1, &task1);
    write_task(&cpu, TSS1, TASK1, TASK1_STACK);
    set_gdt(&cpu, sel::GATE, gate_desc(sel::TSS0, 0, 0x5, 0, 0));
    run_until_halt(&mut cpu, 20);
    // Task 0 resumed after its JMP with its registers.
    assert_eq!(cpu.s.gpr[reg::RAX], 0xaaaa);
    assert_eq!(cpu.s.gpr[reg::RBX], 0xbbbb);
    assert_eq!(cpu.s.gpr[reg::RCX], 0xaaaa);
    assert_eq!(cpu.s.gpr[reg::RSP], STACK);
    // Task 1 ran with its own.
    assert_eq!(r32(&cpu, OUT), 0xa0);
    assert_eq!(r32(&cpu, OUT + 4), TASK1_STACK);
    assert_eq!(r16(&cpu, OUT + 8), u64::from(sel::TSS1));
    // Task 1's state was saved.
    assert_eq!(r32(&cpu, TSS1 + 0x20), TASK1 + task1.len() as u64);
    assert_eq!(r32(&cpu, TSS1 + 0x28), 0x5555);
    assert_eq!(r32(&cpu, TSS1 + 0x4c), u64::from(sel::CODE0));
    assert_eq!(r32(&cpu, TSS0 + 0x20), ip_after(&code, 32, CODE, 3));
    // JMP: no back link, no NT; the busy bits follow the running task.
    assert_eq!(r16(&cpu, TSS1), 0);
    assert_eq!(cpu.s.rflags & flags::NT, 0);
    assert_eq!((gdt_type(&cpu, sel::TSS0), gdt_type(&cpu, sel::TSS1)), (0xb, 0x9));
    assert_eq!(cpu.s.tr.selector, sel::TSS0);
    assert_eq!(cpu.s.tr.type_, 0xb);
    assert_ne!(cpu.s.cr0 & 0x8, 0, "CR0.TS is set by a task switch");
}

#[test]
fn call_to_a_task_gate_nests_and_iret_returns() {
    let code = asm(32, CODE, |a| {
        a.mov(eax, 1u32)?;
        a.call_far(sel::GATE, 0)?;
        a.mov(esi, eax)?;
        a.hlt()
    });
    let mut cpu = protected_mode_cpu(&code);
    let task1 = asm(32, TASK1, |a| {
        a.pushfd()?;
        a.pop(dword_ptr(OUT))?;
        a.mov(eax, 0x77u32)?;
        a.iretd()
    });
    put(&cpu, TASK1, &task1);
    write_task(&cpu, TSS1, TASK1, TASK1_STACK);
    set_gdt(&cpu, sel::GATE, gate_desc(sel::TSS1, 0, 0x5, 0, 0));
    run_until_halt(&mut cpu, 20);
    assert_eq!(cpu.s.gpr[reg::RSI], 1);
    assert_ne!(r32(&cpu, OUT) & NT as u64, 0, "the called task runs with NT set");
    assert_eq!(r16(&cpu, TSS1), u64::from(sel::TSS0), "back link");
    assert_eq!(cpu.s.rflags & flags::NT, 0);
    assert_eq!(r32(&cpu, TSS1 + 0x24) & NT as u64, 0, "IRET clears NT in the saved image");
    assert_eq!(r32(&cpu, TSS1 + 0x28), 0x77);
    assert_eq!(r32(&cpu, TSS1 + 0x20), TASK1 + task1.len() as u64);
    assert_eq!((gdt_type(&cpu, sel::TSS0), gdt_type(&cpu, sel::TSS1)), (0xb, 0x9));
    assert_eq!(cpu.s.tr.selector, sel::TSS0);
}

#[test]
fn calling_a_busy_task_is_gp() {
    let code = asm(32, CODE, |a| a.call_far(sel::TSS1, 0));
    let mut cpu = protected_mode_cpu(&code);
    put(&cpu, TASK1, &asm(32, TASK1, |a| a.call_far(sel::TSS0, 0)));
    write_task(&cpu, TSS1, TASK1, TASK1_STACK);
    run_until_halt(&mut cpu, 10);
    assert_eq!((recorded(&cpu), stack(&cpu, 0)), (u64::from(vector::GP), u64::from(sel::TSS0)));
    assert_eq!(cpu.s.tr.selector, sel::TSS1);
}

#[test]
fn exception_through_an_idt_task_gate_pushes_its_error_code() {
    let code = asm(32, CODE, |a| {
        a.mov(ax, 0x800u32)?;
        a.mov(ds, ax)?;
        a.hlt()
    });
    let mut cpu = protected_mode_cpu(&code);
    put(&cpu, TASK1, &asm(32, TASK1, |a| {
        a.pop(eax)?;
        a.mov(dword_ptr(OUT), eax)?;
        a.pushfd()?;
        a.pop(dword_ptr(OUT + 4))?;
        a.hlt()
    }));
    write_task(&cpu, TSS1, TASK1, TASK1_STACK);
    w64(&cpu, IDT + 8 * 13, gate_desc(sel::TSS1, 0, 0x5, 0, 0));
    run_until_halt(&mut cpu, 10);
    assert_eq!(r32(&cpu, OUT), 0x800);
    assert_ne!(r32(&cpu, OUT + 4) & NT as u64, 0);
    assert_eq!(cpu.s.tr.selector, sel::TSS1);
    assert_eq!(r16(&cpu, TSS1), u64::from(sel::TSS0));
    // The fault's EIP (the MOV DS) is saved in the old task.
    assert_eq!(r32(&cpu, TSS0 + 0x20), ip_after(&code, 32, CODE, 1));
    assert_eq!(cpu.s.gpr[reg::RSP], TASK1_STACK);
    assert_eq!((gdt_type(&cpu, sel::TSS0), gdt_type(&cpu, sel::TSS1)), (0xb, 0xb));
}

#[test]
fn software_interrupt_through_a_task_gate() {
    let code = asm(32, CODE, |a| {
        a.int(0x40u32)?;
        a.hlt()
    });
    let mut cpu = protected_mode_cpu(&code);
    put(&cpu, TASK1, &asm(32, TASK1, |a| {
        a.mov(dword_ptr(OUT), esp)?;
        a.iretd()
    }));
    write_task(&cpu, TSS1, TASK1, TASK1_STACK);
    w64(&cpu, IDT + 8 * 0x40, gate_desc(sel::TSS1, 0, 0x5, 0, 0));
    run_until_halt(&mut cpu, 10);
    // No error code; the old task resumes after INT.
    assert_eq!(r32(&cpu, OUT), TASK1_STACK);
    assert_eq!(r32(&cpu, TSS0 + 0x20), CODE + 2);
    assert_eq!(cpu.s.rip, CODE + 3);
    assert_eq!(cpu.s.tr.selector, sel::TSS0);
}

/// Runs `code` at CPL 0 after `setup`; returns the vector and error code.
fn task_fault(code: Vec<u8>, setup: impl FnOnce(&mut Interpreter)) -> (u64, u64) {
    let mut cpu = protected_mode_cpu(&code);
    write_task(&cpu, TSS1, TASK1, TASK1_STACK);
    put(&cpu, TASK1, &asm(32, TASK1, |a| a.hlt()));
    setup(&mut cpu);
    run_until_halt(&mut cpu, 10);
    (recorded(&cpu), stack(&cpu, 0))
}

#[test]
fn task_switch_faults_before_the_commit_point() {
    let jmp1 = || asm(32, CODE, |a| a.jmp_far(sel::TSS1, 0));
    let tss1 = u64::from(sel::TSS1);
    // To the running (busy) task.
    assert_eq!(task_fault(asm(32, CODE, |a| a.jmp_far(sel::TSS0, 0)), |_| {}), (u64::from(vector::GP), u64::from(sel::TSS0)));
    // A TSS limit below 67h.
    assert_eq!(task_fault(jmp1(), |c| set_gdt(c, sel::TSS1, sys_desc(TSS1, 0x60, 0x9, 0))), (u64::from(vector::TS), tss1));
    // Not present.
    assert_eq!(
        task_fault(jmp1(), |c| set_gdt(c, sel::TSS1, sys_desc(TSS1, 0x67, 0x9, 0) & !(1 << 47))),
        (u64::from(vector::NP), tss1)
    );
    // A TSS DPL below CPL... here RPL: 0x33 names TSS1 with RPL 3.
    assert_eq!(task_fault(asm(32, CODE, |a| a.jmp_far(sel::TSS1 | 3, 0)), |_| {}), (u64::from(vector::GP), tss1));
    // IRET with NT to a task that is not busy.
    let iret_nt = asm(32, CODE, |a| {
        a.pushfd()?;
        a.or(dword_ptr(esp), NT as i32)?;
        a.popfd()?;
        a.iretd()
    });
    assert_eq!(task_fault(iret_nt, |c| w16(c, TSS0, sel::TSS1)), (u64::from(vector::TS), tss1));
    // A task gate whose TSS selector is in the LDT.
    let gate = asm(32, CODE, |a| a.jmp_far(sel::GATE, 0));
    assert_eq!(
        task_fault(gate, |c| set_gdt(c, sel::GATE, gate_desc(sel::TSS1 | 4, 0, 0x5, 0, 0))),
        (u64::from(vector::GP), tss1 | 4)
    );
}

#[test]
fn task_switch_fault_after_the_commit_point_belongs_to_the_new_task() {
    // Task 1's CS names a data segment: #TS(10h), raised in task 1, which
    // a task gate hands to task 2.
    let code = asm(32, CODE, |a| a.jmp_far(sel::TSS1, 0));
    let mut cpu = protected_mode_cpu(&code);
    write_task(&cpu, TSS1, TASK1, TASK1_STACK);
    w32(&cpu, TSS1 + 0x4c, u64::from(sel::DATA0));
    write_task(&cpu, TSS2, STUBS + 16 * 10, TASK2_STACK);
    w64(&cpu, IDT + 8 * 10, gate_desc(sel::TSS2, 0, 0x5, 0, 0));
    run_until_halt(&mut cpu, 10);
    assert_eq!((recorded(&cpu), stack(&cpu, 0)), (u64::from(vector::TS), u64::from(sel::DATA0)));
    assert_eq!(cpu.s.tr.selector, sel::TSS2);
    assert_eq!(r16(&cpu, TSS2), u64::from(sel::TSS1));
    // Task 1's state, as far as it was loaded, went into its TSS.
    assert_eq!(r32(&cpu, TSS1 + 0x20), TASK1);
    assert_eq!(r32(&cpu, TSS1 + 0x4c), u64::from(sel::DATA0));
    assert_eq!(
        (gdt_type(&cpu, sel::TSS0), gdt_type(&cpu, sel::TSS1), gdt_type(&cpu, sel::TSS2)),
        (0x9, 0xb, 0xb)
    );
}

#[test]
fn task_switch_to_a_task_with_no_usable_stack_is_a_triple_fault() {
    let code = asm(32, CODE, |a| a.jmp_far(sel::TSS1, 0));
    let mut cpu = protected_mode_cpu(&code);
    write_task(&cpu, TSS1, TASK1, TASK1_STACK);
    w32(&cpu, TSS1 + 0x50, 0); // SS null
    assert_eq!(cpu.step(), Step::Stopped(StopReason::TripleFault));
    assert_eq!(cpu.s.tr.selector, sel::TSS1);
}

#[test]
fn task_switch_loads_cr3_and_flushes_the_tlb() {
    let code = asm(32, CODE, |a| {
        a.mov(eax, dword_ptr(0x40_0000u64))?;
        a.jmp_far(sel::TSS1, 0)?;
        a.mov(ecx, dword_ptr(0x40_0000u64))?;
        a.hlt()
    });
    let mut cpu = protected_mode_cpu(&code);
    enable_paging(&mut cpu, &[]);
    // PD1: the same, except that 4 MiB-8 MiB maps 8 MiB.
    for i in 0..1024u64 {
        w32(&cpu, PD1 + 4 * i, r32(&cpu, PD0 + 4 * i));
    }
    w32(&cpu, PD1 + 4, 0x80_0000 | 0x87);
    w32(&cpu, 0x40_0000, 0x1111_1111);
    w32(&cpu, 0x80_0000, 0x2222_2222);
    put(&cpu, TASK1, &asm(32, TASK1, |a| {
        a.mov(ebx, dword_ptr(0x40_0000u64))?;
        a.mov(dword_ptr(OUT), ebx)?;
        a.jmp_far(sel::GATE, 0)
    }));
    write_task(&cpu, TSS1, TASK1, TASK1_STACK);
    w32(&cpu, TSS1 + 0x1c, PD1);
    set_gdt(&cpu, sel::GATE, gate_desc(sel::TSS0, 0, 0x5, 0, 0));
    run_until_halt(&mut cpu, 20);
    assert_eq!(r32(&cpu, OUT), 0x2222_2222);
    assert_eq!(cpu.s.gpr[reg::RAX], 0x1111_1111);
    assert_eq!(cpu.s.gpr[reg::RCX], 0x1111_1111);
    assert_eq!(cpu.s.cr3, PD0);
}

// ------------------------------------------------- LAR, LSL, VERR, VERW, ARPL

#[derive(Clone, Copy)]
enum Probe {
    Lar,
    Lsl,
    Verr,
    Verw,
}

/// For each (instruction, selector): ZF at `OUT + n`, EBX (preset to
/// DEADBEEFh) at `OUT + 0x40 + 4n`.
fn probes(a: &mut CodeAssembler, cases: &[(Probe, u16)]) -> Result<(), IcedError> {
    for (n, (p, s)) in cases.iter().enumerate() {
        let n = n as u64;
        a.mov(eax, u32::from(*s))?;
        a.mov(ebx, 0xdead_beefu32)?;
        match p {
            Probe::Lar => a.lar(ebx, eax)?,
            Probe::Lsl => a.lsl(ebx, eax)?,
            Probe::Verr => a.verr(ax)?,
            Probe::Verw => a.verw(ax)?,
        }
        a.setz(byte_ptr(OUT + n))?;
        a.mov(dword_ptr(OUT + 0x40 + 4 * n), ebx)?;
    }
    Ok(())
}

fn probe_results(cpu: &Interpreter, n: usize) -> Vec<(u64, u64)> {
    (0..n as u64).map(|i| (r32(cpu, OUT + i) & 0xff, r32(cpu, OUT + 0x40 + 4 * i))).collect()
}

#[test]
fn lar_lsl_verr_verw_at_cpl0() {
    use Probe::*;
    let cases = [
        (Lar, sel::DATA0),
        (Lsl, sel::DATA0),
        (Lar, sel::TSS0),
        (Lsl, sel::TSS0),
        (Lar, 0x800),
        (Lar, sel::INT_GATE),
        (Lsl, sel::GATE),
        (Lar, sel::GATE),
        (Verr, sel::CODE0),
        (Verw, sel::CODE0),
        (Verw, sel::DATA0),
        (Verr, 0),
        (Lar, 0x07),
        (Lsl, 0x07),
        (Verw, 0x0c),
        (Lar, 0),
    ];
    let code = asm(32, CODE, |a| {
        probes(a, &cases)?;
        a.hlt()
    });
    let mut cpu = protected_mode_cpu(&code);
    let gate = gate_desc(sel::CODE0, KCODE, 0xc, 3, 2);
    set_gdt(&cpu, sel::GATE, gate);
    run_until_halt(&mut cpu, 200);
    let none = 0xdead_beef;
    assert_eq!(
        probe_results(&cpu, cases.len()),
        [
            (1, 0x00cf_9300),
            (1, 0xffff_ffff),
            (1, 0x0000_8b00),
            (1, 0x67),
            (0, none),
            (0, none),
            (0, none),
            (1, (gate >> 32) & 0x00ff_ff00),
            (1, none),
            (0, none),
            (1, none),
            (0, none),
            (1, 0x0040_f300),
            (1, 0xfff),
            (1, none),
            (0, none),
        ]
    );
}

#[test]
fn lar_and_verr_respect_privilege_at_cpl3() {
    use Probe::*;
    let cases = [(Lar, sel::DATA0), (Verr, sel::CODE0), (Lar, sel::DATA3), (Verw, 0x0f), (Verw, 0x07), (Lar, sel::CODE3), (Lsl, sel::TSS0)];
    let code = asm(32, CODE, |a| {
        probes(a, &cases)?;
        a.int3()
    });
    let mut cpu = protected_mode_cpu(&code);
    enter_user(&mut cpu, sel::CODE3, sel::DATA3, CODE, USTACK);
    run_until_halt(&mut cpu, 200);
    assert_eq!(recorded(&cpu), 3);
    let none = 0xdead_beef;
    assert_eq!(
        probe_results(&cpu, cases.len()),
        [(0, none), (0, none), (1, 0x00cf_f300), (0, none), (1, none), (1, 0x00cf_fb00), (0, none)]
    );
}

#[test]
fn arpl_raises_the_rpl() {
    let code = asm(32, CODE, |a| {
        a.mov(eax, 0xffff_0010u32)?;
        a.mov(bx, 3u32)?;
        a.arpl(ax, bx)?;
        a.setz(byte_ptr(OUT))?;
        a.mov(ecx, eax)?;
        a.arpl(ax, bx)?;
        a.setz(byte_ptr(OUT + 1))?;
        a.mov(word_ptr(OUT + 4), 0x21u32)?;
        a.arpl(word_ptr(OUT + 4), bx)?;
        a.setz(byte_ptr(OUT + 2))?;
        a.hlt()
    });
    let mut cpu = protected_mode_cpu(&code);
    run_until_halt(&mut cpu, 20);
    assert_eq!(cpu.s.gpr[reg::RCX], 0xffff_0013, "only the low word changes");
    // ZF: set, clear (already RPL 3), set (memory operand).
    assert_eq!(r32(&cpu, OUT) & 0xff_ffff, 0x01_0001);
    assert_eq!(r16(&cpu, OUT + 4), 0x23);
}

// ------------------------------------------------------ SYSCALL and SYSRET

fn syscall_machine(user: &[u8], kernel: &[u8]) -> Interpreter {
    let mut cpu = long_mode_machine(user);
    put(&cpu, KCODE, kernel);
    cpu.s.efer |= efer::SCE;
    cpu.s.msrs.star = 0x0018_0008 << 32;
    cpu.s.msrs.lstar = KCODE;
    cpu.s.msrs.cstar = KCODE;
    cpu.s.msrs.sfmask = flags::IF | flags::DF | flags::TF;
    enter_user(&mut cpu, lsel::CODE64_3, lsel::DATA3, CODE, USTACK);
    cpu.s.rflags = 0x2 | flags::IF | flags::DF;
    cpu
}

#[test]
fn syscall_and_sysret_in_64_bit_mode() {
    let user = asm(64, CODE, |a| {
        a.syscall()?;
        a.int3()
    });
    let kernel = asm(64, KCODE, |a| {
        a.mov(qword_ptr(OUT), rcx)?;
        a.mov(qword_ptr(OUT + 8), r11)?;
        a.mov(ax, cs)?;
        a.mov(word_ptr(OUT + 0x10), ax)?;
        a.mov(ax, ss)?;
        a.mov(word_ptr(OUT + 0x12), ax)?;
        a.pushfq()?;
        a.pop(qword_ptr(OUT + 0x18))?;
        a.sysretq()
    });
    let mut cpu = syscall_machine(&user, &kernel);
    let ret = CODE + 2;
    cpu.step();
    let code_seg = cpu.s.segs[seg::CS];
    assert_eq!((code_seg.selector, code_seg.dpl, code_seg.l, code_seg.db, code_seg.type_, code_seg.limit), (lsel::CODE0, 0, 1, 0, 0xb, 0xffff_ffff));
    let stack_seg = cpu.s.segs[seg::SS];
    assert_eq!((stack_seg.selector, stack_seg.dpl, stack_seg.db, stack_seg.type_, stack_seg.limit), (lsel::DATA0, 0, 1, 0x3, 0xffff_ffff));
    assert_eq!(cpu.s.rip, KCODE);
    run_until_rip(&mut cpu, ret, 20);
    assert_eq!(r64(&cpu, OUT), ret);
    assert_eq!(r64(&cpu, OUT + 8), 0x2 | flags::IF | flags::DF);
    assert_eq!(r16(&cpu, OUT + 0x10), u64::from(lsel::CODE0));
    assert_eq!(r16(&cpu, OUT + 0x12), u64::from(lsel::DATA0));
    assert_eq!(r64(&cpu, OUT + 0x18), 0x2, "SFMASK cleared IF and DF");
    let code_seg = cpu.s.segs[seg::CS];
    assert_eq!((code_seg.selector, code_seg.dpl, code_seg.l, code_seg.db), (lsel::CODE64_3, 3, 1, 0));
    let stack_seg = cpu.s.segs[seg::SS];
    assert_eq!((stack_seg.selector, stack_seg.dpl, stack_seg.present), (lsel::DATA3, 3, 1));
    assert_eq!(cpu.s.rflags, 0x2 | flags::IF | flags::DF);
    assert_eq!(cpu.s.gpr[reg::RSP], USTACK);
    run_until_halt(&mut cpu, 5);
    assert_eq!(recorded(&cpu), 3);
}

#[test]
fn sysret_to_a_non_canonical_rip_faults_at_cpl0() {
    let user = asm(64, CODE, |a| a.syscall());
    let kernel = asm(64, KCODE, |a| {
        a.mov(rcx, 0x0000_8000_0000_0000u64)?;
        a.sysretq()
    });
    let mut cpu = syscall_machine(&user, &kernel);
    run_until_halt(&mut cpu, 10);
    assert_eq!((recorded(&cpu), stack64(&cpu, 0)), (u64::from(vector::GP), 0));
    assert_eq!(stack64(&cpu, 2), u64::from(lsel::CODE0), "raised at CPL 0");
}

#[test]
fn syscall_is_ud_without_efer_sce_and_sysret_is_gp_at_cpl3() {
    let user = asm(64, CODE, |a| a.syscall());
    let mut cpu = syscall_machine(&user, &[]);
    cpu.s.efer &= !efer::SCE;
    run_until_halt(&mut cpu, 5);
    assert_eq!(recorded(&cpu), u64::from(vector::UD));
    let user = asm(64, CODE, |a| a.sysretq());
    let mut cpu = syscall_machine(&user, &[]);
    run_until_halt(&mut cpu, 5);
    assert_eq!((recorded(&cpu), stack64(&cpu, 0)), (u64::from(vector::GP), 0));
}

#[test]
fn syscall_from_compatibility_mode_and_sysret_back() {
    let user = asm(32, CODE, |a| {
        a.syscall()?;
        a.int3()
    });
    let kernel = asm(64, KCODE, |a| {
        a.mov(qword_ptr(OUT), rcx)?;
        a.sysret()
    });
    let mut cpu = syscall_machine(&user, &kernel);
    cpu.s.msrs.lstar = 0;
    enter_user(&mut cpu, lsel::CODE32_3, lsel::DATA3, CODE, USTACK);
    run_until_rip(&mut cpu, CODE + 2, 10);
    assert_eq!(r64(&cpu, OUT), CODE + 2);
    let code_seg = cpu.s.segs[seg::CS];
    assert_eq!((code_seg.selector, code_seg.dpl, code_seg.l, code_seg.db), (lsel::CODE32_3, 3, 0, 1));
    assert_eq!(cpu.s.segs[seg::SS].selector, lsel::DATA3);
    run_until_halt(&mut cpu, 5);
    assert_eq!((recorded(&cpu), stack64(&cpu, 1)), (3, u64::from(lsel::CODE32_3)));
}

// --------------------------------------------------- SYSENTER and SYSEXIT

#[test]
fn sysenter_and_sysexit_in_protected_mode() {
    let build = |ret: u64| {
        asm(32, CODE, |a| {
            a.mov(ecx, esp)?;
            a.mov(edx, ret as u32)?;
            a.sysenter()?;
            a.int3()
        })
    };
    let ret = ip_after(&build(CODE), 32, CODE, 3);
    let mut cpu = protected_mode_cpu(&build(ret));
    put(&cpu, KCODE, &asm(32, KCODE, |a| {
        a.mov(dword_ptr(OUT), esp)?;
        a.mov(ax, cs)?;
        a.mov(word_ptr(OUT + 4), ax)?;
        a.mov(ax, ss)?;
        a.mov(word_ptr(OUT + 6), ax)?;
        a.pushfd()?;
        a.pop(dword_ptr(OUT + 8))?;
        a.sysexit()
    }));
    cpu.s.msrs.sysenter_cs = u64::from(sel::CODE0);
    cpu.s.msrs.sysenter_esp = STACK0;
    cpu.s.msrs.sysenter_eip = KCODE;
    enter_user(&mut cpu, sel::CODE3, sel::DATA3, CODE, USTACK);
    cpu.s.rflags = 0x202;
    run_until_rip(&mut cpu, ret, 20);
    assert_eq!(r32(&cpu, OUT), STACK0);
    assert_eq!(r16(&cpu, OUT + 4), u64::from(sel::CODE0));
    assert_eq!(r16(&cpu, OUT + 6), u64::from(sel::DATA0));
    assert_eq!(r32(&cpu, OUT + 8) & flags::IF, 0, "SYSENTER clears IF");
    let code_seg = cpu.s.segs[seg::CS];
    assert_eq!((code_seg.selector, code_seg.dpl, code_seg.db, code_seg.l, code_seg.type_, code_seg.base, code_seg.limit), (sel::CODE3, 3, 1, 0, 0xb, 0, 0xffff_ffff));
    let stack_seg = cpu.s.segs[seg::SS];
    assert_eq!((stack_seg.selector, stack_seg.dpl, stack_seg.db, stack_seg.type_), (sel::DATA3, 3, 1, 0x3));
    assert_eq!(cpu.s.gpr[reg::RSP], USTACK);
    run_until_halt(&mut cpu, 5);
    assert_eq!(recorded(&cpu), 3);
}

#[test]
fn sysenter_without_a_target_and_sysexit_at_cpl3_are_gp() {
    for code in [asm(32, CODE, |a| a.sysenter()), asm(32, CODE, |a| a.sysexit())] {
        let mut cpu = protected_mode_cpu(&code);
        cpu.s.msrs.sysenter_cs = if code[1] == 0x34 { 0 } else { u64::from(sel::CODE0) };
        enter_user(&mut cpu, sel::CODE3, sel::DATA3, CODE, USTACK);
        run_until_halt(&mut cpu, 5);
        assert_eq!((recorded(&cpu), stack(&cpu, 0)), (u64::from(vector::GP), 0));
    }
}

#[test]
fn sysenter_and_sysexitq_in_long_mode() {
    let build = |ret: u64| {
        asm(64, CODE, |a| {
            a.mov(rcx, rsp)?;
            a.mov(rdx, ret)?;
            a.sysenter()?;
            a.int3()
        })
    };
    let ret = ip_after(&build(CODE), 64, CODE, 3);
    let mut cpu = long_mode_machine(&build(ret));
    put(&cpu, KCODE, &asm(64, KCODE, |a| {
        a.mov(qword_ptr(OUT), rsp)?;
        a.sysexitq()
    }));
    cpu.s.msrs.sysenter_cs = u64::from(lsel::CODE0);
    cpu.s.msrs.sysenter_esp = STACK0;
    cpu.s.msrs.sysenter_eip = KCODE;
    enter_user(&mut cpu, lsel::CODE64_3, lsel::DATA3, CODE, USTACK);
    cpu.step();
    cpu.step();
    cpu.step();
    let code_seg = cpu.s.segs[seg::CS];
    assert_eq!((code_seg.selector, code_seg.dpl, code_seg.l, code_seg.db), (lsel::CODE0, 0, 1, 0));
    run_until_rip(&mut cpu, ret, 10);
    assert_eq!(r64(&cpu, OUT), STACK0);
    let code_seg = cpu.s.segs[seg::CS];
    assert_eq!((code_seg.selector, code_seg.dpl, code_seg.l, code_seg.db), (lsel::CODE0 + 32 + 3, 3, 1, 0));
    assert_eq!(cpu.s.segs[seg::SS].selector, lsel::CODE0 + 40 + 3);
    assert_eq!(cpu.s.gpr[reg::RSP], USTACK);
}

// ---------------------------------------------------------- BCD and BOUND

/// Runs one instruction with AX and the arithmetic flags given; returns
/// AX and the arithmetic flags after.
fn bcd(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>, ax_in: u16, fl: u64) -> (u64, u64) {
    let mut cpu = protected_mode_cpu(&asm(32, CODE, f));
    cpu.s.gpr[reg::RAX] = 0xabcd_0000 | u64::from(ax_in);
    cpu.s.rflags = 0x2 | fl;
    assert_eq!(cpu.step(), Step::Executed);
    assert_eq!(cpu.s.gpr[reg::RAX] >> 16, 0xabcd);
    (cpu.s.gpr[reg::RAX] & 0xffff, cpu.s.flags() & flags::ARITH)
}

#[test]
fn decimal_adjust_after_addition_and_subtraction() {
    use crate::cpu::flags::{AF, CF, OF, PF, SF, ZF};
    // The SDM's examples: 79h + 35h = AEh, DAA gives 14h with CF; 35h -
    // 47h = EEh with AF and CF, DAS gives 88h.
    assert_eq!(bcd(|a| a.daa(), 0xae, OF), (0x14, CF | AF | PF));
    assert_eq!(bcd(|a| a.das(), 0xee, AF | CF | PF), (0x88, SF | AF | PF | CF));
    // Nothing to adjust.
    assert_eq!(bcd(|a| a.daa(), 0x42, 0), (0x42, PF));
    assert_eq!(bcd(|a| a.das(), 0x00, CF | SF), (0xa0, CF | SF | PF));
    // A low digit borrow that DAS keeps in CF.
    assert_eq!(bcd(|a| a.das(), 0x03, AF), (0xfd, CF | AF | SF));
    // 99h + 1 = 9Ah: DAA gives 00h with CF (decimal 100).
    assert_eq!(bcd(|a| a.daa(), 0x9a, 0), (0x00, CF | AF | ZF | PF));
}

#[test]
fn ascii_adjusts() {
    use crate::cpu::flags::{AF, CF, OF, PF, SF, ZF};
    // AAA: AX 010Bh -> 0201h; the carry reaches AH.
    assert_eq!(bcd(|a| a.aaa(), 0x010b, OF | SF), (0x0201, CF | AF));
    assert_eq!(bcd(|a| a.aaa(), 0x00ff, AF), (0x0205, CF | AF | PF));
    assert_eq!(bcd(|a| a.aaa(), 0x0135, CF), (0x0105, PF));
    // AAS: 0200h with AF -> 00FAh masked to 000Ah... AH borrows too.
    assert_eq!(bcd(|a| a.aas(), 0x0200, AF), (0x000a, CF | AF | PF));
    assert_eq!(bcd(|a| a.aas(), 0x0530, 0), (0x0500, ZF | PF));
    // AAM 10: 63h (99) -> 0909h; AAM 16 splits nibbles.
    assert_eq!(bcd(|a| a.aam(10u32), 0x0063, CF | AF | OF), (0x0909, PF));
    assert_eq!(bcd(|a| a.aam(16u32), 0x005a, 0), (0x050a, PF));
    assert_eq!(bcd(|a| a.aam(10u32), 0x0000, 0), (0x0000, ZF | PF));
    // AAD 10: 0907h -> 97 = 61h; AAD 16.
    assert_eq!(bcd(|a| a.aad(10u32), 0x0907, CF | OF | AF), (0x0061, 0));
    assert_eq!(bcd(|a| a.aad(16u32), 0x0809, 0), (0x0089, SF));
}

#[test]
fn aam_0_is_de() {
    let mut cpu = protected_mode_cpu(&asm(32, CODE, |a| a.aam(0u32)));
    run_until_halt(&mut cpu, 5);
    assert_eq!(recorded(&cpu), u64::from(vector::DE));
    assert_eq!(stack(&cpu, 0), CODE, "a fault: EIP is the AAM");
}

#[test]
fn bound_checks_signed_limits() {
    let code = asm(32, CODE, |a| {
        a.mov(eax, 15u32)?;
        a.bound(eax, ptr(OUT))?;
        a.mov(eax, 0xffff_fffdu32)?;
        a.bound(eax, ptr(OUT + 8))?;
        a.mov(ax, 5u32)?;
        a.bound(ax, ptr(OUT + 16))?;
        a.mov(eax, 21u32)?;
        a.bound(eax, ptr(OUT))?;
        a.hlt()
    });
    let mut cpu = protected_mode_cpu(&code);
    w32(&cpu, OUT, 10);
    w32(&cpu, OUT + 4, 20);
    w32(&cpu, OUT + 8, (-5i32) as u32 as u64);
    w32(&cpu, OUT + 12, 5);
    w16(&cpu, OUT + 16, 0xfff0);
    w16(&cpu, OUT + 18, 0x0005);
    run_until_halt(&mut cpu, 20);
    assert_eq!(recorded(&cpu), u64::from(vector::BR));
    assert_eq!(stack(&cpu, 0), ip_after(&code, 32, CODE, 7), "#BR is a fault on the last BOUND");
}

#[test]
fn bcd_opcodes_are_ud_in_64_bit_mode() {
    for op in [0x27u8, 0x2f, 0x37, 0x3f] {
        let mut cpu = long_mode_machine(&[op]);
        run_until_halt(&mut cpu, 5);
        assert_eq!(recorded(&cpu), u64::from(vector::UD), "opcode {op:#x}");
    }
    let mut cpu = long_mode_machine(&[0xd4, 0x0a]);
    run_until_halt(&mut cpu, 5);
    assert_eq!(recorded(&cpu), u64::from(vector::UD));
}

// ------------------------------------------------------- virtual-8086 mode

const V86_CS: u16 = 0x1000;
const V86_IP: u16 = 0x2000;
const V86_SS: u16 = 0x6000;
const V86_SP: u16 = 0x1000;
const V86_DS: u16 = 0x3000;

/// A machine that IRETs from CPL 0 into virtual-8086 mode with `eflags`
/// (VM is added) at 1000:2000, SS:SP 6000:1000, DS = ES = 3000h.
fn vm86_machine(code16: &[u8], eflags: u32) -> Interpreter {
    let main = asm(32, CODE, |a| {
        for v in [0, 0, i32::from(V86_DS), i32::from(V86_DS), i32::from(V86_SS), i32::from(V86_SP)] {
            a.push(v)?;
        }
        a.push((eflags | 0x2_0002) as i32)?;
        a.push(i32::from(V86_CS))?;
        a.push(i32::from(V86_IP))?;
        a.iretd()
    });
    let cpu = protected_mode_cpu(&main);
    put(&cpu, (u64::from(V86_CS) << 4) + u64::from(V86_IP), code16);
    cpu
}

const IOPL3: u32 = 0x3000;

#[test]
fn iret_into_vm86_and_int_n_through_the_idt() {
    let code = asm(16, u64::from(V86_IP), |a| {
        a.mov(ax, 0x1234u32)?;
        a.mov(word_ptr(0x10), ax)?;
        a.int(0x30u32)?;
        a.mov(bx, 0x5678u32)?;
        a.int3()
    });
    let mut cpu = vm86_machine(&code, IOPL3 | 0x200);
    // The INT 30h handler copies its frame, notes DS, and returns.
    w64(&cpu, IDT + 8 * 0x30, gate_desc(sel::CODE0, KCODE, 0xe, 3, 0));
    put(&cpu, KCODE, &asm(32, KCODE, |a| {
        for i in 0..9 {
            a.mov(eax, dword_ptr(esp + 4 * i))?;
            a.mov(dword_ptr(OUT + 4 * i as u64).ss(), eax)?;
        }
        a.mov(ax, ds)?;
        a.mov(word_ptr(OUT + 0x40).ss(), ax)?;
        a.mov(dword_ptr(OUT + 0x44).ss(), esp)?;
        a.iretd()
    }));
    // Into virtual-8086 mode.
    run_until_rip(&mut cpu, u64::from(V86_IP), 20);
    assert!(cpu.vm86());
    assert_eq!(cpu.s.cpl(), 3);
    let code_seg = cpu.s.segs[seg::CS];
    assert_eq!((code_seg.selector, code_seg.base, code_seg.limit, code_seg.dpl), (V86_CS, 0x1_0000, 0xffff, 3));
    assert_eq!(cpu.s.segs[seg::SS].base, u64::from(V86_SS) << 4);
    assert_eq!(cpu.s.gpr[reg::RSP], u64::from(V86_SP));
    run_until_halt(&mut cpu, 30);
    assert_eq!(recorded(&cpu), 3);
    assert_eq!(r16(&cpu, (u64::from(V86_DS) << 4) + 0x10), 0x1234);
    assert_eq!(cpu.s.gpr[reg::RBX] & 0xffff, 0x5678);
    let frame: Vec<u64> = (0..9).map(|i| r32(&cpu, OUT + 4 * i)).collect();
    let ip = ip_after(&code, 16, u64::from(V86_IP), 3);
    assert_eq!(frame[..2], [ip, u64::from(V86_CS)]);
    assert_eq!(frame[2] & (flags::VM | flags::IOPL), flags::VM | flags::IOPL);
    assert_eq!(
        frame[3..],
        [u64::from(V86_SP), u64::from(V86_SS), u64::from(V86_DS), u64::from(V86_DS), 0, 0]
    );
    assert_eq!(r16(&cpu, OUT + 0x40), 0, "data segments are null in the handler");
    assert_eq!(r32(&cpu, OUT + 0x44), STACK0 - 36);
    // The INT3 left virtual-8086 mode through the IDT too.
    assert_eq!(cpu.s.rflags & flags::VM, 0);
    assert_ne!(stack(&cpu, 2) & flags::VM, 0);
    assert_eq!(stack(&cpu, 1), u64::from(V86_CS));
}

#[test]
fn vm86_with_iopl3_runs_the_sensitive_instructions() {
    let code = asm(16, u64::from(V86_IP), |a| {
        a.cli()?;
        a.pushf()?;
        a.pop(ax)?;
        a.sti()?;
        a.pushf()?;
        a.pop(cx)?;
        a.push(0x0000u32 as i32)?;
        a.popf()?;
        a.pushf()?;
        a.pop(dx)?;
        a.int3()
    });
    let mut cpu = vm86_machine(&code, IOPL3 | 0x200);
    run_until_halt(&mut cpu, 40);
    assert_eq!(recorded(&cpu), 3);
    let (ax_, cx_, dx_) = (cpu.s.gpr[reg::RAX] & 0xffff, cpu.s.gpr[reg::RCX] & 0xffff, cpu.s.gpr[reg::RDX] & 0xffff);
    assert_eq!(ax_ & 0x200, 0);
    assert_eq!(ax_ & 0x3000, 0x3000);
    assert_ne!(cx_ & 0x200, 0);
    // POPF in virtual-8086 mode cannot change IOPL.
    assert_eq!(dx_ & 0x3000, 0x3000);
    assert_eq!(dx_ & 0x200, 0);
    assert_ne!(stack(&cpu, 2) & flags::VM, 0);
}

#[test]
fn vm86_iopl_sensitive_instructions_fault_below_iopl3() {
    let cases: [(&[u8], u8); 9] = [
        (&[0xfa], vector::GP),             // CLI
        (&[0xfb], vector::GP),             // STI
        (&[0x9c], vector::GP),             // PUSHF
        (&[0x9d], vector::GP),             // POPF
        (&[0xcd, 0x30], vector::GP),       // INT 30h
        (&[0xcf], vector::GP),             // IRET
        (&[0xe4, 0x60], vector::GP),       // IN AL, 60h (no I/O bitmap)
        (&[0xf4], vector::GP),             // HLT
        (&[0x0f, 0x02, 0xc3], vector::UD), // LAR: not in virtual-8086 mode
    ];
    for (bytes, want) in cases {
        let mut cpu = vm86_machine(bytes, 0x200);
        run_until_halt(&mut cpu, 20);
        assert_eq!(recorded(&cpu), u64::from(want), "{bytes:x?}");
        let base = if want == vector::GP {
            assert_eq!(stack(&cpu, 0), 0, "{bytes:x?}: error code");
            1
        } else {
            0
        };
        assert_eq!(stack(&cpu, base), u64::from(V86_IP), "{bytes:x?}: faulting IP");
        assert_eq!(stack(&cpu, base + 1), u64::from(V86_CS));
        assert_ne!(stack(&cpu, base + 2) & flags::VM, 0);
    }
}

#[test]
fn vm86_io_through_the_tss_bitmap() {
    // A TSS with an I/O bitmap allowing port 80h only.
    let code = asm(16, u64::from(V86_IP), |a| {
        a.out(0x80u32, al)?;
        a.out(0x81u32, al)
    });
    let mut cpu = vm86_machine(&code, 0x200);
    set_gdt(&cpu, sel::TSS0, sys_desc(TSS0, 0x68 + 0x20, 0xb, 0));
    cpu.s.tr = descriptor_to_segment(sel::TSS0, r64(&cpu, GDT + u64::from(sel::TSS0)));
    put(&cpu, TSS0 + 0x68, &[0xff; 0x20]);
    put(&cpu, TSS0 + 0x68 + 0x10, &[0xfe]);
    run_until_halt(&mut cpu, 20);
    assert_eq!((recorded(&cpu), stack(&cpu, 0)), (u64::from(vector::GP), 0));
    assert_eq!(stack(&cpu, 1), u64::from(V86_IP) + 2, "the second OUT faults");
}

#[test]
fn vm86_interrupt_to_a_non_ring0_handler_is_gp() {
    let code = asm(16, u64::from(V86_IP), |a| a.int(0x31u32));
    let mut cpu = vm86_machine(&code, IOPL3);
    set_gdt(&cpu, sel::GATE, seg_desc(0, 0xffff_ffff, 0xb, 3, 32));
    w64(&cpu, IDT + 8 * 0x31, gate_desc(sel::GATE, KCODE, 0xe, 3, 0));
    run_until_halt(&mut cpu, 20);
    assert_eq!((recorded(&cpu), stack(&cpu, 0)), (u64::from(vector::GP), u64::from(sel::GATE)));
}

#[test]
fn task_switch_into_a_vm86_task() {
    let code = asm(32, CODE, |a| a.jmp_far(sel::TSS1, 0));
    let mut cpu = protected_mode_cpu(&code);
    let v86 = asm(16, u64::from(V86_IP), |a| {
        a.mov(ax, word_ptr(0x10))?;
        a.int3()
    });
    put(&cpu, (u64::from(V86_CS) << 4) + u64::from(V86_IP), &v86);
    w16(&cpu, (u64::from(V86_DS) << 4) + 0x10, 0x4321);
    write_task(&cpu, TSS1, u64::from(V86_IP), u64::from(V86_SP));
    w32(&cpu, TSS1 + 0x24, flags::VM | u64::from(IOPL3) | 0x2);
    // Its ring-0 stack, for leaving virtual-8086 mode.
    w32(&cpu, TSS1 + 4, STACK0);
    w32(&cpu, TSS1 + 8, u64::from(sel::DATA0));
    for (i, s) in [V86_DS, V86_CS, V86_SS, V86_DS, 0, 0].iter().enumerate() {
        w32(&cpu, TSS1 + 0x48 + 4 * i as u64, u64::from(*s));
    }
    cpu.step();
    assert!(cpu.vm86());
    assert_eq!(cpu.s.cpl(), 3);
    assert_eq!(cpu.s.segs[seg::SS].base, u64::from(V86_SS) << 4);
    run_until_halt(&mut cpu, 10);
    assert_eq!(recorded(&cpu), 3);
    assert_eq!(cpu.s.gpr[reg::RAX] & 0xffff, 0x4321);
    assert_eq!(cpu.s.tr.selector, sel::TSS1);
    // Interrupted in virtual-8086 mode: the frame has VM and the
    // real-mode selectors.
    assert_ne!(stack(&cpu, 2) & flags::VM, 0);
    assert_eq!(stack(&cpu, 1), u64::from(V86_CS));
    assert_eq!(stack(&cpu, 4), u64::from(V86_SS));
}

#[test]
fn cpuid_advertises_sep_and_syscall() {
    use super::cpuid::{cpuid, Platform};
    assert_ne!(cpuid(1, 0, Platform::default()).3 & (1 << 11), 0, "SEP");
    assert_ne!(cpuid(0x8000_0001, 0, Platform::default()).3 & (1 << 11), 0, "SYSCALL");
}

#[test]
fn random_code_with_descriptor_tables_never_panics() {
    // Random bytes in a protected-mode system with a GDT, LDT, IDT and
    // TSSs reach segment loads, gates and task switches with garbage
    // operands: they must fault or stop, never panic.
    let mut seed = 0x5eed_f00d_1234_abcdu64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let rounds = std::env::var("POPEK_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300u64);
    for _ in 0..rounds {
        // Bias towards system opcodes: far transfers, segment loads,
        // descriptor-table and task instructions.
        const SYSTEM: [&[u8]; 10] = [&[0x0f, 0x00], &[0x0f, 0x01], &[0x0f, 0x02], &[0x0f, 0x03], &[0x8e], &[0xea], &[0x9a], &[0xcf], &[0xcb], &[0xff]];
        let mut code = Vec::new();
        while code.len() < 48 {
            if next() % 3 == 0 {
                code.extend_from_slice(SYSTEM[(next() % SYSTEM.len() as u64) as usize]);
            }
            code.push(next() as u8);
        }
        let mut cpu = protected_mode_cpu(&code);
        for r in 0..8 {
            if r != crate::cpu::reg::RSP {
                cpu.s.gpr[r] = if next() & 1 == 0 { next() & 0xffff } else { next() };
            }
        }
        for _ in 0..48 {
            if let Step::Stopped(_) = cpu.step() {
                break;
            }
        }
    }
}
