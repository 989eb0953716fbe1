//! `--json`: machine-readable output, restic's convention. Backup and
//! restore print JSON lines (`status` while running, then one `summary`);
//! the other commands one JSON document; errors one `error` object on
//! stderr. The schema is in the README.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dupr_core::backup::Counters;
use serde_json::{json, Map, Value};

/// Print one JSON value on its own line on stdout.
pub fn line(v: &Value) {
    let mut out = std::io::stdout().lock();
    // stdout closed (a pipe that went away): nothing left to tell.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// An object of `message_type` with `fields` (a serialized struct's fields
/// and any more) in it.
pub fn message(kind: &str, fields: impl serde::Serialize, more: Value) -> Value {
    let mut m = Map::new();
    m.insert("message_type".into(), kind.into());
    for v in [serde_json::to_value(fields).unwrap_or(Value::Null), more] {
        if let Value::Object(o) = v {
            m.extend(o);
        }
    }
    Value::Object(m)
}

/// The error object `main` prints on stderr instead of its one line.
pub fn error(code: i32, msg: &str) -> Value {
    json!({"message_type": "error", "code": code, "message": msg})
}

/// `status` lines every second while a backup or restore runs, from its
/// counters.
pub struct StatusLines {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl StatusLines {
    /// Start printing. With `source` (a backup's), a stat-only walk of it
    /// runs beside the backup, as `--progress` does, and once it is done
    /// the lines carry `total_bytes` and `seconds_remaining`.
    pub fn start(counters: Arc<Counters>, source: Option<PathBuf>) -> StatusLines {
        let (stop, rx) = mpsc::channel::<()>();
        let started = Instant::now();
        // 0 until the walk is done (always, without a source).
        let total = match source {
            Some(source) => crate::progress::source_total(source),
            None => Arc::new(AtomicU64::new(0)),
        };
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(1))
            {
                let elapsed = started.elapsed().as_secs_f64();
                let done = counters.bytes.load(Ordering::Relaxed);
                let mut m = json!({
                    "message_type": "status",
                    "seconds_elapsed": elapsed as u64,
                    "files_done": counters.files.load(Ordering::Relaxed),
                    "bytes_done": done,
                });
                let total = total.load(Ordering::Relaxed);
                if total > 0 {
                    m["total_bytes"] = total.into();
                    if done > 0 {
                        let left = total.saturating_sub(done) as f64;
                        m["seconds_remaining"] =
                            ((elapsed * left / done as f64).round() as u64).into();
                    }
                }
                line(&m);
            }
        });
        StatusLines { stop, thread }
    }

    pub fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
