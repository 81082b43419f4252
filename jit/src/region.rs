//! The shape of a region translation: which region blocks jump to which
//! (the edges the lowering may turn into Cranelift jumps), how many
//! predecessors each has, and the order to lower them in.
//!
//! Edges are over-approximated (every direct target, fall-through and
//! predicted return that is a region block), so a block counted with one
//! predecessor really has one: it may then take its predecessor's
//! registers and flags record as values instead of from `CpuState`.

use iced_x86::{FlowControl, Mnemonic as M, OpKind};

use emu_core::interp::{ends_block_for_the_chain, RegionBlock};
use iced_x86::Instruction;

/// The most return addresses a RET in a region is compared with.
pub(crate) const MAX_RETURNS: usize = 4;

/// What the lowering needs to know about a region before lowering it.
pub(crate) struct Plan {
    pub(crate) blocks: Vec<RegionBlock>,
    /// Edges into each block: in-region jumps, plus one for entering the
    /// function at it when it is an entry.
    pub(crate) preds: Vec<u32>,
    /// The blocks reachable from an entry, in reverse postorder from the
    /// first (then from the other entries): a block with one predecessor
    /// comes after it.
    pub(crate) order: Vec<usize>,
    /// Blocks a RET may come back to: return addresses of the region's
    /// direct calls that are region blocks.
    pub(crate) returns: Vec<usize>,
    /// Blocks that replace the whole lazy flags record before anything
    /// could read it (see [`overwrites_flags_first`]): a jump there need not
    /// store the jumping block's record.
    pub(crate) flags_dead: Vec<bool>,
    /// Some block jumps back to itself or an earlier block of the region
    /// (a loop that stays in native code).
    pub(crate) has_loop: bool,
}

fn index_of(blocks: &[RegionBlock], rip: u64) -> Option<usize> {
    blocks.iter().position(|b| b.rip == rip)
}

fn is_direct(ins: &Instruction) -> bool {
    ins.op_count() == 1 && ins.op0_kind() == OpKind::NearBranch64
}

impl Plan {
    pub(crate) fn new(blocks: &[RegionBlock], instructions: &[Instruction]) -> Self {
        let blocks = blocks.to_vec();
        let last = |b: &RegionBlock| instructions.get(b.start + b.len.max(1) - 1);
        let mut returns = Vec::new();
        for b in &blocks {
            if let Some(ins) = last(b) {
                if ins.mnemonic() == M::Call && is_direct(ins) && index_of(&blocks, ins.near_branch_target()).is_some() {
                    if let Some(r) = index_of(&blocks, ins.next_ip()) {
                        if !returns.contains(&r) && returns.len() < MAX_RETURNS {
                            returns.push(r);
                        }
                    }
                }
            }
        }
        let succ: Vec<Vec<usize>> = blocks
            .iter()
            .map(|b| {
                let Some(ins) = last(b) else { return Vec::new() };
                let targets: Vec<u64> = match ins.flow_control() {
                    FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch | FlowControl::Call if is_direct(ins) => {
                        if ins.flow_control() == FlowControl::ConditionalBranch {
                            vec![ins.near_branch_target(), ins.next_ip()]
                        } else {
                            vec![ins.near_branch_target()]
                        }
                    }
                    FlowControl::Return => return returns.clone(),
                    // Such a fall-through leaves through the chain.
                    _ if b.chain_fallthrough && !ends_block_for_the_chain(ins) => vec![ins.next_ip()],
                    _ => Vec::new(),
                };
                targets.into_iter().filter_map(|t| index_of(&blocks, t)).collect()
            })
            .collect();
        // Entry blocks may be entered from outside: one predecessor more.
        let mut preds: Vec<u32> = blocks.iter().map(|b| u32::from(b.entry)).collect();
        for s in &succ {
            for &t in s {
                preds[t] += 1;
            }
        }
        // Depth-first postorder from the first entry, then from the other
        // entries not reached yet, reversed.
        let mut order = Vec::with_capacity(blocks.len());
        let mut visited = vec![false; blocks.len()];
        for root in 0..blocks.len() {
            if visited[root] || !blocks[root].entry {
                continue;
            }
            visited[root] = true;
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&t) = succ[node].get(*next) {
                    *next += 1;
                    if !visited[t] {
                        visited[t] = true;
                        stack.push((t, 0));
                    }
                } else {
                    order.push(node);
                    stack.pop();
                }
            }
        }
        order.reverse();
        let flags_dead = blocks.iter().map(|b| overwrites_flags_first(instructions.get(b.start..b.start + b.len).unwrap_or(&[]))).collect();
        let has_loop = succ.iter().enumerate().any(|(b, s)| s.iter().any(|&t| blocks[t].rip <= blocks[b].rip));
        Self { blocks, preds, order, returns, flags_dead, has_loop }
    }

    /// The region block at `rip`, if any.
    pub(crate) fn block_at(&self, rip: u64) -> Option<usize> {
        index_of(&self.blocks, rip)
    }
}

/// Whether `instructions` replace the whole arithmetic flags record before
/// anything could see the old one: a register or immediate CMP, TEST, ADD,
/// SUB, AND, OR, XOR or NEG (none reads a flag, each sets all six), after
/// nothing but register moves and LEAs. Those cannot fault, so no exception
/// pushes RFLAGS first; a block's start is where it may also be entered
/// from outside, with the flags in `CpuState` as always.
pub(crate) fn overwrites_flags_first(instructions: &[Instruction]) -> bool {
    let register_only = |ins: &Instruction| (0..ins.op_count()).all(|i| matches!(ins.op_kind(i), OpKind::Register | OpKind::Immediate8 | OpKind::Immediate8to32 | OpKind::Immediate16 | OpKind::Immediate32 | OpKind::Immediate32to64 | OpKind::Immediate64));
    for ins in instructions.iter().take(8) {
        match ins.mnemonic() {
            M::Cmp | M::Test | M::Add | M::Sub | M::And | M::Or | M::Xor | M::Neg => return register_only(ins) && !ins.has_lock_prefix(),
            M::Mov | M::Movzx | M::Movsx | M::Movsxd if register_only(ins) => {}
            M::Lea | M::Nop => {}
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::code_asm::*;

    fn decode(code: &[u8], ip: u64) -> Vec<Instruction> {
        let mut d = iced_x86::Decoder::with_ip(64, code, ip, iced_x86::DecoderOptions::NONE);
        let mut v = Vec::new();
        while d.can_decode() {
            v.push(d.decode());
        }
        v
    }

    /// Splits straight-line code into blocks after each control transfer.
    fn blocks_of(ins: &[Instruction]) -> Vec<RegionBlock> {
        let mut blocks = Vec::new();
        let mut start = 0;
        for (i, x) in ins.iter().enumerate() {
            if x.flow_control() != FlowControl::Next {
                blocks.push(RegionBlock { rip: ins[start].ip(), start, len: i + 1 - start, chain_fallthrough: false, entry: start == 0 });
                start = i + 1;
            }
        }
        blocks
    }

    #[test]
    fn a_loop_with_a_call_and_its_return() {
        // top: call sub; dec rcx; jnz top; jmp out. sub: ret.
        let mut a = CodeAssembler::new(64).unwrap();
        let mut top = a.create_label();
        let mut sub = a.create_label();
        a.set_label(&mut top).unwrap();
        a.call(sub).unwrap();
        a.dec(rcx).unwrap();
        a.jnz(top).unwrap();
        a.jmp(0x9000u64).unwrap();
        a.set_label(&mut sub).unwrap();
        a.ret().unwrap();
        let ins = decode(&a.assemble(0x1000).unwrap(), 0x1000);
        let blocks = blocks_of(&ins);
        assert_eq!(blocks.len(), 4);
        let p = Plan::new(&blocks, &ins);
        // call -> sub; sub's RET -> the block after the call; jnz -> top
        // and the jmp block.
        assert_eq!(p.returns, vec![1]);
        assert_eq!(p.preds, vec![2, 1, 1, 1]);
        assert_eq!(p.order[0], 0);
        let pos = |b: usize| p.order.iter().position(|&x| x == b).unwrap();
        assert!(pos(3) < pos(1), "sub before the return block");
        assert!(pos(1) < pos(2));
        // DEC keeps CF: the block after the call needs the flags it gets.
        assert_eq!(p.flags_dead, vec![false, false, false, false]);
        assert!(p.has_loop);
    }

    #[test]
    fn flags_are_dead_only_where_a_full_writer_comes_first() {
        let block = |f: &dyn Fn(&mut CodeAssembler)| {
            let mut a = CodeAssembler::new(64).unwrap();
            f(&mut a);
            overwrites_flags_first(&decode(&a.assemble(0x1000).unwrap(), 0x1000))
        };
        assert!(block(&|a| a.cmp(r9d, 0xff_ffff).unwrap()));
        assert!(block(&|a| {
            a.mov(eax, ecx).unwrap();
            a.lea(rdx, qword_ptr(rax + 8)).unwrap();
            a.test(eax, eax).unwrap();
        }));
        // A load may fault (and push RFLAGS) before the compare.
        assert!(!block(&|a| {
            a.mov(eax, dword_ptr(rcx)).unwrap();
            a.cmp(eax, 1).unwrap();
        }));
        assert!(!block(&|a| a.cmp(dword_ptr(rcx), 1).unwrap()));
        // ADC reads CF; INC keeps it; a jump reads them all.
        assert!(!block(&|a| a.adc(eax, 1).unwrap()));
        assert!(!block(&|a| a.inc(eax).unwrap()));
        assert!(!block(&|a| a.jne(0x1000u64).unwrap()));
        assert!(!block(&|a| a.nop().unwrap()));
    }
}
