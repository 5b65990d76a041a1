//! The `toolgate` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = toolgate::cli::Cli::parse();
    toolgate::cli::init_tracing(cli.log_format);
    match toolgate::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
