//! String instructions (MOVS, STOS, LODS, SCAS, CMPS, INS, OUTS) with REP,
//! REPE and REPNE, honouring the address size for RSI/RDI/RCX and DF.
//!
//! A repeated instruction runs a bounded number of iterations per step and
//! then restarts itself (RIP stays put), so interrupts are taken between
//! iterations as on hardware, and a fault leaves the registers of the
//! iterations already done.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{flags, seg, FlagsOp};

use super::super::fault::R;
use super::super::operand::{mask, seg_index};
use super::super::Interpreter;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Movsb, M::Movsw, M::Movsd, M::Movsq, M::Stosb, M::Stosw, M::Stosd, M::Stosq, M::Lodsb, M::Lodsw, M::Lodsd, M::Lodsq, M::Scasb, M::Scasw, M::Scasd, M::Scasq, M::Cmpsb, M::Cmpsw, M::Cmpsd, M::Cmpsq, M::Insb, M::Insw, M::Insd, M::Outsb, M::Outsw, M::Outsd], string);
}

/// Iterations run before a repeated instruction yields.
const CHUNK: u32 = 1024;

fn regs_for(addr_size: usize) -> (Register, Register, Register) {
    match addr_size {
        2 => (Register::SI, Register::DI, Register::CX),
        4 => (Register::ESI, Register::EDI, Register::ECX),
        _ => (Register::RSI, Register::RDI, Register::RCX),
    }
}

fn string_addr_size(ins: &Instruction) -> usize {
    for n in 0..ins.op_count() {
        match ins.op_kind(n) {
            OpKind::MemorySegSI | OpKind::MemoryESDI | OpKind::MemorySegDI => return 2,
            OpKind::MemorySegESI | OpKind::MemoryESEDI | OpKind::MemorySegEDI => return 4,
            OpKind::MemorySegRSI | OpKind::MemoryESRDI | OpKind::MemorySegRDI => return 8,
            _ => {}
        }
    }
    2
}

fn elem_size(ins: &Instruction) -> usize {
    match ins.mnemonic() {
        M::Movsb | M::Stosb | M::Lodsb | M::Scasb | M::Cmpsb | M::Insb | M::Outsb => 1,
        M::Movsw | M::Stosw | M::Lodsw | M::Scasw | M::Cmpsw | M::Insw | M::Outsw => 2,
        M::Movsq | M::Stosq | M::Lodsq | M::Scasq | M::Cmpsq => 8,
        _ => 4,
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

fn string(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let a = string_addr_size(ins);
    let (si, di, cx) = regs_for(a);
    let size = elem_size(ins);
    let src_seg = seg_index(ins.memory_segment());
    let rep = ins.has_rep_prefix() || ins.has_repe_prefix() || ins.has_repne_prefix();
    let compares = matches!(ins.mnemonic(), M::Scasb | M::Scasw | M::Scasd | M::Scasq | M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq);
    let step = if cpu.flag(flags::DF) { 0u64.wrapping_sub(size as u64) } else { size as u64 };
    let am = mask(a);
    if matches!(ins.mnemonic(), M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd) {
        let port = cpu.reg(Register::DX) as u16;
        cpu.check_io_permission(port, size)?;
    }
    let bulk_kind = match ins.mnemonic() {
        M::Movsb | M::Movsw | M::Movsd | M::Movsq if rep => Some(Bulk::Copy),
        M::Stosb | M::Stosw | M::Stosd | M::Stosq if rep => Some(Bulk::Fill),
        _ => None,
    };
    let mut iterations = 0;
    loop {
        if rep && cpu.reg(cx) == 0 {
            return Ok(());
        }
        if let Some(kind) = bulk_kind {
            let done = bulk(cpu, kind, size, src_seg, (si, di, cx), am, u64::from(CHUNK - iterations));
            if done > 0 {
                iterations += done as u32;
                if cpu.reg(cx) == 0 {
                    return Ok(());
                }
                if iterations >= CHUNK {
                    cpu.next_rip = cpu.s.rip;
                    return Ok(());
                }
                continue;
            }
        }
        match ins.mnemonic() {
            M::Movsb | M::Movsw | M::Movsd | M::Movsq => {
                let v = cpu.read_mem(src_seg, cpu.reg(si), size)?;
                cpu.write_mem(seg::ES, cpu.reg(di), size, v)?;
                cpu.set_reg(si, cpu.reg(si).wrapping_add(step) & am);
                cpu.set_reg(di, cpu.reg(di).wrapping_add(step) & am);
            }
            M::Stosb | M::Stosw | M::Stosd | M::Stosq => {
                let v = cpu.reg(acc(size));
                cpu.write_mem(seg::ES, cpu.reg(di), size, v)?;
                cpu.set_reg(di, cpu.reg(di).wrapping_add(step) & am);
            }
            M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => {
                let v = cpu.read_mem(src_seg, cpu.reg(si), size)?;
                cpu.set_reg(acc(size), v);
                cpu.set_reg(si, cpu.reg(si).wrapping_add(step) & am);
            }
            M::Scasb | M::Scasw | M::Scasd | M::Scasq => {
                let v = cpu.read_mem(seg::ES, cpu.reg(di), size)?;
                let a_val = cpu.reg(acc(size));
                cpu.set_lazy(FlagsOp::Sub, size, a_val, v, a_val.wrapping_sub(v) & mask(size));
                cpu.set_reg(di, cpu.reg(di).wrapping_add(step) & am);
            }
            M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => {
                let x = cpu.read_mem(src_seg, cpu.reg(si), size)?;
                let y = cpu.read_mem(seg::ES, cpu.reg(di), size)?;
                cpu.set_lazy(FlagsOp::Sub, size, x, y, x.wrapping_sub(y) & mask(size));
                cpu.set_reg(si, cpu.reg(si).wrapping_add(step) & am);
                cpu.set_reg(di, cpu.reg(di).wrapping_add(step) & am);
            }
            M::Insb | M::Insw | M::Insd => {
                let port = cpu.reg(Register::DX) as u16;
                // The destination is checked before the port is read.
                let lin = cpu.linear(seg::ES, cpu.reg(di), size as u64, crate::mmu::Access::Write)?;
                cpu.probe_write(lin, size)?;
                let v = cpu.port_in(port, size);
                cpu.write_mem(seg::ES, cpu.reg(di), size, v)?;
                cpu.set_reg(di, cpu.reg(di).wrapping_add(step) & am);
            }
            _ => {
                let port = cpu.reg(Register::DX) as u16;
                let v = cpu.read_mem(src_seg, cpu.reg(si), size)?;
                cpu.port_out(port, size, v);
                cpu.set_reg(si, cpu.reg(si).wrapping_add(step) & am);
            }
        }
        if !rep {
            return Ok(());
        }
        let count = cpu.reg(cx).wrapping_sub(1) & am;
        cpu.set_reg(cx, count);
        if count == 0 {
            return Ok(());
        }
        if compares {
            let zf = cpu.flag(flags::ZF);
            if (ins.has_repe_prefix() && !zf) || (ins.has_repne_prefix() && zf) {
                return Ok(());
            }
        }
        iterations += 1;
        if iterations >= CHUNK {
            // Yield: run this instruction again on the next step.
            cpu.next_rip = cpu.s.rip;
            return Ok(());
        }
    }
}

#[derive(Clone, Copy)]
enum Bulk {
    Copy,
    Fill,
}

/// REP MOVS and REP STOS, a page at a time: the elements that lie in one
/// page of the destination (and of the source) are copied or filled at
/// once through the TLB's host addresses, with the registers advanced as
/// the elements would leave them. Returns how many were done (at most
/// `limit`); 0 leaves the next element to the element-by-element path (see
/// `bulk_span`, and a copy whose destination overlaps its source where the
/// elements go, which repeats a pattern element by element).
fn bulk(cpu: &mut Interpreter, kind: Bulk, size: usize, src_seg: usize, (si, di, cx): (Register, Register, Register), am: u64, limit: u64) -> u64 {
    use crate::mmu::Access;
    let down = cpu.flag(flags::DF);
    let count = (cpu.reg(cx) & am).min(limit);
    let dst_offset = cpu.reg(di) & am;
    let Some((dst, mut elements)) = cpu.bulk_span(seg::ES, dst_offset, size, count, down, Access::Write) else { return 0 };
    let src_offset = cpu.reg(si) & am;
    let src = match kind {
        Bulk::Copy => {
            let Some((src, from_src)) = cpu.bulk_span(src_seg, src_offset, size, elements, down, Access::Read) else { return 0 };
            elements = elements.min(from_src);
            Some(src)
        }
        Bulk::Fill => None,
    };
    let span = elements * size as u64;
    let len = span as usize;
    // Neither offset may wrap around the address size within the span
    // (`bulk_span` already refused a span going down below zero).
    let wraps = |offset: u64| !down && offset.checked_add(span - 1).is_none_or(|last| last > am);
    if wraps(dst_offset) || (src.is_some() && wraps(src_offset)) {
        return 0;
    }
    // The lowest byte of each span: going down, the first element is the
    // highest (all within one page, so host addresses are contiguous).
    let lowest = |first: *mut u8| if down { first.wrapping_sub(len - size) } else { first };
    let dst = lowest(dst);
    match src.map(lowest) {
        Some(src) => {
            // Element by element, a destination overlapping the source
            // ahead of the copy (above it going up, below it going down)
            // reads what the copy just wrote.
            let (d, s) = (dst as usize, src as usize);
            let ahead = if down { d < s && d + len > s } else { d > s && d < s + len };
            if ahead {
                return 0;
            }
            // SAFETY: each range lies in one guest page of a live mapping
            // (the TLB holds both pages); without an overlap ahead, a
            // memmove copies as the element loop would.
            unsafe { std::ptr::copy(src, dst, len) };
        }
        None => {
            let value = cpu.reg(acc(size)) & mask(size);
            let bytes = value.to_le_bytes();
            if bytes[..size].iter().all(|&b| b == bytes[0]) {
                // SAFETY: as above, for the destination.
                unsafe { std::ptr::write_bytes(dst, bytes[0], len) };
            } else {
                for i in 0..elements as usize {
                    // SAFETY: as above; element `i` lies in the range.
                    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(i * size), size) };
                }
            }
        }
    }
    let advance = |offset: u64| if down { offset.wrapping_sub(span) } else { offset.wrapping_add(span) } & am;
    cpu.set_reg(di, advance(dst_offset));
    if src.is_some() {
        cpu.set_reg(si, advance(src_offset));
    }
    cpu.set_reg(cx, (cpu.reg(cx) & am).wrapping_sub(elements) & am);
    elements
}
