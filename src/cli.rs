//! The command line: `popek run ...`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::machine::{Accel, BootSource, Config, Output};

/// A full-system x86 PC emulator and virtual machine monitor.
#[derive(Debug, Parser)]
#[command(name = "popek", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// popek's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a guest: firmware (--bios) or a kernel (--kernel).
    ///
    /// The serial console (COM1) is the terminal: guest output on stdout,
    /// keyboard input to the guest. Press Ctrl-A x to quit, Ctrl-A Ctrl-A to
    /// send Ctrl-A. The exit status is the guest's debug-exit status
    /// ((value << 1) | 1), 0 when it powers off or resets, 2 for a bad
    /// input, 4 for a triple fault, 6 for a backend error and 124 on
    /// --timeout.
    Run(RunArgs),
}

/// `popek run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// CPU backend: kvm (hardware virtualization), interp (software
    /// interpreter) or jit (binary translator). Default: kvm where the host
    /// has hardware virtualization, jit elsewhere.
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,

    /// Guest RAM, in bytes with a K, M, G or T suffix (powers of 1024); a
    /// bare number means MiB, as in QEMU. At least 2M.
    #[arg(short, long, default_value = "512M", value_parser = parse_size)]
    pub memory: u64,

    /// Firmware image (e.g. SeaBIOS's bios.bin) mapped below 4 GiB, its last
    /// 128 KiB also below 1 MiB; the CPU starts at the reset vector.
    #[arg(long, value_name = "FILE", required_unless_present = "kernel", conflicts_with = "kernel")]
    pub bios: Option<PathBuf>,

    /// Kernel to boot directly: a Linux bzImage (64-bit boot protocol) or a
    /// multiboot v1 kernel.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,

    /// Initial ramdisk for a Linux kernel, or the module for a multiboot one.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line, e.g. "console=ttyS0".
    #[arg(long, value_name = "CMDLINE", default_value = "")]
    pub append: String,

    /// Where COM1 goes: stdio (the terminal, with input), file:PATH, or none.
    #[arg(long, value_name = "stdio|file:PATH|none", default_value = "stdio")]
    pub serial: Output,

    /// Where the debug console at port 0x402 (QEMU's isa-debugcon, which
    /// SeaBIOS logs to) goes: stdio, file:PATH or none.
    #[arg(long, value_name = "stdio|file:PATH|none", default_value = "none")]
    pub debugcon: Output,

    /// Stop the guest after this long, e.g. 30s, 500ms, 2m; exit status 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// At exit, print on stderr what the vCPU did: instructions retired,
    /// MIPS, soft-TLB hit rate, exits or device events by kind.
    #[arg(long)]
    pub stats: bool,

    /// Debugging the JIT: repeat every run of translated code under the
    /// interpreter and stop at the first difference in registers, flags or
    /// memory, with a report (much slower). Needs --accel jit.
    #[arg(long)]
    pub jit_lockstep: bool,
}

impl RunArgs {
    /// Checks what clap's declarations cannot: --initrd and --append only
    /// make sense with --kernel.
    pub fn validate(&self) -> Result<(), String> {
        if self.kernel.is_none() && (self.initrd.is_some() || !self.append.is_empty()) {
            return Err("--initrd and --append need --kernel".into());
        }
        if self.jit_lockstep && self.accel != Some(Accel::Jit) {
            return Err("--jit-lockstep needs --accel jit".into());
        }
        Ok(())
    }

    /// The machine configuration, with the backend already chosen.
    pub fn to_config(&self, accel: Accel) -> Config {
        let boot = match (&self.bios, &self.kernel) {
            (Some(bios), _) => BootSource::Firmware(bios.clone()),
            (None, Some(kernel)) => BootSource::Kernel {
                kernel: kernel.clone(),
                initrd: self.initrd.clone(),
                cmdline: self.append.clone(),
            },
            // clap requires one of the two.
            (None, None) => BootSource::Firmware(PathBuf::new()),
        };
        Config {
            accel,
            memory: self.memory,
            boot,
            serial: self.serial.clone(),
            debugcon: self.debugcon.clone(),
            timeout: self.timeout,
            stats: self.stats,
            jit_lockstep: self.jit_lockstep,
        }
    }
}

/// The most RAM a guest may have.
pub const MAX_MEMORY: u64 = 1 << 40;

/// Parses a memory size: "512M", "4G", "2048" (MiB), "1536K", "64MiB".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("'{s}' has an unknown unit; use K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 20),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("'{s}' is not a size such as 512M or 4G"))?;
    let bytes = n.checked_shl(shift).filter(|b| b >> shift == n).ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes < emu_core::layout::MIN_RAM_SIZE {
        return Err(format!("'{s}' is too small; a guest needs at least 2M"));
    }
    if bytes > MAX_MEMORY {
        return Err(format!("'{s}' is more than the 1T popek supports"));
    }
    if bytes % 4096 != 0 {
        return Err(format!("'{s}' is not a whole number of 4K pages"));
    }
    Ok(bytes)
}

/// Parses a duration: "30s", "500ms", "2m", "1h", or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration such as 30s or 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("'{s}' has an unknown unit; use ms, s, m or h")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("'{s}' is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2048"), Ok(2048 << 20));
        assert_eq!(parse_size("3072k"), Ok(3072 << 10));
        assert!(parse_size("0").unwrap_err().contains("too small"));
        assert!(parse_size("1M").unwrap_err().contains("too small"));
        assert!(parse_size("12Q").unwrap_err().contains("unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("2T").unwrap_err().contains("1T"));
        assert!(parse_size("4097K").unwrap_err().contains("pages"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_is_consistent_and_requires_a_boot_source() {
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["popek", "run"]).is_err());
        assert!(Cli::try_parse_from(["popek", "run", "--bios", "a", "--kernel", "b"]).is_err());
        let Command::Run(args) = Cli::try_parse_from(["popek", "run", "--bios", "a", "--initrd", "b"]).unwrap().command;
        assert!(args.validate().is_err());
        let cli = Cli::try_parse_from(["popek", "run", "--kernel", "k", "--serial", "file:/tmp/x", "-m", "1G"]).unwrap();
        let Command::Run(args) = cli.command;
        assert_eq!(args.serial, Output::File("/tmp/x".into()));
        assert_eq!(args.memory, 1 << 30);
        assert!(Cli::try_parse_from(["popek", "run", "--bios", "a", "--serial", "tty"]).is_err());
        assert!(Cli::try_parse_from(["popek", "run", "--bios", "a", "--accel", "qemu"]).is_err());
    }
}
