//! `--json`: machine-readable output, restic's convention. Backup and
//! restore print JSON lines (`status` while running, then one `summary`);
//! the other commands one JSON document; errors one `error` object on
//! stderr. The schema is in the README.

use std::io::Write;
use std::sync::atomic::Ordering;
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

/// `status` lines every second while a backup runs, from its counters.
pub struct StatusLines {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl StatusLines {
    pub fn start(counters: Arc<Counters>) -> StatusLines {
        let (stop, rx) = mpsc::channel::<()>();
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(1))
            {
                line(&json!({
                    "message_type": "status",
                    "seconds_elapsed": started.elapsed().as_secs(),
                    "files_done": counters.files.load(Ordering::Relaxed),
                    "bytes_done": counters.bytes.load(Ordering::Relaxed),
                }));
            }
        });
        StatusLines { stop, thread }
    }

    pub fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
