//! The `popek` package's errors. Each names the file or option at fault and
//! the problem, in one line.

use std::path::PathBuf;

/// Everything that can stop a machine from being built or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file is unusable; `problem` says why.
    #[error("{}: {problem}", path.display())]
    BadFile { path: PathBuf, problem: String },
    /// An input file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A command-line value is unusable.
    #[error("{0}")]
    Config(String),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] emu_core::MemoryError),
    /// The KVM backend failed.
    #[error("KVM: {0}")]
    Kvm(#[from] accel_kvm::Error),
    /// A vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] emu_core::VcpuError),
    /// Devices could not be placed on a bus.
    #[error(transparent)]
    Bus(#[from] emu_core::BusError),
    /// The console could not be set up.
    #[error("Console: {0}")]
    Console(#[source] std::io::Error),
}

impl Error {
    /// A [`Error::BadFile`] for `path`.
    pub fn bad_file(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::BadFile { path: path.into(), problem: problem.into() }
    }

    /// The whole chain of causes on one line, as the CLI prints it.
    pub fn one_line(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !msg.contains(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            source = s.source();
        }
        msg
    }
}

/// A `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
