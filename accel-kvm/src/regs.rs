//! Conversions between popek's [`CpuState`] and KVM's register structures.

use emu_core::cpu::{reg, seg};
use emu_core::{CpuState, DescriptorTable, Segment};
use emu_core::FxState;
use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};

fn to_kvm_segment(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present,
        dpl: s.dpl,
        db: s.db,
        s: s.s,
        l: s.l,
        g: s.g,
        avl: s.avl,
        unusable: s.unusable,
        padding: 0,
    }
}

fn from_kvm_segment(s: &kvm_segment) -> Segment {
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        s: s.s,
        dpl: s.dpl,
        present: s.present,
        avl: s.avl,
        l: s.l,
        db: s.db,
        g: s.g,
        unusable: s.unusable,
    }
}

fn to_kvm_dtable(t: &DescriptorTable) -> kvm_dtable {
    kvm_dtable { base: t.base, limit: t.limit, padding: [0; 3] }
}

/// The general registers of `s` as `kvm_regs`.
pub fn to_kvm_regs(s: &CpuState) -> kvm_regs {
    let g = &s.gpr;
    kvm_regs {
        rax: g[reg::RAX],
        rbx: g[reg::RBX],
        rcx: g[reg::RCX],
        rdx: g[reg::RDX],
        rsi: g[reg::RSI],
        rdi: g[reg::RDI],
        rsp: g[reg::RSP],
        rbp: g[reg::RBP],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: s.rip,
        // A software backend may hold the arithmetic flags lazily.
        rflags: s.flags(),
    }
}

/// The system registers of `s` as `kvm_sregs`, keeping `base`'s interrupt
/// bitmap.
pub fn to_kvm_sregs(s: &CpuState, base: &kvm_sregs) -> kvm_sregs {
    kvm_sregs {
        es: to_kvm_segment(&s.segs[seg::ES]),
        cs: to_kvm_segment(&s.segs[seg::CS]),
        ss: to_kvm_segment(&s.segs[seg::SS]),
        ds: to_kvm_segment(&s.segs[seg::DS]),
        fs: to_kvm_segment(&s.segs[seg::FS]),
        gs: to_kvm_segment(&s.segs[seg::GS]),
        ldt: to_kvm_segment(&s.ldtr),
        tr: to_kvm_segment(&s.tr),
        gdt: to_kvm_dtable(&s.gdtr),
        idt: to_kvm_dtable(&s.idtr),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
        interrupt_bitmap: base.interrupt_bitmap,
    }
}

/// Builds a [`CpuState`] from KVM's registers.
pub fn from_kvm(r: &kvm_regs, s: &kvm_sregs) -> CpuState {
    let mut gpr = [0u64; 16];
    gpr[reg::RAX] = r.rax;
    gpr[reg::RCX] = r.rcx;
    gpr[reg::RDX] = r.rdx;
    gpr[reg::RBX] = r.rbx;
    gpr[reg::RSP] = r.rsp;
    gpr[reg::RBP] = r.rbp;
    gpr[reg::RSI] = r.rsi;
    gpr[reg::RDI] = r.rdi;
    gpr[8..16].copy_from_slice(&[r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15]);
    CpuState {
        gpr,
        rip: r.rip,
        rflags: r.rflags,
        segs: [&s.es, &s.cs, &s.ss, &s.ds, &s.fs, &s.gs].map(from_kvm_segment),
        ldtr: from_kvm_segment(&s.ldt),
        tr: from_kvm_segment(&s.tr),
        gdtr: DescriptorTable { base: s.gdt.base, limit: s.gdt.limit },
        idtr: DescriptorTable { base: s.idt.base, limit: s.idt.limit },
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
        ..CpuState::reset()
    }
}

/// The x87/SSE state as `kvm_fpu`.
pub fn to_kvm_fpu(fx: &FxState) -> kvm_fpu {
    let mut xmm = [[0u8; 16]; 16];
    for (dst, src) in xmm.iter_mut().zip(fx.xmm.iter()) {
        *dst = src.to_le_bytes();
    }
    kvm_fpu {
        // KVM holds the data registers in stack order, as FXSAVE does.
        fpr: fx.st_stack_order(),
        fcw: fx.fcw,
        fsw: fx.fsw,
        ftwx: fx.ftw,
        last_opcode: fx.fop,
        last_ip: fx.fip,
        last_dp: fx.fdp,
        xmm,
        mxcsr: fx.mxcsr,
        ..Default::default()
    }
}

/// The x87/SSE state from `kvm_fpu`.
pub fn from_kvm_fpu(f: &kvm_fpu) -> FxState {
    let mut fx = FxState {
        fcw: f.fcw,
        fsw: f.fsw,
        ftw: f.ftwx,
        fop: f.last_opcode,
        fip: f.last_ip,
        fdp: f.last_dp,
        mxcsr: f.mxcsr,
        xmm: f.xmm.map(u128::from_le_bytes),
        ..FxState::default()
    };
    fx.set_st_stack_order(&f.fpr);
    fx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_kvm_structures() {
        let mut s = CpuState::reset();
        for (i, g) in s.gpr.iter_mut().enumerate() {
            *g = 0x1000 + i as u64;
        }
        s.segs[seg::FS] = Segment::flat(0x30, false, false);
        s.cr3 = 0x9000;
        s.efer = 0x500;
        let back = from_kvm(&to_kvm_regs(&s), &to_kvm_sregs(&s, &kvm_sregs::default()));
        assert_eq!(back, s);
    }

    #[test]
    fn fpu_round_trips_through_kvm_fpu() {
        let mut fx = FxState::default();
        fx.xmm[15] = 42 << 64 | 7;
        fx.st[0][0] = 1;
        fx.st[3][0] = 3;
        fx.fsw = 0x1234; // TOP = 2
        let k = to_kvm_fpu(&fx);
        assert_eq!(k.fpr[1][0], 3, "ST(1) is physical R3 when TOP = 2");
        assert_eq!(from_kvm_fpu(&k), fx);
    }
}
