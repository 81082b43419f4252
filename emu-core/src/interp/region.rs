//! Regions: what one translation covers. A hot block is translated
//! together with the warm blocks it reaches by direct jumps, branches,
//! calls and fall-throughs within its guest page, so a loop or a short
//! call in that page runs as one native function whose registers and flags
//! stay in host registers, with no return to the dispatcher between its
//! blocks.
//!
//! Only the page of the entry block: every block of the region is then
//! reached at a RIP that maps to the same guest-physical page as the entry
//! whenever the entry runs, and a write to that page drops the entry (and
//! with it the region's code), as it drops every block of the page. Only
//! blocks already decoded and run often enough: cold paths stay exits, so
//! the compile time goes to code that runs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;

use iced_x86::{FlowControl, Instruction, Mnemonic as M, OpKind};

use crate::mmu::Access;

use super::decode::{ends_block, Block};
use super::exec::Handler;
use super::tier::{LinkSlot, NativeBlock, RegionBlock, TierSlot, TranslationJob};
use super::tier_helpers::HELPERS;
use super::Interpreter;

/// The most blocks one region holds.
pub(crate) const MAX_BLOCKS: usize = 32;
/// The most instructions one region holds (compile time grows with it).
const MAX_INSTRUCTIONS: usize = 384;

/// A block's region: its blocks' instructions in order, where each block
/// starts, and two exit links per block (branch target, fall-through).
/// Shared by every block that enters the region's code.
pub(crate) struct Region {
    pub(crate) entries: Box<[(Handler, Instruction)]>,
    pub(crate) blocks: Box<[RegionBlock]>,
    /// Stable addresses: native code reads them where it was compiled to.
    pub(crate) links: Box<[LinkSlot]>,
    /// The host address of the region's page (0 outside 64-bit mode).
    pub(crate) host_page: u64,
    /// The translation once the answer came: the entry block's native
    /// code (index 0), or `None` when it was refused or discarded.
    pub(crate) installed: OnceLock<Option<NativeBlock>>,
    /// Tiered compilation of loops: a region that loops is compiled
    /// quickly first, with code that counts its back edges here and, on
    /// entry, calls the function whose address is stored here once there
    /// is one (the same region compiled with Cranelift's optimiser). A
    /// stable address, like `links`.
    pub(crate) optimized: Box<TierSlot>,
    /// Set once the optimised translation was asked for.
    pub(crate) optimizing: AtomicBool,
    /// Miss exits its optimised code may still take (see
    /// [`super::tier::MISS_EXITS_BEFORE_HELPERS`]), and the instructions
    /// retired at the last one; negative once the code was dropped for
    /// taking too many.
    miss_credit: AtomicI64,
    miss_clock: AtomicU64,
}

/// Instructions retired that earn a region's optimised code one more miss
/// exit (see [`Region::note_miss_exit`]): an exit, the instruction
/// interpreted and the way back into native code take a few
/// microseconds, 64 Ki instructions natively some tens.
const INSTRUCTIONS_PER_MISS: u64 = 1 << 16;

impl Region {
    fn new(entries: Vec<(Handler, Instruction)>, blocks: Vec<RegionBlock>, host_page: u64) -> Self {
        let links = (0..2 * blocks.len()).map(|_| LinkSlot::default()).collect();
        Self {
            entries: entries.into_boxed_slice(),
            blocks: blocks.into_boxed_slice(),
            links,
            host_page,
            installed: OnceLock::new(),
            optimized: Box::default(),
            optimizing: AtomicBool::new(false),
            miss_credit: AtomicI64::new(i64::from(super::tier::MISS_EXITS_BEFORE_HELPERS)),
            miss_clock: AtomicU64::new(0),
        }
    }

    /// Counts a miss exit of the optimised code, `retired` instructions
    /// into the run: the region may take `MISS_EXITS_BEFORE_HELPERS` in a
    /// row, and one more for every `INSTRUCTIONS_PER_MISS` retired since
    /// (by anything: a loop missing that seldom loses little to the
    /// exits; the decompressor's output loop misses once per 4 KiB page
    /// it writes). Past that, drops the code (the first tier runs again,
    /// and asks anew once the loop is hot, for code that calls helpers on
    /// misses) and says so.
    pub(crate) fn note_miss_exit(&self, retired: u64) -> bool {
        let credit = self.miss_credit.load(Ordering::Relaxed);
        if credit < 0 {
            return false;
        }
        // The first miss starts the clock.
        let since = match self.miss_clock.swap(retired, Ordering::Relaxed) {
            0 => 0,
            last => retired.saturating_sub(last),
        };
        let earned = i64::try_from(since / INSTRUCTIONS_PER_MISS).unwrap_or(i64::MAX);
        let credit = credit.saturating_add(earned).min(i64::from(super::tier::MISS_EXITS_BEFORE_HELPERS)) - 1;
        if credit > 0 {
            self.miss_credit.store(credit, Ordering::Relaxed);
            return false;
        }
        self.miss_credit.store(-1, Ordering::Relaxed);
        self.optimized.entry.store(0, Ordering::Release);
        self.optimizing.store(false, Ordering::Relaxed);
        true
    }

    /// Whether the region's optimised code may leave misses to the
    /// interpreter: it has not lost that for taking too many.
    fn misses_to_interpreter(&self) -> bool {
        self.miss_credit.load(Ordering::Relaxed) >= 0
    }

    /// Whether the region's instructions hold any byte of `lo..hi`, offsets
    /// in its page: its code must go when the guest writes them.
    pub(crate) fn covers(&self, lo: u64, hi: u64) -> bool {
        self.blocks.iter().any(|b| {
            let Some(last) = self.entries.get(b.start + b.len.max(1) - 1) else { return true };
            let from = b.rip & 0xfff;
            let to = from + last.1.next_ip().wrapping_sub(b.rip);
            from < hi && lo < to
        })
    }

    /// The job that translates this region, `ticket` naming it, entered
    /// at `rip`: a first translation (which may leave its loops to a
    /// second tier through `optimized`) or, with `optimize`, the second.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn job(&self, ticket: u64, rip: u64, bitness: u32, long_mode: bool, journal_writes: bool, optimize: bool, identity_pages: bool) -> TranslationJob {
        TranslationJob {
            ticket,
            rip,
            bitness,
            instructions: self.entries.iter().map(|(_, ins)| *ins).collect(),
            long_mode,
            helpers: HELPERS,
            links: self.links.as_ptr() as usize,
            blocks: self.blocks.to_vec(),
            journal_writes,
            optimized_slot: if optimize { 0 } else { std::ptr::from_ref::<TierSlot>(&self.optimized) as usize },
            optimize,
            identity_pages,
            misses_to_interpreter: optimize && self.misses_to_interpreter(),
        }
    }

    /// How this region's code may run the block made of `entries` at
    /// `rip`.
    pub(crate) fn holding(&self, rip: u64, entries: &[(Handler, Instruction)]) -> Holding {
        let Some(index) = self.blocks.iter().position(|b| b.rip == rip) else { return Holding::No };
        let b = &self.blocks[index];
        // Even a block that is not an entry waits: while the region's code
        // is pending, the blocks inside it become hot too, but once it is
        // installed they run there and are rarely dispatched to on their
        // own. A waiting block asks again on each run, so the instructions
        // are compared only once there is code to take: a block whose code
        // was rewritten meanwhile waits in vain, then goes its own way.
        let Some(installed) = self.installed.get() else { return Holding::Pending };
        let same = self.entries.get(b.start..b.start + b.len).is_some_and(|mine| mine.iter().map(|e| &e.1).eq(entries.iter().map(|e| &e.1)));
        match installed {
            _ if !same => Holding::No,
            None => Holding::No,
            _ if !b.entry => Holding::Inside,
            Some(head) => Holding::Entry(NativeBlock { index: index as u32, ..*head }),
        }
    }
}

/// What a region's code can do for a block that became hot.
pub(crate) enum Holding {
    /// It does not hold the block (or has no code for good).
    No,
    /// Its code starts there: this native entry.
    Entry(NativeBlock),
    /// Its translation is not installed yet.
    Pending,
    /// Its installed code holds the block, but only as the continuation
    /// of another.
    Inside,
}

/// Whether the fall-through at the end of `entries` may be chained to:
/// the last instruction does not end the block, or ends it only for the
/// chain's checks.
fn chains_through(entries: &[(Handler, Instruction)]) -> bool {
    entries.last().is_some_and(|(_, ins)| !ends_block(ins) || super::tier::ends_block_for_the_chain(ins))
}

/// The RIPs a block may go to next without the dispatcher deciding: the
/// targets of a direct Jcc, JMP or CALL (and the CALL's return address,
/// where a RET in the region may come back to), or the fall-through.
pub(crate) fn successors(entries: &[(Handler, Instruction)]) -> Vec<u64> {
    let Some((_, last)) = entries.last() else { return Vec::new() };
    let direct = last.op_count() == 1 && last.op0_kind() == OpKind::NearBranch64;
    match last.flow_control() {
        FlowControl::ConditionalBranch if direct && is_jcc(last.mnemonic()) => vec![last.near_branch_target(), last.next_ip()],
        FlowControl::UnconditionalBranch if direct && last.mnemonic() == M::Jmp => vec![last.near_branch_target()],
        FlowControl::Call if direct && last.mnemonic() == M::Call => vec![last.near_branch_target(), last.next_ip()],
        FlowControl::Next if !ends_block(last) => vec![last.next_ip()],
        _ => Vec::new(),
    }
}

/// [`successors`], each with the callee its RIP needs in the region (the
/// return address of a call), queued after the callee.
fn successors_of(entries: &[(Handler, Instruction)]) -> Vec<(u64, Option<u64>)> {
    let next = successors(entries);
    let is_call = entries.last().is_some_and(|(_, ins)| ins.flow_control() == FlowControl::Call);
    match (is_call, next.as_slice()) {
        (true, &[callee, ret]) => vec![(callee, None), (ret, Some(callee))],
        _ => next.into_iter().map(|r| (r, None)).collect(),
    }
}

/// Whether `m` is one of the sixteen Jcc (not JCXZ or LOOP).
pub(crate) fn is_jcc(m: M) -> bool {
    matches!(
        m,
        M::Jo | M::Jno | M::Jb | M::Jae | M::Je | M::Jne | M::Jbe | M::Ja | M::Js | M::Jns | M::Jp | M::Jnp | M::Jl | M::Jge | M::Jle | M::Jg
    )
}

impl Interpreter {
    /// The region of `head`, a block just found hot at the current RIP:
    /// `head` first, then the cached blocks of its page that it reaches
    /// and that ran at least `warm` times, breadth first, up to
    /// `max_blocks`. Outside 64-bit
    /// mode, when the page is not in the TLB or `warm` is `u32::MAX`, the
    /// block alone.
    pub(crate) fn form_region(&self, head: &Block, warm: u32, max_blocks: usize) -> Region {
        let mut entries = head.entries.to_vec();
        let mut blocks = vec![RegionBlock { rip: head.rip, start: 0, len: entries.len(), chain_fallthrough: chains_through(&head.entries), entry: true }];
        let page = head.rip & !0xfff;
        let host = match self.in_64bit_mode() {
            true => self.tlb.lookup(page, Access::Execute, self.s.cpl() == 3),
            false => None,
        };
        let Some(host) = host else { return Region::new(entries, blocks, 0) };
        let mut seen = HashSet::from([head.rip]);
        let mut queue: std::collections::VecDeque<(u64, Option<u64>)> = successors_of(&head.entries).into();
        while let Some((rip, needs)) = queue.pop_front() {
            if blocks.len() >= max_blocks {
                break;
            }
            // A call's return address joins only with the callee (a RET
            // in the region may come back to it); otherwise the code after
            // a call is entered from outside, as a region of its own.
            if needs.is_some_and(|callee| !blocks.iter().any(|b| b.rip == callee)) {
                continue;
            }
            if rip & !0xfff != page || !seen.insert(rip) {
                continue;
            }
            let at = host as u64 + (rip & 0xfff);
            let Some(block) = self.code.peek(at, 64, rip) else { continue };
            // A block crossing into the next page stays out: a write there
            // would not drop the region.
            let hot = warm != u32::MAX && block.next_page == 0 && (block.native.get().is_some() || block.runs.load(Ordering::Relaxed) >= warm);
            if !hot || entries.len() + block.entries.len() > MAX_INSTRUCTIONS {
                continue;
            }
            blocks.push(RegionBlock { rip, start: entries.len(), len: block.entries.len(), chain_fallthrough: chains_through(&block.entries), entry: false });
            entries.extend_from_slice(&block.entries);
            queue.extend(successors_of(&block.entries));
        }
        mark_entries(&mut blocks, &entries);
        Region::new(entries, blocks, host as u64)
    }
}

/// Decides where the region's code may be entered: its first block, the
/// return addresses of its calls (where returns from outside land), and
/// every block other region blocks jump to from more than one place or
/// from none (loop heads, joins). A block with one way in from the region
/// is not an entry: it goes on with its predecessor's registers and flags
/// in host registers. When such a block becomes hot on its own (entered
/// from outside), it is translated alone, as its own one-block region.
fn mark_entries(blocks: &mut [RegionBlock], entries: &[(Handler, Instruction)]) {
    let mut ways_in = vec![0u32; blocks.len()];
    let mut returns = Vec::new();
    for b in blocks.iter() {
        let Some(code) = entries.get(b.start..b.start + b.len) else { continue };
        let mut targets = successors(code);
        if code.last().is_some_and(|(_, ins)| ins.flow_control() == FlowControl::Call) {
            // The return address is reached by a return, not from here.
            returns.extend(targets.pop());
        }
        for t in targets {
            if let Some(i) = blocks.iter().position(|x| x.rip == t) {
                ways_in[i] += 1;
            }
        }
    }
    for (i, b) in blocks.iter_mut().enumerate() {
        b.entry = i == 0 || ways_in[i] != 1 || returns.contains(&b.rip);
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::code_asm::*;

    fn decoded(code: &[u8], ip: u64) -> Vec<(Handler, Instruction)> {
        let mut d = iced_x86::Decoder::with_ip(64, code, ip, iced_x86::DecoderOptions::NONE);
        let mut v = Vec::new();
        while d.can_decode() {
            let ins = d.decode();
            v.push((super::super::exec::handler_of(&ins), ins));
        }
        v
    }

    fn assemble(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
        let mut a = CodeAssembler::new(64).unwrap();
        f(&mut a).unwrap();
        a.assemble(0x1000).unwrap()
    }

    #[test]
    fn successors_of_each_kind_of_block_end() {
        let jcc = decoded(&assemble(|a| a.jne(0x1080u64)), 0x1000);
        assert_eq!(successors(&jcc), vec![0x1080, 0x1002]);
        let jmp = decoded(&assemble(|a| a.jmp(0x1200u64)), 0x1000);
        assert_eq!(successors(&jmp), vec![0x1200]);
        let call = decoded(&assemble(|a| a.call(0x1300u64)), 0x1000);
        assert_eq!(successors(&call), vec![0x1300, 0x1005]);
        let plain = decoded(&assemble(|a| a.add(rax, rbx)), 0x1000);
        assert_eq!(successors(&plain), vec![0x1003]);
        // Indirect transfers, returns and mode changes end the region.
        for code in [assemble(|a| a.jmp(rax)), assemble(|a| a.ret()), assemble(|a| a.sti()), assemble(|a| a.jrcxz(0x1000u64))] {
            assert_eq!(successors(&decoded(&code, 0x1000)), Vec::<u64>::new());
        }
    }

    #[test]
    fn a_region_has_two_links_per_block() {
        let e = decoded(&assemble(|a| a.nop()), 0x1000);
        let blocks = vec![
            RegionBlock { rip: 0x1000, start: 0, len: 1, chain_fallthrough: true, entry: true },
            RegionBlock { rip: 0x1001, start: 1, len: 1, chain_fallthrough: true, entry: false },
        ];
        let mut entries = e.clone();
        entries.extend(e);
        let r = Region::new(entries, blocks, 0);
        assert_eq!(r.links.len(), 4);
        assert_eq!(r.entries.len(), 2);
    }

    #[test]
    fn blocks_wait_for_a_pending_region_and_only_entries_take_its_code() {
        let nop = decoded(&assemble(|a| a.nop()), 0x1000);
        let inner = decoded(&assemble(|a| a.nop()), 0x1001);
        let blocks = vec![
            RegionBlock { rip: 0x1000, start: 0, len: 1, chain_fallthrough: true, entry: true },
            RegionBlock { rip: 0x1001, start: 1, len: 1, chain_fallthrough: true, entry: false },
        ];
        let r = Region::new([nop.clone(), inner.clone()].concat(), blocks, 0);
        // Pending: the entry and the block inside both wait for the code
        // rather than queueing translations of their own.
        assert!(matches!(r.holding(0x1000, &nop), Holding::Pending));
        assert!(matches!(r.holding(0x1001, &inner), Holding::Pending));
        assert!(matches!(r.holding(0x1002, &inner), Holding::No));

        unsafe extern "C" fn code(_: *mut crate::interp::tier::JitFrame) -> u32 {
            0
        }
        let head = NativeBlock { entry: code, index: 0, generation: 0, tiered: false };
        assert!(r.installed.set(Some(head)).is_ok());
        assert!(matches!(r.holding(0x1000, &nop), Holding::Entry(NativeBlock { index: 0, .. })));
        // Installed: a block that is not an entry, dispatched to on its
        // own, is translated alone.
        assert!(matches!(r.holding(0x1001, &inner), Holding::Inside));
        // Other instructions at the same RIP (rewritten code): not held.
        assert!(matches!(r.holding(0x1000, &decoded(&assemble(|a| a.int3()), 0x1000)), Holding::No));
        assert!(matches!(r.holding(0x1001, &decoded(&assemble(|a| a.int3()), 0x1001)), Holding::No));
    }

    #[test]
    fn a_region_whose_translation_was_refused_holds_nothing() {
        let nop = decoded(&assemble(|a| a.nop()), 0x1000);
        let blocks = vec![RegionBlock { rip: 0x1000, start: 0, len: 1, chain_fallthrough: false, entry: true }];
        let r = Region::new(nop.clone(), blocks, 0);
        assert!(r.installed.set(None).is_ok());
        assert!(matches!(r.holding(0x1000, &nop), Holding::No));
    }

    #[test]
    fn miss_exits_are_allowed_in_a_burst_and_as_the_region_runs_on() {
        use super::super::tier::MISS_EXITS_BEFORE_HELPERS as BURST;
        let region = Region::new(Vec::new(), Vec::new(), 0);
        region.optimized.entry.store(0x1234, Ordering::Relaxed);
        region.optimizing.store(true, Ordering::Relaxed);
        let mut retired = 1_000_000;
        // A burst just short of the limit, then one miss per
        // INSTRUCTIONS_PER_MISS for a long time: the code stays.
        for _ in 0..BURST - 1 {
            assert!(!region.note_miss_exit(retired));
            retired += 10;
        }
        for _ in 0..10_000 {
            retired += INSTRUCTIONS_PER_MISS;
            assert!(!region.note_miss_exit(retired));
        }
        assert!(region.misses_to_interpreter());
        assert_eq!(region.optimized.entry.load(Ordering::Relaxed), 0x1234);
        // Misses closer together use up the credit: the code goes, the
        // loop may be optimised again, with helpers this time.
        let dropped = (0..BURST).position(|_| {
            retired += 100;
            region.note_miss_exit(retired)
        });
        assert!(dropped.is_some_and(|n| n < 4), "{dropped:?}");
        assert_eq!(region.optimized.entry.load(Ordering::Relaxed), 0);
        assert!(!region.optimizing.load(Ordering::Relaxed));
        assert!(!region.misses_to_interpreter());
        assert!(!region.note_miss_exit(retired + 100), "dropped once");
        assert!(!region.job(1, 0, 64, true, false, true, false).misses_to_interpreter);
    }
}
