//! The `taskledger` binary: argument parsing and wiring only. Exit status: 0 ok, 1 not found or a
//! check failed, 2 bad input or an error.

#[cfg(not(feature = "sled"))]
compile_error!(
    "taskledger needs the `sled` feature: the embedded store is the default store and the only one with retention (cargo build --no-default-features --features sled)"
);

mod cli;
mod commands;
mod config;
mod render;

use clap::Parser;

/// mimalloc: glibc's malloc serialises the projection pipeline's threads on its arena locks and
/// fragments under sled's many small allocations; built with `no_thp` because zeroing fresh
/// transparent huge pages cost a quarter of a validation run (measured in BENCHMARKS.md).
/// (`--features system-allocator` leaves glibc's, for heap profilers such as heaptrack.)
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

/// An error with the exit status it deserves.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            code: 2,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TASKLEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match try_main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("taskledger: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn try_main(cli: cli::Cli) -> Result<u8, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(commands::run(cli))
}
