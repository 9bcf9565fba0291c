//! Command output on stdout that behaves like a Unix tool's: when the reader goes away
//! (`swarm get RUN --subtasks | head`), the command ends quietly with status 141 (128 + SIGPIPE,
//! what a shell reports for a tool killed by SIGPIPE) instead of panicking in `println!`.

use std::io::{self, Write};

/// Writes `text` and a newline to stdout; see the module docs for a closed pipe.
pub fn line(text: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.write_all(b"\n")) {
        closed(&e);
    }
}

/// Ends the process for a failed write to stdout: quietly with 141 when the pipe closed,
/// else with 1 and the error.
pub fn closed(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    let _ = writeln!(io::stderr(), "error: writing to stdout: {e}");
    std::process::exit(1);
}

/// `println!` for command output, through [`line`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// `n` and the word for that many: `1 call ok`, `3 calls ok`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
