//! Instruction fetch and the decoded-instruction cache.
//!
//! The cache is direct-mapped and keyed by the host address of the
//! instruction's first byte (which names guest-physical memory uniquely)
//! and the decoding mode, so the hot path decodes nothing. A page that
//! holds cached instructions is a code page: the TLB gives it no write tag,
//! so a guest write takes the slow path, which drops that page's entries
//! (self-modifying code). Instructions that cross a page are not cached.

use std::collections::{HashMap, HashSet};

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};

use crate::cpu::seg;
use crate::mmu::Access;

use super::fault::{Fault, R};
use super::Interpreter;

const SLOTS: usize = 1 << 16;
const PAGE: u64 = 4096;

#[derive(Clone)]
struct Slot {
    /// Host address << 2 | mode, or 0 when empty.
    key: u64,
    ins: Instruction,
}

/// Decoded instructions by host address.
pub(crate) struct CodeCache {
    slots: Vec<Slot>,
    /// For each code page (guest-physical page number), the slots used.
    pages: HashMap<u64, Vec<u32>>,
    code_pages: HashSet<u64>,
}

impl Default for CodeCache {
    fn default() -> Self {
        Self {
            slots: vec![Slot { key: 0, ins: Instruction::default() }; SLOTS],
            pages: HashMap::new(),
            code_pages: HashSet::new(),
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

fn slot_of(key: u64) -> usize {
    let h = key ^ (key >> 17) ^ (key >> 31);
    (h as usize) & (SLOTS - 1)
}

impl CodeCache {
    pub(crate) fn is_code_page(&self, phys_page: u64) -> bool {
        !self.code_pages.is_empty() && self.code_pages.contains(&phys_page)
    }

    /// Drops every cached instruction of a guest-physical page.
    pub(crate) fn invalidate_page(&mut self, phys_page: u64) {
        if let Some(slots) = self.pages.remove(&phys_page) {
            for s in slots {
                if let Some(slot) = self.slots.get_mut(s as usize) {
                    slot.key = 0;
                }
            }
        }
        self.code_pages.remove(&phys_page);
    }

    /// Drops everything (a state replacement).
    pub(crate) fn clear(&mut self) {
        for s in &mut self.slots {
            s.key = 0;
        }
        self.pages.clear();
        self.code_pages.clear();
    }

    fn get(&self, host: u64, bitness: u32) -> Option<&Instruction> {
        let key = host << 2 | mode_bits(bitness);
        let slot = &self.slots[slot_of(key)];
        (slot.key == key).then_some(&slot.ins)
    }

    /// Caches `ins`; returns true when its page just became a code page.
    fn insert(&mut self, host: u64, phys_page: u64, bitness: u32, ins: Instruction) -> bool {
        let key = host << 2 | mode_bits(bitness);
        let idx = slot_of(key);
        self.slots[idx] = Slot { key, ins };
        self.pages.entry(phys_page).or_default().push(idx as u32);
        self.code_pages.insert(phys_page)
    }
}

impl Interpreter {
    /// The decoding mode: 64 in 64-bit mode, else CS.D's 32 or 16.
    pub(crate) fn bitness(&self) -> u32 {
        if self.in_64bit_mode() {
            64
        } else if self.protected_mode() && !self.vm86() && self.s.segs[seg::CS].db != 0 {
            32
        } else if !self.protected_mode() && self.s.segs[seg::CS].db != 0 {
            32
        } else {
            16
        }
    }

    /// RIP after `len` more bytes, wrapped to the code size.
    pub(crate) fn advance_ip(&self, rip: u64, len: u64) -> u64 {
        let next = rip.wrapping_add(len);
        if self.in_64bit_mode() {
            next
        } else {
            next & 0xffff_ffff
        }
    }

    /// Fetches and decodes the instruction at CS:RIP.
    pub(crate) fn fetch(&mut self) -> R<Instruction> {
        let bitness = self.bitness();
        let rip = self.s.rip;
        let lin = self.linear_code(rip, 1)?;
        let user = self.s.cpl() == 3;
        if let Some(host) = self.tlb.lookup(lin, Access::Execute, user) {
            if let Some(ins) = self.code.get(host as u64, bitness) {
                let ins = *ins;
                self.check_code_limit(rip, ins.len() as u64)?;
                return Ok(ins);
            }
        }
        // Slow path: gather bytes up to the page end, then more if needed.
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
        // Cache it when it lies in one RAM page.
        if (lin & (PAGE - 1)) as usize + ins.len() <= PAGE as usize {
            if let Some(host) = self.tlb.lookup(lin, Access::Execute, user) {
                if let Ok(phys) = self.code_phys(lin) {
                    if self.code.insert(host as u64, phys >> 12, bitness, ins) {
                        self.tlb.protect_phys_page(phys >> 12);
                    }
                }
            }
        }
        Ok(ins)
    }

    /// The physical address of a code byte, by a walk (no side effects
    /// beyond accessed bits already set by the fetch).
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
        let last = offset.wrapping_add(len - 1);
        if last > u64::from(self.s.segs[seg::CS].limit) || last < offset {
            return Err(Fault::gp0());
        }
        Ok(())
    }

    /// Forgets all decoded instructions and translations.
    pub(crate) fn flush_code(&mut self) {
        self.code.clear();
        self.tlb.flush(false);
    }
}
