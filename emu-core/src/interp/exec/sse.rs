//! SSE/SSE2/SSE3 data movement, logic, shuffles and masks, and the
//! register and operand helpers the SIMD families share (XMM and MMX).
//! Arithmetic is in `sse_float`, the integer instructions in `sse_int`.
//!
//! Checks (SDM Vol. 3A, Table 2-2 and the instruction pages): SSE forms
//! raise #UD when CR0.EM=1 or CR4.OSFXSR=0 and #NM when CR0.TS=1; MMX
//! forms raise #UD when CR0.EM=1, #NM when CR0.TS=1 and #MF when an x87
//! exception is pending, and switch the x87 unit to MMX use (TOP=0, all
//! registers valid). Legacy-encoded 16-byte memory operands must be
//! 16-byte aligned (#GP(0)) except for the explicitly unaligned forms.

use std::sync::OnceLock;

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use super::super::fault::{Fault, R};
use super::super::operand::mask;
use super::super::Interpreter;
use super::x87::{CR0_EM, CR0_TS};
use super::{Handler, Table};

/// The string MOVSD/CMPSD handlers, which share their mnemonics with the
/// SSE2 scalar forms.
static STRING_MOVSD: OnceLock<Handler> = OnceLock::new();
static STRING_CMPSD: OnceLock<Handler> = OnceLock::new();

pub(super) fn register(t: &mut Table) {
    if let Some(h) = t.0[M::Movsd as usize] {
        let _ = STRING_MOVSD.set(h);
    }
    if let Some(h) = t.0[M::Cmpsd as usize] {
        let _ = STRING_CMPSD.set(h);
    }
    t.set(&[M::Movaps, M::Movups, M::Movapd, M::Movupd, M::Movdqa, M::Movdqu, M::Lddqu, M::Movntps, M::Movntpd, M::Movntdq], mov128);
    t.set(&[M::Movss], movss);
    t.set(&[M::Movsd], movsd);
    t.set(&[M::Movlps, M::Movlpd, M::Movhps, M::Movhpd, M::Movlhps, M::Movhlps], movlh);
    t.set(&[M::Movd, M::Movq], movd_q);
    t.set(&[M::Movq2dq, M::Movdq2q], movq2dq);
    t.set(&[M::Movnti], movnti);
    t.set(&[M::Movntq], movntq);
    t.set(&[M::Maskmovq, M::Maskmovdqu], maskmov);
    t.set(&[M::Movmskps, M::Movmskpd, M::Pmovmskb], movmsk);
    t.set(&[M::Movddup, M::Movshdup, M::Movsldup], movdup);
    t.set(&[M::Andps, M::Andpd, M::Andnps, M::Andnpd, M::Orps, M::Orpd, M::Xorps, M::Xorpd], logic);
    t.set(&[M::Shufps, M::Shufpd], shuf);
    t.set(&[M::Unpcklps, M::Unpckhps, M::Unpcklpd, M::Unpckhpd], unpck);
    t.set(&[M::Emms], emms);
}

/// Whether `ins` is the string form of MOVSD/CMPSD.
fn is_string(ins: &Instruction) -> bool {
    !(0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Register && ins.op_register(i).is_xmm())
}

/// Runs the string CMPSD when `ins` is one; `None` for the SSE2 form.
pub(super) fn string_cmpsd(cpu: &mut Interpreter, ins: &Instruction) -> Option<R<()>> {
    if is_string(ins) {
        return Some(match STRING_CMPSD.get() {
            Some(h) => h(cpu, ins),
            None => Err(Fault::unimplemented("CMPSD (string)")),
        });
    }
    None
}

impl Interpreter {
    /// MMx: the low 64 bits of physical x87 register x.
    pub(super) fn mm(&self, i: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.s.fx.st[i][..8]);
        u64::from_le_bytes(b)
    }

    /// Writes MMx; the exponent field reads as all ones.
    pub(super) fn set_mm(&mut self, i: usize, v: u64) {
        self.s.fx.st[i][..8].copy_from_slice(&v.to_le_bytes());
        self.s.fx.st[i][8..10].copy_from_slice(&[0xff, 0xff]);
    }

    /// The x87-to-MMX transition of every MMX instruction.
    fn mmx_state(&mut self) {
        self.set_fpu_top(0);
        self.s.fx.ftw = 0xff;
    }

    /// Checks for an instruction with MMX operands.
    pub(super) fn mmx_enter(&mut self) -> R<()> {
        if self.s.cr0 & CR0_EM != 0 {
            return Err(Fault::ud());
        }
        if self.s.cr0 & CR0_TS != 0 {
            return Err(Fault::nm());
        }
        self.fpu_check_pending()?;
        self.mmx_state();
        Ok(())
    }

    /// The checks for a SIMD instruction: MMX ones when it has only MMX
    /// register operands, SSE ones otherwise (plus the MMX transition
    /// when it also names an MMX register). Returns whether the
    /// instruction works on MMX registers (64-bit vectors).
    pub(super) fn simd_enter(&mut self, ins: &Instruction) -> R<bool> {
        let regs = || (0..ins.op_count()).filter(|&i| ins.op_kind(i) == OpKind::Register).map(|i| ins.op_register(i));
        let has_mm = regs().any(|r| r.is_mm());
        let has_xmm = regs().any(|r| r.is_xmm());
        if has_mm && !has_xmm {
            self.mmx_enter()?;
            return Ok(true);
        }
        self.sse_enter()?;
        if has_mm {
            self.fpu_check_pending()?;
            self.mmx_state();
        }
        Ok(false)
    }

    /// Reads a register of any SIMD class, or a GPR, as a vector.
    pub(super) fn vreg(&self, r: Register) -> u128 {
        if r.is_xmm() {
            self.s.fx.xmm[r.number()]
        } else if r.is_mm() {
            u128::from(self.mm(r.number()))
        } else {
            u128::from(self.reg(r))
        }
    }

    /// Writes a SIMD register (XMM: all 128 bits; MMX: 64).
    pub(super) fn set_vreg(&mut self, r: Register, v: u128) {
        if r.is_xmm() {
            self.s.fx.xmm[r.number()] = v;
        } else if r.is_mm() {
            self.set_mm(r.number(), v as u64);
        } else {
            self.set_reg(r, v as u64);
        }
    }

    /// The offset of the memory operand, checked for 16-byte alignment
    /// when `size` is 16 and the form requires it.
    fn simd_mem(&mut self, ins: &Instruction, size: usize, write: bool) -> R<(usize, u64)> {
        let (sreg, off) = self.mem_operand(ins);
        // The SSE4.2 string compares take unaligned operands too.
        let unaligned = matches!(
            ins.mnemonic(),
            M::Movups | M::Movupd | M::Movdqu | M::Lddqu | M::Pcmpestri | M::Pcmpestri64 | M::Pcmpestrm | M::Pcmpestrm64 | M::Pcmpistri | M::Pcmpistrm
        );
        if size == 16 && !unaligned {
            let access = if write { crate::mmu::Access::Write } else { crate::mmu::Access::Read };
            if self.linear(sreg, off, 16, access)? & 15 != 0 {
                return Err(Fault::gp0());
            }
        }
        Ok((sreg, off))
    }

    /// Reads `size` bytes (4, 8 or 16) of memory at the operand.
    pub(super) fn read_vmem(&mut self, ins: &Instruction, size: usize) -> R<u128> {
        let (sreg, off) = self.simd_mem(ins, size, false)?;
        Ok(match size {
            16 => {
                let lo = self.read_mem(sreg, off, 8)?;
                let hi = self.read_mem(sreg, off.wrapping_add(8), 8)?;
                u128::from(lo) | u128::from(hi) << 64
            }
            n => u128::from(self.read_mem(sreg, off, n)?),
        })
    }

    /// Writes `size` bytes (4, 8 or 16) of memory at the operand.
    pub(super) fn write_vmem(&mut self, ins: &Instruction, size: usize, v: u128) -> R<()> {
        let (sreg, off) = self.simd_mem(ins, size, true)?;
        if size == 16 {
            self.write_bytes(sreg, off, &v.to_le_bytes())
        } else {
            self.write_mem(sreg, off, size, v as u64)
        }
    }

    /// Reads operand `n` as a vector: a register, or `size` bytes of
    /// memory.
    pub(super) fn read_vop(&mut self, ins: &Instruction, n: u32, size: usize) -> R<u128> {
        match ins.op_kind(n) {
            OpKind::Register => Ok(self.vreg(ins.op_register(n))),
            OpKind::Memory => self.read_vmem(ins, size),
            _ => Ok(u128::from(self.read_op(ins, n)?)),
        }
    }
}

/// The width in bytes of a vector held in register `r` (8 for MMX).
pub(super) fn width(r: Register) -> usize {
    if r.is_mm() {
        8
    } else {
        16
    }
}

/// Keeps the low `w` bytes.
pub(super) fn trunc(v: u128, w: usize) -> u128 {
    if w >= 16 {
        v
    } else {
        v & ((1u128 << (8 * w)) - 1)
    }
}

fn mov128(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    if ins.op0_kind() == OpKind::Memory {
        let v = cpu.vreg(ins.op1_register());
        cpu.write_vmem(ins, 16, v)
    } else {
        let v = cpu.read_vop(ins, 1, 16)?;
        cpu.set_vreg(ins.op0_register(), v);
        Ok(())
    }
}

/// MOVSS/MOVSD (SSE): register to register merges the low element;
/// loads zero the rest; stores write the low element.
fn mov_scalar(cpu: &mut Interpreter, ins: &Instruction, size: usize) -> R<()> {
    cpu.sse_enter()?;
    let lo = (1u128 << (8 * size)) - 1;
    if ins.op0_kind() == OpKind::Memory {
        let v = cpu.vreg(ins.op1_register()) & lo;
        return cpu.write_vmem(ins, size, v);
    }
    let d = ins.op0_register();
    let v = if ins.op1_kind() == OpKind::Memory {
        cpu.read_vmem(ins, size)?
    } else {
        (cpu.vreg(d) & !lo) | (cpu.vreg(ins.op1_register()) & lo)
    };
    cpu.set_vreg(d, v);
    Ok(())
}

fn movss(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    mov_scalar(cpu, ins, 4)
}

fn movsd(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    if is_string(ins) {
        return match STRING_MOVSD.get() {
            Some(h) => h(cpu, ins),
            None => Err(Fault::unimplemented("MOVSD (string)")),
        };
    }
    mov_scalar(cpu, ins, 8)
}

const LO64: u128 = u64::MAX as u128;

fn movlh(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let high = matches!(ins.mnemonic(), M::Movhps | M::Movhpd);
    if ins.op0_kind() == OpKind::Memory {
        let v = cpu.vreg(ins.op1_register());
        let v = if high { v >> 64 } else { v & LO64 };
        return cpu.write_vmem(ins, 8, v);
    }
    let d = ins.op0_register();
    let cur = cpu.vreg(d);
    let v = match ins.mnemonic() {
        M::Movlhps => (cur & LO64) | cpu.vreg(ins.op1_register()) << 64,
        M::Movhlps => (cur & !LO64) | cpu.vreg(ins.op1_register()) >> 64,
        _ => {
            let m = cpu.read_vmem(ins, 8)?;
            if high {
                (cur & LO64) | m << 64
            } else {
                (cur & !LO64) | m
            }
        }
    };
    cpu.set_vreg(d, v);
    Ok(())
}

fn movd_q(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.simd_enter(ins)?;
    let size = if ins.mnemonic() == M::Movd { 4 } else { 8 };
    let src = match ins.op1_kind() {
        OpKind::Register => {
            let r = ins.op1_register();
            let v = cpu.vreg(r);
            if r.is_gpr() {
                v & u128::from(mask(r.size()))
            } else {
                trunc(v, size)
            }
        }
        _ => cpu.read_vmem(ins, size)?,
    };
    match ins.op0_kind() {
        OpKind::Memory => cpu.write_vmem(ins, size, src),
        _ => {
            // XMM and MMX destinations are zero-extended; GPR writes follow
            // the usual rules.
            cpu.set_vreg(ins.op0_register(), src);
            Ok(())
        }
    }
}

fn movq2dq(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.simd_enter(ins)?;
    let v = cpu.vreg(ins.op1_register()) & LO64;
    cpu.set_vreg(ins.op0_register(), v);
    Ok(())
}

fn movnti(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let v = cpu.read_op(ins, 1)?;
    cpu.write_op(ins, 0, v)
}

fn movntq(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.mmx_enter()?;
    let v = cpu.vreg(ins.op1_register());
    cpu.write_vmem(ins, 8, v)
}

fn maskmov(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let mmx = cpu.simd_enter(ins)?;
    let w = if mmx { 8 } else { 16 };
    let (data, sel) = (cpu.vreg(ins.op1_register()), cpu.vreg(ins.op2_register()));
    let asize = cpu.address_size(ins);
    let base = cpu.reg(ins.memory_base()) & mask(asize);
    let sreg = super::super::operand::seg_index(ins.memory_segment());
    for i in 0..w {
        if (sel >> (8 * i + 7)) & 1 != 0 {
            let off = base.wrapping_add(i as u64) & mask(asize);
            cpu.write_mem(sreg, off, 1, (data >> (8 * i)) as u64 & 0xff)?;
        }
    }
    Ok(())
}

fn movmsk(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.simd_enter(ins)?;
    let src = ins.op1_register();
    let v = cpu.vreg(src);
    let (lane, n) = match ins.mnemonic() {
        M::Movmskps => (4, 4),
        M::Movmskpd => (8, 2),
        _ => (1, width(src)),
    };
    let mut r = 0u64;
    for i in 0..n {
        r |= (((v >> (8 * lane * (i + 1) - 1)) & 1) as u64) << i;
    }
    cpu.set_reg(ins.op0_register(), r);
    Ok(())
}

fn movdup(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let size = if ins.mnemonic() == M::Movddup { 8 } else { 16 };
    let s = cpu.read_vop(ins, 1, size)?;
    let d32 = |i: usize| (s >> (32 * i)) & 0xffff_ffff;
    let v = match ins.mnemonic() {
        M::Movddup => (s & LO64) | (s & LO64) << 64,
        M::Movshdup => d32(1) | d32(1) << 32 | d32(3) << 64 | d32(3) << 96,
        _ => d32(0) | d32(0) << 32 | d32(2) << 64 | d32(2) << 96,
    };
    cpu.set_vreg(ins.op0_register(), v);
    Ok(())
}

fn logic(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let b = cpu.read_vop(ins, 1, 16)?;
    let d = ins.op0_register();
    let a = cpu.vreg(d);
    let v = match ins.mnemonic() {
        M::Andps | M::Andpd => a & b,
        M::Andnps | M::Andnpd => !a & b,
        M::Orps | M::Orpd => a | b,
        _ => a ^ b,
    };
    cpu.set_vreg(d, v);
    Ok(())
}

fn shuf(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let b = cpu.read_vop(ins, 1, 16)?;
    let d = ins.op0_register();
    let a = cpu.vreg(d);
    let imm = u32::from(ins.immediate8());
    let v = if ins.mnemonic() == M::Shufps {
        let e = |v: u128, i: u32| (v >> (32 * i)) & 0xffff_ffff;
        e(a, imm & 3) | e(a, (imm >> 2) & 3) << 32 | e(b, (imm >> 4) & 3) << 64 | e(b, (imm >> 6) & 3) << 96
    } else {
        let e = |v: u128, i: u32| (v >> (64 * i)) & LO64;
        e(a, imm & 1) | e(b, (imm >> 1) & 1) << 64
    };
    cpu.set_vreg(d, v);
    Ok(())
}

fn unpck(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.sse_enter()?;
    let b = cpu.read_vop(ins, 1, 16)?;
    let d = ins.op0_register();
    let a = cpu.vreg(d);
    let e32 = |v: u128, i: u32| (v >> (32 * i)) & 0xffff_ffff;
    let v = match ins.mnemonic() {
        M::Unpcklps => e32(a, 0) | e32(b, 0) << 32 | e32(a, 1) << 64 | e32(b, 1) << 96,
        M::Unpckhps => e32(a, 2) | e32(b, 2) << 32 | e32(a, 3) << 64 | e32(b, 3) << 96,
        M::Unpcklpd => (a & LO64) | (b & LO64) << 64,
        _ => a >> 64 | (b >> 64) << 64,
    };
    cpu.set_vreg(d, v);
    Ok(())
}

fn emms(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    if cpu.s.cr0 & CR0_EM != 0 {
        return Err(Fault::ud());
    }
    if cpu.s.cr0 & CR0_TS != 0 {
        return Err(Fault::nm());
    }
    cpu.fpu_check_pending()?;
    cpu.set_fpu_top(0);
    cpu.s.fx.ftw = 0;
    Ok(())
}
