//! Logging: `dupr: ...` lines on the terminal, and duplicity's
//! machine-readable records on `--log-file` / `--log-fd`, which frontends
//! (deja-dup, scripts written for duplicity) parse:
//!
//! ```text
//! ERROR 23 CommandLineError
//! . first line of the message
//! . second line
//!
//! ```

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use dupr_core::time;

use crate::cli;

/// The machine-readable sinks, kept for the final error record.
static SINKS: OnceLock<Vec<Arc<Mutex<File>>>> = OnceLock::new();

/// Set up tracing for the terminal and the log sinks.
pub fn init(g: &cli::General) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match g.verbosity.as_deref().unwrap_or("3") {
        "0" | "e" | "error" => "error",
        "1" | "2" | "w" | "warning" => "warn",
        "3" | "4" | "n" | "notice" => "warn",
        "5" | "6" | "7" | "8" | "i" | "info" => "info",
        "9" | "d" | "debug" => "debug",
        other => {
            return Err(crate::bad_value(format!(
                "--verbosity: bad level {other:?}: use 0-9 or e, w, n, i, d"
            )))
        }
    };
    let mut sinks: Vec<Arc<Mutex<File>>> = Vec::new();
    if let Some(p) = &g.log_file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("opening log file {}", p.display()))?;
        sinks.push(Arc::new(Mutex::new(f)));
    }
    if let Some(fd) = g.log_fd {
        use std::os::fd::FromRawFd;
        if fd < 0 || nix::fcntl::fcntl(fd, nix::fcntl::F_GETFD).is_err() {
            return Err(crate::bad_value(format!(
                "--log-fd {fd}: not an open file descriptor"
            )));
        }
        // SAFETY: checked open above; the process owns it for its lifetime.
        sinks.push(Arc::new(Mutex::new(unsafe { File::from_raw_fd(fd) })));
    }
    let _ = SINKS.set(sinks.clone());
    let filter = tracing_subscriber::EnvFilter::new(format!("dupr_core={level},dupr={level}"));
    let terminal = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(Line::Terminal {
            timestamp: g.log_timestamp,
        });
    let machine = (!sinks.is_empty()).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(move || Sinks(sinks.clone()))
            .event_format(Line::Machine)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(terminal)
        .with(machine)
        .init();
    Ok(())
}

/// Record the error a run ends with on the machine-readable sinks:
/// `ERROR <exit code> [<class>]`, as duplicity's frontends expect.
pub fn fatal(code: i32, class: Option<&str>, msg: &str) {
    let Some(sinks) = SINKS.get() else { return };
    let head = match class {
        Some(c) => format!("ERROR {code} {c}"),
        None => format!("ERROR {code}"),
    };
    let rec = record(&head, msg);
    for s in sinks {
        if let Ok(mut f) = s.lock() {
            let _ = f.write_all(rec.as_bytes());
        }
    }
}

/// One record: the head line, each message line after ". ", a blank line.
fn record(head: &str, msg: &str) -> String {
    let mut s = String::with_capacity(head.len() + msg.len() + 8);
    s.push_str(head);
    s.push('\n');
    for line in msg.lines() {
        s.push_str(". ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

/// Every sink as one writer.
struct Sinks(Vec<Arc<Mutex<File>>>);

impl Write for Sinks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for s in &self.0 {
            if let Ok(mut f) = s.lock() {
                f.write_all(buf)?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a log event is written: `dupr: warning: ...` on the terminal (like
/// the rest of dupr's messages; `--log-timestamp` puts the UTC time first),
/// or as duplicity's record with its generic code 1 on the log sinks.
enum Line {
    Terminal { timestamp: bool },
    Machine,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Line
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        match self {
            Line::Machine => {
                let head = match level {
                    tracing::Level::ERROR => "ERROR 1",
                    tracing::Level::WARN => "WARNING 1",
                    tracing::Level::INFO => "INFO 1",
                    _ => "DEBUG 1",
                };
                let mut msg = String::new();
                ctx.field_format().format_fields(
                    tracing_subscriber::fmt::format::Writer::new(&mut msg),
                    event,
                )?;
                w.write_str(&record(head, &msg))
            }
            Line::Terminal { timestamp } => {
                if *timestamp {
                    write!(w, "{} ", time::to_filename(time::now()))?;
                }
                let level = match level {
                    tracing::Level::ERROR => "error: ",
                    tracing::Level::WARN => "warning: ",
                    _ => "",
                };
                write!(w, "dupr: {level}")?;
                ctx.field_format().format_fields(w.by_ref(), event)?;
                writeln!(w)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_prefix_every_line_and_end_blank() {
        assert_eq!(
            record("ERROR 23 CommandLineError", "bad URL\nsee --help"),
            "ERROR 23 CommandLineError\n. bad URL\n. see --help\n\n"
        );
        assert_eq!(record("WARNING 1", "one"), "WARNING 1\n. one\n\n");
    }
}
