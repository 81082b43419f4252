//! Architectural CPU state shared by every backend.
//!
//! `#[repr(C)]` so that generated code can address fields by offset. The
//! KVM backend converts to and from `kvm_regs`/`kvm_sregs`; the software
//! backends run on it directly.

/// Index of each general-purpose register in [`CpuState::gpr`], in the
/// x86 encoding order.
#[allow(missing_docs)]
pub mod reg {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
    pub const R15: usize = 15;
}

/// Index of each segment register in [`CpuState::segs`], in encoding order.
#[allow(missing_docs)]
pub mod seg {
    pub const ES: usize = 0;
    pub const CS: usize = 1;
    pub const SS: usize = 2;
    pub const DS: usize = 3;
    pub const FS: usize = 4;
    pub const GS: usize = 5;
}

/// CR0 bits.
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1 << 0;
    /// Extension type (always 1 on modern CPUs).
    pub const ET: u64 = 1 << 4;
    /// Numeric error.
    pub const NE: u64 = 1 << 5;
    /// Paging.
    pub const PG: u64 = 1 << 31;
}

/// EFER bits.
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
}

/// A segment register with its hidden descriptor cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes, already scaled by granularity.
    pub limit: u32,
    /// Visible selector.
    pub selector: u16,
    /// Descriptor type (4 bits).
    pub type_: u8,
    /// 1 for code/data, 0 for system descriptors.
    pub s: u8,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Present.
    pub present: u8,
    /// Available for software.
    pub avl: u8,
    /// 64-bit code segment.
    pub l: u8,
    /// Default operation size (1 = 32-bit).
    pub db: u8,
    /// Granularity (1 = 4 KiB units).
    pub g: u8,
    /// Loaded with a null selector (not usable).
    pub unusable: u8,
}

impl Segment {
    /// A real-mode segment for `selector`: base `selector << 4`, 64 KiB
    /// limit, read/write data (or execute/read code when `code`).
    pub fn real_mode(selector: u16, code: bool) -> Self {
        Self {
            base: u64::from(selector) << 4,
            limit: 0xffff,
            selector,
            type_: if code { 0xb } else { 0x3 },
            s: 1,
            present: 1,
            ..Self::default()
        }
    }

    /// A flat 4 GiB segment for protected or long mode.
    pub fn flat(selector: u16, code: bool, long: bool) -> Self {
        Self {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_: if code { 0xb } else { 0x3 },
            s: 1,
            dpl: 0,
            present: 1,
            avl: 0,
            l: u8::from(code && long),
            db: u8::from(!(code && long)),
            g: 1,
            unusable: 0,
        }
    }

    /// The 8-byte GDT descriptor describing this segment.
    pub fn to_descriptor(&self) -> u64 {
        let (limit, g) = if self.g != 0 { (self.limit >> 12, 1u64) } else { (self.limit, 0) };
        let base = self.base & 0xffff_ffff;
        (u64::from(limit) & 0xffff)
            | (base & 0xff_ffff) << 16
            | (u64::from(self.type_) & 0xf) << 40
            | (u64::from(self.s) & 1) << 44
            | (u64::from(self.dpl) & 3) << 45
            | (u64::from(self.present) & 1) << 47
            | (u64::from(limit) >> 16 & 0xf) << 48
            | (u64::from(self.avl) & 1) << 52
            | (u64::from(self.l) & 1) << 53
            | (u64::from(self.db) & 1) << 54
            | g << 55
            | (base >> 24) << 56
    }
}

/// GDTR or IDTR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u16,
}

/// The architectural state of one x86 CPU.
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuState {
    /// RAX..R15 in encoding order (see [`reg`]).
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// ES, CS, SS, DS, FS, GS (see [`seg`]).
    pub segs: [Segment; 6],
    /// Local descriptor table register.
    pub ldtr: Segment,
    /// Task register.
    pub tr: Segment,
    /// Global descriptor table register.
    pub gdtr: DescriptorTable,
    /// Interrupt descriptor table register.
    pub idtr: DescriptorTable,
    /// Control registers.
    pub cr0: u64,
    /// Page-fault linear address.
    pub cr2: u64,
    /// Page-table base.
    pub cr3: u64,
    /// Extensions.
    pub cr4: u64,
    /// Task priority.
    pub cr8: u64,
    /// Extended feature enable register.
    pub efer: u64,
    /// IA32_APIC_BASE.
    pub apic_base: u64,
}

impl Default for CpuState {
    fn default() -> Self {
        Self::reset()
    }
}

impl CpuState {
    /// The state after RESET: real mode at F000:FFF0 with CS base
    /// 0xFFFF0000, so the first fetch hits the top of 4 GiB (SDM Vol. 3A,
    /// 9.1.4).
    pub fn reset() -> Self {
        let data = Segment::real_mode(0, false);
        let mut cs = Segment::real_mode(0xf000, true);
        cs.base = 0xffff_0000;
        let system = |type_| Segment { limit: 0xffff, type_, present: 1, ..Segment::default() };
        let mut gpr = [0; 16];
        // EDX holds the processor signature after reset.
        gpr[reg::RDX] = 0x600;
        Self {
            gpr,
            rip: 0xfff0,
            rflags: 0x2,
            segs: [data, cs, data, data, data, data],
            ldtr: system(0x2),
            tr: system(0xb),
            gdtr: DescriptorTable { base: 0, limit: 0xffff },
            idtr: DescriptorTable { base: 0, limit: 0xffff },
            cr0: 0x6000_0010,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            apic_base: 0xfee0_0000 | 1 << 11 | 1 << 8,
        }
    }

    /// Whether the CPU is in long mode (EFER.LMA).
    pub fn long_mode(&self) -> bool {
        self.efer & efer::LMA != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_vector_is_top_of_4g() {
        let s = CpuState::reset();
        assert_eq!(s.segs[seg::CS].base + s.rip, 0xffff_fff0);
        assert_eq!(s.segs[seg::CS].selector, 0xf000);
        assert_eq!(s.cr0 & cr0::PE, 0);
    }

    #[test]
    fn flat_descriptors_encode_like_the_sdm() {
        assert_eq!(Segment::flat(0x10, true, true).to_descriptor(), 0x00af_9b00_0000_ffff);
        assert_eq!(Segment::flat(0x18, false, false).to_descriptor(), 0x00cf_9300_0000_ffff);
        assert_eq!(Segment::flat(0x08, true, false).to_descriptor(), 0x00cf_9b00_0000_ffff);
    }
}
