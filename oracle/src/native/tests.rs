//! Tests of the native runner. Each creates its own runner; they serialize
//! on the runner lock.

use iced_x86::code_asm::*;

use super::*;
use crate::layout::STACK_TOP;
use crate::state::reg;

/// Assembles a snippet at SNIPPET_ADDR.
fn assemble(build: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Vec<u8> {
    let mut assembler = CodeAssembler::new(64).unwrap();
    build(&mut assembler).unwrap();
    assembler.assemble(SNIPPET_ADDR).unwrap()
}

/// A state with distinct values everywhere, RBX/RSP pointing at the data
/// region.
fn sample_state() -> UserState {
    let mut state = UserState::default();
    for (index, value) in state.gpr.iter_mut().enumerate() {
        *value = 0x1111_1111_1111_1111u64.wrapping_mul(index as u64 + 1) ^ 0x0123_4567_89AB_CDEF;
    }
    state.gpr[reg::RBX] = DATA_BASE;
    state.gpr[reg::RSP] = STACK_TOP;
    state.rflags = flags::CF | flags::ZF | flags::OF | flags::FIXED;
    for (index, value) in state.xmm.iter_mut().enumerate() {
        *value = 0x0F0E_0D0C_0B0A_0908_0706_0504_0302_0100u128.rotate_left(8 * index as u32);
    }
    state.mxcsr = 0x1F80 | 0x6000; // round toward zero
    state
}

fn completed(outcome: Outcome) -> (UserState, Vec<u8>) {
    match outcome {
        Outcome::Completed(state, data) => (state, data),
        Outcome::Fault(fault) => panic!("unexpected fault: {fault}"),
    }
}

fn faulted(outcome: Outcome) -> Fault {
    match outcome {
        Outcome::Fault(fault) => fault,
        Outcome::Completed(..) => panic!("expected a fault"),
    }
}

#[test]
fn empty_snippet_round_trips_the_state_and_data() {
    let mut runner = NativeRunner::new().unwrap();
    let input = sample_state();
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let (output, out_data) = completed(runner.run(&[], &input, &data).unwrap());
    assert_eq!(output, input.normalized());
    assert_eq!(out_data.len(), DATA_SIZE);
    assert_eq!(&out_data[..data.len()], &data[..]);
    assert!(out_data[data.len()..].iter().all(|&byte| byte == 0));
}

#[test]
fn only_user_flags_are_loaded_and_reported() {
    let mut runner = NativeRunner::new().unwrap();
    let mut input = sample_state();
    // TF would single-step the snippet and AC would fault on misaligned
    // accesses; the runner must not load them.
    input.rflags = flags::ARITH | flags::DF | flags::TF | flags::AC | flags::NT;
    let (output, _) = completed(runner.run(&[], &input, &[]).unwrap());
    assert_eq!(output.rflags, flags::ARITH | flags::DF | flags::FIXED);
}

#[test]
fn add_sets_result_and_flags() {
    let mut runner = NativeRunner::new().unwrap();
    let code = assemble(|a| a.add(rax, rcx));
    let mut input = sample_state();
    input.gpr[reg::RAX] = u64::MAX;
    input.gpr[reg::RCX] = 1;
    input.rflags = flags::FIXED | flags::SF | flags::OF;
    let (output, _) = completed(runner.run(&code, &input, &[]).unwrap());
    assert_eq!(output.gpr[reg::RAX], 0);
    assert_eq!(output.rflags, flags::FIXED | flags::CF | flags::PF | flags::AF | flags::ZF);
    let mut expected = input.normalized();
    expected.gpr[reg::RAX] = 0;
    expected.rflags = output.rflags;
    assert_eq!(output, expected);
}

#[test]
fn divide_by_zero_is_a_fault_and_the_next_run_works() {
    let mut runner = NativeRunner::new().unwrap();
    let code = assemble(|a| {
        a.xor(ecx, ecx)?;
        a.div(rcx)
    });
    let input = sample_state();
    let fault = faulted(runner.run(&code, &input, &[]).unwrap());
    assert_eq!(fault.exception, Exception::DivideError);
    assert_eq!(fault.signal, libc::SIGFPE);
    assert_eq!(fault.snippet_offset(), Some(2), "DIV follows the 2-byte XOR");
    assert_eq!(fault.state.gpr[reg::RCX], 0);
    assert_eq!(fault.state.gpr[reg::RAX], input.gpr[reg::RAX]);
    assert_eq!(fault.state.mxcsr, input.loadable_mxcsr());

    // The host is intact: the same runner runs the next snippet...
    let code = assemble(|a| a.lea(rax, qword_ptr(rax + rcx)));
    let (output, _) = completed(runner.run(&code, &input, &[]).unwrap());
    assert_eq!(output.gpr[reg::RAX], input.gpr[reg::RAX].wrapping_add(input.gpr[reg::RCX]));
    // ...and the host's MXCSR is back: the input asked for round toward
    // zero, but 1/10 rounds up in its last bit as round-to-nearest does.
    let tenth = std::hint::black_box(1.0f64) / std::hint::black_box(10.0f64);
    assert_eq!(tenth.to_bits(), 0x3FB9_9999_9999_999A);
}

#[test]
fn memory_faults_are_reported_with_their_vector() {
    let mut runner = NativeRunner::new().unwrap();
    let input = sample_state();

    let page_fault = faulted(runner.run(&assemble(|a| a.mov(rax, qword_ptr(0x1000u64))), &input, &[]).unwrap());
    assert_eq!(page_fault.exception, Exception::PageFault);
    assert_eq!(page_fault.address, 0x1000);

    let non_canonical = assemble(|a| {
        a.mov(rax, 0x8000_0000_0000_0000u64)?;
        a.mov(rax, qword_ptr(rax))
    });
    let general_protection = faulted(runner.run(&non_canonical, &input, &[]).unwrap());
    assert_eq!(general_protection.exception, Exception::GeneralProtection);

    let undefined = faulted(runner.run(&assemble(|a| a.ud2()), &input, &[]).unwrap());
    assert_eq!(undefined.exception, Exception::InvalidOpcode);
    assert_eq!(undefined.signal, libc::SIGILL);

    // Writing the code region (read-only while the snippet runs).
    let self_modifying = assemble(|a| a.mov(byte_ptr(SNIPPET_ADDR), 0x90));
    assert_eq!(faulted(runner.run(&self_modifying, &input, &[]).unwrap()).exception, Exception::PageFault);

    assert!(matches!(runner.run(&assemble(|a| a.nop()), &input, &[]).unwrap(), Outcome::Completed(..)));
}

#[test]
fn string_instructions_work_on_the_data_region() {
    let mut runner = NativeRunner::new().unwrap();
    let code = assemble(|a| {
        a.lea(rsi, qword_ptr(rbx + 0x100))?;
        a.lea(rdi, qword_ptr(rbx + 0x200))?;
        a.mov(ecx, 5)?;
        a.rep().movsb()?;
        a.mov(eax, 0xAB)?;
        a.mov(ecx, 3)?;
        a.rep().stosb()?;
        a.lea(rdi, qword_ptr(rbx + 0x100))?;
        a.mov(eax, 0x05)?;
        a.mov(ecx, 16)?;
        a.repne().scasb()
    });
    let mut data = vec![0u8; 0x300];
    for (index, byte) in data[0x100..0x110].iter_mut().enumerate() {
        *byte = index as u8 + 1;
    }
    let (output, out_data) = completed(runner.run(&code, &sample_state(), &data).unwrap());
    assert_eq!(&out_data[0x200..0x205], &[1, 2, 3, 4, 5]);
    assert_eq!(&out_data[0x205..0x208], &[0xAB; 3]);
    // SCASB found 5 at offset 4: RDI points past it, RCX counted 5 down.
    assert_eq!(output.gpr[reg::RDI], DATA_BASE + 0x105);
    assert_eq!(output.gpr[reg::RCX], 11);
    assert_ne!(output.rflags & flags::ZF, 0);
}

#[test]
fn backwards_string_copy_honours_df() {
    let mut runner = NativeRunner::new().unwrap();
    let code = assemble(|a| {
        a.lea(rsi, qword_ptr(rbx + 0x108))?;
        a.lea(rdi, qword_ptr(rbx + 0x208))?;
        a.mov(ecx, 2)?;
        a.rep().movsq()
    });
    let mut input = sample_state();
    input.rflags |= flags::DF;
    let mut data = vec![0u8; 0x300];
    data[0x100..0x110].copy_from_slice(&(1u128 << 64 | 2).to_le_bytes());
    let (output, out_data) = completed(runner.run(&code, &input, &data).unwrap());
    assert_eq!(&out_data[0x200..0x210], &data[0x100..0x110]);
    assert_eq!(output.gpr[reg::RSI], DATA_BASE + 0xF8);
    assert_ne!(output.rflags & flags::DF, 0, "the snippet's DF is reported");
}

#[test]
fn stack_and_pushf_use_the_data_region() {
    let mut runner = NativeRunner::new().unwrap();
    let code = assemble(|a| {
        a.push(rax)?;
        a.pushfq()?;
        a.pop(rdx)
    });
    let input = sample_state();
    let (output, data) = completed(runner.run(&code, &input, &[]).unwrap());
    let slot = (STACK_TOP - DATA_BASE) as usize - 8;
    assert_eq!(u64::from_le_bytes(data[slot..slot + 8].try_into().unwrap()), input.gpr[reg::RAX]);
    assert_eq!(output.gpr[reg::RDX], input.loadable_rflags());
    assert_eq!(output.gpr[reg::RSP], STACK_TOP - 8);
}

#[test]
fn sse_state_is_loaded_and_captured() {
    let mut runner = NativeRunner::new().unwrap();
    let code = assemble(|a| {
        a.paddd(xmm0, xmm1)?;
        a.movdqa(xmm15, xmm0)?;
        a.stmxcsr(dword_ptr(rbx))?;
        // 1.0 / 10.0 under the input's round-toward-zero mode.
        a.mov(eax, 1)?;
        a.cvtsi2sd(xmm2, eax)?;
        a.mov(eax, 10)?;
        a.cvtsi2sd(xmm3, eax)?;
        a.divsd(xmm2, xmm3)
    });
    let input = sample_state();
    let (output, data) = completed(runner.run(&code, &input, &[]).unwrap());
    let lanes = |value: u128| -> [u32; 4] { std::array::from_fn(|lane| (value >> (32 * lane)) as u32) };
    let expected: [u32; 4] = std::array::from_fn(|lane| lanes(input.xmm[0])[lane].wrapping_add(lanes(input.xmm[1])[lane]));
    assert_eq!(lanes(output.xmm[0]), expected);
    assert_eq!(output.xmm[15], output.xmm[0]);
    assert_eq!(u32::from_le_bytes(data[..4].try_into().unwrap()), input.loadable_mxcsr());
    assert_eq!(output.xmm[2] as u64, 0x3FB9_9999_9999_9999, "round toward zero");
    // Inexact was raised (and is sticky).
    assert_eq!(output.mxcsr, input.loadable_mxcsr() | 0x20);
}

#[test]
fn oversized_inputs_are_errors() {
    let mut runner = NativeRunner::new().unwrap();
    let state = sample_state();
    assert!(matches!(runner.run(&vec![0x90; MAX_SNIPPET_LEN + 1], &state, &[]), Err(OracleError::SnippetTooLarge { .. })));
    assert!(matches!(runner.run(&[], &state, &vec![0; DATA_SIZE + 1]), Err(OracleError::DataTooLarge { .. })));
    let code = assemble(|a| {
        a.xor(ecx, ecx)?;
        a.div(ecx)
    });
    assert!(matches!(runner.run_completed(&code, &state, &[]), Err(OracleError::Faulted(_))));
}

#[test]
fn a_second_runner_waits_for_the_first() {
    let runner = NativeRunner::new().unwrap();
    let waiter = std::thread::spawn(|| {
        let mut second = NativeRunner::new().unwrap();
        completed(second.run(&[], &sample_state(), &[]).unwrap())
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!waiter.is_finished(), "the second runner cannot exist while the first does");
    drop(runner);
    let (state, _) = waiter.join().unwrap();
    assert_eq!(state, sample_state().normalized());
}

/// Set in the child process of `host_faults_still_kill_the_process`.
const CRASH_CHILD: &str = "POPEK_ORACLE_CRASH_CHILD";

#[test]
fn host_faults_still_kill_the_process() {
    use std::os::unix::process::ExitStatusExt;
    if std::env::var_os(CRASH_CHILD).is_some() {
        // The child: with our handlers installed, a fault in host code must
        // go to the previous handler / default action and kill us.
        let _runner = NativeRunner::new().unwrap();
        // SAFETY: deliberately faults (the first page is never mapped).
        let value = unsafe { std::ptr::read_volatile(std::hint::black_box(8usize) as *const u64) };
        println!("survived a host fault: {value}");
        std::process::exit(0);
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "native::tests::host_faults_still_kill_the_process", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD, "1")
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "child status: {status:?}");
}
