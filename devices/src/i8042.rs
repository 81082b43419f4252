//! The i8042 PS/2 keyboard controller (data port 0x60, status/command port
//! 0x64) with a PS/2 keyboard on its first port and a PS/2 mouse on the
//! auxiliary port: enough for SeaBIOS and Linux's i8042, atkbd and psmouse
//! drivers to probe them, and for the reset and A20 lines PC software uses.
//!
//! Status register (read 0x64): OBF (bit 0), IBF (bit 1, always 0: commands
//! complete at once), SYS (bit 2, mirrors the command byte), A2 (bit 3, the
//! last write went to 0x64), keyboard not inhibited (bit 4), AUXB (bit 5, the
//! output buffer holds auxiliary data).
//!
//! Controller commands (write 0x64): 0x20-0x3F read internal RAM (0x20 is
//! the command byte, CTR), 0x60-0x7F write it, 0xA7/0xA8 disable/enable the
//! aux port, 0xA9 aux interface test (0x00), 0xAA self-test (0x55), 0xAB
//! keyboard interface test (0x00), 0xAD/0xAE disable/enable the keyboard
//! port, 0xC0 read input port, 0xD0/0xD1 read/write the output port (bit 0
//! low asserts reset, bit 1 is A20), 0xD2/0xD3 write the keyboard/aux output
//! buffer, 0xD4 write to the aux device, 0xDD/0xDF A20 off/on, 0xE0 read test
//! inputs, 0xF0-0xFF pulse output lines (bit 0 clear pulses reset, so 0xFE
//! resets the machine).
//!
//! The keyboard answers 0xFF reset (FA AA), 0xF2 identify (FA AB 83, or
//! FA AB 41 while the controller translates to set 1), 0xF4/0xF5/0xF6
//! enable/disable/defaults, 0xED LEDs and 0xF3 typematic (FA, then FA for
//! the argument), 0xF0 get/set scancode set, 0xEE echo; anything else gets
//! 0xFE (resend). The mouse answers reset (FA AA 00), identify (FA 00),
//! status request, read data, and acknowledges its mode, rate and
//! resolution commands.
//!
//! Bytes wait in per-source queues; the controller's own replies go first.
//! IRQ1 is driven while the output buffer holds keyboard-side data and CTR
//! bit 0 is set; IRQ12 likewise for aux data and CTR bit 1.
//!
//! Inserted at 0x60 (len 1) and 0x64 (len 1); the absolute port tells them
//! apart. Only the first byte of a wider access reaches a register (the next
//! ports belong to other devices); the rest read as all ones.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use emu_core::{BusDevice, MachineControl, SharedIrqLine, StopReason};

/// The data port.
pub const I8042_DATA_PORT: u64 = 0x60;
/// The status (read) and command (write) port.
pub const I8042_COMMAND_PORT: u64 = 0x64;
/// The keyboard's ISA IRQ.
pub const KEYBOARD_IRQ: u8 = 1;
/// The mouse's ISA IRQ.
pub const AUX_IRQ: u8 = 12;

const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_A2_COMMAND: u8 = 0x08;
const STATUS_NOT_INHIBITED: u8 = 0x10;
const STATUS_AUXB: u8 = 0x20;

const CTR_KBD_INT: u8 = 0x01;
const CTR_AUX_INT: u8 = 0x02;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;
/// Keyboard and aux interrupts enabled, system flag, set 1 translation.
const CTR_DEFAULT: u8 = CTR_KBD_INT | CTR_AUX_INT | CTR_SYS | CTR_XLATE;

const OUTPUT_PORT_RESET: u8 = 0x01;
const OUTPUT_PORT_A20: u8 = 0x02;
const OUTPUT_PORT_KBD_OBF: u8 = 0x10;
const OUTPUT_PORT_AUX_OBF: u8 = 0x20;
/// Reset deasserted, A20 on, clock/data lines idle high.
const OUTPUT_PORT_DEFAULT: u8 = 0xcf;

const ACK: u8 = 0xfa;
const RESEND: u8 = 0xfe;
const BAT_OK: u8 = 0xaa;
/// Bytes each device can buffer before it drops input, like a real
/// keyboard's 16-byte buffer.
const DEVICE_QUEUE_LEN: usize = 16;

/// Which port a byte in the output buffer came from, for AUXB and the IRQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Keyboard,
    Aux,
}

/// What a data port write means after a controller command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingData {
    Ram(u8),
    OutputPort,
    KeyboardOutput,
    AuxOutput,
    AuxDevice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyboardArgument {
    Leds,
    ScancodeSet,
    Typematic,
}

/// A PS/2 keyboard's command state.
#[derive(Debug)]
struct Keyboard {
    scanning: bool,
    scancode_set: u8,
    leds: u8,
    typematic: u8,
    expecting: Option<KeyboardArgument>,
    last_sent: u8,
    queue: VecDeque<u8>,
}

impl Keyboard {
    fn new() -> Self {
        Self {
            scanning: true,
            scancode_set: 2,
            leds: 0,
            typematic: 0x2b,
            expecting: None,
            last_sent: ACK,
            queue: VecDeque::new(),
        }
    }

    fn set_defaults(&mut self) {
        self.scancode_set = 2;
        self.typematic = 0x2b;
        self.leds = 0;
    }

    fn send(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.queue.len() >= DEVICE_QUEUE_LEN {
                tracing::trace!("i8042: keyboard buffer full, dropping {b:#04x}");
                continue;
            }
            self.queue.push_back(b);
            self.last_sent = b;
        }
    }

    /// A byte from the host; `translating` is the controller's CTR bit 6.
    fn receive(&mut self, byte: u8, translating: bool) {
        if let Some(argument) = self.expecting.take() {
            match argument {
                KeyboardArgument::Leds => {
                    self.leds = byte & 0x07;
                    self.send(&[ACK]);
                }
                KeyboardArgument::Typematic => {
                    self.typematic = byte & 0x7f;
                    self.send(&[ACK]);
                }
                KeyboardArgument::ScancodeSet => match byte {
                    0 => {
                        // Under translation the controller reports the set
                        // as its set 1 translation would.
                        let set = match (translating, self.scancode_set) {
                            (true, 1) => 0x43,
                            (true, 2) => 0x41,
                            (true, _) => 0x3f,
                            (false, s) => s,
                        };
                        self.send(&[ACK, set]);
                    }
                    1..=3 => {
                        self.scancode_set = byte;
                        self.send(&[ACK]);
                    }
                    _ => self.send(&[RESEND]),
                },
            }
            return;
        }
        match byte {
            0xed => {
                self.expecting = Some(KeyboardArgument::Leds);
                self.send(&[ACK]);
            }
            0xee => self.send(&[0xee]),
            0xf0 => {
                self.expecting = Some(KeyboardArgument::ScancodeSet);
                self.send(&[ACK]);
            }
            0xf2 => self.send(&[ACK, 0xab, if translating { 0x41 } else { 0x83 }]),
            0xf3 => {
                self.expecting = Some(KeyboardArgument::Typematic);
                self.send(&[ACK]);
            }
            0xf4 => {
                self.scanning = true;
                self.send(&[ACK]);
            }
            0xf5 => {
                self.set_defaults();
                self.scanning = false;
                self.send(&[ACK]);
            }
            0xf6 => {
                self.set_defaults();
                self.scanning = true;
                self.send(&[ACK]);
            }
            // Set 3 key-type commands.
            0xf7..=0xfd => self.send(&[ACK]),
            0xfe => {
                let last = self.last_sent;
                self.send(&[last]);
            }
            0xff => {
                self.queue.clear();
                self.set_defaults();
                self.scanning = true;
                self.send(&[ACK, BAT_OK]);
            }
            _ => self.send(&[RESEND]),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MouseArgument {
    SampleRate,
    Resolution,
}

/// A PS/2 mouse's command state.
#[derive(Debug)]
struct Mouse {
    reporting: bool,
    remote_mode: bool,
    scaling_2to1: bool,
    sample_rate: u8,
    resolution: u8,
    expecting: Option<MouseArgument>,
    queue: VecDeque<u8>,
}

impl Mouse {
    fn new() -> Self {
        Self {
            reporting: false,
            remote_mode: false,
            scaling_2to1: false,
            sample_rate: 100,
            resolution: 2,
            expecting: None,
            queue: VecDeque::new(),
        }
    }

    fn set_defaults(&mut self) {
        self.reporting = false;
        self.remote_mode = false;
        self.scaling_2to1 = false;
        self.sample_rate = 100;
        self.resolution = 2;
    }

    fn send(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.queue.len() >= DEVICE_QUEUE_LEN {
                tracing::trace!("i8042: mouse buffer full, dropping {b:#04x}");
                continue;
            }
            self.queue.push_back(b);
        }
    }

    fn receive(&mut self, byte: u8) {
        if let Some(argument) = self.expecting.take() {
            match argument {
                MouseArgument::SampleRate => self.sample_rate = byte,
                MouseArgument::Resolution => self.resolution = byte & 3,
            }
            self.send(&[ACK]);
            return;
        }
        match byte {
            0xe6 => {
                self.scaling_2to1 = false;
                self.send(&[ACK]);
            }
            0xe7 => {
                self.scaling_2to1 = true;
                self.send(&[ACK]);
            }
            0xe8 => {
                self.expecting = Some(MouseArgument::Resolution);
                self.send(&[ACK]);
            }
            0xe9 => {
                let status = u8::from(self.remote_mode) << 6
                    | u8::from(self.reporting) << 5
                    | u8::from(self.scaling_2to1) << 4;
                self.send(&[ACK, status, self.resolution, self.sample_rate]);
            }
            0xea => {
                self.remote_mode = false;
                self.send(&[ACK]);
            }
            // Read data: an empty movement packet.
            0xeb => self.send(&[ACK, 0x08, 0x00, 0x00]),
            // Wrap mode is acknowledged but not emulated.
            0xec | 0xee => self.send(&[ACK]),
            0xf0 => {
                self.remote_mode = true;
                self.send(&[ACK]);
            }
            0xf2 => self.send(&[ACK, 0x00]),
            0xf3 => {
                self.expecting = Some(MouseArgument::SampleRate);
                self.send(&[ACK]);
            }
            0xf4 => {
                self.reporting = true;
                self.send(&[ACK]);
            }
            0xf5 => {
                self.reporting = false;
                self.send(&[ACK]);
            }
            0xf6 => {
                self.set_defaults();
                self.send(&[ACK]);
            }
            0xfe => self.send(&[ACK]),
            0xff => {
                self.queue.clear();
                self.set_defaults();
                self.send(&[ACK, BAT_OK, 0x00]);
            }
            _ => self.send(&[RESEND]),
        }
    }
}

/// The i8042 controller with its keyboard and mouse.
pub struct I8042 {
    irq1: SharedIrqLine,
    irq12: SharedIrqLine,
    control: Arc<MachineControl>,
    a20: Arc<AtomicBool>,
    ctr: u8,
    ram: [u8; 32],
    output_port: u8,
    last_write_was_command: bool,
    pending: Option<PendingData>,
    /// The controller's own replies, ahead of device data.
    controller_queue: VecDeque<(u8, Source)>,
    output_buffer: Option<(u8, Source)>,
    last_output: u8,
    keyboard: Keyboard,
    mouse: Mouse,
    irq1_level: bool,
    irq12_level: bool,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042")
            .field("ctr", &self.ctr)
            .field("output_buffer", &self.output_buffer)
            .field("keyboard", &self.keyboard)
            .field("mouse", &self.mouse)
            .finish()
    }
}

impl I8042 {
    /// A controller raising IRQ1 and IRQ12, asking `control` to reset the
    /// machine when the guest pulses the reset line, and driving `a20`
    /// (shared with [`crate::Port92`]).
    pub fn new(
        irq1: SharedIrqLine,
        irq12: SharedIrqLine,
        control: Arc<MachineControl>,
        a20: Arc<AtomicBool>,
    ) -> Self {
        Self {
            irq1,
            irq12,
            control,
            a20,
            ctr: CTR_DEFAULT,
            ram: [0; 32],
            output_port: OUTPUT_PORT_DEFAULT,
            last_write_was_command: false,
            pending: None,
            controller_queue: VecDeque::new(),
            output_buffer: None,
            last_output: 0,
            keyboard: Keyboard::new(),
            mouse: Mouse::new(),
            irq1_level: false,
            irq12_level: false,
        }
    }

    /// Queues scancodes from the keyboard (in the set the guest expects),
    /// if the keyboard is scanning. Returns how many were accepted.
    pub fn push_keyboard_bytes(&mut self, bytes: &[u8]) -> usize {
        if !self.keyboard.scanning {
            return 0;
        }
        let room = DEVICE_QUEUE_LEN.saturating_sub(self.keyboard.queue.len());
        let accepted = bytes.len().min(room);
        self.keyboard
            .send(bytes.get(..accepted).unwrap_or_default());
        self.refill_output_buffer();
        accepted
    }

    /// The A20 gate as the output port (or port 0x92) last set it.
    pub fn a20_enabled(&self) -> bool {
        self.a20.load(Ordering::SeqCst)
    }

    fn reply(&mut self, byte: u8) {
        self.reply_as(byte, Source::Keyboard);
    }

    fn reply_as(&mut self, byte: u8, source: Source) {
        if self.controller_queue.len() >= DEVICE_QUEUE_LEN {
            tracing::trace!("i8042: controller queue full, dropping {byte:#04x}");
            return;
        }
        self.controller_queue.push_back((byte, source));
    }

    /// Moves the next byte into an empty output buffer and updates the IRQs.
    fn refill_output_buffer(&mut self) {
        if self.output_buffer.is_none() {
            self.output_buffer = if let Some(entry) = self.controller_queue.pop_front() {
                Some(entry)
            } else if self.ctr & CTR_KBD_DISABLE == 0 && !self.keyboard.queue.is_empty() {
                self.keyboard
                    .queue
                    .pop_front()
                    .map(|b| (b, Source::Keyboard))
            } else if self.ctr & CTR_AUX_DISABLE == 0 {
                self.mouse.queue.pop_front().map(|b| (b, Source::Aux))
            } else {
                None
            };
        }
        let source = self.output_buffer.map(|(_, s)| s);
        let kbd = source == Some(Source::Keyboard) && self.ctr & CTR_KBD_INT != 0;
        let aux = source == Some(Source::Aux) && self.ctr & CTR_AUX_INT != 0;
        self.drive_irqs(kbd, aux);
    }

    /// Sets the IRQ 1 and IRQ 12 lines, touching only those that change.
    fn drive_irqs(&mut self, kbd: bool, aux: bool) {
        if kbd != self.irq1_level {
            self.irq1_level = kbd;
            self.irq1.set_level(kbd);
        }
        if aux != self.irq12_level {
            self.irq12_level = aux;
            self.irq12.set_level(aux);
        }
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_NOT_INHIBITED;
        match self.output_buffer {
            Some((_, Source::Keyboard)) => status |= STATUS_OBF,
            Some((_, Source::Aux)) => status |= STATUS_OBF | STATUS_AUXB,
            None => {}
        }
        if self.ctr & CTR_SYS != 0 {
            status |= STATUS_SYS;
        }
        if self.last_write_was_command {
            status |= STATUS_A2_COMMAND;
        }
        status
    }

    fn read_data(&mut self) -> u8 {
        if let Some((byte, _)) = self.output_buffer.take() {
            self.last_output = byte;
            // The IRQ falls when the host empties the buffer and rises again
            // when the next byte is loaded: an edge per byte. Held high
            // across a refill, an edge-triggered controller (ISA IRQs 1 and
            // 12 are edge-triggered) would signal the first byte of a reply
            // and never the rest; Linux's atkbd probe of the aux port then
            // waited out its timeouts, holding a poweroff for a second.
            self.drive_irqs(false, false);
        }
        self.refill_output_buffer();
        // An empty buffer reads its stale contents, as on real hardware.
        self.last_output
    }

    fn output_port_value(&self) -> u8 {
        let mut value =
            self.output_port & !(OUTPUT_PORT_A20 | OUTPUT_PORT_KBD_OBF | OUTPUT_PORT_AUX_OBF);
        if self.a20_enabled() {
            value |= OUTPUT_PORT_A20;
        }
        match self.output_buffer {
            Some((_, Source::Keyboard)) => value |= OUTPUT_PORT_KBD_OBF,
            Some((_, Source::Aux)) => value |= OUTPUT_PORT_AUX_OBF,
            None => {}
        }
        value
    }

    fn request_reset(&self) {
        tracing::debug!("i8042: reset line pulsed");
        self.control.request_stop(StopReason::Reset);
    }

    fn write_command(&mut self, command: u8) {
        self.last_write_was_command = true;
        self.pending = None;
        match command {
            0x20 => self.reply(self.ctr),
            0x21..=0x3f => self.reply(self.ram[usize::from(command & 0x1f)]),
            0x60..=0x7f => self.pending = Some(PendingData::Ram(command & 0x1f)),
            // Password installed? No.
            0xa4 => self.reply(0xf1),
            0xa7 => self.ctr |= CTR_AUX_DISABLE,
            0xa8 => self.ctr &= !CTR_AUX_DISABLE,
            0xa9 | 0xab => self.reply(0x00),
            0xaa => self.reply(0x55),
            0xad => self.ctr |= CTR_KBD_DISABLE,
            0xae => self.ctr &= !CTR_KBD_DISABLE,
            0xc0 | 0xe0 => self.reply(0x00),
            0xd0 => self.reply(self.output_port_value()),
            0xd1 => self.pending = Some(PendingData::OutputPort),
            0xd2 => self.pending = Some(PendingData::KeyboardOutput),
            0xd3 => self.pending = Some(PendingData::AuxOutput),
            0xd4 => self.pending = Some(PendingData::AuxDevice),
            0xdd => self.a20.store(false, Ordering::SeqCst),
            0xdf => self.a20.store(true, Ordering::SeqCst),
            // Pulse output lines low; bit 0 is the reset line.
            0xf0..=0xff => {
                if command & 0x01 == 0 {
                    self.request_reset();
                }
            }
            _ => tracing::debug!("i8042: unhandled controller command {command:#04x}"),
        }
        self.refill_output_buffer();
    }

    fn write_data(&mut self, byte: u8) {
        self.last_write_was_command = false;
        match self.pending.take() {
            Some(PendingData::Ram(0)) => self.ctr = byte,
            Some(PendingData::Ram(index)) => {
                if let Some(slot) = self.ram.get_mut(usize::from(index)) {
                    *slot = byte;
                }
            }
            Some(PendingData::OutputPort) => {
                self.output_port = byte;
                self.a20
                    .store(byte & OUTPUT_PORT_A20 != 0, Ordering::SeqCst);
                if byte & OUTPUT_PORT_RESET == 0 {
                    self.request_reset();
                }
            }
            Some(PendingData::KeyboardOutput) => self.reply_as(byte, Source::Keyboard),
            Some(PendingData::AuxOutput) => self.reply_as(byte, Source::Aux),
            Some(PendingData::AuxDevice) => {
                // Talking to the mouse enables its port again.
                self.ctr &= !CTR_AUX_DISABLE;
                self.mouse.receive(byte);
            }
            None => {
                // Talking to the keyboard enables its port again.
                self.ctr &= !CTR_KBD_DISABLE;
                self.keyboard.receive(byte, self.ctr & CTR_XLATE != 0);
            }
        }
        self.refill_output_buffer();
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let Some(first) = data.first_mut() else {
            return;
        };
        *first = match base.wrapping_add(offset) {
            I8042_DATA_PORT => self.read_data(),
            I8042_COMMAND_PORT => self.status(),
            _ => 0xff,
        };
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else { return };
        match base.wrapping_add(offset) {
            I8042_DATA_PORT => self.write_data(byte),
            I8042_COMMAND_PORT => self.write_command(byte),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use emu_core::RecordingIrq;

    use super::*;

    struct Rig {
        dev: I8042,
        irq1: Arc<RecordingIrq>,
        irq12: Arc<RecordingIrq>,
        control: Arc<MachineControl>,
        a20: Arc<AtomicBool>,
    }

    fn rig() -> Rig {
        let irq1 = Arc::new(RecordingIrq::default());
        let irq12 = Arc::new(RecordingIrq::default());
        let control = MachineControl::new();
        let a20 = Arc::new(AtomicBool::new(true));
        let dev = I8042::new(irq1.clone(), irq12.clone(), control.clone(), a20.clone());
        Rig {
            dev,
            irq1,
            irq12,
            control,
            a20,
        }
    }

    impl Rig {
        fn command(&mut self, c: u8) {
            self.dev.write(I8042_COMMAND_PORT, 0, &[c]);
        }
        fn data(&mut self, d: u8) {
            self.dev.write(I8042_DATA_PORT, 0, &[d]);
        }
        fn status(&mut self) -> u8 {
            let mut b = [0];
            self.dev.read(I8042_COMMAND_PORT, 0, &mut b);
            b[0]
        }
        /// Reads everything waiting in the output buffer.
        fn drain(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            while self.status() & STATUS_OBF != 0 {
                let mut b = [0];
                self.dev.read(I8042_DATA_PORT, 0, &mut b);
                out.push(b[0]);
            }
            out
        }
    }

    #[test]
    fn status_after_reset() {
        let mut r = rig();
        let s = r.status();
        assert_eq!(s & (STATUS_OBF | 0x02 | STATUS_AUXB), 0);
        assert_eq!(s & STATUS_SYS, STATUS_SYS);
        r.command(0xaa);
        assert_eq!(r.status() & STATUS_A2_COMMAND, STATUS_A2_COMMAND);
        r.drain();
        r.data(0xf4);
        assert_eq!(r.status() & STATUS_A2_COMMAND, 0);
    }

    #[test]
    fn read_and_write_command_byte() {
        let mut r = rig();
        r.command(0x20);
        assert_eq!(r.drain(), vec![CTR_DEFAULT]);
        r.command(0x60);
        r.data(0x65);
        r.command(0x20);
        assert_eq!(r.drain(), vec![0x65]);
        r.command(0x60);
        r.data(0x00);
        assert_eq!(r.status() & STATUS_SYS, 0);
        // Other RAM bytes read back too.
        r.command(0x65);
        r.data(0x99);
        r.command(0x25);
        assert_eq!(r.drain(), vec![0x99]);
    }

    #[test]
    fn self_tests() {
        let mut r = rig();
        r.command(0xaa);
        assert_eq!(r.drain(), vec![0x55]);
        r.command(0xab);
        assert_eq!(r.drain(), vec![0x00]);
        r.command(0xa9);
        assert_eq!(r.drain(), vec![0x00]);
    }

    #[test]
    fn enable_disable_ports_in_ctr() {
        let mut r = rig();
        r.command(0xa7);
        r.command(0xad);
        r.command(0x20);
        assert_eq!(
            r.drain(),
            vec![CTR_DEFAULT | CTR_AUX_DISABLE | CTR_KBD_DISABLE]
        );
        r.command(0xa8);
        r.command(0xae);
        r.command(0x20);
        assert_eq!(r.drain(), vec![CTR_DEFAULT]);
    }

    #[test]
    fn disabled_keyboard_holds_its_data() {
        let mut r = rig();
        r.command(0xad);
        assert_eq!(r.dev.push_keyboard_bytes(&[0x1c, 0xf0, 0x1c]), 3);
        assert_eq!(r.status() & STATUS_OBF, 0);
        r.command(0xae);
        assert_eq!(r.drain(), vec![0x1c, 0xf0, 0x1c]);
    }

    #[test]
    fn keyboard_irq_follows_output_buffer_and_ctr() {
        let mut r = rig();
        r.data(0xf4);
        assert!(r.irq1.level());
        assert_eq!(r.drain(), vec![ACK]);
        assert!(!r.irq1.level());
        r.command(0x60);
        r.data(CTR_DEFAULT & !CTR_KBD_INT);
        r.data(0xf4);
        assert!(!r.irq1.level());
        assert_eq!(r.drain(), vec![ACK]);
        assert_eq!(r.irq12.rising_edges(), 0);
    }

    #[test]
    fn output_port_and_a20() {
        let mut r = rig();
        r.command(0xd0);
        assert_eq!(r.drain(), vec![OUTPUT_PORT_DEFAULT]);
        r.command(0xd1);
        r.data(0xcd); // A20 off, reset deasserted
        assert!(!r.a20.load(Ordering::SeqCst));
        assert_eq!(r.control.stop_reason(), None);
        r.command(0xd0);
        assert_eq!(r.drain(), vec![0xcd]);
        r.command(0xdf);
        assert!(r.dev.a20_enabled());
        r.command(0xdd);
        assert!(!r.dev.a20_enabled());
        // Port 0x92 may flip the shared line: the output port follows it.
        r.a20.store(true, Ordering::SeqCst);
        r.command(0xd0);
        assert_eq!(r.drain(), vec![0xcf]);
    }

    #[test]
    fn output_port_reset_bit_resets() {
        let mut r = rig();
        r.command(0xd1);
        r.data(0xce);
        assert_eq!(r.control.stop_reason(), Some(StopReason::Reset));
    }

    #[test]
    fn pulse_reset_line() {
        let mut r = rig();
        r.command(0xff);
        assert_eq!(r.control.stop_reason(), None, "0xFF pulses nothing");
        r.command(0xfe);
        assert_eq!(r.control.stop_reason(), Some(StopReason::Reset));
        let mut r = rig();
        r.command(0xf0);
        assert_eq!(r.control.stop_reason(), Some(StopReason::Reset));
    }

    #[test]
    fn write_keyboard_and_aux_output_buffers() {
        let mut r = rig();
        r.command(0xd2);
        r.data(0x42);
        assert_eq!(r.status() & (STATUS_OBF | STATUS_AUXB), STATUS_OBF);
        assert!(r.irq1.level());
        assert_eq!(r.drain(), vec![0x42]);
        // Linux's aux loopback test.
        r.command(0xd3);
        r.data(0x5a);
        assert_eq!(
            r.status() & (STATUS_OBF | STATUS_AUXB),
            STATUS_OBF | STATUS_AUXB
        );
        assert!(r.irq12.level());
        assert_eq!(r.drain(), vec![0x5a]);
        assert!(!r.irq12.level());
        assert_eq!(r.irq12.rising_edges(), 1);
    }

    #[test]
    fn keyboard_reset_and_identify() {
        let mut r = rig();
        r.data(0xff);
        assert_eq!(r.drain(), vec![ACK, BAT_OK]);
        r.data(0xf2);
        assert_eq!(r.drain(), vec![ACK, 0xab, 0x41], "translated ID");
        r.command(0x60);
        r.data(CTR_DEFAULT & !CTR_XLATE);
        r.data(0xf2);
        assert_eq!(r.drain(), vec![ACK, 0xab, 0x83]);
    }

    #[test]
    fn keyboard_enable_disable_defaults() {
        let mut r = rig();
        r.data(0xf5);
        assert_eq!(r.drain(), vec![ACK]);
        assert_eq!(r.dev.push_keyboard_bytes(&[0x1c]), 0, "not scanning");
        r.data(0xf4);
        assert_eq!(r.drain(), vec![ACK]);
        assert_eq!(r.dev.push_keyboard_bytes(&[0x1c]), 1);
        assert_eq!(r.drain(), vec![0x1c]);
        r.data(0xf6);
        assert_eq!(r.drain(), vec![ACK]);
        r.data(0xee);
        assert_eq!(r.drain(), vec![0xee]);
    }

    #[test]
    fn keyboard_commands_with_arguments() {
        let mut r = rig();
        r.data(0xed);
        assert_eq!(r.drain(), vec![ACK]);
        r.data(0x07);
        assert_eq!(r.drain(), vec![ACK]);
        assert_eq!(r.dev.keyboard.leds, 7);
        r.data(0xf3);
        r.data(0x20);
        assert_eq!(r.drain(), vec![ACK, ACK]);
        r.data(0xf0);
        r.data(0x00);
        assert_eq!(r.drain(), vec![ACK, ACK, 0x41]);
        r.command(0x60);
        r.data(0x07);
        r.data(0xf0);
        r.data(0x03);
        r.data(0xf0);
        r.data(0x00);
        assert_eq!(r.drain(), vec![ACK, ACK, ACK, ACK, 0x03]);
        r.data(0xf0);
        r.data(0x09);
        assert_eq!(r.drain(), vec![ACK, RESEND]);
    }

    #[test]
    fn unknown_keyboard_command_gets_resend() {
        let mut r = rig();
        r.data(0x12);
        assert_eq!(r.drain(), vec![RESEND]);
    }

    #[test]
    fn data_write_reenables_keyboard_port() {
        let mut r = rig();
        r.command(0xad);
        r.data(0xf4);
        r.command(0x20);
        assert_eq!(r.drain(), vec![ACK, CTR_DEFAULT]);
    }

    #[test]
    fn mouse_commands() {
        let mut r = rig();
        r.command(0xd4);
        r.data(0xff);
        assert_eq!(r.drain(), vec![ACK, BAT_OK, 0x00]);
        assert_eq!(r.status() & STATUS_AUXB, 0);
        r.command(0xd4);
        r.data(0xf2);
        assert_eq!(r.drain(), vec![ACK, 0x00]);
        for cmd in [0xf4u8, 0xf5, 0xf6, 0xe6, 0xe7, 0xea] {
            r.command(0xd4);
            r.data(cmd);
            assert_eq!(r.drain(), vec![ACK], "mouse command {cmd:#x}");
        }
        r.command(0xd4);
        r.data(0xf3);
        r.command(0xd4);
        r.data(200);
        r.command(0xd4);
        r.data(0xe8);
        r.command(0xd4);
        r.data(3);
        r.command(0xd4);
        r.data(0xf4);
        r.command(0xd4);
        r.data(0xe9);
        assert_eq!(
            r.drain(),
            vec![ACK, ACK, ACK, ACK, ACK, ACK, 0x30, 3, 200],
            "reporting, 2:1 scaling"
        );
        assert!(r.irq12.rising_edges() > 0);
        r.command(0xd4);
        r.data(0x00);
        assert_eq!(r.drain(), vec![RESEND]);
    }

    #[test]
    fn every_byte_of_a_reply_raises_its_own_edge() {
        // Edge-triggered controllers see one interrupt per rising edge, and
        // Linux reads one byte per interrupt: a line held high from one
        // byte to the next would leave the rest of a reply unsignalled.
        let mut r = rig();
        r.command(0xd4);
        r.data(0xf2);
        assert_eq!(r.drain(), vec![ACK, 0x00]);
        assert_eq!(r.irq12.rising_edges(), 2, "mouse ACK and ID");
        let before = r.irq1.rising_edges();
        r.data(0xf2);
        assert_eq!(r.drain(), vec![ACK, 0xab, 0x41]);
        assert_eq!(r.irq1.rising_edges() - before, 3, "keyboard ACK and two ID bytes");
    }

    #[test]
    fn mouse_bytes_set_auxb_and_wait_when_aux_disabled() {
        let mut r = rig();
        r.command(0xd4);
        r.data(0xf2);
        r.command(0xa7);
        // The ACK was already in the output buffer; the ID byte waits.
        assert_eq!(
            r.status() & (STATUS_OBF | STATUS_AUXB),
            STATUS_OBF | STATUS_AUXB
        );
        assert_eq!(r.drain(), vec![ACK]);
        r.command(0xa8);
        assert_eq!(r.drain(), vec![0x00]);
    }

    #[test]
    fn stale_data_and_wide_accesses() {
        let mut r = rig();
        r.command(0xaa);
        r.drain();
        let mut w = [0u8; 4];
        r.dev.read(I8042_DATA_PORT, 0, &mut w);
        assert_eq!(w, [0x55, 0xff, 0xff, 0xff]);
        r.dev
            .write(I8042_COMMAND_PORT, 0, &[0x20, 0xfe, 0xfe, 0xfe]);
        assert_eq!(r.control.stop_reason(), None);
        assert_eq!(r.drain(), vec![CTR_DEFAULT]);
        r.dev.write(I8042_COMMAND_PORT, 0, &[]);
        r.dev.read(0x1234, 0, &mut w);
        assert_eq!(w, [0xff; 4]);
    }
}
