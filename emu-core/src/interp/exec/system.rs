//! System instructions: control and debug registers, descriptor-table
//! registers, LLDT/LTR, MSRs, the TSC, CPUID, HLT, CLI/STI, SWAPGS,
//! INVLPG and the cache-control no-ops.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{cr0, efer, flags, reg, seg, Segment};
use crate::mmu::cr4;

use super::super::cpuid::{self, Platform};
use super::super::fault::{Fault, R};
use super::super::segment::{descriptor_to_segment, sel_code};
use super::super::Interpreter;
use super::xsave::CR4_OSXSAVE;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Lgdt, M::Lidt], load_dtr);
    t.set(&[M::Sgdt, M::Sidt], store_dtr);
    t.set(&[M::Lldt, M::Ltr], load_ldt_tr);
    t.set(&[M::Sldt, M::Str], store_ldt_tr);
    t.set(&[M::Lmsw], lmsw);
    t.set(&[M::Smsw], smsw);
    t.set(&[M::Clts], clts);
    t.set(&[M::Invlpg], invlpg);
    t.set(&[M::Wbinvd, M::Invd, M::Wbnoinvd], privileged_nop);
    t.set(&[M::Rdmsr], super::msr::rdmsr);
    t.set(&[M::Wrmsr], super::msr::wrmsr);
    t.set(&[M::Rdtsc, M::Rdtscp], rdtsc);
    t.set(&[M::Cpuid], cpuid_insn);
    t.set(&[M::Hlt], hlt);
    t.set(&[M::Cli, M::Sti], cli_sti);
    t.set(&[M::Swapgs], swapgs);
}

impl Interpreter {
    /// #GP(0) unless at CPL 0 (and not in virtual-8086 mode).
    pub(crate) fn require_cpl0(&self) -> R<()> {
        if self.protected_mode() && (self.vm86() || self.s.cpl() != 0) {
            return Err(Fault::gp0());
        }
        Ok(())
    }

    /// The TSC: 1 GHz from the machine's monotonic clock (the one its
    /// timers count), plus the guest's offset.
    pub(crate) fn tsc(&self) -> u64 {
        crate::interp::bump(&self.counters.clock_reads);
        self.clock.monotonic_ns().wrapping_add(self.s.msrs.tsc_offset)
    }

    /// IA32_TSC_DEADLINE as the guest reads it: the armed deadline in TSC
    /// units, 0 once it fired or while disarmed.
    pub(crate) fn tsc_deadline(&self) -> u64 {
        crate::interp::bump(&self.counters.clock_reads);
        let armed = self.local_apic.as_ref().and_then(|apic| apic.tsc_deadline_ns());
        armed.map_or(0, |ns| ns.wrapping_add(self.s.msrs.tsc_offset))
    }

    /// Arms the local APIC's TSC-deadline timer at TSC value `v` (0
    /// disarms); a deadline already past fires at once.
    pub(crate) fn set_tsc_deadline(&mut self, v: u64) {
        crate::interp::bump(&self.counters.clock_reads);
        let Some(apic) = self.local_apic.as_ref() else { return };
        if v == 0 {
            apic.set_tsc_deadline_ns(None);
            return;
        }
        let now_ns = self.clock.monotonic_ns();
        let now_tsc = now_ns.wrapping_add(self.s.msrs.tsc_offset);
        let ahead = v.wrapping_sub(now_tsc);
        // More than half the TSC's range ahead is a deadline in the past.
        let ns = if ahead < 1 << 63 { now_ns.saturating_add(ahead) } else { now_ns };
        apic.set_tsc_deadline_ns(Some(ns));
    }

    /// Writes CR0 with its consistency checks; the TLB follows.
    pub(crate) fn write_cr0(&mut self, v: u64) -> R<()> {
        let v = (v & 0xffff_ffff) | cr0::ET;
        if v & cr0::PG != 0 && v & cr0::PE == 0 {
            return Err(Fault::gp0());
        }
        // NW without CD is invalid.
        if v & (1 << 29) != 0 && v & (1 << 30) == 0 {
            return Err(Fault::gp0());
        }
        let enabling_paging = v & cr0::PG != 0 && self.s.cr0 & cr0::PG == 0;
        if enabling_paging && self.s.efer & efer::LME != 0 {
            if self.s.cr4 & cr4::PAE == 0 {
                return Err(Fault::gp0());
            }
            self.s.efer |= efer::LMA;
        }
        if v & cr0::PG == 0 && self.s.cr0 & cr0::PG != 0 {
            if self.in_64bit_mode() {
                return Err(Fault::gp0());
            }
            self.s.efer &= !efer::LMA;
        }
        if (v ^ self.s.cr0) & (cr0::PG | cr0::PE | 1 << 16) != 0 {
            self.tlb.flush(false);
        }
        self.s.cr0 = v;
        Ok(())
    }
}

/// The CR4 bits that may be set; OSXSAVE because CPUID advertises XSAVE.
const CR4_KNOWN: u64 = 0x1 | 0x2 | 0x4 | 0x8 | cr4::PSE | cr4::PAE | 0x40 | cr4::PGE | 0x100 | 0x200 | 0x400 | 0x800 | 0x1_0000 | CR4_OSXSAVE | cr4::SMEP | cr4::SMAP;

pub(super) fn mov_cr_dr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.require_cpl0()?;
    let (dst, src) = (ins.op0_register(), ins.op1_register());
    let long = cpu.in_64bit_mode();
    let wide_mask = if long { u64::MAX } else { 0xffff_ffff };
    if dst.is_cr() {
        let v = cpu.reg(src) & wide_mask;
        match dst {
            Register::CR0 => cpu.write_cr0(v)?,
            Register::CR2 => cpu.s.cr2 = v,
            Register::CR3 => {
                cpu.s.cr3 = v;
                cpu.tlb.flush(cpu.s.cr4 & cr4::PGE != 0);
            }
            Register::CR4 => {
                if v & !CR4_KNOWN != 0 || (cpu.s.long_mode() && v & cr4::PAE == 0) {
                    return Err(Fault::gp0());
                }
                if (v ^ cpu.s.cr4) & (cr4::PSE | cr4::PAE | cr4::PGE | cr4::SMEP | cr4::SMAP) != 0 {
                    cpu.tlb.flush(false);
                }
                cpu.s.cr4 = v;
            }
            Register::CR8 => {
                if v > 15 {
                    return Err(Fault::gp0());
                }
                cpu.s.cr8 = v;
                crate::interp::bump(&cpu.counters.clock_reads);
                // CR8 is the local APIC's TPR[7:4].
                if let Some(apic) = cpu.local_apic.as_ref() {
                    apic.set_tpr_cr8(v as u8);
                }
            }
            _ => return Err(Fault::ud()),
        }
        return Ok(());
    }
    if src.is_cr() {
        let v = match src {
            Register::CR0 => cpu.s.cr0,
            Register::CR2 => cpu.s.cr2,
            Register::CR3 => cpu.s.cr3,
            Register::CR4 => cpu.s.cr4,
            Register::CR8 => {
                crate::interp::bump(&cpu.counters.clock_reads);
                cpu.local_apic.as_ref().map_or(cpu.s.cr8, |apic| u64::from(apic.tpr_cr8()))
            }
            _ => return Err(Fault::ud()),
        };
        cpu.set_reg(dst, v & wide_mask);
        return Ok(());
    }
    // Debug registers: DR4/DR5 alias DR6/DR7 unless CR4.DE.
    let index = |r: Register| -> R<usize> {
        let n = (r as usize).wrapping_sub(Register::DR0 as usize);
        match n {
            0..=3 | 6 | 7 => Ok(n),
            4 | 5 if cpu.s.cr4 & 0x8 == 0 => Ok(n + 2),
            _ => Err(Fault::ud()),
        }
    };
    if dst.is_dr() {
        let n = index(dst)?;
        let v = cpu.reg(src) & wide_mask;
        cpu.s.dr[n] = match n {
            6 => v | 0xffff_0ff0,
            7 => (v | 0x400) & !0x1000,
            _ => v,
        };
    } else {
        let n = index(src)?;
        let v = cpu.s.dr[n];
        cpu.set_reg(dst, v & wide_mask);
    }
    Ok(())
}

fn load_dtr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.require_cpl0()?;
    let (sreg, off) = cpu.mem_operand(ins);
    let limit = cpu.read_mem(sreg, off, 2)? as u16;
    let base = if cpu.in_64bit_mode() {
        cpu.read_mem(sreg, off + 2, 8)?
    } else {
        let b = cpu.read_mem(sreg, off + 2, 4)?;
        // A 16-bit operand size loads 24 bits of base.
        if cpu.operand_size_of_dtr(ins) == 2 { b & 0x00ff_ffff } else { b & 0xffff_ffff }
    };
    let t = crate::cpu::DescriptorTable { base, limit };
    if ins.mnemonic() == M::Lgdt {
        cpu.s.gdtr = t;
    } else {
        cpu.s.idtr = t;
    }
    Ok(())
}

impl Interpreter {
    fn operand_size_of_dtr(&self, ins: &Instruction) -> usize {
        match ins.code().op_code().operand_size() {
            16 => 2,
            32 => 4,
            _ => {
                if self.bitness() == 16 {
                    2
                } else {
                    4
                }
            }
        }
    }
}

fn store_dtr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let t = if ins.mnemonic() == M::Sgdt { cpu.s.gdtr } else { cpu.s.idtr };
    let (sreg, off) = cpu.mem_operand(ins);
    cpu.write_mem(sreg, off, 2, u64::from(t.limit))?;
    if cpu.in_64bit_mode() {
        cpu.write_mem(sreg, off + 2, 8, t.base)
    } else {
        cpu.write_mem(sreg, off + 2, 4, t.base & 0xffff_ffff)
    }
}

fn load_ldt_tr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    if !cpu.protected_mode() || cpu.vm86() {
        return Err(Fault::ud());
    }
    cpu.require_cpl0()?;
    let selector = cpu.read_op(ins, 0)? as u16;
    let is_tr = ins.mnemonic() == M::Ltr;
    if selector & 0xfffc == 0 {
        if is_tr {
            return Err(Fault::gp0());
        }
        cpu.s.ldtr = Segment { selector, unusable: 1, ..Segment::default() };
        return Ok(());
    }
    if selector & 4 != 0 {
        return Err(Fault::gp(sel_code(selector)));
    }
    let (addr, raw) = cpu.read_descriptor(selector)?;
    let mut d = descriptor_to_segment(selector, raw);
    let ok = d.s == 0
        && if is_tr {
            if cpu.s.long_mode() { d.type_ == 0x9 } else { d.type_ == 0x9 || d.type_ == 0x1 }
        } else {
            d.type_ == 0x2
        };
    if !ok {
        return Err(Fault::gp(sel_code(selector)));
    }
    if d.present == 0 {
        return Err(Fault::np(sel_code(selector)));
    }
    if cpu.s.long_mode() {
        let hi = cpu.read_descriptor_high(addr)?;
        d.base |= (hi & 0xffff_ffff) << 32;
    }
    if is_tr {
        // Mark the TSS busy.
        cpu.write_linear_implicit(addr + 5, 1, ((raw >> 40) & 0xff) | 0x2)?;
        d.type_ |= 0x2;
        cpu.s.tr = d;
    } else {
        cpu.s.ldtr = d;
    }
    Ok(())
}

fn store_ldt_tr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    if !cpu.protected_mode() || cpu.vm86() {
        return Err(Fault::ud());
    }
    let sel = if ins.mnemonic() == M::Sldt { cpu.s.ldtr.selector } else { cpu.s.tr.selector };
    cpu.write_op(ins, 0, u64::from(sel))
}

fn lmsw(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.require_cpl0()?;
    let v = cpu.read_op(ins, 0)? & 0xf;
    // LMSW can set PE but never clear it.
    let new = (cpu.s.cr0 & !0xe) | v | (cpu.s.cr0 & cr0::PE);
    cpu.write_cr0(new)
}

fn smsw(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let v = cpu.s.cr0;
    let v = if ins.op0_kind() == OpKind::Memory { v & 0xffff } else { v };
    cpu.write_op(ins, 0, v)
}

fn clts(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    cpu.require_cpl0()?;
    cpu.s.cr0 &= !(1 << 3);
    Ok(())
}

fn invlpg(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.require_cpl0()?;
    let (sreg, off) = cpu.mem_operand(ins);
    let lin = if cpu.in_64bit_mode() {
        let base = if sreg == seg::FS || sreg == seg::GS { cpu.s.segs[sreg].base } else { 0 };
        base.wrapping_add(off)
    } else {
        cpu.s.segs[sreg].base.wrapping_add(off) & 0xffff_ffff
    };
    cpu.tlb.flush_page(lin);
    Ok(())
}

fn privileged_nop(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    cpu.require_cpl0()
}

fn rdtsc(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    if cpu.s.cr4 & 0x4 != 0 && cpu.s.cpl() != 0 && cpu.protected_mode() {
        return Err(Fault::gp0());
    }
    let t = cpu.tsc();
    cpu.set_reg(Register::EAX, t & 0xffff_ffff);
    cpu.set_reg(Register::EDX, t >> 32);
    if ins.mnemonic() == M::Rdtscp {
        let aux = cpu.s.msrs.tsc_aux;
        cpu.set_reg(Register::ECX, aux & 0xffff_ffff);
    }
    Ok(())
}

fn cpuid_insn(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    let platform = Platform {
        apic: cpu.s.apic_base & (1 << 11) != 0 && cpu.has_apic,
        apic_id: 0,
        osxsave: cpu.s.cr4 & CR4_OSXSAVE != 0,
        tsc_deadline: cpu.local_apic.is_some(),
    };
    let (a, b, c, d) = cpuid::cpuid(cpu.s.gpr[reg::RAX] as u32, cpu.s.gpr[reg::RCX] as u32, platform);
    cpu.set_reg(Register::EAX, u64::from(a));
    cpu.set_reg(Register::EBX, u64::from(b));
    cpu.set_reg(Register::ECX, u64::from(c));
    cpu.set_reg(Register::EDX, u64::from(d));
    Ok(())
}

fn hlt(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    cpu.require_cpl0()?;
    cpu.s.halted = true;
    Ok(())
}

fn cli_sti(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    if cpu.protected_mode() {
        let iopl = ((cpu.s.rflags & flags::IOPL) >> 12) as u8;
        let cpl = if cpu.vm86() { 3 } else { cpu.s.cpl() };
        if cpl > iopl {
            return Err(Fault::gp0());
        }
    }
    if ins.mnemonic() == M::Cli {
        cpu.s.rflags &= !flags::IF;
    } else {
        if cpu.s.rflags & flags::IF == 0 {
            cpu.s.interrupt_shadow = true;
        }
        cpu.s.rflags |= flags::IF;
    }
    Ok(())
}

fn swapgs(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    if !cpu.in_64bit_mode() {
        return Err(Fault::ud());
    }
    cpu.require_cpl0()?;
    std::mem::swap(&mut cpu.s.segs[seg::GS].base, &mut cpu.s.msrs.kernel_gs_base);
    Ok(())
}
