//! The one CPUID model of the software CPU: it advertises exactly what the
//! interpreter implements, so guests never pick a path it cannot run. Each
//! feature lands here in the same change that implements it.

/// BMI1 (ANDN, BEXTR, BLS*, TZCNT) is not implemented: F3 0F BC runs as BSF.
pub const BMI1: bool = false;

/// The vendor string, in EBX, EDX, ECX order.
pub const VENDOR: &[u8; 12] = b"GenuineIntel";

/// Leaf 1 EDX: PSE, TSC, MSR, PAE, CX8, SEP, PGE, CMOV, PAT, PSE-36, CLFSH,
/// and the FPU group (exec/x87*, sse*, fxsave): FPU, MMX, FXSR, SSE, SSE2.
const LEAF1_EDX: u32 = 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 8 | 1 << 11 | 1 << 13 | 1 << 15 | 1 << 16 | 1 << 17 | 1 << 19 | FPU_EDX;
/// FPU (0), MMX (23), FXSR (24), SSE (25), SSE2 (26).
const FPU_EDX: u32 = 1 << 0 | 1 << 23 | 1 << 24 | 1 << 25 | 1 << 26;
/// Leaf 1 ECX: SSE3 (bit 0, with FISTTP), CMPXCHG16B, POPCNT, running
/// under a hypervisor.
const LEAF1_ECX: u32 = 1 << 0 | 1 << 13 | 1 << 23 | 1 << 31;
/// Leaf 7 EBX: FCS and FDS deprecated (stored as zero; bit 13).
const LEAF7_EBX: u32 = 1 << 13;
/// Leaf 1 EDX bit for an on-chip APIC, set when the machine has one.
const APIC: u32 = 1 << 9;
/// Extended leaf 1 EDX: SYSCALL/SYSRET, NX, 1 GiB pages, RDTSCP, long mode.
const EXT1_EDX: u32 = 1 << 11 | 1 << 20 | 1 << 26 | 1 << 27 | 1 << 29;
/// Extended leaf 1 ECX: LAHF/SAHF in 64-bit mode, LZCNT (ABM).
const EXT1_ECX: u32 = 1 << 0 | 1 << 5;

const BRAND: &[u8; 48] = b"popek virtual CPU (interpreter)\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// What the machine around the CPU provides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    /// A local APIC is present.
    pub apic: bool,
    /// This CPU's APIC ID.
    pub apic_id: u8,
}

fn le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// CPUID for `leaf` and `subleaf`: (EAX, EBX, ECX, EDX).
pub fn cpuid(leaf: u32, subleaf: u32, platform: Platform) -> (u32, u32, u32, u32) {
    match leaf {
        0 => (7, le(&VENDOR[0..4]), le(&VENDOR[8..12]), le(&VENDOR[4..8])),
        // Family 6, model 15, stepping 1; CLFLUSH line 64 bytes; APIC ID.
        1 => {
            let edx = LEAF1_EDX | if platform.apic { APIC } else { 0 };
            (0x0000_06f1, u32::from(platform.apic_id) << 24 | 8 << 8, LEAF1_ECX, edx)
        }
        // Structured extended features: none yet.
        7 if subleaf == 0 => (0, LEAF7_EBX, 0, 0),
        7 => (0, 0, 0, 0),
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
        assert_eq!(max, 7);
        let mut v = Vec::new();
        for r in [b, d, c] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&v, VENDOR);
        let (_, _, _, edx) = cpuid(1, 0, Platform::default());
        assert_eq!(edx & APIC, 0);
        let (_, ebx, _, edx) = cpuid(1, 0, Platform { apic: true, apic_id: 3 });
        assert_ne!(edx & APIC, 0);
        assert_eq!(ebx >> 24, 3);
        assert_ne!(cpuid(0x8000_0001, 0, Platform::default()).3 & (1 << 29), 0);
    }
}
