//! Why an instruction did not complete: an architectural exception to
//! deliver, or something that stops the machine.

use crate::control::StopReason;

/// Exception vectors (SDM Vol. 3A, Table 6-1).
#[allow(missing_docs)]
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
    pub const XM: u8 = 19;
}

/// An exception raised by an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The vector.
    pub vector: u8,
    /// The error code, for the vectors that push one.
    pub error_code: Option<u32>,
}

/// The outcome of a failed instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Deliver this exception to the guest.
    Exception(Exception),
    /// Stop the machine (triple fault, an instruction popek does not
    /// implement yet, a stop request seen mid-instruction). Boxed: every
    /// fallible step of the interpreter returns a `Result` with a `Fault`
    /// in it, and a small one comes back in registers rather than through
    /// memory (see the tests).
    Stop(Box<StopReason>),
}

impl Fault {
    fn exc(vector: u8, error_code: Option<u32>) -> Self {
        Fault::Exception(Exception { vector, error_code })
    }
    /// #GP with an error code.
    pub fn gp(code: u32) -> Self {
        Self::exc(vector::GP, Some(code))
    }
    /// #GP(0).
    pub fn gp0() -> Self {
        Self::gp(0)
    }
    /// #SS with an error code.
    pub fn ss(code: u32) -> Self {
        Self::exc(vector::SS, Some(code))
    }
    /// #NP with an error code.
    pub fn np(code: u32) -> Self {
        Self::exc(vector::NP, Some(code))
    }
    /// #TS with an error code.
    pub fn ts(code: u32) -> Self {
        Self::exc(vector::TS, Some(code))
    }
    /// #UD.
    pub fn ud() -> Self {
        Self::exc(vector::UD, None)
    }
    /// #DE.
    pub fn de() -> Self {
        Self::exc(vector::DE, None)
    }
    /// #NM.
    pub fn nm() -> Self {
        Self::exc(vector::NM, None)
    }
    /// #PF with its error code (CR2 is set by the MMU).
    pub fn pf(code: u32) -> Self {
        Self::exc(vector::PF, Some(code))
    }
    /// #AC(0).
    pub fn ac() -> Self {
        Self::exc(vector::AC, Some(0))
    }
    /// An exception without an error code.
    pub fn exception(vector: u8) -> Self {
        Self::exc(vector, None)
    }
    /// An instruction or feature popek does not implement yet: the machine
    /// stops and says which.
    pub fn unimplemented(what: impl Into<String>) -> Self {
        Self::stop(StopReason::Error(format!("interp: {} is not implemented yet", what.into())))
    }
    /// Stop the machine for `reason`.
    pub fn stop(reason: StopReason) -> Self {
        Fault::Stop(Box::new(reason))
    }
}

/// An instruction's result.
pub type R<T> = Result<T, Fault>;

/// Whether `vector` pushes an error code when raised as an exception.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, vector::DF | vector::TS | vector::NP | vector::SS | vector::GP | vector::PF | vector::AC)
}

/// Contributory exceptions, which make a double fault when one is raised
/// while delivering another (SDM Vol. 3A, Table 6-4).
pub fn is_contributory(vector: u8) -> bool {
    matches!(vector, vector::DE | vector::TS | vector::NP | vector::SS | vector::GP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_small_enough_for_registers() {
        // Two words: the System V ABI returns them in RAX:RDX, where a
        // larger result goes through memory the caller provides.
        assert!(std::mem::size_of::<R<()>>() <= 16, "{}", std::mem::size_of::<R<()>>());
        assert!(std::mem::size_of::<R<u64>>() <= 16, "{}", std::mem::size_of::<R<u64>>());
    }
}
