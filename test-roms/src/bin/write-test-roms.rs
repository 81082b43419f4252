//! Writes every test program to a directory: `write-test-roms DIR`.

use std::path::PathBuf;

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: write-test-roms DIR");
        std::process::exit(2);
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("{}: {e}", dir.display());
        std::process::exit(1);
    }
    for rom in test_roms::all() {
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
