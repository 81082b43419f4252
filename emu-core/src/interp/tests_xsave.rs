//! Tests of the XSAVE feature set (exec/xsave.rs): XCR0, the save and
//! restore instructions in both formats, their faults, and a comparison
//! of XSAVE, XSAVEC and XRSTOR with the host CPU (an x86-64 with XSAVE)
//! over the x87 and SSE components.

use iced_x86::code_asm::*;

use super::tests::long_mode_cpu;
use super::tests_fpu::ExecPage;
use super::*;
use crate::cpu::{reg, seg, FxState};

/// The XSAVE area in the guest (64-byte aligned); `rsi` points at it.
const AREA: u64 = 0x20_0000;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXSAVE: u64 = 1 << 18;
const COMPACTED: u64 = 1 << 63;
/// What fills the area before a save, so untouched bytes show.
const FILL: u8 = 0xa5;
const FILL64: u64 = 0xa5a5_a5a5_a5a5_a5a5;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn asm(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.assemble(0x1_0000).unwrap()
}

/// A 64-bit CPU at `code` with SSE and XSAVE enabled, XCR0 = x87 | SSE,
/// RSI at the area and EDX:EAX = `mask`.
fn cpu_for(code: &[u8], mask: u64) -> Interpreter {
    let mut cpu = long_mode_cpu(code);
    cpu.s.cr4 |= CR4_OSFXSR | CR4_OSXSAVE;
    cpu.s.xcr0 = 3;
    cpu.s.gpr[reg::RSI] = AREA;
    cpu.s.gpr[reg::RAX] = mask & 0xffff_ffff;
    cpu.s.gpr[reg::RDX] = mask >> 32;
    cpu
}

fn read_area(cpu: &Interpreter) -> [u8; 576] {
    let mut b = [0u8; 576];
    cpu.mem.read(AREA, &mut b).unwrap();
    b
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A random x87 and SSE state, neither component in its initial
/// configuration, as an FXSAVE image (stack order). Exceptions stay
/// masked and flagged clear so nothing is pending; FIP and FDP fit in 32
/// bits when `narrow`.
fn random_state(rng: &mut Rng, narrow: bool) -> [u8; 512] {
    let ptr_mask = if narrow { 0xffff_ffff } else { 0x7fff_ffff_ffff };
    let mut fx = FxState {
        fcw: 0x037f | (rng.next() as u16 & 0x0f00),
        fsw: (rng.next() as u16 & 0x4700) | (rng.next() as u16 & 7) << 11,
        ftw: rng.next() as u8 | 1,
        fop: rng.next() as u16 & 0x7ff,
        fip: rng.next() & ptr_mask,
        fdp: rng.next() & ptr_mask,
        mxcsr: 0x1f80 | (rng.next() as u32 & 0x6040) | 1,
        ..FxState::default()
    };
    for st in fx.st.iter_mut() {
        st[..8].copy_from_slice(&rng.next().to_le_bytes());
        st[8..10].copy_from_slice(&(rng.next() as u16).to_le_bytes());
    }
    for x in fx.xmm.iter_mut() {
        *x = u128::from(rng.next()) << 64 | u128::from(rng.next());
    }
    let mut b = fx.to_bytes();
    b[464..].fill(0);
    b
}

/// Bytes 0-415 of two FXSAVE images, as compared: the data registers'
/// reserved bytes are left out.
fn fx_view(b: &[u8]) -> Vec<u8> {
    let mut v = b[..32].to_vec();
    for i in 0..8 {
        v.extend_from_slice(&b[32 + 16 * i..42 + 16 * i]);
    }
    v.extend_from_slice(&b[160..416]);
    v
}

/// An XSAVE area: `legacy` then a header with XSTATE_BV and XCOMP_BV.
fn area_with(legacy: &[u8; 512], xstate_bv: u64, xcomp_bv: u64) -> [u8; 576] {
    let mut a = [0u8; 576];
    a[..512].copy_from_slice(legacy);
    a[512..520].copy_from_slice(&xstate_bv.to_le_bytes());
    a[520..528].copy_from_slice(&xcomp_bv.to_le_bytes());
    a
}

// ---------------------------------------------------------------------
// XCR0, CPUID and CR4.

#[test]
fn xsetbv_and_xgetbv() {
    let set = asm(|a| a.xsetbv());
    let get = asm(|a| a.xgetbv());
    let run = |code: &[u8], osxsave: bool, index: u64, value: u64| {
        let mut cpu = cpu_for(code, value);
        if !osxsave {
            cpu.s.cr4 &= !CR4_OSXSAVE;
        }
        cpu.s.xcr0 = 1;
        cpu.s.gpr[reg::RCX] = index;
        let r = cpu.execute_block(1);
        (r, cpu)
    };
    // Without CR4.OSXSAVE both are invalid opcodes.
    assert_eq!(run(&set, false, 0, 3).0, Err(Fault::ud()));
    assert_eq!(run(&get, false, 0, 0).0, Err(Fault::ud()));
    // XCR0 = x87 | SSE, read back.
    let (r, cpu) = run(&set, true, 0, 3);
    assert_eq!(r, Ok(()));
    assert_eq!(cpu.s.xcr0, 3);
    let (r, cpu) = run(&get, true, 0, 0);
    assert_eq!(r, Ok(()));
    assert_eq!((cpu.s.gpr[reg::RAX], cpu.s.gpr[reg::RDX]), (1, 0));
    // x87 alone is valid; clearing x87, AVX or anything above is not.
    assert_eq!(run(&set, true, 0, 1).0, Ok(()));
    for bad in [0, 2, 7, 4 | 3, 1 << 32 | 3, 1 << 63 | 3] {
        let (r, cpu) = run(&set, true, 0, bad);
        assert_eq!(r, Err(Fault::gp0()), "XCR0 = {bad:#x}");
        assert_eq!(cpu.s.xcr0, 1);
    }
    // Only XCR0 exists (XGETBV's ECX = 1 is not advertised); the upper
    // half of RCX is ignored.
    assert_eq!(run(&set, true, 1, 3).0, Err(Fault::gp0()));
    assert_eq!(run(&get, true, 1, 0).0, Err(Fault::gp0()));
    assert_eq!(run(&get, true, 1 << 32, 0).0, Ok(()));
    // XSETBV needs CPL 0; XGETBV runs at any CPL.
    for (code, expect) in [(&set, Err(Fault::gp0())), (&get, Ok(()))] {
        let mut cpu = cpu_for(code, 3);
        // User pages, so CPL 3 can fetch.
        cpu.mem.write_u64(0x1000, 0x2007).unwrap();
        cpu.mem.write_u64(0x2000, 0x3007).unwrap();
        for i in 0..8u64 {
            cpu.mem.write_u64(0x3000 + 8 * i, (i << 21) | 0x87).unwrap();
        }
        cpu.s.segs[seg::CS].dpl = 3;
        cpu.s.segs[seg::CS].selector |= 3;
        cpu.s.segs[seg::SS].dpl = 3;
        cpu.s.segs[seg::SS].selector |= 3;
        cpu.s.gpr[reg::RCX] = 0;
        assert_eq!(cpu.execute_block(1), expect);
    }
}

#[test]
fn cpuid_osxsave_follows_cr4_and_cr4_accepts_it() {
    let code = asm(|a| {
        a.cpuid()?;
        a.mov(rax, cr4)?;
        a.or(rax, 1 << 18)?;
        a.mov(cr4, rax)?;
        a.mov(eax, 1)?;
        a.cpuid()
    });
    let mut cpu = cpu_for(&code, 1);
    cpu.s.cr4 &= !CR4_OSXSAVE;
    cpu.execute_block(1).unwrap();
    let features = cpu.s.gpr[reg::RCX];
    assert_eq!(features & (3 << 26), 1 << 26, "XSAVE without OSXSAVE: {features:#x}");
    for _ in 0..5 {
        cpu.execute_block(1).unwrap();
    }
    assert_ne!(cpu.s.cr4 & CR4_OSXSAVE, 0);
    assert_eq!(cpu.s.gpr[reg::RCX] & (3 << 26), 3 << 26);
    // Leaf 0DH through the instruction.
    let code = asm(|a| a.cpuid());
    let mut cpu = cpu_for(&code, 0xd);
    cpu.s.gpr[reg::RCX] = 0;
    cpu.execute_block(1).unwrap();
    let g = &cpu.s.gpr;
    assert_eq!((g[reg::RAX], g[reg::RBX], g[reg::RCX], g[reg::RDX]), (3, 576, 576, 0));
}

// ---------------------------------------------------------------------
// Saving.

/// Runs the save in `code` with `mask` from `state` over a FILL-ed area;
/// returns the area and the state's FXSAVE image.
fn save(code: &[u8], mask: u64, xcr0: u64, state: &[u8; 512]) -> ([u8; 576], [u8; 512]) {
    let mut cpu = cpu_for(code, mask);
    cpu.s.xcr0 = xcr0;
    cpu.load_fx_image(state);
    cpu.mem.write(AREA, &[FILL; 576]).unwrap();
    cpu.execute_block(1).unwrap();
    (read_area(&cpu), cpu.fx_image())
}

#[test]
fn xsave_writes_requested_components_and_xstate_bv() {
    let mut rng = Rng(7);
    let xsave64 = asm(|a| a.xsave64(ptr(rsi)));
    let xsaveopt64 = asm(|a| a.xsaveopt64(ptr(rsi)));
    let fill = [FILL; 576];
    for _ in 0..20 {
        let state = random_state(&mut rng, false);
        for code in [&xsave64, &xsaveopt64] {
            // Both components: the legacy region is the FXSAVE image.
            let (area, img) = save(code, 3, 3, &state);
            assert_eq!(area[..416], img[..416]);
            assert_eq!(area[416..512], fill[416..512], "bytes 416-511 untouched");
            assert_eq!(u64_at(&area, 512), FILL64 & !3 | 3);
            assert_eq!(area[520..], fill[520..], "the rest of the header untouched");
            // x87 alone: MXCSR and the XMM registers untouched, XSTATE_BV[1]
            // kept.
            let (area, img) = save(code, 1, 3, &state);
            assert_eq!(area[..24], img[..24]);
            assert_eq!(area[24..32], fill[24..32]);
            assert_eq!(area[32..160], img[32..160]);
            assert_eq!(area[160..512], fill[160..512]);
            assert_eq!(u64_at(&area, 512), FILL64 & !3 | 1);
            // The same through XCR0 = x87 with EDX:EAX all ones.
            assert_eq!(save(code, u64::MAX, 1, &state).0, area);
            // SSE alone: MXCSR (and MXCSR_MASK) with the XMM registers.
            let (area, img) = save(code, 2, 3, &state);
            assert_eq!(area[..24], fill[..24]);
            assert_eq!(area[24..32], img[24..32]);
            assert_eq!(area[28..32], 0xffffu32.to_le_bytes(), "MXCSR_MASK");
            assert_eq!(area[32..160], fill[32..160]);
            assert_eq!(area[160..416], img[160..416]);
            assert_eq!(u64_at(&area, 512), FILL64 & !3 | 3);
            // Nothing requested: only XSTATE_BV's requested bits (none).
            assert_eq!(save(code, 0, 3, &state).0, fill);
        }
    }
    // Components in their initial configuration are saved but marked so.
    let init = FxState::default();
    let mut init_img = init.to_bytes();
    init_img[464..].fill(0);
    let (area, img) = save(&xsave64, 3, 3, &init_img);
    assert_eq!(area[..416], img[..416]);
    assert_eq!(u64_at(&area, 512), FILL64 & !3);
    // Without REX.W: 32-bit FIP and FDP, FCS and FDS zero.
    let xsave32 = asm(|a| a.xsave(ptr(rsi)));
    let state = random_state(&mut rng, false);
    let (area, img) = save(&xsave32, 3, 3, &state);
    assert_eq!(area[..12], img[..12]);
    assert_eq!(area[12..16], [0; 4]);
    assert_eq!(area[16..20], img[16..20]);
    assert_eq!(area[20..24], [0; 4]);
    assert_eq!(area[24..416], img[24..416]);
}

#[test]
fn xsavec_writes_the_compacted_format_with_the_init_optimisation() {
    let mut rng = Rng(11);
    let xsavec64 = asm(|a| a.xsavec64(ptr(rsi)));
    let fill = [FILL; 576];
    for _ in 0..20 {
        let state = random_state(&mut rng, false);
        let (area, img) = save(&xsavec64, 3, 3, &state);
        assert_eq!(area[..416], img[..416]);
        assert_eq!(area[416..512], fill[416..512]);
        assert_eq!((u64_at(&area, 512), u64_at(&area, 520)), (3, 3 | COMPACTED));
        assert_eq!(area[528..], fill[528..], "header bytes 63:16 untouched");
        let (area, _) = save(&xsavec64, 2, 3, &state);
        assert_eq!(area[..24], fill[..24]);
        assert_eq!((u64_at(&area, 512), u64_at(&area, 520)), (2, 2 | COMPACTED));
        let (area, _) = save(&xsavec64, 0, 3, &state);
        assert_eq!(area[..512], fill[..512]);
        assert_eq!((u64_at(&area, 512), u64_at(&area, 520)), (0, COMPACTED));
    }
    // x87 in its initial configuration is not written; SSE with zero XMM
    // registers but a non-initial MXCSR is.
    let mut fx = FxState { mxcsr: 0x9f80, ..FxState::default() };
    let mut state = fx.to_bytes();
    state[464..].fill(0);
    let (area, img) = save(&xsavec64, 3, 3, &state);
    assert_eq!(area[..24], fill[..24]);
    assert_eq!(area[32..160], fill[32..160]);
    assert_eq!(area[24..32], img[24..32]);
    assert_eq!(area[160..416], [0; 256]);
    assert_eq!((u64_at(&area, 512), u64_at(&area, 520)), (2, 3 | COMPACTED));
    // Both initial: neither is written.
    fx.mxcsr = 0x1f80;
    let mut state = fx.to_bytes();
    state[464..].fill(0);
    let (area, _) = save(&xsavec64, 3, 3, &state);
    assert_eq!(area[..512], fill[..512]);
    assert_eq!((u64_at(&area, 512), u64_at(&area, 520)), (0, 3 | COMPACTED));
}

// ---------------------------------------------------------------------
// Restoring.

/// Runs `code` from `state` with `area` at AREA; returns the result and
/// the final state's image.
fn restore(code: &[u8], mask: u64, state: &[u8; 512], area: &[u8; 576]) -> (Result<(), Fault>, [u8; 512]) {
    let mut cpu = cpu_for(code, mask);
    cpu.load_fx_image(state);
    cpu.mem.write(AREA, area).unwrap();
    let r = cpu.execute_block(1);
    (r, cpu.fx_image())
}

#[test]
fn save_restore_round_trips() {
    let mut rng = Rng(3);
    // Save, initialise the requested components from an all-initial area
    // at +0x400, restore; each step checked.
    type Save = fn(&mut CodeAssembler) -> Result<(), IcedError>;
    let forms: [(&str, Save, Save, bool); 4] = [
        ("xsave64", |a| a.xsave64(ptr(rsi)), |a| a.xrstor64(ptr(rsi + 0x400)), false),
        ("xsaveopt64", |a| a.xsaveopt64(ptr(rsi)), |a| a.xrstor64(ptr(rsi + 0x400)), false),
        ("xsavec64", |a| a.xsavec64(ptr(rsi)), |a| a.xrstor64(ptr(rsi + 0x400)), false),
        ("xsave", |a| a.xsave(ptr(rsi)), |a| a.xrstor(ptr(rsi + 0x400)), true),
    ];
    for (name, save_ins, init_ins, narrow) in forms {
        let code = asm(|a| {
            save_ins(a)?;
            init_ins(a)?;
            if narrow { a.xrstor(ptr(rsi)) } else { a.xrstor64(ptr(rsi)) }
        });
        for i in 0..40 {
            let mask = [3, 1, 2, u64::MAX][i % 4];
            let state = random_state(&mut rng, narrow);
            let mut cpu = cpu_for(&code, mask);
            cpu.load_fx_image(&state);
            let before = cpu.fx_image();
            cpu.mem.write(AREA + 0x400, &[0u8; 576]).unwrap();
            for _ in 0..3 {
                cpu.execute_block(1).unwrap_or_else(|e| panic!("{name} mask {mask:#x}: {e:?}"));
                if cpu.s.rip == 0x1_0000 + code.len() as u64 {
                    break;
                }
            }
            assert_eq!(cpu.s.rip, 0x1_0000 + code.len() as u64, "{name}");
            assert_eq!(fx_view(&cpu.fx_image()), fx_view(&before), "{name} mask {mask:#x}");
        }
    }
}

#[test]
fn xrstor_initialises_components_with_xstate_bv_clear() {
    let mut rng = Rng(5);
    let xrstor64 = asm(|a| a.xrstor64(ptr(rsi)));
    let xmm = 160..416;
    for _ in 0..10 {
        let state = random_state(&mut rng, false);
        let mut legacy = random_state(&mut rng, false);
        legacy[24..28].copy_from_slice(&0x1fa0u32.to_le_bytes());
        let mxcsr = |img: &[u8; 512]| u32::from_le_bytes(img[24..28].try_into().unwrap());
        let x87_init = |img: &[u8; 512]| {
            assert_eq!(img[..4], [0x7f, 0x03, 0, 0]);
            assert_eq!(img[4..24], [0; 20]);
            assert!((0..8).all(|i| img[32 + 16 * i..42 + 16 * i] == [0; 10]));
        };
        // Standard form, everything initialised; MXCSR still loaded.
        let (r, img) = restore(&xrstor64, 3, &state, &area_with(&legacy, 0, 0));
        r.unwrap();
        x87_init(&img);
        assert_eq!(img[xmm.clone()], [0; 256]);
        assert_eq!(mxcsr(&img), 0x1fa0);
        // Compacted form: MXCSR initialised too.
        let (r, img) = restore(&xrstor64, 3, &state, &area_with(&legacy, 0, 3 | COMPACTED));
        r.unwrap();
        x87_init(&img);
        assert_eq!(mxcsr(&img), 0x1f80);
        // Compacted without SSE in the format: SSE is initialised even
        // though XSTATE_BV... cannot name it; x87 is loaded.
        let (r, img) = restore(&xrstor64, 3, &state, &area_with(&legacy, 1, 1 | COMPACTED));
        r.unwrap();
        assert_eq!(fx_view(&img)[..24], fx_view(&legacy)[..24]);
        assert_eq!(img[32..160], legacy[32..160]);
        assert_eq!(img[xmm.clone()], [0; 256]);
        assert_eq!(mxcsr(&img), 0x1f80);
        // Standard, SSE requested and initialised: x87 untouched.
        let (r, img) = restore(&xrstor64, 2, &state, &area_with(&legacy, 1, 0));
        r.unwrap();
        assert_eq!(fx_view(&img)[..24], fx_view(&state)[..24]);
        assert_eq!(img[xmm.clone()], [0; 256]);
        assert_eq!(mxcsr(&img), 0x1fa0);
        // x87 alone: MXCSR is not loaded, so its reserved bits do not fault.
        let mut bad = legacy;
        bad[24..28].copy_from_slice(&0x1_0000u32.to_le_bytes());
        let (r, img) = restore(&xrstor64, 1, &state, &area_with(&bad, 0, 0));
        r.unwrap();
        x87_init(&img);
        assert_eq!(img[24..28], state[24..28]);
        assert_eq!(img[xmm.clone()], state[xmm.clone()]);
        // Restored components take the area's values (FCW's reserved
        // bits as FXRSTOR: bit 6 set).
        let mut l2 = legacy;
        l2[0..2].copy_from_slice(&0x0f3fu16.to_le_bytes());
        let (r, img) = restore(&xrstor64, 3, &state, &area_with(&l2, 3, 0));
        r.unwrap();
        assert_eq!(img[0..2], 0x0f7fu16.to_le_bytes());
        assert_eq!(img[2..24], l2[2..24]);
        assert_eq!(img[xmm.clone()], l2[xmm.clone()]);
    }
}

// ---------------------------------------------------------------------
// Faults.

/// The image of `state` once loaded, unchanged (through a NOP).
fn loaded(state: &[u8; 512]) -> [u8; 512] {
    restore(&[0x90], 0, state, &[0; 576]).1
}

#[test]
fn faults() {
    use crate::cpu::cr0;
    const TS: u64 = 8;
    const EM: u64 = 4;
    let all: [(&str, Vec<u8>); 6] = [
        ("xsave64", asm(|a| a.xsave64(ptr(rsi)))),
        ("xsaveopt64", asm(|a| a.xsaveopt64(ptr(rsi)))),
        ("xsavec64", asm(|a| a.xsavec64(ptr(rsi)))),
        ("xrstor64", asm(|a| a.xrstor64(ptr(rsi)))),
        ("xsave", asm(|a| a.xsave(ptr(rsi)))),
        ("xrstor", asm(|a| a.xrstor(ptr(rsi)))),
    ];
    let good = area_with(&FxState::default().to_bytes(), 0, 0);
    for (name, code) in &all {
        let run = |f: &dyn Fn(&mut Interpreter)| {
            let mut cpu = cpu_for(code, 3);
            cpu.mem.write(AREA, &good).unwrap();
            f(&mut cpu);
            cpu.execute_block(1)
        };
        assert_eq!(run(&|_| ()), Ok(()), "{name}");
        assert_eq!(run(&|c| c.s.cr4 &= !CR4_OSXSAVE), Err(Fault::ud()), "{name} without OSXSAVE");
        assert_eq!(run(&|c| c.s.cr0 |= TS), Err(Fault::nm()), "{name} with CR0.TS");
        // #UD comes before #NM.
        assert_eq!(run(&|c| { c.s.cr0 |= TS; c.s.cr4 &= !CR4_OSXSAVE }), Err(Fault::ud()), "{name}");
        // CR0.EM does not matter to the XSAVE feature set.
        assert_eq!(run(&|c| c.s.cr0 |= EM), Ok(()), "{name} with CR0.EM");
        for off in [8, 16, 32, 48] {
            assert_eq!(run(&|c| c.s.gpr[reg::RSI] = AREA + off), Err(Fault::gp0()), "{name} at +{off}");
        }
        let _ = cr0::PE;
    }
    // XSAVES and XRSTORS are not advertised.
    for code in [asm(|a| a.xsaves64(ptr(rsi))), asm(|a| a.xrstors64(ptr(rsi)))] {
        assert_eq!(cpu_for(&code, 3).execute_block(1), Err(Fault::ud()));
    }
    // Bad headers and MXCSR values for XRSTOR: #GP(0), state unchanged.
    let xrstor64 = asm(|a| a.xrstor64(ptr(rsi)));
    let mut rng = Rng(9);
    let state = random_state(&mut rng, false);
    let legacy = random_state(&mut rng, false);
    let with_byte = |mut a: [u8; 576], at: usize| {
        a[at] = 1;
        a
    };
    let cases: Vec<(&str, u64, [u8; 576], bool)> = vec![
        ("standard: XCOMP_BV without bit 63", 3, area_with(&legacy, 3, 1), false),
        ("standard: header byte 16", 3, with_byte(area_with(&legacy, 3, 0), 512 + 16), false),
        ("standard: header byte 23", 3, with_byte(area_with(&legacy, 3, 0), 512 + 23), false),
        ("standard: header byte 24 is not checked", 3, with_byte(area_with(&legacy, 3, 0), 512 + 24), true),
        ("standard: XSTATE_BV[2] outside XCR0", 3, area_with(&legacy, 7, 0), false),
        ("standard: XSTATE_BV[2] outside XCR0, not requested", 1, area_with(&legacy, 5, 0), false),
        ("compacted: XCOMP_BV[2] outside XCR0", 3, area_with(&legacy, 3, 7 | COMPACTED), false),
        ("compacted: XSTATE_BV outside XCOMP_BV", 3, area_with(&legacy, 3, 1 | COMPACTED), false),
        ("compacted: header byte 40", 3, with_byte(area_with(&legacy, 3, 3 | COMPACTED), 512 + 40), false),
        ("compacted: header byte 63", 3, with_byte(area_with(&legacy, 3, 3 | COMPACTED), 512 + 63), false),
        ("compacted: a valid subset", 3, area_with(&legacy, 1, 1 | COMPACTED), true),
    ];
    for (what, mask, area, ok) in cases {
        let (r, img) = restore(&xrstor64, mask, &state, &area);
        if ok {
            assert_eq!(r, Ok(()), "{what}");
        } else {
            assert_eq!(r, Err(Fault::gp0()), "{what}");
            assert_eq!(img, loaded(&state), "{what}: state changed");
        }
    }
    // A reserved MXCSR bit faults whenever MXCSR would be loaded.
    let mut bad = legacy;
    bad[24..28].copy_from_slice(&0x1_1f80u32.to_le_bytes());
    for (mask, bv, comp, fault) in [(2, 0, 0, true), (2, 2, 0, true), (3, 3, 3 | COMPACTED, true), (3, 1, 3 | COMPACTED, false), (1, 3, 0, false)] {
        let (r, img) = restore(&xrstor64, mask, &state, &area_with(&bad, bv, comp));
        if fault {
            assert_eq!(r, Err(Fault::gp0()), "mask {mask} XSTATE_BV {bv} XCOMP_BV {comp:#x}");
            assert_eq!(img, loaded(&state), "mask {mask}: state changed");
        } else {
            assert_eq!(r, Ok(()), "mask {mask} XSTATE_BV {bv} XCOMP_BV {comp:#x}");
        }
    }
    // A save whose header lies on an unmapped page raises #PF and writes
    // nothing; a restore from it changes nothing.
    let top = 16u64 << 20; // the end of the mapped memory
    for (name, code) in &all {
        let mut cpu = cpu_for(code, 3);
        cpu.load_fx_image(&state);
        cpu.s.gpr[reg::RSI] = top - 512;
        cpu.mem.write(top - 512, &[FILL; 512]).unwrap();
        let before = cpu.fx_image();
        let r = cpu.execute_block(1);
        assert!(matches!(r, Err(Fault::Exception(e)) if e.vector == fault::vector::PF), "{name}: {r:?}");
        let mut b = [0u8; 512];
        cpu.mem.read(top - 512, &mut b).unwrap();
        assert_eq!(b, [FILL; 512], "{name} wrote before faulting");
        assert_eq!(cpu.fx_image(), before, "{name}");
    }
}

// ---------------------------------------------------------------------
// Against the host.

/// A thunk running one XSAVE-family instruction on the host over a given
/// x87/SSE state: it saves the host's state (FXSAVE), loads the test's,
/// sets EDX:EAX, runs the instruction on the area at RSI, stores the
/// resulting state back and restores the host's.
struct Host {
    code: ExecPage,
}

#[repr(C, align(64))]
struct HostArea([u8; 4096]);

#[repr(C, align(16))]
struct HostFx([u8; 512]);

impl Host {
    fn new(ins: &[u8]) -> Host {
        // (rdi = state in and out, rsi = area, rdx = mask, rcx = host save)
        let mut a = CodeAssembler::new(64).unwrap();
        a.fxsave64(ptr(rcx)).unwrap();
        a.mov(r8, rcx).unwrap();
        a.fxrstor64(ptr(rdi)).unwrap();
        a.mov(rax, rdx).unwrap();
        a.shr(rdx, 32).unwrap();
        a.db(ins).unwrap();
        a.fxsave64(ptr(rdi)).unwrap();
        a.fxrstor64(ptr(r8)).unwrap();
        a.ret().unwrap();
        Host { code: ExecPage::new(&mut a) }
    }

    fn run(&self, state: &mut [u8; 512], area: &mut [u8; 576], mask: u64) {
        let mut fx = HostFx(*state);
        let mut buf = HostArea([0; 4096]);
        buf.0[..576].copy_from_slice(area);
        let mut save = HostFx([0; 512]);
        type Thunk = extern "sysv64" fn(*mut u8, *mut u8, u64, *mut u8);
        // SAFETY: the page holds the thunk assembled in `new`, which keeps
        // the callee-saved registers and the host's x87/SSE state; the
        // instruction touches only the first 576 bytes of the 64-byte
        // aligned area (the mask covers x87 and SSE only).
        let f: Thunk = unsafe { std::mem::transmute(self.code.addr()) };
        f(fx.0.as_mut_ptr(), buf.0.as_mut_ptr(), mask, save.0.as_mut_ptr());
        *state = fx.0;
        area.copy_from_slice(&buf.0[..576]);
    }
}


/// The legacy-region bytes compared with the host: all but FOP, FIP and
/// FDP (which AMD CPUs without XSAVEERPTR leave out unless an exception is
/// pending), MXCSR_MASK (AMD's has bit 17) and the data registers'
/// reserved bytes.
fn host_view(b: &[u8]) -> Vec<u8> {
    let mut v = fx_view(b);
    v[6..24].fill(0);
    v[28..32].fill(0);
    v
}

#[test]
fn save_and_restore_match_host() {
    if !(std::arch::is_x86_feature_detected!("xsave") && std::arch::is_x86_feature_detected!("xsavec")) {
        eprintln!("skipped: the host lacks XSAVE or XSAVEC");
        return;
    }
    let mut rng = Rng(13);
    let saves = [("xsave64", asm(|a| a.xsave64(ptr(rsi)))), ("xsavec64", asm(|a| a.xsavec64(ptr(rsi))))];
    for (name, code) in &saves {
        let host = Host::new(code);
        for i in 0..30 {
            let mask = [3, 1, 2][i % 3];
            // A non-initial state (both CPUs then report XINUSE = 1).
            let state = random_state(&mut rng, false);
            let mut area = [0u8; 576];
            for b in area.iter_mut() {
                *b = rng.next() as u8;
            }
            let (mut hstate, mut harea) = (state, area);
            host.run(&mut hstate, &mut harea, mask);
            let mut cpu = cpu_for(code, mask);
            cpu.load_fx_image(&state);
            cpu.mem.write(AREA, &area).unwrap();
            cpu.execute_block(1).unwrap();
            let earea = read_area(&cpu);
            assert_eq!(host_view(&earea), host_view(&harea), "{name} mask {mask}");
            assert_eq!(earea[416..], harea[416..], "{name} mask {mask}: bytes 416-575");
        }
    }
    // XRSTOR, both forms, with every XSTATE_BV and mask.
    let xrstor64 = asm(|a| a.xrstor64(ptr(rsi)));
    let host = Host::new(&xrstor64);
    for i in 0..64 {
        let (mask, bv, compacted) = ((i & 3) as u64, (i >> 2 & 3) as u64, i >> 4 & 1 == 1);
        let comp = if compacted { [1, 3][(i >> 5) & 1] | COMPACTED } else { 0 };
        let bv = if compacted { bv & comp } else { bv };
        let state = random_state(&mut rng, false);
        let legacy = random_state(&mut rng, false);
        let area = area_with(&legacy, bv, comp);
        let (mut hstate, mut harea) = (state, area);
        host.run(&mut hstate, &mut harea, mask);
        let (r, estate) = restore(&xrstor64, mask, &state, &area);
        r.unwrap();
        let what = format!("xrstor64 mask {mask} XSTATE_BV {bv} XCOMP_BV {comp:#x}");
        assert_eq!(host_view(&estate), host_view(&hstate), "{what}");
    }
}
