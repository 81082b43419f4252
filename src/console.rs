//! The serial console on the user's terminal, as QEMU's `-serial stdio`:
//! guest output to stdout; stdin to the UART, in raw mode when it is a
//! terminal; Ctrl-A x quits, Ctrl-A Ctrl-A sends a Ctrl-A.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use emu_core::{MachineControl, StopReason};

/// The escape character, Ctrl-A.
pub const ESCAPE: u8 = 0x01;

/// What one input byte means once the escape sequence is considered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Bytes to send to the guest.
    Send(Vec<u8>),
    /// The user asked to quit.
    Quit,
    /// Nothing yet (an escape waiting for its second key).
    Nothing,
}

/// Splits the input stream into guest bytes and console commands.
#[derive(Debug, Default)]
pub struct EscapeParser {
    after_escape: bool,
}

impl EscapeParser {
    /// Feeds one byte.
    pub fn feed(&mut self, byte: u8) -> Input {
        if self.after_escape {
            self.after_escape = false;
            return match byte {
                b'x' | b'X' => Input::Quit,
                ESCAPE => Input::Send(vec![ESCAPE]),
                // Unknown commands pass through, as QEMU's do.
                other => Input::Send(vec![ESCAPE, other]),
            };
        }
        if byte == ESCAPE {
            self.after_escape = true;
            return Input::Nothing;
        }
        Input::Send(vec![byte])
    }
}

/// Puts the terminal on `fd` in raw mode and restores it when dropped.
pub struct RawTerminal {
    fd: i32,
    saved: libc::termios,
}

impl RawTerminal {
    /// Raw mode for stdin if it is a terminal; `None` otherwise.
    pub fn stdin() -> std::io::Result<Option<Self>> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        // SAFETY: termios is plain data, filled by tcgetattr before use.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output processing so the guest's "\n" still returns the carriage.
        raw.c_oflag |= libc::OPOST;
        // SAFETY: `raw` is a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Some(Self { fd, saved }))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `stdin`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Something that takes console input, such as the UART.
pub trait ConsoleSink: Send {
    /// Queues bytes for the guest; returns how many were taken (a full
    /// receive FIFO takes fewer, and the rest is offered again).
    fn push(&mut self, bytes: &[u8]) -> usize;
}

/// Starts a thread copying stdin to `sink` until EOF, handling the escape.
pub fn spawn_stdin_reader(sink: Arc<Mutex<dyn ConsoleSink>>, control: Arc<MachineControl>) {
    let spawned = std::thread::Builder::new().name("console-in".into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut parser = EscapeParser::default();
        let mut buf = [0u8; 64];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            for &b in &buf[..n] {
                match parser.feed(b) {
                    Input::Quit => {
                        control.request_stop(StopReason::UserQuit);
                        return;
                    }
                    Input::Send(bytes) => deliver(&sink, &bytes, &control),
                    Input::Nothing => {}
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("no console input: {e}");
    }
}

/// Offers `bytes` until the guest has taken them all or the machine stops.
fn deliver(sink: &Arc<Mutex<dyn ConsoleSink>>, mut bytes: &[u8], control: &MachineControl) {
    while !bytes.is_empty() && control.stop_reason().is_none() {
        let taken = sink.lock().unwrap_or_else(|e| e.into_inner()).push(bytes);
        bytes = &bytes[taken..];
        if !bytes.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_x_quits_and_ctrl_a_twice_sends_one() {
        let mut p = EscapeParser::default();
        assert_eq!(p.feed(b'l'), Input::Send(vec![b'l']));
        assert_eq!(p.feed(ESCAPE), Input::Nothing);
        assert_eq!(p.feed(ESCAPE), Input::Send(vec![ESCAPE]));
        assert_eq!(p.feed(ESCAPE), Input::Nothing);
        assert_eq!(p.feed(b'q'), Input::Send(vec![ESCAPE, b'q']));
        assert_eq!(p.feed(ESCAPE), Input::Nothing);
        assert_eq!(p.feed(b'x'), Input::Quit);
    }

    struct Slow {
        got: Vec<u8>,
    }

    impl ConsoleSink for Slow {
        fn push(&mut self, bytes: &[u8]) -> usize {
            // Takes one byte at a time, as a nearly full FIFO would.
            self.got.push(bytes[0]);
            1
        }
    }

    #[test]
    fn delivery_waits_for_a_full_fifo() {
        let sink = Arc::new(Mutex::new(Slow { got: Vec::new() }));
        let dyn_sink: Arc<Mutex<dyn ConsoleSink>> = sink.clone();
        deliver(&dyn_sink, b"abc", &MachineControl::default());
        assert_eq!(sink.lock().unwrap().got, b"abc");
    }
}
