//! popek's dynamic binary translator: hot guest code translated to host
//! code with Cranelift a region at a time (a hot block and the warm blocks
//! it reaches in its page), as a tier of the interpreter
//! (`emu_core::interp::BlockTranslator`). Native code works on the same
//! `CpuState`, lazy flags and soft TLB as the interpreter, and hands
//! whatever it does not lower to the interpreter's own handlers.
//!
//! Layout:
//! - [`Translator`] (here): Cranelift modules, code generations, stats;
//! - `translate`: one region to one function, the register cache, exits,
//!   jumps within the region, helper calls, dispatch by mnemonic;
//! - `region`: the region's edges, predecessor counts and lowering order;
//! - `flags`: the lazy flags record in Cranelift values, conditions;
//! - `flags_mem`: flags from before the block, computed inline from the
//!   record in `CpuState`;
//! - `lower_mem`: addresses, the inline TLB, loads, stores, PUSH/POP;
//! - `lower_alu`: MOV and friends, the ALU, shifts, SETcc, CMOVcc;
//! - `lower_ctl`: Jcc, JMP, CALL, RET;
//! - [`Background`]: the translator on a compiler thread.
//!
//! Only 64-bit-mode blocks are translated; others are interpreted.

mod background;
mod baseline;
mod code_memory;
mod flags;
mod flags_mem;
mod lower_alu;
mod lower_bits;
mod lower_ctl;
mod lower_mem;
mod lower_muldiv;
mod lower_shift;
mod lower_sse;
mod lower_string;
mod lower_sys;
mod region;
mod translate;
mod x64;

use std::collections::HashMap;
use std::time::Instant;

use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use emu_core::interp::{exit, BlockTranslator, JitFrame, NativeBlock, RegionBlock, TranslationRequest};
use iced_x86::Mnemonic;

pub use background::{Background, Gate};
use translate::{Flow, Lower};

/// Why the translator could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host is not one Cranelift generates code for.
    #[error("cranelift does not support this host: {0}")]
    Host(String),
    /// A Cranelift setting was refused.
    #[error("cranelift refused a setting")]
    Setting(#[from] settings::SetError),
    /// Building the target ISA failed.
    #[error("cannot build the cranelift target")]
    Isa(#[source] cranelift_codegen::CodegenError),
    /// Compiling the helper adapters failed.
    #[error("cannot compile the helper adapters: {0}")]
    Adapter(String),
}

/// Compiled code above which everything is dropped at the next block
/// boundary (cranelift-jit frees memory a whole module at a time).
const CODE_LIMIT: usize = 64 << 20;

/// Runs that make a block hot when the baseline backend compiles the
/// first tier: about ten times cheaper than Cranelift's pipeline, it earns
/// its compile back sooner. A Linux boot's kernel phase was shortest
/// between 200 and 300 (`scripts/ab-boot.sh`, 5 pairs each: 300 against
/// 500, 0.15 s; against 200, within noise).
const BASELINE_HOT_THRESHOLD: u32 = 250;

/// Room past `CODE_LIMIT` in a generation's code arena for the functions
/// compiled before the flush.
const CODE_ARENA_SLACK: usize = 64 << 20;

/// The Cranelift translator.
pub struct Translator {
    module: JITModule,
    /// The module's helper adapters (`translate::Adapter`).
    adapters: [u64; 4],
    /// The ISA for code without loops, compiled without Cranelift's
    /// optimiser (see `compile`); the module's own optimises.
    quick: OwnedTargetIsa,
    ctx: Context,
    fctx: FunctionBuilderContext,
    generation: u64,
    next_name: u32,
    code_bytes: usize,
    compiled: u64,
    /// First-tier functions compiled by the baseline backend (`baseline`),
    /// and whether it is used.
    baseline_compiled: u64,
    baseline_ns: u64,
    /// Time in Cranelift's optimising compiles (the second tier).
    optimize_ns: u64,
    baseline: bool,
    refused: u64,
    failed: u64,
    compile_ns: u64,
    flushes: u64,
    /// Instructions lowered inline and instructions left to the fallback,
    /// counted when translating.
    lowered: u64,
    fallbacks: u64,
    /// Translations not made: a one-block region with as many fallbacks
    /// as instructions lowered runs faster interpreted
    /// (`Translator::interpret_fallback_blocks`).
    not_worth_it: u64,
    interpret_fallback_blocks: bool,
    /// Cranelift IR instructions built (what compile time grows with).
    ir_instructions: u64,
    fallback_sites: HashMap<Mnemonic, u64>,
    /// Blocks whose IR was printed (`POPEK_JIT_DUMP`).
    dumped: u64,
    /// Where translated code keeps guest registers.
    registers: RegisterHome,
}

/// Where translated code keeps guest registers between instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterHome {
    /// Optimised code in Cranelift values, first-tier code in `CpuState`
    /// (the default). The first tier is for code that has yet to prove
    /// hot, and most of it never runs enough to optimise: with registers
    /// in memory it compiled in 18% less time and its code was 17%
    /// smaller; the Linux boot's kernel phase took 0.15 s less.
    ByTier,
    /// Cranelift values in both tiers (for the differential tests, which
    /// cover both lowerings with the same cases).
    Values,
}

/// Whether helpers are called through the register-preserving adapters
/// (`POPEK_JIT_ADAPTERS=0`: directly, to compare).
fn use_adapters() -> bool {
    static USE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USE.get_or_init(|| std::env::var_os("POPEK_JIT_ADAPTERS").is_none_or(|v| v != "0"))
}

/// Where to write each translation's machine code (`POPEK_JIT_DUMP_CODE`;
/// nowhere by default).
fn dump_code_dir() -> Option<&'static std::path::Path> {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("POPEK_JIT_DUMP_CODE").map(Into::into)).as_deref()
}

/// How many blocks' IR to print to stderr (`POPEK_JIT_DUMP=n`; none by
/// default).
fn dump_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| std::env::var("POPEK_JIT_DUMP").ok().and_then(|v| v.parse().ok()).unwrap_or(0))
}

// SAFETY: the module's raw pointers are to code it owns; the translator is
// used by one vCPU thread at a time (it moves with the interpreter).
unsafe impl Send for Translator {}

impl std::fmt::Debug for Translator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translator").field("generation", &self.generation).field("compiled", &self.compiled).finish_non_exhaustive()
    }
}

fn new_module() -> Result<(JITModule, OwnedTargetIsa, [u64; 4]), Error> {
    let speed = isa("speed")?;
    let quick = isa("none")?;
    let mut builder = JITBuilder::with_isa(speed, default_libcall_names());
    // Room for a whole generation: it is flushed once past CODE_LIMIT, and
    // the last function may overshoot by its own size.
    let arena = code_memory::CodeArena::new(CODE_LIMIT + CODE_ARENA_SLACK).map_err(|e| Error::Host(format!("cannot map memory for translated code: {e}")))?;
    builder.memory_provider(Box::new(arena));
    let mut module = JITModule::new(builder);
    let adapters = define_adapters(&mut module).map_err(Error::Adapter)?;
    Ok((module, quick, adapters))
}

/// Compiles the register-preserving adapters (see `translate::Adapter`):
/// for each helper shape, `adapter(helper, args..)` calls `helper(args..)`
/// in the host's C convention and returns its result, saving and restoring
/// every register the call may clobber.
fn define_adapters(module: &mut JITModule) -> Result<[u64; 4], String> {
    use cranelift_codegen::ir::InstBuilder;
    let config = module.target_config();
    let pointer = config.pointer_type();
    let mut ids = Vec::new();
    let mut fctx = FunctionBuilderContext::new();
    for (i, (params, ret)) in translate::helper_shapes(pointer).into_iter().enumerate() {
        let mut with_target = vec![pointer];
        with_target.extend(&params);
        let mut ctx = module.make_context();
        // No result in a register: the epilogue restores them all, so the
        // result goes to the frame (the helpers' first argument).
        ctx.func.signature = translate::signature(CallConv::PreserveAll, &with_target, ret);
        ctx.func.signature.returns.clear();
        let id = module.declare_function(&format!("helper_adapter{i}"), Linkage::Local, &ctx.func.signature).map_err(|e| e.to_string())?;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let block = b.create_block();
            b.append_block_params_for_function_params(block);
            b.switch_to_block(block);
            let args = b.block_params(block).to_vec();
            let sig = b.import_signature(translate::signature(CallConv::SystemV, &params, ret));
            let call = b.ins().call_indirect(sig, args[0], &args[1..]);
            let result = b.inst_results(call)[0];
            b.ins().store(translate::mem(), result, args[1], emu_core::interp::offsets::FRAME_RET);
            b.ins().return_(&[]);
            b.seal_all_blocks();
            b.finalize(config);
        }
        module.define_function(id, &mut ctx).map_err(|e| e.to_string())?;
        ids.push(id);
    }
    module.finalize_definitions().map_err(|e| e.to_string())?;
    let address = |i: usize| module.get_finalized_function(ids[i]) as u64;
    Ok([address(0), address(1), address(2), address(3)])
}

/// The host's ISA with Cranelift's `opt_level` at `opt_level`.
fn isa(opt_level: &str) -> Result<OwnedTargetIsa, Error> {
    let mut flags = settings::builder();
    flags.set("use_colocated_libcalls", "false")?;
    flags.set("is_pic", "false")?;
    flags.set("opt_level", opt_level)?;
    // Cranelift's x86-64 tail calls (one region handing over to the next)
    // rely on frame pointers.
    flags.set("preserve_frame_pointers", "true")?;
    // The verifier costs about 40% of compile time: on for the translator's
    // own tests and on request (POPEK_JIT_VERIFY=1), off for guests.
    let verify = cfg!(test) || std::env::var_os("POPEK_JIT_VERIFY").is_some_and(|v| v == "1");
    flags.set("enable_verifier", if verify { "true" } else { "false" })?;
    let isa = cranelift_native::builder().map_err(|e| Error::Host(e.to_string()))?;
    isa.finish(settings::Flags::new(flags)).map_err(Error::Isa)
}

impl Translator {
    /// Leaves interpreted the lone blocks that lower no more instructions
    /// than they leave to the interpreter's fallback (an INC and an IRETQ,
    /// a SYSCALL): entering native code for them costs more than
    /// interpreting them (the syscall ROM ran a fifth faster). Off by
    /// default, so that tests translate every block they run.
    pub fn interpret_fallback_blocks(&mut self) {
        self.interpret_fallback_blocks = true;
    }

    /// Whether the baseline backend compiles the first tier (the default;
    /// `POPEK_JIT_BASELINE=0` turns it off), or Cranelift alone.
    pub fn set_baseline(&mut self, on: bool) {
        self.baseline = on;
    }

    /// Sets where translated code keeps guest registers (from the next
    /// translation on).
    pub fn set_register_home(&mut self, home: RegisterHome) {
        self.registers = home;
    }

    /// A translator for this host.
    pub fn new() -> Result<Self, Error> {
        let (module, quick, adapters) = new_module()?;
        let ctx = module.make_context();
        Ok(Self {
            module,
            adapters,
            quick,
            ctx,
            fctx: FunctionBuilderContext::new(),
            generation: 0,
            next_name: 0,
            code_bytes: 0,
            compiled: 0,
            baseline_compiled: 0,
            baseline_ns: 0,
            optimize_ns: 0,
            baseline: std::env::var_os("POPEK_JIT_BASELINE").is_none_or(|v| v != "0"),
            refused: 0,
            failed: 0,
            compile_ns: 0,
            flushes: 0,
            lowered: 0,
            fallbacks: 0,
            not_worth_it: 0,
            interpret_fallback_blocks: false,
            ir_instructions: 0,
            fallback_sites: HashMap::new(),
            dumped: 0,
            registers: RegisterHome::ByTier,
        })
    }

    fn compile(&mut self, req: &TranslationRequest<'_>) -> Option<NativeBlock> {
        let pointer = self.module.target_config().pointer_type();
        self.module.clear_context(&mut self.ctx);
        self.ctx.func.signature = translate::chain_sig(pointer);
        let sig = self.ctx.func.signature.clone();
        // The guest RIP in the name shows in perf's reports.
        let name = format!("b{}_{:x}", self.next_name, req.rip);
        self.next_name += 1;
        let id = self.module.declare_function(&name, Linkage::Local, &sig).ok()?;
        self.ctx.func.name = UserFuncName::user(0, id.as_u32());
        let looping;
        let quick_first;
        let optimized;
        let (lowered_before, fallbacks_before) = (self.lowered, self.fallbacks);
        {
            let whole = [RegionBlock { rip: req.rip, start: 0, len: req.instructions.len(), chain_fallthrough: false, entry: true }];
            let blocks = if req.blocks.is_empty() { &whole[..] } else { req.blocks };
            // Even one block is a region: it may loop to itself.
            let plan = region::Plan::new(blocks, req.instructions);
            looping = plan.has_loop;
            let order = plan.order.clone();
            // Loops get two tiers: this quick translation first, and the
            // optimised one once the loop proves hot (`optimized_slot`).
            quick_first = looping && req.optimized_slot != 0 && !req.optimize;
            optimized = (looping && !quick_first) || req.optimize;
            let in_memory = match self.registers {
                RegisterHome::ByTier => !optimized,
                RegisterHome::Values => false,
            };
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let adapters = use_adapters().then_some(self.adapters);
            let mut l = Lower::new(&mut b, req.helpers, pointer, adapters);
            l.links = req.links as u64;
            l.inline_stores = !req.journal_writes;
            l.page = req.rip & !0xfff;
            l.registers_in_memory = in_memory;
            l.identity_pages = req.identity_pages;
            l.misses_to_interpreter = req.misses_to_interpreter && optimized && !req.journal_writes;
            l.start_region(plan, if quick_first { req.optimized_slot as u64 } else { 0 });
            for i in order {
                let Some(block) = blocks.get(i) else { continue };
                let Some(instructions) = req.instructions.get(block.start..block.start + block.len) else { continue };
                l.begin_block(i, block.start);
                lower_block(&mut l, block, instructions, &mut self.lowered, &mut self.fallbacks, &mut self.fallback_sites);
            }
            l.emit_tails();
            b.seal_all_blocks();
            b.finalize(self.module.target_config());
        }
        let (lowered, fallbacks) = (self.lowered - lowered_before, self.fallbacks - fallbacks_before);
        if self.interpret_fallback_blocks && req.blocks.len() <= 1 && fallbacks > 0 && lowered <= fallbacks {
            self.not_worth_it += 1;
            return None;
        }
        self.ir_instructions += self.ctx.func.dfg.num_insts() as u64;
        let dump = self.dumped < dump_limit();
        let asm = dump && std::env::var_os("POPEK_JIT_DUMP_ASM").is_some_and(|v| v == "1");
        self.ctx.set_disasm(asm);
        let ir = dump.then(|| if asm { String::new() } else { self.ctx.func.display().to_string() });
        // Straight-line code runs once per entry and is compiled without
        // Cranelift's optimiser, which takes about a third less time. Code
        // that loops gets it, but in a second tier when the request allows
        // (`optimized_slot`): most loops of a Linux boot run too little to
        // repay it, while the decompressor's are 0.5 s slower without it.
        // With the second tier the kernel phase, which waits on the
        // compiler, was 0.27 s shorter and the decompressor 0.05 s longer.
        // First-tier code goes to the baseline backend first; what it
        // refuses, to Cranelift's quick ISA.
        let baseline = if optimized || !self.baseline {
            None
        } else {
            let start = Instant::now();
            let code = baseline::compile(&self.ctx.func);
            self.baseline_ns += start.elapsed().as_nanos() as u64;
            if code.is_none() && baseline::explain_refusals() {
                eprintln!("baseline: refused {name}");
            }
            code
        };
        let bytes = if let Some(code) = baseline {
            self.baseline_compiled += 1;
            self.module.define_function_bytes(id, 16, &code, &[]).ok()?;
            code.len()
        } else if optimized {
            let start = Instant::now();
            let defined = self.module.define_function(id, &mut self.ctx);
            self.optimize_ns += start.elapsed().as_nanos() as u64;
            defined.ok()?;
            self.ctx.compiled_code().map_or(0, |c| c.code_buffer().len())
        } else {
            let code = self.ctx.compile(&*self.quick, &mut ControlPlane::default()).ok()?;
            // Helpers are called through constant addresses: no relocations.
            if !code.buffer.relocs().is_empty() {
                return None;
            }
            let alignment = u64::from(code.buffer.alignment);
            let bytes = code.code_buffer().to_vec();
            self.module.define_function_bytes(id, alignment, &bytes, &[]).ok()?;
            bytes.len()
        };
        let ir = match (ir, asm) {
            // Baseline code has no VCode to show: its IR instead.
            (Some(_), true) => Some(self.ctx.compiled_code().and_then(|c| c.vcode.clone()).unwrap_or_else(|| self.ctx.func.display().to_string())),
            (ir, _) => ir,
        };
        self.code_bytes += bytes;
        if let Some(ir) = ir {
            // Debugging aid: the IR of the first POPEK_JIT_DUMP blocks.
            self.dumped += 1;
            let mut guest = String::new();
            for b in req.blocks {
                guest.push_str(&format!("  block {:#x}:\n", b.rip));
                for ins in req.instructions.iter().skip(b.start).take(b.len) {
                    guest.push_str(&format!("    {:#x} {ins}\n", ins.ip()));
                }
            }
            eprintln!("jit: {name} at {:#x} ({} instructions, {bytes} code bytes)\n{guest}{ir}", req.rip, req.instructions.len());
        }
        self.module.finalize_definitions().ok()?;
        let code = self.module.get_finalized_function(id);
        if let Some(dir) = dump_code_dir() {
            // Profiling aid: the machine code of every translation, named
            // as perf names it, with its address, for disassembly.
            // SAFETY: `code` is the finalized function, `bytes` long.
            let machine = unsafe { std::slice::from_raw_parts(code, bytes) };
            let file = dir.join(format!("{name}-{:x}.bin", code as usize));
            if let Err(e) = std::fs::write(&file, machine) {
                tracing::warn!("jit: writing {}: {e}", file.display());
            }
        }
        // SAFETY: the function was built with `translate::chain_sig`
        // (pointer in, i32 out, Cranelift's `tail` convention, which for
        // that signature is System V's, the host's C convention, at the
        // machine level) and is finalized (executable).
        let entry = unsafe { std::mem::transmute::<*const u8, unsafe extern "C" fn(*mut JitFrame) -> u32>(code) };
        Some(NativeBlock { entry, index: 0, generation: self.generation, tiered: quick_first })
    }
}

/// Lowers one block of the request (`instructions`, from index
/// `block.start`), ending it with an exit or a jump within the region;
/// counts what was lowered and what falls back.
fn lower_block(
    l: &mut Lower<'_, '_>,
    block: &RegionBlock,
    instructions: &[iced_x86::Instruction],
    lowered_count: &mut u64,
    fallback_count: &mut u64,
    fallback_sites: &mut HashMap<Mnemonic, u64>,
) {
    let mut last_lowered = false;
    for (k, ins) in instructions.iter().enumerate() {
        l.index = block.start + k;
        let (flow, lowered) = l.instruction(ins);
        last_lowered = lowered;
        if lowered {
            *lowered_count += 1;
        } else {
            *fallback_count += 1;
            *fallback_sites.entry(ins.mnemonic()).or_default() += 1;
        }
        if flow == Flow::Ended {
            return;
        }
    }
    let next = instructions.last().map_or(block.rip, |i| i.next_ip());
    let retired = (block.start + instructions.len()) as u64;
    // A fallback that answered CONTINUE changed nothing the next block's
    // code assumes (mode changes end blocks and are not chained through).
    let _ = last_lowered;
    // After an OUT, through the chain, which sees an interrupt the device
    // raised or a stop it asked for before the next block runs.
    let through_chain = instructions.last().is_some_and(emu_core::interp::ends_block_for_the_chain);
    if block.chain_fallthrough {
        match l.internal(next) {
            Some(target) if !through_chain => l.jump_to(target, retired, Some(1)),
            _ => {
                // Never a tail call: the dispatcher's loop looks first.
                l.through_dispatcher = through_chain;
                l.exit_direct(next, retired, 1);
                l.through_dispatcher = false;
            }
        }
    } else {
        l.exit_here(next, retired, exit::CONTINUE);
    }
}

impl BlockTranslator for Translator {
    fn translate(&mut self, req: &TranslationRequest<'_>) -> Option<NativeBlock> {
        if !req.long_mode || req.bitness != 64 || req.instructions.is_empty() {
            self.refused += 1;
            return None;
        }
        let start = Instant::now();
        let not_worth_it_before = self.not_worth_it;
        // A panic in the code generator is a translator bug; the guest must
        // not pay for it with the emulator: the block stays interpreted.
        let native = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.compile(req))) {
            Ok(native) => native,
            Err(_) => {
                tracing::error!(rip = req.rip, "jit: the code generator panicked; the block stays interpreted");
                self.ctx = self.module.make_context();
                self.fctx = FunctionBuilderContext::new();
                None
            }
        };
        self.compile_ns += start.elapsed().as_nanos() as u64;
        match native {
            Some(_) => self.compiled += 1,
            None if self.not_worth_it != not_worth_it_before => {}
            None => self.failed += 1,
        }
        native
    }

    fn wants_flush(&self) -> bool {
        self.code_bytes > CODE_LIMIT
    }

    fn flush(&mut self) {
        let Ok((fresh, _, adapters)) = new_module() else { return };
        let old = std::mem::replace(&mut self.module, fresh);
        self.adapters = adapters;
        // SAFETY: the interpreter calls `flush` only between blocks, and
        // native blocks of older generations are never called again.
        unsafe { old.free_memory() };
        self.generation += 1;
        self.code_bytes = 0;
        self.flushes += 1;
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn hot_threshold(&self) -> u32 {
        if self.baseline {
            BASELINE_HOT_THRESHOLD
        } else {
            emu_core::interp::DEFAULT_HOT_THRESHOLD
        }
    }

    fn stats(&self) -> Vec<(String, u64)> {
        let mut v = vec![
            ("translated".to_string(), self.compiled),
            ("translated by the baseline backend".to_string(), self.baseline_compiled),
            ("baseline backend time (us)".to_string(), self.baseline_ns / 1000),
            ("optimising compile time (us)".to_string(), self.optimize_ns / 1000),
            ("translation failures".to_string(), self.failed),
            ("left interpreted (mostly fallbacks)".to_string(), self.not_worth_it),
            ("refused (not 64-bit)".to_string(), self.refused),
            ("compile time (us)".to_string(), self.compile_ns / 1000),
            ("code bytes".to_string(), self.code_bytes as u64),
            ("code flushes".to_string(), self.flushes),
            ("instructions lowered".to_string(), self.lowered),
            ("IR instructions".to_string(), self.ir_instructions),
        ];
        let mut sites: Vec<_> = self.fallback_sites.iter().collect();
        sites.sort_by(|a, b| b.1.cmp(a.1));
        for (m, n) in sites.into_iter().take(10) {
            v.push((format!("fallback site {m:?}"), *n));
        }
        v
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lowering;
#[cfg(test)]
mod tests_sys;
#[cfg(test)]
mod tests_chain;
#[cfg(test)]
mod tests_background;
#[cfg(test)]
mod tests_flags_mem;
#[cfg(test)]
mod tests_region;
#[cfg(test)]
mod tests_identity;
