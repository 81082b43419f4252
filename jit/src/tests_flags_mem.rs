//! Flags produced in one block and consumed in the next (the inline code
//! of `flags_mem`): every lazy operation at every size, with edge-case
//! operands, read by all sixteen conditions, as a carry (INC keeps it) and
//! as RFLAGS (BT keeps all but CF; PUSHFQ shows them), then once more from
//! the materialised flags. Each result must match the interpreter's.

use emu_core::cpu::{FlagsOp, LazyFlags};
use iced_x86::code_asm::*;
use iced_x86::Register;

use super::tests::{assemble, same_with};

/// The mnemonics that leave each lazy operation.
#[derive(Clone, Copy, Debug)]
enum Op {
    Add,
    Adc,
    Sub,
    Cmp,
    Sbb,
    And,
    Xor,
    Inc,
    Dec,
    Neg,
}

fn regs(size: usize) -> (Register, Register) {
    match size {
        1 => (Register::AL, Register::DL),
        2 => (Register::AX, Register::DX),
        4 => (Register::EAX, Register::EDX),
        _ => (Register::RAX, Register::RDX),
    }
}

/// Operand pairs around zero, the sign bit and the top, per size.
fn operands(size: usize) -> Vec<(u64, u64)> {
    let sign = 1u64 << (size * 8 - 1);
    let max = if size == 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 };
    vec![(0, 0), (1, 1), (0, 1), (sign, 1), (sign - 1, 1), (max, 1), (sign, sign), (sign - 1, max), (0x1234_5678_9abc_def0 & max, 0x0f1e_2d3c_4b5a_6978 & max)]
}

fn emit_op(a: &mut CodeAssembler, op: Op, size: usize) -> Result<(), IcedError> {
    use iced_x86::Code::*;
    use iced_x86::Instruction as I;
    let (x, y) = regs(size);
    let pick = |c1: iced_x86::Code, c2, c4, c8| match size {
        1 => c1,
        2 => c2,
        4 => c4,
        _ => c8,
    };
    let ins = match op {
        Op::Add => I::with2(pick(Add_rm8_r8, Add_rm16_r16, Add_rm32_r32, Add_rm64_r64), x, y),
        Op::Adc => I::with2(pick(Adc_rm8_r8, Adc_rm16_r16, Adc_rm32_r32, Adc_rm64_r64), x, y),
        Op::Sub => I::with2(pick(Sub_rm8_r8, Sub_rm16_r16, Sub_rm32_r32, Sub_rm64_r64), x, y),
        Op::Cmp => I::with2(pick(Cmp_rm8_r8, Cmp_rm16_r16, Cmp_rm32_r32, Cmp_rm64_r64), x, y),
        Op::Sbb => I::with2(pick(Sbb_rm8_r8, Sbb_rm16_r16, Sbb_rm32_r32, Sbb_rm64_r64), x, y),
        Op::And => I::with2(pick(And_rm8_r8, And_rm16_r16, And_rm32_r32, And_rm64_r64), x, y),
        Op::Xor => I::with2(pick(Xor_rm8_r8, Xor_rm16_r16, Xor_rm32_r32, Xor_rm64_r64), x, y),
        Op::Inc => I::with1(pick(Inc_rm8, Inc_rm16, Inc_rm32, Inc_rm64), x),
        Op::Dec => I::with1(pick(Dec_rm8, Dec_rm16, Dec_rm32, Dec_rm64), x),
        Op::Neg => I::with1(pick(Neg_rm8, Neg_rm16, Neg_rm32, Neg_rm64), x),
    }?;
    a.add_instruction(ins)
}

/// The sixteen SETcc into `[rbx + at ..]`.
fn set_all(a: &mut CodeAssembler, at: i32) -> Result<(), IcedError> {
    let m = |i: i32| byte_ptr(rbx + at + i);
    a.seto(m(0))?;
    a.setno(m(1))?;
    a.setb(m(2))?;
    a.setae(m(3))?;
    a.sete(m(4))?;
    a.setne(m(5))?;
    a.setbe(m(6))?;
    a.seta(m(7))?;
    a.sets(m(8))?;
    a.setns(m(9))?;
    a.setp(m(10))?;
    a.setnp(m(11))?;
    a.setl(m(12))?;
    a.setge(m(13))?;
    a.setle(m(14))?;
    a.setg(m(15))
}

fn check(op: Op) {
    for size in [1, 2, 4, 8] {
        let carries: &[bool] = if matches!(op, Op::Adc | Op::Sbb | Op::Inc | Op::Dec) { &[false, true] } else { &[false] };
        let code = assemble(|a| {
            let mut at = 0;
            for &(x, y) in &operands(size) {
                for &c in carries {
                    let setup = |a: &mut CodeAssembler| -> Result<(), IcedError> {
                        a.mov(rax, x)?;
                        a.mov(rdx, y)?;
                        if c {
                            a.stc()?;
                        } else {
                            a.clc()?;
                        }
                        emit_op(a, op, size)
                    };
                    let (mut l2, mut l3, mut l4, mut l5) = (a.create_label(), a.create_label(), a.create_label(), a.create_label());
                    setup(a)?;
                    a.jmp(l2)?;
                    // Conditions from the record.
                    a.set_label(&mut l2)?;
                    set_all(a, at)?;
                    a.jmp(l3)?;
                    // CF from the record (INC keeps it), then the record again.
                    a.set_label(&mut l3)?;
                    a.inc(r11)?;
                    a.setb(byte_ptr(rbx + at + 16))?;
                    setup(a)?;
                    a.jmp(l4)?;
                    // RFLAGS from the record (BT replaces only CF).
                    a.set_label(&mut l4)?;
                    a.bt(rdi, 0)?;
                    a.pushfq()?;
                    a.pop(rcx)?;
                    a.mov(qword_ptr(rbx + at + 24), rcx)?;
                    a.jmp(l5)?;
                    // Conditions from materialised flags.
                    a.set_label(&mut l5)?;
                    set_all(a, at + 32)?;
                    at += 48;
                }
            }
            Ok(())
        });
        same_with(&code, &|_| {});
    }
}

#[test]
fn add_then_next_block() {
    check(Op::Add);
}

#[test]
fn adc_then_next_block() {
    check(Op::Adc);
}

#[test]
fn sub_then_next_block() {
    check(Op::Sub);
}

#[test]
fn cmp_then_next_block() {
    check(Op::Cmp);
}

#[test]
fn sbb_then_next_block() {
    check(Op::Sbb);
}

#[test]
fn logic_then_next_block() {
    check(Op::And);
    check(Op::Xor);
}

#[test]
fn inc_then_next_block() {
    check(Op::Inc);
}

#[test]
fn dec_then_next_block() {
    check(Op::Dec);
}

#[test]
fn neg_then_next_block() {
    check(Op::Neg);
}

/// A record with a size no instruction makes goes to the helper and gives
/// the interpreter's answer.
#[test]
fn odd_sizes_use_the_helper() {
    for size in [0u8, 3, 5, 9, 16, 65, 200] {
        for op in [FlagsOp::Add, FlagsOp::Sub, FlagsOp::Dec] {
            let code = assemble(|a| {
                set_all(a, 0)?;
                a.inc(r11)?;
                a.setb(byte_ptr(rbx + 16))?;
                Ok(())
            });
            same_with(&code, &|s| s.lazy = LazyFlags { op, size, src1: 0x8000_0080, src2: 0x81, res: 0x7fff_ffff, aux: 1 });
            let code = assemble(|a| {
                a.bt(rdi, 0)?;
                a.pushfq()?;
                a.pop(rcx)?;
                a.mov(qword_ptr(rbx), rcx)
            });
            same_with(&code, &|s| s.lazy = LazyFlags { op, size, src1: 0x8000_0080, src2: 0x81, res: 0x7fff_ffff, aux: 1 });
        }
    }
}
