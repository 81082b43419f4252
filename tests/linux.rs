//! Debian's kernel: the loader's view of it everywhere, a full boot to a
//! busybox shell under the interpreter everywhere, and under KVM where the
//! host has hardware virtualization.

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
    popek::acpi::write_tables(&mem).unwrap();
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
    let mut args: Vec<String> = ["run", "--accel", accel, "-m", "512M", "--timeout", "280s"].map(String::from).to_vec();
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

fn boot_to_init(accel: &str) {
    let Some(dir) = common::guest_dir_or_skip("boots_to_init_and_powers_off") else { return };
    let out = common::popek()
        .args(boot_args(&dir, accel, "console=ttyS0 panic=-1 popek.cmd=uname%20-r"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Linux version"), "{stdout}");
    assert!(stdout.contains("POPEK-INIT-OK"), "{stdout}");
    assert!(stdout.contains("POPEK-CMD-EXIT 0"), "{stdout}");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
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
