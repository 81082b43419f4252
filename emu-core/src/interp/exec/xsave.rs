//! The XSAVE feature set (SDM Vol. 1, chapter 13): XCR0 through XGETBV and
//! XSETBV, and XSAVE, XSAVEOPT, XSAVEC and XRSTOR (standard and compacted
//! forms) over the two state components this CPU has, x87 (0) and SSE (1).
//!
//! The XSAVE area is the FXSAVE image (the legacy region, bytes 0-511)
//! followed by the 64-byte XSAVE header. With no extended components the
//! standard and compacted formats share that 576-byte layout and differ
//! only in the header. XSAVES and XRSTORS are not advertised (there is no
//! IA32_XSS), so they are invalid opcodes.
//!
//! XINUSE, the bitmap of components not in their initial configuration,
//! is computed from the register values when an instruction needs it
//! rather than tracked: a component is reported in use unless its values
//! are exactly the initial ones, which the SDM allows (XINUSE[i] = 1 is
//! always permitted; XINUSE[i] = 0 must imply the initial configuration).
//! XSAVEOPT's init and modified optimisations are optional, so it saves
//! exactly as XSAVE does.

use iced_x86::{Instruction, Mnemonic as M, Register};

use crate::cpu::reg;
use crate::mmu::Access;

use super::super::cpuid::{XCR0_SUPPORTED, XSAVE_AREA_SIZE};
use super::super::fault::{Fault, R};
use super::super::Interpreter;
use super::fxsave::MXCSR_MASK;
use super::x87::CR0_TS;
use super::Table;

/// CR4.OSXSAVE: the OS has enabled the XSAVE feature set.
pub(super) const CR4_OSXSAVE: u64 = 1 << 18;

/// State component bits (in XCR0, RFBM, XSTATE_BV and XCOMP_BV).
const X87: u64 = 1 << 0;
const SSE: u64 = 1 << 1;
/// AVX is never enabled here, but the standard forms also save and load
/// MXCSR for it, so the rule is written out in full.
const AVX: u64 = 1 << 2;

/// XCOMP_BV bit 63: the area is in the compacted format.
const COMPACTED: u64 = 1 << 63;

/// Offset of the XSAVE header in the area.
const HEADER: u64 = 512;

/// The initial MXCSR (SDM 13.6), which the compacted XRSTOR loads when it
/// initialises SSE state.
const MXCSR_INIT: u32 = 0x1f80;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Xgetbv, M::Xsetbv], xcr);
    t.set(&[M::Xsave, M::Xsave64, M::Xsaveopt, M::Xsaveopt64], xsave);
    t.set(&[M::Xsavec, M::Xsavec64], xsavec);
    t.set(&[M::Xrstor, M::Xrstor64], xrstor);
    // CPUID.(0DH,1):EAX[3] is clear: a CPU without them raises #UD.
    t.set(&[M::Xsaves, M::Xsaves64, M::Xrstors, M::Xrstors64], |_, _| Err(Fault::ud()));
}

/// The legacy-region byte ranges of each part of the state.
mod range {
    use std::ops::Range;
    /// FCW, FSW, FTW, FOP, FIP and FDP.
    pub const X87_ENV: Range<usize> = 0..24;
    /// MXCSR and MXCSR_MASK.
    pub const MXCSR: Range<usize> = 24..32;
    /// ST0-ST7 (MM0-MM7).
    pub const X87_REGS: Range<usize> = 32..160;
    /// Where the XMM registers start.
    pub const XMM_START: usize = 160;
}

impl Interpreter {
    /// XINUSE for x87 and SSE, from the values (see the module comment).
    /// SSE counts a non-default MXCSR as in use, so XSAVEC always saves
    /// such an MXCSR rather than leave the compacted XRSTOR to reset it to
    /// 1F80H.
    fn xinuse(&self) -> u64 {
        let fx = &self.s.fx;
        let x87 = fx.fcw != 0x37f
            || fx.fsw != 0
            || fx.ftw != 0
            || fx.fop != 0
            || fx.fip != 0
            || fx.fdp != 0
            || fx.st.iter().any(|r| r[..10].iter().any(|&b| b != 0));
        let sse = fx.mxcsr != MXCSR_INIT || fx.xmm.iter().any(|&x| x != 0);
        (if x87 { X87 } else { 0 }) | (if sse { SSE } else { 0 })
    }

    /// The end of the XMM registers in the legacy region: XMM8-XMM15 are
    /// neither saved nor restored outside 64-bit mode (SDM 13.5.2).
    fn xmm_end(&self) -> usize {
        if self.in_64bit_mode() { 416 } else { 288 }
    }

    /// The checks every instruction of the family makes, in the SDM's
    /// order: #UD without CR4.OSXSAVE, #NM with CR0.TS, then the area's
    /// segment and its 64-byte alignment. Returns the area's segment,
    /// offset and linear address and the requested-feature bitmap.
    fn xsave_enter(&self, ins: &Instruction, access: Access) -> R<(usize, u64, u64, u64)> {
        if self.s.cr4 & CR4_OSXSAVE == 0 {
            return Err(Fault::ud());
        }
        if self.s.cr0 & CR0_TS != 0 {
            return Err(Fault::nm());
        }
        let (sreg, off) = self.mem_operand(ins);
        let lin = self.linear(sreg, off, XSAVE_AREA_SIZE.into(), access)?;
        if lin & 63 != 0 {
            return Err(Fault::gp0());
        }
        let mask = (self.s.gpr[reg::RDX] << 32) | (self.s.gpr[reg::RAX] & 0xffff_ffff);
        Ok((sreg, off, lin, mask & self.s.xcr0))
    }

    /// The legacy region of the current state in the layout `ins` uses:
    /// without REX.W, 32-bit FIP and FDP with FCS and FDS stored as zero
    /// (CPUID.(07H,0):EBX[13] is set).
    fn legacy_image(&self, ins: &Instruction) -> [u8; 512] {
        let mut b = self.fx_image();
        if !rex_w(ins) {
            b[12..16].fill(0);
            b[20..24].fill(0);
        }
        b
    }

    /// Writes `parts` of `image` to the area at `sreg:off`.
    fn write_parts(&mut self, sreg: usize, off: u64, image: &[u8; 512], parts: &[std::ops::Range<usize>]) -> R<()> {
        for p in parts {
            self.write_bytes(sreg, off.wrapping_add(p.start as u64), &image[p.clone()])?;
        }
        Ok(())
    }
}

/// Whether `ins` is the REX.W form, which uses 64-bit FIP and FDP.
fn rex_w(ins: &Instruction) -> bool {
    matches!(ins.mnemonic(), M::Xsave64 | M::Xsaveopt64 | M::Xsavec64 | M::Xrstor64)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// XGETBV and XSETBV. Only XCR0 exists: XGETBV with ECX = 1 needs
/// CPUID.(0DH,1):EAX[2], which is not advertised.
fn xcr(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    if cpu.s.cr4 & CR4_OSXSAVE == 0 {
        return Err(Fault::ud());
    }
    let index = cpu.s.gpr[reg::RCX] as u32;
    if ins.mnemonic() == M::Xgetbv {
        if index != 0 {
            return Err(Fault::gp0());
        }
        let v = cpu.s.xcr0;
        cpu.set_reg(Register::EAX, v & 0xffff_ffff);
        cpu.set_reg(Register::EDX, v >> 32);
        return Ok(());
    }
    cpu.require_cpl0()?;
    let v = (cpu.s.gpr[reg::RDX] << 32) | (cpu.s.gpr[reg::RAX] & 0xffff_ffff);
    // x87 state can never be disabled; nothing beyond x87 and SSE exists.
    if index != 0 || v & X87 == 0 || v & !XCR0_SUPPORTED != 0 {
        return Err(Fault::gp0());
    }
    cpu.s.xcr0 = v;
    Ok(())
}

/// XSAVE and XSAVEOPT: the standard format. Each requested component is
/// written whatever its state; XSTATE_BV's requested bits become XINUSE's
/// and its other bits, like the rest of the header, are left as they were.
fn xsave(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let (sreg, off, lin, rfbm) = cpu.xsave_enter(ins, Access::Write)?;
    // Check the whole area first so a #PF leaves memory as it was.
    cpu.probe_write(lin, XSAVE_AREA_SIZE as usize)?;
    let old_bv = cpu.read_mem(sreg, off.wrapping_add(HEADER), 8)?;
    let image = cpu.legacy_image(ins);
    if rfbm & X87 != 0 {
        cpu.write_parts(sreg, off, &image, &[range::X87_ENV, range::X87_REGS])?;
    }
    if rfbm & (SSE | AVX) != 0 {
        cpu.write_parts(sreg, off, &image, &[range::MXCSR])?;
    }
    if rfbm & SSE != 0 {
        let end = cpu.xmm_end();
        cpu.write_bytes(sreg, off.wrapping_add(range::XMM_START as u64), &image[range::XMM_START..end])?;
    }
    let bv = (old_bv & !rfbm) | (cpu.xinuse() & rfbm);
    cpu.write_mem(sreg, off.wrapping_add(HEADER), 8, bv)
}

/// XSAVEC: the compacted format with the init optimisation. Only
/// components requested and in use are written (SSE with MXCSR and
/// MXCSR_MASK); the header gets XSTATE_BV and XCOMP_BV and nothing else.
fn xsavec(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let (sreg, off, lin, rfbm) = cpu.xsave_enter(ins, Access::Write)?;
    cpu.probe_write(lin, XSAVE_AREA_SIZE as usize)?;
    let save = rfbm & cpu.xinuse();
    let image = cpu.legacy_image(ins);
    if save & X87 != 0 {
        cpu.write_parts(sreg, off, &image, &[range::X87_ENV, range::X87_REGS])?;
    }
    if save & SSE != 0 {
        let end = cpu.xmm_end();
        cpu.write_parts(sreg, off, &image, &[range::MXCSR, range::XMM_START..end])?;
    }
    cpu.write_mem(sreg, off.wrapping_add(HEADER), 8, save)?;
    cpu.write_mem(sreg, off.wrapping_add(HEADER + 8), 8, rfbm | COMPACTED)
}

/// XRSTOR, standard or compacted form by XCOMP_BV[63]. Everything is read
/// and checked before any state changes, so a fault leaves the state as
/// it was.
fn xrstor(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let (sreg, off, _, rfbm) = cpu.xsave_enter(ins, Access::Read)?;
    let mut header = [0u8; 64];
    cpu.read_bytes(sreg, off.wrapping_add(HEADER), &mut header)?;
    let xstate_bv = u64_at(&header, 0);
    let xcomp_bv = u64_at(&header, 8);
    let xcr0 = cpu.s.xcr0;
    let compacted = xcomp_bv & COMPACTED != 0;
    // Which components to load from the area and which to initialise,
    // and whether MXCSR is loaded from the area.
    let (restore, init, load_mxcsr) = if compacted {
        // SDM 13.8.2: XCOMP_BV within XCR0, XSTATE_BV (bit 63 included)
        // within XCOMP_BV, and header bytes 63:16 zero.
        if xcomp_bv & !COMPACTED & !xcr0 != 0 || xstate_bv & !xcomp_bv != 0 || header[16..].iter().any(|&b| b != 0) {
            return Err(Fault::gp0());
        }
        let format = xcomp_bv & !COMPACTED;
        let restore = rfbm & format & xstate_bv;
        // A component absent from the format is initialised too.
        let init = rfbm & !(xstate_bv & format);
        (restore, init, restore & SSE != 0)
    } else {
        // SDM 13.8.1: XSTATE_BV within XCR0 and header bytes 23:8 zero.
        if xstate_bv & !xcr0 != 0 || header[8..24].iter().any(|&b| b != 0) {
            return Err(Fault::gp0());
        }
        // The standard form loads MXCSR whenever SSE or AVX is requested,
        // even when it initialises the XMM registers.
        (rfbm & xstate_bv, rfbm & !xstate_bv, rfbm & (SSE | AVX) != 0)
    };
    let end = cpu.xmm_end();
    let mut area = [0u8; 512];
    if restore != 0 || load_mxcsr {
        cpu.read_bytes(sreg, off, &mut area[..end])?;
    }
    if !rex_w(ins) {
        // 32-bit FIP and FDP; FCS and FDS are ignored.
        area[12..16].fill(0);
        area[20..24].fill(0);
    }
    // The new state, built on the current one in the FXSAVE layout.
    let mut image = cpu.fx_image();
    if load_mxcsr {
        let mxcsr = u32::from_le_bytes([area[24], area[25], area[26], area[27]]);
        if mxcsr & !MXCSR_MASK != 0 {
            return Err(Fault::gp0());
        }
        image[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    }
    if restore & X87 != 0 {
        image[range::X87_ENV].copy_from_slice(&area[range::X87_ENV]);
        image[range::X87_REGS].copy_from_slice(&area[range::X87_REGS]);
        // FCW's reserved bits, as FXRSTOR: bit 6 reads as 1, 7 and 13-15 as 0.
        let fcw = (u16::from_le_bytes([image[0], image[1]]) & 0x1f7f) | 0x40;
        image[0..2].copy_from_slice(&fcw.to_le_bytes());
    } else if init & X87 != 0 {
        // FCW 037FH, everything else (FSW, an empty FTW, FOP, FIP, FDP and
        // the data registers) zero.
        image[range::X87_ENV].fill(0);
        image[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        image[range::X87_REGS].fill(0);
    }
    if restore & SSE != 0 {
        image[range::XMM_START..end].copy_from_slice(&area[range::XMM_START..end]);
    } else if init & SSE != 0 {
        image[range::XMM_START..end].fill(0);
        if compacted {
            image[24..28].copy_from_slice(&MXCSR_INIT.to_le_bytes());
        }
    }
    cpu.load_fx_image(&image);
    if (restore | init) & X87 != 0 {
        cpu.fpu_update_es();
    }
    Ok(())
}
