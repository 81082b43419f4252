//! Comparing the host's final state with the interpreter's.

use std::fmt;

use crate::state::{GPR_NAMES, USER_FLAG_NAMES, USER_FLAGS};
use crate::UserState;

/// At most this many differing data ranges are listed.
const MAX_DATA_DIFFERENCES: usize = 16;

/// One place where the two sides disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// What differs: `rax`, `rflags.CF`, `xmm3`, `mxcsr`, `data[0x1234..0x1238]`.
    pub location: String,
    /// The host's value.
    pub native: String,
    /// The interpreter's value.
    pub interp: String,
}

/// The differences between two final states, with the snippet's listing
/// once the caller attaches it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mismatch {
    /// Everything that differs.
    pub differences: Vec<Difference>,
    /// The snippet's disassembly (see [`Mismatch::with_disassembly`]).
    pub disassembly: Option<String>,
    /// Free-form context: seed, case number, initial state...
    pub context: Option<String>,
}

impl Mismatch {
    /// Attaches the snippet's disassembly to the report.
    pub fn with_disassembly(mut self, disassembly: impl Into<String>) -> Self {
        self.disassembly = Some(disassembly.into());
        self
    }

    /// Attaches free-form context (seed, case number...) to the report.
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Adds `other`'s differences to these.
    pub fn merge(mut self, other: Mismatch) -> Self {
        self.differences.extend(other.differences);
        self
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "host and interpreter disagree ({} difference(s)):", self.differences.len())?;
        writeln!(f, "  {:<22} {:<40} interpreter", "where", "host")?;
        for difference in &self.differences {
            writeln!(f, "  {:<22} {:<40} {}", difference.location, difference.native, difference.interp)?;
        }
        if let Some(context) = &self.context {
            writeln!(f, "context: {context}")?;
        }
        if let Some(disassembly) = &self.disassembly {
            writeln!(f, "snippet:")?;
            for line in disassembly.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Mismatch {}

/// Compares two final states: all GPRs, XMMs and MXCSR, and the
/// arithmetic flags and DF except those in `undefined_flags`.
pub fn compare(native: &UserState, interp: &UserState, undefined_flags: u64) -> Result<(), Mismatch> {
    let mut differences = Vec::new();
    for (index, (a, b)) in native.gpr.iter().zip(&interp.gpr).enumerate() {
        if a != b {
            differences.push(Difference { location: GPR_NAMES[index].into(), native: format!("{a:#018x}"), interp: format!("{b:#018x}") });
        }
    }
    let compared = USER_FLAGS & !undefined_flags;
    if (native.rflags ^ interp.rflags) & compared != 0 {
        for (name, bit) in USER_FLAG_NAMES {
            if (native.rflags ^ interp.rflags) & compared & bit != 0 {
                differences.push(Difference {
                    location: format!("rflags.{name}"),
                    native: u8::from(native.rflags & bit != 0).to_string(),
                    interp: u8::from(interp.rflags & bit != 0).to_string(),
                });
            }
        }
    }
    for (index, (a, b)) in native.xmm.iter().zip(&interp.xmm).enumerate() {
        if a != b {
            differences.push(Difference { location: format!("xmm{index}"), native: format!("{a:#034x}"), interp: format!("{b:#034x}") });
        }
    }
    if native.mxcsr != interp.mxcsr {
        differences.push(Difference { location: "mxcsr".into(), native: format!("{:#06x}", native.mxcsr), interp: format!("{:#06x}", interp.mxcsr) });
    }
    finish(differences)
}

/// Compares two data regions byte by byte, reporting differing ranges
/// (offsets from the region's start).
pub fn compare_data(native: &[u8], interp: &[u8]) -> Result<(), Mismatch> {
    let mut differences = Vec::new();
    if native.len() != interp.len() {
        differences.push(Difference { location: "data length".into(), native: native.len().to_string(), interp: interp.len().to_string() });
    }
    let mut offset = 0;
    let common = native.len().min(interp.len());
    while offset < common && differences.len() < MAX_DATA_DIFFERENCES {
        if native[offset] == interp[offset] {
            offset += 1;
            continue;
        }
        let start = offset;
        while offset < common && native[offset] != interp[offset] && offset - start < 16 {
            offset += 1;
        }
        differences.push(Difference {
            location: format!("data[{start:#x}..{offset:#x}]"),
            native: hex(&native[start..offset]),
            interp: hex(&interp[start..offset]),
        });
    }
    finish(differences)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(" ")
}

fn finish(differences: Vec<Difference>) -> Result<(), Mismatch> {
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Mismatch { differences, ..Mismatch::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::flags;

    #[test]
    fn equal_states_match_and_undefined_flags_are_ignored() {
        let mut native = UserState::default();
        native.gpr[3] = 7;
        native.rflags = flags::FIXED | flags::AF | flags::CF;
        let mut interp = native;
        assert_eq!(compare(&native, &interp, 0), Ok(()));
        interp.rflags = flags::FIXED | flags::CF | flags::IF;
        assert_eq!(compare(&native, &interp, flags::AF), Ok(()), "AF undefined; IF not a user flag");
        assert!(compare(&native, &interp, 0).is_err());
    }

    #[test]
    fn mismatch_report_names_registers_and_lists_the_snippet() {
        let native = UserState::default();
        let mut interp = native;
        interp.gpr[0] = 1;
        interp.rflags |= flags::OF;
        interp.xmm[5] = 2;
        interp.mxcsr = 0x1F80;
        let mismatch = compare(&native, &interp, 0).unwrap_err().with_disassembly("0000  4801c8  add rax,rcx");
        let locations: Vec<&str> = mismatch.differences.iter().map(|d| d.location.as_str()).collect();
        assert_eq!(locations, ["rax", "rflags.OF", "xmm5", "mxcsr"]);
        let report = mismatch.to_string();
        assert!(report.contains("rax") && report.contains("0x0000000000000001") && report.contains("add rax,rcx"), "{report}");
    }

    #[test]
    fn data_differences_are_grouped() {
        let native = vec![0u8; 64];
        let mut interp = native.clone();
        interp[10] = 1;
        interp[11] = 2;
        interp[40] = 3;
        let mismatch = compare_data(&native, &interp).unwrap_err();
        let locations: Vec<&str> = mismatch.differences.iter().map(|d| d.location.as_str()).collect();
        assert_eq!(locations, ["data[0xa..0xc]", "data[0x28..0x29]"]);
        assert_eq!(compare_data(&native, &native), Ok(()));
    }
}
