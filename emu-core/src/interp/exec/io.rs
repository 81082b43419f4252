//! IN and OUT, with the IOPL and TSS I/O-permission-bitmap checks of
//! protected and virtual-8086 mode.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::flags;

use super::super::fault::{Fault, R};
use super::super::Interpreter;
use super::Table;

pub(super) fn register(t: &mut Table) {
    t.set(&[M::In], in_);
    t.set(&[M::Out], out);
}

impl Interpreter {
    /// Whether `size` bytes at `port` may be accessed: always at
    /// CPL <= IOPL outside virtual-8086 mode, else by the TSS bitmap.
    pub(crate) fn check_io_permission(&mut self, port: u16, size: usize) -> R<()> {
        if !self.protected_mode() {
            return Ok(());
        }
        let iopl = ((self.s.rflags & flags::IOPL) >> 12) as u8;
        if !self.vm86() && self.s.cpl() <= iopl {
            return Ok(());
        }
        let tr = self.s.tr;
        // Only a 32/64-bit TSS has a bitmap.
        if tr.type_ & 0x8 == 0 || tr.limit < 0x67 {
            return Err(Fault::gp0());
        }
        let base_off = self.read_linear_implicit(tr.base.wrapping_add(0x66), 2)?;
        let byte = base_off + u64::from(port / 8);
        if byte + 1 > u64::from(tr.limit) {
            return Err(Fault::gp0());
        }
        let bits = self.read_linear_implicit(tr.base.wrapping_add(byte), 2)?;
        let mask = ((1u64 << size) - 1) << (port % 8);
        if bits & mask != 0 {
            return Err(Fault::gp0());
        }
        Ok(())
    }

    /// Reads a port through the bus.
    pub(crate) fn port_in(&mut self, port: u16, size: usize) -> u64 {
        let mut buf = [0u8; 8];
        crate::interp::bump(&self.counters.port_io);
        self.pio.read(u64::from(port), &mut buf[..size]);
        self.drop_code_written_by_devices();
        u64::from_le_bytes(buf)
    }

    /// Writes a port through the bus.
    pub(crate) fn port_out(&mut self, port: u16, size: usize, v: u64) {
        crate::interp::bump(&self.counters.port_io);
        self.pio.write(u64::from(port), &v.to_le_bytes()[..size]);
        self.drop_code_written_by_devices();
    }
}

fn port_of(cpu: &Interpreter, ins: &Instruction, n: u32) -> u16 {
    match ins.op_kind(n) {
        OpKind::Immediate8 => u16::from(ins.immediate8()),
        _ => cpu.reg(Register::DX) as u16,
    }
}

fn in_(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let port = port_of(cpu, ins, 1);
    let size = cpu.op_size(ins, 0);
    cpu.check_io_permission(port, size)?;
    let v = cpu.port_in(port, size);
    cpu.write_op(ins, 0, v)
}

fn out(cpu: &mut Interpreter, ins: &Instruction) -> R<()> {
    let port = port_of(cpu, ins, 0);
    let size = cpu.op_size(ins, 1);
    cpu.check_io_permission(port, size)?;
    let v = cpu.read_op(ins, 1)?;
    cpu.port_out(port, size, v);
    // A stop requested by the device (debug-exit) ends the run right here.
    if let Some(reason) = cpu.control.stop_reason() {
        cpu.s.rip = cpu.next_rip;
        return Err(Fault::stop(reason));
    }
    Ok(())
}
