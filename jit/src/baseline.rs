//! The baseline backend: first-tier CLIF straight to x86-64, skipping
//! Cranelift's pipeline (a Linux boot: 0.38 µs per IR instruction, wall
//! clock on a busy two-core host, against about 1 µs through Cranelift).
//!
//! First-tier functions keep guest registers in `CpuState`, so their IR is
//! short-lived values inside blocks over a few dozen integer opcodes. This
//! backend compiles exactly that subset in one pass: values used only in
//! their own block live in registers (a greedy local allocator; a spill
//! goes to a stack slot); values used in other blocks, and parameters of
//! blocks that take them in slots, have a stack slot, written only when
//! their register is reused or before a branch to a block where they are
//! live (per-block liveness) and that does not start with the branching
//! block's registers, as a block laid out after its only predecessor does.
//! A block reached by several branches takes one or two parameters in
//! `PARAM_REGS`; an ICMP feeding the BRIF after it becomes CMP and Jcc.
//! Anything outside the subset (vectors, floats, other opcodes) answers
//! `None` and Cranelift compiles the function.
//!
//! Registers: RBX holds the frame (the function's argument) throughout,
//! RBP the stack frame; RAX, RCX and RDX are scratch within one
//! instruction; RSI, RDI and R8–R15 hold values. Helpers are called
//! through the preserve-all adapters (nothing clobbered) or, for a System
//! V callee, with every register value saved first.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Block, Function, Inst, InstructionData, Opcode, Type, Value};
use cranelift_codegen::entity::EntityRef;
use cranelift_codegen::isa::CallConv;
use std::collections::HashMap as StdHashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Maps keyed by Cranelift entities (a `u32` each): a multiplicative hash,
/// where SipHash took a tenth of the backend's time.
type HashMap<K, V> = StdHashMap<K, V, BuildHasherDefault<EntityHasher>>;

#[derive(Default)]
struct EntityHasher(u64);

impl Hasher for EntityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

use crate::translate::mask;
use crate::x64::{reg, Alu, Asm, Cond, Shift};

/// Registers that hold values.
const ALLOCATABLE: [u8; 10] = [reg::RSI, reg::RDI, reg::R8, reg::R9, 10, 11, 12, 13, 14, 15];
/// Callee-saved registers the prologue saves (besides RBP).
const SAVED: [u8; 5] = [reg::RBX, 12, 13, 14, 15];
/// System V argument registers.
const ARGS: [u8; 6] = [reg::RDI, reg::RSI, reg::RDX, reg::RCX, reg::R8, reg::R9];
/// Registers a System V call clobbers among the allocatable ones.
const CALLER_SAVED: [u8; 6] = [reg::RSI, reg::RDI, reg::R8, reg::R9, 10, 11];
/// Where a block reached by several branches receives its parameters (one
/// or two of them; more go through slots): the load a memory access ends
/// with arrives in a register.
const PARAM_REGS: [u8; 2] = [15, 14];
/// The first stack slot's offset from RBP, below the saved registers.
const FIRST_SLOT: i32 = -8 * (SAVED.len() as i32 + 1);

/// Whether refusals say what stopped them, on stderr
/// (`POPEK_JIT_BASELINE_WHY=1`).
pub(crate) fn explain_refusals() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("POPEK_JIT_BASELINE_WHY").is_some_and(|v| v == "1"))
}

/// Compiles `func`, or `None` when it uses anything outside the subset.
pub(crate) fn compile(func: &Function) -> Option<Vec<u8>> {
    let sig = &func.signature;
    // `tail` and System V are the same for this signature (see
    // `translate::chain_sig`).
    if !matches!(sig.call_conv, CallConv::Tail | CallConv::SystemV) || sig.params.len() != 1 || sig.params[0].value_type != types::I64 || sig.returns.len() != 1 || sig.returns[0].value_type != types::I32 {
        return None;
    }
    let mut c = Compiler::new(func)?;
    c.run()?;
    Some(c.asm.code)
}

/// Where a value is right now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loc {
    Reg(u8),
    Slot,
    Const(i64),
}

/// A bit set of `words` words per block, by block index, in one vector:
/// the liveness sets, which were a hash map of vectors, one allocated per
/// block and per pass.
#[derive(Clone, Default)]
struct BlockSets {
    words: usize,
    bits: Vec<u64>,
}

impl BlockSets {
    fn new(blocks: usize, words: usize) -> Self {
        Self { words, bits: vec![0; blocks * words] }
    }

    fn get(&self, block: Block) -> &[u64] {
        let at = block.index() * self.words;
        self.bits.get(at..at + self.words).unwrap_or(&[])
    }

    fn get_mut(&mut self, block: Block) -> &mut [u64] {
        let at = block.index() * self.words;
        self.bits.get_mut(at..at + self.words).unwrap_or(&mut [])
    }

    fn has(&self, block: Block, i: usize) -> bool {
        self.get(block).get(i / 64).is_some_and(|w| w & 1 << (i % 64) != 0)
    }

    fn set(&mut self, block: Block, i: usize) {
        if let Some(w) = self.get_mut(block).get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
}

struct Compiler<'f> {
    func: &'f Function,
    asm: Asm,
    /// Per value: its constant (iconst); its stack slot's offset from RBP
    /// (0 for none: values used outside their block, parameters passed in
    /// slots and spilled locals have one); its uses not yet emitted.
    constant: Vec<Option<i64>>,
    slot: Vec<i32>,
    uses: Vec<u32>,
    slots: i32,
    /// What each register holds (a local value, or a copy of a slotted
    /// one); a value is found by scanning the ten.
    holds: [Option<Value>; 16],
    /// Registers holding a slotted value whose slot is not written yet
    /// (written when the register is reused, or before a branch to a block
    /// where the value is live and that does not inherit the registers).
    dirty: u16,
    /// Registers in use by the instruction being emitted.
    pinned: u16,
    /// Per block index, whether one branch alone reaches it; the register
    /// contents at that branch (with their dirty bits).
    single_pred: Vec<bool>,
    inherited: HashMap<Block, Vec<(u8, Value, bool)>>,
    /// Per block index, whether the block takes its parameters in
    /// `PARAM_REGS`.
    param_regs: Vec<bool>,
    /// Slotted values by index, and per block the ones live at its entry.
    global_index: Vec<u32>,
    live_in: BlockSets,
    live_out: BlockSets,
    /// The block being emitted.
    current: Option<Block>,
    /// The entry block's parameter: the frame, in RBX throughout.
    frame: Value,
    /// Per block index, the blocks its branches go to.
    succs: Vec<Vec<Block>>,
    labels: HashMap<Block, usize>,
    fixups: Vec<(usize, Block)>,
    frame_size_at: usize,
}

fn size_of(ty: Type) -> Option<u8> {
    match ty {
        types::I8 => Some(1),
        types::I16 => Some(2),
        types::I32 => Some(4),
        types::I64 => Some(8),
        _ => None,
    }
}

/// The operand size for arithmetic on a type: 32 bits for the narrow
/// ones (values are kept zero-extended), else its own.
fn op_size(ty: Type) -> u8 {
    if ty == types::I64 { 8 } else { 4 }
}

fn cond(cc: IntCC) -> Cond {
    match cc {
        IntCC::Equal => Cond::E,
        IntCC::NotEqual => Cond::Ne,
        IntCC::SignedLessThan => Cond::L,
        IntCC::SignedGreaterThanOrEqual => Cond::Ge,
        IntCC::SignedGreaterThan => Cond::G,
        IntCC::SignedLessThanOrEqual => Cond::Le,
        IntCC::UnsignedLessThan => Cond::B,
        IntCC::UnsignedGreaterThanOrEqual => Cond::Ae,
        IntCC::UnsignedGreaterThan => Cond::A,
        IntCC::UnsignedLessThanOrEqual => Cond::Be,
    }
}

fn is_signed(cc: IntCC) -> bool {
    matches!(cc, IntCC::SignedLessThan | IntCC::SignedGreaterThanOrEqual | IntCC::SignedGreaterThan | IntCC::SignedLessThanOrEqual)
}

impl<'f> Compiler<'f> {
    fn new(func: &'f Function) -> Option<Self> {
        let dfg = &func.dfg;
        let values = dfg.num_values();
        let mut c = Compiler {
            func,
            asm: Asm::default(),
            constant: vec![None; values],
            slot: vec![0; values],
            uses: vec![0; values],
            slots: 0,
            holds: [None; 16],
            dirty: 0,
            pinned: 0,
            single_pred: vec![false; dfg.num_blocks()],
            inherited: HashMap::default(),
            param_regs: vec![false; dfg.num_blocks()],
            global_index: Vec::new(),
            live_in: BlockSets::default(),
            live_out: BlockSets::default(),
            current: None,
            frame: dfg.block_params(func.layout.entry_block()?).first().copied()?,
            succs: vec![Vec::new(); dfg.num_blocks()],
            labels: HashMap::default(),
            fixups: Vec::new(),
            frame_size_at: 0,
        };
        let mut def_block: HashMap<Value, Block> = HashMap::default();
        for block in func.layout.blocks() {
            for &p in dfg.block_params(block) {
                size_of(dfg.value_type(p))?;
                def_block.insert(p, block);
            }
            for inst in func.layout.block_insts(block) {
                for &r in dfg.inst_results(inst) {
                    size_of(dfg.value_type(r))?;
                    def_block.insert(r, block);
                }
                if let InstructionData::UnaryImm { opcode: Opcode::Iconst, imm } = dfg.insts[inst] {
                    let r = dfg.first_result(inst);
                    // Kept zero-extended from the type's width.
                    let size = usize::from(size_of(dfg.value_type(r))?);
                    c.constant[r.index()] = Some((imm.bits() as u64 & mask(size)) as i64);
                }
                for dest in dfg.insts[inst].branch_destination(&dfg.jump_tables, &dfg.exception_tables) {
                    c.succs[block.index()].push(dest.block(&dfg.value_lists));
                }
            }
        }
        let mut operands = Vec::new();
        for block in func.layout.blocks() {
            for inst in func.layout.block_insts(block) {
                c.operands(inst, &mut operands);
                for &v in &operands {
                    c.uses[v.index()] += 1;
                    if def_block.get(&v) != Some(&block) && c.constant[v.index()].is_none() {
                        c.give_slot(v);
                    }
                }
            }
        }
        let entry = func.layout.entry_block()?;
        let mut preds = vec![0u32; dfg.num_blocks()];
        for s in c.succs.iter().flatten() {
            preds[s.index()] += 1;
        }
        for block in func.layout.blocks() {
            let n = preds[block.index()];
            c.single_pred[block.index()] = n == 1;
            let params = dfg.block_params(block);
            let in_regs = block != entry && n > 1 && params.len() <= PARAM_REGS.len();
            c.param_regs[block.index()] = in_regs;
            if !in_regs && block != entry {
                for &p in params {
                    c.give_slot(p);
                }
            }
        }
        c.liveness();
        Some(c)
    }

    /// Per block, the slotted values live at its entry (backward dataflow;
    /// block arguments are uses in the branching block, parameters
    /// definitions of theirs).
    fn liveness(&mut self) {
        let (func, dfg) = (self.func, &self.func.dfg);
        self.global_index = vec![u32::MAX; self.slot.len()];
        let mut globals = 0usize;
        for (v, &at) in self.slot.iter().enumerate() {
            if at != 0 {
                self.global_index[v] = globals as u32;
                globals += 1;
            }
        }
        let words = globals.div_ceil(64);
        let blocks: Vec<Block> = func.layout.blocks().collect();
        let mut operands = Vec::new();
        let count = dfg.num_blocks();
        let (mut gen, mut kill) = (BlockSets::new(count, words), BlockSets::new(count, words));
        for &block in &blocks {
            for p in dfg.block_params(block) {
                if let Some(i) = self.global(*p) {
                    kill.set(block, i);
                }
            }
            for inst in func.layout.block_insts(block) {
                self.operands(inst, &mut operands);
                for v in &operands {
                    if let Some(i) = self.global(*v) {
                        if !kill.has(block, i) {
                            gen.set(block, i);
                        }
                    }
                }
                for r in dfg.inst_results(inst) {
                    if let Some(i) = self.global(*r) {
                        kill.set(block, i);
                    }
                }
            }
        }
        self.live_in = gen.clone();
        self.live_out = BlockSets::new(count, words);
        let mut live = vec![0u64; words];
        let mut changed = true;
        while changed {
            changed = false;
            for &block in blocks.iter().rev() {
                live.fill(0);
                for s in &self.succs[block.index()] {
                    for (w, x) in live.iter_mut().zip(self.live_in.get(*s)) {
                        *w |= x;
                    }
                }
                self.live_out.get_mut(block).copy_from_slice(&live);
                let (g, k, old) = (gen.get(block), kill.get(block), self.live_in.get_mut(block));
                for w in 0..words {
                    let new = g[w] | (live[w] & !k[w]);
                    if new != old[w] {
                        old[w] = new;
                        changed = true;
                    }
                }
            }
        }
    }

    fn live_at(&self, block: Block, v: Value) -> bool {
        self.global(v).is_some_and(|i| self.live_in.has(block, i))
    }

    /// Whether `v` is live past the end of the block being emitted.
    fn live_after(&self, v: Value) -> bool {
        self.current.is_some_and(|b| self.global(v).is_some_and(|i| self.live_out.has(b, i)))
    }

    /// `v`'s index among the slotted values (the liveness sets' bits).
    fn global(&self, v: Value) -> Option<usize> {
        self.global_index.get(v.index()).copied().filter(|&i| i != u32::MAX).map(|i| i as usize)
    }

    fn has_slot(&self, v: Value) -> bool {
        self.slot_at(v).is_some()
    }

    fn slot_at(&self, v: Value) -> Option<i32> {
        self.slot.get(v.index()).copied().filter(|&at| at != 0)
    }

    /// Whether `block` will start with the registers of the branch being
    /// emitted: it has no other predecessor and is not emitted yet (a block
    /// laid out before its predecessor, a hot one after a cold one, starts
    /// with none).
    fn inherits(&self, block: Block) -> bool {
        self.single_pred.get(block.index()) == Some(&true) && !self.labels.contains_key(&block)
    }

    /// Every value `inst` reads, block arguments included (resolved), in
    /// `out` (cleared first).
    fn operands(&self, inst: Inst, out: &mut Vec<Value>) {
        let dfg = &self.func.dfg;
        out.clear();
        out.extend(dfg.inst_args(inst).iter().map(|&v| dfg.resolve_aliases(v)));
        for dest in dfg.insts[inst].branch_destination(&dfg.jump_tables, &dfg.exception_tables) {
            for arg in dest.args(&dfg.value_lists) {
                if let Some(v) = arg.as_value() {
                    out.push(dfg.resolve_aliases(v));
                }
            }
        }
    }

    fn give_slot(&mut self, v: Value) {
        if self.slot.len() <= v.index() {
            self.slot.resize(v.index() + 1, 0);
        }
        if self.slot[v.index()] == 0 {
            self.slots += 1;
            self.slot[v.index()] = FIRST_SLOT - 8 * (self.slots - 1);
        }
    }

    fn run(&mut self) -> Option<()> {
        // Prologue.
        self.asm.push(reg::RBP);
        self.asm.mov_rr(8, reg::RBP, reg::RSP);
        for r in SAVED {
            self.asm.push(r);
        }
        self.frame_size_at = self.asm.sub_rsp_patchable();
        self.asm.mov_rr(8, reg::RBX, reg::RDI);
        // The entry block's parameter is the frame, in RBX for good.
        let entry = self.func.layout.entry_block()?;

        // Hot blocks in layout order, then the cold ones: those marked
        // cold and those reached only from cold ones (a slow path's
        // continuation, which would otherwise sit between a fast path and
        // the join it jumps to).
        let blocks: Vec<Block> = self.func.layout.blocks().collect();
        let cold = self.cold_blocks(&blocks, entry);
        let order: Vec<Block> = blocks.iter().copied().filter(|b| !cold[b.index()]).chain(blocks.iter().copied().filter(|b| cold[b.index()])).collect();
        for (i, &block) in order.iter().enumerate() {
            let next = order.get(i + 1).copied();
            self.block(block, next, block == entry)?;
        }
        for (at, block) in std::mem::take(&mut self.fixups) {
            let target = *self.labels.get(&block)?;
            self.asm.patch(at, target);
        }
        let mut frame = 8 * self.slots;
        if frame % 16 == 0 {
            frame += 8;
        }
        self.asm.patch_u32(self.frame_size_at, frame as u32);
        Some(())
    }

    /// Per block index: marked cold, or reached only from cold blocks.
    fn cold_blocks(&self, blocks: &[Block], entry: Block) -> Vec<bool> {
        let count = self.succs.len();
        let mut preds: Vec<Vec<Block>> = vec![Vec::new(); count];
        for &b in blocks {
            for s in &self.succs[b.index()] {
                preds[s.index()].push(b);
            }
        }
        let mut cold = vec![false; count];
        for &b in blocks {
            cold[b.index()] = self.func.layout.is_cold(b);
        }
        let mut changed = true;
        while changed {
            changed = false;
            for &b in blocks {
                let p = &preds[b.index()];
                if !cold[b.index()] && b != entry && !p.is_empty() && p.iter().all(|q| cold[q.index()]) {
                    cold[b.index()] = true;
                    changed = true;
                }
            }
        }
        cold
    }

    fn slot_of(&mut self, v: Value) -> i32 {
        self.give_slot(v);
        self.slot[v.index()]
    }

    fn block(&mut self, block: Block, next: Option<Block>, entry: bool) -> Option<()> {
        self.labels.insert(block, self.asm.pos());
        self.current = Some(block);
        self.holds = [None; 16];
        self.dirty = 0;
        if !entry {
            if let Some(regs) = self.inherited.remove(&block) {
                for (r, v, dirty) in regs {
                    self.holds[r as usize] = Some(v);
                    if dirty {
                        self.dirty |= 1 << r;
                    }
                }
            }
            if self.param_regs.get(block.index()) == Some(&true) {
                let params = self.func.dfg.block_params(block).to_vec();
                for (&p, &r) in params.iter().zip(&PARAM_REGS) {
                    self.holds[r as usize] = Some(p);
                    if self.has_slot(p) {
                        self.dirty |= 1 << r;
                    }
                }
            }
        }
        let insts: Vec<Inst> = self.func.layout.block_insts(block).collect();
        let mut skip_next = false;
        for (i, &inst) in insts.iter().enumerate() {
            if skip_next {
                skip_next = false;
                continue;
            }
            let fused = self.fusable_compare(inst, insts.get(i + 1).copied());
            if fused {
                skip_next = true;
                let next_inst = insts[i + 1];
                self.compare_and_branch(inst, next_inst, next)?;
            } else if self.inst(inst, next).is_none() {
                if explain_refusals() {
                    eprintln!("baseline: failed at {}", self.func.dfg.display_inst(inst));
                }
                return None;
            }
            self.pinned = 0;
        }
        Some(())
    }

    /// The register holding `v`, if one does.
    fn reg_of(&self, v: Value) -> Option<u8> {
        ALLOCATABLE.iter().copied().find(|&r| self.holds[r as usize] == Some(v))
    }

    fn loc(&self, v: Value) -> Loc {
        if let Some(c) = self.constant.get(v.index()).copied().flatten() {
            return Loc::Const(c);
        }
        if v == self.frame {
            return Loc::Reg(reg::RBX);
        }
        match self.reg_of(v) {
            Some(r) => Loc::Reg(r),
            None => Loc::Slot,
        }
    }

    /// Counts one use of `v` done; frees its register after the last use,
    /// unless it holds a slotted value not written yet that a block laid
    /// out earlier may still read (live past this block).
    fn used(&mut self, v: Value) {
        let Some(n) = self.uses.get_mut(v.index()) else { return };
        *n = n.saturating_sub(1);
        if *n == 0 {
            if let Some(r) = self.reg_of(v) {
                if self.dirty & (1 << r) != 0 && self.live_after(v) {
                    return;
                }
                self.holds[r as usize] = None;
                self.dirty &= !(1 << r);
            }
        }
    }

    fn pin(&mut self, r: u8) {
        self.pinned |= 1 << r;
    }

    /// A free register (evicting a slotted copy, else spilling a local).
    fn alloc(&mut self) -> Option<u8> {
        if let Some(&r) = ALLOCATABLE.iter().find(|&&r| self.holds[r as usize].is_none() && self.pinned & (1 << r) == 0) {
            self.pin(r);
            return Some(r);
        }
        let victim = ALLOCATABLE
            .iter()
            .copied()
            .filter(|&r| self.pinned & (1 << r) == 0)
            .min_by_key(|&r| match self.holds[r as usize] {
                None => 0,
                Some(_) if self.dirty & (1 << r) != 0 => 2,
                Some(v) if self.has_slot(v) => 1,
                Some(_) => 3,
            })?;
        self.evict(victim);
        self.pin(victim);
        Some(victim)
    }

    /// Frees `r`, saving what only it holds: a local value (to a new
    /// slot) or a slotted one not written yet.
    fn evict(&mut self, r: u8) {
        if let Some(v) = self.holds[r as usize].take() {
            if !self.has_slot(v) || self.dirty & (1 << r) != 0 {
                let at = self.slot_of(v);
                self.asm.store(8, r, reg::RBP, at);
            }
        }
        self.dirty &= !(1 << r);
    }

    /// `v` in a register (loaded or materialised when it is not in one).
    fn in_register(&mut self, v: Value) -> Option<u8> {
        match self.loc(v) {
            Loc::Reg(r) => {
                self.pin(r);
                Some(r)
            }
            Loc::Const(c) => {
                let r = self.alloc()?;
                self.asm.mov_ri(r, c as u64);
                // A constant's register holds nothing to keep.
                Some(r)
            }
            Loc::Slot => {
                let at = self.slot_at(v)?;
                let r = self.alloc()?;
                self.asm.load(8, false, r, reg::RBP, at);
                self.holds[r as usize] = Some(v);
                Some(r)
            }
        }
    }

    /// Loads `v` into the scratch register `r`.
    fn load_scratch(&mut self, v: Value, r: u8) -> Option<()> {
        match self.loc(v) {
            Loc::Reg(src) => self.asm.mov_rr(8, r, src),
            Loc::Const(c) => self.asm.mov_ri(r, c as u64),
            Loc::Slot => {
                let at = self.slot_at(v)?;
                self.asm.load(8, false, r, reg::RBP, at);
            }
        }
        Some(())
    }

    /// Binds the result `v` to register `r` (dirty when it has a slot).
    fn define(&mut self, v: Value, r: u8) {
        self.holds[r as usize] = None;
        self.dirty &= !(1 << r);
        if self.uses.get(v.index()).copied().unwrap_or(0) == 0 {
            // Every use is laid out already (or there is none): a slotted
            // value is written for the blocks laid out before this one.
            if let Some(at) = self.slot_at(v) {
                self.asm.store(8, r, reg::RBP, at);
            }
            return;
        }
        self.holds[r as usize] = Some(v);
        if self.has_slot(v) {
            self.dirty |= 1 << r;
        }
    }

    /// A register for the result that starts as a copy of `a`: `a`'s own
    /// when this is its last use and nothing else needs it.
    fn result_from(&mut self, a: Value, others: &[Value]) -> Option<u8> {
        if let Loc::Reg(r) = self.loc(a) {
            let last = self.uses.get(a.index()) == Some(&1) && !self.has_slot(a) && !others.contains(&a) && r != reg::RBX;
            if last {
                self.holds[r as usize] = None;
                self.uses[a.index()] = 0;
                self.pin(r);
                return Some(r);
            }
        }
        for &o in others {
            if let Loc::Reg(r) = self.loc(o) {
                self.pin(r);
            }
        }
        let dst = self.alloc()?;
        self.load_scratch(a, dst)?;
        self.used(a);
        Some(dst)
    }

    fn ty(&self, v: Value) -> Type {
        self.func.dfg.value_type(v)
    }

    /// Zero-extends a 64-bit register to the width of `ty` (after a
    /// sign-extending load or a call, whose upper bits are not zero).
    fn narrow_to(&mut self, ty: Type, r: u8) -> Option<()> {
        if ty != types::I64 {
            self.asm.zext(size_of(ty)?, r, r);
        }
        Some(())
    }

    /// Re-establishes the zero-extended form of a narrow result of a
    /// 32-bit operation.
    fn canonical(&mut self, ty: Type, r: u8) {
        match ty {
            types::I8 => self.asm.zext(1, r, r),
            types::I16 => self.asm.zext(2, r, r),
            _ => {}
        }
    }

    fn fusable_compare(&self, inst: Inst, next: Option<Inst>) -> bool {
        let dfg = &self.func.dfg;
        let Some(next) = next else { return false };
        if dfg.insts[inst].opcode() != Opcode::Icmp || dfg.insts[next].opcode() != Opcode::Brif {
            return false;
        }
        let r = dfg.first_result(inst);
        let InstructionData::Brif { arg, .. } = dfg.insts[next] else { return false };
        dfg.resolve_aliases(arg) == r && self.uses.get(r.index()) == Some(&1) && !self.has_slot(r)
    }

    /// Emits `cmp` for an icmp and returns its condition.
    fn compare(&mut self, inst: Inst) -> Option<Cond> {
        let dfg = &self.func.dfg;
        let InstructionData::IntCompare { args, cond: cc, .. } = dfg.insts[inst] else { return None };
        let (a, b) = (dfg.resolve_aliases(args[0]), dfg.resolve_aliases(args[1]));
        let ty = self.ty(a);
        let size = if is_signed(cc) { size_of(ty)? } else { op_size(ty) };
        let ra = self.in_register(a)?;
        match self.loc(b) {
            Loc::Const(c) if size >= 4 && i32::try_from(c).is_ok() || size == 4 && c <= i64::from(u32::MAX) => {
                self.asm.alu_ri(Alu::Cmp, size.max(4), ra, c as i32);
            }
            Loc::Reg(rb) => self.asm.alu_rr(Alu::Cmp, size, ra, rb),
            _ => {
                self.load_scratch(b, reg::RAX)?;
                self.asm.alu_rr(Alu::Cmp, size, ra, reg::RAX);
            }
        }
        self.used(a);
        self.used(b);
        Some(cond(cc))
    }

    fn compare_and_branch(&mut self, cmp: Inst, br: Inst, next: Option<Block>) -> Option<()> {
        let cc = self.compare(cmp)?;
        let r = self.func.dfg.first_result(cmp);
        self.uses[r.index()] = 0;
        self.branch_on(cc, br, next)
    }

    /// The two ways of a brif, after flags were set for `cc` (true: the
    /// first destination).
    fn branch_on(&mut self, cc: Cond, br: Inst, next: Option<Block>) -> Option<()> {
        let dfg = &self.func.dfg;
        let InstructionData::Brif { blocks, .. } = dfg.insts[br] else { return None };
        let (then_b, else_b) = (blocks[0].block(&dfg.value_lists), blocks[1].block(&dfg.value_lists));
        let then_args = self.call_args(&blocks[0]);
        let else_args = self.call_args(&blocks[1]);
        let snapshot = self.snapshot();
        let then_plain = !self.edge_needs_code(then_b, &then_args);
        let else_plain = !self.edge_needs_code(else_b, &else_args);
        self.inherit(then_b, &snapshot);
        self.inherit(else_b, &snapshot);
        if then_plain && else_plain && next == Some(then_b) {
            let at = self.asm.jcc(invert(cc));
            self.fixups.push((at, else_b));
            return Some(());
        }
        if then_plain {
            let at = self.asm.jcc(cc);
            self.fixups.push((at, then_b));
            self.edge(else_b, &else_args)?;
            self.jump_unless_next(else_b, next);
            return Some(());
        }
        // Each way does its own writes, then jumps.
        self.edge_when(cc, then_b, &then_args)?;
        self.edge(else_b, &else_args)?;
        self.jump_unless_next(else_b, next);
        Some(())
    }

    /// When `cc` holds, does the writes going to `target` needs and jumps
    /// there; else goes on here with the registers as they were.
    fn edge_when(&mut self, cc: Cond, target: Block, args: &[Value]) -> Option<()> {
        let state = self.save();
        let skip = self.asm.jcc(invert(cc));
        self.edge(target, args)?;
        let at = self.asm.jmp();
        self.fixups.push((at, target));
        let here = self.asm.pos();
        self.asm.patch(skip, here);
        self.restore(state);
        Some(())
    }

    fn call_args(&self, call: &cranelift_codegen::ir::BlockCall) -> Vec<Value> {
        let dfg = &self.func.dfg;
        call.args(&dfg.value_lists).filter_map(|a| a.as_value()).map(|v| dfg.resolve_aliases(v)).collect()
    }

    /// The slotted values in registers, with their dirty bits.
    fn snapshot(&self) -> Vec<(u8, Value, bool)> {
        ALLOCATABLE
            .iter()
            .filter_map(|&r| self.holds[r as usize].filter(|&v| self.has_slot(v)).map(|v| (r, v, self.dirty & (1 << r) != 0)))
            .collect()
    }

    fn save(&self) -> ([Option<Value>; 16], u16) {
        (self.holds, self.dirty)
    }

    fn restore(&mut self, state: ([Option<Value>; 16], u16)) {
        (self.holds, self.dirty) = state;
    }

    fn inherit(&mut self, block: Block, snapshot: &[(u8, Value, bool)]) {
        if self.inherits(block) {
            self.inherited.insert(block, snapshot.to_vec());
        }
    }

    fn jump_unless_next(&mut self, block: Block, next: Option<Block>) {
        if next != Some(block) {
            let at = self.asm.jmp();
            self.fixups.push((at, block));
        }
    }

    /// Whether going to `target` needs code before the jump: arguments, or
    /// dirty values live there that it will not find in registers.
    fn edge_needs_code(&self, target: Block, args: &[Value]) -> bool {
        !args.is_empty() || !self.flushes(target).is_empty()
    }

    /// Dirty registers to write back before going to `target`.
    fn flushes(&self, target: Block) -> Vec<(u8, Value)> {
        if self.inherits(target) {
            return Vec::new();
        }
        ALLOCATABLE
            .iter()
            .filter(|&&r| self.dirty & (1 << r) != 0)
            .filter_map(|&r| self.holds[r as usize].map(|v| (r, v)))
            .filter(|&(_, v)| self.live_at(target, v))
            .collect()
    }

    /// The writes going to `target` needs: dirty values live there, then
    /// the arguments (in `PARAM_REGS` or the parameters' slots).
    fn edge(&mut self, target: Block, args: &[Value]) -> Option<()> {
        for (r, v) in self.flushes(target) {
            let at = self.slot_of(v);
            self.asm.store(8, r, reg::RBP, at);
            self.dirty &= !(1 << r);
        }
        self.copy_args(target, args)
    }

    /// Writes block arguments where the target takes its parameters.
    fn copy_args(&mut self, target: Block, args: &[Value]) -> Option<()> {
        let params: Vec<Value> = self.func.dfg.block_params(target).to_vec();
        if params.len() != args.len() {
            return None;
        }
        if self.param_regs.get(target.index()) == Some(&true) {
            // Through RAX and RCX, so an argument already in a parameter
            // register is read before it is overwritten.
            const TEMPS: [u8; 2] = [reg::RAX, reg::RCX];
            if let [a] = args {
                self.load_scratch(*a, PARAM_REGS[0])?;
                self.used(*a);
                return Some(());
            }
            for (&a, &t) in args.iter().zip(&TEMPS) {
                self.load_scratch(a, t)?;
            }
            for ((_, &t), &r) in args.iter().zip(&TEMPS).zip(&PARAM_REGS) {
                self.asm.mov_rr(8, r, t);
            }
        } else if args.iter().any(|a| params.contains(a)) {
            // Through the stack: push every argument, pop into the slots.
            for &a in args {
                self.load_scratch(a, reg::RAX)?;
                self.asm.push(reg::RAX);
            }
            for &p in params.iter().rev() {
                let at = self.slot_of(p);
                self.asm.pop(reg::RAX);
                self.asm.store(8, reg::RAX, reg::RBP, at);
            }
        } else {
            for (&a, &p) in args.iter().zip(&params) {
                let at = self.slot_of(p);
                match self.loc(a) {
                    Loc::Const(c) if i32::try_from(c).is_ok() => self.asm.store_imm(8, reg::RBP, at, c as i32),
                    Loc::Reg(r) => self.asm.store(8, r, reg::RBP, at),
                    _ => {
                        self.load_scratch(a, reg::RAX)?;
                        self.asm.store(8, reg::RAX, reg::RBP, at);
                    }
                }
            }
        }
        for &a in args {
            self.used(a);
        }
        Some(())
    }

    /// Restores the caller's registers and stack, then returns.
    fn epilogue(&mut self) {
        self.unwind();
        self.asm.ret();
    }

    /// Restores the callee-saved registers and the stack as they were at
    /// entry (RAX, RCX, RDX, RDI and RSI are untouched).
    fn unwind(&mut self) {
        self.asm.lea(reg::RSP, reg::RBP, -8 * SAVED.len() as i32);
        for r in SAVED.iter().rev() {
            self.asm.pop(*r);
        }
        self.asm.pop(reg::RBP);
    }

    fn inst(&mut self, inst: Inst, next: Option<Block>) -> Option<()> {
        let dfg = &self.func.dfg;
        let data = dfg.insts[inst];
        let opcode = data.opcode();
        let args: Vec<Value> = dfg.inst_args(inst).iter().map(|&v| dfg.resolve_aliases(v)).collect();
        let result = dfg.inst_results(inst).first().copied();
        // Pure instructions whose result nobody reads are left out.
        if let Some(r) = result {
            let pure = !matches!(opcode, Opcode::Call | Opcode::CallIndirect);
            if pure && self.uses.get(r.index()).copied().unwrap_or(0) == 0 && !self.has_slot(r) {
                for &a in &args {
                    self.used(a);
                }
                return Some(());
            }
        }
        match opcode {
            Opcode::Iconst => {}
            Opcode::Load | Opcode::Uload8 | Opcode::Uload16 | Opcode::Uload32 | Opcode::Sload8 | Opcode::Sload16 | Opcode::Sload32 => {
                let InstructionData::Load { offset, .. } = data else { return None };
                let r = result?;
                let size = match opcode {
                    Opcode::Uload8 | Opcode::Sload8 => 1,
                    Opcode::Uload16 | Opcode::Sload16 => 2,
                    Opcode::Uload32 | Opcode::Sload32 => 4,
                    _ => size_of(self.ty(r))?,
                };
                let signed = matches!(opcode, Opcode::Sload8 | Opcode::Sload16 | Opcode::Sload32);
                let base = self.address(args[0])?;
                self.used(args[0]);
                let dst = self.alloc()?;
                self.asm.load(size, signed, dst, base, i32::from(offset));
                if signed {
                    self.narrow_to(self.ty(r), dst)?;
                }
                self.define(r, dst);
            }
            Opcode::Store | Opcode::Istore8 | Opcode::Istore16 | Opcode::Istore32 => {
                let InstructionData::Store { offset, .. } = data else { return None };
                let (v, addr) = (args[0], args[1]);
                let size = match opcode {
                    Opcode::Istore8 => 1,
                    Opcode::Istore16 => 2,
                    Opcode::Istore32 => 4,
                    _ => size_of(self.ty(v))?,
                };
                let base = self.address(addr)?;
                match self.loc(v) {
                    Loc::Const(c) if size < 8 || i32::try_from(c).is_ok() => self.asm.store_imm(size, base, i32::from(offset), c as i32),
                    _ => {
                        let src = if base == reg::RAX {
                            self.load_scratch(v, reg::RDX)?;
                            reg::RDX
                        } else {
                            self.in_register(v)?
                        };
                        self.asm.store(size, src, base, i32::from(offset));
                    }
                }
                self.used(v);
                self.used(addr);
            }
            Opcode::Iadd | Opcode::Isub | Opcode::Band | Opcode::Bor | Opcode::Bxor => {
                let op = match opcode {
                    Opcode::Iadd => Alu::Add,
                    Opcode::Isub => Alu::Sub,
                    Opcode::Band => Alu::And,
                    Opcode::Bor => Alu::Or,
                    _ => Alu::Xor,
                };
                let r = result?;
                let ty = self.ty(r);
                let size = op_size(ty);
                let (a, b) = (args[0], args[1]);
                let dst = self.result_from(a, &[b])?;
                match self.loc(b) {
                    Loc::Const(c) if i32::try_from(c).is_ok() && (size == 8 || c >= 0 || op != Alu::And) => self.asm.alu_ri(op, size, dst, c as i32),
                    Loc::Reg(rb) => self.asm.alu_rr(op, size, dst, rb),
                    _ => {
                        self.load_scratch(b, reg::RAX)?;
                        self.asm.alu_rr(op, size, dst, reg::RAX);
                    }
                }
                self.used(b);
                self.canonical(ty, dst);
                self.define(r, dst);
            }
            Opcode::Imul => {
                let r = result?;
                let ty = self.ty(r);
                let (a, b) = (args[0], args[1]);
                let dst = self.result_from(a, &[b])?;
                self.load_scratch(b, reg::RAX)?;
                self.asm.imul_rr(op_size(ty), dst, reg::RAX);
                self.used(b);
                self.canonical(ty, dst);
                self.define(r, dst);
            }
            Opcode::Smulhi | Opcode::Umulhi => {
                let r = result?;
                if self.ty(r) != types::I64 {
                    return None;
                }
                self.load_scratch(args[0], reg::RAX)?;
                self.load_scratch(args[1], reg::RCX)?;
                self.asm.mul_wide(opcode == Opcode::Smulhi, 8, reg::RCX);
                self.used(args[0]);
                self.used(args[1]);
                let dst = self.alloc()?;
                self.asm.mov_rr(8, dst, reg::RDX);
                self.define(r, dst);
            }
            Opcode::Ishl | Opcode::Ushr | Opcode::Sshr | Opcode::Rotl | Opcode::Rotr => self.shift(opcode, result?, args[0], args[1])?,
            Opcode::Icmp => {
                let r = result?;
                let cc = self.compare(inst)?;
                let dst = self.alloc()?;
                self.asm.setcc(cc, dst);
                self.asm.zext(1, dst, dst);
                self.define(r, dst);
            }
            Opcode::Select => {
                let r = result?;
                let (c, a, b) = (args[0], args[1], args[2]);
                let rc = self.in_register(c)?;
                self.load_scratch(a, reg::RAX)?;
                let dst = self.result_from(b, &[a, c])?;
                self.asm.test_rr(8, rc, rc);
                self.asm.cmov(Cond::Ne, dst, reg::RAX);
                self.used(a);
                self.used(c);
                self.define(r, dst);
            }
            Opcode::Uextend => {
                let r = result?;
                let dst = self.result_from(args[0], &[])?;
                self.define(r, dst);
            }
            Opcode::Sextend => {
                let r = result?;
                let from = size_of(self.ty(args[0]))?;
                let dst = self.result_from(args[0], &[])?;
                self.asm.sext(from, dst, dst);
                self.narrow_to(self.ty(r), dst)?;
                self.define(r, dst);
            }
            Opcode::Ireduce => {
                let r = result?;
                let dst = self.result_from(args[0], &[])?;
                self.narrow_to(self.ty(r), dst)?;
                self.define(r, dst);
            }
            Opcode::Bnot | Opcode::Ineg => {
                let r = result?;
                let ty = self.ty(r);
                let dst = self.result_from(args[0], &[])?;
                if opcode == Opcode::Bnot {
                    self.asm.not(op_size(ty), dst);
                } else {
                    self.asm.neg(op_size(ty), dst);
                }
                self.canonical(ty, dst);
                self.define(r, dst);
            }
            Opcode::Popcnt => {
                let r = result?;
                let src = self.in_register(args[0])?;
                let dst = self.alloc()?;
                self.asm.popcnt(dst, src);
                self.used(args[0]);
                self.define(r, dst);
            }
            Opcode::Ctz => {
                // BSF leaves ZF for a zero source; CTZ(0) is the width.
                let r = result?;
                let bits = i64::from(size_of(self.ty(r))?) * 8;
                let src = self.in_register(args[0])?;
                let dst = self.alloc()?;
                self.asm.bsf(dst, src);
                self.asm.mov_ri(reg::RAX, bits as u64);
                self.asm.cmov(Cond::E, dst, reg::RAX);
                self.used(args[0]);
                self.define(r, dst);
            }
            Opcode::Udiv | Opcode::Urem => {
                // The lowering leaves a zero divisor to the interpreter.
                let r = result?;
                let size = op_size(self.ty(r));
                self.load_scratch(args[0], reg::RAX)?;
                self.load_scratch(args[1], reg::RCX)?;
                self.asm.alu_rr(Alu::Xor, 4, reg::RDX, reg::RDX);
                self.asm.div(size, reg::RCX);
                self.used(args[0]);
                self.used(args[1]);
                let dst = self.alloc()?;
                self.asm.mov_rr(8, dst, if opcode == Opcode::Udiv { reg::RAX } else { reg::RDX });
                self.canonical(self.ty(r), dst);
                self.define(r, dst);
            }
            Opcode::Bswap => {
                let r = result?;
                let ty = self.ty(r);
                let dst = self.result_from(args[0], &[])?;
                match ty {
                    types::I64 => self.asm.bswap(8, dst),
                    types::I32 => self.asm.bswap(4, dst),
                    types::I16 => self.asm.shift_ri(Shift::Rol, 2, dst, 8),
                    _ => return None,
                }
                self.define(r, dst);
            }
            Opcode::Jump => {
                let InstructionData::Jump { destination, .. } = data else { return None };
                let target = destination.block(&dfg.value_lists);
                let call_args = self.call_args(&destination);
                let snapshot = self.snapshot();
                self.inherit(target, &snapshot);
                self.edge(target, &call_args)?;
                self.jump_unless_next(target, next);
            }
            Opcode::Brif => {
                let c = args[0];
                let rc = self.in_register(c)?;
                let size = op_size(self.ty(c));
                self.asm.test_rr(size, rc, rc);
                self.used(c);
                self.branch_on(Cond::Ne, inst, next)?;
            }
            Opcode::BrTable => {
                // A chain of compares (tables are a region's few entries),
                // the index in RDX, which edges leave alone.
                let InstructionData::BranchTable { table, .. } = data else { return None };
                let jt = &dfg.jump_tables[table];
                let entries: Vec<(Block, Vec<Value>)> = jt.as_slice().iter().map(|b| (b.block(&dfg.value_lists), self.call_args(b))).collect();
                let default = (jt.default_block().block(&dfg.value_lists), self.call_args(&jt.default_block()));
                self.load_scratch(args[0], reg::RDX)?;
                self.used(args[0]);
                let snapshot = self.snapshot();
                for (i, (target, call_args)) in entries.into_iter().enumerate() {
                    self.inherit(target, &snapshot);
                    self.asm.alu_ri(Alu::Cmp, 4, reg::RDX, i as i32);
                    if !self.edge_needs_code(target, &call_args) {
                        let at = self.asm.jcc(Cond::E);
                        self.fixups.push((at, target));
                    } else {
                        self.edge_when(Cond::E, target, &call_args)?;
                    }
                }
                self.inherit(default.0, &snapshot);
                self.edge(default.0, &default.1)?;
                self.jump_unless_next(default.0, next);
            }
            Opcode::Return => {
                if let Some(&v) = args.first() {
                    self.load_scratch(v, reg::RAX)?;
                    self.used(v);
                }
                self.epilogue();
            }
            Opcode::CallIndirect => self.call(inst, &args, result)?,
            Opcode::ReturnCallIndirect => self.tail_call(inst, &args)?,
            _ => {
                if explain_refusals() {
                    eprintln!("baseline: no {opcode} ({})", dfg.display_inst(inst));
                }
                return None;
            }
        }
        Some(())
    }

    /// A register holding the address `v` (RAX for a constant).
    fn address(&mut self, v: Value) -> Option<u8> {
        match self.loc(v) {
            Loc::Const(c) => {
                self.asm.mov_ri(reg::RAX, c as u64);
                Some(reg::RAX)
            }
            _ => self.in_register(v),
        }
    }

    fn shift(&mut self, opcode: Opcode, r: Value, a: Value, amount: Value) -> Option<()> {
        let ty = self.ty(r);
        let bits = u32::from(size_of(ty)?) * 8;
        let op = match opcode {
            Opcode::Ishl => Shift::Shl,
            Opcode::Ushr => Shift::Shr,
            Opcode::Sshr => Shift::Sar,
            Opcode::Rotl => Shift::Rol,
            _ => Shift::Ror,
        };
        // Rotates of narrow values rotate their own width; shifts work on
        // 32 bits (a signed shift of the sign-extended value).
        let size = match (op, ty) {
            (Shift::Rol | Shift::Ror, types::I8) => 1,
            (Shift::Rol | Shift::Ror, types::I16) => 2,
            _ => op_size(ty),
        };
        let constant = match self.loc(amount) {
            Loc::Const(c) => Some((c as u32 & (bits - 1)) as u8),
            _ => None,
        };
        if constant.is_none() {
            self.load_scratch(amount, reg::RCX)?;
            if bits < 32 {
                self.asm.alu_ri(Alu::And, 4, reg::RCX, (bits - 1) as i32);
            }
        }
        self.used(amount);
        let dst = self.result_from(a, &[])?;
        if op == Shift::Sar && bits < 32 {
            self.asm.sext(size_of(ty)?, dst, dst);
        }
        match constant {
            Some(n) => self.asm.shift_ri(op, size, dst, n),
            None => self.asm.shift_cl(op, size, dst),
        }
        self.canonical(ty, dst);
        self.define(r, dst);
        Some(())
    }

    /// A tail call to another translation (the frame its one argument):
    /// this function's frame is unwound and the callee returns to our
    /// caller, so a chain of regions runs on one stack frame.
    fn tail_call(&mut self, inst: Inst, args: &[Value]) -> Option<()> {
        let dfg = &self.func.dfg;
        let InstructionData::CallIndirect { sig_ref, .. } = dfg.insts[inst] else { return None };
        let sig = &dfg.signatures[sig_ref];
        if sig.call_conv != CallConv::Tail || args.len() != 2 || sig.returns.len() != 1 {
            return None;
        }
        self.load_scratch(args[0], reg::RAX)?;
        self.load_scratch(args[1], reg::RDI)?;
        for &a in args {
            self.used(a);
        }
        self.unwind();
        self.asm.jmp_r(reg::RAX);
        Some(())
    }

    fn call(&mut self, inst: Inst, args: &[Value], result: Option<Value>) -> Option<()> {
        let dfg = &self.func.dfg;
        let InstructionData::CallIndirect { sig_ref, .. } = dfg.insts[inst] else { return None };
        let sig = &dfg.signatures[sig_ref];
        let preserve_all = sig.call_conv == CallConv::PreserveAll;
        if !preserve_all && sig.call_conv != CallConv::SystemV {
            return None;
        }
        let (callee, call_args) = (args[0], &args[1..]);
        if call_args.len() > ARGS.len() || sig.returns.len() > 1 {
            return None;
        }
        // Free the argument registers (and, for System V, every register
        // the callee may clobber), then load the arguments.
        let clobbered: Vec<u8> = if preserve_all { ARGS.iter().copied().filter(|r| ALLOCATABLE.contains(r)).collect() } else { CALLER_SAVED.to_vec() };
        for r in clobbered {
            self.evict(r);
        }
        for (&a, &r) in call_args.iter().zip(&ARGS) {
            self.load_scratch(a, r)?;
        }
        self.load_scratch(callee, reg::RAX)?;
        self.asm.call_r(reg::RAX);
        self.used(callee);
        for &a in call_args {
            self.used(a);
        }
        if let Some(r) = result {
            let dst = self.alloc()?;
            self.asm.mov_rr(8, dst, reg::RAX);
            self.narrow_to(self.ty(r), dst)?;
            self.define(r, dst);
        }
        Some(())
    }
}

fn invert(cc: Cond) -> Cond {
    match cc {
        Cond::B => Cond::Ae,
        Cond::Ae => Cond::B,
        Cond::E => Cond::Ne,
        Cond::Ne => Cond::E,
        Cond::Be => Cond::A,
        Cond::A => Cond::Be,
        Cond::L => Cond::Ge,
        Cond::Ge => Cond::L,
        Cond::Le => Cond::G,
        Cond::G => Cond::Le,
    }
}
