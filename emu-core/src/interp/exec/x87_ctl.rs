//! x87 control instructions (FNINIT, FNCLEX, FLDCW/FNSTCW, FNSTSW,
//! FNSTENV/FLDENV, FNSAVE/FRSTOR, FWAIT, FNOP), and the instructions
//! computed outside SoftFloat: FSCALE, FXTRACT, FPREM/FPREM1 (exact, with
//! integer arithmetic) and the transcendentals.
//!
//! Precision limit: FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X and
//! FYL2XP1 evaluate the function in binary64 (Rust's libm) and widen the
//! result, so they are accurate to about 2^-52 relative rather than the
//! hardware's ~2^-63. FSIN/FCOS/FSINCOS/FPTAN reduce their argument
//! exactly modulo the hardware's 66-bit pi first, so large arguments give
//! the hardware's (not the mathematical) values; FYL2X takes the exponent
//! exactly. Special cases (zeros, infinities, NaNs, out-of-range
//! arguments with C2, stack faults, the flags) follow the SDM.

use iced_x86::{Instruction, MemorySize, Mnemonic as M, OpKind, Register};

use crate::cpu::seg;

use super::super::fault::{Fault, R};
use super::super::Interpreter;
use super::softfp::{self as sp, fl, sfc, F80, Ty};
use super::x87::{commit, denormal_check, run80, sw, unsupported, Out, CR0_MP, CR0_TS};
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Fninit, M::Finit], finit);
    t.set(&[M::Fnclex, M::Fclex], fclex);
    t.set(&[M::Fnstsw, M::Fstsw], fstsw);
    t.set(&[M::Fnstcw, M::Fstcw], fstcw);
    t.set(&[M::Fldcw], fldcw);
    t.set(&[M::Fnstenv, M::Fstenv], fstenv);
    t.set(&[M::Fldenv], fldenv);
    t.set(&[M::Fnsave, M::Fsave], fsave);
    t.set(&[M::Frstor], frstor);
    t.set(&[M::Wait], fwait);
    t.set(&[M::Fnop, M::Fneni, M::Feni, M::Fndisi, M::Fdisi, M::Fnsetpm, M::Fsetpm], fnop);
    t.set(&[M::Fscale], fscale);
    t.set(&[M::Fxtract], fxtract);
    t.set(&[M::Fprem, M::Fprem1], fprem);
    t.set(&[M::Fsin, M::Fcos, M::Fsincos, M::Fptan], trig);
    t.set(&[M::Fpatan, M::Fyl2x, M::Fyl2xp1], two_operand_transcendental);
    t.set(&[M::F2xm1], f2xm1);
}

/// Whether the combined WAIT form (FINIT, FCLEX, FSTSW...) was decoded.
fn waits(ins: &Instruction) -> bool {
    matches!(ins.mnemonic(), M::Finit | M::Fclex | M::Fstsw | M::Fstcw | M::Fstenv | M::Fsave)
}

impl Interpreter {
    /// FNINIT's state.
    pub(super) fn fpu_init(&mut self) {
        let fx = &mut self.s.fx;
        fx.fcw = 0x37f;
        fx.fsw = 0;
        fx.ftw = 0;
        fx.fop = 0;
        fx.fip = 0;
        fx.fdp = 0;
    }

    /// The full two-bit tag word, computed from the abridged tags and
    /// the register contents.
    pub(super) fn full_tag_word(&self) -> u16 {
        let mut tw = 0u16;
        for p in 0..8 {
            let tag = if self.s.fx.ftw & (1 << p) == 0 {
                3
            } else {
                let v = sp::f80_from_bytes(&self.s.fx.st[p]);
                let e = sp::exp80(v);
                if e == 0 && v.signif == 0 {
                    1
                } else if e == 0x7fff || e == 0 || v.signif >> 63 == 0 {
                    2
                } else {
                    0
                }
            };
            tw |= tag << (2 * p);
        }
        tw
    }

    /// Loads a full tag word: only "empty" is kept, the rest is
    /// recomputed from the contents when needed.
    pub(super) fn set_full_tag_word(&mut self, tw: u16) {
        let mut ftw = 0u8;
        for p in 0..8 {
            if (tw >> (2 * p)) & 3 != 3 {
                ftw |= 1 << p;
            }
        }
        self.s.fx.ftw = ftw;
    }

    /// Writes the 14- or 28-byte environment at `off`.
    fn store_env(&mut self, sreg: usize, off: u64, wide: bool) -> R<()> {
        let fx = self.s.fx;
        let tw = self.full_tag_word();
        let real = !self.protected_mode() || self.vm86();
        let (fcw, fsw) = (u32::from(fx.fcw), u32::from(fx.fsw));
        let fop = u32::from(fx.fop) & 0x7ff;
        let mut words: [u32; 7] = [fcw, fsw, u32::from(tw), 0, 0, 0, 0];
        if real {
            let ip = (fx.fip as u32).wrapping_add(u32::from(self.s.segs[seg::CS].selector) << 4);
            let dp = fx.fdp as u32;
            words[3] = ip & 0xffff;
            words[4] = fop | ((ip >> 16) << 12);
            words[5] = dp & 0xffff;
            words[6] = (dp >> 16) << 12;
        } else {
            // FCS and FDS are stored as zero (CPUID.7.EBX[13]); FOP only
            // has room in the 32-bit image.
            words[3] = fx.fip as u32;
            words[4] = if wide { fop << 16 } else { 0 };
            words[5] = fx.fdp as u32;
        }
        let mut b = [0u8; 28];
        if wide {
            for (i, w) in words.iter().enumerate() {
                // The reserved upper halves of the first three read as 1s.
                let w = if i < 3 { w | 0xffff_0000 } else { *w };
                b[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
            }
            self.write_bytes(sreg, off, &b)
        } else {
            for (i, w) in words.iter().enumerate() {
                b[2 * i..2 * i + 2].copy_from_slice(&(*w as u16).to_le_bytes());
            }
            self.write_bytes(sreg, off, &b[..14])
        }
    }

    /// Reads the 14- or 28-byte environment at `off`.
    fn load_env(&mut self, sreg: usize, off: u64, wide: bool) -> R<()> {
        let mut b = [0u8; 28];
        let n = if wide { 28 } else { 14 };
        self.read_bytes(sreg, off, &mut b[..n])?;
        let word = |i: usize| -> u32 {
            if wide {
                u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            } else {
                u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
            }
        };
        let real = !self.protected_mode() || self.vm86();
        self.s.fx.fcw = (word(0) as u16 & 0x1f7f) | 0x40;
        self.s.fx.fsw = word(1) as u16;
        self.set_full_tag_word(word(2) as u16);
        if real {
            self.s.fx.fip = u64::from((word(3) & 0xffff) | ((word(4) >> 12) << 16));
            self.s.fx.fop = (word(4) & 0x7ff) as u16;
            self.s.fx.fdp = u64::from((word(5) & 0xffff) | ((word(6) >> 12) << 16));
        } else {
            self.s.fx.fip = u64::from(word(3));
            self.s.fx.fop = if wide { ((word(4) >> 16) & 0x7ff) as u16 } else { 0 };
            self.s.fx.fdp = u64::from(word(5));
        }
        self.fpu_update_es();
        Ok(())
    }
}

fn finit(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(waits(ins))?;
    cpu.fpu_init();
    Ok(())
}

fn fclex(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(waits(ins))?;
    cpu.s.fx.fsw &= !(0x7f | sw::ES | sw::B);
    Ok(())
}

fn fstsw(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(waits(ins))?;
    let v = u64::from(cpu.s.fx.fsw);
    if ins.op0_kind() == OpKind::Register {
        cpu.set_reg(Register::AX, v);
        Ok(())
    } else {
        cpu.write_op(ins, 0, v)
    }
}

fn fstcw(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(waits(ins))?;
    let v = u64::from(cpu.s.fx.fcw);
    cpu.write_op(ins, 0, v)
}

fn fldcw(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(false)?;
    let v = cpu.read_op(ins, 0)? as u16;
    // Bit 6 reads as 1; bits 13-15 are reserved (zero).
    cpu.s.fx.fcw = (v & 0x1f7f) | 0x40;
    cpu.fpu_update_es();
    Ok(())
}

fn env_is_wide(ins: &Instruction) -> bool {
    matches!(ins.memory_size(), MemorySize::FpuEnv28 | MemorySize::FpuState108)
}

fn fstenv(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(waits(ins))?;
    let (sreg, off) = cpu.mem_operand(ins);
    cpu.store_env(sreg, off, env_is_wide(ins))?;
    // All exceptions masked afterwards.
    cpu.s.fx.fcw |= 0x3f;
    cpu.fpu_update_es();
    Ok(())
}

fn fldenv(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(false)?;
    let (sreg, off) = cpu.mem_operand(ins);
    cpu.load_env(sreg, off, env_is_wide(ins))
}

fn fsave(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(waits(ins))?;
    let (sreg, off) = cpu.mem_operand(ins);
    let wide = env_is_wide(ins);
    let env = if wide { 28 } else { 14 };
    let mut regs = [0u8; 80];
    for i in 0..8 {
        sp::f80_to_bytes(cpu.st(i), &mut regs[10 * i..10 * i + 10]);
    }
    // Check the whole image is writable before writing any of it.
    let lin = cpu.linear(sreg, off, (env + 80) as u64, crate::mmu::Access::Write)?;
    cpu.probe_write(lin, env + 80)?;
    cpu.store_env(sreg, off, wide)?;
    cpu.write_bytes(sreg, off.wrapping_add(env as u64), &regs)?;
    cpu.fpu_init();
    Ok(())
}

fn frstor(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(false)?;
    let (sreg, off) = cpu.mem_operand(ins);
    let wide = env_is_wide(ins);
    let env = if wide { 28 } else { 14 };
    let mut regs = [0u8; 80];
    cpu.read_bytes(sreg, off.wrapping_add(env as u64), &mut regs)?;
    cpu.load_env(sreg, off, wide)?;
    for i in 0..8 {
        let p = cpu.st_phys(i);
        cpu.s.fx.st[p][..10].copy_from_slice(&regs[10 * i..10 * i + 10]);
    }
    Ok(())
}

fn fwait(cpu: &mut Interpreter, _: &Instruction) -> R<()> {
    if cpu.s.cr0 & (CR0_MP | CR0_TS) == CR0_MP | CR0_TS {
        return Err(Fault::nm());
    }
    cpu.fpu_check_pending()
}

fn fnop(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    if ins.mnemonic() == M::Fnop {
        cpu.x87_note(ins);
    }
    Ok(())
}

// ---------------------------------------------------------------------
// FSCALE, FXTRACT.

/// `v * 2^k` rounded once under `rc` (the x87 FSCALE), for finite
/// non-zero supported `v`.
fn scale80(v: F80, k: i64, rc: u32) -> Out {
    let neg = sp::sign80(v);
    let (sig, e) = sp::unpack80(v);
    let target = i64::from(e) + k; // exponent of the integer bit
    if (-16382..=16383).contains(&target) {
        return Out { v: sp::exact80(neg, u128::from(sig), target as i32 - 63), flags: 0, c1: false };
    }
    // Out of range: one rounding through SoftFloat's multiply, with the
    // significand moved to a safe exponent and the rest as a power of two.
    let (base_e, rest) = if target > 0 { (16000i64, (target - 16000).min(16383)) } else { (-10100i64, (target + 10100).max(-6400)) };
    let x = sp::exact80(neg, u128::from(sig), base_e as i32 - 63);
    let p = pow2(rest as i32);
    run80(rc, 80, || sfc!(extF80_mul(x, p)))
}

/// 2^k for -16445 <= k <= 16383.
fn pow2(k: i32) -> F80 {
    sp::exact80(false, 1, k)
}

fn fscale(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    if cpu.st_empty(0) || cpu.st_empty(1) {
        cpu.stack_underflow(Some(0), 0);
        return Ok(());
    }
    let (a, b) = (cpu.st(0), cpu.st(1));
    let rc = cpu.fpu_rc();
    let out = if let Some(o) = unsupported(&[a, b]) {
        o
    } else if sp::is_nan80(a) || sp::is_nan80(b) {
        let (v, flags) = sp::with(rc, 80, || sfc!(extF80_add(a, b)));
        Out { v, flags: flags & fl::IE, c1: false }
    } else if sp::is_inf80(b) {
        let neg_b = sp::sign80(b);
        if sp::is_zero80(a) && !neg_b || sp::is_inf80(a) && neg_b {
            Out { v: sp::INDEFINITE, flags: fl::IE, c1: false }
        } else if sp::is_zero80(a) || sp::is_inf80(a) {
            Out { v: a, flags: 0, c1: false }
        } else {
            let de = if sp::is_denormal80(a) { fl::DE } else { 0 };
            let v = if neg_b { sp::zero80(sp::sign80(a)) } else { sp::inf80(sp::sign80(a)) };
            Out { v, flags: de, c1: false }
        }
    } else if sp::is_zero80(a) || sp::is_inf80(a) {
        Out { v: a, flags: if sp::is_denormal80(b) { fl::DE } else { 0 }, c1: false }
    } else {
        let mode = sp::sf_mode(sp::RC_ZERO);
        let bc = sp::canon80(b);
        let (k, f) = sp::with(sp::RC_ZERO, 80, || sfc!(extF80_to_i64(bc, mode, false)));
        // Clamp to a range that still over- or underflows any operand
        // (an out-of-range conversion gives the integer indefinite).
        let k = if f & fl::IE != 0 { if sp::sign80(b) { -70000 } else { 70000 } } else { k.clamp(-70000, 70000) };
        let mut o = scale80(a, k, rc);
        denormal_check(&mut o, &[a, b], false);
        o
    };
    commit(cpu, 0, out, 0);
    Ok(())
}

fn fxtract(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    if cpu.st_empty(0) {
        if cpu.stack_underflow(Some(0), 0) && cpu.push_room() {
            cpu.fpu_push(sp::INDEFINITE);
        }
        return Ok(());
    }
    if !cpu.st_empty(7) {
        // Overflow of the second push: the masked response replaces ST(0)
        // and pushes the indefinite.
        cpu.set_cc(sw::C1, sw::C1);
        cpu.fpu_flag(fl::IE | u32::from(sw::SF));
        if cpu.fpu_masked(fl::IE) {
            cpu.set_st(0, sp::INDEFINITE);
            cpu.fpu_push(sp::INDEFINITE);
        }
        return Ok(());
    }
    let a = cpu.st(0);
    let (exp, sig, flags) = if sp::is_unsupported80(a) {
        (sp::INDEFINITE, sp::INDEFINITE, fl::IE)
    } else if sp::is_nan80(a) {
        let q = sp::f80(a.signExp, a.signif | 1 << 62);
        (q, q, if sp::is_snan80(a) { fl::IE } else { 0 })
    } else if sp::is_inf80(a) {
        (sp::inf80(false), a, 0)
    } else if sp::is_zero80(a) {
        (sp::inf80(true), a, fl::ZE)
    } else {
        let (s, e) = sp::unpack80(a);
        let ev = sfc!(i32_to_extF80(e));
        let de = if sp::is_denormal80(a) { fl::DE } else { 0 };
        (ev, sp::exact80(sp::sign80(a), u128::from(s), -63), de)
    };
    cpu.set_cc(sw::C1, 0);
    if !cpu.fpu_report(flags, false) {
        return Ok(());
    }
    cpu.set_st(0, exp);
    cpu.fpu_push(sig);
    Ok(())
}

// ---------------------------------------------------------------------
// FPREM, FPREM1.

fn fprem(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    let ieee = ins.mnemonic() == M::Fprem1;
    if cpu.st_empty(0) || cpu.st_empty(1) {
        cpu.set_cc(sw::C2, 0);
        cpu.stack_underflow(Some(0), 0);
        return Ok(());
    }
    let (a, b) = (cpu.st(0), cpu.st(1));
    let quotient_cc = |q: u64| -> u16 {
        (if q & 4 != 0 { sw::C0 } else { 0 }) | (if q & 2 != 0 { sw::C3 } else { 0 }) | (if q & 1 != 0 { sw::C1 } else { 0 })
    };
    let special = if let Some(o) = unsupported(&[a, b]) {
        Some(o)
    } else if sp::is_nan80(a) || sp::is_nan80(b) {
        let (v, flags) = sp::with(0, 80, || sfc!(extF80_add(a, b)));
        Some(Out { v, flags: flags & fl::IE, c1: false })
    } else if sp::is_inf80(a) || sp::is_zero80(b) {
        Some(Out { v: sp::INDEFINITE, flags: fl::IE, c1: false })
    } else if sp::is_zero80(a) || sp::is_inf80(b) {
        let de = if sp::is_denormal80(a) || sp::is_denormal80(b) { fl::DE } else { 0 };
        Some(Out { v: sp::canon80(a), flags: de, c1: false })
    } else {
        None
    };
    if let Some(o) = special {
        // An invalid operand leaves C0 and C3 alone.
        let bits = if o.flags & fl::IE != 0 || sp::is_nan80(o.v) { sw::C2 } else { sw::C0 | sw::C2 | sw::C3 };
        cpu.set_cc(bits, 0);
        commit(cpu, 0, o, 0);
        return Ok(());
    }
    let de = if sp::is_denormal80(a) || sp::is_denormal80(b) { fl::DE } else { 0 };
    let neg = sp::sign80(a);
    let (sa, ea) = sp::unpack80(a);
    let (sb, eb) = sp::unpack80(b);
    let d = ea - eb;
    let (v, cc) = if d >= 64 {
        // Partial remainder: reduce the exponent difference by d - n,
        // n in 32..=63, with a truncated quotient.
        let n = 32 + (d % 32);
        let r = (u128::from(sa) << n) % u128::from(sb);
        (sp::exact80(neg, r, ea - 63 - n), sw::C2)
    } else if d < 0 {
        // |ST0| < |ST1|: quotient 0, except FPREM1 rounding to 1 when
        // |ST0| > |ST1| / 2.
        if ieee && d == -1 && sa > sb {
            // q = 1: |r| = |b| - |a|, counted in units of 2^(eb - 64).
            let r = (u128::from(sb) << 1) - u128::from(sa);
            (sp::exact80(!neg, r, eb - 64), quotient_cc(1))
        } else {
            (sp::exact80(neg, u128::from(sa), ea - 63), 0)
        }
    } else {
        let num = u128::from(sa) << d;
        let den = u128::from(sb);
        let mut q = num / den;
        let mut r = num % den;
        let mut rneg = neg;
        if ieee && (2 * r > den || (2 * r == den && q & 1 == 1)) {
            q += 1;
            r = den - r;
            rneg = !neg;
        }
        let v = if r == 0 { sp::zero80(neg) } else { sp::exact80(rneg, r, eb - 63) };
        (v, quotient_cc(q as u64))
    };
    // A denormal result signals an unmasked underflow (also alongside an
    // unmasked denormal operand, which stores nothing and clears the
    // condition codes).
    let tiny = if sp::is_denormal80(v) && !cpu.fpu_masked(fl::UE) { fl::UE } else { 0 };
    cpu.fpu_flag(de | tiny);
    if !cpu.fpu_masked(de) {
        cpu.set_cc(sw::CC, 0);
        return Ok(());
    }
    cpu.set_cc(sw::CC, cc);
    cpu.set_st(0, v);
    Ok(())
}

// ---------------------------------------------------------------------
// Transcendentals (binary64 inside).

fn to_f64(v: F80) -> f64 {
    f64::from_bits(sp::with(0, 80, || sp::from80(Ty::D, v)).0)
}

fn from_f64(x: f64) -> F80 {
    sp::with(0, 80, || sp::to80(Ty::D, x.to_bits())).0
}

/// A NaN operand's result (quieted; IE for a signalling one).
fn nan_result(a: F80, b: F80) -> Out {
    let (v, flags) = sp::with(0, 80, || sfc!(extF80_add(a, b)));
    Out { v, flags: flags & fl::IE, c1: false }
}

/// A binary64-computed result: inexact unless exactly representable
/// special values.
fn approx(x: f64) -> Out {
    Out { v: from_f64(x), flags: fl::PE, c1: false }
}

/// The hardware's 66-bit pi, as pi * 2^64 truncated to 66 bits.
const PI66: u128 = 0x3_243f_6a88_85a3_08d3;

/// sin and cos of a finite value with |x| < 2^63, with the argument
/// reduced exactly modulo the 66-bit pi/2 as the hardware does, then the
/// functions evaluated in binary64.
fn sin_cos(a: F80) -> (f64, f64) {
    if sp::is_zero80(a) {
        return (if sp::sign80(a) { -0.0 } else { 0.0 }, 1.0);
    }
    let (sig, e) = sp::unpack80(a);
    let neg = sp::sign80(a);
    let (q, s, c) = if e < 0 {
        let y = to_f64(sp::f80(a.signExp & 0x7fff, a.signif));
        (0u32, y.sin(), y.cos())
    } else {
        // x = sig * 2^(e + 2) * 2^-65, pi/2 = PI66 * 2^-65: double the
        // remainder e + 2 times, keeping the quotient's low bits.
        let mut r = u128::from(sig) % PI66;
        let mut q = 0u32;
        for _ in 0..e + 2 {
            r <<= 1;
            q <<= 1;
            if r >= PI66 {
                r -= PI66;
                q |= 1;
            }
        }
        let scale = 2f64.powi(-65);
        let (s, c) = if r <= PI66 / 2 {
            let y = r as f64 * scale;
            (y.sin(), y.cos())
        } else {
            let t = (PI66 - r) as f64 * scale;
            (t.cos(), t.sin())
        };
        (q & 3, s, c)
    };
    let (s, c) = match q {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    };
    (if neg { -s } else { s }, c)
}

fn trig(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    let m = ins.mnemonic();
    let pushes = matches!(m, M::Fsincos | M::Fptan);
    if cpu.st_empty(0) {
        cpu.set_cc(sw::C2, 0);
        if cpu.stack_underflow(Some(0), 0) && pushes && cpu.push_room() {
            cpu.fpu_push(sp::INDEFINITE);
        }
        return Ok(());
    }
    if pushes && !cpu.st_empty(7) {
        cpu.set_cc(sw::C1, sw::C1);
        cpu.fpu_flag(fl::IE | u32::from(sw::SF));
        if cpu.fpu_masked(fl::IE) {
            cpu.set_st(0, sp::INDEFINITE);
            cpu.fpu_push(sp::INDEFINITE);
        }
        return Ok(());
    }
    let a = cpu.st(0);
    cpu.set_cc(sw::C2, 0);
    // Out of range (|x| >= 2^63): C2 set, nothing changes.
    if !sp::is_nan80(a) && !sp::is_unsupported80(a) && !sp::is_inf80(a) && !sp::is_zero80(a) && sp::unpack80(a).1 >= 63 {
        cpu.set_cc(sw::C2, sw::C2);
        return Ok(());
    }
    let (first, second): (Out, Option<Out>) = if let Some(o) = unsupported(&[a]) {
        (Out { ..o }, pushes.then_some(Out { v: sp::INDEFINITE, flags: 0, c1: false }))
    } else if sp::is_nan80(a) {
        let o = nan_result(a, a);
        let v = o.v;
        (o, pushes.then_some(Out { v, flags: 0, c1: false }))
    } else if sp::is_inf80(a) {
        let o = Out { v: sp::INDEFINITE, flags: fl::IE, c1: false };
        (o, pushes.then_some(Out { v: sp::INDEFINITE, flags: 0, c1: false }))
    } else {
        let (sin, cos) = sin_cos(a);
        let tiny = sp::is_zero80(a) || sp::unpack80(a).1 < -32;
        let de = if sp::is_denormal80(a) { fl::DE } else { 0 };
        let exact_zero = sp::is_zero80(a);
        let same = |flags: u32| Out { v: a, flags, c1: false };
        let one = |flags: u32| Out { v: sp::ONE80, flags, c1: false };
        let pe = if exact_zero { 0 } else { fl::PE };
        match m {
            M::Fsin if tiny => (same(pe | de), None),
            M::Fsin => (approx(sin), None),
            M::Fcos if tiny => (one(pe | de), None),
            M::Fcos => (approx(cos), None),
            // FSINCOS: ST(0) = sin, then push cos.
            M::Fsincos if tiny => (same(pe | de), Some(one(pe))),
            M::Fsincos => (approx(sin), Some(approx(cos))),
            // FPTAN: ST(0) = tan, then push 1.0.
            _ if tiny => (same(pe | de), Some(one(0))),
            _ => (approx(sin / cos), Some(one(0))),
        }
    };
    let flags = first.flags | second.as_ref().map_or(0, |o| o.flags);
    cpu.set_cc(sw::C1, 0);
    if !cpu.fpu_report(flags, false) {
        return Ok(());
    }
    cpu.set_st(0, first.v);
    if let Some(s) = second {
        cpu.fpu_push(s.v);
    }
    Ok(())
}

fn two_operand_transcendental(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    cpu.x87_enter(true)?;
    cpu.x87_note(ins);
    if cpu.st_empty(0) || cpu.st_empty(1) {
        cpu.stack_underflow(Some(1), 1);
        return Ok(());
    }
    let (x, y) = (cpu.st(0), cpu.st(1));
    let rc = cpu.fpu_rc();
    let out = if let Some(o) = unsupported(&[x, y]) {
        o
    } else if sp::is_nan80(x) || sp::is_nan80(y) {
        nan_result(y, x)
    } else {
        let de = if sp::is_denormal80(x) || sp::is_denormal80(y) { fl::DE } else { 0 };
        let mut o = match ins.mnemonic() {
            M::Fpatan => {
                let r = to_f64(y).atan2(to_f64(x));
                let exact = r == 0.0 && (sp::is_zero80(y) || sp::is_inf80(x) && !sp::is_inf80(y));
                let mut o = approx(r);
                if exact {
                    o.flags = 0;
                }
                o
            }
            M::Fyl2x => {
                // log2(x) as an extended value: exact exponent plus the
                // binary64 log2 of the significand.
                let l = if sp::sign80(x) && !sp::is_zero80(x) {
                    Out { v: sp::INDEFINITE, flags: fl::IE, c1: false }
                } else if sp::is_zero80(x) {
                    Out { v: sp::inf80(true), flags: fl::ZE, c1: false }
                } else if sp::is_inf80(x) {
                    Out { v: x, flags: 0, c1: false }
                } else {
                    // x = m * 2^e with m in [sqrt(1/2), sqrt(2)); log2(m)
                    // from the exact m - 1.
                    let (s, mut e) = sp::unpack80(x);
                    let mut mv = sp::exact80(false, u128::from(s), -63);
                    if s > 0xb504_f333_f9de_6484 {
                        mv = sp::exact80(false, u128::from(s), -64);
                        e += 1;
                    }
                    let d = sp::with(0, 80, || sfc!(extF80_sub(mv, sp::ONE80))).0;
                    let m = to_f64(d).ln_1p() / std::f64::consts::LN_2;
                    let ev = sfc!(i32_to_extF80(e));
                    let mv = from_f64(m);
                    let (v, f) = sp::with(rc, 80, || sfc!(extF80_add(ev, mv)));
                    let exact = s == 1 << 63;
                    Out { v, flags: if exact { f } else { f | fl::PE }, c1: false }
                };
                if l.flags & fl::IE != 0 {
                    l
                } else {
                    let lv = l.v;
                    let mut o = run80(rc, 80, || sfc!(extF80_mul(y, lv)));
                    if o.flags & fl::IE == 0 {
                        o.flags |= l.flags;
                    }
                    o
                }
            }
            _ => {
                // FYL2XP1: y * log2(x + 1).
                let xv = to_f64(x);
                if sp::is_inf80(x) || sp::is_inf80(y) && sp::is_zero80(x) {
                    Out { v: sp::INDEFINITE, flags: fl::IE, c1: false }
                } else if sp::is_zero80(x) {
                    let (v, f) = sp::with(rc, 80, || sfc!(extF80_mul(y, x)));
                    Out { v, flags: f, c1: false }
                } else {
                    let lv = from_f64(xv.ln_1p() / std::f64::consts::LN_2);
                    let mut o = run80(rc, 80, || sfc!(extF80_mul(y, lv)));
                    o.flags |= fl::PE;
                    o
                }
            }
        };
        if o.flags & (fl::IE | fl::ZE) == 0 {
            o.flags |= de;
        }
        o
    };
    commit(cpu, 1, out, 1);
    Ok(())
}

fn f2xm1(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let Some(a) = cpu.x87_st0_operand(ins)? else { return Ok(()) };
    let out = if let Some(o) = unsupported(&[a]) {
        o
    } else if sp::is_nan80(a) {
        nan_result(a, a)
    } else if sp::is_zero80(a) {
        Out { v: a, flags: 0, c1: false }
    } else if sp::is_inf80(a) {
        Out { v: if sp::sign80(a) { sp::neg80(sp::ONE80) } else { a }, flags: 0, c1: false }
    } else {
        let x = to_f64(a);
        let mut o = approx((x * std::f64::consts::LN_2).exp_m1());
        if sp::is_denormal80(a) {
            o.flags |= fl::DE | fl::UE;
        }
        o
    };
    commit(cpu, 0, out, 0);
    Ok(())
}
