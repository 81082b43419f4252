//! Registers, effective addresses, operands, the stack and flags: the
//! vocabulary every instruction family uses.

use iced_x86::{ConditionCode, Instruction, OpKind, Register};

use crate::cpu::{flags, seg, FlagsOp, LazyFlags};

use super::fault::{Fault, R};
use super::Interpreter;

/// A mask of the low `size` bytes.
pub(crate) fn mask(size: usize) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// The sign bit of a `size`-byte value.
pub(crate) fn sign_bit(size: usize) -> u64 {
    1 << (size * 8 - 1)
}

/// Sign-extends the low `size` bytes of `v`.
pub(crate) fn sext(v: u64, size: usize) -> u64 {
    let shift = 64 - size * 8;
    (((v << shift) as i64) >> shift) as u64
}

/// The index of a segment register in `CpuState::segs`.
pub(crate) fn seg_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::ES as usize).min(5)
}

impl Interpreter {
    /// Reads any general-purpose register at its own size.
    #[inline]
    pub(crate) fn reg(&self, r: Register) -> u64 {
        let info = reg_info(r);
        let full = self.s.gpr[usize::from(info.index)];
        match info.kind {
            RegKind::High8 => (full >> 8) & 0xff,
            RegKind::Low8 => full & 0xff,
            RegKind::R16 => full & 0xffff,
            RegKind::R32 => full & 0xffff_ffff,
            _ => full,
        }
    }

    /// Writes a general-purpose register with the x86 rules: 8- and 16-bit
    /// writes merge, 32-bit writes zero-extend, 64-bit writes replace.
    #[inline]
    pub(crate) fn set_reg(&mut self, r: Register, v: u64) {
        let info = reg_info(r);
        let full = &mut self.s.gpr[usize::from(info.index)];
        match info.kind {
            RegKind::High8 => *full = (*full & !0xff00) | (v & 0xff) << 8,
            RegKind::Low8 => *full = (*full & !0xff) | (v & 0xff),
            RegKind::R16 => *full = (*full & !0xffff) | (v & 0xffff),
            RegKind::R32 => *full = v & 0xffff_ffff,
            _ => *full = v,
        }
    }

    /// CF, without computing the other lazy flags.
    #[inline]
    pub(crate) fn carry(&self) -> bool {
        if self.s.lazy.op == FlagsOp::Materialized {
            self.s.rflags & flags::CF != 0
        } else {
            self.s.lazy.cf()
        }
    }

    /// The address size of a memory operand, in bytes.
    pub(crate) fn address_size(&self, ins: &Instruction) -> usize {
        let base = ins.memory_base();
        if base != Register::None && base != Register::RIP && base != Register::EIP {
            return base.size();
        }
        if base == Register::EIP {
            return 4;
        }
        if base == Register::RIP {
            return 8;
        }
        let index = ins.memory_index();
        if index != Register::None && index.is_gpr() {
            return index.size();
        }
        match ins.memory_displ_size() {
            2 => 2,
            4 => 4,
            8 => 8,
            // disp8 without base or index cannot be encoded; fall back to
            // the mode's default.
            _ => (self.bitness() / 8) as usize,
        }
    }

    /// The offset (effective address) of the memory operand.
    pub(crate) fn effective_address(&self, ins: &Instruction) -> u64 {
        if ins.is_ip_rel_memory_operand() {
            let a = ins.ip_rel_memory_address();
            return if ins.memory_base() == Register::EIP { a & 0xffff_ffff } else { a };
        }
        let mut ea = ins.memory_displacement64();
        let base = ins.memory_base();
        if base != Register::None {
            ea = ea.wrapping_add(self.reg(base));
        }
        let index = ins.memory_index();
        if index != Register::None && index.is_gpr() {
            ea = ea.wrapping_add(self.reg(index).wrapping_mul(u64::from(ins.memory_index_scale())));
        }
        ea & mask(self.address_size(ins))
    }

    /// Segment and offset of the memory operand.
    pub(crate) fn mem_operand(&self, ins: &Instruction) -> (usize, u64) {
        (seg_index(ins.memory_segment()), self.effective_address(ins))
    }

    /// The size in bytes of operand `n`.
    #[inline]
    pub(crate) fn op_size(&self, ins: &Instruction, n: u32) -> usize {
        match ins.op_kind(n) {
            OpKind::Register => usize::from(reg_info(ins.op_register(n)).size),
            OpKind::Memory => ins.memory_size().size(),
            OpKind::Immediate8 | OpKind::Immediate8_2nd => 1,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
            _ => 8,
        }
    }

    /// Reads operand `n`, zero-extended (immediates as the instruction
    /// sign-extends them, truncated to their size).
    #[inline]
    pub(crate) fn read_op(&mut self, ins: &Instruction, n: u32) -> R<u64> {
        match ins.op_kind(n) {
            OpKind::Register => Ok(self.reg_any(ins.op_register(n))),
            OpKind::Memory => {
                let (sreg, off) = self.mem_operand(ins);
                let size = ins.memory_size().size();
                self.read_mem(sreg, off, size.min(8))
            }
            OpKind::Immediate8 => Ok(u64::from(ins.immediate8())),
            OpKind::Immediate8_2nd => Ok(u64::from(ins.immediate8_2nd())),
            OpKind::Immediate16 => Ok(u64::from(ins.immediate16())),
            OpKind::Immediate32 => Ok(u64::from(ins.immediate32())),
            OpKind::Immediate64 => Ok(ins.immediate64()),
            OpKind::Immediate8to16 => Ok(ins.immediate8to16() as u16 as u64),
            OpKind::Immediate8to32 => Ok(ins.immediate8to32() as u32 as u64),
            OpKind::Immediate8to64 => Ok(ins.immediate8to64() as u64),
            OpKind::Immediate32to64 => Ok(ins.immediate32to64() as u64),
            other => Err(Fault::unimplemented(format!("operand kind {other:?} of {:?}", ins.mnemonic()))),
        }
    }

    /// Writes operand `n` (a register or memory).
    #[inline]
    pub(crate) fn write_op(&mut self, ins: &Instruction, n: u32, v: u64) -> R<()> {
        match ins.op_kind(n) {
            OpKind::Register => {
                self.set_reg_any(ins.op_register(n), v);
                Ok(())
            }
            OpKind::Memory => {
                let (sreg, off) = self.mem_operand(ins);
                let size = ins.memory_size().size();
                self.write_mem(sreg, off, size.min(8), v)
            }
            other => Err(Fault::unimplemented(format!("writing operand kind {other:?}"))),
        }
    }

    /// Reads a general-purpose or segment register.
    #[inline]
    pub(crate) fn reg_any(&self, r: Register) -> u64 {
        if reg_info(r).kind == RegKind::Segment {
            u64::from(self.s.segs[seg_index(r)].selector)
        } else {
            self.reg(r)
        }
    }

    fn set_reg_any(&mut self, r: Register, v: u64) {
        self.set_reg(r, v);
    }

    /// The stack's address size in bytes.
    pub(crate) fn stack_size(&self) -> usize {
        if self.in_64bit_mode() {
            8
        } else if self.s.segs[seg::SS].db != 0 {
            4
        } else {
            2
        }
    }

    fn sp(&self) -> u64 {
        self.s.gpr[crate::cpu::reg::RSP] & mask(self.stack_size())
    }

    fn set_sp(&mut self, v: u64) {
        let m = mask(self.stack_size());
        let rsp = &mut self.s.gpr[crate::cpu::reg::RSP];
        *rsp = if m == u64::MAX { v } else { (*rsp & !m) | (v & m) };
    }

    /// Pushes `size` bytes.
    pub(crate) fn push(&mut self, v: u64, size: usize) -> R<()> {
        let sp = self.sp().wrapping_sub(size as u64) & mask(self.stack_size());
        self.write_mem(seg::SS, sp, size, v)?;
        self.set_sp(sp);
        Ok(())
    }

    /// Pops `size` bytes.
    pub(crate) fn pop(&mut self, size: usize) -> R<u64> {
        let sp = self.sp();
        let v = self.read_mem(seg::SS, sp, size)?;
        self.set_sp(sp.wrapping_add(size as u64));
        Ok(v)
    }

    /// Reads the stack `offset` bytes above the top, without popping.
    pub(crate) fn peek(&mut self, offset: u64, size: usize) -> R<u64> {
        let sp = self.sp().wrapping_add(offset) & mask(self.stack_size());
        self.read_mem(seg::SS, sp, size)
    }

    /// Moves the stack pointer by `delta` bytes.
    pub(crate) fn adjust_sp(&mut self, delta: u64) {
        let sp = self.sp().wrapping_add(delta);
        self.set_sp(sp);
    }

    /// Records a lazily evaluated flag-setting operation.
    pub(crate) fn set_lazy(&mut self, op: FlagsOp, size: usize, src1: u64, src2: u64, res: u64) {
        let aux = match op {
            FlagsOp::Inc | FlagsOp::Dec => u64::from(self.carry()),
            _ => 0,
        };
        self.s.lazy = LazyFlags { op, size: size as u8, src1, src2, res, aux };
    }

    /// Records ADC/SBB with their carry in.
    pub(crate) fn set_lazy_carry(&mut self, op: FlagsOp, size: usize, src1: u64, src2: u64, res: u64, carry: bool) {
        self.s.lazy = LazyFlags { op, size: size as u8, src1, src2, res, aux: u64::from(carry) };
    }

    /// Sets the six arithmetic flags outright.
    pub(crate) fn set_arith_flags(&mut self, f: u64) {
        // The non-arithmetic bits of `rflags` are always current.
        self.s.rflags = (self.s.rflags & !flags::ARITH) | (f & flags::ARITH) | flags::FIXED;
        self.s.lazy.op = FlagsOp::Materialized;
    }

    /// Whether a flag is set.
    pub(crate) fn flag(&self, f: u64) -> bool {
        self.s.flags() & f != 0
    }

    /// Evaluates a condition code.
    #[inline]
    pub(crate) fn cond(&self, cc: ConditionCode) -> bool {
        // The common conditions straight from the lazy record.
        let lazy = &self.s.lazy;
        if lazy.op != FlagsOp::Materialized {
            match cc {
                ConditionCode::e => return lazy.zf(),
                ConditionCode::ne => return !lazy.zf(),
                ConditionCode::b => return lazy.cf(),
                ConditionCode::ae => return !lazy.cf(),
                ConditionCode::s => return lazy.sf(),
                ConditionCode::ns => return !lazy.sf(),
                ConditionCode::be => return lazy.cf() || lazy.zf(),
                ConditionCode::a => return !lazy.cf() && !lazy.zf(),
                _ => {}
            }
        }
        let f = self.s.flags();
        let cf = f & flags::CF != 0;
        let zf = f & flags::ZF != 0;
        let sf = f & flags::SF != 0;
        let of = f & flags::OF != 0;
        let pf = f & flags::PF != 0;
        match cc {
            ConditionCode::o => of,
            ConditionCode::no => !of,
            ConditionCode::b => cf,
            ConditionCode::ae => !cf,
            ConditionCode::e => zf,
            ConditionCode::ne => !zf,
            ConditionCode::be => cf || zf,
            ConditionCode::a => !cf && !zf,
            ConditionCode::s => sf,
            ConditionCode::ns => !sf,
            ConditionCode::p => pf,
            ConditionCode::np => !pf,
            ConditionCode::l => sf != of,
            ConditionCode::ge => sf == of,
            ConditionCode::le => zf || sf != of,
            ConditionCode::g => !zf && sf == of,
            ConditionCode::None => true,
        }
    }
}

/// How a register maps onto the state, precomputed for every iced-x86
/// register so the hot path does one table read instead of several.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegKind {
    Low8,
    High8,
    R16,
    R32,
    R64,
    Segment,
    Other,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct RegInfo {
    pub(crate) kind: RegKind,
    pub(crate) index: u8,
    pub(crate) size: u8,
}

/// Built at compile time from iced-x86's register numbering: AL..R15L,
/// AX..R15W, EAX..R15D, RAX..R15 and ES..GS are consecutive runs (checked
/// against iced's own predicates in the tests).
static REG_TABLE: [RegInfo; 256] = build_reg_table();

const fn build_reg_table() -> [RegInfo; 256] {
    let mut t = [RegInfo { kind: RegKind::Other, index: 0, size: 8 }; 256];
    let mut i = 0;
    while i < 256 {
        let (kind, index, size) = if i >= Register::AL as usize && i <= Register::R15L as usize {
            let n = i - Register::AL as usize;
            // AL CL DL BL AH CH DH BH SPL BPL SIL DIL R8L..R15L
            if n >= 4 && n < 8 {
                (RegKind::High8, n - 4, 1)
            } else if n < 4 {
                (RegKind::Low8, n, 1)
            } else {
                (RegKind::Low8, n - 4, 1)
            }
        } else if i >= Register::AX as usize && i <= Register::R15W as usize {
            (RegKind::R16, i - Register::AX as usize, 2)
        } else if i >= Register::EAX as usize && i <= Register::R15D as usize {
            (RegKind::R32, i - Register::EAX as usize, 4)
        } else if i >= Register::RAX as usize && i <= Register::R15 as usize {
            (RegKind::R64, i - Register::RAX as usize, 8)
        } else if i >= Register::ES as usize && i <= Register::GS as usize {
            (RegKind::Segment, i - Register::ES as usize, 2)
        } else {
            (RegKind::Other, 0, 8)
        };
        t[i] = RegInfo { kind, index: index as u8, size };
        i += 1;
    }
    t
}

/// The precomputed facts of a register.
#[inline]
pub(crate) fn reg_info(r: Register) -> RegInfo {
    REG_TABLE[(r as usize) & 0xff]
}

/// The index in `CpuState::gpr` of any general-purpose register.
pub(crate) fn gpr_index(r: Register) -> usize {
    let full = r.full_register();
    (full as usize).wrapping_sub(Register::RAX as usize) & 15
}

#[cfg(test)]
fn is_high_byte(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(sext(0x80, 1), 0xffff_ffff_ffff_ff80);
        assert_eq!(sext(0x7fff, 2), 0x7fff);
        assert_eq!(gpr_index(Register::AH), 0);
        assert_eq!(gpr_index(Register::R15D), 15);
        assert_eq!(gpr_index(Register::SIL), 6);
        assert_eq!(seg_index(Register::GS), 5);
        assert_eq!(mask(2), 0xffff);
        assert_eq!(reg_info(Register::BH).kind, RegKind::High8);
        assert_eq!(reg_info(Register::BH).index, 3);
        assert_eq!(reg_info(Register::R9W).size, 2);
        assert_eq!(reg_info(Register::FS).kind, RegKind::Segment);
        // The compile-time table agrees with iced-x86 for every register.
        for r in Register::values() {
            let info = reg_info(r);
            if r.is_gpr() {
                assert_eq!(usize::from(info.index), gpr_index(r), "{r:?}");
                assert_eq!(usize::from(info.size), r.size(), "{r:?}");
                assert_eq!(info.kind == RegKind::High8, is_high_byte(r), "{r:?}");
            } else {
                assert_eq!(info.kind == RegKind::Segment, r.is_segment_register(), "{r:?}");
            }
        }
    }
}
