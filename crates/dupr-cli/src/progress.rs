//! `--progress`: files, bytes, rate and ETA on the terminal (indicatif),
//! fed by the engine's counters; the total comes from a stat-only walk run
//! beside the backup, as duplicity's dry pass does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dupr_core::backup::Counters;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

/// The bytes of regular files under `source`, summed by a stat-only walk
/// on a thread of its own: 0 until the walk is done, then at least 1.
pub fn source_total(source: PathBuf) -> Arc<AtomicU64> {
    let total = Arc::new(AtomicU64::new(0));
    let t = total.clone();
    std::thread::spawn(move || {
        let n = dupr_core::walk::total_size(&source);
        t.store(n.max(1), Ordering::Relaxed);
    });
    total
}

pub fn start(c: Arc<Counters>, source: PathBuf) -> Progress {
    let stop = Arc::new(AtomicBool::new(false));
    let total = source_total(source);
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        while !s.load(Ordering::Relaxed) {
            bar.set_length(total.load(Ordering::Relaxed));
            bar.set_position(c.bytes.load(Ordering::Relaxed));
            bar.set_message(format!("{} files", c.files.load(Ordering::Relaxed)));
            std::thread::sleep(Duration::from_millis(200));
        }
        bar.finish_and_clear();
    });
    Progress { stop, handle }
}

impl Progress {
    pub fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}
