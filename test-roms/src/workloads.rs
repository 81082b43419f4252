//! Workloads for comparing backends (`bench/`, `scripts/compare-qemu-roms.sh`):
//! long-mode programs that each stress one part of a CPU backend and print
//! a result the host computes too, so a fast wrong answer cannot pass.
//!
//! - [`memory`]: loads and stores scattered over 16 MiB mapped with 4 KiB
//!   pages: TLB misses and page walks.
//! - [`syscalls`]: INT 0x80, a #UD fault and SYSCALL per iteration, each
//!   handled and returned from: exception and interrupt delivery.
//! - [`port_io`]: port writes and reads (POST port, CMOS): exits to the
//!   VMM under KVM, device dispatch under the software backends.
//!
//! [`compute`](crate::compute) is the integer/branch workload.

use iced_x86::code_asm::*;

use crate::{asm, long_mode_rom, TestRom, LCG_ADD, LCG_MUL, PASS};

/// Where [`memory`]'s page tables go (inside the first 2 MiB, which stays
/// one large page), and the region it scatters over.
const MEM_PAGE_TABLES: u64 = 0x10_0000;
const MEM_BASE: u64 = 4 << 20;
const MEM_PAGES: u64 = 4096;

/// What [`memory`] prints for `iterations`: the running sum of the words
/// it read, computed over a model of the same memory.
fn memory_expected(iterations: u32) -> u64 {
    let mut words = vec![0u64; (MEM_PAGES * 4096 / 8) as usize];
    let (mut x, mut sum) = (1u64, 0u64);
    for _ in 0..iterations {
        x = x.wrapping_mul(LCG_MUL).wrapping_add(LCG_ADD);
        let index = ((x >> 24) & (MEM_PAGES * 4096 / 8 - 1)) as usize;
        sum = sum.wrapping_add(words[index]);
        words[index] = words[index].wrapping_add(x);
    }
    sum
}

/// Memory-bound: each iteration reads and updates a 64-bit word at an
/// LCG-chosen offset in 16 MiB mapped with 4 KiB pages (4096 pages, more
/// than a soft TLB holds), then prints the sum of everything it read.
pub fn memory(iterations: u32) -> TestRom {
    let code = (|| {
        let mut l = CodeAssembler::new(64)?;
        let mut pd_loop = l.create_label();
        let mut pt_loop = l.create_label();
        let mut top = l.create_label();
        let putc = l.create_label();
        let puthex = l.create_label();
        l.mov(rsp, 0x7c00u64)?;
        // PD entries 1-15 (2-32 MiB) point at page tables that map the same
        // addresses with 4 KiB pages; entry 0 stays a 2 MiB page.
        l.mov(esi, 1u32)?; // PD index
        l.set_label(&mut pd_loop)?;
        l.mov(rdi, rsi)?;
        l.shl(rdi, 12)?;
        l.add(rdi, MEM_PAGE_TABLES as i32)?; // this page table
        l.lea(rax, qword_ptr(rdi + 3))?;
        l.mov(qword_ptr(rsi * 8 + 0x3000), rax)?;
        l.mov(rax, rsi)?;
        l.shl(rax, 21)?;
        l.or(rax, 3)?; // first page of this 2 MiB, present and writable
        l.xor(ecx, ecx)?;
        l.set_label(&mut pt_loop)?;
        l.mov(qword_ptr(rdi + rcx * 8), rax)?;
        l.add(rax, 0x1000)?;
        l.inc(ecx)?;
        l.cmp(ecx, 512)?;
        l.jb(pt_loop)?;
        l.inc(esi)?;
        l.cmp(esi, 16)?;
        l.jb(pd_loop)?;
        l.mov(rax, cr3)?;
        l.mov(cr3, rax)?;
        // Zero the region (the guest's RAM starts zeroed, but say so).
        l.mov(edi, MEM_BASE as u32)?;
        l.mov(ecx, (MEM_PAGES * 4096 / 8) as u32)?;
        l.xor(eax, eax)?;
        l.rep().stosq()?;
        // The loop: rax = LCG state, rbx = sum.
        l.mov(ecx, iterations)?;
        l.mov(eax, 1u32)?;
        l.xor(ebx, ebx)?;
        l.mov(r8, LCG_MUL)?;
        l.mov(r9, LCG_ADD)?;
        l.mov(r10, MEM_BASE)?;
        l.set_label(&mut top)?;
        l.imul_2(rax, r8)?;
        l.add(rax, r9)?;
        l.mov(rdx, rax)?;
        l.shr(rdx, 24)?;
        l.and(edx, (MEM_PAGES * 4096 / 8 - 1) as u32)?;
        l.add(rbx, qword_ptr(r10 + rdx * 8))?;
        l.add(qword_ptr(r10 + rdx * 8), rax)?;
        l.dec(ecx)?;
        l.jnz(top)?;
        print_rbx_pass_and_assemble(l, putc, puthex)
    })();
    long_mode_rom("memory", code, &format!("{:016x}\n", memory_expected(iterations)))
}

/// The end of [`memory`] and [`port_io`]: prints RBX in hex on a line,
/// exits through debug-exit with PASS, and appends the output routines
/// the program's `putc` and `puthex` labels name.
fn print_rbx_pass_and_assemble(mut l: CodeAssembler, mut putc: CodeLabel, mut puthex: CodeLabel) -> Result<Vec<u8>, iced_x86::IcedError> {
    l.mov(rax, rbx)?;
    l.call(puthex)?;
    l.mov(al, b'\n' as u32)?;
    l.call(putc)?;
    asm::debug_exit(&mut l, PASS)?;
    asm::putc_routine(&mut l, &mut putc)?;
    asm::puthex64_routine(&mut l, &mut puthex, putc)?;
    l.assemble(crate::LM_LM64)
}

/// Where [`syscalls`] keeps its IDT and counters.
const SYS_IDT: u64 = 0x5000;
const SYS_INT_COUNT: u64 = 0x600;
const SYS_UD_COUNT: u64 = 0x608;

/// Exception- and system-call-heavy: each iteration takes INT 0x80 (an
/// interrupt gate whose handler counts and IRETQs), a #UD from UD2 (the
/// handler steps over it) and a SYSCALL (to a ring-0 handler that counts
/// and returns with the saved RFLAGS and RIP). Prints the three counts.
pub fn syscalls(iterations: u32) -> TestRom {
    let code = (|| {
        let mut l = CodeAssembler::new(64)?;
        let mut int80 = l.create_label();
        let mut ud = l.create_label();
        let mut sys = l.create_label();
        let mut idtr = l.create_label();
        let mut top = l.create_label();
        let mut putc = l.create_label();
        let mut puthex = l.create_label();
        l.mov(rsp, 0x7c00u64)?;
        for (v, target) in [(0x80u64, int80), (6, ud)] {
            asm::interrupt_gate64(&mut l, SYS_IDT, v, target)?;
        }
        l.lidt(ptr(idtr))?;
        // SYSCALL: EFER.SCE, CS from STAR[47:32] (our code selector),
        // LSTAR the handler, no RFLAGS bits masked.
        l.mov(ecx, 0xc000_0080u32)?;
        l.rdmsr()?;
        l.or(eax, 1)?;
        l.wrmsr()?;
        l.mov(ecx, 0xc000_0081u32)?;
        l.xor(eax, eax)?;
        l.mov(edx, 0x18u32)?;
        l.wrmsr()?;
        l.mov(ecx, 0xc000_0082u32)?;
        l.lea(rax, ptr(sys))?;
        l.mov(rdx, rax)?;
        l.shr(rdx, 32)?;
        l.wrmsr()?;
        l.mov(ecx, 0xc000_0084u32)?;
        l.xor(eax, eax)?;
        l.xor(edx, edx)?;
        l.wrmsr()?;
        l.mov(qword_ptr(SYS_INT_COUNT), 0)?;
        l.mov(qword_ptr(SYS_UD_COUNT), 0)?;
        l.xor(r12d, r12d)?;
        l.mov(r13d, iterations)?;
        l.set_label(&mut top)?;
        l.int(0x80)?;
        l.ud2()?;
        l.syscall()?;
        l.dec(r13d)?;
        l.jnz(top)?;
        for counter in [qword_ptr(SYS_INT_COUNT), qword_ptr(SYS_UD_COUNT)] {
            l.mov(rax, counter)?;
            l.call(puthex)?;
            l.mov(al, b' ' as u32)?;
            l.call(putc)?;
        }
        l.mov(rax, r12)?;
        l.call(puthex)?;
        l.mov(al, b'\n' as u32)?;
        l.call(putc)?;
        asm::debug_exit(&mut l, PASS)?;
        l.set_label(&mut int80)?;
        l.inc(qword_ptr(SYS_INT_COUNT))?;
        l.iretq()?;
        l.set_label(&mut ud)?;
        l.inc(qword_ptr(SYS_UD_COUNT))?;
        l.add(qword_ptr(rsp), 2)?; // past the UD2
        l.iretq()?;
        l.set_label(&mut sys)?;
        // SYSCALL loaded SS with STAR[47:32] + 8, which this GDT lacks;
        // IRETQ would fault on it later, so take the data selector back.
        l.mov(eax, 0x10u32)?;
        l.mov(ss, ax)?;
        l.inc(r12)?;
        l.push(r11)?;
        l.popfq()?;
        l.jmp(rcx)?;
        l.set_label(&mut idtr)?;
        l.dw(&[0xfff])?;
        l.dq(&[SYS_IDT])?;
        asm::putc_routine(&mut l, &mut putc)?;
        asm::puthex64_routine(&mut l, &mut puthex, putc)?;
        l.assemble(crate::LM_LM64)
    })();
    let n = u64::from(iterations);
    long_mode_rom("syscalls", code, &format!("{n:016x} {n:016x} {n:016x}\n"))
}

/// Port-I/O-heavy: each iteration writes the POST port (0x80) and reads
/// the CMOS data port (0x71, index 0x0F, the shutdown status byte): two
/// exits under KVM. Prints the iteration count.
pub fn port_io(iterations: u32) -> TestRom {
    let code = (|| {
        let mut l = CodeAssembler::new(64)?;
        let mut top = l.create_label();
        let putc = l.create_label();
        let puthex = l.create_label();
        l.mov(rsp, 0x7c00u64)?;
        l.mov(al, 0x0fu32)?;
        l.out(0x70, al)?;
        l.mov(ecx, iterations)?;
        l.xor(ebx, ebx)?;
        l.set_label(&mut top)?;
        l.mov(eax, ecx)?;
        l.out(0x80, al)?;
        l.in_(al, 0x71)?;
        l.inc(rbx)?;
        l.dec(ecx)?;
        l.jnz(top)?;
        print_rbx_pass_and_assemble(l, putc, puthex)
    })();
    long_mode_rom("port-io", code, &format!("{:016x}\n", u64::from(iterations)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_assemble_and_fit() {
        for rom in [memory(1000), syscalls(1000), port_io(1000)] {
            assert_eq!(rom.image.len(), 0x1_0000, "{}", rom.name);
            assert!(rom.expected_serial.ends_with('\n'));
        }
    }

    #[test]
    fn memory_expectation_reads_back_what_it_wrote() {
        assert_eq!(memory_expected(0), 0);
        // Two iterations rarely hit the same word: the sum stays 0.
        assert_eq!(memory_expected(2), 0);
        assert_ne!(memory_expected(200_000), 0);
    }
}
