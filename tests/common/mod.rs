//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The popek binary under test.
pub fn popek() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_popek"));
    c.stdin(Stdio::null());
    c
}

/// Runs popek with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    popek().args(args).output().expect("popek runs")
}

/// Where `scripts/fetch-guests.sh` put Debian's guest images, if it has.
pub fn guest_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("POPEK_GUEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/popek/guests")))?;
    dir.join("vmlinuz").exists().then_some(dir)
}

/// The guest image directory, or a printed reason to skip.
pub fn guest_dir_or_skip(test: &str) -> Option<PathBuf> {
    let dir = guest_dir();
    if dir.is_none() {
        eprintln!("skipped {test}: no guest images; run scripts/fetch-guests.sh (or set POPEK_GUEST_DIR)");
    }
    dir
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("popek-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Whether KVM can run simple guests here, with the reason when not.
pub fn kvm_or_skip(test: &str) -> bool {
    match accel_kvm::probe() {
        accel_kvm::KvmHost::Unavailable(why) => {
            eprintln!("skipped {test}: KVM is unavailable: {why}");
            false
        }
        _ => true,
    }
}

/// Whether hardware-virtualized KVM is here, with the reason when not.
pub fn hardware_kvm_or_skip(test: &str) -> bool {
    match accel_kvm::probe().skip_reason() {
        Some(why) => {
            eprintln!("skipped {test}: {why}");
            false
        }
        None => true,
    }
}
