//! The compute ROM (integer arithmetic, memory, branches, calls in long
//! mode) under each backend. Throughput is in guest instructions, so
//! criterion's "elem/s" is guest instructions per second.
//!
//! `cargo bench -p bench`. KVM results are labelled `kvm_pvm` on hosts
//! whose KVM has no hardware virtualization: they say nothing about VT-x.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use popek::machine::{self, Accel, BootSource, Config, Output};

const ITERATIONS: u32 = 200_000;

fn config(rom: &std::path::Path, accel: Accel) -> Config {
    Config {
        accel,
        memory: test_roms::TEST_MEMORY,
        boot: BootSource::Firmware(rom.to_path_buf()),
        serial: Output::None,
        debugcon: Output::None,
        timeout: None,
        stats: false,
    }
}

fn compute(c: &mut Criterion) {
    let rom = test_roms::compute(ITERATIONS);
    let path = std::env::temp_dir().join(format!("popek-bench-compute-{}.rom", std::process::id()));
    std::fs::write(&path, &rom.image).expect("write the ROM");
    let mut group = c.benchmark_group("compute-rom");
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(ITERATIONS) * test_roms::COMPUTE_INSTRUCTIONS_PER_ITERATION));
    group.bench_function("interp", |b| {
        b.iter(|| {
            let reason = machine::run(&config(&path, Accel::Interp)).expect("interp runs");
            assert_eq!(reason.exit_status(), rom.expected_status());
        })
    });
    let kvm_label = match accel_kvm::probe() {
        accel_kvm::KvmHost::Hardware => Some("kvm"),
        accel_kvm::KvmHost::Paravirtual => Some("kvm_pvm"),
        accel_kvm::KvmHost::Unavailable(why) => {
            eprintln!("no KVM benchmark: {why}");
            None
        }
    };
    if let Some(label) = kvm_label {
        group.bench_function(label, |b| {
            b.iter(|| {
                let reason = machine::run(&config(&path, Accel::Kvm)).expect("kvm runs");
                assert_eq!(reason.exit_status(), rom.expected_status());
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_file(path);
}

criterion_group!(benches, compute);
criterion_main!(benches);
