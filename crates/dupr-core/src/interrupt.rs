//! SIGINT and SIGTERM: the handler only records the signal; the backup and
//! restore pipelines look at it at their safe points (between volumes,
//! between files) and stop there with [`Error::Interrupted`], so temporary
//! files are removed and both locks released on the way out. A second
//! signal ends the process at once, for a run stuck in a long call.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::error::{Error, Result};

static PENDING: AtomicI32 = AtomicI32::new(0);

/// The target lock was found taken over by another run: this run must stop
/// writing at its next safe point (its volumes could be deleted under it).
static LOCK_LOST: AtomicBool = AtomicBool::new(false);

/// Called by the lock's heartbeat when the lock is no longer ours.
pub fn lock_lost() {
    LOCK_LOST.store(true, Ordering::SeqCst);
}

extern "C" fn on_signal(sig: libc::c_int) {
    if PENDING.swap(sig, Ordering::SeqCst) != 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
}

/// Catch SIGINT and SIGTERM from now on.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only touches an
        // atomic (and calls _exit), both async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The signal received, if any.
pub fn pending() -> Option<i32> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// A safe point: stop here if a signal came.
pub fn check() -> Result<()> {
    if LOCK_LOST.load(Ordering::SeqCst) {
        return Err(Error::LockLost);
    }
    match pending() {
        Some(s) => Err(Error::Interrupted(s)),
        None => Ok(()),
    }
}

/// `SIGTERM` for 15, ...
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        s => format!("signal {s}"),
    }
}
