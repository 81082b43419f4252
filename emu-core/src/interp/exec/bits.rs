//! Bit tests and scans: BT, BTS, BTR, BTC, BSF, BSR, LZCNT, TZCNT, POPCNT.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::flags;

use super::super::fault::R;
use super::super::operand::{mask, sext};
use super::super::Interpreter;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::Bt, M::Bts, M::Btr, M::Btc], bit_test);
    t.set(&[M::Bsf, M::Bsr], bit_scan);
    t.set(&[M::Lzcnt, M::Tzcnt, M::Popcnt], count);
}

fn bit_test(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let bits = (size * 8) as u64;
    let raw_offset = cpu.read_op(ins, 1)?;
    let (value, bit, mem_at) = if ins.op0_kind() == OpKind::Memory && ins.op1_kind() == OpKind::Register {
        // A register bit offset reaches beyond the operand: it is signed
        // and selects a `size`-byte unit relative to the operand.
        let offset = sext(raw_offset, size) as i64;
        let unit = offset.div_euclid(bits as i64);
        let (sreg, off) = cpu.mem_operand(ins);
        let addr = off.wrapping_add((unit * size as i64) as u64) & mask(cpu.address_size(ins));
        (cpu.read_mem(sreg, addr, size)?, offset.rem_euclid(bits as i64) as u64, Some((sreg, addr)))
    } else {
        (cpu.read_op(ins, 0)?, raw_offset % bits, None)
    };
    let set = value >> bit & 1 != 0;
    let new = match ins.mnemonic() {
        M::Bts => Some(value | 1 << bit),
        M::Btr => Some(value & !(1 << bit)),
        M::Btc => Some(value ^ 1 << bit),
        _ => None,
    };
    if let Some(v) = new {
        match mem_at {
            Some((sreg, addr)) => cpu.write_mem(sreg, addr, size, v)?,
            None => cpu.write_op(ins, 0, v)?,
        }
    }
    let f = (cpu.s.flags() & !flags::CF) | if set { flags::CF } else { 0 };
    cpu.set_arith_flags(f);
    Ok(())
}

fn bit_scan(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    bit_scan_as(cpu, ins, ins.mnemonic())
}

fn bit_scan_as(cpu: &mut Interpreter, ins: &Instruction, m: M) -> R<()> {
    let size = cpu.op_size(ins, 0);
    let src = cpu.read_op(ins, 1)? & mask(size);
    let mut f = cpu.s.flags() & !flags::ARITH;
    if src == 0 {
        // The destination is left unchanged (as AMD documents and Intel
        // CPUs do).
        f |= flags::ZF;
    } else {
        let index = if m == M::Bsf { src.trailing_zeros() } else { 63 - src.leading_zeros() };
        cpu.write_op(ins, 0, u64::from(index))?;
    }
    cpu.set_arith_flags(f);
    Ok(())
}

fn count(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    // Without BMI1, F3 0F BC is REP BSF, as on CPUs that predate TZCNT.
    if ins.mnemonic() == M::Tzcnt && !super::super::cpuid::BMI1 {
        return bit_scan_as(cpu, ins, M::Bsf);
    }
    let size = cpu.op_size(ins, 0);
    let bits = (size * 8) as u32;
    let src = cpu.read_op(ins, 1)? & mask(size);
    let mut f = cpu.s.flags() & !flags::ARITH;
    let res = match ins.mnemonic() {
        M::Lzcnt => u64::from(src.leading_zeros() - (64 - bits)),
        M::Tzcnt => u64::from(if src == 0 { bits } else { src.trailing_zeros() }),
        _ => u64::from(src.count_ones()),
    };
    match ins.mnemonic() {
        M::Popcnt => {
            if src == 0 {
                f |= flags::ZF;
            }
        }
        _ => {
            if src == 0 {
                f |= flags::CF;
            }
            if res == 0 {
                f |= flags::ZF;
            }
        }
    }
    cpu.write_op(ins, 0, res)?;
    cpu.set_arith_flags(f);
    Ok(())
}
