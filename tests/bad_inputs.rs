//! Bad inputs tried as a new user would: each gives exit status 2 and one
//! line on stderr naming the problem, never a panic.

mod common;

fn assert_one_line_error(args: &[&str], want: &str) {
    let out = common::run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("popek: using --accel")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    assert!(lines[0].starts_with("popek: error: "), "{args:?}: {stderr}");
    assert!(lines[0].contains(want), "{args:?}: wanted {want:?} in {stderr}");
}

#[test]
fn missing_kernel() {
    assert_one_line_error(
        &["run", "--accel", "kvm", "--kernel", "/nonexistent/vmlinuz"],
        "/nonexistent/vmlinuz: No such file or directory",
    );
}

#[test]
fn missing_initrd() {
    let dir = common::temp_dir("missing-initrd");
    let k = dir.join("k");
    std::fs::write(&k, test_roms::multiboot_hello().image).unwrap();
    assert_one_line_error(
        &["run", "--accel", "kvm", "--kernel", k.to_str().unwrap(), "--initrd", "/nonexistent/initrd"],
        "/nonexistent/initrd: No such file or directory",
    );
}

#[test]
fn directory_as_kernel() {
    let dir = common::temp_dir("dir-kernel");
    assert_one_line_error(
        &["run", "--accel", "kvm", "--kernel", dir.to_str().unwrap()],
        "is a directory, not a file",
    );
}

#[test]
fn empty_and_garbage_kernels() {
    let dir = common::temp_dir("garbage-kernel");
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_one_line_error(&["run", "--accel", "kvm", "--kernel", empty.to_str().unwrap()], "is empty");
    let junk = dir.join("junk");
    std::fs::write(&junk, vec![0x42u8; 100_000]).unwrap();
    assert_one_line_error(
        &["run", "--accel", "kvm", "--kernel", junk.to_str().unwrap()],
        "is neither a Linux bzImage",
    );
}

#[test]
fn truncated_bzimage() {
    let dir = common::temp_dir("truncated");
    let path = dir.join("vmlinuz-truncated");
    // Debian's kernel cut short where available, else a synthetic header.
    let image = match common::guest_dir() {
        Some(g) => std::fs::read(g.join("vmlinuz")).unwrap(),
        None => {
            let mut d = vec![0u8; 0x4000];
            d[0x1f1] = 4;
            d[0x1f4..0x1f8].copy_from_slice(&0x1000u32.to_le_bytes());
            d[0x202..0x206].copy_from_slice(b"HdrS");
            d[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
            d[0x211] = 1;
            d[0x236] = 1;
            d
        }
    };
    std::fs::write(&path, &image[..image.len() / 2]).unwrap();
    assert_one_line_error(&["run", "--accel", "kvm", "--kernel", path.to_str().unwrap()], "is truncated");
}

#[test]
fn firmware_of_the_wrong_size() {
    let dir = common::temp_dir("bad-bios");
    let path = dir.join("bios.bin");
    std::fs::write(&path, vec![0u8; 1000]).unwrap();
    assert_one_line_error(&["run", "--accel", "kvm", "--bios", path.to_str().unwrap()], "multiple of 64 KiB");
}

#[test]
fn zero_memory() {
    assert_one_line_error(&["run", "--memory", "0", "--bios", "x"], "too small");
}

#[test]
fn unknown_accel() {
    assert_one_line_error(&["run", "--accel", "qemu", "--bios", "x"], "invalid value 'qemu' for '--accel");
}

#[test]
fn no_boot_source() {
    assert_one_line_error(&["run"], "--bios");
}

#[test]
fn unwritable_serial_file() {
    assert_one_line_error(
        &["run", "--accel", "kvm", "--bios", "/nonexistent/bios", "--serial", "file:/nonexistent/dir/log"],
        "/nonexistent/",
    );
}

#[test]
fn help_explains_every_flag() {
    let out = common::run(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--accel", "--memory", "--bios", "--kernel", "--initrd", "--append", "--serial", "--debugcon", "--timeout", "Ctrl-A x"] {
        assert!(help.contains(flag), "run --help lacks {flag}");
    }
    let top = common::run(&["--help"]);
    assert!(String::from_utf8_lossy(&top.stdout).contains("run"));
}
