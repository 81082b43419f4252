//! The fast system calls: SYSCALL/SYSRET (long mode, from the STAR, LSTAR,
//! CSTAR and SFMASK MSRs) and SYSENTER/SYSEXIT (the IA32_SYSENTER_* MSRs).
//! None of them reads a descriptor: each loads CS and SS with the fixed
//! flat caches the SDM lists.
//!
//! SYSCALL follows Intel in being #UD outside long mode; from
//! compatibility mode it enters at CSTAR as AMD specifies (Intel parts
//! raise #UD there), since the 32-bit entry of a 64-bit kernel expects it.
//! SYSRET is only valid in 64-bit mode (Intel and AMD agree).

use iced_x86::{Instruction, Mnemonic as M};

use crate::cpu::{efer, flags, reg, seg, Segment};

use super::super::access::is_canonical;
use super::super::fault::{Fault, R};
use super::super::Interpreter;
use super::Table;

/// R11, which SYSCALL and SYSRET use for RFLAGS.
const R11: usize = reg::R8 + 3;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Syscall], syscall);
    t.set(&[M::Sysret, M::Sysretq], sysret);
    t.set(&[M::Sysenter], sysenter);
    t.set(&[M::Sysexit, M::Sysexitq], sysexit);
}

/// The flat code segment these instructions load: base 0, limit 4 GiB
/// (FFFFFh pages), execute/read accessed, present, 64-bit or 32-bit.
fn flat_code(selector: u16, dpl: u8, long: bool) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: 0xb,
        s: 1,
        dpl,
        present: 1,
        avl: 0,
        l: u8::from(long),
        db: u8::from(!long),
        g: 1,
        unusable: 0,
    }
}

/// The flat stack segment: read/write accessed, 32-bit, 4 GiB.
fn flat_stack(selector: u16, dpl: u8) -> Segment {
    Segment { type_: 0x3, l: 0, db: 1, ..flat_code(selector, dpl, false) }
}

fn syscall(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    if !cpu.s.long_mode() || cpu.s.efer & efer::SCE == 0 {
        return Err(Fault::ud());
    }
    let target = if cpu.in_64bit_mode() { cpu.s.msrs.lstar } else { cpu.s.msrs.cstar };
    let rflags = cpu.s.flags();
    cpu.s.gpr[reg::RCX] = cpu.next_rip;
    cpu.s.gpr[R11] = rflags;
    let star_cs = (cpu.s.msrs.star >> 32) as u16;
    cpu.s.segs[seg::CS] = flat_code(star_cs & 0xfffc, 0, true);
    cpu.s.segs[seg::SS] = flat_stack(star_cs.wrapping_add(8), 0);
    cpu.s.set_flags(rflags & !cpu.s.msrs.sfmask & !flags::RF);
    cpu.next_rip = target;
    Ok(())
}

fn sysret(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    if !cpu.in_64bit_mode() || cpu.s.efer & efer::SCE == 0 {
        return Err(Fault::ud());
    }
    if cpu.s.cpl() != 0 {
        return Err(Fault::gp0());
    }
    let to_64 = ins.mnemonic() == M::Sysretq;
    let rcx = cpu.s.gpr[reg::RCX];
    // The #GP for a non-canonical RCX is raised at CPL 0, before anything
    // changes (SDM SYSRET).
    if to_64 && !is_canonical(rcx) {
        return Err(Fault::gp0());
    }
    let star_base = (cpu.s.msrs.star >> 48) as u16;
    let cs = if to_64 { star_base.wrapping_add(16) } else { star_base } | 3;
    let ss = star_base.wrapping_add(8) | 3;
    cpu.s.segs[seg::CS] = flat_code(cs, 3, to_64);
    cpu.s.segs[seg::SS] = flat_stack(ss, 3);
    // RF, VM and the reserved bits are cleared; bit 1 is set.
    let r11 = cpu.s.gpr[R11];
    cpu.s.set_flags((r11 & 0x3c_7fd7) | flags::FIXED);
    cpu.next_rip = if to_64 { rcx } else { rcx & 0xffff_ffff };
    Ok(())
}

fn sysenter(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    let cs = cpu.s.msrs.sysenter_cs as u16;
    if !cpu.protected_mode() || cs & 0xfffc == 0 {
        return Err(Fault::gp0());
    }
    let long = cpu.s.long_mode();
    let f = cpu.s.flags() & !(flags::VM | flags::IF | flags::RF);
    cpu.s.set_flags(f);
    cpu.s.segs[seg::CS] = flat_code(cs & 0xfffc, 0, long);
    cpu.s.segs[seg::SS] = flat_stack((cs & 0xfffc).wrapping_add(8), 0);
    let (esp, eip) = (cpu.s.msrs.sysenter_esp, cpu.s.msrs.sysenter_eip);
    if long {
        cpu.s.gpr[reg::RSP] = esp;
        cpu.next_rip = eip;
    } else {
        cpu.s.gpr[reg::RSP] = esp & 0xffff_ffff;
        cpu.next_rip = eip & 0xffff_ffff;
    }
    Ok(())
}

fn sysexit(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let base = cpu.s.msrs.sysenter_cs as u16;
    if !cpu.protected_mode() || base & 0xfffc == 0 || cpu.s.cpl() != 0 {
        return Err(Fault::gp0());
    }
    let to_64 = ins.mnemonic() == M::Sysexitq;
    let (rcx, rdx) = (cpu.s.gpr[reg::RCX], cpu.s.gpr[reg::RDX]);
    if to_64 && (!is_canonical(rcx) || !is_canonical(rdx)) {
        return Err(Fault::gp0());
    }
    let cs = base.wrapping_add(if to_64 { 32 } else { 16 }) | 3;
    cpu.s.segs[seg::CS] = flat_code(cs, 3, to_64);
    cpu.s.segs[seg::SS] = flat_stack(cs.wrapping_add(8), 3);
    if to_64 {
        cpu.s.gpr[reg::RSP] = rcx;
        cpu.next_rip = rdx;
    } else {
        cpu.s.gpr[reg::RSP] = rcx & 0xffff_ffff;
        cpu.next_rip = rdx & 0xffff_ffff;
    }
    Ok(())
}
