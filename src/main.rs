//! `popek`: the command-line entry point.

use clap::Parser;
use popek::cli::{Cli, Command};
use popek::machine::{self, Accel};

/// Exit status for unusable input (a bad file or option), as clap uses.
const EXIT_BAD_INPUT: i32 = 2;

/// clap's usage errors span several lines; popek's errors are one line.
fn one_line_clap_error(e: &clap::Error) -> String {
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:"))
        .collect();
    parts.join(" ").trim_start_matches("error: ").to_string()
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("popek: error: {}", one_line_clap_error(&e));
            std::process::exit(EXIT_BAD_INPUT);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POPEK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let Command::Run(args) = cli.command;
    if let Err(e) = args.validate() {
        eprintln!("popek: error: {e}");
        std::process::exit(EXIT_BAD_INPUT);
    }
    let accel = match args.accel {
        Some(a) => a,
        None => {
            let (a, why) = Accel::default_for_host();
            eprintln!("popek: using --accel {} ({why})", a.name());
            a
        }
    };
    match machine::run(&args.to_config(accel)) {
        Ok(reason) => {
            let status = reason.exit_status();
            if status != 0 && !matches!(reason, emu_core::StopReason::DebugExit(_)) {
                eprintln!("popek: {reason}");
            }
            std::process::exit(status);
        }
        Err(e) => {
            eprintln!("popek: error: {}", e.one_line());
            std::process::exit(EXIT_BAD_INPUT);
        }
    }
}
