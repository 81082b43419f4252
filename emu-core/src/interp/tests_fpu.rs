//! Tests of the x87, MMX and SSE families. Most run each instruction both
//! on the interpreter and on the host CPU (an x86-64: the tests build a
//! small thunk in an executable page that loads an FXSAVE image, runs the
//! same instruction bytes and saves the image again) and compare the
//! results bit for bit, over random and special operands.

use iced_x86::code_asm::*;

use super::fault::vector;
use super::tests::long_mode_cpu;
use super::*;
use crate::cpu::{flags, reg, FxState};

/// Where the memory operand lives in the guest; `rsi` points at it.
pub(super) const MEM: u64 = 0x20_0000;
pub(super) const CR4_OSFXSR: u64 = 1 << 9;
pub(super) const CR4_OSXMMEXCPT: u64 = 1 << 10;

// ---------------------------------------------------------------------
// Random values.

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(super) fn chance(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// An 80-bit value, mostly ordinary, often special.
    fn f80(&mut self) -> (u16, u64) {
        let sign = if self.chance(2) { 0x8000 } else { 0 };
        let sig = self.next() | 1 << 63;
        match self.below(24) {
            0 => (sign, 0),
            1 => (sign | 0x7fff, 1 << 63),
            2 => (sign | 0x7fff, sig | 1 << 62),         // QNaN
            3 => (sign | 0x7fff, (sig & !(1 << 62)) | 1), // SNaN
            4 => (sign, sig >> (1 + self.below(63))),     // denormal
            5 => (sign, sig),                             // pseudo-denormal
            6 => (sign | (self.below(0x7ffe) as u16 + 1), sig >> 1), // unnormal
            7 => (sign | (self.below(80) as u16 + 1), sig),        // tiny
            8 => (sign | (0x7ffe - self.below(80) as u16), sig),   // huge
            9 => (sign | (0x3fff + self.below(64) as u16), sig & !(u64::MAX >> (1 + self.below(63)))), // integers
            10 => (sign | 0x7ffe, u64::MAX),
            11 => (sign | 1, 1 << 63),
            _ => (sign | (0x3fff - 40 + self.below(80) as u16), sig),
        }
    }

    /// A binary32 or binary64 value (as bits), mostly ordinary.
    fn fp(&mut self, double: bool) -> u64 {
        let (ebits, fbits) = if double { (11, 52) } else { (8, 23) };
        let emax = (1u64 << ebits) - 1;
        let sign = if self.chance(2) { 1u64 << (ebits + fbits) } else { 0 };
        let frac = self.next() & ((1u64 << fbits) - 1);
        let bias = emax >> 1;
        let e = match self.below(20) {
            0 => return sign,
            1 => return sign | emax << fbits,
            2 => return sign | emax << fbits | frac | 1 << (fbits - 1),
            3 => return sign | emax << fbits | (frac & !(1 << (fbits - 1))) | 1,
            4 | 5 => return sign | (frac >> self.below(fbits)).max(1),
            6 => 1 + self.below(30),
            7 => emax - 1 - self.below(30),
            8 => return sign | (bias + self.below(40)) << fbits | (frac & !(((1 << fbits) - 1) >> self.below(fbits))),
            9 => 1,
            _ => bias - 20 + self.below(40),
        };
        sign | e << fbits | frac
    }
}

// ---------------------------------------------------------------------
// The host side.

/// An FXSAVE area.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(super) struct Area(pub(super) [u8; 512]);

/// General registers in and out: RAX, RCX, RDX, RBX, RFLAGS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Gprs(pub(super) [u64; 5]);

/// The memory operand's buffer, 16-byte aligned like the guest's.
#[repr(C, align(16))]
struct Buf([u8; 128]);

/// A thunk running one instruction on the host.
struct Host {
    code: ExecPage,
}

impl Host {
    fn new(ins: &[u8]) -> Host {
        let mut a = CodeAssembler::new(64).unwrap();
        for r in [rbx, rbp, r12, r13, r14, r15] {
            a.push(r).unwrap();
        }
        a.mov(r12, rdx).unwrap();
        a.mov(r13, rcx).unwrap();
        a.mov(r14, rdi).unwrap();
        a.fxsave64(ptr(r13)).unwrap();
        a.fxrstor64(ptr(r14)).unwrap();
        a.push(qword_ptr(r12 + 32)).unwrap();
        a.popfq().unwrap();
        a.mov(rax, qword_ptr(r12)).unwrap();
        a.mov(rcx, qword_ptr(r12 + 8)).unwrap();
        a.mov(rdx, qword_ptr(r12 + 16)).unwrap();
        a.mov(rbx, qword_ptr(r12 + 24)).unwrap();
        a.db(ins).unwrap();
        a.mov(qword_ptr(r12), rax).unwrap();
        a.mov(qword_ptr(r12 + 8), rcx).unwrap();
        a.mov(qword_ptr(r12 + 16), rdx).unwrap();
        a.mov(qword_ptr(r12 + 24), rbx).unwrap();
        a.pushfq().unwrap();
        a.pop(qword_ptr(r12 + 32)).unwrap();
        a.fxsave64(ptr(r14)).unwrap();
        a.fxrstor64(ptr(r13)).unwrap();
        for r in [r15, r14, r13, r12, rbp, rbx] {
            a.pop(r).unwrap();
        }
        a.ret().unwrap();
        Host { code: ExecPage::new(&mut a) }
    }

    /// Runs the instruction over `fx`, `mem` (at RSI) and `g`.
    fn run(&self, fx: &mut Area, mem: &mut [u8; 128], g: &mut Gprs) {
        let mut save = Area([0; 512]);
        type Thunk = extern "sysv64" fn(*mut u8, *mut u8, *mut Gprs, *mut u8);
        // SAFETY: the page holds the thunk assembled in `new`, which
        // preserves the callee-saved registers and the host's x87/SSE
        // state; the instruction under test only touches the registers
        // and the buffer at RSI.
        let f: Thunk = unsafe { std::mem::transmute(self.code.addr()) };
        f(fx.0.as_mut_ptr(), mem.as_mut_ptr(), g, save.0.as_mut_ptr());
    }
}

/// One page of host memory holding assembled code, unmapped on drop.
pub(super) struct ExecPage {
    page: *mut u8,
    size: usize,
}

impl ExecPage {
    /// Maps a page, assembles `a` at its address and copies the code in.
    pub(super) fn new(a: &mut CodeAssembler) -> ExecPage {
        let size = 4096;
        // SAFETY: an anonymous private mapping; checked below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        let page = page.cast::<u8>();
        let code = a.assemble(page as u64).unwrap();
        assert!(code.len() <= size);
        // SAFETY: the page is ours and large enough.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len()) };
        ExecPage { page, size }
    }

    /// The code's address.
    pub(super) fn addr(&self) -> *mut u8 {
        self.page
    }
}

impl Drop for ExecPage {
    fn drop(&mut self) {
        // SAFETY: unmaps the page mapped in `new`.
        unsafe { libc::munmap(self.page.cast(), self.size) };
    }
}

// ---------------------------------------------------------------------
// The interpreter side.

pub(super) fn asm(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.assemble(0x1_0000).unwrap()
}

/// A CPU at the start of `code` with SSE enabled.
pub(super) fn cpu_for(code: &[u8]) -> Interpreter {
    let mut cpu = long_mode_cpu(code);
    cpu.s.cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT;
    cpu.s.cr0 |= crate::cpu::cr0::NE;
    cpu
}

/// Runs one instruction on the interpreter from the given state, on a
/// CPU kept per thread and instruction (building one per run is slow).
fn emu_run(ins: &[u8], fx: &Area, mem: &mut [u8; 128], g: &mut Gprs) -> Result<(), Fault> {
    thread_local! {
        static CPU: std::cell::RefCell<Option<(Vec<u8>, Interpreter, CpuState)>> = const { std::cell::RefCell::new(None) };
    }
    CPU.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(code, _, _)| code != ins) {
            let cpu = cpu_for(ins);
            let s = cpu.s.clone();
            *c = Some((ins.to_vec(), cpu, s));
        }
        let (_, cpu, s) = c.as_mut().unwrap();
        cpu.s = s.clone();
        emu_run_on(cpu, fx, mem, g)
    })
}

fn emu_run_on(cpu: &mut Interpreter, fx: &Area, mem: &mut [u8; 128], g: &mut Gprs) -> Result<(), Fault> {
    cpu.load_fx_image(&fx.0);
    let mut page = [0u8; 512];
    page[..128].copy_from_slice(mem);
    cpu.mem.write(MEM, &page).unwrap();
    cpu.s.gpr[reg::RAX] = g.0[0];
    cpu.s.gpr[reg::RCX] = g.0[1];
    cpu.s.gpr[reg::RDX] = g.0[2];
    cpu.s.gpr[reg::RBX] = g.0[3];
    cpu.s.gpr[reg::RSI] = MEM;
    cpu.s.set_flags(g.0[4]);
    let r = cpu.execute_block(1);
    cpu.mem.read(MEM, &mut mem[..]).unwrap();
    g.0 = [cpu.s.gpr[reg::RAX], cpu.s.gpr[reg::RCX], cpu.s.gpr[reg::RDX], cpu.s.gpr[reg::RBX], cpu.s.flags()];
    let out = Area(cpu.fx_image());
    EMU_FX.with(|c| *c.borrow_mut() = out);
    r
}

thread_local! {
    static EMU_FX: std::cell::RefCell<Area> = const { std::cell::RefCell::new(Area([0; 512])) };
}

/// The parts of an FXSAVE image compared: FCW, FSW, FTW, MXCSR, the
/// 80-bit registers and the XMM registers.
fn fx_view(a: &Area, skip_st: bool) -> Vec<(String, u128)> {
    let b = &a.0;
    let u = |o: usize, n: usize| -> u128 {
        let mut v = [0u8; 16];
        v[..n].copy_from_slice(&b[o..o + n]);
        u128::from_le_bytes(v)
    };
    let mut v = vec![("fcw".into(), u(0, 2)), ("fsw".into(), u(2, 2)), ("ftw".into(), u(4, 1)), ("mxcsr".into(), u(24, 4))];
    if !skip_st {
        for i in 0..8 {
            v.push((format!("r{i}"), u(32 + 16 * i, 10)));
        }
    }
    for i in 0..16 {
        v.push((format!("xmm{i}"), u(160 + 16 * i, 16)));
    }
    v
}

/// One differential case: runs `ins` on both and compares.
pub(super) struct Case<'a> {
    name: &'a str,
    ins: Vec<u8>,
    host: Host,
    /// FSW bits that are undefined for this instruction.
    fsw_undefined: u16,
    /// RFLAGS bits compared.
    flags_mask: u64,
}

impl<'a> Case<'a> {
    pub(super) fn new(name: &'a str, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Self {
        let ins = asm(f);
        let host = Host::new(&ins);
        Case { name, ins, host, fsw_undefined: 0, flags_mask: flags::ARITH }
    }

    fn undefined(mut self, fsw: u16) -> Self {
        self.fsw_undefined = fsw;
        self
    }

    pub(super) fn check(&self, fx: &Area, mem: &[u8; 128], g: &Gprs) {
        let (mut hfx, mut hg) = (*fx, *g);
        let mut buf = BigBuf([0; 512]);
        buf.0[..128].copy_from_slice(mem);
        self.host.run_raw(&mut hfx, buf.0.as_mut_ptr(), &mut hg);
        let hmem: [u8; 128] = buf.0[..128].try_into().unwrap();
        let (mut emem, mut eg) = (*mem, *g);
        let r = emu_run(&self.ins, fx, &mut emem, &mut eg);
        assert!(r.is_ok(), "{}: interpreter raised {r:?}\ninput {:?}", self.name, fx_view(fx, false));
        let efx = EMU_FX.with(|c| *c.borrow());
        // Where the host took an unmasked overflow or underflow, the
        // interpreter stores the masked result (documented): skip values.
        let fsw = u16::from_le_bytes([hfx.0[2], hfx.0[3]]);
        let fcw = u16::from_le_bytes([hfx.0[0], hfx.0[1]]);
        let efsw = u16::from_le_bytes([efx.0[2], efx.0[3]]);
        // And precision control below 64 bits with a denormal result
        // rounds the denormalised significand in SoftFloat (documented).
        if fcw & 0x300 != 0x300 && (fsw | efsw) & 0x10 != 0 {
            return;
        }
        let skip = fsw & !fcw & 0x18 != 0;
        let mut h = fx_view(&hfx, skip);
        let mut e = fx_view(&efx, skip);
        let mut undefined = self.fsw_undefined | if skip { 0x220 } else { 0 };
        // FPREM with an unmasked denormal operand leaves the quotient
        // bits in a state the SDM does not define.
        if self.name.starts_with("fprem") && fsw & !fcw & 2 != 0 {
            undefined |= 0x4310;
        }
        h[1].1 &= !u128::from(undefined);
        e[1].1 &= !u128::from(undefined);
        if h != e || hmem != emem || hg.0[..4] != eg.0[..4] || (hg.0[4] ^ eg.0[4]) & self.flags_mask != 0 {
            let diff: Vec<_> = h.iter().zip(&e).filter(|(a, b)| a != b).map(|(a, b)| format!("{}: host {:#x} emu {:#x}", a.0, a.1, b.1)).collect();
            panic!(
                "{}: mismatch\n diffs {diff:?}\n input {:?}\n mem in {:02x?}\n mem host {:02x?}\n mem emu  {:02x?}\n gprs host {:x?} emu {:x?}",
                self.name,
                fx_view(fx, false).iter().filter(|x| x.0.starts_with('r') || x.0.starts_with('f')).collect::<Vec<_>>(),
                &mem[..16],
                &hmem[..16],
                &emem[..16],
                hg,
                eg
            );
        }
    }
}

/// An x87 state: `valid` registers from ST(0) up hold values, the rest
/// are empty; random TOP, RC, PC and condition codes; exceptions masked
/// unless `unmask`.
fn x87_state(rng: &mut Rng, valid: usize, unmask: bool) -> Area {
    let mut fx = FxState::default();
    let masks = if unmask && rng.chance(3) { rng.below(64) as u16 } else { 0x3f };
    fx.fcw = 0x40 | masks | (rng.below(4) as u16) << 8 | (rng.below(4) as u16) << 10;
    let top = rng.below(8) as u16;
    fx.fsw = top << 11 | (rng.next() as u16 & 0x4700);
    for i in 0..8 {
        let (se, sig) = rng.f80();
        fx.st[i][..8].copy_from_slice(&sig.to_le_bytes());
        fx.st[i][8..10].copy_from_slice(&se.to_le_bytes());
    }
    for i in 0..valid {
        fx.ftw |= 1 << ((usize::from(top) + i) & 7);
    }
    Area(fx.to_bytes())
}

fn random_mem(rng: &mut Rng) -> [u8; 128] {
    let mut m = [0u8; 128];
    let kind = rng.below(3);
    let v = match kind {
        0 => rng.fp(false),
        _ => rng.fp(true),
    };
    m[..8].copy_from_slice(&v.to_le_bytes());
    let (se, sig) = rng.f80();
    if rng.chance(3) {
        m[..8].copy_from_slice(&sig.to_le_bytes());
        m[8..10].copy_from_slice(&se.to_le_bytes());
    }
    if rng.chance(4) {
        let i = rng.next() >> rng.below(64);
        m[..8].copy_from_slice(&i.to_le_bytes());
    }
    m
}

fn run_cases(cases: &[Case], iters: usize, seed: u64, valid: impl Fn(&mut Rng) -> usize) {
    let mut rng = Rng(seed);
    for c in cases {
        for _ in 0..iters {
            let v = valid(&mut rng);
            let fx = x87_state(&mut rng, v, true);
            let mem = random_mem(&mut rng);
            let g = Gprs([rng.next(), rng.next(), rng.next(), rng.next(), 0x2 | (rng.next() & flags::ARITH)]);
            c.check(&fx, &mem, &g);
        }
    }
}

fn mostly_full(rng: &mut Rng) -> usize {
    if rng.chance(10) {
        rng.below(3) as usize
    } else {
        8 - rng.below(2) as usize * 6
    }
}

// ---------------------------------------------------------------------
// x87 against the host.

#[test]
fn x87_arithmetic_matches_host() {
    let cases = [
        Case::new("fadd st0,st1", |a| a.fadd_2(st0, st1)),
        Case::new("fsub st0,st2", |a| a.fsub_2(st0, st2)),
        Case::new("fsubr st3,st0", |a| a.fsubr_2(st3, st0)),
        Case::new("fmul st0,st1", |a| a.fmul_2(st0, st1)),
        Case::new("fdiv st0,st1", |a| a.fdiv_2(st0, st1)),
        Case::new("fdivr st1,st0", |a| a.fdivr_2(st1, st0)),
        Case::new("faddp", |a| a.faddp(st1, st0)),
        Case::new("fdivrp", |a| a.fdivrp(st2, st0)),
        Case::new("fadd m32", |a| a.fadd(dword_ptr(rsi))),
        Case::new("fmul m64", |a| a.fmul(qword_ptr(rsi))),
        Case::new("fdivr m32", |a| a.fdivr(dword_ptr(rsi))),
        Case::new("fsub m64", |a| a.fsub(qword_ptr(rsi))),
        Case::new("fiadd m16", |a| a.fiadd(word_ptr(rsi))),
        Case::new("fidiv m32", |a| a.fidiv(dword_ptr(rsi))),
        Case::new("fsqrt", |a| a.fsqrt()),
    ];
    run_cases(&cases, 3000, 0x1234_5678, mostly_full);
}

#[test]
fn x87_loads_and_stores_match_host() {
    let cases = [
        Case::new("fld m32", |a| a.fld(dword_ptr(rsi))),
        Case::new("fld m64", |a| a.fld(qword_ptr(rsi))),
        Case::new("fld m80", |a| a.fld(tword_ptr(rsi))),
        Case::new("fld st3", |a| a.fld(st3)),
        Case::new("fst m32", |a| a.fst(dword_ptr(rsi))),
        Case::new("fstp m64", |a| a.fstp(qword_ptr(rsi))),
        Case::new("fstp m80", |a| a.fstp(tword_ptr(rsi))),
        Case::new("fstp st2", |a| a.fstp(st2)),
        Case::new("fild m16", |a| a.fild(word_ptr(rsi))),
        Case::new("fild m32", |a| a.fild(dword_ptr(rsi))),
        Case::new("fild m64", |a| a.fild(qword_ptr(rsi))),
        Case::new("fist m16", |a| a.fist(word_ptr(rsi))),
        Case::new("fistp m32", |a| a.fistp(dword_ptr(rsi))),
        Case::new("fistp m64", |a| a.fistp(qword_ptr(rsi))),
        Case::new("fisttp m16", |a| a.fisttp(word_ptr(rsi))),
        Case::new("fisttp m64", |a| a.fisttp(qword_ptr(rsi))),
        Case::new("fbld", |a| a.fbld(tword_ptr(rsi))),
        Case::new("fbstp", |a| a.fbstp(tword_ptr(rsi))),
        Case::new("fld1", |a| a.fld1()),
        Case::new("fldpi", |a| a.fldpi()),
        Case::new("fldl2e", |a| a.fldl2e()),
        Case::new("fldl2t", |a| a.fldl2t()),
        Case::new("fldlg2", |a| a.fldlg2()),
        Case::new("fldln2", |a| a.fldln2()),
        Case::new("fldz", |a| a.fldz()),
    ];
    run_cases(&cases, 1500, 0x9abc_def0, mostly_full);
}

#[test]
fn x87_misc_matches_host() {
    let cases = [
        Case::new("fcom st1", |a| a.fcom_2(st0, st1)),
        Case::new("fcomp m32", |a| a.fcomp(dword_ptr(rsi))),
        Case::new("fucompp", |a| a.fucompp()),
        Case::new("ficom m16", |a| a.ficom(word_ptr(rsi))),
        Case::new("ftst", |a| a.ftst()),
        Case::new("fxam", |a| a.fxam()),
        Case::new("fcomi", |a| a.fcomi(st0, st2)),
        Case::new("fucomip", |a| a.fucomip(st0, st1)),
        Case::new("fchs", |a| a.fchs()),
        Case::new("fabs", |a| a.fabs()),
        Case::new("frndint", |a| a.frndint()),
        Case::new("fscale", |a| a.fscale()),
        Case::new("fxtract", |a| a.fxtract()),
        Case::new("fprem", |a| a.fprem()).undefined(0),
        Case::new("fprem1", |a| a.fprem1()),
        Case::new("fxch", |a| a.fxch(st0, st3)),
        Case::new("fincstp", |a| a.fincstp()),
        Case::new("fdecstp", |a| a.fdecstp()),
        Case::new("ffree", |a| a.ffree(st1)),
        Case::new("fcmovbe", |a| a.fcmovbe(st0, st2)),
        Case::new("fcmovnu", |a| a.fcmovnu(st0, st1)),
        Case::new("fnclex", |a| a.fnclex()),
        Case::new("fninit", |a| a.fninit()),
        Case::new("fnstsw ax", |a| a.fnstsw(ax)),
        Case::new("fnstcw", |a| a.fnstcw(word_ptr(rsi))),
        Case::new("fldcw", |a| a.fldcw(word_ptr(rsi))),
    ];
    run_cases(&cases, 1500, 0x5555_aaaa, mostly_full);
}

// ---------------------------------------------------------------------
// SSE and MMX against the host.

/// An SSE state: XMM registers holding random singles, doubles or bits,
/// MXCSR with random rounding, FTZ and DAZ, exceptions masked.
pub(super) fn sse_state(rng: &mut Rng) -> Area {
    let mut fx = FxState::default();
    for x in fx.xmm.iter_mut() {
        let mut v = 0u128;
        match rng.below(3) {
            0 => {
                for i in 0..4 {
                    v |= u128::from(rng.fp(false)) << (32 * i);
                }
            }
            1 => {
                for i in 0..2 {
                    v |= u128::from(rng.fp(true)) << (64 * i);
                }
            }
            _ => v = u128::from(rng.next()) | u128::from(rng.next()) << 64,
        }
        *x = v;
    }
    for i in 0..8 {
        fx.st[i][..8].copy_from_slice(&rng.next().to_le_bytes());
    }
    fx.ftw = rng.next() as u8;
    fx.fsw = (rng.below(8) as u16) << 11;
    let sticky = if rng.chance(4) { rng.below(64) as u32 } else { 0 };
    fx.mxcsr = 0x1f80 | (rng.below(4) as u32) << 13 | if rng.chance(3) { 0x8000 } else { 0 } | if rng.chance(3) { 0x40 } else { 0 } | sticky;
    Area(fx.to_bytes())
}

pub(super) fn sse_mem(rng: &mut Rng) -> [u8; 128] {
    let mut m = [0u8; 128];
    for c in m.chunks_mut(8) {
        let v = if rng.chance(2) { rng.fp(true) } else { rng.fp(false) | rng.fp(false) << 32 };
        c.copy_from_slice(&v.to_le_bytes());
    }
    m
}

pub(super) fn run_sse(cases: &[Case], iters: usize, seed: u64) {
    let mut rng = Rng(seed);
    for c in cases {
        for _ in 0..iters {
            let fx = sse_state(&mut rng);
            let mem = sse_mem(&mut rng);
            let small = |r: &mut Rng| if r.chance(2) { r.next() >> r.below(64) } else { r.fp(true) };
            let g = Gprs([small(&mut rng), small(&mut rng), rng.next(), rng.next(), 0x2 | (rng.next() & flags::ARITH)]);
            c.check(&fx, &mem, &g);
        }
    }
}

#[test]
fn sse_arithmetic_matches_host() {
    let mut cases = vec![
        Case::new("addps", |a| a.addps(xmm0, xmm1)),
        Case::new("addss", |a| a.addss(xmm2, xmm3)),
        Case::new("addpd m128", |a| a.addpd(xmm4, xmmword_ptr(rsi))),
        Case::new("addsd", |a| a.addsd(xmm5, xmm6)),
        Case::new("subps", |a| a.subps(xmm7, xmm8)),
        Case::new("subsd m64", |a| a.subsd(xmm9, qword_ptr(rsi))),
        Case::new("mulps", |a| a.mulps(xmm10, xmm11)),
        Case::new("mulsd", |a| a.mulsd(xmm12, xmm13)),
        Case::new("mulpd", |a| a.mulpd(xmm14, xmm15)),
        Case::new("divps", |a| a.divps(xmm0, xmm2)),
        Case::new("divss m32", |a| a.divss(xmm1, dword_ptr(rsi))),
        Case::new("divpd", |a| a.divpd(xmm3, xmm4)),
        Case::new("minps", |a| a.minps(xmm0, xmm1)),
        Case::new("maxps", |a| a.maxps(xmm0, xmm1)),
        Case::new("minsd", |a| a.minsd(xmm0, xmm1)),
        Case::new("maxpd", |a| a.maxpd(xmm2, xmm1)),
        Case::new("sqrtps", |a| a.sqrtps(xmm0, xmm1)),
        Case::new("sqrtss", |a| a.sqrtss(xmm0, xmm1)),
        Case::new("sqrtpd", |a| a.sqrtpd(xmm0, xmm1)),
        Case::new("sqrtsd", |a| a.sqrtsd(xmm0, xmm1)),
        Case::new("addsubps", |a| a.addsubps(xmm0, xmm1)),
        Case::new("addsubpd", |a| a.addsubpd(xmm0, xmm1)),
        Case::new("haddps", |a| a.haddps(xmm0, xmm1)),
        Case::new("hsubpd", |a| a.hsubpd(xmm0, xmm1)),
        Case::new("comiss", |a| a.comiss(xmm0, xmm1)),
        Case::new("ucomiss", |a| a.ucomiss(xmm0, xmm1)),
        Case::new("comisd", |a| a.comisd(xmm0, xmm1)),
        Case::new("ucomisd m64", |a| a.ucomisd(xmm0, qword_ptr(rsi))),
    ];
    for p in 0..8u32 {
        cases.push(Case::new("cmpps", move |a| a.cmpps(xmm0, xmm1, p)));
        cases.push(Case::new("cmpsd", move |a| a.cmpsd_3(xmm2, xmm3, p)));
        cases.push(Case::new("cmppd", move |a| a.cmppd(xmm2, xmm3, p)));
        cases.push(Case::new("cmpss", move |a| a.cmpss(xmm2, xmm3, p)));
    }
    run_sse(&cases, 400, 0xfeed_beef);
}

#[test]
fn sse_conversions_match_host() {
    let cases = [
        Case::new("cvtsi2ss r32", |a| a.cvtsi2ss(xmm0, eax)),
        Case::new("cvtsi2ss r64", |a| a.cvtsi2ss(xmm0, rax)),
        Case::new("cvtsi2sd r64", |a| a.cvtsi2sd(xmm1, rcx)),
        Case::new("cvtsi2sd m32", |a| a.cvtsi2sd(xmm1, dword_ptr(rsi))),
        Case::new("cvtss2si r32", |a| a.cvtss2si(eax, xmm1)),
        Case::new("cvtss2si r64", |a| a.cvtss2si(rax, xmm1)),
        Case::new("cvttss2si", |a| a.cvttss2si(ecx, xmm2)),
        Case::new("cvtsd2si r64", |a| a.cvtsd2si(rax, xmm1)),
        Case::new("cvttsd2si", |a| a.cvttsd2si(eax, xmm1)),
        Case::new("cvtss2sd", |a| a.cvtss2sd(xmm0, xmm1)),
        Case::new("cvtsd2ss", |a| a.cvtsd2ss(xmm0, xmm1)),
        Case::new("cvtdq2ps", |a| a.cvtdq2ps(xmm0, xmm1)),
        Case::new("cvtps2dq", |a| a.cvtps2dq(xmm0, xmm1)),
        Case::new("cvttps2dq", |a| a.cvttps2dq(xmm0, xmm1)),
        Case::new("cvtdq2pd", |a| a.cvtdq2pd(xmm0, xmm1)),
        Case::new("cvtpd2dq", |a| a.cvtpd2dq(xmm0, xmm1)),
        Case::new("cvttpd2dq", |a| a.cvttpd2dq(xmm0, xmm1)),
        Case::new("cvtps2pd", |a| a.cvtps2pd(xmm0, xmm1)),
        Case::new("cvtpd2ps", |a| a.cvtpd2ps(xmm0, xmm1)),
        Case::new("cvtpi2ps", |a| a.cvtpi2ps(xmm0, mm1)),
        Case::new("cvtps2pi", |a| a.cvtps2pi(mm0, xmm1)),
        Case::new("cvttpd2pi", |a| a.cvttpd2pi(mm0, xmm1)),
        Case::new("cvtpi2pd", |a| a.cvtpi2pd(xmm0, mm1)),
    ];
    run_sse(&cases, 500, 0x0bad_cafe);
}

#[test]
#[allow(clippy::vec_init_then_push)]
fn simd_integer_matches_host() {
    macro_rules! both {
        ($v:ident, $name:literal, $m:ident) => {
            $v.push(Case::new(concat!($name, " xmm"), |a| a.$m(xmm0, xmm1)));
            $v.push(Case::new(concat!($name, " mm"), |a| a.$m(mm0, mm1)));
        };
    }
    let mut v = Vec::new();
    both!(v, "paddb", paddb);
    both!(v, "paddw", paddw);
    both!(v, "paddd", paddd);
    both!(v, "paddq", paddq);
    both!(v, "paddsb", paddsb);
    both!(v, "paddsw", paddsw);
    both!(v, "paddusb", paddusb);
    both!(v, "paddusw", paddusw);
    both!(v, "psubb", psubb);
    both!(v, "psubw", psubw);
    both!(v, "psubd", psubd);
    both!(v, "psubq", psubq);
    both!(v, "psubsb", psubsb);
    both!(v, "psubsw", psubsw);
    both!(v, "psubusb", psubusb);
    both!(v, "psubusw", psubusw);
    both!(v, "pmullw", pmullw);
    both!(v, "pmulhw", pmulhw);
    both!(v, "pmulhuw", pmulhuw);
    both!(v, "pmuludq", pmuludq);
    both!(v, "pmaddwd", pmaddwd);
    both!(v, "pand", pand);
    both!(v, "pandn", pandn);
    both!(v, "por", por);
    both!(v, "pxor", pxor);
    both!(v, "pcmpeqb", pcmpeqb);
    both!(v, "pcmpeqw", pcmpeqw);
    both!(v, "pcmpeqd", pcmpeqd);
    both!(v, "pcmpgtb", pcmpgtb);
    both!(v, "pcmpgtw", pcmpgtw);
    both!(v, "pcmpgtd", pcmpgtd);
    both!(v, "pavgb", pavgb);
    both!(v, "pavgw", pavgw);
    both!(v, "pminub", pminub);
    both!(v, "pminsw", pminsw);
    both!(v, "pmaxub", pmaxub);
    both!(v, "pmaxsw", pmaxsw);
    both!(v, "psadbw", psadbw);
    both!(v, "packsswb", packsswb);
    both!(v, "packssdw", packssdw);
    both!(v, "packuswb", packuswb);
    both!(v, "punpcklbw", punpcklbw);
    both!(v, "punpcklwd", punpcklwd);
    both!(v, "punpckldq", punpckldq);
    both!(v, "punpckhbw", punpckhbw);
    both!(v, "punpckhwd", punpckhwd);
    both!(v, "punpckhdq", punpckhdq);
    both!(v, "psllw", psllw);
    both!(v, "pslld", pslld);
    both!(v, "psllq", psllq);
    both!(v, "psrlw", psrlw);
    both!(v, "psrld", psrld);
    both!(v, "psrlq", psrlq);
    both!(v, "psraw", psraw);
    both!(v, "psrad", psrad);
    v.push(Case::new("punpcklqdq", |a| a.punpcklqdq(xmm0, xmm1)));
    v.push(Case::new("punpckhqdq", |a| a.punpckhqdq(xmm0, xmm1)));
    v.push(Case::new("paddb m128", |a| a.paddb(xmm3, xmmword_ptr(rsi))));
    v.push(Case::new("psubw m64", |a| a.psubw(mm3, qword_ptr(rsi))));
    v.push(Case::new("psllw imm", |a| a.psllw(xmm3, 5)));
    v.push(Case::new("psrad imm", |a| a.psrad(xmm3, 40)));
    v.push(Case::new("psrlq imm mm", |a| a.psrlq(mm3, 17)));
    v.push(Case::new("pslldq", |a| a.pslldq(xmm3, 5)));
    v.push(Case::new("psrldq", |a| a.psrldq(xmm3, 17)));
    v.push(Case::new("pshufd", |a| a.pshufd(xmm3, xmm9, 0x1b)));
    v.push(Case::new("pshuflw", |a| a.pshuflw(xmm3, xmm9, 0x9c)));
    v.push(Case::new("pshufhw", |a| a.pshufhw(xmm3, xmm9, 0x72)));
    v.push(Case::new("pshufw", |a| a.pshufw(mm3, mm5, 0x72)));
    v.push(Case::new("pmovmskb xmm", |a| a.pmovmskb(eax, xmm9)));
    v.push(Case::new("pmovmskb mm", |a| a.pmovmskb(eax, mm2)));
    v.push(Case::new("movmskps", |a| a.movmskps(eax, xmm9)));
    v.push(Case::new("movmskpd", |a| a.movmskpd(ecx, xmm9)));
    v.push(Case::new("pextrw", |a| a.pextrw(eax, xmm9, 5)));
    v.push(Case::new("pinsrw", |a| a.pinsrw(xmm9, ecx, 6)));
    v.push(Case::new("pinsrw mm", |a| a.pinsrw(mm1, word_ptr(rsi), 3)));
    v.push(Case::new("movd xmm,r32", |a| a.movd(xmm9, ecx)));
    v.push(Case::new("movq xmm,r64", |a| a.movq(xmm9, rcx)));
    v.push(Case::new("movd r32,xmm", |a| a.movd(eax, xmm9)));
    v.push(Case::new("movq r64,mm", |a| a.movq(rax, mm4)));
    v.push(Case::new("movq xmm,xmm", |a| a.movq(xmm1, xmm9)));
    v.push(Case::new("movq m64,xmm", |a| a.movq(qword_ptr(rsi), xmm9)));
    v.push(Case::new("movq xmm,m64", |a| a.movq(xmm9, qword_ptr(rsi))));
    v.push(Case::new("movd mm,m32", |a| a.movd(mm9_dummy(), dword_ptr(rsi))));
    v.push(Case::new("movq2dq", |a| a.movq2dq(xmm1, mm3)));
    v.push(Case::new("movdq2q", |a| a.movdq2q(mm1, xmm3)));
    v.push(Case::new("emms", |a| a.emms()));
    run_sse(&v, 150, 0x7777_1111);
}

fn mm9_dummy() -> AsmRegisterMm {
    mm6
}

#[test]
fn sse_moves_and_shuffles_match_host() {
    let cases = [
        Case::new("movaps", |a| a.movaps(xmm0, xmm9)),
        Case::new("movaps load", |a| a.movaps(xmm0, xmmword_ptr(rsi))),
        Case::new("movups store", |a| a.movups(xmmword_ptr(rsi + 1), xmm3)),
        Case::new("movdqu load", |a| a.movdqu(xmm12, xmmword_ptr(rsi + 3))),
        Case::new("movdqa store", |a| a.movdqa(xmmword_ptr(rsi + 16), xmm12)),
        Case::new("movss rr", |a| a.movss(xmm0, xmm1)),
        Case::new("movss load", |a| a.movss(xmm0, dword_ptr(rsi))),
        Case::new("movss store", |a| a.movss(dword_ptr(rsi), xmm3)),
        Case::new("movsd rr", |a| a.movsd_2(xmm0, xmm1)),
        Case::new("movsd load", |a| a.movsd_2(xmm0, qword_ptr(rsi))),
        Case::new("movlps", |a| a.movlps(xmm0, qword_ptr(rsi))),
        Case::new("movhps", |a| a.movhps(xmm0, qword_ptr(rsi))),
        Case::new("movhps store", |a| a.movhps(qword_ptr(rsi), xmm5)),
        Case::new("movlhps", |a| a.movlhps(xmm0, xmm7)),
        Case::new("movhlps", |a| a.movhlps(xmm0, xmm7)),
        Case::new("movddup", |a| a.movddup(xmm0, xmm7)),
        Case::new("movshdup", |a| a.movshdup(xmm0, xmm7)),
        Case::new("movsldup", |a| a.movsldup(xmm0, xmmword_ptr(rsi))),
        Case::new("andnps", |a| a.andnps(xmm0, xmm7)),
        Case::new("xorpd", |a| a.xorpd(xmm0, xmm7)),
        Case::new("shufps", |a| a.shufps(xmm0, xmm7, 0x4e)),
        Case::new("shufpd", |a| a.shufpd(xmm0, xmm7, 2)),
        Case::new("unpcklps", |a| a.unpcklps(xmm0, xmm7)),
        Case::new("unpckhps", |a| a.unpckhps(xmm0, xmm7)),
        Case::new("unpcklpd", |a| a.unpcklpd(xmm0, xmm7)),
        Case::new("unpckhpd", |a| a.unpckhpd(xmm0, xmm7)),
        Case::new("stmxcsr", |a| a.stmxcsr(dword_ptr(rsi))),
    ];
    run_sse(&cases, 50, 0x3141_5926);
}

// ---------------------------------------------------------------------
// State images, checked against the host.

#[test]
fn environment_images_match_host() {
    let cases = [
        Case::new("fldenv", |a| a.fldenv(ptr(rsi))),
        Case::new("frstor", |a| a.frstor(ptr(rsi))),
        Case::new("fxrstor64", |a| a.fxrstor64(ptr(rsi))),
    ];
    let mut rng = Rng(0x4242);
    for c in &cases {
        for _ in 0..300 {
            let fx = { let n = mostly_full(&mut rng); x87_state(&mut rng, n, true) };
            let mut mem = [0u8; 128];
            for b in mem.iter_mut() {
                *b = rng.next() as u8;
            }
            if c.name == "fxrstor64" {
                // A valid MXCSR, else #GP.
                mem[24..28].copy_from_slice(&(rng.next() as u32 & 0xffff).to_le_bytes());
            }
            c.check(&fx, &mem, &Gprs([0, 0, 0, 0, 2]));
        }
    }
    // The stored images: compare the control, status and tag words and
    // the registers (the pointers differ between host and guest).
    let store = [
        ("fnstenv", asm(|a| a.fnstenv(ptr(rsi))), 0..12),
        ("fnsave", asm(|a| a.fnsave(ptr(rsi))), 0..12),
        ("fnsave regs", asm(|a| a.fnsave(ptr(rsi))), 28..108),
        ("fxsave64", asm(|a| a.fxsave64(ptr(rsi))), 0..8),
        ("fxsave64 mxcsr", asm(|a| a.fxsave64(ptr(rsi))), 24..28),
        ("fxsave64 regs", asm(|a| a.fxsave64(ptr(rsi))), 32..416),
    ];
    for (name, ins, range) in store {
        let host = Host::new(&ins);
        for _ in 0..200 {
            let fx = if name.starts_with("fx") { sse_state(&mut rng) } else { { let n = mostly_full(&mut rng); x87_state(&mut rng, n, false) } };
            let mut hfx = fx;
            let mut big = BigBuf([0; 512]);
            let mut g = Gprs([0, 0, 0, 0, 2]);
            host.run_raw(&mut hfx, big.0.as_mut_ptr(), &mut g);
            let mut cpu = cpu_for(&ins);
            cpu.load_fx_image(&fx.0);
            cpu.s.gpr[reg::RSI] = MEM;
            cpu.execute_block(1).unwrap();
            let mut emu = [0u8; 512];
            cpu.mem.read(MEM, &mut emu).unwrap();
            assert_eq!(&emu[range.clone()], &big.0[range.clone()], "{name}");
        }
    }
}

/// A 512-byte aligned buffer.
#[repr(C, align(64))]
struct BigBuf([u8; 512]);

impl Host {
    fn run_raw(&self, fx: &mut Area, mem: *mut u8, g: &mut Gprs) {
        let mut save = Area([0; 512]);
        type Thunk = extern "sysv64" fn(*mut u8, *mut u8, *mut Gprs, *mut u8);
        // SAFETY: as in `run`; `mem` is large enough for the instruction.
        let f: Thunk = unsafe { std::mem::transmute(self.code.addr()) };
        f(fx.0.as_mut_ptr(), mem, g, save.0.as_mut_ptr());
    }
}

#[test]
fn fxsave_fxrstor_and_fsave_frstor_round_trip() {
    let mut rng = Rng(99);
    for _ in 0..50 {
        let code = asm(|a| {
            a.fxsave64(ptr(rsi))?;
            a.fninit()?;
            a.fxrstor64(ptr(rsi))?;
            a.fnsave(ptr(rsi + 512))?;
            a.frstor(ptr(rsi + 512))?;
            a.fxsave(ptr(rsi + 1024))
        });
        let mut cpu = cpu_for(&code);
        let fx = sse_state(&mut rng);
        let x = { let n = mostly_full(&mut rng); x87_state(&mut rng, n, false) };
        let mut img = fx.0;
        img[..24].copy_from_slice(&x.0[..24]);
        img[32..160].copy_from_slice(&x.0[32..160]);
        cpu.load_fx_image(&img);
        let before = cpu.fx_image();
        cpu.s.gpr[reg::RSI] = MEM;
        for _ in 0..6 {
            cpu.execute_block(1).unwrap();
        }
        assert_eq!(cpu.fx_image()[..416], before[..416]);
        let mut saved = [0u8; 512];
        cpu.mem.read(MEM, &mut saved).unwrap();
        assert_eq!(saved[..6], before[..6]);
        assert_eq!(saved[24..416], before[24..416]);
        // The 32-bit image (FXSAVE without REX.W) has the same registers.
        cpu.mem.read(MEM + 1024, &mut saved).unwrap();
        assert_eq!(saved[160..416], before[160..416]);
    }
    // Misaligned FXSAVE is #GP(0).
    let code = asm(|a| a.fxsave64(ptr(rsi + 8)));
    let mut cpu = cpu_for(&code);
    cpu.s.gpr[reg::RSI] = MEM;
    assert_eq!(cpu.execute_block(1), Err(Fault::gp0()));
    // A reserved MXCSR bit in the image is #GP(0).
    let code = asm(|a| a.fxrstor64(ptr(rsi)));
    let mut cpu = cpu_for(&code);
    cpu.s.gpr[reg::RSI] = MEM;
    cpu.mem.write(MEM + 24, &0x1_0000u32.to_le_bytes()).unwrap();
    assert_eq!(cpu.execute_block(1), Err(Fault::gp0()));
}

// ---------------------------------------------------------------------
// Exceptions.

pub(super) fn run_one(cpu: &mut Interpreter) -> Result<(), Fault> {
    cpu.execute_block(1)
}

#[test]
fn device_not_available_and_invalid_opcode() {
    use crate::cpu::cr0;
    const MP: u64 = 2;
    const EM: u64 = 4;
    const TS: u64 = 8;
    let nm = Err(Fault::nm());
    let ud = Err(Fault::ud());
    let cases: [(&str, Vec<u8>); 5] = [
        ("fadd", asm(|a| a.fadd_2(st0, st0))),
        ("fwait", asm(|a| a.wait())),
        ("addps", asm(|a| a.addps(xmm0, xmm1))),
        ("paddb mm", asm(|a| a.paddb(mm0, mm1))),
        ("fxsave", asm(|a| a.fxsave64(ptr(rsi)))),
    ];
    for (name, code) in &cases {
        for (bits, expect) in [
            (TS, if *name == "fwait" { Ok(()) } else { nm.clone() }),
            (TS | MP, nm.clone()),
            (EM, match *name {
                "fwait" => Ok(()),
                "addps" | "paddb mm" => ud.clone(),
                _ => nm.clone(),
            }),
        ] {
            let mut cpu = cpu_for(code);
            cpu.s.gpr[reg::RSI] = MEM;
            cpu.s.cr0 = (cpu.s.cr0 | bits) & !(if bits & MP == 0 { MP } else { 0 });
            assert_eq!(run_one(&mut cpu), expect, "{name} with CR0 bits {bits:#x}");
            let _ = cr0::NE;
        }
    }
    // SSE needs CR4.OSFXSR.
    let mut cpu = cpu_for(&cases[2].1);
    cpu.s.cr4 &= !CR4_OSFXSR;
    assert_eq!(run_one(&mut cpu), ud);
}

#[test]
fn pending_x87_exception_raises_mf_on_the_next_waiting_instruction() {
    let code = asm(|a| {
        a.fldcw(word_ptr(rsi))?; // ZE unmasked
        a.fld1()?;
        a.fldz()?;
        a.fdivp(st1, st0)?; // 1/0: ZE pending
        a.fnstsw(ax)?; // no wait: fine
        a.fld1()?; // waiting: #MF
        Ok(())
    });
    for ne in [true, false] {
        let mut cpu = cpu_for(&code);
        if !ne {
            cpu.s.cr0 &= !crate::cpu::cr0::NE;
        }
        cpu.s.gpr[reg::RSI] = MEM;
        cpu.mem.write(MEM, &(0x37fu16 & !4).to_le_bytes()).unwrap();
        for _ in 0..5 {
            run_one(&mut cpu).unwrap();
        }
        let sw = cpu.s.gpr[reg::RAX] as u16;
        assert_eq!(sw & 0x8084, 0x8084, "ZE, ES and B: {sw:#x}");
        // The result was not stored: ST(0) is still the zero, ST(1) 1.0.
        assert_eq!(st_bits(&cpu, 0), 0);
        assert_eq!((cpu.s.fx.fsw >> 11) & 7, 6);
        let r = run_one(&mut cpu);
        if ne {
            assert_eq!(r, Err(Fault::exception(vector::MF)));
        } else {
            // With CR0.NE=0 FERR#/IRQ 13 is not wired: nothing is raised.
            assert_eq!(r, Ok(()));
        }
    }
}

#[test]
fn unmasked_simd_exceptions_raise_xm_or_ud() {
    let code = asm(|a| a.divps(xmm0, xmm1));
    for osxmmexcpt in [true, false] {
        let mut cpu = cpu_for(&code);
        if !osxmmexcpt {
            cpu.s.cr4 &= !CR4_OSXMMEXCPT;
        }
        cpu.s.fx.mxcsr = 0x1f80 & !(4 << 7); // ZE unmasked
        let one = u128::from(1f32.to_bits());
        cpu.s.fx.xmm[0] = one * 0x0000_0001_0000_0001_0000_0001_0000_0001;
        cpu.s.fx.xmm[1] = one; // lanes 1-3 divide by zero
        let expect = if osxmmexcpt { Fault::exception(vector::XM) } else { Fault::ud() };
        assert_eq!(run_one(&mut cpu), Err(expect));
        assert_eq!(cpu.s.fx.xmm[0], one * 0x0000_0001_0000_0001_0000_0001_0000_0001, "destination unchanged");
        assert_eq!(cpu.s.fx.mxcsr & 0x3f, 4, "ZE recorded");
    }
    // Misaligned 16-byte operands of aligned forms: #GP(0).
    let code = asm(|a| a.movaps(xmm0, xmmword_ptr(rsi + 8)));
    let mut cpu = cpu_for(&code);
    cpu.s.gpr[reg::RSI] = MEM;
    assert_eq!(run_one(&mut cpu), Err(Fault::gp0()));
    let code = asm(|a| a.movups(xmm0, xmmword_ptr(rsi + 8)));
    let mut cpu = cpu_for(&code);
    cpu.s.gpr[reg::RSI] = MEM;
    assert_eq!(run_one(&mut cpu), Ok(()));
}

#[test]
fn stack_overflow_and_underflow_masked_responses() {
    // Nine pushes: the ninth overflows; the indefinite replaces ST(0).
    let code = asm(|a| {
        for _ in 0..9 {
            a.fld1()?;
        }
        a.fninit()?;
        a.fadd_2(st0, st1)
    });
    let mut cpu = cpu_for(&code);
    for _ in 0..8 {
        run_one(&mut cpu).unwrap();
    }
    assert_eq!(cpu.s.fx.fsw & 0x3fff, 0);
    run_one(&mut cpu).unwrap();
    let sw = cpu.s.fx.fsw;
    assert_eq!(sw & (0x41 | 0x200), 0x241, "IE, SF and C1 (overflow): {sw:#x}");
    assert!(st_bits(&cpu, 0) == INDEFINITE);
    run_one(&mut cpu).unwrap();
    run_one(&mut cpu).unwrap();
    let sw = cpu.s.fx.fsw;
    assert_eq!(sw & (0x41 | 0x200), 0x41, "IE, SF, C1 clear (underflow): {sw:#x}");
    assert!(st_bits(&cpu, 0) == INDEFINITE);
}

#[test]
fn rounding_control_and_precision_control() {
    // 1/3 under each rounding mode and precision, against the host.
    let cases = [Case::new("fdiv", |a| a.fdiv_2(st0, st1))];
    let mut fx = FxState::default();
    for rc in 0..4u16 {
        for pc in [0u16, 2, 3] {
            fx.fcw = 0x7f | pc << 8 | rc << 10;
            fx.fsw = 0;
            fx.ftw = 0xff;
            let one = f80_bytes(1);
            let three = f80_bytes(3);
            fx.st[0][..10].copy_from_slice(&one);
            fx.st[1][..10].copy_from_slice(&three);
            cases[0].check(&Area(fx.to_bytes()), &[0; 128], &Gprs([0, 0, 0, 0, 2]));
        }
    }
}

#[test]
fn transcendentals_are_close_to_the_host() {
    let cases = [
        Case::new("fsin", |a| a.fsin()),
        Case::new("fcos", |a| a.fcos()),
        Case::new("fsincos", |a| a.fsincos()),
        Case::new("fptan", |a| a.fptan()),
        Case::new("fpatan", |a| a.fpatan()),
        Case::new("f2xm1", |a| a.f2xm1()),
        Case::new("fyl2x", |a| a.fyl2x()),
        Case::new("fyl2xp1", |a| a.fyl2xp1()),
    ];
    let mut rng = Rng(2024);
    for c in &cases {
        for _ in 0..300 {
            // ST(0), ST(1) valid, room to push.
            let mut fx = FxState { fcw: 0x37f, ftw: 0x3f, ..FxState::default() };
            for i in 0..2 {
                let x = match c.name {
                    "f2xm1" => rng.next() as i64 as f64 / 2f64.powi(63),
                    "fyl2xp1" => rng.next() as i64 as f64 / 2f64.powi(65),
                    "fyl2x" if i == 0 => (rng.next() >> 11) as f64 * 2f64.powi(rng.below(80) as i32 - 60),
                    _ => (rng.next() as i64 as f64) * 2f64.powi(-(rng.below(70) as i32)),
                };
                let v = from_f64(x);
                fx.st[i][..10].copy_from_slice(&v);
            }
            let area = Area(fx.to_bytes());
            let (mut hfx, mut g) = (area, Gprs([0, 0, 0, 0, 2]));
            let mut buf = Buf([0; 128]);
            c.host.run(&mut hfx, &mut buf.0, &mut g);
            let (mut mem, mut eg) = ([0u8; 128], g);
            emu_run(&c.ins, &area, &mut mem, &mut eg).unwrap();
            let efx = EMU_FX.with(|x| *x.borrow());
            let (h, e) = (fx_view(&hfx, false), fx_view(&efx, false));
            // Same stack shape and C2; values within 2^-50 relative.
            assert_eq!(h[1].1 & 0x3c00, e[1].1 & 0x3c00, "{}: TOP/C2", c.name);
            assert_eq!(h[2], e[2], "{}: tags", c.name);
            for i in 0..2 {
                let hv = to_f64(h[4 + i].1);
                let ev = to_f64(e[4 + i].1);
                let tol = hv.abs() * 2f64.powi(-50) + 1e-300;
                assert!((hv - ev).abs() <= tol || hv.is_nan() && ev.is_nan(), "{}: ST({i}) host {hv:e} emu {ev:e}", c.name);
            }
        }
    }
}

// ---------------------------------------------------------------------
// 80-bit helpers for the tests.

const INDEFINITE: u128 = 0xffff_c000_0000_0000_0000;

/// ST(i) as its 80 bits.
fn st_bits(cpu: &Interpreter, i: usize) -> u128 {
    let img = cpu.fx_image();
    let mut b = [0u8; 16];
    b[..10].copy_from_slice(&img[32 + 16 * i..42 + 16 * i]);
    u128::from_le_bytes(b)
}

/// A positive integer as 80 bits.
fn f80_bytes(n: u64) -> [u8; 10] {
    let msb = 63 - n.leading_zeros() as u16;
    let v = u128::from(n << (63 - msb)) | u128::from(16383 + msb) << 64;
    v.to_le_bytes()[..10].try_into().unwrap()
}

/// A binary64 (normal or zero) as 80 bits.
fn from_f64(x: f64) -> [u8; 10] {
    let b = x.to_bits();
    let sign = ((b >> 63) as u16) << 15;
    let e = ((b >> 52) & 0x7ff) as u16;
    let v = if e == 0 {
        u128::from(sign) << 64
    } else {
        u128::from(1 << 63 | (b & ((1 << 52) - 1)) << 11) | u128::from(sign | (e + 16383 - 1023)) << 64
    };
    v.to_le_bytes()[..10].try_into().unwrap()
}

/// 80 bits as a binary64 (approximately; NaN for NaNs).
fn to_f64(v: u128) -> f64 {
    let sig = v as u64;
    let se = (v >> 64) as u16;
    let e = i32::from(se & 0x7fff);
    if e == 0x7fff {
        return if sig << 1 == 0 { f64::INFINITY } else { f64::NAN };
    }
    let m = sig as f64 * 2f64.powi((e.max(1) - 16383 - 63).max(-1074));
    if se & 0x8000 != 0 { -m } else { m }
}

#[test]
fn string_movsd_and_cmpsd_still_run() {
    let code = asm(|a| {
        a.mov(rsi, MEM)?;
        a.mov(rdi, MEM + 0x100)?;
        a.movsd()?;
        a.mov(rsi, MEM)?;
        a.mov(rdi, MEM + 0x100)?;
        a.cmpsd()
    });
    let mut cpu = cpu_for(&code);
    cpu.mem.write(MEM, &0x1234_5678u32.to_le_bytes()).unwrap();
    for _ in 0..6 {
        run_one(&mut cpu).unwrap();
    }
    assert_eq!(cpu.mem.read_u32(MEM + 0x100).unwrap(), 0x1234_5678);
    assert_ne!(cpu.s.flags() & flags::ZF, 0);
    assert_eq!(cpu.s.gpr[reg::RDI], MEM + 0x104);
}
