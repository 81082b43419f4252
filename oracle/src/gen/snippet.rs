//! Encoded snippets and the builder that appends generated instructions.

use iced_x86::{Decoder, DecoderOptions, Encoder, Formatter, Instruction, IntelFormatter};

use crate::flags::{self, FlagTracker};
use crate::layout::SNIPPET_ADDR;
use crate::OracleError;

/// How far the generated code may move RSP below its start (pushes).
const MAX_STACK_DEPTH: i64 = 0x4000;
/// How far the generated code may move RSP above its start (pops).
const MAX_STACK_RISE: i64 = 0x800;

/// An encoded snippet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snippet {
    /// The machine code, to be placed at [`SNIPPET_ADDR`].
    pub bytes: Vec<u8>,
    /// The decoded instructions, with their addresses.
    pub instructions: Vec<Instruction>,
    /// `instructions.len()`: generated instructions plus the preludes the
    /// generator added.
    pub instruction_count: usize,
    /// Intel-syntax listing, one instruction per line.
    pub description: String,
    /// The flags the snippet may leave undefined, not knowing register
    /// values (see [`flags::undefined_flags`]).
    pub undefined_flags: u64,
}

impl Snippet {
    /// Decodes `bytes` as a snippet at [`SNIPPET_ADDR`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OracleError> {
        let mut decoder = Decoder::with_ip(64, bytes, SNIPPET_ADDR, DecoderOptions::NONE);
        let mut instructions = Vec::new();
        while decoder.can_decode() {
            let instruction = decoder.decode();
            if instruction.is_invalid() {
                return Err(OracleError::InvalidInstruction { offset: instruction.ip() - SNIPPET_ADDR });
            }
            instructions.push(instruction);
        }
        let mut formatter = IntelFormatter::new();
        let mut description = String::new();
        for instruction in &instructions {
            let offset = (instruction.ip() - SNIPPET_ADDR) as usize;
            let encoding: String = bytes[offset..offset + instruction.len()].iter().map(|byte| format!("{byte:02x}")).collect();
            description.push_str(&format!("{offset:04x}  {encoding:<24} "));
            formatter.format(instruction, &mut description);
            description.push('\n');
        }
        Ok(Self {
            bytes: bytes.to_vec(),
            instruction_count: instructions.len(),
            undefined_flags: flags::undefined_flags(&instructions),
            instructions,
            description,
        })
    }

    /// The address right after the snippet, where the host's epilogue
    /// starts (the interpreter stops when RIP reaches it).
    pub fn end_address(&self) -> u64 {
        SNIPPET_ADDR + self.bytes.len() as u64
    }
}

/// The instructions appended so far, their encoding, and the running flag
/// and stack bookkeeping.
#[derive(Default)]
pub(super) struct Builder {
    pub(super) bytes: Vec<u8>,
    pub(super) tracker: FlagTracker,
    /// RSP minus its initial value.
    rsp_offset: i64,
}

impl Builder {
    /// Encodes `unit` and appends it, unless it fails to encode, decodes
    /// back differently, or would move RSP out of bounds.
    pub(super) fn try_append(&mut self, unit: &[Instruction]) -> bool {
        let mut rsp_offset = self.rsp_offset;
        for instruction in unit {
            rsp_offset += i64::from(instruction.stack_pointer_increment());
            if !(-MAX_STACK_DEPTH..=MAX_STACK_RISE).contains(&rsp_offset) {
                return false;
            }
        }
        let start = self.bytes.len();
        let mut encoder = Encoder::new(64);
        for instruction in unit {
            let ip = SNIPPET_ADDR + self.bytes.len() as u64;
            if encoder.encode(instruction, ip).is_err() {
                self.bytes.truncate(start);
                return false;
            }
            self.bytes.extend_from_slice(&encoder.take_buffer());
        }
        // Check that the bytes mean what the unit says, e.g. that no
        // register combination was silently re-encoded.
        let mut decoder = Decoder::with_ip(64, &self.bytes[start..], SNIPPET_ADDR + start as u64, DecoderOptions::NONE);
        let decoded: Vec<Instruction> = decoder.iter().collect();
        if decoded.len() != unit.len() || decoded.iter().any(|instruction| instruction.is_invalid()) {
            self.bytes.truncate(start);
            return false;
        }
        for instruction in &decoded {
            self.tracker.step(instruction, None);
        }
        self.rsp_offset = rsp_offset;
        true
    }
}
