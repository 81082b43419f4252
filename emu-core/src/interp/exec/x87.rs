//! The x87 FPU: the register stack, loads and stores, the basic
//! arithmetic, comparisons and the stack and sign operations (SDM Vol. 1,
//! chapter 8). Control instructions, the environment images, the
//! transcendental and partial-remainder instructions are in `x87_ctl`.
//!
//! Arithmetic is exact 80-bit extended precision through SoftFloat (see
//! `softfp`), honouring FCW.RC and FCW.PC. Exceptions follow the SDM:
//! flags in FSW, the masked responses (the QNaN indefinite, integer
//! indefinite), and for unmasked ones FSW.ES/B set and the result not
//! stored where the SDM says so (invalid, denormal, zero divide); the
//! pending exception is raised as #MF by the next waiting x87
//! instruction when CR0.NE=1. With CR0.NE=0 a PC raises FERR#/IRQ 13,
//! which this machine does not wire: the exception stays pending in FSW
//! (as with IGNNE# asserted) and no interrupt is raised.
//!
//! Approximation: for an unmasked overflow or underflow the SDM stores
//! the result with its exponent wrapped by 24576; this stores the masked
//! result instead (and raises #MF on the next waiting instruction).

use iced_x86::{Instruction, MemorySize, Mnemonic as M, OpKind};

use crate::cpu::{cr0, flags};

use super::super::fault::{vector, Fault, R};
use super::super::Interpreter;
use super::softfp::{self as sp, fl, sfc, F80, Ty};
use super::Table;

/// FSW bits.
pub(super) mod sw {
    /// Stack fault.
    pub const SF: u16 = 0x40;
    /// Error summary.
    pub const ES: u16 = 0x80;
    /// Condition code 0.
    pub const C0: u16 = 0x100;
    /// Condition code 1.
    pub const C1: u16 = 0x200;
    /// Condition code 2.
    pub const C2: u16 = 0x400;
    /// Condition code 3.
    pub const C3: u16 = 0x4000;
    /// Busy (mirrors ES).
    pub const B: u16 = 0x8000;
    /// All four condition codes.
    pub const CC: u16 = C0 | C1 | C2 | C3;
}

/// CR0.MP.
pub(super) const CR0_MP: u64 = 1 << 1;
/// CR0.EM.
pub(super) const CR0_EM: u64 = 1 << 2;
/// CR0.TS.
pub(super) const CR0_TS: u64 = 1 << 3;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Fld], fld);
    t.set(&[M::Fst, M::Fstp, M::Fstpnce], fst);
    t.set(&[M::Fild], fild);
    t.set(&[M::Fist, M::Fistp, M::Fisttp], fist);
    t.set(&[M::Fld1, M::Fldz, M::Fldpi, M::Fldl2e, M::Fldl2t, M::Fldlg2, M::Fldln2], fld_const);
    t.set(
        &[
            M::Fadd, M::Faddp, M::Fiadd, M::Fsub, M::Fsubp, M::Fisub, M::Fsubr, M::Fsubrp, M::Fisubr, M::Fmul, M::Fmulp, M::Fimul,
            M::Fdiv, M::Fdivp, M::Fidiv, M::Fdivr, M::Fdivrp, M::Fidivr,
        ],
        arith,
    );
    t.set(&[M::Fcom, M::Fcomp, M::Fcompp, M::Fucom, M::Fucomp, M::Fucompp, M::Ficom, M::Ficomp, M::Ftst], fcom);
    t.set(&[M::Fcomi, M::Fcomip, M::Fucomi, M::Fucomip], fcomi);
    t.set(&[M::Fxam], fxam);
    t.set(&[M::Fchs, M::Fabs], fchs_fabs);
    t.set(&[M::Fsqrt], fsqrt);
    t.set(&[M::Frndint], frndint);
    t.set(&[M::Fxch], fxch);
    t.set(&[M::Fincstp, M::Fdecstp], fincdec);
    t.set(&[M::Ffree, M::Ffreep], ffree);
    t.set(&[M::Fcmovb, M::Fcmove, M::Fcmovbe, M::Fcmovu, M::Fcmovnb, M::Fcmovne, M::Fcmovnbe, M::Fcmovnu], fcmov);
    t.set(&[M::Fbld], fbld);
    t.set(&[M::Fbstp], fbstp);
}

// ---------------------------------------------------------------------
// Register stack and status word.

impl Interpreter {
    /// FSW.TOP.
    pub(super) fn fpu_top(&self) -> usize {
        usize::from((self.s.fx.fsw >> 11) & 7)
    }

    pub(super) fn set_fpu_top(&mut self, top: usize) {
        self.s.fx.fsw = (self.s.fx.fsw & !0x3800) | ((top as u16 & 7) << 11);
    }

    /// The physical register holding ST(i).
    pub(super) fn st_phys(&self, i: usize) -> usize {
        (self.fpu_top() + i) & 7
    }

    /// ST(i), whatever its tag.
    pub(super) fn st(&self, i: usize) -> F80 {
        sp::f80_from_bytes(&self.s.fx.st[self.st_phys(i)])
    }

    /// Whether ST(i) is tagged empty.
    pub(super) fn st_empty(&self, i: usize) -> bool {
        self.s.fx.ftw & (1 << self.st_phys(i)) == 0
    }

    /// Writes ST(i) and tags it valid.
    pub(super) fn set_st(&mut self, i: usize, v: F80) {
        let p = self.st_phys(i);
        sp::f80_to_bytes(v, &mut self.s.fx.st[p]);
        self.s.fx.ftw |= 1 << p;
    }

    /// Pushes without checks.
    pub(super) fn fpu_push(&mut self, v: F80) {
        let top = self.fpu_top().wrapping_sub(1) & 7;
        self.set_fpu_top(top);
        self.set_st(0, v);
    }

    /// Pops: tags ST(0) empty and increments TOP.
    pub(super) fn fpu_pop(&mut self) {
        let p = self.st_phys(0);
        self.s.fx.ftw &= !(1 << p);
        self.set_fpu_top(self.fpu_top() + 1);
    }

    fn fcw_masks(&self) -> u32 {
        u32::from(self.s.fx.fcw) & fl::ALL
    }

    /// FCW.RC.
    pub(super) fn fpu_rc(&self) -> u32 {
        u32::from(self.s.fx.fcw >> 10) & 3
    }

    /// FCW.PC as SoftFloat's rounding precision (24 bits -> 32, 53 -> 64,
    /// 64 -> 80; the reserved encoding 01 acts as 64 bits, as on the
    /// hardware).
    pub(super) fn fpu_pc(&self) -> u8 {
        match (self.s.fx.fcw >> 8) & 3 {
            0 => 32,
            2 => 64,
            _ => 80,
        }
    }

    /// Sets ES and B from the flags and masks.
    pub(super) fn fpu_update_es(&mut self) {
        let pending = u32::from(self.s.fx.fsw) & !self.fcw_masks() & fl::ALL != 0;
        if pending {
            self.s.fx.fsw |= sw::ES | sw::B;
        } else {
            self.s.fx.fsw &= !(sw::ES | sw::B);
        }
    }

    /// ORs exception flags (and SF) into FSW.
    pub(super) fn fpu_flag(&mut self, f: u32) {
        self.s.fx.fsw |= (f & (fl::ALL | u32::from(sw::SF))) as u16;
        self.fpu_update_es();
    }

    /// Whether all of `f` are masked in FCW.
    pub(super) fn fpu_masked(&self, f: u32) -> bool {
        f & !self.fcw_masks() == 0
    }

    /// Sets or clears condition-code bits.
    pub(super) fn set_cc(&mut self, bits: u16, value: u16) {
        self.s.fx.fsw = (self.s.fx.fsw & !bits) | (value & bits);
    }

    /// Reports the flags of an operation whose result is not stored yet
    /// and says whether it may be stored: not when an unmasked invalid,
    /// denormal or zero-divide exception occurred (then only those are
    /// reported). An unmasked underflow is signalled for a tiny result
    /// even when it is exact.
    pub(super) fn fpu_report(&mut self, mut f: u32, result_tiny: bool) -> bool {
        let pre = fl::IE | fl::DE | fl::ZE;
        if f & pre & !self.fcw_masks() != 0 {
            self.fpu_flag(f & pre);
            return false;
        }
        if result_tiny && !self.fpu_masked(fl::UE) {
            f |= fl::UE;
        }
        self.fpu_flag(f);
        true
    }

    /// The checks every x87 instruction makes first: #NM when CR0.EM or
    /// CR0.TS is set, then for waiting instructions #MF when an unmasked
    /// exception is pending and CR0.NE=1.
    pub(super) fn x87_enter(&mut self, wait: bool) -> R<()> {
        if self.s.cr0 & (CR0_EM | CR0_TS) != 0 {
            return Err(Fault::nm());
        }
        if wait {
            self.fpu_check_pending()?;
        }
        Ok(())
    }

    /// #MF for a pending unmasked x87 exception (CR0.NE=1 only).
    pub(super) fn fpu_check_pending(&self) -> R<()> {
        if self.s.fx.fsw & sw::ES != 0 && self.s.cr0 & cr0::NE != 0 {
            return Err(Fault::exception(vector::MF));
        }
        Ok(())
    }

    /// Records FIP, FDP and FOP for a non-control instruction. FOP is
    /// exact for register forms; for memory forms its mod and r/m bits
    /// are left zero (the decoder does not keep the ModRM byte).
    pub(super) fn x87_note(&mut self, ins: &Instruction) {
        self.s.fx.fip = self.s.rip;
        let oc = ins.op_code();
        let code = oc.op_code();
        let mem = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
        let fop = if mem {
            self.s.fx.fdp = self.effective_address(ins);
            ((code & 7) << 8) | (oc.group_index().max(0) as u32) << 3
        } else if code > 0xff {
            let sti = (0..ins.op_count())
                .filter(|&i| ins.op_kind(i) == OpKind::Register && ins.op_register(i).is_st())
                .map(|i| ins.op_register(i).number() as u32)
                .max()
                .unwrap_or(0);
            let base = code & 0x7ff;
            if oc.rm_group_index() >= 0 { base } else { base + sti }
        } else {
            code & 0x7ff
        };
        self.s.fx.fop = fop as u16 & 0x7ff;
    }

    /// A stack underflow (an empty source): IE and SF with C1 clear; when
    /// masked, `dest` (an ST index) gets the indefinite and `pops`
    /// registers are popped. Returns whether the masked response ran.
    pub(super) fn stack_underflow(&mut self, dest: Option<usize>, pops: usize) -> bool {
        self.set_cc(sw::C1, 0);
        self.fpu_flag(fl::IE | u32::from(sw::SF));
        if !self.fpu_masked(fl::IE) {
            return false;
        }
        if let Some(d) = dest {
            self.set_st(d, sp::INDEFINITE);
        }
        for _ in 0..pops {
            self.fpu_pop();
        }
        true
    }

    /// The start of an instruction that reads ST(0) alone: the #NM and
    /// pending-#MF checks, FOP/FIP, then ST(0), or `None` after the masked
    /// stack-underflow response when it is empty.
    pub(super) fn x87_st0_operand(&mut self, ins: &Instruction) -> R<Option<F80>> {
        self.x87_enter(true)?;
        self.x87_note(ins);
        if self.st_empty(0) {
            self.stack_underflow(Some(0), 0);
            return Ok(None);
        }
        Ok(Some(self.st(0)))
    }

    /// Checks that a push has room (ST(7) empty); on overflow raises IE
    /// and SF with C1 set and, when masked, pushes the indefinite.
    /// Returns whether the caller may push its value.
    pub(super) fn push_room(&mut self) -> bool {
        if self.st_empty(7) {
            return true;
        }
        self.set_cc(sw::C1, sw::C1);
        self.fpu_flag(fl::IE | u32::from(sw::SF));
        if self.fpu_masked(fl::IE) {
            self.fpu_push(sp::INDEFINITE);
        }
        false
    }

    /// Reads a memory operand of up to 16 bytes at `off` into bytes.
    pub(super) fn read_bytes(&mut self, sreg: usize, off: u64, out: &mut [u8]) -> R<()> {
        let mut i = 0;
        while i < out.len() {
            let n = if out.len() - i >= 8 { 8 } else if out.len() - i >= 4 { 4 } else if out.len() - i >= 2 { 2 } else { 1 };
            let v = self.read_mem(sreg, off.wrapping_add(i as u64), n)?;
            out[i..i + n].copy_from_slice(&v.to_le_bytes()[..n]);
            i += n;
        }
        Ok(())
    }

    /// Writes bytes to memory, checking the whole range first so a fault
    /// leaves memory unchanged.
    pub(super) fn write_bytes(&mut self, sreg: usize, off: u64, data: &[u8]) -> R<()> {
        let lin = self.linear(sreg, off, data.len() as u64, crate::mmu::Access::Write)?;
        self.probe_write(lin, data.len())?;
        let mut i = 0;
        while i < data.len() {
            let n = if data.len() - i >= 8 { 8 } else if data.len() - i >= 4 { 4 } else if data.len() - i >= 2 { 2 } else { 1 };
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&data[i..i + n]);
            self.write_mem(sreg, off.wrapping_add(i as u64), n, u64::from_le_bytes(b))?;
            i += n;
        }
        Ok(())
    }
}

/// Reads an 80-bit memory operand.
fn read_m80(cpu: &mut Interpreter, ins: &Instruction) -> R<F80> {
    let (sreg, off) = cpu.mem_operand(ins);
    let mut b = [0u8; 10];
    cpu.read_bytes(sreg, off, &mut b)?;
    Ok(sp::f80_from_bytes(&b))
}

/// Converts a binary32/binary64 to 80 bits exactly, keeping a signalling
/// NaN signalling (so the arithmetic sees and propagates it as the x87
/// does); says whether the source was a denormal.
pub(super) fn widen(ty: Ty, v: u64) -> (F80, bool) {
    if ty.is_nan(v) {
        let (frac_bits, neg) = match ty {
            Ty::S => (23, v & ty.sign() != 0),
            Ty::D => (52, v & ty.sign() != 0),
        };
        let frac = v & ((1 << frac_bits) - 1);
        let sig = 1 << 63 | frac << (63 - frac_bits);
        return (sp::f80(if neg { 0xffff } else { 0x7fff }, sig), false);
    }
    let (r, _) = sp::with(0, 80, || sp::to80(ty, v));
    (r, ty.is_denormal(v))
}

/// A source operand of the memory forms: an 80-bit value and whether it
/// was a denormal in its own format.
fn mem_source(cpu: &mut Interpreter, ins: &Instruction) -> R<(F80, bool)> {
    let (sreg, off) = cpu.mem_operand(ins);
    Ok(match ins.memory_size() {
        MemorySize::Float32 => widen(Ty::S, cpu.read_mem(sreg, off, 4)?),
        MemorySize::Float64 => widen(Ty::D, cpu.read_mem(sreg, off, 8)?),
        MemorySize::Float80 => {
            let v = read_m80(cpu, ins)?;
            (v, false)
        }
        MemorySize::Int16 => (sfc!(i32_to_extF80(cpu.read_mem(sreg, off, 2)? as u16 as i16 as i32)), false),
        MemorySize::Int32 => (sfc!(i32_to_extF80(cpu.read_mem(sreg, off, 4)? as u32 as i32)), false),
        _ => (sfc!(i64_to_extF80(cpu.read_mem(sreg, off, 8)? as i64)), false),
    })
}

/// The result of a numeric operation before it is committed.
pub(super) struct Out {
    pub v: F80,
    pub flags: u32,
    pub c1: bool,
}

/// Runs a SoftFloat operation under `rc`/`pc`, with the round-up bit
/// (C1) found by rerunning toward zero when the result is inexact.
pub(super) fn run80(rc: u32, pc: u8, f: impl Fn() -> F80) -> Out {
    let (v, flags) = sp::with(rc, pc, &f);
    let c1 = if flags & fl::PE != 0 && rc != sp::RC_ZERO {
        let (z, _) = sp::with(sp::RC_ZERO, pc, &f);
        !sp::eq80(v, z)
    } else {
        false
    };
    Out { v, flags, c1 }
}

/// Adds the denormal-operand flag when an operand is denormal and no
/// higher-priority condition (a NaN operand, invalid, zero divide) holds.
pub(super) fn denormal_check(out: &mut Out, ops: &[F80], extra_de: bool) {
    if ops.iter().any(|&o| sp::is_nan80(o)) || out.flags & (fl::IE | fl::ZE) != 0 {
        return;
    }
    if extra_de || ops.iter().any(|&o| sp::is_denormal80(o)) {
        out.flags |= fl::DE;
    }
}

/// The indefinite for unsupported operands (pseudo-NaN, pseudo-infinity,
/// unnormal), or `None` when all operands are supported.
pub(super) fn unsupported(ops: &[F80]) -> Option<Out> {
    if ops.iter().any(|&o| sp::is_unsupported80(o)) {
        Some(Out { v: sp::INDEFINITE, flags: fl::IE, c1: false })
    } else {
        None
    }
}

/// Stores a result into ST(i): flags, C1, the value unless an unmasked
/// pre-computation exception forbids it; then `pops` pops. Returns whether
/// it was stored.
pub(super) fn commit(cpu: &mut Interpreter, dest: usize, out: Out, pops: usize) -> bool {
    let tiny = sp::is_denormal80(out.v);
    if !cpu.fpu_report(out.flags, tiny) {
        cpu.set_cc(sw::C1, 0);
        return false;
    }
    cpu.set_cc(sw::C1, if out.c1 { sw::C1 } else { 0 });
    cpu.set_st(dest, out.v);
    for _ in 0..pops {
        cpu.fpu_pop();
    }
    true
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

fn op80(op: Op, a: F80, b: F80, rc: u32, pc: u8, extra_de: bool) -> Out {
    if let Some(o) = unsupported(&[a, b]) {
        return o;
    }
    let (ca, cb) = (sp::canon80(a), sp::canon80(b));
    let mut out = run80(rc, pc, || match op {
        Op::Add => sfc!(extF80_add(ca, cb)),
        Op::Sub => sfc!(extF80_sub(ca, cb)),
        Op::Mul => sfc!(extF80_mul(ca, cb)),
        Op::Div => sfc!(extF80_div(ca, cb)),
    });
    denormal_check(&mut out, &[a, b], extra_de);
    out
}

fn st_index(ins: &Instruction, n: u32) -> usize {
    ins.op_register(n).number()
}

// ---------------------------------------------------------------------
// Loads and stores.

fn fld(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    let (v, de) = if ins.op0_kind() == OpKind::Memory {
        mem_source(cpu, ins)?
    } else {
        let i = st_index(ins, 0);
        if cpu.st_empty(i) {
            // The source is empty: underflow, masked response pushes the
            // indefinite (if there is room).
            cpu.x87_note(ins);
            cpu.set_cc(sw::C1, 0);
            cpu.fpu_flag(fl::IE | u32::from(sw::SF));
            if cpu.fpu_masked(fl::IE) {
                cpu.fpu_push(sp::INDEFINITE);
            }
            return Ok(());
        }
        (cpu.st(i), false)
    };
    cpu.x87_note(ins);
    if !cpu.push_room() {
        return Ok(());
    }
    let mut v = v;
    if ins.op0_kind() == OpKind::Memory && ins.memory_size() != MemorySize::Float80 {
        if sp::is_snan80(v) {
            // An unmasked invalid loads nothing.
            cpu.set_cc(sw::C1, 0);
            if !cpu.fpu_report(fl::IE, false) {
                return Ok(());
            }
            v.signif |= 1 << 62;
        } else if de {
            // A denormal is loaded even when DE is unmasked.
            cpu.fpu_flag(fl::DE);
        }
    }
    cpu.set_cc(sw::C1, 0);
    cpu.fpu_push(v);
    Ok(())
}

fn fst(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    let pop = usize::from(ins.mnemonic() != M::Fst);
    let to_mem = ins.op0_kind() == OpKind::Memory;
    let (sreg, off) = if to_mem { cpu.mem_operand(ins) } else { (0, 0) };
    if cpu.st_empty(0) {
        if cpu.fpu_masked(fl::IE) {
            if to_mem {
                write_float(cpu, ins, sreg, off, sp::INDEFINITE)?;
            } else {
                cpu.set_st(st_index(ins, 0), sp::INDEFINITE);
            }
        }
        cpu.x87_note(ins);
        cpu.set_cc(sw::C1, 0);
        cpu.fpu_flag(fl::IE | u32::from(sw::SF));
        if cpu.fpu_masked(fl::IE) && pop == 1 {
            cpu.fpu_pop();
        }
        return Ok(());
    }
    let v = cpu.st(0);
    if !to_mem {
        cpu.x87_note(ins);
        cpu.set_cc(sw::C1, 0);
        cpu.set_st(st_index(ins, 0), v);
        if pop == 1 {
            cpu.fpu_pop();
        }
        return Ok(());
    }
    let ty = match ins.memory_size() {
        MemorySize::Float32 => Ty::S,
        MemorySize::Float64 => Ty::D,
        _ => {
            write_float(cpu, ins, sreg, off, v)?;
            cpu.x87_note(ins);
            cpu.set_cc(sw::C1, 0);
            if pop == 1 {
                cpu.fpu_pop();
            }
            return Ok(());
        }
    };
    let (bits, mut flags, c1) = narrow(v, ty, cpu.fpu_rc());
    let tiny = ty.is_denormal(bits);
    if tiny && !cpu.fpu_masked(fl::UE) {
        flags |= fl::UE;
    }
    // Unmasked invalid, denormal, overflow or underflow: nothing stored.
    let blocking = (fl::IE | fl::DE | fl::ZE | fl::OE | fl::UE) & !cpu.fcw_masks();
    let store = flags & blocking == 0;
    if store {
        cpu.write_mem(sreg, off, ty.size(), bits)?;
    }
    cpu.x87_note(ins);
    if !store {
        let pre = if flags & (fl::IE | fl::DE) & blocking != 0 { flags & (fl::IE | fl::DE) } else { flags & !fl::PE };
        cpu.fpu_flag(pre);
        cpu.set_cc(sw::C1, 0);
        return Ok(());
    }
    cpu.fpu_flag(flags);
    cpu.set_cc(sw::C1, if c1 { sw::C1 } else { 0 });
    if pop == 1 {
        cpu.fpu_pop();
    }
    Ok(())
}

/// Rounds an 80-bit value to binary32/binary64 with the x87 rules:
/// unsupported encodings are invalid, a signalling NaN raises IE (a
/// denormal source raises no DE). Returns bits, flags and the round-up
/// bit.
pub(super) fn narrow(v: F80, ty: Ty, rc: u32) -> (u64, u32, bool) {
    if sp::is_unsupported80(v) {
        return (ty.indefinite(), fl::IE, false);
    }
    let v = sp::canon80(v);
    let (bits, flags) = sp::with(rc, 80, || sp::from80(ty, v));
    let c1 = if flags & fl::PE != 0 && rc != sp::RC_ZERO {
        let (z, _) = sp::with(sp::RC_ZERO, 80, || sp::from80(ty, v));
        z != bits
    } else {
        false
    };
    (bits, flags, c1)
}

/// Writes `v` in the operand's float format (the indefinite converts to
/// each format's indefinite).
fn write_float(cpu: &mut Interpreter, ins: &Instruction, sreg: usize, off: u64, v: F80) -> R<()> {
    match ins.memory_size() {
        MemorySize::Float32 => cpu.write_mem(sreg, off, 4, Ty::S.indefinite()),
        MemorySize::Float64 => cpu.write_mem(sreg, off, 8, Ty::D.indefinite()),
        _ => {
            let mut b = [0u8; 10];
            sp::f80_to_bytes(v, &mut b);
            cpu.write_bytes(sreg, off, &b)
        }
    }
}

fn fild(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    let (v, _) = mem_source(cpu, ins)?;
    cpu.x87_note(ins);
    if cpu.push_room() {
        cpu.set_cc(sw::C1, 0);
        cpu.fpu_push(v);
    }
    Ok(())
}

/// Converts to a signed integer of `size` bytes under `rc` (or toward
/// zero when `trunc`): value, flags, round-up bit. Out of range, NaN and
/// unsupported give the integer indefinite with IE.
pub(super) fn to_int(v: F80, size: usize, rc: u32, trunc: bool) -> (i64, u32, bool) {
    let indefinite = i64::MIN >> (64 - size * 8);
    if sp::is_unsupported80(v) || sp::is_nan80(v) {
        return (indefinite, fl::IE, false);
    }
    let v = sp::canon80(v);
    let rc = if trunc { sp::RC_ZERO } else { rc };
    let mode = sp::sf_mode(rc);
    let (r, flags) = sp::with(rc, 80, || sfc!(extF80_to_i64(v, mode, true)));
    if flags & fl::IE != 0 {
        return (indefinite, fl::IE, false);
    }
    let min = i64::MIN >> (64 - size * 8);
    let max = !min;
    if r < min || r > max {
        return (indefinite, fl::IE, false);
    }
    let c1 = flags & fl::PE != 0 && {
        let (z, _) = sp::with(sp::RC_ZERO, 80, || sfc!(extF80_to_i64(v, sp::sf_mode(sp::RC_ZERO), false)));
        z != r
    };
    (r, flags, c1)
}

fn fist(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    let pop = ins.mnemonic() != M::Fist;
    let size = ins.memory_size().size();
    let (sreg, off) = cpu.mem_operand(ins);
    let indefinite = (i64::MIN >> (64 - size * 8)) as u64;
    if cpu.st_empty(0) {
        if cpu.fpu_masked(fl::IE) {
            cpu.write_mem(sreg, off, size, indefinite)?;
        }
        cpu.x87_note(ins);
        cpu.stack_underflow(None, usize::from(pop));
        return Ok(());
    }
    let (r, flags, c1) = to_int(cpu.st(0), size, cpu.fpu_rc(), ins.mnemonic() == M::Fisttp);
    let store = flags & fl::IE == 0 || cpu.fpu_masked(fl::IE);
    if store {
        cpu.write_mem(sreg, off, size, r as u64)?;
    }
    cpu.x87_note(ins);
    cpu.fpu_flag(flags);
    if !store {
        cpu.set_cc(sw::C1, 0);
        return Ok(());
    }
    cpu.set_cc(sw::C1, if c1 { sw::C1 } else { 0 });
    if pop {
        cpu.fpu_pop();
    }
    Ok(())
}

/// The 66-bit constants of FLDPI and friends, as the 64-bit significand
/// truncated and whether nearest rounding rounds it up (the remaining
/// bits are never exactly one half).
fn constant(m: M) -> (u16, u64, bool) {
    match m {
        M::Fld1 => (0x3fff, 1 << 63, false),
        M::Fldz => (0, 0, false),
        M::Fldpi => (0x4000, 0xc90f_daa2_2168_c234, true),
        M::Fldl2e => (0x3fff, 0xb8aa_3b29_5c17_f0bb, true),
        M::Fldl2t => (0x4000, 0xd49a_784b_cd1b_8afe, false),
        M::Fldlg2 => (0x3ffd, 0x9a20_9a84_fbcf_f798, true),
        _ => (0x3ffe, 0xb172_17f7_d1cf_79ab, true),
    }
}

fn fld_const(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    let (se, sig, nearest_up) = constant(ins.mnemonic());
    let exact = matches!(ins.mnemonic(), M::Fld1 | M::Fldz);
    let up = !exact
        && match cpu.fpu_rc() {
            sp::RC_NEAREST => nearest_up,
            sp::RC_UP => true,
            _ => false,
        };
    if cpu.push_room() {
        cpu.set_cc(sw::C1, 0);
        cpu.fpu_push(sp::f80(se, sig + u64::from(up)));
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Arithmetic.

fn arith(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    let m = ins.mnemonic();
    let op = match m {
        M::Fadd | M::Faddp | M::Fiadd => Op::Add,
        M::Fsub | M::Fsubp | M::Fisub | M::Fsubr | M::Fsubrp | M::Fisubr => Op::Sub,
        M::Fmul | M::Fmulp | M::Fimul => Op::Mul,
        _ => Op::Div,
    };
    let reverse = matches!(m, M::Fsubr | M::Fsubrp | M::Fisubr | M::Fdivr | M::Fdivrp | M::Fidivr);
    let pops = usize::from(matches!(m, M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp));
    // Destination ST index and the source.
    let (dest, src, src_de) = if ins.op_count() == 1 || ins.op1_kind() == OpKind::Memory {
        let (v, de) = mem_source(cpu, ins)?;
        if cpu.st_empty(0) {
            cpu.x87_note(ins);
            cpu.stack_underflow(Some(0), 0);
            return Ok(());
        }
        (0, v, de)
    } else {
        let (d, s) = (st_index(ins, 0), st_index(ins, 1));
        if cpu.st_empty(d) || cpu.st_empty(s) {
            cpu.x87_note(ins);
            cpu.stack_underflow(Some(d), pops);
            return Ok(());
        }
        (d, cpu.st(s), false)
    };
    cpu.x87_note(ins);
    let d = cpu.st(dest);
    let (a, b) = if reverse { (src, d) } else { (d, src) };
    let (ade, bde) = if reverse { (src_de, false) } else { (false, src_de) };
    let out = op80(op, a, b, cpu.fpu_rc(), cpu.fpu_pc(), ade || bde);
    commit(cpu, dest, out, pops);
    Ok(())
}

fn fsqrt(cpu: &mut Interpreter, _ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(_ins);
    if cpu.st_empty(0) {
        cpu.stack_underflow(Some(0), 0);
        return Ok(());
    }
    let a = cpu.st(0);
    let out = unsupported(&[a]).unwrap_or_else(|| {
        let c = sp::canon80(a);
        let mut o = run80(cpu.fpu_rc(), cpu.fpu_pc(), || sfc!(extF80_sqrt(c)));
        let a = cpu.st(0);
        denormal_check(&mut o, &[a], false);
        o
    });
    commit(cpu, 0, out, 0);
    Ok(())
}

fn frndint(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let Some(a) = cpu.x87_st0_operand(ins)? else { return Ok(()) };
    let rc = cpu.fpu_rc();
    let out = unsupported(&[a]).unwrap_or_else(|| {
        let mode = sp::sf_mode(rc);
        let orig = a;
        let a = sp::canon80(a);
        let mut o = run80(rc, 80, || sfc!(extF80_roundToInt(a, mode, true)));
        // roundToInt rounds toward zero when rerun with RC_ZERO's mode
        // only if the mode argument says so: redo C1 explicitly.
        if o.flags & fl::PE != 0 {
            let z = sp::with(rc, 80, || sfc!(extF80_roundToInt(a, sp::sf_mode(sp::RC_ZERO), false))).0;
            o.c1 = !sp::eq80(z, o.v);
        }
        denormal_check(&mut o, &[orig], false);
        o
    });
    commit(cpu, 0, out, 0);
    Ok(())
}

fn fchs_fabs(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let Some(a) = cpu.x87_st0_operand(ins)? else { return Ok(()) };
    let v = if ins.mnemonic() == M::Fchs { sp::neg80(a) } else { sp::f80(a.signExp & 0x7fff, a.signif) };
    cpu.set_cc(sw::C1, 0);
    cpu.set_st(0, v);
    Ok(())
}

// ---------------------------------------------------------------------
// Comparisons.

/// The outcome of a comparison.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Rel {
    Gt,
    Lt,
    Eq,
    Unordered,
}

/// Compares with the x87 rules: NaN operands are unordered and invalid
/// (only signalling ones when `quiet`); unsupported encodings invalid;
/// denormals raise DE.
pub(super) fn compare80(a: F80, b: F80, quiet: bool) -> (Rel, u32) {
    if sp::is_unsupported80(a) || sp::is_unsupported80(b) {
        return (Rel::Unordered, fl::IE);
    }
    if sp::is_nan80(a) || sp::is_nan80(b) {
        let signal = !quiet || sp::is_snan80(a) || sp::is_snan80(b);
        return (Rel::Unordered, if signal { fl::IE } else { 0 });
    }
    let de = if sp::is_denormal80(a) || sp::is_denormal80(b) { fl::DE } else { 0 };
    let (a, b) = (sp::canon80(a), sp::canon80(b));
    let (lt, _) = sp::with(0, 80, || sfc!(extF80_lt_quiet(a, b)));
    let (eq, _) = sp::with(0, 80, || sfc!(extF80_eq(a, b)));
    (if eq { Rel::Eq } else if lt { Rel::Lt } else { Rel::Gt }, de)
}

fn fcom(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    let m = ins.mnemonic();
    let quiet = matches!(m, M::Fucom | M::Fucomp | M::Fucompp);
    let pops = match m {
        M::Fcomp | M::Fucomp | M::Ficomp => 1,
        M::Fcompp | M::Fucompp => 2,
        _ => 0,
    };
    let (b, bde, src_empty) = if m == M::Ftst {
        (sp::zero80(false), false, false)
    } else if ins.op_count() >= 1 && (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory) {
        let (v, de) = mem_source(cpu, ins)?;
        (v, de, false)
    } else {
        // FCOM ST(i) (one operand), FCOM ST(0), ST(i) or no operands (ST(1)).
        let i = if ins.op_count() == 0 { 1 } else { st_index(ins, ins.op_count() - 1) };
        (cpu.st(i), false, cpu.st_empty(i))
    };
    cpu.x87_note(ins);
    let all = sw::C0 | sw::C2 | sw::C3;
    if cpu.st_empty(0) || src_empty {
        cpu.set_cc(sw::C1, 0);
        cpu.fpu_flag(fl::IE | u32::from(sw::SF));
        cpu.set_cc(all, all);
        if cpu.fpu_masked(fl::IE) {
            for _ in 0..pops {
                cpu.fpu_pop();
            }
        }
        return Ok(());
    }
    let (rel, mut flags) = compare80(cpu.st(0), b, quiet);
    if bde && flags & fl::IE == 0 && rel != Rel::Unordered {
        flags |= fl::DE;
    }
    cpu.set_cc(sw::C1, 0);
    // The condition codes are set even for unmasked exceptions, which
    // only suppress the pops.
    cpu.fpu_flag(flags);
    let cc = match rel {
        Rel::Gt => 0,
        Rel::Lt => sw::C0,
        Rel::Eq => sw::C3,
        Rel::Unordered => all,
    };
    cpu.set_cc(all, cc);
    if !cpu.fpu_masked(flags) {
        return Ok(());
    }
    for _ in 0..pops {
        cpu.fpu_pop();
    }
    Ok(())
}

fn fcomi(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    let m = ins.mnemonic();
    let quiet = matches!(m, M::Fucomi | M::Fucomip);
    let pops = usize::from(matches!(m, M::Fcomip | M::Fucomip));
    let i = st_index(ins, 1);
    let set = |cpu: &mut Interpreter, f: u64| {
        let cur = cpu.s.flags() & !flags::ARITH;
        cpu.s.set_flags(cur | f);
    };
    let zpc = flags::ZF | flags::PF | flags::CF;
    if cpu.st_empty(0) || cpu.st_empty(i) {
        cpu.set_cc(sw::C1, 0);
        cpu.fpu_flag(fl::IE | u32::from(sw::SF));
        set(cpu, zpc);
        if cpu.fpu_masked(fl::IE) {
            for _ in 0..pops {
                cpu.fpu_pop();
            }
        }
        return Ok(());
    }
    let (rel, flags) = compare80(cpu.st(0), cpu.st(i), quiet);
    cpu.fpu_flag(flags);
    let pops = if cpu.fpu_masked(flags) { pops } else { 0 };
    let f = match rel {
        Rel::Gt => 0,
        Rel::Lt => flags::CF,
        Rel::Eq => flags::ZF,
        Rel::Unordered => zpc,
    };
    set(cpu, f);
    for _ in 0..pops {
        cpu.fpu_pop();
    }
    Ok(())
}

fn fxam(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    let v = cpu.st(0);
    let c1 = if sp::sign80(v) { sw::C1 } else { 0 };
    let class = if cpu.st_empty(0) {
        sw::C3 | sw::C0
    } else if sp::is_unsupported80(v) {
        0
    } else if sp::is_nan80(v) {
        sw::C0
    } else if sp::is_inf80(v) {
        sw::C2 | sw::C0
    } else if sp::is_zero80(v) {
        sw::C3
    } else if sp::is_denormal80(v) {
        sw::C3 | sw::C2
    } else {
        sw::C2
    };
    cpu.set_cc(sw::CC, class | c1);
    Ok(())
}

// ---------------------------------------------------------------------
// Stack operations.

fn fxch(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    let i = if ins.op_count() == 0 { 1 } else { st_index(ins, ins.op_count() - 1) };
    cpu.set_cc(sw::C1, 0);
    if cpu.st_empty(0) || cpu.st_empty(i) {
        cpu.fpu_flag(fl::IE | u32::from(sw::SF));
        if !cpu.fpu_masked(fl::IE) {
            return Ok(());
        }
        for r in [0, i] {
            if cpu.st_empty(r) {
                cpu.set_st(r, sp::INDEFINITE);
            }
        }
    }
    let (a, b) = (cpu.st(0), cpu.st(i));
    cpu.set_st(0, b);
    cpu.set_st(i, a);
    Ok(())
}

fn fincdec(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    let top = cpu.fpu_top();
    let new = if ins.mnemonic() == M::Fincstp { top + 1 } else { top + 7 };
    cpu.set_fpu_top(new);
    cpu.set_cc(sw::C1, 0);
    Ok(())
}

fn ffree(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    let p = cpu.st_phys(st_index(ins, 0));
    cpu.s.fx.ftw &= !(1 << p);
    cpu.set_cc(sw::C1, 0);
    if ins.mnemonic() == M::Ffreep {
        cpu.fpu_pop();
    }
    Ok(())
}

fn fcmov(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    let f = cpu.s.flags();
    let (cf, zf, pf) = (f & flags::CF != 0, f & flags::ZF != 0, f & flags::PF != 0);
    let cond = match ins.mnemonic() {
        M::Fcmovb => cf,
        M::Fcmove => zf,
        M::Fcmovbe => cf || zf,
        M::Fcmovu => pf,
        M::Fcmovnb => !cf,
        M::Fcmovne => !zf,
        M::Fcmovnbe => !cf && !zf,
        _ => !pf,
    };
    let i = st_index(ins, 1);
    if cpu.st_empty(0) || cpu.st_empty(i) {
        cpu.set_cc(sw::C1, 0);
        cpu.fpu_flag(fl::IE | u32::from(sw::SF));
        if cpu.fpu_masked(fl::IE) {
            cpu.set_st(0, sp::INDEFINITE);
        }
        return Ok(());
    }
    if cond {
        let v = cpu.st(i);
        cpu.set_st(0, v);
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Packed BCD.

fn fbld(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    let (sreg, off) = cpu.mem_operand(ins);
    let mut b = [0u8; 10];
    cpu.read_bytes(sreg, off, &mut b)?;
    cpu.x87_note(ins);
    let mut n: i64 = 0;
    for i in (0..9).rev() {
        n = n * 100 + i64::from(b[i] >> 4) * 10 + i64::from(b[i] & 0xf);
    }
    let neg = b[9] & 0x80 != 0;
    let v = if n == 0 { sp::zero80(neg) } else { sfc!(i64_to_extF80(if neg { -n } else { n })) };
    if cpu.push_room() {
        cpu.set_cc(sw::C1, 0);
        cpu.fpu_push(v);
    }
    Ok(())
}

fn fbstp(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    let (sreg, off) = cpu.mem_operand(ins);
    const INDEF: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0xff];
    if cpu.st_empty(0) {
        if cpu.fpu_masked(fl::IE) {
            cpu.write_bytes(sreg, off, &INDEF)?;
        }
        cpu.x87_note(ins);
        cpu.stack_underflow(None, 1);
        return Ok(());
    }
    let v = cpu.st(0);
    let (r, mut flags, c1) = to_int(v, 8, cpu.fpu_rc(), false);
    if flags & fl::IE == 0 && r.unsigned_abs() >= 1_000_000_000_000_000_000 {
        flags = fl::IE;
    }
    if flags & fl::IE != 0 && !cpu.fpu_masked(fl::IE) {
        cpu.x87_note(ins);
        cpu.set_cc(sw::C1, 0);
        cpu.fpu_flag(fl::IE);
        return Ok(());
    }
    let mut b = INDEF;
    if flags & fl::IE == 0 {
        let mut n = r.unsigned_abs();
        for byte in b.iter_mut().take(9) {
            let lo = (n % 10) as u8;
            n /= 10;
            let hi = (n % 10) as u8;
            n /= 10;
            *byte = hi << 4 | lo;
        }
        b[9] = if sp::sign80(v) { 0x80 } else { 0 };
    }
    cpu.write_bytes(sreg, off, &b)?;
    cpu.x87_note(ins);
    cpu.fpu_flag(flags);
    cpu.set_cc(sw::C1, if c1 { sw::C1 } else { 0 });
    cpu.fpu_pop();
    Ok(())
}
