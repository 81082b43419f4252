//! The one CPUID model of the software CPU: it advertises exactly what the
//! interpreter implements, so guests never pick a path it cannot run. Each
//! feature lands here in the same change that implements it.

/// BMI1 (ANDN, BEXTR, BLS*, TZCNT) is not implemented: F3 0F BC runs as BSF.
pub const BMI1: bool = false;

/// The vendor string, in EBX, EDX, ECX order.
pub const VENDOR: &[u8; 12] = b"GenuineIntel";

/// Leaf 1 EDX: PSE, TSC, MSR, PAE, MCE, CX8, SEP, MTRR, PGE, MCA, CMOV,
/// PAT, PSE-36, CLFSH (the MSRs in exec/msr), and the FPU group
/// (exec/x87*, sse*, fxsave): FPU, MMX, FXSR, SSE, SSE2.
const LEAF1_EDX: u32 = 1 << 3
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 7
    | 1 << 8
    | 1 << 11
    | 1 << 12
    | 1 << 13
    | 1 << 14
    | 1 << 15
    | 1 << 16
    | 1 << 17
    | 1 << 19
    | FPU_EDX;
/// FPU (0), MMX (23), FXSR (24), SSE (25), SSE2 (26).
const FPU_EDX: u32 = 1 << 0 | 1 << 23 | 1 << 24 | 1 << 25 | 1 << 26;
/// Leaf 1 ECX: SSE3 (bit 0, with FISTTP), SSSE3 (9), CMPXCHG16B (13),
/// SSE4.1 (19), SSE4.2 (20, with CRC32), POPCNT (23), running under a
/// hypervisor (31).
const LEAF1_ECX: u32 = 1 << 0 | 1 << 9 | 1 << 13 | 1 << 19 | 1 << 20 | 1 << 23 | 1 << 31;
/// Leaf 1 ECX: XSAVE (26, exec/xsave); OSXSAVE (27) mirrors CR4.OSXSAVE.
const XSAVE_ECX: u32 = 1 << 26;
const OSXSAVE_ECX: u32 = 1 << 27;
/// The XSAVE-managed state components, CPUID.(0DH,0):EDX:EAX and the
/// XCR0 bits XSETBV accepts: x87 (0) and SSE (1), no AVX.
pub const XCR0_SUPPORTED: u64 = 0b11;
/// The XSAVE area's size for any XCR0: the 512-byte legacy region and
/// the 64-byte header, with no extended components after them (in either
/// format).
pub const XSAVE_AREA_SIZE: u32 = 576;
/// CPUID.(0DH,1):EAX: XSAVEOPT (0) and XSAVEC (1); not XGETBV with ECX = 1
/// (2) nor XSAVES/IA32_XSS (3).
const LEAF_D1_EAX: u32 = 1 << 0 | 1 << 1;
/// The highest basic leaf.
const MAX_BASIC_LEAF: u32 = 0x16;
/// The TSC's (and the core crystal's) frequency: the software CPU's TSC
/// counts the machine clock's nanoseconds.
pub const TSC_HZ: u32 = 1_000_000_000;
/// Leaf 7 EBX: FCS and FDS deprecated (stored as zero; bit 13).
const LEAF7_EBX: u32 = 1 << 13;
/// Leaf 7 EDX: IA32_ARCH_CAPABILITIES (29).
const LEAF7_EDX: u32 = 1 << 29;
/// Leaf 1 ECX: the local APIC's TSC-deadline timer mode (24).
const TSC_DEADLINE_ECX: u32 = 1 << 24;
/// Leaf 1 EDX bit for an on-chip APIC, set when the machine has one.
const APIC: u32 = 1 << 9;
/// Extended leaf 1 EDX: SYSCALL/SYSRET, NX, 1 GiB pages, RDTSCP, long mode.
const EXT1_EDX: u32 = 1 << 11 | 1 << 20 | 1 << 26 | 1 << 27 | 1 << 29;
/// Extended leaf 1 ECX: LAHF/SAHF in 64-bit mode, LZCNT (ABM).
const EXT1_ECX: u32 = 1 << 0 | 1 << 5;

/// The brand string (leaves 0x8000_0002..4): the same CPU model under the
/// interpreter and the JIT, which share this CPUID.
const BRAND: &[u8; 48] = b"popek virtual CPU (software)\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// What the machine around the CPU provides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    /// A local APIC is present.
    pub apic: bool,
    /// This CPU's APIC ID.
    pub apic_id: u8,
    /// CR4.OSXSAVE, which CPUID.1:ECX bit 27 reflects.
    pub osxsave: bool,
    /// The local APIC has the TSC-deadline timer mode and the CPU reaches
    /// it through IA32_TSC_DEADLINE.
    pub tsc_deadline: bool,
}

fn le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// CPUID for `leaf` and `subleaf`: (EAX, EBX, ECX, EDX).
pub fn cpuid(leaf: u32, subleaf: u32, platform: Platform) -> (u32, u32, u32, u32) {
    match leaf {
        // Leaves 2-6, 8-0CH and 0EH-14H read as zeros (the catch-all arm below).
        0 => (MAX_BASIC_LEAF, le(&VENDOR[0..4]), le(&VENDOR[8..12]), le(&VENDOR[4..8])),
        // Family 6, model 15, stepping 1; CLFLUSH line 64 bytes; APIC ID.
        1 => {
            let edx = LEAF1_EDX | if platform.apic { APIC } else { 0 };
            let ecx = LEAF1_ECX
                | XSAVE_ECX
                | if platform.osxsave { OSXSAVE_ECX } else { 0 }
                | if platform.apic && platform.tsc_deadline { TSC_DEADLINE_ECX } else { 0 };
            (0x0000_06f1, u32::from(platform.apic_id) << 24 | 8 << 8, ecx, edx)
        }
        // Structured extended features.
        7 if subleaf == 0 => (0, LEAF7_EBX, 0, LEAF7_EDX),
        7 => (0, 0, 0, 0),
        // XSAVE: the components, and the area size for the enabled ones
        // (EBX) and for all (ECX), which are the same here.
        0xd if subleaf == 0 => (XCR0_SUPPORTED as u32, XSAVE_AREA_SIZE, XSAVE_AREA_SIZE, (XCR0_SUPPORTED >> 32) as u32),
        // EBX: the compacted size for XCR0 | IA32_XSS, which Linux reads
        // whenever XSAVEC is advertised (its XCOMPACTED path): x87 and SSE
        // live in the legacy region, so it is the same 576 bytes.
        0xd if subleaf == 1 => (LEAF_D1_EAX, XSAVE_AREA_SIZE, 0, 0),
        // No component 2 or above (subleaves 0-1 describe 0 and 1).
        0xd => (0, 0, 0, 0),
        // The TSC and the core crystal: a 1 GHz crystal at ratio 1/1, so
        // the kernel knows the TSC's frequency (and the local APIC timer's,
        // which the crystal feeds) without calibrating against the PIT,
        // which an interpreter's timing would make unreliable.
        0x15 => (1, 1, TSC_HZ, 0),
        // Base, maximum and bus frequency in MHz.
        0x16 => (TSC_HZ / 1_000_000, TSC_HZ / 1_000_000, 100, 0),
        0x8000_0000 => (0x8000_0008, 0, 0, 0),
        0x8000_0001 => (0, 0, EXT1_ECX, EXT1_EDX),
        0x8000_0002..=0x8000_0004 => {
            let off = ((leaf - 0x8000_0002) * 16) as usize;
            let b = &BRAND[off..off + 16];
            (le(&b[0..4]), le(&b[4..8]), le(&b[8..12]), le(&b[12..16]))
        }
        // 40 physical and 48 linear address bits.
        0x8000_0008 => (crate::mmu::PHYS_ADDR_BITS | 48 << 8, 0, 0, 0),
        // Leaves above the maximum return the highest basic leaf's data on
        // Intel; zeros are what most software expects and checks for.
        _ => (0, 0, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_and_features() {
        let (max, b, c, d) = cpuid(0, 0, Platform::default());
        assert_eq!(max, 0x16);
        assert_eq!(cpuid(0x15, 0, Platform::default()), (1, 1, 1_000_000_000, 0), "TSC at 1 GHz");
        let mut v = Vec::new();
        for r in [b, d, c] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&v, VENDOR);
        let (_, _, _, edx) = cpuid(1, 0, Platform::default());
        assert_eq!(edx & APIC, 0);
        let (_, ebx, _, edx) = cpuid(1, 0, Platform { apic: true, apic_id: 3, ..Platform::default() });
        assert_ne!(edx & APIC, 0);
        assert_eq!(ebx >> 24, 3);
        assert_ne!(cpuid(0x8000_0001, 0, Platform::default()).3 & (1 << 29), 0);
    }

    #[test]
    fn xsave_leaves() {
        // XSAVE always; OSXSAVE only with CR4.OSXSAVE.
        let ecx = cpuid(1, 0, Platform::default()).2;
        assert_eq!(ecx & (XSAVE_ECX | OSXSAVE_ECX), XSAVE_ECX);
        let ecx = cpuid(1, 0, Platform { osxsave: true, ..Platform::default() }).2;
        assert_eq!(ecx & (XSAVE_ECX | OSXSAVE_ECX), XSAVE_ECX | OSXSAVE_ECX);
        assert_eq!(cpuid(0xd, 0, Platform::default()), (3, 576, 576, 0));
        // EBX: the compacted size, read by Linux when XSAVEC is there.
        assert_eq!(cpuid(0xd, 1, Platform::default()), (0b11, 576, 0, 0));
        for sub in [2, 3, 9, 63] {
            assert_eq!(cpuid(0xd, sub, Platform::default()), (0, 0, 0, 0));
        }
        for leaf in 8..=0xc {
            assert_eq!(cpuid(leaf, 0, Platform::default()), (0, 0, 0, 0));
        }
    }
}
