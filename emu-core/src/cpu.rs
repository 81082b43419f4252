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

/// The x87/SSE state in the FXSAVE memory layout (SDM Vol. 1, 10.5.1), so
/// FXSAVE/FXRSTOR are copies and KVM's `kvm_fpu` converts field by field.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FxState {
    /// x87 control word.
    pub fcw: u16,
    /// x87 status word (TOP in bits 11-13).
    pub fsw: u16,
    /// Abridged tag word: bit i set when physical register i is valid.
    pub ftw: u8,
    /// Reserved.
    pub _reserved0: u8,
    /// Last x87 opcode.
    pub fop: u16,
    /// Last x87 instruction pointer.
    pub fip: u64,
    /// Last x87 data pointer.
    pub fdp: u64,
    /// SSE control and status.
    pub mxcsr: u32,
    /// Which MXCSR bits may be set.
    pub mxcsr_mask: u32,
    /// The eight x87 data registers R0-R7 in *physical* order (ST(i) is
    /// R((TOP + i) mod 8)), 80 bits each in 16-byte slots. The
    /// architectural FXSAVE image and KVM's `kvm_fpu` hold them in stack
    /// order instead: see [`FxState::st_stack_order`].
    pub st: [[u8; 16]; 8],
    /// XMM0-XMM15.
    pub xmm: [u128; 16],
    /// Reserved and available bytes up to 512.
    pub _reserved1: [u8; 96],
}

impl Default for FxState {
    fn default() -> Self {
        Self {
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            _reserved0: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            mxcsr: 0x1f80,
            mxcsr_mask: 0xffff,
            st: [[0; 16]; 8],
            xmm: [0; 16],
            _reserved1: [0; 96],
        }
    }
}

impl FxState {
    /// TOP, the stack top, from the status word.
    pub fn top(&self) -> usize {
        usize::from((self.fsw >> 11) & 7)
    }

    /// The data registers in stack order, ST(0) first, as FXSAVE stores
    /// them.
    pub fn st_stack_order(&self) -> [[u8; 16]; 8] {
        let top = self.top();
        std::array::from_fn(|i| self.st[(top + i) & 7])
    }

    /// Sets the data registers from stack order (ST(0) first), using the
    /// current TOP.
    pub fn set_st_stack_order(&mut self, st: &[[u8; 16]; 8]) {
        let top = self.top();
        for (i, v) in st.iter().enumerate() {
            self.st[(top + i) & 7] = *v;
        }
    }

    /// This struct's 512 bytes, with the data registers in physical order
    /// (the interpreter's FXSAVE rotates them into stack order).
    pub fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&self.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&self.fsw.to_le_bytes());
        b[4] = self.ftw;
        b[6..8].copy_from_slice(&self.fop.to_le_bytes());
        b[8..16].copy_from_slice(&self.fip.to_le_bytes());
        b[16..24].copy_from_slice(&self.fdp.to_le_bytes());
        b[24..28].copy_from_slice(&self.mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&self.mxcsr_mask.to_le_bytes());
        for (i, st) in self.st.iter().enumerate() {
            b[32 + 16 * i..48 + 16 * i].copy_from_slice(st);
        }
        for (i, x) in self.xmm.iter().enumerate() {
            b[160 + 16 * i..176 + 16 * i].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    /// The inverse of [`FxState::to_bytes`].
    pub fn from_bytes(b: &[u8; 512]) -> Self {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | u64::from(u32_at(o + 4)) << 32;
        let mut st = [[0u8; 16]; 8];
        for (i, s) in st.iter_mut().enumerate() {
            s.copy_from_slice(&b[32 + 16 * i..48 + 16 * i]);
        }
        let mut xmm = [0u128; 16];
        for (i, x) in xmm.iter_mut().enumerate() {
            let mut v = [0u8; 16];
            v.copy_from_slice(&b[160 + 16 * i..176 + 16 * i]);
            *x = u128::from_le_bytes(v);
        }
        let mut reserved1 = [0u8; 96];
        reserved1.copy_from_slice(&b[416..512]);
        Self {
            fcw: u16_at(0),
            fsw: u16_at(2),
            ftw: b[4],
            _reserved0: 0,
            fop: u16_at(6),
            fip: u64_at(8),
            fdp: u64_at(16),
            mxcsr: u32_at(24),
            mxcsr_mask: u32_at(28),
            st,
            xmm,
            _reserved1: reserved1,
        }
    }
}

/// Model-specific registers a modern guest touches, beyond EFER and
/// APIC_BASE (which sit in [`CpuState`] itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msrs {
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u64,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// STAR: SYSCALL/SYSRET selectors and legacy target.
    pub star: u64,
    /// LSTAR: 64-bit SYSCALL target.
    pub lstar: u64,
    /// CSTAR: compatibility-mode SYSCALL target.
    pub cstar: u64,
    /// SFMASK: RFLAGS bits cleared by SYSCALL.
    pub sfmask: u64,
    /// KERNEL_GS_BASE, swapped by SWAPGS.
    pub kernel_gs_base: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
    /// IA32_TSC_AUX, read by RDTSCP.
    pub tsc_aux: u64,
    /// Offset added to the host TSC to give the guest's.
    pub tsc_offset: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub mtrr_def_type: u64,
    /// The fixed-range MTRRs: 64K_00000, 16K_80000, 16K_A0000, then the
    /// eight 4K ranges from C0000.
    pub mtrr_fixed: [u64; 11],
    /// The variable-range MTRRs: PHYSBASE0, PHYSMASK0, PHYSBASE1, ...
    pub mtrr_var: [u64; 16],
    /// IA32_MCG_STATUS.
    pub mcg_status: u64,
    /// IA32_MCG_CTL.
    pub mcg_ctl: u64,
    /// IA32_MCi_CTL of each machine-check bank.
    pub mc_ctl: [u64; 10],
    /// IA32_MCi_STATUS.
    pub mc_status: [u64; 10],
    /// IA32_MCi_ADDR.
    pub mc_addr: [u64; 10],
    /// IA32_MCi_MISC.
    pub mc_misc: [u64; 10],
}

impl Msrs {
    /// The memory-type ranges firmware such as SeaBIOS sets up before it
    /// boots a kernel: MTRRs enabled with write-back by default, the VGA
    /// window uncached, the option-ROM and BIOS area write-protected, and
    /// the PCI hole from `pci_hole_start` to 4 GiB uncached.
    pub fn set_firmware_mtrrs(&mut self, pci_hole_start: u64) {
        const UC: u64 = 0;
        const WP: u64 = 0x0505_0505_0505_0505;
        const WB: u64 = 0x0606_0606_0606_0606;
        self.mtrr_def_type = 1 << 11 | 1 << 10 | 6; // E, FE, write-back
        self.mtrr_fixed = [WB, WB, UC, WP, WP, WP, WP, WP, WP, WP, WP];
        self.mtrr_var = [0; 16];
        let len = (1u64 << 32).saturating_sub(pci_hole_start);
        if len.is_power_of_two() && pci_hole_start % len == 0 {
            let phys_mask = (1u64 << crate::mmu::PHYS_ADDR_BITS) - 1;
            self.mtrr_var[0] = pci_hole_start; // type UC
            self.mtrr_var[1] = (!(len - 1) & phys_mask) | 1 << 11;
        }
    }
}

/// How the arithmetic flags (CF, PF, AF, ZF, SF, OF) are held: either
/// materialised in `rflags` or as the last operation and its operands, to
/// be computed only when read (QEMU's cc_op).
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlagsOp {
    /// The flags are in `rflags`.
    #[default]
    Materialized,
    /// `res = src1 + src2`.
    Add,
    /// `res = src1 + src2 + carry`, carry in `aux`.
    Adc,
    /// `res = src1 - src2` (SUB, CMP).
    Sub,
    /// `res = src1 - src2 - borrow`, borrow in `aux`.
    Sbb,
    /// AND, OR, XOR, TEST: CF = OF = 0.
    Logic,
    /// `res = src1 + 1`; CF kept in `aux`.
    Inc,
    /// `res = src1 - 1`; CF kept in `aux`.
    Dec,
    /// `res = -src1`.
    Neg,
    /// SHL/SAL of `src1` by `src2`, a masked count that is not 0: CF is
    /// the last bit shifted out (0 past the width), OF is CF xor the
    /// result's sign (as the last step of the shift computes it), AF is
    /// clear.
    Shl,
    /// SHR of `src1` by `src2` (not 0): CF the last bit shifted out, OF
    /// the operand's sign.
    Shr,
    /// SAR of `src1` by `src2` (not 0): CF the last bit shifted out, OF
    /// clear.
    Sar,
}

/// The pending-flags record; see [`FlagsOp`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyFlags {
    /// The operation.
    pub op: FlagsOp,
    /// Operand size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// First operand.
    pub src1: u64,
    /// Second operand.
    pub src2: u64,
    /// Result, truncated to `size`.
    pub res: u64,
    /// Carry in (ADC/SBB) or the preserved CF (INC/DEC).
    pub aux: u64,
}

/// The arithmetic flags in RFLAGS.
pub mod flags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Always 1.
    pub const FIXED: u64 = 1 << 1;
    /// Parity of the low byte.
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry (bit 3 into 4).
    pub const AF: u64 = 1 << 4;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign.
    pub const SF: u64 = 1 << 7;
    /// Trap.
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction.
    pub const DF: u64 = 1 << 10;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
    /// I/O privilege level (2 bits).
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check / SMAP override.
    pub const AC: u64 = 1 << 18;
    /// Virtual interrupt flag.
    pub const VIF: u64 = 1 << 19;
    /// Virtual interrupt pending.
    pub const VIP: u64 = 1 << 20;
    /// CPUID available.
    pub const ID: u64 = 1 << 21;
    /// All six arithmetic flags.
    pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
}

impl LazyFlags {
    fn sign_bit(&self) -> u64 {
        1u64 << (u32::from(self.size.clamp(1, 8)) * 8 - 1)
    }

    fn mask(&self) -> u64 {
        match self.size {
            1 => 0xff,
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        }
    }

    /// ZF alone, without computing the other flags.
    #[inline]
    pub fn zf(&self) -> bool {
        self.res & self.mask() == 0
    }

    /// SF alone.
    #[inline]
    pub fn sf(&self) -> bool {
        self.res & self.sign_bit() != 0
    }

    /// CF alone.
    #[inline]
    pub fn cf(&self) -> bool {
        let (a, b, r) = (self.src1 & self.mask(), self.src2 & self.mask(), self.res & self.mask());
        match self.op {
            FlagsOp::Materialized | FlagsOp::Logic => false,
            FlagsOp::Add => r < a,
            FlagsOp::Adc => if self.aux & 1 != 0 { r <= a } else { r < a },
            FlagsOp::Sub => a < b,
            FlagsOp::Sbb => if self.aux & 1 != 0 { a <= b } else { a < b },
            FlagsOp::Inc | FlagsOp::Dec => self.aux & 1 != 0,
            FlagsOp::Neg => a != 0,
            FlagsOp::Shl | FlagsOp::Shr | FlagsOp::Sar => self.shift_cf(a),
        }
    }

    /// CF of a shift of `a` (masked) by `src2`: the last bit out. The
    /// count is never 0 in a record an instruction made; one that is (a
    /// state from elsewhere) is taken as 1 rather than trusted.
    fn shift_cf(&self, a: u64) -> bool {
        let bits = u64::from(self.size.clamp(1, 8)) * 8;
        let c = self.src2.clamp(1, 64);
        match self.op {
            FlagsOp::Shl => c <= bits && (a >> (bits - c)) & 1 != 0,
            FlagsOp::Shr => c <= bits && (a >> (c - 1)) & 1 != 0,
            _ => {
                let signed = ((a << (64 - bits)) as i64) >> (64 - bits);
                (signed >> (c - 1).min(63)) & 1 != 0
            }
        }
    }

    /// Computes the six arithmetic flags of the recorded operation.
    pub fn compute(&self) -> u64 {
        let (a, b, r, sign) = (self.src1 & self.mask(), self.src2 & self.mask(), self.res & self.mask(), self.sign_bit());
        let cf = self.cf();
        let of = match self.op {
            FlagsOp::Materialized | FlagsOp::Logic | FlagsOp::Sar => false,
            FlagsOp::Add | FlagsOp::Adc => (a ^ r) & (b ^ r) & sign != 0,
            FlagsOp::Sub | FlagsOp::Sbb => (a ^ b) & (a ^ r) & sign != 0,
            FlagsOp::Inc => r == sign,
            FlagsOp::Dec => r == sign - 1,
            FlagsOp::Neg => r == sign,
            FlagsOp::Shl => (r & sign != 0) != cf,
            FlagsOp::Shr => a & sign != 0,
        };
        let af = match self.op {
            FlagsOp::Materialized | FlagsOp::Logic | FlagsOp::Shl | FlagsOp::Shr | FlagsOp::Sar => false,
            FlagsOp::Inc | FlagsOp::Dec => (a ^ r) & 0x10 != 0,
            FlagsOp::Neg => (a ^ r) & 0x10 != 0,
            _ => (a ^ b ^ r) & 0x10 != 0,
        };
        let mut f = 0;
        if cf {
            f |= flags::CF;
        }
        if (r as u8).count_ones() % 2 == 0 {
            f |= flags::PF;
        }
        if af {
            f |= flags::AF;
        }
        if r == 0 {
            f |= flags::ZF;
        }
        if r & sign != 0 {
            f |= flags::SF;
        }
        if of {
            f |= flags::OF;
        }
        f
    }
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
    /// Arithmetic flags not yet folded into `rflags` (software backends
    /// only; always `Materialized` in a state handed between backends).
    pub lazy: LazyFlags,
    /// DR0-DR3, then DR6 and DR7 at indices 6 and 7 (4 and 5 alias them).
    pub dr: [u64; 8],
    /// XCR0.
    pub xcr0: u64,
    /// Other MSRs.
    pub msrs: Msrs,
    /// x87 and SSE registers.
    pub fx: FxState,
    /// Interrupts are blocked for one instruction (after STI or MOV SS).
    pub interrupt_shadow: bool,
    /// The CPU is halted, waiting for an interrupt.
    pub halted: bool,
    /// An NMI is being handled (blocks further NMIs until IRET).
    pub nmi_blocked: bool,
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
            lazy: LazyFlags::default(),
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            xcr0: 1,
            msrs: Msrs { pat: 0x0007_0406_0007_0406, misc_enable: 1, ..Msrs::default() },
            fx: FxState::default(),
            interrupt_shadow: false,
            halted: false,
            nmi_blocked: false,
        }
    }

    /// Whether the CPU is in long mode (EFER.LMA).
    pub fn long_mode(&self) -> bool {
        self.efer & efer::LMA != 0
    }

    /// RFLAGS with any lazily held arithmetic flags folded in.
    pub fn flags(&self) -> u64 {
        if self.lazy.op == FlagsOp::Materialized {
            self.rflags
        } else {
            (self.rflags & !flags::ARITH) | self.lazy.compute()
        }
    }

    /// Folds the lazy flags into `rflags`.
    pub fn materialize_flags(&mut self) {
        self.rflags = self.flags();
        self.lazy.op = FlagsOp::Materialized;
    }

    /// Sets RFLAGS outright, dropping any lazy record; bit 1 is forced on.
    pub fn set_flags(&mut self, value: u64) {
        self.rflags = value | flags::FIXED;
        self.lazy.op = FlagsOp::Materialized;
    }

    /// Current privilege level: CS.DPL in protected mode, 0 in real mode,
    /// 3 in virtual-8086 mode.
    pub fn cpl(&self) -> u8 {
        if self.cr0 & cr0::PE == 0 {
            0
        } else if self.rflags & flags::VM != 0 {
            3
        } else {
            self.segs[seg::CS].dpl & 3
        }
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
    fn lazy_flags_match_hand_computed_values() {
        let lf = |op, size, src1, src2, res, aux| LazyFlags { op, size, src1, src2, res, aux }.compute();
        // 0xff + 1 = 0x00 (8-bit): CF, ZF, AF, PF.
        assert_eq!(lf(FlagsOp::Add, 1, 0xff, 1, 0, 0), flags::CF | flags::ZF | flags::AF | flags::PF);
        // 0x7f + 1 = 0x80: OF, SF, AF.
        assert_eq!(lf(FlagsOp::Add, 1, 0x7f, 1, 0x80, 0), flags::OF | flags::SF | flags::AF);
        // 0 - 1 = 0xffff (16-bit): CF, SF, AF, PF.
        assert_eq!(lf(FlagsOp::Sub, 2, 0, 1, 0xffff, 0), flags::CF | flags::SF | flags::AF | flags::PF);
        // 0x80000000 - 1: OF (32-bit), AF.
        assert_eq!(lf(FlagsOp::Sub, 4, 0x8000_0000, 1, 0x7fff_ffff, 0), flags::OF | flags::AF | flags::PF);
        // ADC with carry: 0xffffffffffffffff + 0 + 1 = 0: CF, ZF, AF, PF.
        assert_eq!(lf(FlagsOp::Adc, 8, u64::MAX, 0, 0, 1), flags::CF | flags::ZF | flags::AF | flags::PF);
        // INC keeps CF from aux; DEC of 0x80 overflows.
        assert_eq!(lf(FlagsOp::Inc, 1, 1, 0, 2, 1) & flags::CF, flags::CF);
        assert_eq!(lf(FlagsOp::Dec, 1, 0x80, 0, 0x7f, 0) & flags::OF, flags::OF);
        // NEG 0 leaves CF clear; NEG 1 sets it.
        assert_eq!(lf(FlagsOp::Neg, 4, 0, 0, 0, 0) & flags::CF, 0);
        assert_eq!(lf(FlagsOp::Neg, 4, 1, 0, 0xffff_ffff, 0) & flags::CF, flags::CF);
        // SHL 0x81 by 1 (8-bit) = 0x02: CF out, OF = CF xor the new sign.
        assert_eq!(lf(FlagsOp::Shl, 1, 0x81, 1, 0x02, 0), flags::CF | flags::OF);
        // SHR 0x81 by 1 = 0x40: CF, OF the old sign.
        assert_eq!(lf(FlagsOp::Shr, 1, 0x81, 1, 0x40, 0), flags::CF | flags::OF);
        // SAR 0x81 by 1 = 0xc0: CF, SF, PF; OF clear.
        assert_eq!(lf(FlagsOp::Sar, 1, 0x81, 1, 0xc0, 0), flags::CF | flags::SF | flags::PF);
        // SHL of a word by 17 shifts everything out: CF clear, ZF, PF.
        assert_eq!(lf(FlagsOp::Shl, 2, 0xffff, 17, 0, 0), flags::ZF | flags::PF);
        // SHL of a word by 16: CF is bit 0.
        assert_eq!(lf(FlagsOp::Shl, 2, 0x0001, 16, 0, 0) & flags::CF, flags::CF);
        // SHR by 63: CF is bit 62.
        assert_eq!(lf(FlagsOp::Shr, 8, 1 << 63, 63, 1, 0) & flags::CF, 0);
        assert_eq!(lf(FlagsOp::Shr, 8, 3 << 62, 63, 1, 0) & flags::CF, flags::CF);
        // SAR of a negative byte past its width: CF and the result all ones.
        assert_eq!(lf(FlagsOp::Sar, 1, 0x80, 31, 0xff, 0) & (flags::CF | flags::SF), flags::CF | flags::SF);
        // A count of 0 (never recorded) does not panic.
        let _ = lf(FlagsOp::Shl, 8, 1, 0, 1, 0);
    }

    #[test]
    fn stack_order_rotates_by_top() {
        let mut fx = FxState { fsw: 5 << 11, ..FxState::default() };
        fx.st[5][0] = 0xaa; // ST(0) when TOP = 5
        fx.st[4][0] = 0xbb; // ST(7)
        let st = fx.st_stack_order();
        assert_eq!((st[0][0], st[7][0]), (0xaa, 0xbb));
        let mut back = FxState { fsw: 5 << 11, ..FxState::default() };
        back.set_st_stack_order(&st);
        assert_eq!(back.st, fx.st);
    }

    #[test]
    fn fxsave_image_round_trips() {
        let mut fx = FxState::default();
        fx.xmm[3] = 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff;
        fx.st[7][9] = 0x40;
        fx.fsw = 0x3800;
        let bytes = fx.to_bytes();
        assert_eq!(&bytes[24..28], &0x1f80u32.to_le_bytes());
        assert_eq!(FxState::from_bytes(&bytes), fx);
        assert_eq!(std::mem::size_of::<FxState>(), 512);
    }

    #[test]
    fn flat_descriptors_encode_like_the_sdm() {
        assert_eq!(Segment::flat(0x10, true, true).to_descriptor(), 0x00af_9b00_0000_ffff);
        assert_eq!(Segment::flat(0x18, false, false).to_descriptor(), 0x00cf_9300_0000_ffff);
        assert_eq!(Segment::flat(0x08, true, false).to_descriptor(), 0x00cf_9b00_0000_ffff);
    }
}
