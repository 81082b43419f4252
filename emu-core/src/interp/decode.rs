//! Instruction fetch and the decoded-block cache.
//!
//! Guest code is decoded a basic block at a time: straight-line
//! instructions up to a control transfer, an instruction that changes the
//! CPU mode, or the end of the page. Blocks are cached in a 4-way
//! set-associative table keyed by the host address of their first byte
//! (which names guest-physical memory uniquely), the decoding mode and the
//! RIP they were decoded at (iced-x86 instructions carry their IP, so a
//! block is only reused at the same RIP). Each entry carries its handler,
//! so the hot path neither decodes nor dispatches by mnemonic. A jump
//! cache by RIP holds recent blocks themselves; an instruction that
//! crosses into the next page is a block of its own, cached under both
//! pages (see [`Block::next_page`]).
//!
//! A page that holds cached blocks is a code page: the TLB gives it no
//! write tag, so a guest write takes the slow path, which drops the page's
//! blocks and bumps a generation counter that stops the block running now
//! (self-modifying code).

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use iced_x86::{Decoder, DecoderError, DecoderOptions, FlowControl, Instruction, Mnemonic as M};

use crate::cpu::seg;
use crate::mmu::Access;

use super::exec::{self, Handler};
use super::fault::{Fault, R};
use super::Interpreter;

/// Block cache slots, in sets of [`WAYS`]: a Linux boot touches tens of
/// thousands of blocks, an eviction drops a block's translation with it,
/// and a direct-mapped table of this size still thrashed (hundreds of
/// thousands of collisions per boot). At 64 Ki slots a boot still evicted
/// 18 k blocks (decoded and compiled again when they came back); at
/// 128 Ki, 2.7 k, for 1 MiB more.
const SET_BITS: u32 = 15;
const WAYS: usize = 4;
const SLOTS: usize = WAYS << SET_BITS;
const PAGE: u64 = 4096;
/// Writes to a code page that hit no cached code before the page's
/// interpreted blocks are dropped all the same, so a page that held code
/// and now holds data (freed init memory) takes fast writes again rather
/// than every write through the slow path.
const QUIET_WRITES: u32 = 64;
/// The longest block decoded at once.
const MAX_BLOCK: usize = 64;
/// The bytes copied to decode a block, unless it turns out longer.
const SHORT_WINDOW: usize = 256;

/// Straight-line instructions with their handlers.
pub(crate) struct Block {
    /// RIP of the first instruction.
    pub(crate) rip: u64,
    /// Offset just past the last byte, for the CS limit check on entry.
    pub(crate) end: u64,
    pub(crate) entries: Box<[(Handler, Instruction)]>,
    /// Runs so far, until the block is offered to the translator.
    pub(crate) runs: AtomicU32,
    /// The translation, once tried (`None` inside: refused). Dropped with
    /// the block, so dropping cached code drops native code too.
    pub(crate) native: OnceLock<Option<super::tier::NativeBlock>>,
    /// True while the block may be entered by chained native code: cleared
    /// when the cache drops it (and on drop), so links to it fall through
    /// to the dispatcher. Shared with the links that point here.
    pub(crate) live: Arc<AtomicBool>,
    /// The region whose code runs this block (its blocks, instructions
    /// and exit links): formed from this block when it became hot, or
    /// another region that holds it.
    pub(crate) region: OnceLock<Arc<super::region::Region>>,
    /// For a block of one instruction that crosses into the next page:
    /// the host address of that page when it was decoded, 0 otherwise.
    /// The block holds only while the next page still maps there, and
    /// is interpreted, never translated (a region covers one page).
    pub(crate) next_page: u64,
}

impl Block {
    pub(crate) fn new(rip: u64, end: u64, entries: Box<[(Handler, Instruction)]>) -> Self {
        Self {
            rip,
            end,
            next_page: 0,
            entries,
            runs: AtomicU32::new(0),
            native: OnceLock::new(),
            live: Arc::new(AtomicBool::new(true)),
            region: OnceLock::new(),
        }
    }

    /// Marks the block as no longer enterable by links.
    fn kill(&self) {
        self.live.store(false, Ordering::Release);
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The block to run at the current RIP: `block` stays valid until the
/// next [`CodeCache::bury`] (the start of the next `execute_block`) when
/// it is cached, and for as long as `held` when it is not (a block just
/// decoded, or one the cache cannot keep).
pub(crate) struct FoundBlock {
    pub(crate) block: *const Block,
    pub(crate) held: Option<Arc<Block>>,
}

impl FoundBlock {
    /// A block the caller holds (not cached).
    fn held(block: Arc<Block>) -> Self {
        Self { block: Arc::as_ptr(&block), held: Some(block) }
    }
}

#[derive(Clone, Default)]
struct Slot {
    /// Host address << 2 | mode, or 0 when empty.
    key: u64,
    block: Option<Arc<Block>>,
}

/// A recent block by RIP (QEMU's tb_jmp_cache): the block itself, so a
/// hit costs one load of the entry and one of the block. Valid while the
/// translations (`tlb_epoch`) and the mode it was found under are
/// unchanged; a block leaving the cache clears the entry that names it,
/// so a set entry's block is alive.
///
/// The entry also says what ran after its block last time (`Successor`),
/// so that can be fetched into the host's cache while the block runs.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Jump {
    /// The linear address (CS base + RIP, not truncated): with the
    /// block's own RIP it pins both.
    linear: u64,
    /// The value of `Tlb::epochs[epoch]` when the entry was made: the
    /// entry holds while it stays.
    tlb_epoch: u64,
    epoch: u8,
    /// `Arc::as_ptr` of the cached block.
    block: usize,
    /// Bitness and CPL; `u32::MAX` when empty.
    mode: u32,
    after: Successor,
}

/// Where the block that ran after an entry's block lives: hints for
/// prefetching, never dereferenced (they may name freed memory).
#[derive(Clone, Copy, Default)]
struct Successor {
    /// Its jump-cache entry's index.
    jump: u32,
    /// Its `Block`, and its first instructions.
    block: usize,
    entries: usize,
}

impl Default for Jump {
    fn default() -> Self {
        Self { linear: 0, tlb_epoch: 0, epoch: 0, block: 0, mode: u32::MAX, after: Successor::default() }
    }
}

/// Asks the host to bring the cache line at `address` closer; any address
/// will do (a prefetch never faults).
#[inline(always)]
fn prefetch(address: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 has no architectural effect: it neither faults
    // nor reads memory the program can observe, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Jump-cache entries (64 bytes each): at 4096 a boot's kernel code
/// missed it 0.89 M times (each a lookup in the block cache, a cache miss
/// or two), at 16384 0.57 M.
const JUMP_SLOTS: usize = 16384;

/// Decoded blocks by host address.
pub(crate) struct CodeCache {
    jumps: Box<[Jump]>,
    slots: Vec<Slot>,
    /// For each code page (guest-physical page number), the slots used.
    // Looked up on every TLB fill: a fast hash for page numbers.
    pages: FxHashMap<u64, Vec<u32>>,
    code_pages: FxHashSet<u64>,
    /// Writes to each code page that dropped nothing (see
    /// [`CodeCache::invalidate_range`]).
    quiet_writes: FxHashMap<u64, u32>,
    /// Bumped whenever cached code is dropped.
    pub(crate) generation: u64,
    /// Blocks dropped from the cache, kept alive until the next block
    /// boundary: chained native code may be running one of them (its
    /// fallback borrows its instructions) when a write invalidates it.
    graveyard: Vec<Arc<Block>>,
    /// For `--stats`: blocks pushed out of their slot by another, guest
    /// writes that dropped code, the blocks they dropped.
    pub(crate) evictions: u64,
    pub(crate) pages_written: u64,
    pub(crate) blocks_written: u64,
    /// Writes to code pages that dropped nothing.
    pub(crate) writes_beside_code: u64,
    /// Round-robin victim choice within a set.
    victim: usize,
}

impl Default for CodeCache {
    fn default() -> Self {
        Self {
            jumps: vec![Jump::default(); JUMP_SLOTS].into_boxed_slice(),
            slots: vec![Slot::default(); SLOTS],
            pages: FxHashMap::default(),
            code_pages: FxHashSet::default(),
            quiet_writes: FxHashMap::default(),
            generation: 0,
            graveyard: Vec::new(),
            evictions: 0,
            pages_written: 0,
            blocks_written: 0,
            writes_beside_code: 0,
            victim: 0,
        }
    }
}

fn mode_bits(bitness: u32) -> u64 {
    match bitness {
        16 => 1,
        32 => 2,
        _ => 3,
    }
}

/// The first slot of the set for a block at host address/mode `key`
/// decoded at `rip`. The RIP takes part because one physical page runs at
/// several addresses (each exec of a position-independent program maps it
/// anew). Fibonacci hashing spreads neighbouring addresses over the table.
fn set_of(key: u64, rip: u64) -> usize {
    let k = key ^ rip.rotate_left(32);
    ((k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SET_BITS)) as usize) * WAYS
}

impl CodeCache {
    pub(crate) fn is_code_page(&self, phys_page: u64) -> bool {
        !self.code_pages.is_empty() && self.code_pages.contains(&phys_page)
    }

    /// Takes the block in slot `idx` out of the cache: links to it stop
    /// at once, the jump cache forgets it, its memory goes at the next
    /// block boundary.
    fn retire(&mut self, idx: usize) {
        let Some(slot) = self.slots.get_mut(idx) else { return };
        slot.key = 0;
        if let Some(b) = slot.block.take() {
            b.kill();
            // Only the entry for its own RIP can name a block.
            let j = &mut self.jumps[Self::jump_index(b.rip)];
            if j.block == Arc::as_ptr(&b) as usize {
                *j = Jump::default();
            }
            self.graveyard.push(b);
        }
    }

    /// Frees the blocks dropped since the last boundary (no native code
    /// runs now).
    pub(crate) fn bury(&mut self) {
        if !self.graveyard.is_empty() {
            self.graveyard.clear();
        }
    }

    /// A guest write of `len` bytes at `offset` in guest-physical page
    /// `phys_page` (at host address `host_page`): drops the cached blocks
    /// that hold any of those bytes, and every block of a region whose
    /// code covers them (its code runs them all; a block of it no longer
    /// cached still counts, through the region's own instructions).
    /// Whether any went. The page stays a code page, its writes slow,
    /// while it holds blocks; after `QUIET_WRITES` writes that hit none
    /// (a page turned to data), those without native code go.
    pub(crate) fn invalidate_range(&mut self, phys_page: u64, host_page: u64, offset: u64, len: u64) -> bool {
        let Some(slots) = self.pages.get(&phys_page) else { return false };
        let (lo, hi) = (offset, offset.saturating_add(len));
        let mut here: Vec<u32> = Vec::with_capacity(slots.len());
        let mut dropped: Vec<u32> = Vec::new();
        let mut regions: Vec<*const super::region::Region> = Vec::new();
        for &s in slots {
            let Some((start, block)) = self.slots.get(s as usize).and_then(|slot| slot.block.as_ref().map(|b| (slot.key >> 2, b))) else { continue };
            let size = block.end.wrapping_sub(block.rip);
            let (from, to) = if start & !(PAGE - 1) == host_page {
                (start & (PAGE - 1), (start & (PAGE - 1)) + size)
            } else if block.next_page == host_page {
                // The tail of an instruction that crosses into this page.
                (0, ((start & (PAGE - 1)) + size).saturating_sub(PAGE))
            } else {
                // The slot went to a block of another page.
                continue;
            };
            here.push(s);
            let region = block.region.get();
            if (from < hi && lo < to) || region.is_some_and(|r| r.covers(lo, hi)) {
                dropped.push(s);
                regions.extend(region.map(Arc::as_ptr));
            }
        }
        if !regions.is_empty() {
            for &s in &here {
                let in_region = self.slots[s as usize].block.as_ref().and_then(|b| b.region.get()).is_some_and(|r| regions.contains(&Arc::as_ptr(r)));
                if in_region && !dropped.contains(&s) {
                    dropped.push(s);
                }
            }
        }
        if here.is_empty() {
            // Every slot listed went to other blocks (or to none): no
            // code here any more.
            self.forget_page(phys_page);
            return false;
        }
        if dropped.is_empty() {
            let quiet = self.quiet_writes.entry(phys_page).or_default();
            *quiet += 1;
            self.writes_beside_code += 1;
            if *quiet >= QUIET_WRITES {
                // The blocks without native code go (the interpreter
                // decodes them again cheaply if they run); translated
                // ones stay, so a hot loop beside the data it writes
                // keeps its code.
                *quiet = 0;
                dropped = here.iter().copied().filter(|&s| self.slots[s as usize].block.as_ref().is_some_and(|b| b.region.get().is_none() && !b.native.get().is_some_and(Option::is_some))).collect();
            }
            if dropped.is_empty() {
                if let Some(list) = self.pages.get_mut(&phys_page) {
                    *list = here;
                }
                return false;
            }
        }
        self.pages_written += 1;
        self.blocks_written += dropped.len() as u64;
        for &s in &dropped {
            self.retire(s as usize);
        }
        here.retain(|s| !dropped.contains(s));
        if here.is_empty() {
            self.forget_page(phys_page);
        } else if let Some(list) = self.pages.get_mut(&phys_page) {
            *list = here;
        }
        self.generation += 1;
        true
    }

    /// Stops holding `phys_page` as a code page: it holds no block.
    fn forget_page(&mut self, phys_page: u64) {
        self.pages.remove(&phys_page);
        self.code_pages.remove(&phys_page);
        self.quiet_writes.remove(&phys_page);
    }

    /// Drops everything (a state replacement).
    pub(crate) fn clear(&mut self) {
        for idx in 0..self.slots.len() {
            self.retire(idx);
        }
        self.pages.clear();
        self.code_pages.clear();
        self.quiet_writes.clear();
        self.generation += 1;
    }

    /// The slot of the cached block at `host` for `rip`.
    fn slot_of(&self, host: u64, bitness: u32, rip: u64) -> Option<usize> {
        let key = host << 2 | mode_bits(bitness);
        let set = set_of(key, rip);
        (set..set + WAYS).find(|&i| self.slots[i].key == key && self.slots[i].block.as_ref().is_some_and(|b| b.rip == rip))
    }

    /// The cached block at `host` for `rip`, left in its slot.
    pub(crate) fn peek(&self, host: u64, bitness: u32, rip: u64) -> Option<&Arc<Block>> {
        self.slots[self.slot_of(host, bitness, rip)?].block.as_ref()
    }

    /// The cached block at `host` for `rip` with its slot, as a pointer
    /// that stays valid until the next [`CodeCache::bury`] (a block
    /// leaving its slot waits in the graveyard until then).
    fn find(&self, host: u64, bitness: u32, rip: u64) -> Option<(usize, *const Block)> {
        let idx = self.slot_of(host, bitness, rip)?;
        Some((idx, Arc::as_ptr(self.slots[idx].block.as_ref()?)))
    }

    pub(crate) fn jump_index(rip: u64) -> usize {
        (rip as usize ^ (rip >> 12) as usize) & (JUMP_SLOTS - 1)
    }

    /// Notes that `block` (at jump-cache index `jump`) ran after the block
    /// at index `before`, then prefetches what ran after `block` last time:
    /// its jump-cache entry, its `Block` and its first instructions, which
    /// are otherwise three cache misses in a row when the next lookup
    /// comes (cold kernel code runs each block rarely).
    pub(crate) fn successor(&mut self, before: usize, jump: usize, block: *const Block) {
        // SAFETY: `block` is the block about to run: alive (`FoundBlock`).
        let entries = unsafe { (*block).entries.as_ptr() } as usize;
        if let Some(b) = self.jumps.get_mut(before) {
            b.after = Successor { jump: jump as u32, block: block as usize, entries };
        }
        if let Some(j) = self.jumps.get(jump) {
            let next = j.after;
            if next.block != 0 {
                if let Some(n) = self.jumps.get(next.jump as usize) {
                    prefetch(n as *const Jump as usize);
                }
                prefetch(next.block);
                prefetch(next.entries);
                prefetch(next.entries + 64);
            }
        }
    }

    /// The block recorded for `rip` in the jump cache, if still valid; the
    /// pointer is valid until the next [`CodeCache::bury`].
    fn find_by_rip(&self, rip: u64, cs_base: u64, mode: u32, epochs: [u64; 2]) -> Option<*const Block> {
        let j = self.jumps[Self::jump_index(rip)];
        if j.mode != mode || j.linear != cs_base.wrapping_add(rip) || epochs.get(usize::from(j.epoch)) != Some(&j.tlb_epoch) {
            return None;
        }
        let block = j.block as *const Block;
        // SAFETY: the entry is set, so its block is still in its slot (see
        // `Jump`), which keeps it alive.
        (unsafe { &*block }.rip == rip).then_some(block)
    }

    /// Records `block` for `rip` under `tlb_epoch`, the value of
    /// `Tlb::epochs[epoch]`.
    fn remember(&mut self, rip: u64, cs_base: u64, mode: u32, (epoch, tlb_epoch): (usize, u64), block: *const Block) {
        let epoch = epoch as u8;
        self.jumps[Self::jump_index(rip)] = Jump { linear: cs_base.wrapping_add(rip), tlb_epoch, epoch, block: block as usize, mode, after: Successor::default() };
    }

    /// Caches `block`, a page-crossing one under its second page too;
    /// returns the pages that just became code pages.
    fn insert_crossing(&mut self, host: u64, phys_pages: [u64; 2], bitness: u32, block: Arc<Block>) -> [Option<u64>; 2] {
        let (idx, first) = self.insert(host, phys_pages[0], bitness, block);
        let second = self.hold_on_page(idx, phys_pages[1]);
        [first.then_some(phys_pages[0]), second.then_some(phys_pages[1])]
    }

    /// Caches `block`; returns its slot and whether its page just became
    /// a code page.
    fn insert(&mut self, host: u64, phys_page: u64, bitness: u32, block: Arc<Block>) -> (usize, bool) {
        let key = host << 2 | mode_bits(bitness);
        let set = set_of(key, block.rip);
        // An empty way, else the next victim in turn.
        let idx = (set..set + WAYS).find(|&i| self.slots[i].block.is_none()).unwrap_or_else(|| {
            self.victim = self.victim.wrapping_add(1);
            set + self.victim % WAYS
        });
        self.evictions += u64::from(self.slots[idx].block.is_some());
        self.retire(idx);
        self.slots[idx] = Slot { key, block: Some(block) };
        (idx, self.hold_on_page(idx, phys_page))
    }

    /// Lists slot `idx` under a guest-physical page, so a write there drops
    /// it; returns whether the page just became a code page.
    fn hold_on_page(&mut self, idx: usize, phys_page: u64) -> bool {
        self.pages.entry(phys_page).or_default().push(idx as u32);
        self.code_pages.insert(phys_page)
    }
}

/// Whether `ins` must be the last of its block: control transfers, and
/// instructions that change the mode, paging, or interrupt state that the
/// following instructions' decoding or checks depend on.
pub(crate) fn ends_block(ins: &Instruction) -> bool {
    if ins.flow_control() != FlowControl::Next {
        return true;
    }
    match ins.mnemonic() {
        M::Mov => {
            let (d, s) = (ins.op0_register(), ins.op1_register());
            d.is_cr() || d.is_dr() || d.is_segment_register() || s.is_cr()
        }
        M::Pop => ins.op0_register().is_segment_register(),
        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss | M::Lgdt | M::Lidt | M::Lldt | M::Ltr | M::Lmsw | M::Clts => true,
        M::Wrmsr | M::Popf | M::Popfd | M::Popfq | M::Sti | M::Cli | M::Hlt | M::Invlpg | M::Xsetbv | M::Swapgs => true,
        M::Out | M::Outsb | M::Outsw | M::Outsd | M::Fxrstor | M::Fxrstor64 | M::Xrstor | M::Xrstor64 => true,
        _ => false,
    }
}

impl Interpreter {
    /// The decoding mode: 64 in 64-bit mode, else CS.D's 32 or 16.
    pub(crate) fn bitness(&self) -> u32 {
        if self.in_64bit_mode() {
            64
        } else if !self.vm86() && self.s.segs[seg::CS].db != 0 {
            32
        } else {
            16
        }
    }

    /// The block starting at CS:RIP, from the cache (left in its slot) or
    /// freshly decoded and held (a one-instruction block when it cannot be
    /// cached).
    pub(crate) fn block_at_rip(&mut self) -> R<FoundBlock> {
        let bitness = self.bitness();
        let rip = self.s.rip;
        let cpl = self.s.cpl();
        let cs_base = self.s.segs[seg::CS].base;
        let mode = bitness | u32::from(cpl) << 8;
        if let Some(block) = self.code.find_by_rip(rip, cs_base, mode, self.tlb.epochs) {
            // SAFETY: cached, so alive until the next bury (`find_by_rip`).
            let end = unsafe { &*block }.end;
            if self.in_64bit_mode() || self.check_code_limit(rip, end.wrapping_sub(rip)).is_ok() {
                super::bump(&self.counters.jump_cache_hits);
                return Ok(FoundBlock { block, held: None });
            }
        }
        let lin = self.linear_code(rip, 1)?;
        let user = cpl == 3;
        let mut host = self.tlb.lookup(lin, Access::Execute, user);
        if host.is_none() {
            // A TLB miss (after a CR3 write or INVLPG) says nothing about
            // the block cache: walk the page tables, then look there
            // before decoding again. The first byte decides the fault.
            self.read_linear(lin, 1, Access::Execute)?;
            host = self.tlb.lookup(lin, Access::Execute, user);
        }
        if let Some(host) = host {
            if let Some((idx, block)) = self.code.find(host as u64, bitness, rip) {
                // SAFETY: cached, so alive until the next bury (`find`).
                let (end, next_page) = unsafe { ((*block).end, (*block).next_page) };
                if next_page == 0 {
                    // Within one page: the jump cache may hold it (blocks
                    // across pages stay out, since the TLB epoch it goes by
                    // need not move when their second page is remapped).
                    self.tlb.note_derived(lin);
                    let epoch = self.tlb.code_epoch(lin, user);
                    self.code.remember(rip, cs_base, mode, (epoch, self.tlb.epochs[epoch]), block);
                } else if self.tlb.lookup(next_page_of(lin, bitness), Access::Execute, user) != Some(next_page as *mut u8) {
                    // Its second page maps elsewhere (or is not in the TLB):
                    // decode it again.
                    self.code.retire(idx);
                    return self.decode_block(bitness, rip, lin, user).map(FoundBlock::held);
                }
                self.check_code_limit(rip, end.wrapping_sub(rip))?;
                super::bump(&self.counters.code_cache_hits);
                return Ok(FoundBlock { block, held: None });
            }
        }
        self.decode_block(bitness, rip, lin, user).map(FoundBlock::held)
    }

    fn decode_block(&mut self, bitness: u32, rip: u64, lin: u64, user: bool) -> R<Arc<Block>> {
        super::bump(&self.counters.blocks_decoded);
        // The first byte decides the fault for a fetch from an unmapped page.
        self.read_linear(lin, 1, Access::Execute)?;
        let host = self.tlb.lookup(lin, Access::Execute, user);
        let in_page = (PAGE - (lin & (PAGE - 1))) as usize;
        let limit = if self.in_64bit_mode() { u64::MAX } else { u64::from(self.s.segs[seg::CS].limit) };
        let (Some(host), Ok(phys)) = (host, self.code_phys(lin)) else {
            // MMIO or a page the TLB cannot hold: one instruction at a time.
            let ins = self.fetch_slow(bitness, rip, lin)?;
            return Ok(single(rip, ins));
        };
        // Most blocks are a few dozen bytes: copy a short window of the page
        // first, and the rest of it only when the block runs past it.
        let mut window = in_page.min(SHORT_WINDOW);
        let (entries, end) = loop {
            // SAFETY: `host` maps the rest of this guest page (the TLB holds
            // it), and the guest cannot unmap it while we hold the memory
            // Arc; `window` is within the page.
            let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, window) }.to_vec();
            let mut d = Decoder::with_ip(bitness, &bytes, rip, DecoderOptions::NONE);
            let mut entries = Vec::new();
            let mut end = rip;
            let mut short = false;
            while entries.len() < MAX_BLOCK {
                let ins = d.decode();
                if d.last_error() != DecoderError::None {
                    short = d.last_error() == DecoderError::NoMoreBytes && window < in_page;
                    break;
                }
                let last = ins.ip().wrapping_add(ins.len() as u64 - 1);
                if !self.in_64bit_mode() && (last > limit || last < ins.ip()) {
                    break;
                }
                entries.push((exec::handler_of(&ins), ins));
                end = ins.next_ip();
                if ends_block(&ins) {
                    break;
                }
            }
            if !short {
                break (entries, end);
            }
            window = in_page;
        };
        if entries.is_empty() {
            // An instruction crossing the page, an invalid one, or one past
            // the CS limit: the slow path raises whatever it must.
            let ins = self.fetch_slow(bitness, rip, lin)?;
            return Ok(self.cache_crossing(bitness, rip, lin, user, host, phys, ins));
        }
        let block = Arc::new(Block::new(rip, end, entries.into_boxed_slice()));
        if self.code.insert(host as u64, phys >> 12, bitness, block.clone()).1 {
            self.tlb.protect_phys_page(phys >> 12);
        }
        Ok(block)
    }

    /// The block of `ins`, just fetched at `lin` (host address `host`,
    /// guest-physical `phys`): cached when it crosses into a next page of
    /// RAM, so that a hot loop with an instruction across a page boundary
    /// (the initramfs's inflate has one) does not fetch it byte by byte on
    /// every run; held alone otherwise.
    #[allow(clippy::too_many_arguments)]
    fn cache_crossing(&mut self, bitness: u32, rip: u64, lin: u64, user: bool, host: *mut u8, phys: u64, ins: Instruction) -> Arc<Block> {
        let in_page = PAGE - (lin & (PAGE - 1));
        let next = next_page_of(lin, bitness);
        let second = (ins.len() as u64 > in_page).then(|| self.tlb.lookup(next, Access::Execute, user)).flatten();
        let (Some(second), Ok(phys2)) = (second, self.code_phys(next)) else { return single(rip, ins) };
        let mut block = single_block(rip, ins);
        block.next_page = second as u64;
        let block = Arc::new(block);
        for page in self.code.insert_crossing(host as u64, [phys >> 12, phys2 >> 12], bitness, block.clone()).into_iter().flatten() {
            self.tlb.protect_phys_page(page);
        }
        block
    }

    /// Fetches one instruction byte by byte (MMIO, page-crossing,
    /// faulting and invalid instructions).
    fn fetch_slow(&mut self, bitness: u32, rip: u64, lin: u64) -> R<Instruction> {
        let in_page = (PAGE - (lin & (PAGE - 1))).min(15) as usize;
        let mut buf = [0u8; 15];
        for (i, b) in buf.iter_mut().take(in_page).enumerate() {
            *b = self.read_linear(lin.wrapping_add(i as u64), 1, Access::Execute)? as u8;
        }
        let mut have = in_page;
        let ins = loop {
            let mut d = Decoder::with_ip(bitness, &buf[..have], rip, DecoderOptions::NONE);
            let ins = d.decode();
            match d.last_error() {
                DecoderError::None => break ins,
                DecoderError::NoMoreBytes if have < 15 => {
                    let b = self.read_linear(lin.wrapping_add(have as u64), 1, Access::Execute)?;
                    buf[have] = b as u8;
                    have += 1;
                }
                _ => return Err(Fault::ud()),
            }
        };
        self.check_code_limit(rip, ins.len() as u64)?;
        Ok(ins)
    }

    /// The physical address of a code byte, by a walk.
    fn code_phys(&self, lin: u64) -> R<u64> {
        let who = crate::mmu::Requester { user: self.s.cpl() == 3, ac: false, implicit: false };
        crate::mmu::translate(&self.mem, &self.paging_mode(), lin, Access::Execute, who)
            .map(|t| t.phys)
            .map_err(|pf| Fault::pf(pf.error_code))
    }

    /// The linear address of a code offset, checking CS.
    fn linear_code(&self, offset: u64, len: u64) -> R<u64> {
        if self.in_64bit_mode() {
            if !super::access::is_canonical(offset) {
                return Err(Fault::gp0());
            }
            return Ok(offset);
        }
        self.check_code_limit(offset, len)?;
        Ok(self.s.segs[seg::CS].base.wrapping_add(offset) & 0xffff_ffff)
    }

    fn check_code_limit(&self, offset: u64, len: u64) -> R<()> {
        if self.in_64bit_mode() {
            return Ok(());
        }
        let last = offset.wrapping_add(len.max(1) - 1);
        if last > u64::from(self.s.segs[seg::CS].limit) || last < offset {
            return Err(Fault::gp0());
        }
        Ok(())
    }

    /// Forgets all decoded code and translations.
    pub(crate) fn flush_code(&mut self) {
        self.code.clear();
        self.tlb.flush(false);
        // Native code may be running (a helper got here): free its memory
        // at the next block boundary.
        if let Some(tier) = &mut self.tier {
            tier.flush_pending = true;
        }
    }
}

/// The linear address of the page after the one holding `lin`.
fn next_page_of(lin: u64, bitness: u32) -> u64 {
    let next = (lin | (PAGE - 1)).wrapping_add(1);
    if bitness == 64 {
        next
    } else {
        next & 0xffff_ffff
    }
}

/// A block of the one instruction `ins`.
fn single_block(rip: u64, ins: Instruction) -> Block {
    Block::new(rip, ins.next_ip(), vec![(exec::handler_of(&ins), ins)].into_boxed_slice())
}

fn single(rip: u64, ins: Instruction) -> Arc<Block> {
    Arc::new(single_block(rip, ins))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nop_block(rip: u64) -> Arc<Block> {
        let mut d = Decoder::with_ip(64, &[0x90], rip, DecoderOptions::NONE);
        single(rip, d.decode())
    }

    /// `count` host addresses (page-aligned, distinct) whose blocks at
    /// `rip` fall in one set.
    fn colliding_hosts(rip: u64, count: usize) -> Vec<u64> {
        let set = set_of(0x1000 << 2 | mode_bits(64), rip);
        (1u64..).map(|page| page << 12).filter(|&h| set_of(h << 2 | mode_bits(64), rip) == set).take(count).collect()
    }

    const MODE: u32 = 64;

    #[test]
    fn a_jump_cache_entry_holds_its_block_until_the_block_leaves_the_cache() {
        let rip = 0x40_1000;
        let hosts = colliding_hosts(rip, 4 * WAYS);
        let mut cache = CodeCache::default();
        let first = nop_block(rip);
        cache.insert(hosts[0], 1, 64, Arc::clone(&first));
        let (_, found) = cache.find(hosts[0], 64, rip).expect("cached");
        assert_eq!(found, Arc::as_ptr(&first));
        cache.remember(rip, 0, MODE, (0, 7), found);
        assert_eq!(cache.find_by_rip(rip, 0, MODE, [7, 0]), Some(found));
        // Another mode, CS base, RIP or TLB epoch does not match.
        assert_eq!(cache.find_by_rip(rip, 0, MODE | 3 << 8, [7, 0]), None);
        assert_eq!(cache.find_by_rip(rip, 0x10, MODE, [7, 0]), None);
        assert_eq!(cache.find_by_rip(rip + 1, 0, MODE, [7, 0]), None);
        assert_eq!(cache.find_by_rip(rip, 0, MODE, [8, 0]), None);
        // Code from a global mapping goes by the global epoch alone: a
        // flush that keeps global entries leaves the entry valid.
        cache.remember(rip, 0, MODE, (1, 5), found);
        assert_eq!(cache.find_by_rip(rip, 0, MODE, [9, 5]), Some(found));
        assert_eq!(cache.find_by_rip(rip, 0, MODE, [9, 6]), None);
        cache.remember(rip, 0, MODE, (0, 7), found);
        drop(first);

        // Filling the set evicts the block (its memory goes at the next
        // bury): the entry that names it is stale from then on.
        for (i, &h) in hosts.iter().enumerate().skip(1) {
            cache.insert(h, 1 + i as u64, 64, nop_block(rip));
            if cache.find(hosts[0], 64, rip).is_none() {
                break;
            }
            assert_eq!(cache.find_by_rip(rip, 0, MODE, [7, 0]), Some(found), "valid while cached");
        }
        assert!(cache.find(hosts[0], 64, rip).is_none(), "evicted");
        assert_eq!(cache.find_by_rip(rip, 0, MODE, [7, 0]), None);
        cache.bury();
    }

    #[test]
    fn dropping_a_code_page_makes_jump_cache_entries_stale() {
        let rip = 0x40_2000;
        let mut cache = CodeCache::default();
        cache.insert(0x9000, 5, 64, nop_block(rip));
        let (_, found) = cache.find(0x9000, 64, rip).expect("cached");
        cache.remember(rip, 0, MODE, (0, 0), found);
        assert_eq!(cache.find_by_rip(rip, 0, MODE, [0, 0]), Some(found));
        assert!(cache.invalidate_range(5, 0x9000, 0, PAGE));
        assert_eq!(cache.find_by_rip(rip, 0, MODE, [0, 0]), None);
        assert!(cache.find(0x9000, 64, rip).is_none());
        cache.bury();
    }

    #[test]
    fn a_write_drops_the_blocks_it_overwrites_and_keeps_the_rest_of_its_page() {
        // One-byte blocks at offsets 0x10, 0x20 and 0x30 of guest-physical
        // page 5, at host 0x9000.
        let mut cache = CodeCache::default();
        for off in [0x10, 0x20, 0x30] {
            cache.insert(0x9000 + off, 5, 64, nop_block(0x40_2000 + off));
        }
        let cached = |cache: &CodeCache, off: u64| cache.find(0x9000 + off, 64, 0x40_2000 + off).is_some();
        let generation = cache.generation;
        assert!(!cache.invalidate_range(5, 0x9000, 0x11, 15), "bytes 0x11..0x20 hold no block");
        assert!(!cache.invalidate_range(6, 0x9000, 0x10, 1), "another page");
        assert_eq!(cache.generation, generation, "the running block goes on");
        assert!([0x10, 0x20, 0x30].iter().all(|&off| cached(&cache, off)));
        assert!(cache.invalidate_range(5, 0x9000, 0x1f, 2), "bytes 0x1f..0x21 hold the second");
        assert!(cached(&cache, 0x10) && !cached(&cache, 0x20) && cached(&cache, 0x30));
        assert!(cache.generation > generation);
        assert!(cache.is_code_page(5), "it still holds code");
        assert_eq!((cache.pages_written, cache.blocks_written), (1, 1));
        // Writes beside the code: after QUIET_WRITES of them (the first
        // above counted) the page's interpreted blocks go too, and the
        // page is data again.
        for _ in 0..QUIET_WRITES - 2 {
            assert!(!cache.invalidate_range(5, 0x9000, 0x800, 8));
        }
        assert!(cached(&cache, 0x10));
        assert!(cache.invalidate_range(5, 0x9000, 0x800, 8));
        assert!(!cached(&cache, 0x10) && !cached(&cache, 0x30));
        assert!(!cache.is_code_page(5));
        cache.bury();
    }

    #[test]
    fn a_write_to_the_tail_of_an_instruction_across_pages_drops_it() {
        // MOV EAX, imm32 at 0x40_2ffd: 5 bytes, its last two in the next
        // page (guest-physical pages 5 and 9, at host 0x9000 and 0xc000).
        let rip = 0x40_2ffd;
        let mut d = Decoder::with_ip(64, &[0xb8, 1, 2, 3, 4], rip, DecoderOptions::NONE);
        let mut block = single_block(rip, d.decode());
        block.next_page = 0xc000;
        let mut cache = CodeCache::default();
        cache.insert_crossing(0x9ffd, [5, 9], 64, Arc::new(block));
        let cached = |cache: &CodeCache| cache.find(0x9ffd, 64, rip).is_some();
        assert!(!cache.invalidate_range(9, 0xc000, 2, 8), "past its last byte");
        assert!(!cache.invalidate_range(5, 0x9000, 0xff0, 13), "before its first");
        assert!(cached(&cache));
        assert!(cache.invalidate_range(9, 0xc000, 1, 1), "its last byte");
        assert!(!cached(&cache));
        assert!(!cache.is_code_page(9));
        // The first page still lists its slot until a write there finds
        // it empty.
        assert!(!cache.invalidate_range(5, 0x9000, 0, 1));
        assert!(!cache.is_code_page(5));
        cache.bury();
    }

    /// Steps `cpu` until `done` holds (at most 200 steps).
    fn step_until(cpu: &mut Interpreter, done: impl Fn(&Interpreter) -> bool) {
        for _ in 0..200 {
            if done(cpu) {
                return;
            }
            assert_eq!(cpu.step(), crate::interp::Step::Executed, "at {:#x}", cpu.s.rip);
        }
        panic!("stuck at {:#x}", cpu.s.rip);
    }

    #[test]
    fn an_instruction_across_pages_is_decoded_once_and_dropped_when_either_page_changes() {
        use crate::cpu::reg;
        use iced_x86::code_asm::*;
        // 4 KiB pages at 16 MiB: 0x100_0000 -> 0xa000, 0x100_1000 ->
        // 0xc000 (later 0xd000). `mov ebx, imm32` starts 3 bytes before
        // the page end, and `ret` follows in the second page.
        const CROSS: u64 = 0x100_0ffd;
        let mut a = CodeAssembler::new(64).unwrap();
        let mut top = a.create_label();
        a.mov(rax, CROSS).unwrap();
        a.mov(ecx, 4u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.call(rax).unwrap();
        a.dec(ecx).unwrap();
        a.jne(top).unwrap();
        // Rewrite the immediate's third byte, in the second page.
        a.mov(byte_ptr(0x100_1000u64), 2u32).unwrap();
        a.call(rax).unwrap();
        a.mov(r12, rbx).unwrap();
        // Map the second page elsewhere.
        a.mov(ecx, 0xd003u32).unwrap();
        a.mov(qword_ptr(0x9008u64), rcx).unwrap();
        a.invlpg(byte_ptr(0x100_1000u64)).unwrap();
        a.call(rax).unwrap();
        a.nop().unwrap();
        let code = a.assemble(0x1_0000).unwrap();
        let end = 0x1_0000 + code.len() as u64 - 1;

        let mut cpu = crate::interp::tests::long_mode_cpu(&code);
        cpu.mem.write_u64(0x3000 + 8 * 8, 0x9003).unwrap();
        cpu.mem.write_u64(0x9000, 0xa003).unwrap();
        cpu.mem.write_u64(0x9008, 0xc003).unwrap();
        cpu.mem.write(0xaffd, &[0xbb, 0x01, 0x00]).unwrap();
        cpu.mem.write(0xc000, &[0x00, 0x00, 0xc3]).unwrap();
        cpu.mem.write(0xd000, &[0x05, 0x00, 0xc3]).unwrap();

        // The first round decodes every block, the crossing MOV among
        // them; the others find them all cached.
        step_until(&mut cpu, |c| c.s.gpr[reg::RCX] == 3 && c.s.rip == 0x1_000f);
        let decoded = cpu.counters.blocks_decoded.get();
        step_until(&mut cpu, |c| c.s.gpr[reg::RCX] == 0);
        assert_eq!(cpu.s.gpr[reg::RBX], 1);
        assert_eq!(cpu.counters.blocks_decoded.get(), decoded, "a block was decoded again");

        step_until(&mut cpu, |c| c.s.rip == end);
        assert_eq!(cpu.s.gpr[12], 0x2_0001, "a write to the second page is seen");
        assert_eq!(cpu.s.gpr[reg::RBX], 0x5_0001, "a remapped second page is seen");
    }

    #[test]
    fn an_empty_jump_cache_finds_nothing() {
        let cache = CodeCache::default();
        assert_eq!(cache.find_by_rip(0, 0, MODE, [0, 0]), None);
    }
}
