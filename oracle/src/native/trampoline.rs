//! The control block and the machine-code stubs that switch between the
//! host and a snippet.
//!
//! The host calls the entry stub as a plain `extern "sysv64" fn() -> u64`.
//! Everything else travels through the [`ControlBlock`] at `CONTROL_BASE`,
//! which the stubs address with absolute 32-bit displacements so that they
//! need no free register:
//!
//! * entry: push the callee-saved registers, save MXCSR and RSP in the
//!   control block, load XMM0-15, MXCSR, RFLAGS (push/popfq on the host
//!   stack, so the snippet's stack is untouched), the 15 GPRs other than
//!   RSP, then RSP, and jump to the snippet;
//! * the snippet ends with `jmp EXIT_ADDR`;
//! * exit: store the 16 GPRs, switch back to the host stack, store RFLAGS,
//!   XMM0-15 and MXCSR, restore the host MXCSR, clear DF, return 0;
//! * recovery (entered from the fault handler with RSP = saved host RSP):
//!   restore the host MXCSR, clear DF, return 1.

use std::mem::offset_of;

use iced_x86::code_asm::*;
use iced_x86::{Code, Encoder, IcedError, Instruction};

use crate::layout::{CONTROL_BASE, CONTROL_SIZE, ENTRY_ADDR, EPILOGUE_SIZE, EXIT_ADDR, RECOVERY_ADDR, SNIPPET_ADDR};
use crate::state::{reg, UserState};

/// What the signal handler records about a fault in the code region.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FaultRecord {
    /// The signal number.
    pub signal: i32,
    /// `si_code`.
    pub si_code: i32,
    /// The exception vector the kernel reported (`REG_TRAPNO`).
    pub trapno: u64,
    /// The exception error code (`REG_ERR`).
    pub error_code: u64,
    /// `si_addr`: the faulting data address for #PF, else the RIP or 0.
    pub address: u64,
    /// RIP at the fault.
    pub rip: u64,
    /// Registers at the fault.
    pub state: UserState,
}

/// The host-only block at `CONTROL_BASE` through which the host and the
/// stubs talk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ControlBlock {
    /// The state to load, already in loadable form.
    pub input: UserState,
    /// The state the exit stub stored.
    pub output: UserState,
    /// The host RSP after the entry stub's pushes.
    pub host_rsp: u64,
    /// The host MXCSR.
    pub host_mxcsr: u32,
    /// Filled by the signal handler.
    pub fault: FaultRecord,
}

const _: () = assert!(std::mem::size_of::<ControlBlock>() <= CONTROL_SIZE);

/// The control block, as a raw pointer (it lives in a fixed mapping).
pub(crate) const CONTROL: *mut ControlBlock = CONTROL_BASE as *mut ControlBlock;

/// Absolute address of a field at `offset` within the control block.
const fn control_field(offset: usize) -> u64 {
    CONTROL_BASE + offset as u64
}

const INPUT: usize = offset_of!(ControlBlock, input);
const OUTPUT: usize = offset_of!(ControlBlock, output);
const HOST_RSP: u64 = control_field(offset_of!(ControlBlock, host_rsp));
const HOST_MXCSR: u64 = control_field(offset_of!(ControlBlock, host_mxcsr));

fn gpr_slot(state: usize, index: usize) -> u64 {
    control_field(state + offset_of!(UserState, gpr) + 8 * index)
}

fn xmm_slot(state: usize, index: usize) -> u64 {
    control_field(state + offset_of!(UserState, xmm) + 16 * index)
}

fn rflags_slot(state: usize) -> u64 {
    control_field(state + offset_of!(UserState, rflags))
}

fn mxcsr_slot(state: usize) -> u64 {
    control_field(state + offset_of!(UserState, mxcsr))
}

const GPRS: [AsmRegister64; 16] = [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
const XMMS: [AsmRegisterXmm; 16] = [
    xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14, xmm15,
];
/// Callee-saved registers of the SysV ABI, in push order.
const CALLEE_SAVED: [AsmRegister64; 6] = [rbx, rbp, r12, r13, r14, r15];

/// The three stubs, each to be copied to its fixed address.
pub(crate) struct Stubs {
    pub entry: Vec<u8>,
    pub exit: Vec<u8>,
    pub recovery: Vec<u8>,
}

/// Assembles the stubs.
pub(crate) fn build_stubs() -> Result<Stubs, IcedError> {
    Ok(Stubs { entry: entry_stub()?, exit: exit_stub()?, recovery: recovery_stub()? })
}

fn entry_stub() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    for register in CALLEE_SAVED {
        a.push(register)?;
    }
    a.stmxcsr(dword_ptr(HOST_MXCSR))?;
    a.mov(qword_ptr(HOST_RSP), rsp)?;
    for (index, register) in XMMS.into_iter().enumerate() {
        a.movdqu(register, xmmword_ptr(xmm_slot(INPUT, index)))?;
    }
    a.ldmxcsr(dword_ptr(mxcsr_slot(INPUT)))?;
    // On the host stack, so that the snippet's stack holds only what the
    // interpreter's will.
    a.push(qword_ptr(rflags_slot(INPUT)))?;
    a.popfq()?;
    for (index, register) in GPRS.into_iter().enumerate() {
        if index != reg::RSP {
            a.mov(register, qword_ptr(gpr_slot(INPUT, index)))?;
        }
    }
    a.mov(rsp, qword_ptr(gpr_slot(INPUT, reg::RSP)))?;
    a.jmp(SNIPPET_ADDR)?;
    a.assemble(ENTRY_ADDR)
}

fn exit_stub() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    // MOV leaves the flags alone, so they are still the snippet's below.
    for (index, register) in GPRS.into_iter().enumerate() {
        a.mov(qword_ptr(gpr_slot(OUTPUT, index)), register)?;
    }
    a.mov(rsp, qword_ptr(HOST_RSP))?;
    a.pushfq()?;
    a.pop(qword_ptr(rflags_slot(OUTPUT)))?;
    for (index, register) in XMMS.into_iter().enumerate() {
        a.movdqu(xmmword_ptr(xmm_slot(OUTPUT, index)), register)?;
    }
    a.stmxcsr(dword_ptr(mxcsr_slot(OUTPUT)))?;
    return_to_host(&mut a, 0)?;
    a.assemble(EXIT_ADDR)
}

fn recovery_stub() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    return_to_host(&mut a, 1)?;
    a.assemble(RECOVERY_ADDR)
}

/// Restores what the ABI promises the caller and returns `status`; RSP
/// must already be the saved host RSP.
fn return_to_host(a: &mut CodeAssembler, status: u32) -> Result<(), IcedError> {
    a.ldmxcsr(dword_ptr(HOST_MXCSR))?;
    a.cld()?;
    a.mov(eax, status)?;
    for register in CALLEE_SAVED.into_iter().rev() {
        a.pop(register)?;
    }
    a.ret()
}

/// The bytes that end every snippet: `jmp EXIT_ADDR`, encoded for a
/// snippet of `snippet_len` bytes.
pub(crate) fn epilogue(snippet_len: usize) -> Result<Vec<u8>, IcedError> {
    let jump = Instruction::with_branch(Code::Jmp_rel32_64, EXIT_ADDR)?;
    let mut encoder = Encoder::new(64);
    encoder.encode(&jump, SNIPPET_ADDR + snippet_len as u64)?;
    let bytes = encoder.take_buffer();
    debug_assert!(bytes.len() <= EPILOGUE_SIZE);
    Ok(bytes)
}
