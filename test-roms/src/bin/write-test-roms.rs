//! Writes every test program to a directory: `write-test-roms DIR`, or with
//! `--bench` the workload ROMs at benchmark sizes.

use std::path::PathBuf;

fn main() {
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    let bench = args.first().is_some_and(|a| a == "--bench");
    if bench {
        args.remove(0);
    }
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("usage: write-test-roms [--bench] DIR");
        std::process::exit(2);
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("{}: {e}", dir.display());
        std::process::exit(1);
    }
    let roms = if bench { test_roms::bench_workloads() } else { test_roms::all() };
    for rom in roms {
        let ext = match rom.kind {
            test_roms::BootKind::Firmware => "rom",
            test_roms::BootKind::Multiboot => "elf",
        };
        let path = dir.join(format!("{}.{ext}", rom.name));
        if let Err(e) = std::fs::write(&path, &rom.image) {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1);
        }
        println!("{}", path.display());
    }
}
