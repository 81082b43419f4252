//! Debian's kernel: the loader's view of it everywhere, a full boot to a
//! busybox shell under the interpreter and the JIT everywhere, and under
//! KVM where the host has hardware virtualization.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use emu_core::GuestMemory;
use popek::loader::linux;

#[test]
fn loader_fills_boot_params_for_debians_kernel() {
    let Some(dir) = common::guest_dir_or_skip("loader_fills_boot_params_for_debians_kernel") else { return };
    let kernel = std::fs::read(dir.join("vmlinuz")).unwrap();
    let initrd = std::fs::read(dir.join("initramfs.cpio.gz")).unwrap();
    let mem = GuestMemory::new(512 << 20).unwrap();
    popek::acpi::write_tables(&mem, popek::acpi::Platform { hpet: true }).unwrap();
    let boot = linux::load(
        &mem,
        std::path::Path::new("vmlinuz"),
        &kernel,
        Some((std::path::Path::new("initramfs"), &initrd)),
        "console=ttyS0 panic=-1",
    )
    .expect("Debian's kernel loads");
    let zp = linux::ZERO_PAGE_ADDR;
    let byte = |off: u64| {
        let mut b = [0u8];
        mem.read(zp + off, &mut b).unwrap();
        b[0]
    };
    let u16_at = |off: u64| u16::from_le_bytes([byte(off), byte(off + 1)]);
    let u32_at = |off: u64| mem.read_u32(zp + off).unwrap();
    assert_eq!(u32_at(0x202), 0x5372_6448, "HdrS");
    assert!(u16_at(0x206) >= 0x020f, "boot protocol {:#x}", u16_at(0x206));
    assert_eq!(byte(0x210), 0xff, "type_of_loader");
    assert_eq!(u32_at(0x228), linux::CMDLINE_ADDR as u32, "cmd_line_ptr");
    let mut line = vec![0u8; 23];
    mem.read(linux::CMDLINE_ADDR, &mut line).unwrap();
    assert_eq!(&line, b"console=ttyS0 panic=-1\0");
    // The initrd: page-aligned, at the top of RAM below initrd_addr_max,
    // above the kernel's decompression space, and intact.
    let (ramdisk, ramdisk_size) = (u64::from(u32_at(0x218)), u64::from(u32_at(0x21c)));
    assert_eq!(ramdisk_size, initrd.len() as u64);
    assert_eq!(ramdisk % 4096, 0);
    assert!(ramdisk + ramdisk_size <= 512 << 20 && ramdisk + ramdisk_size + 4096 > 512 << 20);
    assert!(ramdisk >= 0x10_0000 + u64::from(u32_at(0x260)), "initrd overlaps the kernel's init_size");
    let mut head = vec![0u8; 64];
    mem.read(ramdisk, &mut head).unwrap();
    assert_eq!(head, initrd[..64]);
    // E820: usable low memory, reserved EBDA and BIOS area, usable RAM
    // from 1 MiB to the end.
    let entries = byte(0x1e8) as u64;
    assert_eq!(entries, 5);
    let e820 = |i: u64| (mem.read_u64(zp + 0x2d0 + 20 * i).unwrap(), mem.read_u64(zp + 0x2d8 + 20 * i).unwrap(), mem.read_u32(zp + 0x2e0 + 20 * i).unwrap());
    assert_eq!(e820(0), (0, 0x9_fc00, 1));
    assert_eq!(e820(3), (0x10_0000, (512 << 20) - 0x10_0000, 1));
    assert_eq!(mem.read_u64(zp + 0x70).unwrap(), popek::acpi::RSDP_ADDR);
    // The protected-mode kernel sits at 1 MiB; entry is startup_64.
    let setup_size = (u64::from(kernel[0x1f1]) + 1) * 512;
    let mut first = vec![0u8; 256];
    mem.read(0x10_0000, &mut first).unwrap();
    assert_eq!(first, kernel[setup_size as usize..setup_size as usize + 256]);
    assert_eq!(boot.cpu.rip, 0x10_0200);
    assert_eq!(boot.cpu.gpr[emu_core::cpu::reg::RSI], zp);
    assert!(boot.cpu.long_mode());
}

fn boot_args(dir: &std::path::Path, accel: &str, append: &str) -> Vec<String> {
    // "jit-lockstep": the JIT with the interpreter repeating every native
    // run (about twice the interpreter's time).
    let (backend, timeout) = if accel == "jit-lockstep" { ("jit", "900s") } else { (accel, "280s") };
    let mut args: Vec<String> = ["run", "--accel", backend, "-m", "512M", "--timeout", timeout].map(String::from).to_vec();
    if accel == "jit-lockstep" {
        args.push("--jit-lockstep".into());
    }
    args.push("--kernel".into());
    args.push(dir.join("vmlinuz").display().to_string());
    args.push("--initrd".into());
    args.push(dir.join("initramfs.cpio.gz").display().to_string());
    args.push("--append".into());
    args.push(append.into());
    args
}

#[test]
fn boots_to_init_and_powers_off_under_kvm() {
    if !common::hardware_kvm_or_skip("boots_to_init_and_powers_off_under_kvm") {
        return;
    }
    boot_to_init("kvm");
}

#[test]
fn boots_to_init_and_powers_off_under_interp() {
    boot_to_init("interp");
}

#[test]
fn boots_to_init_and_powers_off_under_jit() {
    boot_to_init("jit");
}

/// The whole boot and check script with every native run checked against
/// the interpreter (billions of instructions compared).
#[test]
fn boots_to_init_and_powers_off_under_jit_lockstep() {
    boot_to_init("jit-lockstep");
}

/// What the kernel prints when something went wrong that QEMU's run of the
/// same images does not show.
const KERNEL_TROUBLE: &[&str] =
    &["WARNING:", "BUG:", "Oops", "Call Trace", "unchecked MSR access", "invalid opcode", "Disabling HPET", "unstable"];

/// Boots to /init, runs /bin/popek-check (see scripts/fetch-guests.sh) and
/// compares its output with QEMU's (tests/data/linux-check.txt); checks
/// the guest's date against the host's and that its `sleep 1` takes about
/// a second of host time.
fn boot_to_init(accel: &str) {
    let Some(dir) = common::guest_dir_or_skip("boots_to_init_and_powers_off") else { return };
    let mut args = boot_args(&dir, accel, "console=ttyS0 panic=-1 popek.cmd=popek-check");
    args.push("--stats".into());
    let date_before = host_utc_date();
    let mut child = common::popek().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines: Vec<(Instant, String)> = Vec::new();
    for line in BufReader::new(stdout).split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
        lines.push((Instant::now(), text));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let log = log.join("\n");
    assert!(log.contains("Linux version"), "{log}");
    assert!(log.contains("POPEK-INIT-OK"), "{log}");
    assert!(log.contains("POPEK-CMD-EXIT 0"), "{log}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for trouble in KERNEL_TROUBLE {
        assert!(!log.contains(trouble), "the kernel printed {trouble:?}:\n{log}");
    }

    let checks: Vec<&str> = log.lines().filter(|l| l.starts_with("check: ")).collect();
    let expected = include_str!("data/linux-check.txt");
    let stable: Vec<&str> =
        checks.iter().copied().filter(|l| !l.starts_with("check: date") && !l.starts_with("check: sleep-")).collect();
    assert_eq!(stable, expected.lines().collect::<Vec<_>>(), "popek-check differs from QEMU's output");
    let date = checks.iter().find_map(|l| l.strip_prefix("check: date ")).expect("a date line");
    assert!(date == date_before || date == host_utc_date(), "guest date {date}, host {date_before}");
    let at = |marker: &str| lines.iter().find(|(_, l)| l == marker).map(|(t, _)| *t).expect(marker);
    let slept = at("check: sleep-end") - at("check: sleep-begin");
    // A line that comes out only with the next one is an interrupt the
    // machine sat on (once: a serial THRE edge held in the LAPIC's IRR behind
    // an EOI that woke nobody, so the idle guest slept the second through).
    assert!(
        slept >= Duration::from_millis(900) && slept < Duration::from_secs(10),
        "the guest's sleep 1 took {slept:?} of host time"
    );
    if accel != "kvm" {
        assert!(stderr.contains("instructions retired"), "{stderr}");
        assert!(stderr.contains("soft-TLB lookups"), "{stderr}");
    }
    if accel == "jit-lockstep" {
        let compared = stderr.lines().find_map(|l| l.trim().strip_prefix("jit lockstep: instructions compared")).map(str::trim);
        let compared: u64 = compared.and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(compared > 1_000_000_000, "only {compared} instructions compared: {stderr}");
    }
}

/// Today's date in UTC on the host, as `date -u +%Y-%m-%d` prints it.
fn host_utc_date() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%d"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn interactive_shell_takes_commands_under_kvm() {
    if !common::hardware_kvm_or_skip("interactive_shell_takes_commands_under_kvm") {
        return;
    }
    interactive_shell("kvm");
}

#[test]
fn interactive_shell_takes_commands_under_interp() {
    interactive_shell("interp");
}

fn interactive_shell(accel: &str) {
    let Some(dir) = common::guest_dir_or_skip("interactive_shell_takes_commands") else { return };
    let mut child = common::popek()
        .args(boot_args(&dir, accel, "console=ttyS0 panic=-1 quiet"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { return };
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
        }
    });
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(240);
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
                if line.contains(want) {
                    return;
                }
            }
        }
        panic!("no {want:?} within 240 s");
    };
    wait_for("POPEK-INIT-OK");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"echo typed-$((6*7))\n").unwrap();
    wait_for("typed-42");
    stdin.write_all(b"poweroff -f\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
