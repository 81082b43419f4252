//! Guest test programs, assembled at build time with iced-x86's code
//! assembler so the project needs no external assembler. Each program's
//! source is the Rust function that emits it; each prints over COM1 and
//! ends through the debug-exit port at 0xF4 (QEMU's `isa-debug-exit`).
//!
//! - [`real_mode_hello`]: a 64 KiB BIOS-style ROM that stays in real mode.
//! - [`long_mode_hello`]: a ROM that goes real → protected → long mode.
//! - [`multiboot_hello`]: an ELF32 multiboot kernel that checks its entry
//!   state.
//!
//! `cargo run -p test-roms -- DIR` writes them all to DIR, for running
//! under popek or `qemu-system-x86_64 -bios ROM` / `-kernel ELF`.

mod asm;
mod elf;
mod workloads;

pub use elf::elf32_multiboot;
pub use workloads::{memory, port_io, syscalls};

use iced_x86::code_asm::*;
use iced_x86::IcedError;

/// How a test program is booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootKind {
    /// `--bios`: the image is firmware started at the reset vector.
    Firmware,
    /// `--kernel`: the image is a multiboot kernel.
    Multiboot,
}

/// A test program and what it must print.
#[derive(Clone, Debug)]
pub struct TestRom {
    /// File-name stem.
    pub name: &'static str,
    /// How it boots.
    pub kind: BootKind,
    /// The image.
    pub image: Vec<u8>,
    /// Exactly what it prints on COM1.
    pub expected_serial: String,
    /// The value it writes to the debug-exit port.
    pub exit_value: u32,
}

impl TestRom {
    /// The popek (and QEMU) process exit status the program should cause.
    pub fn expected_status(&self) -> i32 {
        ((self.exit_value << 1) | 1) as i32
    }
}

/// The value every program writes to debug-exit on success.
pub const PASS: u32 = 0x10;

/// Offsets of the real-mode ROMs' strings in segment F000 (code assembled
/// for 16- and 32-bit mode cannot take a label's address, so data sits at
/// fixed places).
const RM_MSG: u32 = 0x8000;
const RM_MSG2: u32 = 0x8100;
/// Where the multiboot kernel's strings start, after its code.
const MB_DATA: u64 = 0x400;

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Lays out a 64 KiB ROM: `body` at offset 0 (F000:0000 once aliased
/// below 1 MiB) and a far jump to it at the reset vector.
fn rom64k(pieces: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut rom = vec![0xf4u8; 0x1_0000]; // HLT everywhere else
    for (off, code) in pieces {
        rom[*off..*off + code.len()].copy_from_slice(code);
    }
    // jmp far F000:0000
    rom[0xfff0..0xfff5].copy_from_slice(&[0xea, 0x00, 0x00, 0x00, 0xf0]);
    rom
}

fn build(name: &'static str, kind: BootKind, image: Result<Vec<u8>, IcedError>, expected: String) -> TestRom {
    // The programs are fixed; failing to assemble them is a bug here.
    let image = image.unwrap_or_else(|e| panic!("test ROM {name} does not assemble: {e}"));
    TestRom { name, kind, image, expected_serial: expected, exit_value: PASS }
}

/// Real mode only: sets up a stack, programs the UART, prints a greeting
/// and a sum computed in a loop, and exits.
pub fn real_mode_hello() -> TestRom {
    let greeting = "popek real-mode ROM: hello from F000\n";
    let image = (|| {
        let mut a = CodeAssembler::new(16)?;
        let mut putc = a.create_label();
        let mut puts = a.create_label();
        let mut puthex16 = a.create_label();
        let mut sum_loop = a.create_label();
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x7c00u32)?;
        a.mov(ax, cs)?;
        a.mov(ds, ax)?;
        asm::uart_init(&mut a)?;
        a.mov(si, RM_MSG)?;
        a.call(puts)?;
        // sum = 1 + 2 + ... + 100 = 5050 = 0x13ba
        a.xor(bx, bx)?;
        a.mov(cx, 100u32)?;
        a.set_label(&mut sum_loop)?;
        a.add(bx, cx)?;
        a.loop_(sum_loop)?;
        a.mov(si, RM_MSG2)?;
        a.call(puts)?;
        a.mov(ax, bx)?;
        a.call(puthex16)?;
        a.mov(al, b'\n' as u32)?;
        a.call(putc)?;
        asm::debug_exit(&mut a, PASS)?;
        asm::putc_routine(&mut a, &mut putc)?;
        asm::puts_routine16(&mut a, &mut puts, putc)?;
        asm::puthex16_routine(&mut a, &mut puthex16, putc)?;
        Ok(rom64k(&[
            (0, a.assemble(0)?),
            (RM_MSG as usize, cstr(greeting)),
            (RM_MSG2 as usize, cstr("sum(1..100)=0x")),
        ]))
    })();
    build("real-mode-hello", BootKind::Firmware, image, format!("{greeting}sum(1..100)=0x13ba\n"))
}

/// Echoes COM1 input back upper-cased until it reads `q`, polling the
/// line status register: exercises the console's input path.
pub fn serial_echo() -> TestRom {
    let image = (|| {
        let mut a = CodeAssembler::new(16)?;
        let mut putc = a.create_label();
        let mut poll = a.create_label();
        let mut quit = a.create_label();
        let mut not_lower = a.create_label();
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x7c00u32)?;
        asm::uart_init(&mut a)?;
        a.set_label(&mut poll)?;
        a.mov(dx, 0x3fdu32)?;
        a.in_(al, dx)?;
        a.test(al, 1)?; // data ready
        a.jz(poll)?;
        a.mov(dx, 0x3f8u32)?;
        a.in_(al, dx)?;
        a.cmp(al, b'q' as u32)?;
        a.je(quit)?;
        a.cmp(al, b'a' as u32)?;
        a.jb(not_lower)?;
        a.cmp(al, b'z' as u32)?;
        a.ja(not_lower)?;
        a.sub(al, 0x20)?;
        a.set_label(&mut not_lower)?;
        a.call(putc)?;
        a.jmp(poll)?;
        a.set_label(&mut quit)?;
        asm::debug_exit(&mut a, PASS)?;
        asm::putc_routine(&mut a, &mut putc)?;
        Ok(rom64k(&[(0, a.assemble(0)?)]))
    })();
    build("serial-echo", BootKind::Firmware, image, "HELLO, POPEK\n".to_string())
}

/// What to type at [`serial_echo`] for its expected output.
pub const SERIAL_ECHO_INPUT: &str = "hello, popek\nq";

/// Linear addresses of the long-mode ROM's pieces (ROM at 0xF0000).
const LM_PM32: u64 = 0xf_1000;
pub(crate) const LM_LM64: u64 = 0xf_2000;
const LM_GDT: u64 = 0xf_3000;
const LM_GDT_PTR: u64 = 0xf_3040;

/// Real mode → 32-bit protected mode → 4-level paging → 64-bit long mode,
/// then prints from each mode and a 64-bit product.
pub fn long_mode_hello() -> TestRom {
    let expected = "popek long-mode ROM: real mode\nprotected mode\nlong mode\n0x0123456789abcdef*3=0x0369d0369d0369cd\n";
    let image = (|| {
        // Real mode, at F000:0000.
        let mut r = CodeAssembler::new(16)?;
        let mut putc = r.create_label();
        let mut puts = r.create_label();
        r.cli()?;
        r.xor(ax, ax)?;
        r.mov(ss, ax)?;
        r.mov(sp, 0x7c00u32)?;
        r.mov(ax, cs)?;
        r.mov(ds, ax)?;
        asm::uart_init(&mut r)?;
        r.mov(si, RM_MSG)?;
        r.call(puts)?;
        r.lgdt(ptr((LM_GDT_PTR - 0xf_0000) as u32))?;
        r.mov(eax, cr0)?;
        r.or(eax, 1)?;
        r.mov(cr0, eax)?;
        // jmp dword 0x08:LM_PM32
        r.db(&[0x66, 0xea])?;
        r.db(&(LM_PM32 as u32).to_le_bytes())?;
        r.db(&0x08u16.to_le_bytes())?;
        asm::putc_routine(&mut r, &mut putc)?;
        asm::puts_routine16(&mut r, &mut puts, putc)?;

        // 32-bit protected mode: page tables at 0x1000, then long mode.
        let mut p = CodeAssembler::new(32)?;
        let mut putc32 = p.create_label();
        let mut puts32 = p.create_label();
        p.mov(eax, 0x10u32)?;
        p.mov(ds, ax)?;
        p.mov(es, ax)?;
        p.mov(ss, ax)?;
        p.mov(esp, 0x7c00u32)?;
        p.mov(esi, 0xf_0000 + RM_MSG2)?;
        p.call(puts32)?;
        p.mov(edi, 0x1000u32)?;
        p.xor(eax, eax)?;
        p.mov(ecx, 3 * 1024u32)?;
        p.rep().stosd()?;
        p.mov(dword_ptr(0x1000), 0x2003u32)?;
        p.mov(dword_ptr(0x2000), 0x3003u32)?;
        p.mov(dword_ptr(0x3000), 0x83u32)?; // one 2 MiB identity page
        p.mov(eax, cr4)?;
        p.or(eax, 0x20)?; // PAE
        p.mov(cr4, eax)?;
        p.mov(eax, 0x1000u32)?;
        p.mov(cr3, eax)?;
        p.mov(ecx, 0xc000_0080u32)?; // EFER
        p.rdmsr()?;
        p.or(eax, 0x100)?; // LME
        p.wrmsr()?;
        p.mov(eax, cr0)?;
        p.or(eax, 0x8000_0000u32 as i32)?; // PG
        p.mov(cr0, eax)?;
        // jmp 0x18:LM_LM64
        p.db(&[0xea])?;
        p.db(&(LM_LM64 as u32).to_le_bytes())?;
        p.db(&0x18u16.to_le_bytes())?;
        asm::putc_routine(&mut p, &mut putc32)?;
        asm::puts_routine32(&mut p, &mut puts32, putc32)?;

        // 64-bit long mode.
        let mut l = CodeAssembler::new(64)?;
        let mut lmsg = l.create_label();
        let mut prod = l.create_label();
        let mut putc64 = l.create_label();
        let mut puts64 = l.create_label();
        let mut puthex64 = l.create_label();
        l.mov(rsp, 0x7c00u64)?;
        l.lea(rsi, ptr(lmsg))?;
        l.call(puts64)?;
        l.lea(rsi, ptr(prod))?;
        l.call(puts64)?;
        l.mov(rax, 0x0123_4567_89ab_cdefu64)?;
        l.mov(rcx, 3u64)?;
        l.imul_2(rax, rcx)?;
        l.call(puthex64)?;
        l.mov(al, b'\n' as u32)?;
        l.call(putc64)?;
        asm::debug_exit(&mut l, PASS)?;
        asm::putc_routine(&mut l, &mut putc64)?;
        asm::puts_routine64(&mut l, &mut puts64, putc64)?;
        asm::puthex64_routine(&mut l, &mut puthex64, putc64)?;
        l.set_label(&mut lmsg)?;
        l.db(b"long mode\n\0")?;
        l.set_label(&mut prod)?;
        l.db(b"0x0123456789abcdef*3=0x\0")?;

        // GDT: null, 32-bit code, data, 64-bit code; then its pointer.
        let mut gdt = Vec::new();
        for d in [0u64, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff, 0x00af_9b00_0000_ffff] {
            gdt.extend_from_slice(&d.to_le_bytes());
        }
        let mut gdt_ptr = Vec::new();
        gdt_ptr.extend_from_slice(&31u16.to_le_bytes());
        gdt_ptr.extend_from_slice(&(LM_GDT as u32).to_le_bytes());

        Ok(rom64k(&[
            (0, r.assemble(0)?),
            ((LM_PM32 - 0xf_0000) as usize, p.assemble(LM_PM32)?),
            ((LM_LM64 - 0xf_0000) as usize, l.assemble(LM_LM64)?),
            ((LM_GDT - 0xf_0000) as usize, gdt),
            ((LM_GDT_PTR - 0xf_0000) as usize, gdt_ptr),
            (RM_MSG as usize, cstr("popek long-mode ROM: real mode\n")),
            (RM_MSG2 as usize, cstr("protected mode\n")),
        ]))
    })();
    build("long-mode-hello", BootKind::Firmware, image, expected.to_string())
}

/// Where the multiboot test kernel is linked.
pub const MULTIBOOT_LOAD_ADDR: u32 = 0x10_0000;

/// An ELF32 multiboot kernel that checks EAX holds the bootloader magic
/// and EBX's info structure reports memory, then prints mem_upper.
pub fn multiboot_hello() -> TestRom {
    // After the 12-byte multiboot header.
    let entry = u64::from(MULTIBOOT_LOAD_ADDR) + elf::CODE_OFFSET_IN_SEGMENT;
    let image = (|| {
        let mut a = CodeAssembler::new(32)?;
        let mut bad = a.create_label();
        let mut putc = a.create_label();
        let mut puts = a.create_label();
        let mut puthex32 = a.create_label();
        a.mov(esp, 0x7c00u32)?;
        a.mov(ebp, eax)?; // keep the magic across uart_init
        asm::uart_init(&mut a)?;
        a.cmp(ebp, 0x2bad_b002u32 as i32)?;
        a.jne(bad)?;
        a.test(dword_ptr(ebx), 1)?; // mem_lower/mem_upper valid
        a.jz(bad)?;
        a.mov(esi, (entry + MB_DATA) as u32)?;
        a.call(puts)?;
        a.mov(eax, dword_ptr(ebx + 8))?; // mem_upper
        a.call(puthex32)?;
        a.mov(al, b'\n' as u32)?;
        a.call(putc)?;
        asm::debug_exit(&mut a, PASS)?;
        a.set_label(&mut bad)?;
        a.mov(esi, (entry + MB_DATA + 0x80) as u32)?;
        a.call(puts)?;
        asm::debug_exit(&mut a, 0x11)?;
        asm::putc_routine(&mut a, &mut putc)?;
        asm::puts_routine32(&mut a, &mut puts, putc)?;
        asm::puthex32_routine(&mut a, &mut puthex32, putc)?;
        let mut body = a.assemble(entry)?;
        assert!(body.len() <= MB_DATA as usize, "multiboot test code outgrew its space");
        body.resize(MB_DATA as usize, 0xf4);
        body.extend(cstr("popek multiboot kernel: magic ok, mem_upper=0x"));
        body.resize(MB_DATA as usize + 0x80, 0);
        body.extend(cstr("popek multiboot kernel: bad entry state\n"));
        Ok(elf32_multiboot(MULTIBOOT_LOAD_ADDR, &body, 0x1000))
    })();
    // 32 MiB guests (the tests' size) have 31 MiB above 1 MiB.
    build(
        "multiboot-hello",
        BootKind::Multiboot,
        image,
        "popek multiboot kernel: magic ok, mem_upper=0x00007c00\n".to_string(),
    )
}

/// The workload of [`compute`]: each iteration is this many instructions.
pub const COMPUTE_INSTRUCTIONS_PER_ITERATION: u64 = 15;
pub(crate) const LCG_MUL: u64 = 6_364_136_223_846_793_005;
pub(crate) const LCG_ADD: u64 = 1_442_695_040_888_963_407;

/// What [`compute`] prints for `iterations`, computed here the slow way.
fn compute_expected(iterations: u32) -> (u64, u64) {
    let (mut x, mut acc, mut odd) = (1u64, 0u64, 0u64);
    for _ in 0..iterations {
        x = x.wrapping_mul(LCG_MUL).wrapping_add(LCG_ADD);
        acc ^= x >> 33;
        acc = acc.rotate_left(5);
        if x & 1 != 0 {
            odd += 1;
        }
    }
    (acc, odd)
}

/// A compute workload for benchmarks: long mode, then `iterations` rounds
/// of integer arithmetic (a 64-bit LCG, shifts, XOR), a read-modify-write
/// of memory, a call and a data-dependent branch; prints two checksums.
pub fn compute(iterations: u32) -> TestRom {
    let mut rom = long_mode_hello();
    let (acc, odd) = compute_expected(iterations);
    let image = (|| {
        let mut l = CodeAssembler::new(64)?;
        let mut top = l.create_label();
        let mut skip = l.create_label();
        let mut sub = l.create_label();
        let mut putc64 = l.create_label();
        let mut puthex64 = l.create_label();
        l.mov(rsp, 0x7c00u64)?;
        l.mov(ecx, iterations)?;
        l.mov(eax, 1u32)?;
        l.xor(ebx, ebx)?;
        l.xor(r10d, r10d)?;
        l.mov(edi, 0x8_0000u32)?;
        l.mov(r8, LCG_MUL)?;
        l.mov(r9, LCG_ADD)?;
        l.set_label(&mut top)?;
        l.imul_2(rax, r8)?;
        l.add(rax, r9)?;
        l.mov(rdx, rax)?;
        l.shr(rdx, 33)?;
        l.xor(rbx, rdx)?;
        l.and(edx, 0xff8)?;
        l.add(qword_ptr(rdi + rdx), rbx)?;
        l.call(sub)?;
        l.test(al, 1)?;
        l.jz(skip)?;
        l.inc(r10)?;
        l.set_label(&mut skip)?;
        l.dec(rcx)?;
        l.jnz(top)?;
        l.mov(rax, rbx)?;
        l.call(puthex64)?;
        l.mov(al, b' ' as u32)?;
        l.call(putc64)?;
        l.mov(rax, r10)?;
        l.call(puthex64)?;
        l.mov(al, b'\n' as u32)?;
        l.call(putc64)?;
        asm::debug_exit(&mut l, PASS)?;
        l.set_label(&mut sub)?;
        l.rol(rbx, 5)?;
        l.ret()?;
        asm::putc_routine(&mut l, &mut putc64)?;
        asm::puthex64_routine(&mut l, &mut puthex64, putc64)?;
        l.assemble(LM_LM64)
    })();
    let code = image.unwrap_or_else(|e| panic!("compute ROM does not assemble: {e}"));
    // Same real- and protected-mode path as long_mode_hello; only the
    // 64-bit part differs.
    let off = (LM_LM64 - 0xf_0000) as usize;
    rom.image[off..off + 0x1000].fill(0xf4);
    rom.image[off..off + code.len()].copy_from_slice(&code);
    rom.name = "compute";
    rom.expected_serial = format!("popek long-mode ROM: real mode\nprotected mode\n{acc:016x} {odd:016x}\n");
    rom
}

/// Replaces the 64-bit part of [`long_mode_hello`] with `code` (assembled
/// at LM_LM64), keeping its way up through real and protected mode.
pub(crate) fn long_mode_rom(name: &'static str, code: Result<Vec<u8>, IcedError>, expected_tail: &str) -> TestRom {
    let mut rom = long_mode_hello();
    let code = code.unwrap_or_else(|e| panic!("test ROM {name} does not assemble: {e}"));
    let off = (LM_LM64 - 0xf_0000) as usize;
    assert!(code.len() <= (LM_GDT - LM_LM64) as usize, "{name} outgrew its space");
    rom.image[off..(LM_GDT - 0xf_0000) as usize].fill(0xf4);
    rom.image[off..off + code.len()].copy_from_slice(&code);
    rom.name = name;
    rom.expected_serial = format!("popek long-mode ROM: real mode\nprotected mode\n{expected_tail}");
    rom
}

/// One exception or interrupt the exceptions ROM raises, and what its
/// handler must see: (vector, error code or None, CR2 for #PF).
const EXCEPTION_CASES: [(u8, Option<u64>, u64); 8] = [
    (0x00, None, 0),
    (0x06, None, 0),
    (0x03, None, 0),
    (0x0d, Some(0x1234), 0),
    (0x0d, Some(0), 0),
    (0x0e, Some(0), 0x4000_0000),
    (0x0e, Some(3), 0x20_0000),
    (0x80, None, 0),
];

/// Long mode: exceptions with their error codes and CR2 (#DE, #UD, #BP,
/// #GP for a bad selector and a non-canonical address, #PF for a missing
/// page and a write to a read-only page under CR0.WP), INT 0x80, the
/// accessed and dirty bits of a page walk, and the local APIC timer.
pub fn exceptions() -> TestRom {
    let mut expected = String::new();
    for (v, err, fault_addr) in EXCEPTION_CASES {
        expected.push_str(&format!("exc {:016x} {:016x} {fault_addr:016x}\n", u64::from(v), err.unwrap_or(u64::MAX)));
    }
    // The read-only page's PDE after a read: present | accessed | PS.
    expected.insert_str(expected.find("exc 000000000000000e 0000000000000003").unwrap_or(0), "pde 00000000002000a1\n");
    expected.push_str("lapic timer: 5 ticks\n");
    const IDT: u64 = 0x5000;
    const RESUME: u64 = 0x500;
    const TICKS: u64 = 0x508;
    let code = (|| {
        let mut l = CodeAssembler::new(64)?;
        let mut putc = l.create_label();
        let mut puthex = l.create_label();
        let mut common = l.create_label();
        let mut idtr = l.create_label();
        let mut msg_exc = l.create_label();
        let mut msg_pde = l.create_label();
        let mut msg_timer = l.create_label();
        let mut puts = l.create_label();
        let mut timer = l.create_label();
        let mut spurious = l.create_label();
        let mut wait = l.create_label();
        // One stub per vector: it pushes a dummy error code where the CPU
        // pushes none, then its vector.
        let vectors: [(u64, bool); 6] = [(0, false), (3, false), (6, false), (0x80, false), (13, true), (14, true)];
        let mut stubs: Vec<CodeLabel> = vectors.iter().map(|_| l.create_label()).collect();
        l.mov(rsp, 0x7c00u64)?;
        // More page tables: 2..4 MiB read-only, the local APIC's page.
        l.mov(qword_ptr(0x3008), 0x20_0081)?;
        l.mov(qword_ptr(0x2018), 0x4003)?;
        l.mov(rax, 0xfee0_0093u64)?;
        l.mov(qword_ptr(0x4000 + 8 * 0x1f7), rax)?;
        l.mov(rax, cr3)?;
        l.mov(cr3, rax)?;
        l.mov(rax, cr0)?;
        l.or(eax, 0x1_0000)?; // WP
        l.mov(cr0, rax)?;
        // IDT: interrupt gates to the stubs.
        let gates: Vec<(u64, CodeLabel)> =
            vectors.iter().zip(&stubs).map(|(&(v, _), &s)| (v, s)).chain([(0x40, timer), (0xff, spurious)]).collect();
        for (v, target) in gates {
            asm::interrupt_gate64(&mut l, IDT, v, target)?;
        }
        l.lidt(ptr(idtr))?;
        // The cases, each resuming at the label after it.
        let case = |l: &mut CodeAssembler, trigger: &dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>| -> Result<(), IcedError> {
            let mut resume = l.create_label();
            l.lea(rax, ptr(resume))?;
            l.mov(qword_ptr(RESUME), rax)?;
            trigger(l)?;
            l.set_label(&mut resume)?;
            l.nop()
        };
        case(&mut l, &|l| {
            l.xor(ecx, ecx)?;
            l.div(ecx)
        })?;
        case(&mut l, &|l| l.ud2())?;
        case(&mut l, &|l| l.int3())?;
        case(&mut l, &|l| {
            l.mov(ax, 0x1234u32)?;
            l.mov(ds, ax)
        })?;
        case(&mut l, &|l| {
            l.mov(rax, 0x8000_0000_0000_0000u64)?;
            l.mov(rbx, qword_ptr(rax))
        })?;
        case(&mut l, &|l| {
            l.mov(eax, 0x4000_0000u32)?;
            l.mov(rbx, qword_ptr(rax))
        })?;
        // Read the read-only page (sets A), show its PDE, then write it.
        l.mov(eax, 0x20_0000u32)?;
        l.mov(rbx, qword_ptr(rax))?;
        l.lea(rsi, ptr(msg_pde))?;
        l.call(puts)?;
        l.mov(rax, qword_ptr(0x3008))?;
        l.call(puthex)?;
        l.mov(al, b'\n' as u32)?;
        l.call(putc)?;
        case(&mut l, &|l| {
            l.mov(eax, 0x20_0000u32)?;
            l.mov(byte_ptr(rax), 1u32)
        })?;
        case(&mut l, &|l| l.int(0x80))?;
        // The LAPIC timer: periodic, vector 0x40, five ticks. Mask the
        // 8259s first: nothing programmed them, so the PIT's IRQ0 (counting
        // since reset, as on a PC) would arrive through LINT0 as vector 0
        // while interrupts are open.
        l.mov(al, 0xffu32)?;
        l.out(0x21, al)?;
        l.out(0xa1, al)?;
        l.mov(rdi, 0xfee0_0000u64)?;
        l.mov(dword_ptr(rdi + 0xf0), 0x1ffu32)?;
        l.mov(dword_ptr(rdi + 0x3e0), 0xbu32)?;
        l.mov(dword_ptr(rdi + 0x320), 0x2_0040u32)?;
        l.mov(qword_ptr(TICKS), 0)?;
        l.mov(dword_ptr(rdi + 0x380), 100_000u32)?;
        l.sti()?;
        l.set_label(&mut wait)?;
        l.hlt()?;
        l.cmp(qword_ptr(TICKS), 5)?;
        l.jb(wait)?;
        l.cli()?;
        l.mov(dword_ptr(rdi + 0x320), 0x1_0000u32)?;
        l.lea(rsi, ptr(msg_timer))?;
        l.call(puts)?;
        asm::debug_exit(&mut l, PASS)?;

        for (&(v, has_code), stub) in vectors.iter().zip(stubs.iter_mut()) {
            l.set_label(stub)?;
            if !has_code {
                l.push(-1)?;
            }
            l.push(v as i32)?;
            l.jmp(common)?;
        }
        l.set_label(&mut timer)?;
        l.inc(qword_ptr(TICKS))?;
        l.push(rax)?;
        l.mov(rax, 0xfee0_00b0u64)?;
        l.mov(dword_ptr(rax), 0u32)?;
        l.pop(rax)?;
        l.iretq()?;
        l.set_label(&mut spurious)?;
        l.iretq()?;
        // common: [rsp] = vector, [rsp + 8] = error code.
        l.set_label(&mut common)?;
        l.lea(rsi, ptr(msg_exc))?;
        l.call(puts)?;
        l.pop(rax)?;
        l.call(puthex)?;
        l.mov(al, b' ' as u32)?;
        l.call(putc)?;
        l.pop(rax)?;
        l.call(puthex)?;
        l.mov(al, b' ' as u32)?;
        l.call(putc)?;
        l.mov(rax, cr2)?;
        l.call(puthex)?;
        l.mov(al, b'\n' as u32)?;
        l.call(putc)?;
        l.xor(eax, eax)?;
        l.mov(cr2, rax)?;
        l.mov(rax, qword_ptr(RESUME))?;
        l.mov(qword_ptr(rsp), rax)?;
        l.iretq()?;
        asm::putc_routine(&mut l, &mut putc)?;
        asm::puts_routine64(&mut l, &mut puts, putc)?;
        asm::puthex64_routine(&mut l, &mut puthex, putc)?;
        l.set_label(&mut idtr)?;
        l.dw(&[0xfff])?;
        l.dq(&[IDT])?;
        l.set_label(&mut msg_exc)?;
        l.db(b"exc \0")?;
        l.set_label(&mut msg_pde)?;
        l.db(b"pde \0")?;
        l.set_label(&mut msg_timer)?;
        l.db(b"lapic timer: 5 ticks\n\0")?;
        l.assemble(LM_LM64)
    })();
    long_mode_rom("exceptions", code, &expected)
}

/// Real mode: the PIT at 1 kHz through the 8259, counted by an IRQ0
/// handler in the IVT while the CPU halts between ticks.
pub fn pit_timer() -> TestRom {
    const HANDLER: u32 = 0x9000;
    let image = (|| {
        let mut a = CodeAssembler::new(16)?;
        let mut putc = a.create_label();
        let mut puts = a.create_label();
        let mut wait = a.create_label();
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x7c00u32)?;
        a.mov(ds, ax)?;
        a.mov(word_ptr(0x20), HANDLER)?;
        a.mov(word_ptr(0x22), 0xf000u32)?;
        a.mov(word_ptr(0x500), 0u32)?;
        asm::uart_init(&mut a)?;
        // 8259: ICW1-ICW4, vectors 0x08 and 0x70, only IRQ0 unmasked.
        for (port, v) in [(0x20u32, 0x11u32), (0x21, 0x08), (0x21, 0x04), (0x21, 0x01), (0x21, 0xfe), (0xa0, 0x11), (0xa1, 0x70), (0xa1, 0x02), (0xa1, 0x01), (0xa1, 0xff)] {
            a.mov(al, v)?;
            a.out(port, al)?;
        }
        // PIT channel 0, mode 2, 1193 counts: 1 kHz.
        a.mov(al, 0x34u32)?;
        a.out(0x43u32, al)?;
        a.mov(al, 0xa9u32)?;
        a.out(0x40u32, al)?;
        a.mov(al, 0x04u32)?;
        a.out(0x40u32, al)?;
        a.sti()?;
        a.set_label(&mut wait)?;
        a.hlt()?;
        a.cmp(word_ptr(0x500), 10)?;
        a.jb(wait)?;
        a.cli()?;
        a.mov(ax, cs)?;
        a.mov(ds, ax)?;
        a.mov(si, RM_MSG)?;
        a.call(puts)?;
        asm::debug_exit(&mut a, PASS)?;
        asm::putc_routine(&mut a, &mut putc)?;
        asm::puts_routine16(&mut a, &mut puts, putc)?;

        let mut h = CodeAssembler::new(16)?;
        h.push(ax)?;
        h.push(ds)?;
        h.xor(ax, ax)?;
        h.mov(ds, ax)?;
        h.inc(word_ptr(0x500))?;
        h.mov(al, 0x20u32)?;
        h.out(0x20u32, al)?;
        h.pop(ds)?;
        h.pop(ax)?;
        h.iret()?;
        Ok(rom64k(&[
            (0, a.assemble(0)?),
            (HANDLER as usize, h.assemble(u64::from(HANDLER))?),
            (RM_MSG as usize, cstr("pit: 10 ticks through the 8259\n")),
        ]))
    })();
    build("pit-timer", BootKind::Firmware, image, "pit: 10 ticks through the 8259\n".to_string())
}

/// Memory the test programs are run with, in bytes.
pub const TEST_MEMORY: u64 = 32 << 20;

/// The workloads at benchmark sizes (each runs for a second or more under
/// an interpreter), for `write-test-roms --bench`.
pub fn bench_workloads() -> Vec<TestRom> {
    vec![compute(20_000_000), memory(5_000_000), syscalls(500_000), port_io(1_000_000)]
}

/// Every test program.
pub fn all() -> Vec<TestRom> {
    vec![
        real_mode_hello(),
        long_mode_hello(),
        multiboot_hello(),
        serial_echo(),
        compute(1_000_000),
        exceptions(),
        pit_timer(),
        memory(200_000),
        syscalls(20_000),
        port_io(20_000),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roms_have_the_reset_vector_and_fit() {
        for rom in [real_mode_hello(), long_mode_hello()] {
            assert_eq!(rom.image.len(), 0x1_0000, "{}", rom.name);
            assert_eq!(&rom.image[0xfff0..0xfff5], &[0xea, 0, 0, 0, 0xf0]);
            assert_eq!(rom.expected_status(), 33);
        }
    }

    #[test]
    fn multiboot_kernel_has_a_header_in_the_first_8k() {
        let k = multiboot_hello().image;
        let found = (0..8192).step_by(4).any(|o| k.get(o..o + 4) == Some(&0x1bad_b002u32.to_le_bytes()[..]));
        assert!(found);
        assert_eq!(&k[..4], b"\x7fELF");
    }
}
