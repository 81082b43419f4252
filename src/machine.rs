//! The PC machine: guest memory, firmware or kernel, the devices on their
//! buses, and a vCPU from the chosen backend, run until the guest stops.
//!
//! Who emulates what under `kvm`: KVM's in-kernel irqchip holds the 8259
//! PICs, the IOAPIC and the local APIC, and its PIT holds ports 0x40-0x43
//! and 0x61; every other device below lives here, in userspace, and raises
//! its interrupt through `KVM_IRQ_LINE`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::Ordering;

use devices::fw_cfg::FwCfg;
use devices::ioapic::{IoApic, IoApicIrqLine};
use devices::lapic::{Lapic, LapicMmio, SharedLapic};
use devices::{
    AcpiPm, Cmos, Hpet, CmosMemoryLayout, DebugCon, DebugExit, DualPic, I8042, PciBus, PciConfigIo, PicIrqLine, Pit, Port92,
    PostCode, ResetControl, Serial,
};
use emu_core::interp::{InterruptSource, Interpreter};
use emu_core::{
    Bus, GuestMemory, HostClock, MachineContext, MachineControl, SharedClock, SharedDevice, SharedIrqLine,
    StopReason, Vcpu, VmExit,
};

use crate::console::{self, ConsoleSink, RawTerminal};
use crate::error::{Error, Result};
use crate::loader;

/// Which CPU backend runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Hardware virtualization through KVM.
    Kvm,
    /// The software interpreter.
    Interp,
    /// The Cranelift binary translator.
    Jit,
}

impl Accel {
    /// KVM where the host has hardware virtualization, the binary
    /// translator elsewhere.
    pub fn default_for_host() -> (Self, String) {
        match accel_kvm::probe() {
            accel_kvm::KvmHost::Hardware => (Accel::Kvm, "hardware virtualization is available".into()),
            accel_kvm::KvmHost::Paravirtual => {
                (Accel::Jit, "/dev/kvm is kvm_pvm, without hardware virtualization".into())
            }
            accel_kvm::KvmHost::Unavailable(why) => (Accel::Jit, format!("KVM is unavailable: {why}")),
        }
    }

    /// The name the CLI uses.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Interp => "interp",
            Accel::Jit => "jit",
        }
    }
}

/// What the guest boots.
#[derive(Clone, Debug)]
pub enum BootSource {
    /// Firmware at the reset vector.
    Firmware(PathBuf),
    /// A Linux bzImage or multiboot kernel.
    Kernel {
        /// The kernel image.
        kernel: PathBuf,
        /// An initrd (Linux) or module (multiboot).
        initrd: Option<PathBuf>,
        /// The kernel command line.
        cmdline: String,
    },
}

/// Where a character device's output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The terminal (and, for the serial port, input from it).
    Stdio,
    /// A file, created or truncated.
    File(PathBuf),
    /// Nowhere.
    None,
}

impl std::str::FromStr for Output {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "stdio" => Ok(Output::Stdio),
            "none" => Ok(Output::None),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(Output::File(p.into())),
                _ => Err(format!("'{s}' is not stdio, none or file:PATH")),
            },
        }
    }
}

/// Everything needed to build and run one machine.
#[derive(Clone, Debug)]
pub struct Config {
    /// The CPU backend.
    pub accel: Accel,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// What boots.
    pub boot: BootSource,
    /// COM1.
    pub serial: Output,
    /// The debug console at port 0x402.
    pub debugcon: Output,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// Print the vCPU's statistics at exit.
    pub stats: bool,
    /// Under the JIT, repeat each native run under the interpreter and stop
    /// at the first difference.
    pub jit_lockstep: bool,
}

/// A writer that flushes after every write, so prompts without a newline
/// appear at once.
struct Unbuffered<W: Write>(W);

impl<W: Write> Write for Unbuffered<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.0.flush()?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn open_output(out: &Output) -> Result<Box<dyn Write + Send>> {
    Ok(match out {
        Output::Stdio => Box::new(Unbuffered(std::io::stdout())),
        Output::None => Box::new(std::io::sink()),
        Output::File(path) => {
            let f = std::fs::File::create(path).map_err(|source| Error::Io { path: path.clone(), source })?;
            Box::new(Unbuffered(f))
        }
    })
}

impl ConsoleSink for Serial {
    fn push(&mut self, bytes: &[u8]) -> usize {
        self.enqueue_input(bytes)
    }
}

/// Where device interrupts go.
trait InterruptController {
    fn line(&self, gsi: u32) -> SharedIrqLine;
}

impl InterruptController for accel_kvm::KvmVm {
    fn line(&self, gsi: u32) -> SharedIrqLine {
        self.irq_line(gsi)
    }
}

/// The software backends' interrupt controllers: the 8259 pair and the
/// IOAPIC, both wired to every ISA IRQ as on a PC (and as KVM's default
/// routing does), so the guest may use either.
struct SoftwareIrqs {
    pic: Arc<Mutex<DualPic>>,
    ioapic: Arc<Mutex<IoApic>>,
}

/// One ISA interrupt line feeding the PIC and the same IOAPIC pin.
struct IsaIrqLine {
    pic: SharedIrqLine,
    ioapic: SharedIrqLine,
}

impl emu_core::IrqLine for IsaIrqLine {
    fn set_level(&self, high: bool) {
        self.pic.set_level(high);
        self.ioapic.set_level(high);
    }
}

impl InterruptController for SoftwareIrqs {
    fn line(&self, gsi: u32) -> SharedIrqLine {
        Arc::new(IsaIrqLine {
            pic: PicIrqLine::shared(self.pic.clone(), gsi as u8),
            ioapic: IoApicIrqLine::shared(self.ioapic.clone(), gsi as u8),
        })
    }
}

fn shared<T: emu_core::BusDevice + 'static>(dev: T) -> Arc<Mutex<T>> {
    Arc::new(Mutex::new(dev))
}

/// The userspace devices and what the run loop needs of them.
struct Devices {
    serial: Arc<Mutex<Serial>>,
    cmos: Arc<Mutex<Cmos>>,
}

/// Builds the devices every backend shares and puts them on the port bus.
/// `rtc_irq` is the RTC's interrupt line (IRQ8, through the HPET's legacy
/// gate where there is one).
fn build_devices(
    cfg: &Config,
    irqs: &dyn InterruptController,
    rtc_irq: SharedIrqLine,
    memory: &Arc<GuestMemory>,
    control: &Arc<MachineControl>,
    clock: &SharedClock,
    pio: &mut Bus,
) -> Result<Devices> {
    let serial = shared(Serial::new(irqs.line(4), open_output(&cfg.serial)?));
    let below_4g = memory.low_ram_end();
    let layout = CmosMemoryLayout { below_4g_bytes: below_4g, above_4g_bytes: memory.ram_size() - below_4g, cpus: 1 };
    let cmos = shared(Cmos::new(clock.clone(), rtc_irq, layout));
    let a20 = Arc::new(AtomicBool::new(true));
    let i8042 = shared(I8042::new(irqs.line(1), irqs.line(12), control.clone(), a20.clone()));
    let pci: SharedDevice = shared(PciConfigIo::new(Arc::new(Mutex::new(PciBus::pc()))));

    let mut put = |dev: SharedDevice, base: u64, len: u64| pio.insert(dev, base, len);
    put(serial.clone(), devices::serial::COM1_BASE, devices::serial::SERIAL_PORT_LEN)?;
    put(cmos.clone(), 0x70, 2)?;
    put(i8042.clone(), 0x60, 1)?;
    put(i8042, 0x64, 1)?;
    put(shared(Port92::new(control.clone(), a20)), 0x92, 1)?;
    put(shared(PostCode::new()), 0x80, 1)?;
    put(shared(DebugExit::new(control.clone())), 0xf4, 4)?;
    put(shared(DebugCon::new(open_output(&cfg.debugcon)?)), 0x402, 1)?;
    for (base, len) in devices::PCI_CONFIG_IO_RANGES {
        put(pci.clone(), base, len)?;
    }
    put(shared(ResetControl::new(control.clone())), 0xcf9, 1)?;
    let sci = irqs.line(u32::from(devices::acpi_pm::SCI_IRQ));
    put(shared(AcpiPm::new(clock.clone(), control.clone(), sci)), devices::acpi_pm::ACPI_PM_BASE, devices::acpi_pm::ACPI_PM_LEN)?;
    let fw_cfg = shared(firmware_config(memory)?);
    put(fw_cfg.clone(), devices::fw_cfg::FW_CFG_PORT_SEL, devices::fw_cfg::FW_CFG_IO_LEN)?;
    put(fw_cfg, devices::fw_cfg::FW_CFG_PORT_DMA, devices::fw_cfg::FW_CFG_DMA_LEN)?;
    Ok(Devices { serial, cmos })
}

/// QEMU's fw_cfg as firmware (SeaBIOS) reads it: the RAM map as
/// "etc/e820" (plain RAM runs, as QEMU lists them; the firmware reserves
/// its own areas).
fn firmware_config(memory: &Arc<GuestMemory>) -> Result<FwCfg> {
    let mut fw = FwCfg::new(memory.clone());
    let ram: Vec<emu_core::layout::E820Entry> = memory
        .ram_regions()
        .iter()
        .map(|r| emu_core::layout::E820Entry { addr: r.guest_start, size: r.len, kind: emu_core::layout::E820Kind::Ram })
        .collect();
    fw.add_e820(&ram).map_err(|e| Error::Config(format!("fw_cfg: {e}")))?;
    Ok(fw)
}

/// A device with a timer of its own.
trait Timed: Send {
    fn tick(&mut self);
    fn next_deadline_ns(&self) -> Option<u64>;
}

impl Timed for Cmos {
    fn tick(&mut self) {
        Cmos::tick(self)
    }
    fn next_deadline_ns(&self) -> Option<u64> {
        Cmos::next_deadline_ns(self)
    }
}

impl Timed for Lapic {
    fn tick(&mut self) {
        Lapic::tick(self)
    }
    fn next_deadline_ns(&self) -> Option<u64> {
        Lapic::next_deadline_ns(self)
    }
}

impl Timed for Hpet {
    fn tick(&mut self) {
        Hpet::tick(self)
    }
    fn next_deadline_ns(&self) -> Option<u64> {
        Hpet::next_deadline_ns(self)
    }
}

impl Timed for Pit {
    fn tick(&mut self) {
        Pit::tick(self)
    }
    fn next_deadline_ns(&self) -> Option<u64> {
        Pit::next_deadline_ns(self)
    }
}

/// Ticks the devices with timers of their own (the RTC's periodic and
/// update interrupts, the PIT under the software CPU) from a thread, so
/// that they fire while the vCPU runs or halts.
fn spawn_device_timers(timed: Vec<Arc<Mutex<dyn Timed>>>, clock: SharedClock, control: Arc<MachineControl>) {
    let spawned = std::thread::Builder::new().name("device-timers".into()).spawn(move || {
        while control.stop_reason().is_none() {
            let mut deadline: Option<u64> = None;
            for dev in &timed {
                let mut d = dev.lock().unwrap_or_else(|e| e.into_inner());
                d.tick();
                if let Some(t) = d.next_deadline_ns() {
                    deadline = Some(deadline.map_or(t, |cur| cur.min(t)));
                }
            }
            let now = clock.monotonic_ns();
            let wait = deadline.map_or(10_000_000, |d| d.saturating_sub(now)).clamp(50_000, 10_000_000);
            std::thread::sleep(Duration::from_nanos(wait));
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("no device timer thread: {e}");
    }
}

fn spawn_timeout(timeout: Duration, control: Arc<MachineControl>) {
    let spawned = std::thread::Builder::new().name("timeout".into()).spawn(move || {
        std::thread::sleep(timeout);
        control.request_stop(StopReason::Timeout);
    });
    if let Err(e) = spawned {
        tracing::warn!("no timeout thread: {e}");
    }
}

/// Loads the boot image into fresh guest memory.
pub fn load_guest(cfg: &Config) -> Result<(GuestMemory, loader::Boot)> {
    let mut memory = GuestMemory::new(cfg.memory)?;
    let boot = match &cfg.boot {
        BootSource::Firmware(path) => loader::firmware::load(&mut memory, path)?,
        BootSource::Kernel { kernel, initrd, cmdline } => {
            // KVM's in-kernel PIT cannot be gated by a userspace HPET, so
            // only the software machine has one.
            crate::acpi::write_tables(&memory, crate::acpi::Platform { hpet: cfg.accel != Accel::Kvm })?;
            loader::load_kernel(&memory, kernel, initrd.as_deref(), cmdline)?
        }
    };
    Ok((memory, boot))
}

/// The vCPU and what the run loop needs from its backend.
struct Backend {
    vcpu: Box<dyn Vcpu>,
    serial: Arc<Mutex<Serial>>,
}

fn build_kvm(
    cfg: &Config,
    memory: Arc<GuestMemory>,
    boot: &loader::Boot,
    control: &Arc<MachineControl>,
    clock: &SharedClock,
) -> Result<Backend> {
    let vm = accel_kvm::KvmVm::new(memory.clone())?;
    let mut pio = Bus::new();
    let devs = build_devices(cfg, &vm, vm.line(8), &memory, control, clock, &mut pio)?;
    let ctx = MachineContext { memory, pio: Arc::new(pio), mmio: Arc::new(Bus::new()), control: control.clone() };
    let mut vcpu = vm.create_vcpu(0, ctx)?;
    vcpu.set_state(&boot.cpu)?;
    vcpu.register_kick();
    let timed: Vec<Arc<Mutex<dyn Timed>>> = vec![devs.cmos];
    spawn_device_timers(timed, clock.clone(), control.clone());
    Ok(Backend { vcpu: Box::new(KvmRunner(vcpu)), serial: devs.serial })
}

/// Keeps the KVM vCPU's boot-timing hook reachable behind `dyn Vcpu`.
struct KvmRunner(accel_kvm::KvmVcpu);

impl Vcpu for KvmRunner {
    fn run(&mut self) -> std::result::Result<VmExit, emu_core::VcpuError> {
        let r = self.0.run();
        if let Some(t) = self.0.first_exit_time() {
            FIRST_EXIT.get_or_init(|| t);
        }
        r
    }
    fn state(&mut self) -> std::result::Result<emu_core::CpuState, emu_core::VcpuError> {
        self.0.state()
    }
    fn set_state(&mut self, state: &emu_core::CpuState) -> std::result::Result<(), emu_core::VcpuError> {
        self.0.set_state(state)
    }
    fn stats(&self) -> emu_core::VcpuStats {
        self.0.stats()
    }
}

/// When the guest first exited to the VMM (KVM only), for POPEK_TIMING.
static FIRST_EXIT: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

fn build_interp(
    cfg: &Config,
    memory: Arc<GuestMemory>,
    boot: &loader::Boot,
    control: &Arc<MachineControl>,
    clock: &SharedClock,
) -> Result<Backend> {
    let pic = Arc::new(Mutex::new(DualPic::new()));
    let lapic: SharedLapic = Arc::new(Mutex::new(Lapic::new(clock.clone())));
    let ioapic = Arc::new(Mutex::new(IoApic::new(lapic.clone())));
    IoApic::connect_eoi(&ioapic);
    let irqs = SoftwareIrqs { pic: pic.clone(), ioapic: ioapic.clone() };
    let mut mmio = Bus::new();
    mmio.insert(LapicMmio::shared(lapic.clone()), devices::lapic::LAPIC_BASE, devices::lapic::LAPIC_LEN)?;
    mmio.insert(ioapic.clone(), devices::ioapic::IOAPIC_BASE, devices::ioapic::IOAPIC_LEN)?;
    // The HPET's legacy replacement mode cuts the PIT's and the RTC's
    // lines off and drives IRQ0 and IRQ8 itself.
    let hpet = Arc::new(Mutex::new(Hpet::new(clock.clone(), irqs.line(0), irqs.line(8), |gsi| {
        IoApicIrqLine::shared(ioapic.clone(), gsi as u8)
    })));
    let (pit_irq, rtc_irq) = {
        let mut h = hpet.lock().unwrap_or_else(|e| e.into_inner());
        (h.legacy_gate(irqs.line(0)), h.legacy_gate(irqs.line(8)))
    };
    mmio.insert(hpet.clone(), devices::hpet::HPET_BASE, devices::hpet::HPET_LEN)?;
    let mut pio = Bus::new();
    let devs = build_devices(cfg, &irqs, rtc_irq, &memory, control, clock, &mut pio)?;
    let pit = Arc::new(Mutex::new(Pit::new(clock.clone(), pit_irq)));
    for (base, len) in [(0x20, 2), (0xa0, 2), (0x4d0, 2)] {
        pio.insert(pic.clone(), base, len)?;
    }
    pio.insert(pit.clone(), devices::pit::PIT_BASE, devices::pit::PIT_LEN)?;
    pio.insert(pit.clone(), devices::pit::SYSTEM_CONTROL_PORT_B, devices::pit::SYSTEM_CONTROL_PORT_B_LEN)?;

    // INTR: the PIC or the LAPIC raises `pending` and wakes the vCPU
    // thread; the CPU acknowledges when it can take the interrupt.
    let pending = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let vcpu_thread = std::thread::current();
    let notifier = {
        let pending = pending.clone();
        let thread = vcpu_thread.clone();
        move || {
            pending.store(true, Ordering::Release);
            thread.unpark();
        }
    };
    pic.lock().unwrap_or_else(|e| e.into_inner()).set_intr_notifier(notifier.clone());
    lapic.lock().unwrap_or_else(|e| e.into_inner()).set_intr_notifier(notifier);
    let acknowledge = acknowledge_fn(pic.clone(), lapic.clone(), pending.clone());
    control.add_kick(move || vcpu_thread.unpark());

    let ctx = MachineContext { memory, pio: Arc::new(pio), mmio: Arc::new(mmio), control: control.clone() };
    let mut cpu = Interpreter::new(ctx, boot.cpu.clone());
    cpu.set_interrupt_source(InterruptSource { pending, acknowledge });
    cpu.set_clock(clock.clone());
    cpu.set_local_apic(Box::new(CpuSideLapic(lapic.clone())));
    if cfg.accel == Accel::Jit {
        // The JIT is a tier of the interpreter: same machine, hot blocks
        // translated.
        let mut translator = jit::Translator::new().map_err(|e| Error::Config(format!("the jit backend: {e}")))?;
        translator.interpret_fallback_blocks();
        // Compiles run on a second thread unless POPEK_JIT_SYNC=1 (the
        // vCPU interprets a hot block until its code is ready).
        if std::env::var_os("POPEK_JIT_SYNC").is_some_and(|v| v == "1") {
            cpu.set_translator(Box::new(translator));
        } else {
            let background = jit::Background::new(translator).map_err(|e| Error::Config(format!("the jit compiler thread: {e}")))?;
            cpu.set_translator(Box::new(background));
        }
        cpu.set_lockstep(cfg.jit_lockstep);
    }
    let timed: Vec<Arc<Mutex<dyn Timed>>> = vec![devs.cmos, pit, lapic, hpet];
    spawn_device_timers(timed, clock.clone(), control.clone());
    Ok(Backend { vcpu: Box::new(cpu), serial: devs.serial })
}

/// The software CPU's private path to its local APIC: CR8 and
/// IA32_TSC_DEADLINE.
struct CpuSideLapic(SharedLapic);

impl CpuSideLapic {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lapic> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl emu_core::interp::LocalApicPort for CpuSideLapic {
    fn tpr_cr8(&self) -> u8 {
        self.lock().tpr_cr8()
    }
    fn set_tpr_cr8(&self, value: u8) {
        self.lock().set_tpr_cr8(value)
    }
    fn set_tsc_deadline_ns(&self, ns: Option<u64>) {
        self.lock().set_tsc_deadline_ns(ns)
    }
    fn tsc_deadline_ns(&self) -> Option<u64> {
        self.lock().tsc_deadline_ns()
    }
}

/// The INTA cycle for the software CPU: the local APIC's highest pending
/// vector, else the PIC's through LINT0 when it is in ExtINT mode.
fn acknowledge_fn(
    pic: Arc<Mutex<DualPic>>,
    lapic: SharedLapic,
    pending: Arc<std::sync::atomic::AtomicBool>,
) -> Box<dyn FnMut() -> Option<u8> + Send> {
    Box::new(move || {
        let from_lapic = {
            let mut l = lapic.lock().unwrap_or_else(|e| e.into_inner());
            if l.pending_vector().is_some() {
                l.acknowledge()
            } else if l.lint0_is_extint() {
                None
            } else {
                pending.store(false, Ordering::Release);
                return None;
            }
        };
        let mut p = pic.lock().unwrap_or_else(|e| e.into_inner());
        let vector = from_lapic.or_else(|| p.has_interrupt().then(|| p.acknowledge()));
        // Both locks held while `pending` is stored: a request that lands
        // between reading the controllers and the store would otherwise see
        // its notification overwritten with "nothing pending".
        let l = lapic.lock().unwrap_or_else(|e| e.into_inner());
        let more = p.has_interrupt() || l.pending_vector().is_some();
        pending.store(more, Ordering::Release);
        drop(l);
        vector
    })
}

/// Builds the machine described by `cfg` and runs it until the guest
/// stops; returns why it stopped.
pub fn run(cfg: &Config) -> Result<StopReason> {
    let (memory, boot) = load_guest(cfg)?;
    tracing::info!("loaded {}", boot.summary);
    let memory = Arc::new(memory);
    let control = MachineControl::new();
    let clock: SharedClock = Arc::new(HostClock::default());
    let Backend { mut vcpu, serial } = match cfg.accel {
        Accel::Kvm => build_kvm(cfg, memory, &boot, &control, &clock)?,
        _ => build_interp(cfg, memory, &boot, &control, &clock)?,
    };

    if let Some(t) = cfg.timeout {
        spawn_timeout(t, control.clone());
    }
    let _raw = if cfg.serial == Output::Stdio {
        let raw = RawTerminal::stdin().map_err(Error::Console)?;
        let sink: Arc<Mutex<dyn ConsoleSink>> = serial;
        console::spawn_stdin_reader(sink, control.clone());
        raw
    } else {
        None
    };

    let started = std::time::SystemTime::now();
    let reason = loop {
        match vcpu.run()? {
            VmExit::Stopped(reason) => {
                control.request_stop(reason.clone());
                break control.stop_reason().unwrap_or(reason);
            }
            VmExit::Interrupted => continue,
        }
    };
    if !matches!(reason, StopReason::PowerOff | StopReason::Reset | StopReason::DebugExit(_) | StopReason::UserQuit) {
        if let Ok(st) = vcpu.state() {
            let cs = st.segs[emu_core::cpu::seg::CS];
            tracing::info!(
                "guest state at stop: cs:rip {:04x}:{:x} (cs base {:#x}) rsp {:#x} rflags {:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}",
                cs.selector, st.rip, cs.base, st.gpr[emu_core::cpu::reg::RSP], st.rflags, st.cr0, st.cr3, st.cr4, st.efer
            );
        }
    }
    if cfg.stats {
        eprint!("{}", stats_report(cfg.accel, &vcpu.stats(), started.elapsed().unwrap_or_default()));
    }
    if timing::enabled() {
        timing::event("first-exit", FIRST_EXIT.get().copied());
        timing::event("vcpu-start", Some(started));
        timing::event("stop", Some(std::time::SystemTime::now()));
        if let Some(n) = vcpu.instructions_retired() {
            eprintln!("popek-timing: retired {n}");
        }
        timing::peak_rss();
    }
    Ok(reason)
}

/// The `--stats` report: what the vCPU counted over `run_time` of running.
fn stats_report(accel: Accel, stats: &emu_core::VcpuStats, run_time: Duration) -> String {
    use std::fmt::Write as _;
    let secs = run_time.as_secs_f64();
    let backend = format!("{accel:?}").to_lowercase();
    let mut out = format!("popek stats ({backend} backend, {secs:.3} s of vCPU run time)\n");
    match stats.instructions_retired {
        Some(n) => {
            let mips = if secs > 0.0 { n as f64 / secs / 1e6 } else { 0.0 };
            let _ = writeln!(out, "  instructions retired  {n}  ({mips:.1} MIPS)");
        }
        None => out.push_str("  instructions retired  not counted by this backend\n"),
    }
    if let Some((hits, misses)) = stats.tlb {
        let total = hits + misses;
        let rate = if total > 0 { 100.0 * hits as f64 / total as f64 } else { 0.0 };
        let _ = writeln!(out, "  soft-TLB lookups      {total}  ({rate:.2}% hits, {misses} misses)");
    }
    for (kind, n) in &stats.events {
        let _ = writeln!(out, "  {kind:<21} {n}");
    }
    out
}

/// `POPEK_TIMING=1`: prints boot milestones on stderr for
/// `scripts/measure-boot.sh`, as `popek-timing: NAME UNIX_NS`.
mod timing {
    use std::time::SystemTime;

    pub fn enabled() -> bool {
        std::env::var_os("POPEK_TIMING").is_some_and(|v| v == "1")
    }

    pub fn event(name: &str, at: Option<SystemTime>) {
        if let Some(ns) = at.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
            eprintln!("popek-timing: {name} {}", ns.as_nanos());
        }
    }

    pub fn peak_rss() {
        // SAFETY: getrusage fills the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid rusage to fill.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            eprintln!("popek-timing: peak-rss-kib {}", usage.ru_maxrss);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_report_gives_mips_tlb_rate_and_events() {
        let stats = emu_core::VcpuStats {
            instructions_retired: Some(50_000_000),
            tlb: Some((990, 10)),
            events: vec![("port I/O".into(), 7), ("halts".into(), 3)],
        };
        let r = stats_report(Accel::Interp, &stats, Duration::from_millis(500));
        assert!(r.starts_with("popek stats (interp backend, 0.500 s"), "{r}");
        assert!(r.contains("instructions retired  50000000  (100.0 MIPS)"), "{r}");
        assert!(r.contains("soft-TLB lookups      1000  (99.00% hits, 10 misses)"), "{r}");
        assert!(r.contains("port I/O              7"), "{r}");
        assert!(r.contains("halts                 3"), "{r}");
    }

    #[test]
    fn stats_report_says_when_instructions_are_not_counted() {
        let r = stats_report(Accel::Kvm, &emu_core::VcpuStats::default(), Duration::ZERO);
        assert!(r.contains("not counted by this backend"), "{r}");
        assert!(!r.contains("soft-TLB"), "{r}");
    }
}
