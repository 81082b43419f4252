//! The same guest workloads under each backend: binary translation (jit)
//! against interpretation and against hardware assistance (kvm). Each is a
//! long-mode test ROM (`test_roms`): compute (integer arithmetic, branches,
//! calls), memory (scattered loads and stores over 4,096 pages), syscalls
//! (INT 0x80, #UD and SYSCALL round trips) and port I/O (exits to the VMM).
//! Throughput is per workload iteration (criterion's "elem/s"); for compute
//! that is 15 guest instructions.
//!
//! `cargo bench -p bench`. KVM results are labelled `kvm_pvm` on hosts
//! whose KVM has no hardware virtualization: they say nothing about VT-x.
//! A backend that cannot run a workload (kvm_pvm fails on INT in long
//! mode) is reported and skipped.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use popek::machine::{self, Accel, BootSource, Config, Output};
use test_roms::TestRom;

fn config(rom: &std::path::Path, accel: Accel) -> Config {
    Config {
        accel,
        memory: test_roms::TEST_MEMORY,
        boot: BootSource::Firmware(rom.to_path_buf()),
        serial: Output::None,
        debugcon: Output::None,
        timeout: None,
        stats: false,
        jit_lockstep: false,
    }
}

/// The backends to measure, with the names they are reported under.
fn backends() -> Vec<(Accel, &'static str)> {
    let mut v = vec![(Accel::Interp, "interp"), (Accel::Jit, "jit")];
    match accel_kvm::probe() {
        accel_kvm::KvmHost::Hardware => v.push((Accel::Kvm, "kvm")),
        accel_kvm::KvmHost::Paravirtual => v.push((Accel::Kvm, "kvm_pvm")),
        accel_kvm::KvmHost::Unavailable(why) => eprintln!("no KVM benchmark: {why}"),
    }
    v
}

/// Whether `accel` runs `rom` to its expected exit status.
fn runs(path: &std::path::Path, rom: &TestRom, accel: Accel) -> Result<(), String> {
    match machine::run(&config(path, accel)) {
        Ok(reason) if reason.exit_status() == rom.expected_status() => Ok(()),
        Ok(reason) => Err(format!("stopped with {reason:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn workload(c: &mut Criterion, rom: TestRom, iterations: u32) {
    let path = std::env::temp_dir().join(format!("popek-bench-{}-{}.rom", rom.name, std::process::id()));
    std::fs::write(&path, &rom.image).expect("write the ROM");
    let mut group = c.benchmark_group(format!("{}-rom", rom.name));
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(iterations)));
    for (accel, label) in backends() {
        if let Err(why) = runs(&path, &rom, accel) {
            eprintln!("{} under {label}: not measured ({why})", rom.name);
            continue;
        }
        group.bench_function(label, |b| {
            b.iter(|| {
                let reason = machine::run(&config(&path, accel)).expect("the backend ran it once already");
                assert_eq!(reason.exit_status(), rom.expected_status());
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_file(path);
}

fn workloads(c: &mut Criterion) {
    workload(c, test_roms::compute(200_000), 200_000);
    workload(c, test_roms::memory(200_000), 200_000);
    workload(c, test_roms::syscalls(20_000), 20_000);
    workload(c, test_roms::port_io(50_000), 50_000);
}

criterion_group!(benches, workloads);
criterion_main!(benches);
