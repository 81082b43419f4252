//! A small x86-64 encoder for the baseline backend (`baseline.rs`): the
//! few instruction forms it emits, with registers numbered as in the
//! ModRM encoding (RAX = 0 … R15 = 15).

/// General-purpose registers by encoding.
pub(crate) mod reg {
    pub(crate) const RAX: u8 = 0;
    pub(crate) const RCX: u8 = 1;
    pub(crate) const RDX: u8 = 2;
    pub(crate) const RBX: u8 = 3;
    pub(crate) const RSP: u8 = 4;
    pub(crate) const RBP: u8 = 5;
    pub(crate) const RSI: u8 = 6;
    pub(crate) const RDI: u8 = 7;
    pub(crate) const R8: u8 = 8;
    pub(crate) const R9: u8 = 9;
}

/// Condition codes (the low nibble of Jcc/SETcc/CMOVcc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cond {
    B = 2,
    Ae = 3,
    E = 4,
    Ne = 5,
    Be = 6,
    A = 7,
    L = 0xc,
    Ge = 0xd,
    Le = 0xe,
    G = 0xf,
}

/// ALU operations with their `/r` opcode (register form) and `/digit`
/// (immediate form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alu {
    Add,
    Or,
    And,
    Sub,
    Xor,
    Cmp,
}

impl Alu {
    fn opcode(self) -> u8 {
        match self {
            Alu::Add => 0x01,
            Alu::Or => 0x09,
            Alu::And => 0x21,
            Alu::Sub => 0x29,
            Alu::Xor => 0x31,
            Alu::Cmp => 0x39,
        }
    }

    fn digit(self) -> u8 {
        match self {
            Alu::Add => 0,
            Alu::Or => 1,
            Alu::And => 4,
            Alu::Sub => 5,
            Alu::Xor => 6,
            Alu::Cmp => 7,
        }
    }
}

/// Shifts and rotates by their `/digit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shift {
    Rol = 0,
    Ror = 1,
    Shl = 4,
    Shr = 5,
    Sar = 7,
}

/// An instruction stream being written.
#[derive(Default)]
pub(crate) struct Asm {
    pub(crate) code: Vec<u8>,
}

impl Asm {
    pub(crate) fn pos(&self) -> usize {
        self.code.len()
    }

    fn byte(&mut self, b: u8) {
        self.code.push(b);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.code.extend_from_slice(b);
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    /// A REX prefix when one is needed: W, or an extended register, or a
    /// byte access to SPL/BPL/SIL/DIL (`byte_regs` names those operands).
    fn rex(&mut self, w: bool, r: u8, x: u8, b: u8, byte_regs: &[u8]) {
        let bits = u8::from(w) << 3 | (r >> 3 & 1) << 2 | (x >> 3 & 1) << 1 | (b >> 3 & 1);
        if bits != 0 || byte_regs.iter().any(|&g| (4..8).contains(&g)) {
            self.byte(0x40 | bits);
        }
    }

    /// ModRM (and SIB, displacement) for `[base + disp]`.
    fn mem(&mut self, r: u8, base: u8, disp: i32) {
        let (r, b) = (r & 7, base & 7);
        let mode = if disp == 0 && b != 5 { 0 } else if i8::try_from(disp).is_ok() { 1 } else { 2 };
        self.byte(mode << 6 | r << 3 | b);
        if b == 4 {
            self.byte(0x24);
        }
        match mode {
            1 => self.byte(disp as u8),
            2 => self.u32(disp as u32),
            _ => {}
        }
    }

    fn modrm_rr(&mut self, r: u8, rm: u8) {
        self.byte(0xc0 | (r & 7) << 3 | (rm & 7));
    }

    /// `op r, rm` register to register (operand size 16 gets 0x66).
    fn rr(&mut self, size: u8, opcode: &[u8], r: u8, rm: u8) {
        if size == 2 {
            self.byte(0x66);
        }
        let byte_regs: &[u8] = if size == 1 { &[r, rm] } else { &[] };
        self.rex(size == 8, r, 0, rm, byte_regs);
        self.bytes(opcode);
        self.modrm_rr(r, rm);
    }

    /// `op r, [base + disp]`.
    fn rm(&mut self, size: u8, opcode: &[u8], r: u8, base: u8, disp: i32) {
        if size == 2 {
            self.byte(0x66);
        }
        let byte_regs: &[u8] = if size == 1 { &[r] } else { &[] };
        self.rex(size == 8, r, 0, base, byte_regs);
        self.bytes(opcode);
        self.mem(r, base, disp);
    }

    /// MOV dst, src (64 or 32 bits; 32 zero-extends).
    pub(crate) fn mov_rr(&mut self, size: u8, dst: u8, src: u8) {
        self.rr(size, &[0x89], src, dst);
    }

    /// MOV dst, imm: the shortest form that leaves `imm` in all 64 bits.
    pub(crate) fn mov_ri(&mut self, dst: u8, imm: u64) {
        if imm <= u64::from(u32::MAX) {
            self.rex(false, 0, 0, dst, &[]);
            self.byte(0xb8 | (dst & 7));
            self.u32(imm as u32);
        } else if i32::try_from(imm as i64).is_ok() {
            self.rex(true, 0, 0, dst, &[]);
            self.byte(0xc7);
            self.modrm_rr(0, dst);
            self.u32(imm as u32);
        } else {
            self.rex(true, 0, 0, dst, &[]);
            self.byte(0xb8 | (dst & 7));
            self.bytes(&imm.to_le_bytes());
        }
    }

    /// A load of `size` bytes, zero-extended (or sign-extended to 64 bits).
    pub(crate) fn load(&mut self, size: u8, signed: bool, dst: u8, base: u8, disp: i32) {
        match (size, signed) {
            (8, _) => self.rm(8, &[0x8b], dst, base, disp),
            (4, false) => self.rm(4, &[0x8b], dst, base, disp),
            (4, true) => self.rm(8, &[0x63], dst, base, disp),
            (2, false) => self.rm(4, &[0x0f, 0xb7], dst, base, disp),
            (2, true) => self.rm(8, &[0x0f, 0xbf], dst, base, disp),
            (_, false) => self.rm(4, &[0x0f, 0xb6], dst, base, disp),
            (_, true) => self.rm(8, &[0x0f, 0xbe], dst, base, disp),
        }
    }

    /// A store of the low `size` bytes of `src`.
    pub(crate) fn store(&mut self, size: u8, src: u8, base: u8, disp: i32) {
        let opcode = if size == 1 { 0x88 } else { 0x89 };
        self.rm(size, &[opcode], src, base, disp);
    }

    /// A store of an immediate (sign-extended to 64 bits for size 8).
    pub(crate) fn store_imm(&mut self, size: u8, base: u8, disp: i32, imm: i32) {
        let opcode = if size == 1 { 0xc6 } else { 0xc7 };
        self.rm(size, &[opcode], 0, base, disp);
        match size {
            1 => self.byte(imm as u8),
            2 => self.bytes(&(imm as u16).to_le_bytes()),
            _ => self.u32(imm as u32),
        }
    }

    /// `op dst, src` for the ALU group.
    pub(crate) fn alu_rr(&mut self, op: Alu, size: u8, dst: u8, src: u8) {
        let opcode = if size == 1 { op.opcode() - 1 } else { op.opcode() };
        self.rr(size, &[opcode], src, dst);
    }

    /// `op dst, imm` for the ALU group (sizes 4 and 8).
    pub(crate) fn alu_ri(&mut self, op: Alu, size: u8, dst: u8, imm: i32) {
        self.rex(size == 8, 0, 0, dst, &[]);
        if let Ok(imm8) = i8::try_from(imm) {
            self.byte(0x83);
            self.modrm_rr(op.digit(), dst);
            self.byte(imm8 as u8);
        } else {
            self.byte(0x81);
            self.modrm_rr(op.digit(), dst);
            self.u32(imm as u32);
        }
    }

    /// TEST a, b.
    pub(crate) fn test_rr(&mut self, size: u8, a: u8, b: u8) {
        let opcode = if size == 1 { 0x84 } else { 0x85 };
        self.rr(size, &[opcode], b, a);
    }

    /// A shift or rotate by an immediate.
    pub(crate) fn shift_ri(&mut self, op: Shift, size: u8, dst: u8, amount: u8) {
        let opcode = if size == 1 { 0xc0 } else { 0xc1 };
        self.rr(size, &[opcode], op as u8, dst);
        self.byte(amount);
    }

    /// A shift or rotate by CL.
    pub(crate) fn shift_cl(&mut self, op: Shift, size: u8, dst: u8) {
        let opcode = if size == 1 { 0xd2 } else { 0xd3 };
        self.rr(size, &[opcode], op as u8, dst);
    }

    /// IMUL dst, src.
    pub(crate) fn imul_rr(&mut self, size: u8, dst: u8, src: u8) {
        self.rr(size, &[0x0f, 0xaf], dst, src);
    }

    /// MUL (`signed`: IMUL) src: RDX:RAX = RAX * src.
    pub(crate) fn mul_wide(&mut self, signed: bool, size: u8, src: u8) {
        self.rr(size, &[0xf7], if signed { 5 } else { 4 }, src);
    }

    /// NEG / NOT.
    pub(crate) fn neg(&mut self, size: u8, dst: u8) {
        self.rr(size, &[0xf7], 3, dst);
    }

    pub(crate) fn not(&mut self, size: u8, dst: u8) {
        self.rr(size, &[0xf7], 2, dst);
    }

    /// Zero-extends the low `size` bytes of `src` into `dst` (size 1, 2 or
    /// 4).
    pub(crate) fn zext(&mut self, size: u8, dst: u8, src: u8) {
        match size {
            1 => self.extend_byte_register(false, 0xb6, dst, src),
            2 => self.rr(4, &[0x0f, 0xb7], dst, src),
            _ => self.mov_rr(4, dst, src),
        }
    }

    /// MOVZX/MOVSX `dst`, `src`'s low byte (`0F opcode /r`).
    fn extend_byte_register(&mut self, w: bool, opcode: u8, dst: u8, src: u8) {
        self.rex(w, dst, 0, src, &[src]);
        self.bytes(&[0x0f, opcode]);
        self.modrm_rr(dst, src);
    }

    /// Sign-extends the low `size` bytes of `src` to 64 bits in `dst`.
    pub(crate) fn sext(&mut self, size: u8, dst: u8, src: u8) {
        match size {
            1 => self.extend_byte_register(true, 0xbe, dst, src),
            2 => self.rr(8, &[0x0f, 0xbf], dst, src),
            4 => self.rr(8, &[0x63], dst, src),
            _ => self.mov_rr(8, dst, src),
        }
    }

    /// SETcc dst8 (the upper bits are left as they were).
    pub(crate) fn setcc(&mut self, cc: Cond, dst: u8) {
        self.rex(false, 0, 0, dst, &[dst]);
        self.bytes(&[0x0f, 0x90 | cc as u8]);
        self.modrm_rr(0, dst);
    }

    /// CMOVcc dst, src (64 bits).
    pub(crate) fn cmov(&mut self, cc: Cond, dst: u8, src: u8) {
        self.rr(8, &[0x0f, 0x40 | cc as u8], dst, src);
    }

    /// POPCNT dst, src (64 bits).
    pub(crate) fn popcnt(&mut self, dst: u8, src: u8) {
        self.byte(0xf3);
        self.rex(true, dst, 0, src, &[]);
        self.bytes(&[0x0f, 0xb8]);
        self.modrm_rr(dst, src);
    }

    /// BSF dst, src (64 bits): ZF when `src` is zero.
    pub(crate) fn bsf(&mut self, dst: u8, src: u8) {
        self.rr(8, &[0x0f, 0xbc], dst, src);
    }

    /// DIV src: RAX = RDX:RAX / src, RDX = the remainder.
    pub(crate) fn div(&mut self, size: u8, src: u8) {
        self.rr(size, &[0xf7], 6, src);
    }

    /// BSWAP r (32 or 64 bits).
    pub(crate) fn bswap(&mut self, size: u8, r: u8) {
        self.rex(size == 8, 0, 0, r, &[]);
        self.bytes(&[0x0f, 0xc8 | (r & 7)]);
    }

    /// LEA dst, [base + disp].
    pub(crate) fn lea(&mut self, dst: u8, base: u8, disp: i32) {
        self.rm(8, &[0x8d], dst, base, disp);
    }

    /// Jcc rel32 to be patched; the position of the displacement.
    pub(crate) fn jcc(&mut self, cc: Cond) -> usize {
        self.bytes(&[0x0f, 0x80 | cc as u8]);
        self.u32(0);
        self.pos() - 4
    }

    /// JMP rel32 to be patched; the position of the displacement.
    pub(crate) fn jmp(&mut self) -> usize {
        self.byte(0xe9);
        self.u32(0);
        self.pos() - 4
    }

    /// Points the rel32 at `at` to `target`.
    pub(crate) fn patch(&mut self, at: usize, target: usize) {
        let rel = target as i64 - (at as i64 + 4);
        self.code[at..at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
    }

    /// CALL r.
    pub(crate) fn call_r(&mut self, r: u8) {
        self.rex(false, 0, 0, r, &[]);
        self.byte(0xff);
        self.modrm_rr(2, r);
    }

    /// JMP r.
    pub(crate) fn jmp_r(&mut self, r: u8) {
        self.rex(false, 0, 0, r, &[]);
        self.byte(0xff);
        self.modrm_rr(4, r);
    }

    pub(crate) fn push(&mut self, r: u8) {
        self.rex(false, 0, 0, r, &[]);
        self.byte(0x50 | (r & 7));
    }

    pub(crate) fn pop(&mut self, r: u8) {
        self.rex(false, 0, 0, r, &[]);
        self.byte(0x58 | (r & 7));
    }

    pub(crate) fn ret(&mut self) {
        self.byte(0xc3);
    }

    /// SUB RSP, imm32 to be patched; the position of the immediate.
    pub(crate) fn sub_rsp_patchable(&mut self) -> usize {
        self.bytes(&[0x48, 0x81, 0xec]);
        self.u32(0);
        self.pos() - 4
    }

    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) {
        self.code[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::reg::*;
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    fn text(f: impl FnOnce(&mut Asm)) -> String {
        let mut a = Asm::default();
        f(&mut a);
        let mut decoder = Decoder::with_ip(64, &a.code, 0, DecoderOptions::NONE);
        let mut formatter = IntelFormatter::new();
        let mut out = Vec::new();
        while decoder.can_decode() {
            let ins = decoder.decode();
            let mut s = String::new();
            formatter.format(&ins, &mut s);
            out.push(s);
        }
        out.join("; ")
    }

    #[test]
    fn encodings_decode_as_meant() {
        let cases: Vec<(Box<dyn Fn(&mut Asm)>, &str)> = vec![
            (Box::new(|a| a.mov_rr(8, 13, RSI)), "mov r13,rsi"),
            (Box::new(|a| a.mov_rr(4, RAX, 9)), "mov eax,r9d"),
            (Box::new(|a| a.mov_ri(12, 5)), "mov r12d,5"),
            (Box::new(|a| a.mov_ri(RAX, (-2i64) as u64)), "mov rax,0FFFFFFFFFFFFFFFEh"),
            (Box::new(|a| a.mov_ri(RCX, 0x1234_5678_9abc)), "mov rcx,123456789ABCh"),
            (Box::new(|a| a.load(8, false, 15, RBX, -2216)), "mov r15,[rbx-8A8h]"),
            (Box::new(|a| a.load(1, false, RSI, 12, 0)), "movzx esi,byte ptr [r12]"),
            (Box::new(|a| a.load(2, true, RDI, 13, 0)), "movsx rdi,word ptr [r13]"),
            (Box::new(|a| a.load(4, true, RDI, RSP, 8)), "movsxd rdi,[rsp+8]"),
            (Box::new(|a| a.load(4, false, RAX, RBP, -48)), "mov eax,[rbp-30h]"),
            (Box::new(|a| a.store(1, RSI, RBX, 16)), "mov [rbx+10h],sil"),
            (Box::new(|a| a.store(2, 9, RAX, 0)), "mov [rax],r9w"),
            (Box::new(|a| a.store_imm(8, RBX, 40, -1)), "mov qword ptr [rbx+28h],0FFFFFFFFFFFFFFFFh"),
            (Box::new(|a| a.store_imm(1, RBX, -1840, 5)), "mov byte ptr [rbx-730h],5"),
            (Box::new(|a| a.store_imm(2, RBX, 0, 0x1234)), "mov word ptr [rbx],1234h"),
            (Box::new(|a| a.alu_rr(Alu::Sub, 8, 10, 11)), "sub r10,r11"),
            (Box::new(|a| a.alu_rr(Alu::Cmp, 1, RSI, RDI)), "cmp sil,dil"),
            (Box::new(|a| a.alu_rr(Alu::Cmp, 2, RSI, RDI)), "cmp si,di"),
            (Box::new(|a| a.alu_ri(Alu::And, 8, 14, 0x3ffc0)), "and r14,3FFC0h"),
            (Box::new(|a| a.alu_ri(Alu::Add, 4, RDI, -1)), "add edi,0FFFFFFFFh"),
            (Box::new(|a| a.test_rr(8, 8, 8)), "test r8,r8"),
            (Box::new(|a| a.shift_ri(Shift::Shr, 8, 9, 12)), "shr r9,0Ch"),
            (Box::new(|a| a.shift_ri(Shift::Rol, 2, RSI, 8)), "rol si,8"),
            (Box::new(|a| a.shift_cl(Shift::Sar, 4, 15)), "sar r15d,cl"),
            (Box::new(|a| a.shift_cl(Shift::Ror, 1, RDI)), "ror dil,cl"),
            (Box::new(|a| a.imul_rr(8, RSI, 10)), "imul rsi,r10"),
            (Box::new(|a| a.mul_wide(true, 8, 11)), "imul r11"),
            (Box::new(|a| a.neg(4, 8)), "neg r8d"),
            (Box::new(|a| a.not(8, RDI)), "not rdi"),
            (Box::new(|a| a.zext(1, RSI, RDI)), "movzx esi,dil"),
            (Box::new(|a| a.zext(2, 8, 9)), "movzx r8d,r9w"),
            (Box::new(|a| a.zext(4, 8, 9)), "mov r8d,r9d"),
            (Box::new(|a| a.sext(1, RAX, RSI)), "movsx rax,sil"),
            (Box::new(|a| a.sext(4, RAX, 12)), "movsxd rax,r12d"),
            (Box::new(|a| a.setcc(Cond::L, RSI)), "setl sil"),
            (Box::new(|a| a.setcc(Cond::Be, 13)), "setbe r13b"),
            (Box::new(|a| a.cmov(Cond::Ne, RSI, 14)), "cmovne rsi,r14"),
            (Box::new(|a| a.popcnt(RDI, 9)), "popcnt rdi,r9"),
            (Box::new(|a| a.bsf(RSI, 12)), "bsf rsi,r12"),
            (Box::new(|a| a.div(8, RCX)), "div rcx"),
            (Box::new(|a| a.div(4, 9)), "div r9d"),
            (Box::new(|a| a.bswap(4, 10)), "bswap r10d"),
            (Box::new(|a| a.lea(RSP, RBP, -40)), "lea rsp,[rbp-28h]"),
            (Box::new(|a| a.call_r(RAX)), "call rax"),
            (Box::new(|a| a.jmp_r(RAX)), "jmp rax"),
            (Box::new(|a| a.jmp_r(11)), "jmp r11"),
            (Box::new(|a| a.push(15)), "push r15"),
            (Box::new(|a| a.pop(RBX)), "pop rbx"),
        ];
        for (emit, want) in cases {
            assert_eq!(text(emit), want);
        }
    }

    #[test]
    fn branches_are_patched_to_their_targets() {
        let mut a = Asm::default();
        let j = a.jcc(Cond::Ne);
        let k = a.jmp();
        a.ret();
        a.patch(j, 0);
        a.patch(k, a.pos() - 1);
        let mut decoder = Decoder::with_ip(64, &a.code, 0, DecoderOptions::NONE);
        assert_eq!(decoder.decode().near_branch_target(), 0);
        assert_eq!(decoder.decode().near_branch_target(), 11);
    }
}
