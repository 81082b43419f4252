//! One region to one Cranelift function: the register cache, exits, jumps
//! between the region's blocks, helper calls and the per-instruction
//! dispatch to the lowering modules.
//!
//! The function is `extern "C" fn(frame) -> u32`; the frame's entry index
//! says which region block it starts at. In optimised code guest
//! registers live in Cranelift variables, loaded from `CpuState` on first
//! use and written back (the dirty ones) at every exit and before every
//! fallback. First-tier code keeps them in `CpuState` instead
//! (`Lower::registers_in_memory`): a write is stored at once, a read is a
//! load reused within one Cranelift block; no register value lives across
//! the blocks every memory access makes, and no exit has any to write
//! back, so there is much less for the register allocator to do. Each
//! instruction is lowered in a fixed order, reads (which may fault) first,
//! then at most one memory write, then register and flag updates, so an
//! exit taken at a faulting access sees the state before the instruction
//! and an exit taken after a write that hit cached code sees the state
//! after it. Exits are emitted where they are taken, so they write back
//! exactly what is dirty at that point.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, SigRef, Signature, Value};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, Variable};
use emu_core::interp::{exit, offsets, Helpers, HOT_LOOP_BACK_EDGES};
use iced_x86::{Instruction, Mnemonic as M, Register};

use crate::flags::FlagsState;

/// A region loop looks for a stop request or a deliverable interrupt
/// every this many back edges (a power of two); the chain budget it
/// counts down is checked on every one.
pub(crate) const ATTENTION_EVERY: u32 = 64;

/// Why a lowering gave up on an instruction: it is run by the fallback.
pub(crate) struct Unsupported;

/// Lowering result for one instruction.
pub(crate) type L<T> = Result<T, Unsupported>;

pub(crate) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The offset from the frame pointer of `CpuState` field `offset`: the
/// state lies at a fixed distance from the frame, so native code keeps one
/// base pointer (a second one was spilled and reloaded all over big
/// regions).
pub(crate) const fn st(offset: i32) -> i32 {
    offset + offsets::STATE_FROM_FRAME
}

/// The signatures of the helpers.
pub(crate) struct Sigs {
    pub(crate) fallback: SigRef,
    pub(crate) read: SigRef,
    pub(crate) write: SigRef,
    pub(crate) frame_only: SigRef,
    /// Another translation's (see [`chain_sig`]).
    pub(crate) chain: SigRef,
    /// `div128`'s, called directly (System V) on DIV's rare wide path.
    pub(crate) div128: SigRef,
}

/// What the control flow does after an instruction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Falls through to the next instruction.
    Next,
    /// The block has ended (an exit was emitted and the builder is in a
    /// fresh unreachable block).
    Ended,
}

/// The state of one block's translation.
pub(crate) struct Lower<'a, 'b> {
    pub(crate) b: &'a mut FunctionBuilder<'b>,
    pub(crate) frame: Value,
    regs: [Variable; 16],
    loaded: [bool; 16],
    dirty: [bool; 16],
    pub(crate) flags: FlagsState,
    pub(crate) helpers: Helpers,
    pub(crate) sigs: Sigs,
    /// The register-preserving adapters helpers are called through (none:
    /// called directly).
    pub(crate) adapters: Option<[Adapter; 4]>,
    /// Index of the instruction being lowered.
    pub(crate) index: usize,
    /// The address of the block's link slots (0: no links), and the guest
    /// page of the block: only exits to targets in that page are linked.
    pub(crate) links: u64,
    /// Stores may use the TLB inline (off in lockstep, which journals
    /// every write in the write helper).
    pub(crate) inline_stores: bool,
    /// Exits hand over through the dispatcher's loop, never by a tail
    /// call (after an OUT: see `Translator`'s block ends).
    pub(crate) through_dispatcher: bool,
    pub(crate) page: u64,
    /// The shared exit tails: what they store, and their blocks.
    tails: Vec<(TailKey, cranelift_codegen::ir::Block)>,
    /// The region being translated, when it has more than one block.
    region: Option<RegionState>,
    /// The current region block: its index (its links are `2 * block`
    /// and `2 * block + 1`) and its first instruction's index.
    pub(crate) block: usize,
    pub(crate) block_start: usize,
    /// Instructions the region retired before the current block.
    retired_base: Variable,
    /// First-tier code of a loop: the optimised code's slot (see
    /// `TranslationRequest::optimized_slot`), reported at back-edge exits.
    optimized_slot: u64,
    /// Guest registers stay in `CpuState`: each write is stored at once
    /// and reads load them, reusing a value only within one Cranelift
    /// block (see `Translator::compile`).
    pub(crate) registers_in_memory: bool,
    /// Loads look in the supervisor TLB's identity pages before the TLB
    /// (`TranslationRequest::identity_pages`).
    pub(crate) identity_pages: bool,
    /// A memory access that misses leaves with the state before its
    /// instruction (`exit::MISS`) instead of calling a helper
    /// (`TranslationRequest::misses_to_interpreter`).
    pub(crate) misses_to_interpreter: bool,
    /// With `registers_in_memory`: the value each register last had, and
    /// the Cranelift block it is valid in.
    local: [Option<(cranelift_codegen::ir::Block, Value)>; 16],
}

/// The translation state a jump hands to a block it is the only way into.
#[derive(Clone, Copy)]
struct Handed {
    flags: FlagsState,
    loaded: [bool; 16],
    dirty: [bool; 16],
}

/// A region translation's state across its blocks.
struct RegionState {
    plan: crate::region::Plan,
    /// The Cranelift block of each region block.
    blocks: Vec<cranelift_codegen::ir::Block>,
    /// What a single-predecessor block starts with, handed over by its
    /// predecessor's jump.
    entry: Vec<Option<Handed>>,
    /// Jumps emitted into each block, and whether it was lowered.
    jumps: Vec<u32>,
    lowered: Vec<bool>,
}

/// The shape of the state a shared exit tail writes back: the dirty
/// registers (a mask), the pending flags' kind, operation and size, and
/// the types of the values passed (dirty registers, flag values, then RIP,
/// the retired count and the exit code).
#[derive(Clone, PartialEq, Eq)]
struct TailKey {
    dirty: u16,
    /// 0: nothing to store, 1: computed RFLAGS, 2: a pending record.
    flags: u8,
    op: emu_core::cpu::FlagsOp,
    size: u8,
    aux: bool,
    types: Vec<types::Type>,
}

fn gpr_index(r: Register) -> usize {
    (r.full_register() as usize).wrapping_sub(Register::RAX as usize) & 15
}

fn is_high8(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

/// A mask of the low `size` bytes.
pub(crate) fn mask(size: usize) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Whether `r` is a general-purpose register the lowering handles.
pub(crate) fn is_gpr(r: Register) -> bool {
    r.is_gpr()
}

/// The helpers' shapes (parameters, result), in `Sigs` order: fallback,
/// read, write and the frame-only ones (flags, carry, rdtsc).
pub(crate) fn helper_shapes(pointer: types::Type) -> [(Vec<types::Type>, types::Type); 4] {
    [
        (vec![pointer, types::I32], types::I32),
        (vec![pointer, types::I32, types::I64, types::I32], types::I64),
        (vec![pointer, types::I32, types::I64, types::I32, types::I64], types::I32),
        (vec![pointer], types::I64),
    ]
}

/// The signature of every translation: the frame in, an exit code out,
/// in Cranelift's `tail` convention so that one region can hand over to
/// the next by a tail call (`return_call_indirect`). On x86-64 this
/// signature is System V's at the machine level (the frame in RDI, the
/// code in EAX, System V's callee-saved registers, nothing on the stack so
/// nothing to pop), which is how the dispatcher calls it and how the
/// baseline backend compiles it.
pub(crate) fn chain_sig(pointer: types::Type) -> Signature {
    signature(CallConv::Tail, &[pointer], types::I32)
}

/// A signature of `params` to `ret` in calling convention `cc`.
pub(crate) fn signature(cc: CallConv, params: &[types::Type], ret: types::Type) -> Signature {
    let mut sig = Signature::new(cc);
    sig.params.extend(params.iter().map(|&t| AbiParam::new(t)));
    sig.returns.push(AbiParam::new(ret));
    sig
}

/// Helpers are called through adapters that preserve every register
/// (Cranelift's `preserve_all` convention), one per helper shape: the
/// adapter's address and signature (the helper's address first, then its
/// arguments). Calls to System V helpers clobber nine registers, and
/// every value live across even a cold slow-path call then competed for
/// the five callee-saved ones: big regions spilled guest registers and
/// their base pointers all over their fast paths.
#[derive(Clone, Copy)]
pub(crate) struct Adapter {
    pub(crate) address: u64,
    pub(crate) sig: SigRef,
    /// The helper's result type, which the adapter leaves in
    /// `JitFrame::ret` (its epilogue restores every register).
    pub(crate) ret: types::Type,
}

impl<'a, 'b> Lower<'a, 'b> {
    pub(crate) fn new(b: &'a mut FunctionBuilder<'b>, helpers: Helpers, pointer: types::Type, adapters: Option<[u64; 4]>) -> Self {
        let shapes = helper_shapes(pointer);
        let direct: Vec<SigRef> = shapes.iter().map(|(p, r)| b.import_signature(signature(CallConv::SystemV, p, *r))).collect();
        let chain = b.import_signature(chain_sig(pointer));
        let div128 = b.import_signature(signature(CallConv::SystemV, &[types::I64; 3], types::I64));
        let sigs = Sigs { fallback: direct[0], read: direct[1], write: direct[2], frame_only: direct[3], chain, div128 };
        let adapters = adapters.map(|addresses| {
            let mut out = Vec::with_capacity(4);
            for ((params, ret), address) in shapes.iter().zip(addresses) {
                let mut with_target = vec![pointer];
                with_target.extend(params);
                let mut sig = signature(CallConv::PreserveAll, &with_target, *ret);
                sig.returns.clear();
                out.push(Adapter { address, sig: b.import_signature(sig), ret: *ret });
            }
            [out[0], out[1], out[2], out[3]]
        });
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let frame = b.block_params(entry)[0];
        let regs = std::array::from_fn(|_| b.declare_var(types::I64));
        // A chain's regions count on from the one that handed over.
        let retired_base = b.declare_var(types::I64);
        let before = b.ins().load(types::I64, mem(), frame, offsets::FRAME_RETIRED);
        b.def_var(retired_base, before);
        Self {
            b,
            frame,
            regs,
            loaded: [false; 16],
            dirty: [false; 16],
            flags: FlagsState::Memory,
            helpers,
            sigs,
            adapters,
            index: 0,
            links: 0,
            inline_stores: true,
            through_dispatcher: false,
            page: u64::MAX,
            tails: Vec::new(),
            region: None,
            block: 0,
            block_start: 0,
            retired_base,
            optimized_slot: 0,
            registers_in_memory: false,
            identity_pages: false,
            misses_to_interpreter: false,
            local: [None; 16],
        }
    }

    /// Starts a region translation: goes to the Cranelift block of the
    /// region block the frame's entry index names (the entry block for an
    /// index out of range).
    pub(crate) fn start_region(&mut self, plan: crate::region::Plan, optimized_slot: u64) {
        let n = plan.blocks.len();
        self.optimized_slot = optimized_slot;
        if optimized_slot != 0 {
            self.call_optimized_once_there(optimized_slot);
        }
        let blocks: Vec<_> = (0..n).map(|_| self.b.create_block()).collect();
        if plan.blocks.iter().filter(|b| b.entry).count() <= 1 {
            self.b.ins().jump(blocks[0], &[]);
        } else {
            let index = self.b.ins().load(types::I32, mem(), self.frame, offsets::FRAME_ENTRY);
            // Each call its own: the SSA builder appends arguments to them.
            // Blocks that are not entries are never named (the dispatcher
            // enters only entries): their slots go to the first block.
            let calls: Vec<_> = blocks
                .iter()
                .zip(&plan.blocks)
                .map(|(&b, rb)| self.b.func.dfg.block_call(if rb.entry { b } else { blocks[0] }, &[]))
                .collect();
            let default = self.b.func.dfg.block_call(blocks[0], &[]);
            let table = cranelift_codegen::ir::JumpTableData::new(default, &calls);
            let jt = self.b.create_jump_table(table);
            self.b.ins().br_table(index, jt);
        }
        self.region = Some(RegionState { plan, blocks, entry: vec![None; n], jumps: vec![0; n], lowered: vec![false; n] });
    }

    /// The entry of a first-tier translation: once the word at `slot`
    /// holds the optimised translation's entry, every run goes there (it
    /// reads the same frame, entry index included).
    fn call_optimized_once_there(&mut self, slot: u64) {
        let slot = self.iconst(slot);
        let optimized = self.b.ins().load(types::I64, mem(), slot, 0);
        let call = self.b.create_block();
        let own = self.b.create_block();
        self.b.ins().brif(optimized, call, &[], own, &[]);
        self.b.switch_to_block(call);
        self.b.ins().return_call_indirect(self.sigs.chain, optimized, &[self.frame]);
        self.b.switch_to_block(own);
    }

    /// Begins lowering region block `i`. A block with one predecessor
    /// goes on with its registers and flags as values; any other starts
    /// from `CpuState` (its predecessors stored what they changed).
    pub(crate) fn begin_block(&mut self, i: usize, start: usize) {
        self.block = i;
        self.block_start = start;
        let Some(r) = &mut self.region else { return };
        r.lowered[i] = true;
        let cl = r.blocks[i];
        let handed = r.entry[i];
        self.b.switch_to_block(cl);
        match handed {
            Some(h) => {
                self.flags = h.flags;
                self.loaded = h.loaded;
                self.dirty = h.dirty;
            }
            None => {
                self.flags = FlagsState::Memory;
                self.loaded = [false; 16];
                self.dirty = [false; 16];
            }
        }
        self.local = [None; 16];
    }

    /// The region block at `rip`, when jumps there stay in native code.
    pub(crate) fn internal(&self, rip: u64) -> Option<usize> {
        self.region.as_ref()?.plan.block_at(rip)
    }

    /// The region blocks a RET may return to, with their RIPs.
    pub(crate) fn return_targets(&self) -> Vec<(u64, usize)> {
        let Some(r) = &self.region else { return Vec::new() };
        r.plan.returns.iter().map(|&i| (r.plan.blocks[i].rip, i)).collect()
    }

    /// `retired` (a count from the start of the region's instruction list,
    /// as `index + 1` after an instruction) as the instructions this run of
    /// the region retired.
    pub(crate) fn retired_value(&mut self, retired: u64) -> Value {
        let base = self.b.use_var(self.retired_base);
        let start = if self.region.is_none() { 0 } else { self.block_start as u64 };
        self.b.ins().iadd_imm_s(base, retired.wrapping_sub(start) as i64)
    }

    /// Ends the current block with a jump to region block `target`, having
    /// retired `retired` instructions (counted as for `retired_value`);
    /// `slot` is the exit's link if it must leave after all (`None`: a
    /// predicted return, which leaves through the hop table).
    /// Backward jumps (the only way round a loop) take one from the
    /// chain budget and leave when it is spent, or when a stop or an
    /// interrupt (with IF set) waits. A jump that cannot hand over its
    /// state as planned exits instead.
    pub(crate) fn jump_to(&mut self, target: usize, retired: u64, slot: Option<usize>) {
        let Some(r) = &self.region else { return };
        let (rip, cl) = (r.plan.blocks[target].rip, r.blocks[target]);
        let single = !r.plan.blocks[target].entry && r.plan.preds[target] == 1;
        let flags_dead = r.plan.flags_dead[target];
        let backward = rip <= r.plan.blocks[self.block].rip;
        if r.jumps[target] >= r.plan.preds[target] || (single && r.lowered[target]) {
            match slot {
                Some(slot) => self.exit_direct(rip, retired, slot),
                None => {
                    let target = self.iconst(rip);
                    self.exit_through_hops(target, Some(rip), retired);
                }
            }
            return;
        }
        if backward {
            self.poll_budget(rip, retired);
        }
        if !single {
            // The target starts from CpuState, but replaces a lazy flags
            // record before anything could read it when `flags_dead`.
            if flags_dead && matches!(self.flags, FlagsState::Pending(_)) {
                self.store_registers();
            } else {
                self.store_state();
            }
        }
        let n = self.retired_value(retired);
        self.b.def_var(self.retired_base, n);
        self.b.ins().jump(cl, &[]);
        let handed = Handed { flags: self.flags, loaded: self.loaded, dirty: self.dirty };
        if let Some(r) = &mut self.region {
            r.jumps[target] += 1;
            if single {
                r.entry[target] = Some(handed);
            }
        }
    }

    /// Takes one from the chain budget, leaving (to continue at `rip`)
    /// when it is spent or, every [`ATTENTION_EVERY`] back edges, when a
    /// stop or a deliverable interrupt waits.
    fn poll_budget(&mut self, rip: u64, retired: u64) {
        let budget = self.b.ins().load(types::I32, mem(), self.frame, offsets::FRAME_BUDGET);
        let spent = self.b.ins().icmp_imm_s(IntCC::Equal, budget, 0);
        self.cold_if(spent, |l| l.exit_here(rip, retired, exit::CONTINUE));
        let left = self.b.ins().iadd_imm_s(budget, -1);
        self.b.ins().store(mem(), left, self.frame, offsets::FRAME_BUDGET);
        if self.optimized_slot != 0 {
            self.count_back_edge();
        }
        // The stop and interrupt flags lie behind pointers, and IF in the
        // state: five loads, which a tight loop paid on every iteration.
        let due = self.b.ins().band_imm_s(left, i64::from(ATTENTION_EVERY - 1));
        let due = self.b.ins().icmp_imm_s(IntCC::Equal, due, 0);
        self.cold_side(due, |l| {
            let stop_ptr = l.b.ins().load(types::I64, mem(), l.frame, offsets::FRAME_STOPPING);
            let stop = l.b.ins().uload8(types::I32, mem(), stop_ptr, 0);
            let pending_ptr = l.b.ins().load(types::I64, mem(), l.frame, offsets::FRAME_PENDING);
            let pending = l.b.ins().uload8(types::I32, mem(), pending_ptr, 0);
            let rflags = l.b.ins().load(types::I64, mem(), l.frame, st(offsets::RFLAGS));
            let irq = l.b.ins().ushr_imm_s(rflags, 9);
            let irq = l.b.ins().ireduce(types::I32, irq);
            let irq = l.b.ins().band(irq, pending);
            let attention = l.b.ins().bor(irq, stop);
            let attention = l.b.ins().band_imm_s(attention, 1);
            l.cold_if(attention, |l| l.exit_here(rip, retired, exit::CONTINUE));
        });
    }

    /// First-tier code of a loop counts its back edges in its region's
    /// [`emu_core::interp::TierSlot`]; every `HOT_LOOP_BACK_EDGES`th names
    /// the slot in `JitFrame::hot_loop` for the dispatcher, which asks for
    /// the optimised translation (again, if another loop of the same
    /// chain overwrote the name before the dispatcher saw it).
    fn count_back_edge(&mut self) {
        let slot = self.iconst(self.optimized_slot);
        let n = self.b.ins().load(types::I64, mem(), slot, offsets::TIER_SLOT_BACK_EDGES);
        let n = self.b.ins().iadd_imm_s(n, 1);
        self.b.ins().store(mem(), n, slot, offsets::TIER_SLOT_BACK_EDGES);
        let within = self.b.ins().band_imm_s(n, i64::from(HOT_LOOP_BACK_EDGES - 1));
        let hot = self.b.ins().icmp_imm_s(IntCC::Equal, within, 0);
        self.cold_side(hot, |l| {
            l.b.ins().store(mem(), slot, l.frame, offsets::FRAME_HOT_LOOP);
        });
    }

    pub(crate) fn iconst(&mut self, v: u64) -> Value {
        self.b.ins().iconst(types::I64, v as i64)
    }

    /// The full 64-bit register `i`.
    pub(crate) fn gpr(&mut self, i: usize) -> Value {
        if self.registers_in_memory {
            let here = self.b.current_block();
            if let Some((block, v)) = self.local[i] {
                if Some(block) == here {
                    return v;
                }
            }
            let v = self.b.ins().load(types::I64, mem(), self.frame, st(offsets::GPR + 8 * i as i32));
            self.local[i] = here.map(|b| (b, v));
            return v;
        }
        if !self.loaded[i] {
            let v = self.b.ins().load(types::I64, mem(), self.frame, st(offsets::GPR + 8 * i as i32));
            self.b.def_var(self.regs[i], v);
            self.loaded[i] = true;
        }
        self.b.use_var(self.regs[i])
    }

    pub(crate) fn set_gpr(&mut self, i: usize, v: Value) {
        if self.registers_in_memory {
            self.b.ins().store(mem(), v, self.frame, st(offsets::GPR + 8 * i as i32));
            self.local[i] = self.b.current_block().map(|b| (b, v));
            return;
        }
        self.b.def_var(self.regs[i], v);
        self.loaded[i] = true;
        self.dirty[i] = true;
    }

    /// A general-purpose register at its own size, zero-extended.
    pub(crate) fn read_reg(&mut self, r: Register) -> Value {
        let full = self.gpr(gpr_index(r));
        if is_high8(r) {
            let v = self.b.ins().ushr_imm_s(full, 8);
            return self.b.ins().band_imm_s(v, 0xff);
        }
        self.zext(full, r.size())
    }

    /// The low `size` bytes of `v`, zero-extended (a plain 32-bit move
    /// for 4 bytes, where a 64-bit AND would need its mask in a register).
    pub(crate) fn zext(&mut self, v: Value, size: usize) -> Value {
        let narrow = match size {
            1 => types::I8,
            2 => types::I16,
            4 => types::I32,
            _ => return v,
        };
        if self.significant_bits(v) <= narrow.bits() {
            return v;
        }
        let low = self.b.ins().ireduce(narrow, v);
        self.b.ins().uextend(types::I64, low)
    }

    /// How many low bits of `v` may be nonzero, as far as its definition
    /// shows (a zero extension, a constant): every 32-bit operation zero-
    /// extends its result, and most of what it reads already is.
    fn significant_bits(&self, v: Value) -> u32 {
        use cranelift_codegen::ir::{InstructionData, Opcode, ValueDef};
        let dfg = &self.b.func.dfg;
        let bits = dfg.value_type(v).bits();
        let ValueDef::Result(inst, 0) = dfg.value_def(v) else { return bits };
        match dfg.insts[inst] {
            InstructionData::Unary { opcode: Opcode::Uextend, arg } => dfg.value_type(arg).bits(),
            InstructionData::UnaryImm { opcode: Opcode::Iconst, imm } => {
                let value = imm.bits() as u64 & (u64::MAX >> (64 - bits));
                64 - value.leading_zeros()
            }
            _ => bits,
        }
    }

    /// Writes a register with the x86 rules: 8- and 16-bit writes merge,
    /// 32-bit writes zero-extend.
    pub(crate) fn write_reg(&mut self, r: Register, v: Value) {
        let i = gpr_index(r);
        let new = if is_high8(r) {
            let full = self.gpr(i);
            let kept = self.b.ins().band_imm_s(full, !0xff00i64);
            let low = self.b.ins().band_imm_s(v, 0xff);
            let moved = self.b.ins().ishl_imm_s(low, 8);
            self.b.ins().bor(kept, moved)
        } else {
            match r.size() {
                8 => v,
                4 => self.zext(v, 4),
                n => {
                    let full = self.gpr(i);
                    let m = mask(n) as i64;
                    let kept = self.b.ins().band_imm_s(full, !m);
                    let low = self.b.ins().band_imm_s(v, m);
                    self.b.ins().bor(kept, low)
                }
            }
        };
        self.set_gpr(i, new);
    }

    /// Stores the dirty registers (they stay cached).
    fn store_registers(&mut self) {
        for i in 0..16 {
            if self.dirty[i] {
                let v = self.b.use_var(self.regs[i]);
                self.b.ins().store(mem(), v, self.frame, st(offsets::GPR + 8 * i as i32));
            }
        }
    }

    /// Stores the dirty registers and pending flags (the state stays
    /// cached: for exits and cold paths).
    pub(crate) fn store_state(&mut self) {
        self.store_registers();
        let flags = self.flags;
        crate::flags::store(self, &flags);
    }

    fn store_rip(&mut self, rip: u64) {
        let v = self.iconst(rip);
        self.b.ins().store(mem(), v, self.frame, st(offsets::RIP));
    }

    fn store_retired(&mut self, n: Value) {
        self.b.ins().store(mem(), n, self.frame, offsets::FRAME_RETIRED);
    }

    /// Writes everything back, sets RIP and the retired count, and returns
    /// `code`, in the current block (which is then finished).
    pub(crate) fn exit_here(&mut self, rip: u64, retired: u64, code: u32) {
        let rip = self.iconst(rip);
        self.exit_value(rip, retired, code);
    }

    /// [`Lower::exit_here`] with a computed RIP.
    pub(crate) fn exit_value(&mut self, rip: Value, retired: u64, code: u32) {
        self.store_state();
        self.b.ins().store(mem(), rip, self.frame, st(offsets::RIP));
        let n = self.retired_value(retired);
        self.store_retired(n);
        let c = self.b.ins().iconst(types::I32, i64::from(code));
        self.b.ins().return_(&[c]);
    }

    /// Ends the block with a control transfer to a static `target`: through
    /// link `slot` when the target is in the block's page (the same
    /// mapping) and the link is live (else with LOOKUP, naming the link so
    /// the dispatcher can fill it), through the hop table for a target in
    /// another page (see [`Lower::chain_through_hops`]).
    pub(crate) fn exit_direct(&mut self, target: u64, retired: u64, slot: usize) {
        self.store_state();
        self.exit_direct_stored(target, retired, slot);
    }

    /// [`Lower::exit_direct`] once the state is stored (both ways of a Jcc
    /// share one write-back before the branch).
    pub(crate) fn exit_direct_stored(&mut self, target: u64, retired: u64, slot: usize) {
        self.store_rip(target);
        let n = self.retired_value(retired);
        self.store_retired(n);
        if self.links == 0 || target & !0xfff != self.page {
            // Another page may map elsewhere next time: the hop table
            // checks the mapping (its epoch) where a link could not.
            let rip = self.iconst(target);
            self.chain_through_hops(rip, Some(target));
            return;
        }
        let link = self.iconst(self.links + (2 * self.block + slot) as u64 * offsets::LINK_SIZE);
        let valid = self.b.ins().load(types::I64, mem(), link, offsets::LINK_VALID);
        let check = self.b.create_block();
        let go = self.b.create_block();
        let unlinked = self.b.create_block();
        self.b.ins().brif(valid, check, &[], unlinked, &[]);
        self.b.switch_to_block(check);
        let live = self.b.ins().uload8(types::I32, mem(), valid, 0);
        self.b.ins().brif(live, go, &[], unlinked, &[]);
        self.b.switch_to_block(go);
        let entry = self.b.ins().load(types::I64, mem(), link, offsets::LINK_ENTRY);
        let block = self.b.ins().load(types::I64, mem(), link, offsets::LINK_BLOCK);
        let index = self.b.ins().load(types::I32, mem(), link, offsets::LINK_INDEX);
        self.chain_to(entry, block, index);
        self.b.switch_to_block(unlinked);
        // The dispatcher links it (once the target has native code).
        self.b.ins().store(mem(), link, self.frame, offsets::FRAME_EXIT_LINK);
        let c = self.b.ins().iconst(types::I32, i64::from(exit::LOOKUP));
        self.b.ins().return_(&[c]);
    }

    /// Ends the block at a computed (indirect) target: through the hop
    /// table (see [`Lower::chain_through_hops`]).
    pub(crate) fn exit_indirect(&mut self, rip: Value, retired: u64) {
        self.exit_through_hops(rip, None, retired);
    }

    /// Writes everything back, sets RIP and the retired count, and ends
    /// the block through the hop table (`known`: see
    /// [`Lower::chain_through_hops`]).
    fn exit_through_hops(&mut self, rip: Value, known: Option<u64>, retired: u64) {
        self.store_state();
        self.b.ins().store(mem(), rip, self.frame, st(offsets::RIP));
        let n = self.retired_value(retired);
        self.store_retired(n);
        self.chain_through_hops(rip, known);
    }

    /// Ends the block (state, RIP and the retired count stored) by
    /// probing the dispatcher's hop table for `rip` inline, as
    /// `hop_lookup` does (same index, RIP, TLB epoch and CPL, then the
    /// block's `live` flag): on a hit, hands over to the entry found
    /// ([`Lower::chain_to`]); else answers LOOKUP for the dispatcher's
    /// loop. `known` is `rip` when it is a constant, whose entry's
    /// address is then one too.
    fn chain_through_hops(&mut self, rip: Value, known: Option<u64>) {
        let hops = self.b.ins().load(types::I64, mem(), self.frame, offsets::FRAME_HOPS);
        let h = match known {
            Some(rip) => {
                let off = ((rip ^ (rip >> 12)) & (offsets::HOP_COUNT - 1)) * offsets::HOP_SIZE;
                self.b.ins().iadd_imm_s(hops, off as i64)
            }
            None => {
                // Index: (rip ^ (rip >> 12)) & (HOP_COUNT - 1), scaled to bytes.
                let hi = self.b.ins().ushr_imm_s(rip, 12);
                let x = self.b.ins().bxor(rip, hi);
                let idx = self.b.ins().band_imm_s(x, (offsets::HOP_COUNT - 1) as i64);
                let off = self.b.ins().imul_imm_s(idx, offsets::HOP_SIZE as i64);
                self.b.ins().iadd(hops, off)
            }
        };
        let h_rip = self.b.ins().load(types::I64, mem(), h, offsets::HOP_RIP);
        let h_epoch = self.b.ins().load(types::I64, mem(), h, offsets::HOP_EPOCH);
        // The epoch the entry goes by (see `Tlb::epochs`).
        let epochs = self.b.ins().load(types::I64, mem(), self.frame, offsets::FRAME_EPOCH);
        let which = self.b.ins().uload32(mem(), h, offsets::HOP_EPOCH_OFFSET);
        let epoch_ptr = self.b.ins().iadd(epochs, which);
        let epoch = self.b.ins().load(types::I64, mem(), epoch_ptr, 0);
        let h_cpl = self.b.ins().uload8(types::I32, mem(), h, offsets::HOP_CPL);
        let cpl = self.b.ins().load(types::I32, mem(), self.frame, offsets::FRAME_CPL);
        // Equal when every XOR is zero: one branch for the three compares.
        let d_rip = self.b.ins().bxor(h_rip, rip);
        let d_epoch = self.b.ins().bxor(h_epoch, epoch);
        let d_cpl = self.b.ins().bxor(h_cpl, cpl);
        let d_cpl = self.b.ins().uextend(types::I64, d_cpl);
        let d = self.b.ins().bor(d_rip, d_epoch);
        let d = self.b.ins().bor(d, d_cpl);
        let check = self.b.create_block();
        let go = self.b.create_block();
        let miss = self.b.create_block();
        self.b.ins().brif(d, miss, &[], check, &[]);
        self.b.switch_to_block(check);
        // Empty entries point at a flag that is never set.
        let live_ptr = self.b.ins().load(types::I64, mem(), h, offsets::HOP_LIVE);
        let live = self.b.ins().uload8(types::I32, mem(), live_ptr, 0);
        self.b.ins().brif(live, go, &[], miss, &[]);
        self.b.switch_to_block(go);
        let entry = self.b.ins().load(types::I64, mem(), h, offsets::HOP_ENTRY);
        let block = self.b.ins().load(types::I64, mem(), h, offsets::HOP_BLOCK);
        let index = self.b.ins().load(types::I32, mem(), h, offsets::HOP_INDEX);
        self.chain_to(entry, block, index);
        self.b.switch_to_block(miss);
        let c = self.b.ins().iconst(types::I32, i64::from(exit::LOOKUP));
        self.b.ins().return_(&[c]);
    }

    /// Ends the block (its state committed) by handing over to native
    /// `entry`, of the live `block` and region entry `index`: a tail call,
    /// which takes one from the chain budget. When the budget is spent,
    /// and every [`ATTENTION_EVERY`]th time (for the dispatcher to look
    /// for a stop or a deliverable interrupt), it answers CHAIN with the
    /// entry in the frame instead, as the dispatcher's loop expects; and
    /// always with `through_dispatcher`.
    fn chain_to(&mut self, entry: Value, block: Value, index: Value) {
        self.b.ins().store(mem(), block, self.frame, offsets::FRAME_BLOCK);
        self.b.ins().store(mem(), index, self.frame, offsets::FRAME_ENTRY);
        let to_dispatcher = |l: &mut Self| {
            l.b.ins().store(mem(), entry, l.frame, offsets::FRAME_NEXT);
            let c = l.b.ins().iconst(types::I32, i64::from(exit::CHAIN));
            l.b.ins().return_(&[c]);
        };
        if self.through_dispatcher {
            to_dispatcher(self);
            return;
        }
        let budget = self.b.ins().load(types::I32, mem(), self.frame, offsets::FRAME_BUDGET);
        // Zero (spent) is a multiple too.
        let due = self.b.ins().band_imm_s(budget, i64::from(ATTENTION_EVERY - 1));
        let due = self.b.ins().icmp_imm_s(IntCC::Equal, due, 0);
        self.cold_if(due, to_dispatcher);
        let left = self.b.ins().iadd_imm_s(budget, -1);
        self.b.ins().store(mem(), left, self.frame, offsets::FRAME_BUDGET);
        let n = self.b.ins().load(types::I64, mem(), self.frame, offsets::FRAME_TAIL_CHAINED);
        let n = self.b.ins().iadd_imm_s(n, 1);
        self.b.ins().store(mem(), n, self.frame, offsets::FRAME_TAIL_CHAINED);
        self.b.ins().return_call_indirect(self.sigs.chain, entry, &[self.frame]);
    }

    /// When `cond` is nonzero, takes a cold path on which `leave` emits an
    /// exit (it must end that path); else goes on here.
    pub(crate) fn cold_if(&mut self, cond: Value, leave: impl FnOnce(&mut Self)) {
        self.cold_branch(cond, |l, _| leave(l));
    }

    /// Runs `side` (emitting into a cold block) if `cond` holds, then goes
    /// on from where both paths meet; unlike [`Lower::cold_if`], the side
    /// path rejoins.
    pub(crate) fn cold_side(&mut self, cond: Value, side: impl FnOnce(&mut Self)) {
        self.cold_branch(cond, |l, cont| {
            side(l);
            l.b.ins().jump(cont, &[]);
        });
    }

    /// Branches to a new cold block when `cond` is nonzero, fills it with
    /// `cold` (given the block the other way goes on in), and goes on in
    /// that block.
    fn cold_branch(&mut self, cond: Value, cold: impl FnOnce(&mut Self, cranelift_codegen::ir::Block)) {
        let side = self.b.create_block();
        let cont = self.b.create_block();
        self.b.set_cold_block(side);
        self.b.ins().brif(cond, side, &[], cont, &[]);
        self.b.switch_to_block(side);
        cold(self, cont);
        self.b.switch_to_block(cont);
    }

    /// The exit for a fault in the current instruction: state before it.
    pub(crate) fn fault_exit_here(&mut self, ins: &Instruction) {
        let (tail, args) = self.tail_for(ins.ip(), self.index as u64, exit::FAULT);
        self.b.ins().jump(tail, &args);
    }

    /// The exit for an access of `ins` that missed: state before it, for
    /// the interpreter to run.
    pub(crate) fn miss_exit_here(&mut self, ins: &Instruction) {
        let (tail, args) = self.tail_for(ins.ip(), self.index as u64, exit::MISS);
        self.b.ins().jump(tail, &args);
    }

    /// Takes the fault exit of `ins` (on a cold path) when `faulted` is
    /// nonzero, else goes on.
    pub(crate) fn fault_exit_if(&mut self, faulted: Value, ins: &Instruction) {
        self.cold_if(faulted, |l| l.fault_exit_here(ins));
    }

    /// Leaves with the state before `ins` and exit code `status` (FAULT or
    /// INTERPRET, from the write helper) when `status` is nonzero.
    pub(crate) fn exit_before_if(&mut self, status: Value, ins: &Instruction) {
        self.cold_if(status, |l| {
            let (tail, args) = l.tail_with_code(ins.ip(), l.index as u64, status);
            l.b.ins().jump(tail, &args);
        });
    }

    /// Takes the fault exit of `ins` when the frame's status says a helper
    /// stashed a fault.
    pub(crate) fn fault_exit_on_status(&mut self, ins: &Instruction) {
        let status = self.b.ins().load(types::I32, mem(), self.frame, offsets::FRAME_STATUS);
        self.fault_exit_if(status, ins);
    }

    /// The shared tail that writes back the state as it is now, and the
    /// arguments to jump to it with.
    fn tail_for(&mut self, rip: u64, retired: u64, code: u32) -> (cranelift_codegen::ir::Block, Vec<cranelift_codegen::ir::BlockArg>) {
        let code = self.b.ins().iconst(types::I32, i64::from(code));
        self.tail_with_code(rip, retired, code)
    }

    /// [`Lower::tail_for`] with the exit code in a value.
    fn tail_with_code(&mut self, rip: u64, retired: u64, code: Value) -> (cranelift_codegen::ir::Block, Vec<cranelift_codegen::ir::BlockArg>) {
        let mut values = Vec::with_capacity(24);
        let mut dirty = 0u16;
        for i in 0..16 {
            if self.dirty[i] {
                dirty |= 1 << i;
                values.push(self.b.use_var(self.regs[i]));
            }
        }
        let (mut flags, mut op, mut size, mut aux) = (0, emu_core::cpu::FlagsOp::Materialized, 0, false);
        match self.flags {
            FlagsState::Memory | FlagsState::Known(_) => {}
            FlagsState::Computed(v) => {
                flags = 1;
                values.push(v);
            }
            FlagsState::Pending(p) => {
                (flags, op, size, aux) = (2, p.op, p.size as u8, p.aux.is_some());
                values.extend([p.src1, p.src2, p.res]);
                values.extend(p.aux);
            }
        }
        values.push(self.iconst(rip));
        values.push(self.retired_value(retired));
        values.push(code);
        let types: Vec<types::Type> = values.iter().map(|&v| self.b.func.dfg.value_type(v)).collect();
        let key = TailKey { dirty, flags, op, size, aux, types };
        let tail = match self.tails.iter().find(|(k, _)| *k == key) {
            Some(&(_, block)) => block,
            None => {
                let block = self.b.create_block();
                self.b.set_cold_block(block);
                for &t in &key.types {
                    self.b.append_block_param(block, t);
                }
                self.tails.push((key, block));
                block
            }
        };
        (tail, values.into_iter().map(Into::into).collect())
    }

    /// Emits the shared exit tails' bodies (once every exit is known).
    pub(crate) fn emit_tails(&mut self) {
        for (key, block) in std::mem::take(&mut self.tails) {
            self.b.switch_to_block(block);
            let params = self.b.block_params(block).to_vec();
            let mut k = 0;
            for i in 0..16 {
                if key.dirty & (1 << i) != 0 {
                    self.b.ins().store(mem(), params[k], self.frame, st(offsets::GPR + 8 * i));
                    k += 1;
                }
            }
            let flags = match key.flags {
                1 => {
                    k += 1;
                    FlagsState::Computed(params[k - 1])
                }
                2 => {
                    let (src1, src2, res) = (params[k], params[k + 1], params[k + 2]);
                    k += 3;
                    let aux = key.aux.then(|| {
                        k += 1;
                        params[k - 1]
                    });
                    FlagsState::Pending(crate::flags::Pending { op: key.op, size: usize::from(key.size), src1, src2, res, aux })
                }
                _ => FlagsState::Memory,
            };
            crate::flags::store(self, &flags);
            self.b.ins().store(mem(), params[k], self.frame, st(offsets::RIP));
            self.store_retired(params[k + 1]);
            self.b.ins().return_(&[params[k + 2]]);
        }
    }

    /// Calls a helper by address.
    pub(crate) fn call(&mut self, addr: usize, sig: SigRef, args: &[Value]) -> Value {
        let target = self.iconst(addr as u64);
        let shape = [self.sigs.fallback, self.sigs.read, self.sigs.write, self.sigs.frame_only].iter().position(|&s| s == sig);
        if let (Some(adapters), Some(shape)) = (self.adapters, shape) {
            let adapter = adapters[shape];
            let callee = self.iconst(adapter.address);
            let mut with_target = Vec::with_capacity(args.len() + 1);
            with_target.push(target);
            with_target.extend_from_slice(args);
            self.b.ins().call_indirect(adapter.sig, callee, &with_target);
            return self.b.ins().load(adapter.ret, mem(), self.frame, offsets::FRAME_RET);
        }
        let inst = self.b.ins().call_indirect(sig, target, args);
        self.b.inst_results(inst)[0]
    }

    /// Runs instruction `index` with the interpreter: everything written
    /// back first, reloaded after.
    pub(crate) fn fallback(&mut self, ins: &Instruction) {
        self.store_state();
        self.dirty = [false; 16];
        self.flags = FlagsState::Memory;
        self.store_rip(ins.ip());
        let idx = self.b.ins().iconst(types::I32, self.index as i64);
        let code = self.call(self.helpers.fallback as usize, self.sigs.fallback, &[self.frame, idx]);
        // Not CONTINUE: the instruction retired unless it faulted; RIP and
        // the state are already in place.
        self.cold_if(code, |l| {
            let ended = l.b.ins().icmp_imm_s(IntCC::Equal, code, i64::from(exit::END_BLOCK));
            let ended = l.b.ins().uextend(types::I64, ended);
            let before = l.retired_value(l.index as u64);
            let retired = l.b.ins().iadd(ended, before);
            l.store_retired(retired);
            l.b.ins().return_(&[code]);
        });
        self.loaded = [false; 16];
        self.local = [None; 16];
    }

    /// In a cold path: runs the instruction with the interpreter and exits
    /// whatever it answers (for dynamic cases the lowering leaves to it,
    /// on instructions that end the block).
    pub(crate) fn cold_fallback_exit(&mut self, ins: &Instruction) {
        self.store_state();
        self.store_rip(ins.ip());
        let idx = self.b.ins().iconst(types::I32, self.index as i64);
        let code = self.call(self.helpers.fallback as usize, self.sigs.fallback, &[self.frame, idx]);
        let faulted = self.b.ins().icmp_imm_s(IntCC::Equal, code, i64::from(exit::FAULT));
        let retired_extra = self.b.ins().bnot(faulted);
        let retired_extra = self.b.ins().band_imm_s(retired_extra, 1);
        let retired_extra = self.b.ins().uextend(types::I64, retired_extra);
        let before = self.retired_value(self.index as u64);
        let retired = self.b.ins().iadd(retired_extra, before);
        self.store_retired(retired);
        self.b.ins().return_(&[code]);
    }

    /// Leaves through the interpreter (on a cold path, ending the block)
    /// when `bad` holds: it raises what the lowering leaves to it (#GP,
    /// #DE, #UD/#NM); else goes on.
    pub(crate) fn cold_fallback_if(&mut self, ins: &Instruction, bad: Value) {
        self.cold_if(bad, |l| l.cold_fallback_exit(ins));
    }

    /// Lowers one instruction, or falls back.
    pub(crate) fn instruction(&mut self, ins: &Instruction) -> (Flow, bool) {
        match lower_one(self, ins).ok() {
            Some(flow) => {
                (flow, true)
            }
            None => {
                self.fallback(ins);
                (Flow::Next, false)
            }
        }
    }
}

/// Dispatches by mnemonic. An `Err` must come before anything was emitted
/// that changes state (the lowerings check their operands first).
fn lower_one(l: &mut Lower<'_, '_>, ins: &Instruction) -> L<Flow> {
    use crate::{lower_alu as alu, lower_ctl as ctl, lower_mem as memops};
    match ins.mnemonic() {
        M::Nop | M::Endbr64 | M::Endbr32 => Ok(Flow::Next),
        m if crate::lower_sys::handles(m) => crate::lower_sys::lower(l, ins).map(|_| Flow::Next),
        M::Pshufb => crate::lower_sse::pshufb(l, ins).map(|_| Flow::Next),
        M::Palignr => crate::lower_sse::palignr(l, ins).map(|_| Flow::Next),
        M::Mov if crate::lower_sys::is_sreg_read(ins) => crate::lower_sys::mov_from_sreg(l, ins).map(|_| Flow::Next),
        M::Mov => alu::mov(l, ins).map(|_| Flow::Next),
        M::Movzx | M::Movsx | M::Movsxd => alu::movx(l, ins).map(|_| Flow::Next),
        M::Lea => alu::lea(l, ins).map(|_| Flow::Next),
        M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => alu::binary(l, ins).map(|_| Flow::Next),
        M::Inc | M::Dec | M::Neg | M::Not => alu::unary(l, ins).map(|_| Flow::Next),
        M::Imul => alu::imul(l, ins).or_else(|_| crate::lower_muldiv::mul(l, ins)).map(|_| Flow::Next),
        M::Shl | M::Sal | M::Shr | M::Sar => alu::shift(l, ins).or_else(|_| crate::lower_shift::shift(l, ins)).map(|_| Flow::Next),
        M::Rol | M::Ror => crate::lower_shift::rotate(l, ins).map(|_| Flow::Next),
        M::Shld | M::Shrd => crate::lower_shift::double(l, ins).map(|_| Flow::Next),
        M::Mul => crate::lower_muldiv::mul(l, ins).map(|_| Flow::Next),
        M::Div | M::Idiv => crate::lower_muldiv::div(l, ins).map(|_| Flow::Next),
        M::Cbw | M::Cwde | M::Cdqe | M::Cwd | M::Cdq | M::Cqo => crate::lower_muldiv::extend_acc(l, ins).map(|_| Flow::Next),
        M::Bt | M::Bts | M::Btr | M::Btc => crate::lower_bits::bit_test(l, ins).map(|_| Flow::Next),
        M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt | M::Popcnt => crate::lower_bits::scan(l, ins).map(|_| Flow::Next),
        M::Bswap => crate::lower_bits::bswap(l, ins).map(|_| Flow::Next),
        M::Xchg => crate::lower_bits::xchg(l, ins).map(|_| Flow::Next),
        M::Xadd => crate::lower_bits::xadd(l, ins).map(|_| Flow::Next),
        M::Cmpxchg => crate::lower_bits::cmpxchg(l, ins).map(|_| Flow::Next),
        M::Cmpxchg16b => crate::lower_bits::cmpxchg16b(l, ins).map(|_| Flow::Next),
        M::Movss => crate::lower_sse::mov_scalar(l, ins).map(|_| Flow::Next),
        M::Movsd if crate::lower_sse::is_scalar_move(ins) => crate::lower_sse::mov_scalar(l, ins).map(|_| Flow::Next),
        M::Comiss | M::Comisd | M::Ucomiss | M::Ucomisd => crate::lower_sse::comis(l, ins).map(|_| Flow::Next),
        M::Fnstcw => crate::lower_sse::fnstcw(l, ins).map(|_| Flow::Next),
        M::Movsb | M::Movsw | M::Movsd | M::Movsq | M::Stosb | M::Stosw | M::Stosd | M::Stosq | M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => {
            crate::lower_string::string(l, ins).map(|_| Flow::Next)
        }
        M::Movaps | M::Movups | M::Movapd | M::Movupd | M::Movdqa | M::Movdqu | M::Lddqu | M::Movntps | M::Movntpd | M::Movntdq => {
            crate::lower_sse::mov128(l, ins).map(|_| Flow::Next)
        }
        M::Movd | M::Movq => crate::lower_sse::movd_q(l, ins).map(|_| Flow::Next),
        M::Pxor | M::Por | M::Pand | M::Pandn | M::Xorps | M::Xorpd | M::Orps | M::Orpd | M::Andps | M::Andpd | M::Andnps | M::Andnpd | M::Paddb
        | M::Paddw | M::Paddd | M::Paddq | M::Psubb | M::Psubw | M::Psubd | M::Psubq | M::Pcmpeqb | M::Pcmpeqw | M::Pcmpeqd | M::Punpcklbw
        | M::Punpcklwd | M::Punpckldq | M::Punpcklqdq | M::Punpckhbw | M::Punpckhwd | M::Punpckhdq | M::Punpckhqdq => {
            crate::lower_sse::binary(l, ins).map(|_| Flow::Next)
        }
        M::Pshufd => crate::lower_sse::pshufd(l, ins).map(|_| Flow::Next),
        M::Psllw | M::Pslld | M::Psllq | M::Psrlw | M::Psrld | M::Psrlq | M::Psraw | M::Psrad | M::Pslldq | M::Psrldq => {
            crate::lower_sse::shift_imm(l, ins).map(|_| Flow::Next)
        }
        M::Pmovmskb | M::Movmskps | M::Movmskpd => crate::lower_sse::movmsk(l, ins).map(|_| Flow::Next),
        M::Push => memops::push(l, ins).map(|_| Flow::Next),
        M::Pop => memops::pop(l, ins).map(|_| Flow::Next),
        M::Seto | M::Setno | M::Setb | M::Setae | M::Sete | M::Setne | M::Setbe | M::Seta | M::Sets | M::Setns | M::Setp | M::Setnp | M::Setl
        | M::Setge | M::Setle | M::Setg => alu::setcc(l, ins).map(|_| Flow::Next),
        M::Cmovo | M::Cmovno | M::Cmovb | M::Cmovae | M::Cmove | M::Cmovne | M::Cmovbe | M::Cmova | M::Cmovs | M::Cmovns | M::Cmovp
        | M::Cmovnp | M::Cmovl | M::Cmovge | M::Cmovle | M::Cmovg => alu::cmov(l, ins).map(|_| Flow::Next),
        M::Jo | M::Jno | M::Jb | M::Jae | M::Je | M::Jne | M::Jbe | M::Ja | M::Js | M::Jns | M::Jp | M::Jnp | M::Jl | M::Jge | M::Jle | M::Jg => {
            ctl::jcc(l, ins)
        }
        M::Jmp => ctl::jmp(l, ins),
        M::Call => ctl::call(l, ins),
        M::Ret => ctl::ret(l, ins),
        _ => Err(Unsupported),
    }
}
