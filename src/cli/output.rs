//! Command output: standard output that a departed reader (`toolgate … | head -1`) ends
//! quietly instead of with a panic, and errors printed with each cause once.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

/// Standard output was closed by its reader: the command stops, but this is no failure.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Locked standard output whose broken-pipe errors carry [`StdoutClosed`], so that
/// [`exit_code`] can tell them from every other I/O error.
pub struct Stdout(io::StdoutLock<'static>);

/// Standard output for command output (`println!` would panic on a closed pipe).
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark_closed)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark_closed)
    }
}

fn mark_closed(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

/// Writes to standard output and flushes, so a closed pipe shows here and not at exit.
pub fn print(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = stdout();
    out.write_fmt(args)?;
    out.flush()
}

/// `println!` for command output, returning an `io::Result` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// `print!` for command output, returning an `io::Result` instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::print(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// The exit of a command that failed: quietly 0 if only standard output was closed, else
/// `error: …` on standard error and 1.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    if stdout_closed(error) {
        return ExitCode::SUCCESS;
    }
    // Not `eprintln!`, which panics when standard error is closed too.
    let _ = writeln!(io::stderr(), "error: {}", error_text(error));
    ExitCode::FAILURE
}

fn stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.is::<StdoutClosed>()
            || e.downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// The error and its causes on one line, each said once: many errors already end their
/// message with their cause's, which `{:#}` would then print a second time.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !previous.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
        previous = message;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read `x`: {source}")]
    struct Repeats {
        source: io::Error,
    }

    #[test]
    fn a_cause_already_in_its_error_is_said_once() {
        let inner = io::Error::new(io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Repeats { source: inner }).context("loading `x`");
        assert_eq!(error_text(&e), "loading `x`: cannot read `x`: no such file");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }

    #[test]
    fn only_a_closed_stdout_exits_quietly() {
        let closed = mark_closed(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(stdout_closed(
            &anyhow::Error::new(closed).context("printing")
        ));
        // A broken pipe elsewhere (a backend, a child process) is a real failure.
        let other = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(!stdout_closed(&anyhow::Error::new(other)));
    }
}
