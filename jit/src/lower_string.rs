//! String instructions without a repeat prefix: MOVS, STOS and LODS with
//! 64-bit addresses (RSI/RDI), with the interpreter's semantics
//! (`exec::string`): the step follows DF; MOVS reads, then writes, then
//! moves both pointers. Repeated forms fall back (the interpreter bounds
//! them and takes interrupts between chunks).

use cranelift_codegen::ir::{types, InstBuilder, Value};
use emu_core::cpu::{flags as fl, seg};
use emu_core::interp::offsets;
use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::lower_mem::{load, store, Addr};
use crate::translate::{mem, Lower, Unsupported, L, st};

fn elem_size(m: M) -> usize {
    match m {
        M::Movsb | M::Stosb | M::Lodsb => 1,
        M::Movsw | M::Stosw | M::Lodsw => 2,
        M::Movsd | M::Stosd | M::Lodsd => 4,
        _ => 8,
    }
}

fn acc(size: usize) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}


/// `size` or `-size` by DF (RFLAGS in memory holds DF: only fallbacks
/// change it).
fn step(l: &mut Lower<'_, '_>, size: usize) -> Value {
    let f = l.b.ins().load(types::I64, mem(), l.frame, st(offsets::RFLAGS));
    let df = l.b.ins().ushr_imm_s(f, fl::DF.trailing_zeros() as i64);
    let df = l.b.ins().band_imm_s(df, 1);
    let back = l.b.ins().imul_imm_s(df, -2 * size as i64);
    l.b.ins().iadd_imm_s(back, size as i64)
}

/// An address in segment `s` at offset `off` (64-bit mode: only FS and GS
/// have a base).
fn at(l: &mut Lower<'_, '_>, s: usize, off: Value) -> Addr {
    let lin = match s {
        seg::FS | seg::GS => {
            let o = if s == seg::FS { offsets::FS_BASE } else { offsets::GS_BASE };
            let base = l.b.ins().load(types::I64, mem(), l.frame, st(o));
            l.b.ins().iadd(off, base)
        }
        _ => off,
    };
    Addr { seg: s, ea: off, lin }
}

/// MOVS, STOS, LODS without REP, 64-bit addresses.
pub(crate) fn string(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let m = ins.mnemonic();
    let rep = ins.has_rep_prefix() || ins.has_repe_prefix() || ins.has_repne_prefix();
    // 64-bit string operands only (MOVSD is also the SSE scalar move).
    let kinds = || (0..ins.op_count()).map(|n| ins.op_kind(n));
    let wide = kinds().any(|k| matches!(k, OpKind::MemorySegRSI | OpKind::MemoryESRDI))
        && !kinds().any(|k| matches!(k, OpKind::MemorySegESI | OpKind::MemorySegSI | OpKind::MemoryESEDI | OpKind::MemoryESDI));
    if rep || !wide {
        return Err(Unsupported);
    }
    let size = elem_size(m);
    let src_seg = crate::lower_mem::seg_index(ins.memory_segment());
    let d = step(l, size);
    match m {
        M::Movsb | M::Movsw | M::Movsd | M::Movsq => {
            let si = l.gpr(6);
            let di = l.gpr(7);
            let src = at(l, src_seg, si);
            let v = load(l, ins, src, size);
            let dst = at(l, seg::ES, di);
            store(l, ins, dst, size, v);
            let si = l.b.ins().iadd(si, d);
            let di = l.b.ins().iadd(di, d);
            l.set_gpr(6, si);
            l.set_gpr(7, di);
        }
        M::Stosb | M::Stosw | M::Stosd | M::Stosq => {
            let di = l.gpr(7);
            let v = l.read_reg(acc(size));
            let dst = at(l, seg::ES, di);
            store(l, ins, dst, size, v);
            let di = l.b.ins().iadd(di, d);
            l.set_gpr(7, di);
        }
        _ => {
            let si = l.gpr(6);
            let src = at(l, src_seg, si);
            let v = load(l, ins, src, size);
            l.write_reg(acc(size), v);
            let si = l.b.ins().iadd(si, d);
            l.set_gpr(6, si);
        }
    }
    Ok(())
}
