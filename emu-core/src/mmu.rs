//! The software MMU: page walks for 32-bit, PAE and 4-level paging, and the
//! soft TLB in front of them that caches guest-virtual to host-pointer
//! translations, as the classic shadow page table does.
//!
//! The TLB is a direct-mapped array indexed by virtual page number, one for
//! supervisor and one for user accesses. Each entry has a tag per access
//! kind (read, write, execute): a hit is an index, a compare and a load,
//! which the JIT will inline. A tag is only set for an access the walk
//! allowed; the write tag only once the page's dirty bit is set and the
//! page holds no cached code, so the first write and writes to code go the
//! slow way. MMIO and ROM pages never get a write tag (ROM) or any tag
//! (MMIO).

use crate::cpu::{cr0, efer};
use crate::memory::GuestMemory;

/// How memory is being accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

/// CR4 bits the MMU looks at.
pub mod cr4 {
    /// Page-size extensions (4 MiB pages without PAE).
    pub const PSE: u64 = 1 << 4;
    /// Physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// Global pages.
    pub const PGE: u64 = 1 << 7;
    /// Supervisor-mode execution prevention.
    pub const SMEP: u64 = 1 << 20;
    /// Supervisor-mode access prevention.
    pub const SMAP: u64 = 1 << 21;
}

/// #PF error-code bits.
pub mod pf {
    /// The page was present (a protection fault).
    pub const PRESENT: u32 = 1 << 0;
    /// The access was a write.
    pub const WRITE: u32 = 1 << 1;
    /// The access was made at CPL 3.
    pub const USER: u32 = 1 << 2;
    /// A reserved bit was set in a paging entry.
    pub const RSVD: u32 = 1 << 3;
    /// The access was an instruction fetch.
    pub const FETCH: u32 = 1 << 4;
}

/// The paging controls of the current CPU state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingMode {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

impl PagingMode {
    /// Whether paging is on.
    pub fn enabled(&self) -> bool {
        self.cr0 & cr0::PG != 0 && self.cr0 & cr0::PE != 0
    }
}

/// Who is accessing, for the permission checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requester {
    /// A CPL-3 access (not an implicit supervisor access such as a GDT read).
    pub user: bool,
    /// EFLAGS.AC, which lifts SMAP for explicit supervisor accesses.
    pub ac: bool,
    /// An implicit supervisor access (descriptor tables, TSS), which SMAP
    /// checks regardless of AC.
    pub implicit: bool,
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address of the byte asked for.
    pub phys: u64,
    /// Writes are allowed (at this privilege, before dirty tracking).
    pub writable: bool,
    /// Fetches are allowed.
    pub executable: bool,
    /// The page is global (kept across CR3 writes when CR4.PGE).
    pub global: bool,
    /// The mapping's page size, for INVLPG of large pages.
    pub page_size: u64,
}

/// A walk that failed: the #PF error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The #PF error code.
    pub error_code: u32,
}

const PRESENT: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const GLOBAL: u64 = 1 << 8;
const NX: u64 = 1 << 63;
/// Physical-address bits this CPU implements (CPUID 0x80000008 says 40).
pub const PHYS_ADDR_BITS: u32 = 40;
const ADDR_MASK: u64 = ((1u64 << PHYS_ADDR_BITS) - 1) & !0xfff;

fn read_pte(mem: &GuestMemory, addr: u64, wide: bool) -> u64 {
    // Entries in unbacked memory read as all ones, which shows up as a
    // reserved-bit fault rather than a walk through garbage.
    if wide {
        mem.read_u64(addr).unwrap_or(u64::MAX)
    } else {
        mem.read_u32(addr).map(u64::from).unwrap_or(u64::MAX)
    }
}

fn set_bits(mem: &GuestMemory, addr: u64, wide: bool, old: u64, bits: u64) {
    if old & bits != bits {
        let new = old | bits;
        let _ = if wide { mem.write_u64(addr, new) } else { mem.write_u32(addr, new as u32) };
    }
}

/// Walks the page tables for `linear`, checking `access` by `who`, and
/// sets the accessed and (for writes) dirty bits as the hardware does.
pub fn translate(
    mem: &GuestMemory,
    mode: &PagingMode,
    linear: u64,
    access: Access,
    who: Requester,
) -> Result<Translation, PageFault> {
    if !mode.enabled() {
        return Ok(Translation { phys: linear & 0xffff_ffff, writable: true, executable: true, global: false, page_size: 1 << 12 });
    }
    let nxe = mode.efer & efer::NXE != 0;
    let long = mode.efer & efer::LMA != 0;
    let pae = mode.cr4 & cr4::PAE != 0;
    let mut code = match access {
        Access::Write => pf::WRITE,
        Access::Execute if nxe || long => pf::FETCH,
        _ => 0,
    };
    if who.user {
        code |= pf::USER;
    }
    let fault = |extra: u32| PageFault { error_code: code | extra };

    // Each level: (table address, index shift, index bits).
    let (mut table, levels, wide): (u64, &[u32], bool) = if long {
        (mode.cr3 & ADDR_MASK, &[39, 30, 21, 12], true)
    } else if pae {
        // The four PDPTEs are indexed by bits 31:30.
        (mode.cr3 & 0xffff_ffe0, &[30, 21, 12], true)
    } else {
        (mode.cr3 & 0xffff_f000, &[22, 12], false)
    };
    let mut user_ok = true;
    let mut write_ok = true;
    let mut exec_ok = true;
    // Entries walked, to set their accessed bits once the walk succeeds.
    let mut walked: [(u64, u64); 4] = [(0, 0); 4];
    let mut n = 0;
    for (depth, &shift) in levels.iter().enumerate() {
        let index_bits = if !wide { 10 } else if pae && !long && depth == 0 { 2 } else { 9 };
        let index = (linear >> shift) & ((1 << index_bits) - 1);
        let entry_addr = table + index * if wide { 8 } else { 4 };
        let entry = read_pte(mem, entry_addr, wide);
        if entry & PRESENT == 0 {
            return Err(fault(0));
        }
        let pdpte_legacy = pae && !long && depth == 0;
        // Reserved bits: physical bits above MAXPHYADDR, NX without NXE,
        // and the legacy PDPTE's control bits.
        let mut reserved = if wide { entry & !((1u64 << PHYS_ADDR_BITS) - 1) & !NX } else { 0 };
        if wide && !nxe {
            reserved |= entry & NX;
        }
        if pdpte_legacy {
            reserved |= entry & (RW | US | 0x1e0 | NX);
        }
        let is_leaf = shift == 12
            || (!pdpte_legacy
                && entry & PS != 0
                && (shift == 21 || (shift == 30 && long) || (shift == 22 && mode.cr4 & cr4::PSE != 0)));
        if is_leaf && shift > 12 {
            // Large-page frames must be aligned; PAT sits in bit 12.
            let align_mask = ((1u64 << shift) - 1) & !0x1fff;
            if wide {
                reserved |= entry & align_mask;
            }
        }
        if reserved != 0 {
            return Err(fault(pf::PRESENT | pf::RSVD));
        }
        if !pdpte_legacy {
            user_ok &= entry & US != 0;
            write_ok &= entry & RW != 0;
            exec_ok &= entry & NX == 0 || !nxe;
        }
        walked[n] = (entry_addr, entry);
        n += 1;
        if is_leaf {
            let offset_mask = (1u64 << shift) - 1;
            let frame = if !wide && shift == 22 {
                // PSE-36: bits 20:13 of the entry are physical bits 39:32.
                (entry & 0xffc0_0000) | ((entry >> 13) & 0xff) << 32
            } else {
                entry & ADDR_MASK & !offset_mask
            };
            let phys = frame | (linear & offset_mask);
            // Permission checks (SDM Vol. 3A, 4.6).
            let supervisor = !who.user;
            let wp = mode.cr0 & (1 << 16) != 0;
            let allowed = match access {
                Access::Read => {
                    if supervisor && user_ok && mode.cr4 & cr4::SMAP != 0 && (who.implicit || !who.ac) {
                        false
                    } else {
                        !who.user || user_ok
                    }
                }
                Access::Write => {
                    if who.user {
                        user_ok && write_ok
                    } else if user_ok && mode.cr4 & cr4::SMAP != 0 && (who.implicit || !who.ac) {
                        false
                    } else {
                        write_ok || !wp
                    }
                }
                Access::Execute => {
                    exec_ok
                        && if who.user { user_ok } else { !(user_ok && mode.cr4 & cr4::SMEP != 0) }
                }
            };
            if !allowed {
                return Err(fault(pf::PRESENT));
            }
            // Accessed on every level, dirty on the leaf for writes.
            for (i, &(addr, e)) in walked[..n].iter().enumerate() {
                if pae && !long && i == 0 {
                    continue; // legacy PDPTEs have no A bit
                }
                let bits = if i == n - 1 && access == Access::Write { ACCESSED | DIRTY } else { ACCESSED };
                set_bits(mem, addr, wide, e, bits);
            }
            let writable_here = if who.user { user_ok && write_ok } else { write_ok || !wp };
            return Ok(Translation {
                phys,
                writable: writable_here && (entry & DIRTY != 0 || access == Access::Write),
                executable: exec_ok && (!who.user || user_ok),
                global: entry & GLOBAL != 0 && mode.cr4 & cr4::PGE != 0,
                page_size: 1 << shift,
            });
        }
        table = entry & ADDR_MASK;
    }
    Err(fault(pf::PRESENT | pf::RSVD))
}

/// Number of entries in each direct-mapped TLB.
pub const TLB_ENTRIES: usize = 4096;
const INVALID: u64 = u64::MAX;

/// One TLB entry. Tags hold the virtual page number (`linear >> 12`) or
/// `INVALID`; `addend` turns a linear address into a host address. A
/// cache line each: translated code indexes the array with a shift.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub struct TlbEntry {
    /// Tag for reads.
    pub read_tag: u64,
    /// Tag for writes.
    pub write_tag: u64,
    /// Tag for fetches.
    pub exec_tag: u64,
    /// `host address - linear address` for the page.
    pub addend: u64,
    /// The guest-physical page, for invalidation by physical address.
    pub phys_page: u64,
    /// Whether the mapping is global.
    pub global: bool,
    /// log2 of the mapping's size in 4 KiB pages (0, or 9 for 2 MiB, 10
    /// for 4 MiB, 18 for 1 GiB): an INVLPG anywhere in a large page drops
    /// every 4 KiB piece of it cached here.
    pub large_shift: u8,
}

impl Default for TlbEntry {
    fn default() -> Self {
        Self {
            read_tag: INVALID,
            write_tag: INVALID,
            exec_tag: INVALID,
            addend: 0,
            phys_page: INVALID,
            global: false,
            large_shift: 0,
        }
    }
}

/// log2 of the pages [`IdentityPages`] holds (2 MiB).
pub const IDENTITY_PAGE_SHIFT: u32 = 21;
/// Pages of the first 4 GiB that [`IdentityPages`] covers.
pub const IDENTITY_PAGES: usize = 1 << (32 - IDENTITY_PAGE_SHIFT);
/// No identity page (see [`IdentityPages::tags`]): no address shifted
/// right by [`IDENTITY_PAGE_SHIFT`], canonical or not, equals it.
pub const NO_IDENTITY_PAGE: u64 = u64::MAX;

/// The 2 MiB pages below 4 GiB that the supervisor TLB holds mapped to
/// themselves in RAM (2 MiB or 1 GiB guest pages): a kernel
/// decompressor's or a bootloader's identity map. Translated loads of such
/// code look here first: one compare against a small array indexed by the
/// address, then a host load at `address + addend`, instead of the TLB's
/// entry lookup whose addend load sits between the address and the data.
/// Filled with the TLB's supervisor set, dropped with any of its flushes,
/// so it caches exactly what the TLB could.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct IdentityPages {
    /// For page `i`: `i` when it is held, [`NO_IDENTITY_PAGE`] otherwise.
    /// Native code compares the entry of its access's last byte's page
    /// (`last >> IDENTITY_PAGE_SHIFT & (IDENTITY_PAGES - 1)`) with its
    /// first byte's page: equal only when both are that held page.
    pub tags: [u64; IDENTITY_PAGES],
    /// Host address less guest address for the RAM the pages lie in.
    pub addend: u64,
    /// Where that RAM (starting at guest-physical 0) ends: 0 for none.
    ram_end: u64,
    /// The held pages mapped global (kept by a CR3 write with CR4.PGE, as
    /// the TLB keeps them), a bit each.
    global: [u64; IDENTITY_PAGES / 64],
    /// Whether any page is held.
    pub any: bool,
    /// Supervisor fills of RAM since the last full flush: of held pages,
    /// and of others (see [`IdentityPages::worth_a_look`]).
    identity_fills: u64,
    other_fills: u64,
}

/// Identity pages that hold nothing, for native code running at CPL 3
/// (the pages are the supervisor TLB's).
pub static NO_IDENTITY_PAGES: IdentityPages = IdentityPages::new();

impl IdentityPages {
    const fn new() -> Self {
        Self { tags: [NO_IDENTITY_PAGE; IDENTITY_PAGES], addend: 0, ram_end: 0, global: [0; IDENTITY_PAGES / 64], any: false, identity_fills: 0, other_fills: 0 }
    }

    /// Says where the RAM that starts at guest-physical 0 is: `ram_end`
    /// bytes at host address `host`, one mapping.
    pub fn set_ram(&mut self, host: *mut u8, ram_end: u64) {
        self.clear();
        self.addend = host as u64;
        self.ram_end = ram_end;
    }

    /// A supervisor TLB fill of `linear` (see [`Tlb::fill`]): holds its
    /// 2 MiB page when the translation maps it to itself in that RAM.
    fn note(&mut self, linear: u64, host_page: *mut u8, t: &Translation, rom: bool) {
        const SIZE: u64 = 1 << IDENTITY_PAGE_SHIFT;
        let page = linear / SIZE;
        let identity = t.page_size >= SIZE && t.phys / SIZE == page && (page + 1) * SIZE <= self.ram_end;
        if rom || host_page.is_null() {
            return;
        }
        if !identity || host_page as u64 != self.addend.wrapping_add(linear & !0xfff) {
            self.other_fills += 1;
            return;
        }
        self.identity_fills += 1;
        let Some(tag) = self.tags.get_mut(page as usize) else { return };
        *tag = page;
        if t.global {
            self.global[page as usize / 64] |= 1 << (page % 64);
        }
        self.any = true;
    }

    /// Whether code translated now should look here before the TLB: some
    /// page is held, and at least half the supervisor set's fills since
    /// the last full flush were of held pages. A look that fails costs
    /// time (a workload over 4 KiB pages, with only its first 2 MiB a
    /// large identity page, took 17% longer with it).
    pub fn worth_a_look(&self) -> bool {
        self.any && self.identity_fills >= self.other_fills
    }

    /// Holds nothing (a flush).
    fn clear(&mut self) {
        self.identity_fills = 0;
        self.other_fills = 0;
        if self.any {
            self.tags.fill(NO_IDENTITY_PAGE);
            self.global.fill(0);
            self.any = false;
        }
    }

    /// Drops the page holding `linear` (an INVLPG there).
    fn drop_page(&mut self, linear: u64) {
        let page = (linear >> IDENTITY_PAGE_SHIFT) as usize;
        if !self.any || page >= IDENTITY_PAGES {
            return;
        }
        self.global[page / 64] &= !(1 << (page % 64));
        self.tags[page] = NO_IDENTITY_PAGE;
    }

    /// Holds only the global pages (a flush that keeps global entries).
    fn keep_global(&mut self) {
        if !self.any {
            return;
        }
        for (page, tag) in self.tags.iter_mut().enumerate() {
            if self.global[page / 64] & (1 << (page % 64)) == 0 {
                *tag = NO_IDENTITY_PAGE;
            }
        }
        self.any = self.tags.iter().any(|&t| t != NO_IDENTITY_PAGE);
    }
}

/// The index of [`Tlb::epochs`] that every flush moves.
pub const EVERY_FLUSH: usize = 0;
/// The index of [`Tlb::epochs`] that only flushes of global entries move.
pub const GLOBAL_FLUSH: usize = 1;

/// The soft TLB: one array for supervisor and one for user accesses.
#[derive(Debug)]
pub struct Tlb {
    /// `[supervisor, user]`.
    pub sets: [Box<[TlbEntry]>; 2],
    /// Epochs for caches derived from translations (the interpreter's
    /// jump cache, the JIT's hop table), so they know when to drop
    /// theirs: `[EVERY_FLUSH]` moves with every flush, `[GLOBAL_FLUSH]`
    /// only with those that drop global entries too. An entry derived
    /// from a global translation goes by the second: a CR3 write with
    /// CR4.PGE keeps it, as it keeps the TLB's global entries (the kernel
    /// switched address spaces 17 k times a boot, each time emptying the
    /// caches of kernel code).
    pub epochs: [u64; 2],
    /// Lookups that hit and missed, for `--stats` (`Cell`s: lookups take
    /// `&self`).
    pub hits: std::cell::Cell<u64>,
    /// See `hits`.
    pub misses: std::cell::Cell<u64>,
    /// Full flushes (CR3, CR0, CR4, EFER) and single-page ones (INVLPG),
    /// for `--stats`.
    pub flushes: u64,
    /// See `flushes`.
    pub page_flushes: u64,
    /// The supervisor set's identity-mapped 2 MiB pages.
    pub identity: IdentityPages,
    /// Per set, the entries filled since they were last cleared, so a
    /// flush clears those rather than both whole arrays (half a MiB, and a
    /// guest that switches address spaces often fills few entries in
    /// between).
    filled: [Filled; 2],
    /// The linear pages (hashed, one bit each) for which caches validated
    /// by `epoch` hold entries made since it last moved. An INVLPG of a
    /// page outside them leaves those caches valid: the kernel's
    /// `text_poke` invalidates its poking page tens of thousands of times
    /// a boot, none of them a code page.
    derived: [u64; DERIVED_WORDS],
    /// The large pages (first 4 KiB page number, `large_shift`) that may
    /// have pieces cached since the last full flush, so an INVLPG outside
    /// all of them touches one entry; `None` once more than
    /// `LARGE_TRACKED` were seen (INVLPG then scans).
    large: Option<Vec<(u64, u8)>>,
}

/// Large pages tracked for INVLPG before it falls back to a scan.
const LARGE_TRACKED: usize = 64;

/// Entries tracked per set for a flush before it falls back to clearing
/// the whole set.
const FILLED_TRACKED: usize = 1024;

/// Words in [`Tlb::derived`]'s bitmap.
const DERIVED_WORDS: usize = 64;

/// The indices of a set's entries filled with global and with non-global
/// translations since those were last cleared: a CR3 write (keeping
/// globals) walks the non-global list alone, however many global kernel
/// pages stay. An index may be listed twice, or in both lists after a
/// refill; a list is `None` once more than `FILLED_TRACKED` were added,
/// and the set is then scanned instead.
#[derive(Debug)]
struct Filled {
    local: Option<Vec<u16>>,
    global: Option<Vec<u16>>,
}

impl Filled {
    fn new() -> Self {
        Self { local: Some(Vec::new()), global: Some(Vec::new()) }
    }

    fn note(&mut self, index: usize, global: bool) {
        let list = if global { &mut self.global } else { &mut self.local };
        if let Some(l) = list {
            if l.len() < FILLED_TRACKED {
                l.push(index as u16);
            } else {
                *list = None;
            }
        }
    }
}

/// Calls `f` on the entries of `set` at `indices`, or on all of them when
/// there is no list to go by (it overflowed).
fn for_each_listed<'a>(set: &mut [TlbEntry], indices: Option<impl Iterator<Item = &'a u16>>, mut f: impl FnMut(&mut TlbEntry)) {
    match indices {
        Some(indices) => {
            for &index in indices {
                if let Some(e) = set.get_mut(usize::from(index)) {
                    f(e);
                }
            }
        }
        None => set.iter_mut().for_each(f),
    }
}

/// Calls `f` on the entries of `set` that either of `filled`'s lists names,
/// or on all of them when one overflowed.
fn for_each_filled(set: &mut [TlbEntry], filled: &Filled, f: impl FnMut(&mut TlbEntry)) {
    let both = filled.local.as_ref().zip(filled.global.as_ref()).map(|(l, g)| l.iter().chain(g));
    for_each_listed(set, both, f);
}

/// Whether `e` holds a translation for any access.
fn holds_any(e: &TlbEntry) -> bool {
    e.read_tag != INVALID || e.write_tag != INVALID || e.exec_tag != INVALID
}

impl Default for Tlb {
    fn default() -> Self {
        Self::new()
    }
}

impl Tlb {
    /// An empty TLB.
    pub fn new() -> Self {
        let empty = || vec![TlbEntry::default(); TLB_ENTRIES].into_boxed_slice();
        Self {
            sets: [empty(), empty()],
            epochs: [0; 2],
            hits: Default::default(),
            misses: Default::default(),
            flushes: 0,
            page_flushes: 0,
            identity: IdentityPages::new(),
            filled: [Filled::new(), Filled::new()],
            derived: [0; DERIVED_WORDS],
            large: Some(Vec::new()),
        }
    }

    fn index(vpn: u64) -> usize {
        (vpn as usize) & (TLB_ENTRIES - 1)
    }

    /// The host address for `linear` if the TLB holds it for `access`.
    #[inline]
    pub fn lookup(&self, linear: u64, access: Access, user: bool) -> Option<*mut u8> {
        let vpn = linear >> 12;
        let e = &self.sets[usize::from(user)][Self::index(vpn)];
        let tag = match access {
            Access::Read => e.read_tag,
            Access::Write => e.write_tag,
            Access::Execute => e.exec_tag,
        };
        if tag == vpn {
            self.hits.set(self.hits.get() + 1);
            Some(linear.wrapping_add(e.addend) as *mut u8)
        } else {
            self.misses.set(self.misses.get() + 1);
            None
        }
    }

    /// Records a translation of the page of `linear` to the host page at
    /// `host_page` (null for MMIO, which is never cached).
    #[allow(clippy::too_many_arguments)]
    pub fn fill(&mut self, linear: u64, host_page: *mut u8, phys_page: u64, t: &Translation, user: bool, rom: bool, code_page: bool) {
        let vpn = linear >> 12;
        let index = Self::index(vpn);
        if !user {
            self.identity.note(linear, host_page, t, rom);
        }
        let e = &mut self.sets[usize::from(user)][index];
        if host_page.is_null() {
            *e = TlbEntry::default();
            return;
        }
        if !holds_any(e) || e.global != t.global {
            self.filled[usize::from(user)].note(index, t.global);
        }
        // An entry holds one page: keep other tags only for the same page.
        if e.read_tag != vpn && e.write_tag != vpn && e.exec_tag != vpn {
            *e = TlbEntry::default();
        }
        e.addend = (host_page as u64).wrapping_sub(vpn << 12);
        e.phys_page = phys_page;
        e.global = t.global;
        e.large_shift = (t.page_size >> 12).max(1).trailing_zeros() as u8;
        let shift = e.large_shift;
        if shift != 0 {
            if let Some(list) = &mut self.large {
                let base = vpn >> shift << shift;
                if !list.contains(&(base, shift)) {
                    if list.len() < LARGE_TRACKED {
                        list.push((base, shift));
                    } else {
                        self.large = None;
                    }
                }
            }
        }
        e.read_tag = vpn;
        e.write_tag = if t.writable && !rom && !code_page { vpn } else { INVALID };
        e.exec_tag = if t.executable { vpn } else { INVALID };
    }

    /// Drops everything (CR0/CR4/EFER changes), or everything but global
    /// entries (a CR3 write with CR4.PGE).
    pub fn flush(&mut self, keep_global: bool) {
        if keep_global {
            // Entries derived from global translations stay valid, and
            // their pages stay noted for INVLPG.
            self.epochs[EVERY_FLUSH] += 1;
            self.identity.keep_global();
        } else {
            self.bump_epoch();
            self.identity.clear();
        }
        self.flushes += 1;
        if !keep_global {
            self.large = Some(Vec::new());
        }
        for (set, filled) in self.sets.iter_mut().zip(&mut self.filled) {
            // A listed entry refilled with a global page since is in the
            // global list too.
            let local = filled.local.replace(Vec::new());
            for_each_listed(set, local.as_ref().map(|l| l.iter()), |e| {
                if !(keep_global && e.global) {
                    *e = TlbEntry::default();
                }
            });
            if !keep_global {
                let global = filled.global.replace(Vec::new());
                for_each_listed(set, global.as_ref().map(|l| l.iter()), |e| *e = TlbEntry::default());
            }
        }
    }

    /// Moves both epochs: every cache validated by them is stale now.
    fn bump_epoch(&mut self) {
        self.epochs[EVERY_FLUSH] += 1;
        self.epochs[GLOBAL_FLUSH] += 1;
        self.derived = [0; DERIVED_WORDS];
    }

    /// The epoch that moves with every flush.
    pub fn epoch(&self) -> u64 {
        self.epochs[EVERY_FLUSH]
    }

    /// Which of [`Tlb::epochs`] a cache entry for code fetched at `linear`
    /// goes by: [`GLOBAL_FLUSH`] when the TLB holds it for fetching from a
    /// global mapping.
    pub fn code_epoch(&self, linear: u64, user: bool) -> usize {
        let vpn = linear >> 12;
        let e = &self.sets[usize::from(user)][Self::index(vpn)];
        if e.exec_tag == vpn && e.global {
            GLOBAL_FLUSH
        } else {
            EVERY_FLUSH
        }
    }

    fn derived_bit(linear: u64) -> (usize, u64) {
        let vpn = linear >> 12;
        let hash = (vpn ^ vpn >> 12) as usize % (DERIVED_WORDS * 64);
        (hash / 64, 1 << (hash % 64))
    }

    /// Says that a cache validated by `epoch` (the interpreter's jump
    /// cache, the JIT's hop table) now holds an entry for code in the page
    /// of `linear`, so an INVLPG of that page must move the epoch.
    pub fn note_derived(&mut self, linear: u64) {
        let (word, bit) = Self::derived_bit(linear);
        self.derived[word] |= bit;
    }

    fn derived_from(&self, linear: u64) -> bool {
        let (word, bit) = Self::derived_bit(linear);
        self.derived[word] & bit != 0
    }

    /// INVLPG: drops the entries for the page of `linear`, and, since large
    /// pages are cached a 4 KiB piece at a time, every piece of a large
    /// page that contains it (global or not, as the SDM says).
    pub fn flush_page(&mut self, linear: u64) {
        self.page_flushes += 1;
        self.identity.drop_page(linear);
        let vpn = linear >> 12;
        // Scan for large-page pieces only when a large page cached here
        // holds `vpn` (it is forgotten: its pieces all go now), or when
        // too many were seen to track.
        let scan = match &mut self.large {
            None => true,
            Some(list) => {
                let before = list.len();
                list.retain(|&(base, shift)| vpn >> shift << shift != base);
                list.len() != before
            }
        };
        // A large page drops as a whole, with whatever code cached from
        // its other 4 KiB pieces.
        if scan || self.derived_from(linear) {
            self.bump_epoch();
        }
        for (set, filled) in self.sets.iter_mut().zip(&self.filled) {
            let e = &mut set[Self::index(vpn)];
            if e.read_tag == vpn || e.write_tag == vpn || e.exec_tag == vpn {
                *e = TlbEntry::default();
            }
            if scan {
                let drop_piece = |e: &mut TlbEntry| {
                    let shift = u32::from(e.large_shift);
                    if shift != 0 && e.read_tag != INVALID && e.read_tag >> shift == vpn >> shift {
                        *e = TlbEntry::default();
                    }
                };
                for_each_filled(set, filled, drop_piece);
            }
        }
    }

    /// Stops direct writes to a physical page (it now holds cached code).
    pub fn protect_phys_page(&mut self, phys_page: u64) {
        for (set, filled) in self.sets.iter_mut().zip(&self.filled) {
            let protect = |e: &mut TlbEntry| {
                if e.phys_page == phys_page {
                    e.write_tag = INVALID;
                }
            };
            for_each_filled(set, filled, protect);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_pages_follow_supervisor_fills_of_large_pages_mapped_to_themselves() {
        const MB2: u64 = 2 << 20;
        let ram = vec![0u8; 64 << 20];
        let host = ram.as_ptr() as *mut u8;
        let mut tlb = Tlb::new();
        tlb.identity.set_ram(host, 64 << 20);
        let fill = |tlb: &mut Tlb, linear: u64, phys: u64, size: u64, user: bool, global: bool| {
            let t = Translation { phys, writable: true, executable: true, global, page_size: size };
            // SAFETY: within `ram` (the test only passes such addresses).
            let page = unsafe { host.add((phys & !0xfff) as usize) };
            tlb.fill(linear, page, phys >> 12, &t, user, false, false);
        };
        fill(&mut tlb, 3 * MB2 + 0x1234, 3 * MB2 + 0x1234, MB2, false, false);
        assert_eq!(tlb.identity.tags[3], 3);
        assert!(tlb.identity.worth_a_look());
        // Not: a 4 KiB page, elsewhere, for user code, beyond the RAM.
        fill(&mut tlb, 4 * MB2, 4 * MB2, 4096, false, false);
        fill(&mut tlb, 5 * MB2, 6 * MB2, MB2, false, false);
        fill(&mut tlb, 7 * MB2, 7 * MB2, MB2, true, false);
        fill(&mut tlb, 40 * MB2, 8 * MB2, MB2, false, false);
        assert_eq!(tlb.identity.tags[4..8], [NO_IDENTITY_PAGE; 4]);
        // Most fills were of other pages: translated code would mostly
        // look in vain.
        assert!(!tlb.identity.worth_a_look());
        // A 1 GiB page holds the 2 MiB piece filled.
        fill(&mut tlb, 9 * MB2 + 8, 9 * MB2 + 8, 1 << 30, false, true);
        assert_eq!(tlb.identity.tags[9], 9);
        // INVLPG drops its page; a CR3 write keeps global ones; a full
        // flush drops everything.
        fill(&mut tlb, 10 * MB2, 10 * MB2, MB2, false, false);
        tlb.flush_page(10 * MB2 + 0x5000);
        assert_eq!(tlb.identity.tags[10], NO_IDENTITY_PAGE);
        tlb.flush(true);
        assert_eq!((tlb.identity.tags[3], tlb.identity.tags[9]), (NO_IDENTITY_PAGE, 9));
        assert!(tlb.identity.any);
        tlb.flush(false);
        assert!(!tlb.identity.any && tlb.identity.tags.iter().all(|&t| t == NO_IDENTITY_PAGE));
        drop(ram);
    }

    const SUP: Requester = Requester { user: false, ac: false, implicit: false };
    const USR: Requester = Requester { user: true, ac: false, implicit: false };

    fn long_mode() -> PagingMode {
        PagingMode { cr0: cr0::PE | cr0::PG | (1 << 16), cr3: 0x1000, cr4: cr4::PAE, efer: efer::LME | efer::LMA | efer::NXE }
    }

    /// PML4 at 0x1000 → PDPT 0x2000 → PD 0x3000 → PT 0x4000; maps
    /// 0x40_0000 (4 KiB, user, read-only) to 0x8000 and 0x20_0000 as a
    /// 2 MiB supervisor page at 0x60_0000.
    fn tables(mem: &GuestMemory) {
        mem.write_u64(0x1000, 0x2000 | 0x7).unwrap();
        mem.write_u64(0x2000, 0x3000 | 0x7).unwrap();
        mem.write_u64(0x3000 + 8 * 2, 0x4000 | 0x7).unwrap();
        mem.write_u64(0x4000, 0x8000 | 0x5).unwrap();
        mem.write_u64(0x3000 + 8, 0x60_0000 | 0x83 | NX).unwrap();
    }

    #[test]
    fn four_level_walk_sets_accessed_and_dirty() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        tables(&mem);
        let t = translate(&mem, &long_mode(), 0x40_0123, Access::Read, USR).unwrap();
        assert_eq!(t.phys, 0x8123);
        assert!(!t.writable);
        assert_eq!(mem.read_u64(0x4000).unwrap() & ACCESSED, ACCESSED);
        assert_eq!(mem.read_u64(0x1000).unwrap() & ACCESSED, ACCESSED);
        // A user write to a read-only page: present | write | user.
        let f = translate(&mem, &long_mode(), 0x40_0000, Access::Write, USR).unwrap_err();
        assert_eq!(f.error_code, pf::PRESENT | pf::WRITE | pf::USER);
        // Supervisor writes ignore R/W unless CR0.WP.
        let mut no_wp = long_mode();
        no_wp.cr0 &= !(1 << 16);
        translate(&mem, &no_wp, 0x40_0000, Access::Write, SUP).unwrap();
        assert_eq!(mem.read_u64(0x4000).unwrap() & DIRTY, DIRTY);
    }

    #[test]
    fn large_pages_nx_and_not_present() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        tables(&mem);
        let t = translate(&mem, &long_mode(), 0x21_2345, Access::Write, SUP).unwrap();
        assert_eq!(t.phys, 0x61_2345);
        assert_eq!(t.page_size, 2 << 20);
        let f = translate(&mem, &long_mode(), 0x20_0000, Access::Execute, SUP).unwrap_err();
        assert_eq!(f.error_code, pf::PRESENT | pf::FETCH);
        let f = translate(&mem, &long_mode(), 0x20_0000, Access::Read, USR).unwrap_err();
        assert_eq!(f.error_code, pf::PRESENT | pf::USER);
        let f = translate(&mem, &long_mode(), 0x7000_0000, Access::Read, SUP).unwrap_err();
        assert_eq!(f.error_code, 0);
    }

    #[test]
    fn reserved_bits_fault() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        tables(&mem);
        mem.write_u64(0x4000, 0x8000 | 0x5 | 1 << 45).unwrap();
        let f = translate(&mem, &long_mode(), 0x40_0000, Access::Read, SUP).unwrap_err();
        assert_eq!(f.error_code, pf::PRESENT | pf::RSVD);
    }

    #[test]
    fn legacy_32_bit_with_4m_pages() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        let mode = PagingMode { cr0: cr0::PE | cr0::PG, cr3: 0x1000, cr4: cr4::PSE, efer: 0 };
        mem.write_u32(0x1000 + 4, 0x40_0000 | 0x83).unwrap(); // 4 MiB page at 4 MiB
        mem.write_u32(0x1000, 0x2000 | 0x3).unwrap();
        mem.write_u32(0x2000 + 4 * 5, 0x9000 | 0x3).unwrap();
        assert_eq!(translate(&mem, &mode, 0x45_6789, Access::Read, SUP).unwrap().phys, 0x45_6789);
        assert_eq!(translate(&mem, &mode, 0x5abc, Access::Write, SUP).unwrap().phys, 0x9abc);
        // Without PSE the PS bit is ignored: the PDE points at a page
        // table (at 4 MiB, all zeros), so the page is not present.
        let no_pse = PagingMode { cr4: 0, ..mode };
        assert_eq!(translate(&mem, &no_pse, 0x40_0000, Access::Read, SUP).unwrap_err().error_code, 0);
    }

    #[test]
    fn pae_walk_uses_four_pdptes() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        let mode = PagingMode { cr0: cr0::PE | cr0::PG, cr3: 0x1000, cr4: cr4::PAE, efer: 0 };
        mem.write_u64(0x1000 + 8 * 3, 0x2000 | 1).unwrap();
        mem.write_u64(0x2000 + 8 * 511, 0x3000 | 3).unwrap();
        mem.write_u64(0x3000 + 8 * 511, 0xa000 | 3).unwrap();
        assert_eq!(translate(&mem, &mode, 0xffff_f123, Access::Read, SUP).unwrap().phys, 0xa123);
        // RW in a legacy PDPTE is reserved.
        mem.write_u64(0x1000 + 8 * 3, 0x2000 | 3).unwrap();
        assert_eq!(translate(&mem, &mode, 0xffff_f123, Access::Read, SUP).unwrap_err().error_code, pf::PRESENT | pf::RSVD);
    }

    #[test]
    fn smep_and_smap() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        tables(&mem);
        mem.write_u64(0x4000, 0x8000 | 0x7).unwrap();
        let mut mode = long_mode();
        mode.cr4 |= cr4::SMEP | cr4::SMAP;
        assert!(translate(&mem, &mode, 0x40_0000, Access::Execute, SUP).is_err());
        assert!(translate(&mem, &mode, 0x40_0000, Access::Read, SUP).is_err());
        let ac = Requester { ac: true, ..SUP };
        assert!(translate(&mem, &mode, 0x40_0000, Access::Read, ac).is_ok());
        assert!(translate(&mem, &mode, 0x40_0000, Access::Read, Requester { implicit: true, ..ac }).is_err());
    }

    #[test]
    fn tlb_hits_and_flushes() {
        let mut tlb = Tlb::new();
        let t = Translation { phys: 0x8000, writable: false, executable: true, global: true, page_size: 4096 };
        let host = 0x7000_0000usize as *mut u8;
        tlb.fill(0x40_0000, host, 0x8, &t, false, false, false);
        assert_eq!(tlb.lookup(0x40_0010, Access::Read, false), Some(0x7000_0010usize as *mut u8));
        assert_eq!(tlb.lookup(0x40_0010, Access::Write, false), None);
        assert_eq!(tlb.lookup(0x40_0010, Access::Read, true), None);
        tlb.flush(true);
        assert!(tlb.lookup(0x40_0010, Access::Read, false).is_some());
        tlb.flush_page(0x40_0fff);
        assert!(tlb.lookup(0x40_0010, Access::Read, false).is_none());
        let w = Translation { writable: true, ..t };
        tlb.fill(0x40_0000, host, 0x8, &w, false, false, false);
        assert!(tlb.lookup(0x40_0000, Access::Write, false).is_some());
        tlb.protect_phys_page(0x8);
        assert!(tlb.lookup(0x40_0000, Access::Write, false).is_none());
        assert!(tlb.lookup(0x40_0000, Access::Read, false).is_some());
    }

    /// Fills `pages` 4 KiB pages from `first` (supervisor, writable).
    fn fill_pages(tlb: &mut Tlb, first: u64, pages: u64, global: bool) {
        let t = Translation { phys: 0, writable: true, executable: true, global, page_size: 4096 };
        for i in 0..pages {
            let lin = first + (i << 12);
            tlb.fill(lin, 0x7000_0000usize as *mut u8, lin >> 12, &t, false, false, false);
        }
    }

    fn held(tlb: &Tlb, first: u64, pages: u64) -> u64 {
        (0..pages).filter(|i| tlb.lookup(first + (i << 12), Access::Read, false).is_some()).count() as u64
    }

    #[test]
    fn flushes_clear_what_was_filled_whether_tracked_or_not() {
        for pages in [3, FILLED_TRACKED as u64 + 100, TLB_ENTRIES as u64 - 2] {
            let mut tlb = Tlb::new();
            fill_pages(&mut tlb, 0x100_0000, pages, true);
            fill_pages(&mut tlb, 0x100_0000 + (pages << 12), 2, false);
            tlb.flush(true);
            assert_eq!(held(&tlb, 0x100_0000, pages), pages, "globals stay ({pages} filled)");
            assert_eq!(held(&tlb, 0x100_0000 + (pages << 12), 2), 0, "the rest goes ({pages} filled)");
            tlb.flush(true);
            assert_eq!(held(&tlb, 0x100_0000, pages), pages, "and stay again");
            tlb.flush(false);
            assert_eq!(held(&tlb, 0x100_0000, pages), 0, "a full flush drops globals ({pages} filled)");
            assert!(tlb.sets.iter().flat_map(|s| s.iter()).all(|e| !holds_any(e)));
        }
    }

    #[test]
    fn protecting_a_page_reaches_entries_tracked_or_not() {
        for pages in [4, FILLED_TRACKED as u64 + 100] {
            let mut tlb = Tlb::new();
            fill_pages(&mut tlb, 0x100_0000, pages, false);
            let last = 0x100_0000 + ((pages - 1) << 12);
            tlb.protect_phys_page(last >> 12);
            assert!(tlb.lookup(last, Access::Write, false).is_none());
            assert!(tlb.lookup(last, Access::Read, false).is_some());
            assert!(tlb.lookup(0x100_0000, Access::Write, false).is_some());
        }
    }

    #[test]
    fn invlpg_moves_the_epoch_only_for_pages_with_derived_entries() {
        let mut tlb = Tlb::new();
        fill_pages(&mut tlb, 0x100_0000, 4, false);
        let epoch = tlb.epoch();
        // A data page (text_poke's poking page, say): the caches derived
        // from translations hold nothing for it.
        tlb.flush_page(0x100_2000);
        assert_eq!(tlb.epoch(), epoch);
        assert!(tlb.lookup(0x100_2000, Access::Read, false).is_none(), "the entry itself goes");
        tlb.note_derived(0x100_0123);
        tlb.flush_page(0x100_1000);
        assert_eq!(tlb.epoch(), epoch, "another page");
        tlb.flush_page(0x100_0fff);
        assert_eq!(tlb.epoch(), epoch + 1, "the code page");
        // The epoch moved: every derived entry is stale, none is noted.
        tlb.flush_page(0x100_0000);
        assert_eq!(tlb.epoch(), epoch + 1);
        // Any page of a large page cached since the last flush moves it:
        // the whole large page goes, with code cached from its other pieces.
        let big = Translation { phys: 0x20_0000, writable: true, executable: true, global: false, page_size: 2 << 20 };
        tlb.fill(0x20_0000, 0x7000_0000usize as *mut u8, 0x200, &big, false, false, false);
        tlb.flush_page(0x3f_f000);
        assert_eq!(tlb.epoch(), epoch + 2);
        tlb.flush(true);
        assert_eq!(tlb.epoch(), epoch + 3, "full flushes always move it");
        let global = tlb.epochs[GLOBAL_FLUSH];
        assert_eq!(global, epoch + 2, "but one that keeps global entries not the global epoch");
        tlb.flush(false);
        assert_eq!(tlb.epochs, [epoch + 4, global + 1]);
    }

    #[test]
    fn invlpg_drops_every_cached_piece_of_a_large_page_and_nothing_else() {
        let mut tlb = Tlb::new();
        let host = 0x7000_0000usize as *mut u8;
        let big = Translation { phys: 0x20_0000, writable: true, executable: true, global: true, page_size: 2 << 20 };
        let small = Translation { page_size: 4096, global: false, ..big };
        // Two 4 KiB pieces of the global 2 MiB page at 0x20_0000, and an
        // unrelated 4 KiB page.
        tlb.fill(0x20_0000, host, 0x200, &big, false, false, false);
        tlb.fill(0x3f_f000, host, 0x3ff, &big, false, false, false);
        tlb.fill(0x80_0000, host, 0x800, &small, false, false, false);
        tlb.flush_page(0x21_0000);
        assert!(tlb.lookup(0x20_0000, Access::Read, false).is_none());
        assert!(tlb.lookup(0x3f_f000, Access::Read, false).is_none());
        assert!(tlb.lookup(0x80_0000, Access::Read, false).is_some(), "other pages stay");
    }

    #[test]
    fn invlpg_outside_tracked_large_pages_keeps_their_pieces() {
        let mut tlb = Tlb::new();
        let host = 0x7000_0000usize as *mut u8;
        let big = Translation { phys: 0x20_0000, writable: true, executable: true, global: false, page_size: 2 << 20 };
        let small = Translation { page_size: 4096, ..big };
        tlb.fill(0x20_0000, host, 0x200, &big, false, false, false);
        tlb.fill(0x80_0000, host, 0x800, &small, false, false, false);
        tlb.flush_page(0x80_0000);
        assert!(tlb.lookup(0x80_0000, Access::Read, false).is_none());
        assert!(tlb.lookup(0x20_0000, Access::Read, false).is_some(), "the large page is not touched");
        // More large pages than are tracked: INVLPG scans, still exact.
        for i in 0..LARGE_TRACKED as u64 + 2 {
            let at = 0x4000_0000 + (i << 21);
            tlb.fill(at, host, at >> 12, &big, false, false, false);
        }
        assert!(tlb.large.is_none());
        tlb.flush_page(0x20_1000);
        assert!(tlb.lookup(0x20_0000, Access::Read, false).is_none());
        let last = 0x4000_0000 + ((LARGE_TRACKED as u64 + 1) << 21);
        assert!(tlb.lookup(last, Access::Read, false).is_some());
        // A full flush starts tracking again.
        tlb.flush(false);
        assert_eq!(tlb.large.as_deref(), Some(&[][..]));
    }
}
