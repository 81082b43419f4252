//! Debian's SeaBIOS under the interpreter: its banner and log on the debug
//! console, as far as looking for a boot device, as QEMU's reference log
//! shows (shared/reference/qemu-seabios-debugcon.log).

mod common;

use std::time::{Duration, Instant};

#[test]
fn seabios_reaches_no_bootable_device_under_interp() {
    let Some(dir) = common::guest_dir_or_skip("seabios_reaches_no_bootable_device_under_interp") else { return };
    let tmp = common::temp_dir("seabios");
    let log = tmp.join("debugcon.log");
    let mut child = common::popek()
        .args(["run", "--accel", "interp", "-m", "128M", "--serial", "none", "--timeout", "120s"])
        .arg("--bios")
        .arg(dir.join("bios.bin"))
        .arg("--debugcon")
        .arg(format!("file:{}", log.display()))
        .spawn()
        .unwrap();
    // SeaBIOS retries the boot after 60 s: stop as soon as it gives up.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("No bootable device.") {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("popek stopped early ({status}); SeaBIOS log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    for want in ["SeaBIOS (version", "Found 2 PCI devices", "PCI: init bdf=00:00.0 id=8086:1237", "No bootable device."] {
        assert!(text.contains(want), "no {want:?} in the SeaBIOS log:\n{text}");
    }
    let _ = std::fs::remove_dir_all(tmp);
}
