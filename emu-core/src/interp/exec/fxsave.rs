//! FXSAVE/FXRSTOR (SDM Vol. 2, and Vol. 1 10.5.1), LDMXCSR/STMXCSR.
//!
//! `CpuState::fx` keeps the x87 registers in physical order (R0-R7, which
//! the MMX registers alias); the FXSAVE image holds them in stack order
//! (ST(0) first), so saving and restoring rotate by TOP.

use iced_x86::{Instruction, Mnemonic as M};

use crate::cpu::FxState;

use super::super::fault::{Fault, R};
use super::super::Interpreter;
use super::x87::CR0_EM;
use super::x87::CR0_TS;
use super::Table;

/// MXCSR bits that may be set (DAZ included).
pub(super) const MXCSR_MASK: u32 = 0xffff;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Fxsave, M::Fxsave64], fxsave);
    t.set(&[M::Fxrstor, M::Fxrstor64], fxrstor);
    t.set(&[M::Ldmxcsr], ldmxcsr);
    t.set(&[M::Stmxcsr], stmxcsr);
}

impl Interpreter {
    /// The FXSAVE image of the current state (64-bit layout: FIP and FDP
    /// as 64-bit offsets). Bytes 464-511 are left zero.
    pub(crate) fn fx_image(&self) -> [u8; 512] {
        let mut fx = self.s.fx;
        let top = self.fpu_top();
        for i in 0..8 {
            fx.st[i] = self.s.fx.st[(top + i) & 7];
        }
        fx.mxcsr_mask = MXCSR_MASK;
        let mut b = fx.to_bytes();
        b[464..].fill(0);
        b
    }

    /// Loads an FXSAVE image (64-bit layout) into the state.
    pub(crate) fn load_fx_image(&mut self, b: &[u8; 512]) {
        let img = FxState::from_bytes(b);
        let top = usize::from((img.fsw >> 11) & 7);
        let mut fx = img;
        for i in 0..8 {
            fx.st[(top + i) & 7] = img.st[i];
        }
        fx.mxcsr_mask = self.s.fx.mxcsr_mask;
        fx._reserved1 = self.s.fx._reserved1;
        self.s.fx = fx;
    }

    /// The check of FXSAVE and FXRSTOR: #NM when CR0.TS or CR0.EM is set.
    fn fx_enter(&self) -> R<()> {
        if self.s.cr0 & (CR0_EM | CR0_TS) != 0 {
            return Err(Fault::nm());
        }
        Ok(())
    }

    /// The checks of instructions that touch MXCSR or XMM: #UD when
    /// CR0.EM=1 or CR4.OSFXSR=0, #NM when CR0.TS=1.
    pub(super) fn sse_enter(&self) -> R<()> {
        const OSFXSR: u64 = 1 << 9;
        if self.s.cr0 & CR0_EM != 0 || self.s.cr4 & OSFXSR == 0 {
            return Err(Fault::ud());
        }
        if self.s.cr0 & CR0_TS != 0 {
            return Err(Fault::nm());
        }
        Ok(())
    }
}

fn fxsave(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.fx_enter()?;
    let (sreg, off) = cpu.mem_operand(ins);
    if cpu.linear(sreg, off, 512, crate::mmu::Access::Write)? & 15 != 0 {
        return Err(Fault::gp0());
    }
    let mut b = cpu.fx_image();
    let long = cpu.in_64bit_mode();
    if ins.mnemonic() != M::Fxsave64 {
        // 32-bit layout: FIP/FCS and FDP/FDS (selectors stored as zero).
        b[12..16].fill(0);
        b[20..24].fill(0);
    }
    // Outside 64-bit mode only XMM0-7 are saved.
    let end = if long { 416 } else { 288 };
    // Bytes 416-511 are reserved or available to software: untouched.
    cpu.write_bytes(sreg, off, &b[..end])
}

fn fxrstor(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.fx_enter()?;
    let (sreg, off) = cpu.mem_operand(ins);
    if cpu.linear(sreg, off, 512, crate::mmu::Access::Read)? & 15 != 0 {
        return Err(Fault::gp0());
    }
    let long = cpu.in_64bit_mode();
    let end = if long { 416 } else { 288 };
    let mut b = cpu.fx_image();
    cpu.read_bytes(sreg, off, &mut b[..end])?;
    let mxcsr = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(Fault::gp0());
    }
    if ins.mnemonic() != M::Fxrstor64 {
        b[12..16].fill(0);
        b[20..24].fill(0);
    }
    // FCW's reserved bits: bit 6 reads as 1, bits 7 and 13-15 as 0.
    let fcw = (u16::from_le_bytes([b[0], b[1]]) & 0x1f7f) | 0x40;
    b[0..2].copy_from_slice(&fcw.to_le_bytes());
    cpu.load_fx_image(&b);
    cpu.fpu_update_es();
    Ok(())
}

fn ldmxcsr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let v = cpu.read_op(ins, 0)? as u32;
    if v & !MXCSR_MASK != 0 {
        return Err(Fault::gp0());
    }
    cpu.s.fx.mxcsr = v;
    Ok(())
}

fn stmxcsr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let v = u64::from(cpu.s.fx.mxcsr);
    cpu.write_op(ins, 0, v)
}
