//! Memory operands: effective and linear addresses, loads and stores with
//! the soft TLB inlined, PUSH and POP.
//!
//! A load or store whose page is in the TLB for its kind of access and that
//! stays within the page is a host access at `linear + addend`; anything
//! else (a miss, MMIO, a page crossing, a code page, a fault, a
//! non-canonical address, which never matches a tag) calls the helper,
//! which goes through the interpreter's `read_mem`/`write_mem`. Loads of
//! code translated while the supervisor TLB held identity-mapped pages
//! (`mmu::IdentityPages`) look there first: no TLB entry between the
//! address and the data.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use emu_core::cpu::seg;
use emu_core::interp::offsets;
use emu_core::mmu::{IDENTITY_PAGES, IDENTITY_PAGE_SHIFT, TLB_ENTRIES};
use iced_x86::{Instruction, OpKind, Register};

use crate::translate::{is_gpr, mask, mem, Lower, Unsupported, L, st};

/// A memory operand: its segment, effective address (offset) and linear
/// address.
#[derive(Clone, Copy)]
pub(crate) struct Addr {
    pub(crate) seg: usize,
    pub(crate) ea: Value,
    pub(crate) lin: Value,
}

/// The `CpuState::segs` index of a segment register (DS for none).
pub(crate) fn seg_index(r: Register) -> usize {
    match r {
        Register::ES => seg::ES,
        Register::CS => seg::CS,
        Register::SS => seg::SS,
        Register::FS => seg::FS,
        Register::GS => seg::GS,
        _ => seg::DS,
    }
}

/// Checks that the memory operand is one the lowering computes.
pub(crate) fn check_mem(ins: &Instruction) -> L<()> {
    let index = ins.memory_index();
    if index != Register::None && !is_gpr(index) {
        return Err(Unsupported);
    }
    let base = ins.memory_base();
    if base != Register::None && base != Register::RIP && base != Register::EIP && !is_gpr(base) {
        return Err(Unsupported);
    }
    Ok(())
}

/// The address size in bytes (64-bit mode), as the interpreter's
/// `address_size`.
pub(crate) fn address_size(ins: &Instruction) -> usize {
    let base = ins.memory_base();
    if base == Register::EIP {
        return 4;
    }
    if base == Register::RIP {
        return 8;
    }
    if base != Register::None {
        return base.size();
    }
    let index = ins.memory_index();
    if index != Register::None && index.is_gpr() {
        return index.size();
    }
    match ins.memory_displ_size() {
        2 => 2,
        4 => 4,
        _ => 8,
    }
}

/// The memory operand's addresses.
pub(crate) fn address(l: &mut Lower<'_, '_>, ins: &Instruction) -> Addr {
    let seg = seg_index(ins.memory_segment());
    let ea = if ins.is_ip_rel_memory_operand() {
        let a = ins.ip_rel_memory_address();
        l.iconst(if ins.memory_base() == Register::EIP { a & 0xffff_ffff } else { a })
    } else {
        // The sum of the base, the scaled index and the displacement, each
        // where there is one (no add of a zero displacement).
        let base = ins.memory_base();
        let base = (base != Register::None).then(|| l.read_reg(base));
        let index = ins.memory_index();
        let index = (index != Register::None).then(|| {
            let v = l.read_reg(index);
            let shift = ins.memory_index_scale().trailing_zeros();
            if shift == 0 { v } else { l.b.ins().ishl_imm_s(v, i64::from(shift)) }
        });
        let displacement = ins.memory_displacement64();
        let terms = [base, index];
        let mut terms = terms.into_iter().flatten();
        let mut ea = match terms.next() {
            Some(first) => terms.fold(first, |sum, v| l.b.ins().iadd(sum, v)),
            None => l.iconst(displacement),
        };
        if displacement != 0 && (base.is_some() || index.is_some()) {
            ea = l.b.ins().iadd_imm_s(ea, displacement as i64);
        }
        let n = address_size(ins);
        l.zext(ea, n)
    };
    let lin = match seg {
        seg::FS | seg::GS => {
            let off = if seg == seg::FS { offsets::FS_BASE } else { offsets::GS_BASE };
            let base = l.b.ins().load(types::I64, mem(), l.frame, st(off));
            l.b.ins().iadd(ea, base)
        }
        _ => ea,
    };
    Addr { seg, ea, lin }
}

pub(crate) fn int_type(size: usize) -> types::Type {
    match size {
        1 => types::I8,
        2 => types::I16,
        4 => types::I32,
        _ => types::I64,
    }
}

/// Branches to `fast` with the TLB entry when the TLB holds the page for
/// this access and it stays in the page, else to `slow`.
pub(crate) fn tlb_check(l: &mut Lower<'_, '_>, lin: Value, size: usize, tag_offset: i32) -> (cranelift_codegen::ir::Block, cranelift_codegen::ir::Block, Value) {
    let shift = offsets::TLB_ENTRY_SIZE.trailing_zeros();
    let off = if offsets::TLB_ENTRY_SIZE.count_ones() == 1 && shift <= 12 {
        // (lin >> 12 & mask) << shift, in two steps.
        let scaled = l.b.ins().ushr_imm_s(lin, 12 - i64::from(shift));
        l.b.ins().band_imm_s(scaled, ((TLB_ENTRIES - 1) << shift) as i64)
    } else {
        let vpn = l.b.ins().ushr_imm_s(lin, 12);
        let idx = l.b.ins().band_imm_s(vpn, (TLB_ENTRIES - 1) as i64);
        l.b.ins().imul_imm_s(idx, offsets::TLB_ENTRY_SIZE)
    };
    // The TLB's base is loaded again for each access: one value live
    // through the whole function cost a register (or a spill slot) and
    // the allocator's time.
    let tlb = l.b.ins().load(types::I64, mem(), l.frame, offsets::FRAME_TLB);
    let entry = l.b.ins().iadd(tlb, off);
    let tag = l.b.ins().load(types::I64, mem(), entry, tag_offset);
    // The tag is compared with the page of the access's last byte: an
    // access that crosses into the next page misses (QEMU's trick), so
    // one compare covers both checks.
    let end = if size > 1 { l.b.ins().iadd_imm_s(lin, size as i64 - 1) } else { lin };
    let last = l.b.ins().ushr_imm_s(end, 12);
    let hit = l.b.ins().icmp(IntCC::Equal, tag, last);
    let fast = l.b.create_block();
    let slow = l.b.create_block();
    l.b.set_cold_block(slow);
    l.b.ins().brif(hit, fast, &[], slow, &[]);
    (fast, slow, entry)
}

/// Stores the low `size` bytes of `v` at host address `lin + addend` and
/// jumps to `join`.
fn store_host(l: &mut Lower<'_, '_>, lin: Value, addend: Value, size: usize, v: Value, join: cranelift_codegen::ir::Block) {
    let host = l.b.ins().iadd(lin, addend);
    let narrow = if size == 8 { v } else { l.b.ins().ireduce(int_type(size), v) };
    l.b.ins().store(mem(), narrow, host, 0);
    l.b.ins().jump(join, &[]);
}

/// Loads `size` bytes at host address `lin + addend`, zero-extended, and
/// jumps to `join` with them.
fn load_host(l: &mut Lower<'_, '_>, lin: Value, addend: Value, size: usize, join: cranelift_codegen::ir::Block) {
    let host = l.b.ins().iadd(lin, addend);
    let v = l.b.ins().load(int_type(size), mem(), host, 0);
    let v = if size == 8 { v } else { l.b.ins().uextend(types::I64, v) };
    l.b.ins().jump(join, &[v.into()]);
}

/// Branches to `direct` when the identity pages hold the 2 MiB page of
/// this load and it stays in that page, else to `miss`; also gives the
/// identity pages' address. An identity-mapped page is accessed at the address
/// plus the RAM's addend, neither depending on a TLB entry. The last
/// byte's tag must name the first byte's page: an access across two pages
/// never matches.
fn identity_check(l: &mut Lower<'_, '_>, lin: Value, size: usize) -> (cranelift_codegen::ir::Block, cranelift_codegen::ir::Block, Value) {
    let last = if size > 1 { l.b.ins().iadd_imm_s(lin, size as i64 - 1) } else { lin };
    let last_page = l.b.ins().ushr_imm_s(last, i64::from(IDENTITY_PAGE_SHIFT));
    let slot = l.b.ins().band_imm_s(last_page, (IDENTITY_PAGES - 1) as i64);
    let slot = l.b.ins().ishl_imm_s(slot, 3);
    let pages = l.b.ins().load(types::I64, mem(), l.frame, offsets::FRAME_IDENTITY);
    let at = l.b.ins().iadd(pages, slot);
    let tag = l.b.ins().load(types::I64, mem(), at, offsets::IDENTITY_TAGS);
    let page = if size > 1 { l.b.ins().ushr_imm_s(lin, i64::from(IDENTITY_PAGE_SHIFT)) } else { last_page };
    let held = l.b.ins().icmp(IntCC::Equal, tag, page);
    let direct = l.b.create_block();
    let miss = l.b.create_block();
    l.b.ins().brif(held, direct, &[], miss, &[]);
    (direct, miss, pages)
}

/// Loads `size` bytes, zero-extended to 64 bits. A fault exits the block
/// with the state before `ins`.
pub(crate) fn load(l: &mut Lower<'_, '_>, ins: &Instruction, a: Addr, size: usize) -> Value {
    let join = l.b.create_block();
    l.b.append_block_param(join, types::I64);
    if l.identity_pages {
        let (direct, tlb, pages) = identity_check(l, a.lin, size);
        l.b.switch_to_block(direct);
        let addend = l.b.ins().load(types::I64, mem(), pages, offsets::IDENTITY_ADDEND);
        load_host(l, a.lin, addend, size, join);
        l.b.switch_to_block(tlb);
        if l.misses_to_interpreter {
            // Not the TLB as well: code compiled while the identity pages
            // were worth a look runs where nearly every access finds
            // them (the decompressor was 0.12 s faster without the TLB
            // check between them and the exit).
            l.b.set_cold_block(tlb);
            return miss_exit(l, ins, join);
        }
    }
    let (fast, slow, entry) = tlb_check(l, a.lin, size, offsets::TLB_READ_TAG);

    l.b.switch_to_block(fast);
    let addend = l.b.ins().load(types::I64, mem(), entry, offsets::TLB_ADDEND);
    load_host(l, a.lin, addend, size, join);

    l.b.switch_to_block(slow);
    if l.misses_to_interpreter {
        return miss_exit(l, ins, join);
    }
    let segment = l.b.ins().iconst(types::I32, a.seg as i64);
    let width = l.b.ins().iconst(types::I32, size as i64);
    let v = l.call(l.helpers.read as usize, l.sigs.read, &[l.frame, segment, a.ea, width]);
    l.fault_exit_on_status(ins);
    l.b.ins().jump(join, &[v.into()]);

    l.b.switch_to_block(join);
    l.b.block_params(join)[0]
}

/// Ends a load's miss path with the miss exit; goes on at `join` with the
/// loaded value.
fn miss_exit(l: &mut Lower<'_, '_>, ins: &Instruction, join: cranelift_codegen::ir::Block) -> Value {
    l.miss_exit_here(ins);
    l.b.switch_to_block(join);
    l.b.block_params(join)[0]
}

/// Stores the low `size` bytes of `v`. A fault, or a write the helper
/// leaves to the interpreter (one that would drop cached code or reach a
/// device), exits with the state before `ins`: translated code never runs
/// on past a store that may have changed it.
pub(crate) fn store(l: &mut Lower<'_, '_>, ins: &Instruction, a: Addr, size: usize, v: Value) {
    let join = l.b.create_block();
    if l.inline_stores {
        let (fast, slow, entry) = tlb_check(l, a.lin, size, offsets::TLB_WRITE_TAG);
        l.b.switch_to_block(fast);
        let addend = l.b.ins().load(types::I64, mem(), entry, offsets::TLB_ADDEND);
        store_host(l, a.lin, addend, size, v, join);
        l.b.switch_to_block(slow);
        if l.misses_to_interpreter {
            l.miss_exit_here(ins);
            l.b.switch_to_block(join);
            return;
        }
    }

    let segment = l.b.ins().iconst(types::I32, a.seg as i64);
    let width = l.b.ins().iconst(types::I32, size as i64);
    let status = l.call(l.helpers.write as usize, l.sigs.write, &[l.frame, segment, a.ea, width, v]);
    l.exit_before_if(status, ins);
    l.b.ins().jump(join, &[]);

    l.b.switch_to_block(join);
}

/// The stack operand size of PUSH/POP, when the lowering handles it.
fn stack_size(ins: &Instruction) -> L<usize> {
    match ins.stack_pointer_increment().unsigned_abs() {
        2 => Ok(2),
        8 => Ok(8),
        _ => Err(Unsupported),
    }
}

fn ss_addr(sp: Value) -> Addr {
    Addr { seg: seg::SS, ea: sp, lin: sp }
}

/// Pushes `v` (`size` bytes) and updates RSP (after the write, so a fault
/// leaves it unchanged).
pub(crate) fn push_value(l: &mut Lower<'_, '_>, ins: &Instruction, v: Value, size: usize) {
    let rsp = l.gpr(4);
    let sp = l.b.ins().iadd_imm_s(rsp, -(size as i64));
    let a = ss_addr(sp);
    store(l, ins, a, size, v);
    l.set_gpr(4, sp);
}

/// PUSH r/imm/m.
pub(crate) fn push(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = stack_size(ins)?;
    let v = match ins.op0_kind() {
        OpKind::Register if is_gpr(ins.op0_register()) => l.read_reg(ins.op0_register()),
        OpKind::Memory => {
            check_mem(ins)?;
            let a = address(l, ins);
            load(l, ins, a, size)
        }
        k if crate::lower_alu::is_imm(k) => {
            let imm = crate::lower_alu::imm(ins, 0) & mask(size);
            l.iconst(imm)
        }
        _ => return Err(Unsupported),
    };
    push_value(l, ins, v, size);
    Ok(())
}

/// Reads the top of the stack (`size` bytes) without popping.
pub(crate) fn peek(l: &mut Lower<'_, '_>, ins: &Instruction, size: usize) -> Value {
    let rsp = l.gpr(4);
    let a = ss_addr(rsp);
    load(l, ins, a, size)
}

/// POP r (memory destinations fall back: their address uses the new RSP).
pub(crate) fn pop(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<()> {
    let size = stack_size(ins)?;
    if ins.op0_kind() != OpKind::Register || !is_gpr(ins.op0_register()) {
        return Err(Unsupported);
    }
    let v = peek(l, ins, size);
    let rsp = l.gpr(4);
    let sp = l.b.ins().iadd_imm_s(rsp, size as i64);
    l.set_gpr(4, sp);
    // POP RSP loads the popped value over the incremented RSP.
    l.write_reg(ins.op0_register(), v);
    Ok(())
}
