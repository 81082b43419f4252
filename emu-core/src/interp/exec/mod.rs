//! The instruction families. Each family module fills its entries of the
//! dispatch table (indexed by mnemonic) in its `register` function, so a
//! family can be added or extended without touching the others.

mod alu;
mod bcd;
mod bits;
mod control;
mod data;
mod fast;
mod fastcall;
mod fxsave;
mod io;
mod msr;
mod muldiv;
mod protect;
mod shift;
mod softfp;
mod sse;
mod sse41;
mod sse41_float;
mod sse42;
mod sse_float;
mod sse_int;
mod ssse3;
mod stack;
mod string;
mod system;
mod x87;
mod x87_ctl;
mod xsave;
pub(super) mod task;

use std::sync::OnceLock;

use iced_x86::{Instruction, Mnemonic};

use super::fault::{Fault, R};
use super::Interpreter;

/// Executes one decoded instruction.
pub(crate) type Handler = fn(&mut Interpreter, &Instruction) -> R<()>;

/// The dispatch table: one optional handler per mnemonic.
pub(crate) struct Table(Vec<Option<Handler>>);

impl Table {
    /// Installs `handler` for each of `mnemonics`.
    pub(crate) fn set(&mut self, mnemonics: &[Mnemonic], handler: Handler) {
        for &m in mnemonics {
            if let Some(slot) = self.0.get_mut(m as usize) {
                *slot = Some(handler);
            }
        }
    }
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Table(vec![None; Mnemonic::values().len()]);
        alu::register(&mut t);
        bcd::register(&mut t);
        bits::register(&mut t);
        control::register(&mut t);
        data::register(&mut t);
        fastcall::register(&mut t);
        fxsave::register(&mut t);
        io::register(&mut t);
        muldiv::register(&mut t);
        protect::register(&mut t);
        shift::register(&mut t);
        stack::register(&mut t);
        string::register(&mut t);
        system::register(&mut t);
        xsave::register(&mut t);
        x87::register(&mut t);
        x87_ctl::register(&mut t);
        // After `string`, whose MOVSD/CMPSD the SSE handlers defer to.
        sse::register(&mut t);
        sse_float::register(&mut t);
        sse_int::register(&mut t);
        ssse3::register(&mut t);
        sse41::register(&mut t);
        sse41_float::register(&mut t);
        sse42::register(&mut t);
        t
    })
}

/// The handler for `ins`, or one that reports it unimplemented.
pub(crate) fn handler_of(ins: &Instruction) -> Handler {
    if let Some(h) = fast::select(ins) {
        return h;
    }
    table().0.get(ins.mnemonic() as usize).copied().flatten().unwrap_or(unimplemented)
}

fn unimplemented(_: &mut Interpreter, ins: &Instruction) -> R<()> {
    Err(Fault::unimplemented(format!("{:?} ({:?})", ins.mnemonic(), ins.code())))
}
