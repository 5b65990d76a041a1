//! The `toolgate` binary: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc: faster than glibc malloc on the request path, and it returns freed memory
/// (such as the peak of a policy parse) to the system instead of keeping it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = toolgate::cli::Cli::parse();
    toolgate::cli::init_tracing(cli.log_format);
    match toolgate::cli::run(cli) {
        Ok(code) => code,
        Err(e) => toolgate::cli::output::exit_code(&e),
    }
}
