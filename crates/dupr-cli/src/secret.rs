//! Secrets from the user: environment variables taken out of the
//! environment, and passphrases asked as duplicity asks (Python's getpass):
//! on the controlling terminal when there is one, else on standard input
//! with echo off. Every copy is zeroized on drop.

use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context;
use zeroize::Zeroizing;

use crate::usage;

/// Take a secret variable out of the environment, so that nothing we start
/// inherits it.
pub fn take_env(name: &str) -> Option<Zeroizing<Vec<u8>>> {
    let p = std::env::var_os(name)?;
    std::env::remove_var(name);
    Some(Zeroizing::new(p.into_vec()))
}

/// A passphrase asked after `prompt`, then again after `confirm` if given
/// (it protects new data). None when nothing can be asked (see
/// [`read_secret`]); an empty passphrase or a mismatch is a usage error.
pub fn ask(
    prompt: &str,
    confirm: Option<&str>,
    stdin_ok: bool,
) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    let Some(first) = read_secret(prompt, stdin_ok).context("reading the passphrase")? else {
        return Ok(None);
    };
    if first.is_empty() {
        return Err(usage("an empty passphrase is not allowed"));
    }
    if let Some(again) = confirm {
        let again = read_secret(again, stdin_ok)
            .context("reading the passphrase")?
            .ok_or_else(|| usage("standard input ended before the passphrase was confirmed"))?;
        if *again != *first {
            return Err(usage("the two passphrases do not match"));
        }
    }
    Ok(Some(first))
}

/// One line of secret input, after `prompt`: from the controlling terminal
/// if the process has one, else from standard input (echo off when it is a
/// terminal, e.g. a pty under `setsid`, as duplicity's test harness runs it).
/// None when standard input is at its end before any byte, or not to be
/// read (`stdin_ok` false).
pub fn read_secret(prompt: &str, stdin_ok: bool) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let has_tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/tty")
        .is_ok();
    if has_tty {
        let p = Zeroizing::new(rpassword::prompt_password(prompt)?);
        return Ok(Some(Zeroizing::new(p.as_bytes().to_vec())));
    }
    if !stdin_ok || stdin_is_dev_null() {
        // Nothing can come (a service, cron): no prompt to clutter the log.
        return Ok(None);
    }
    // Echo off before the prompt, so nothing typed after it is shown.
    let echo_off = EchoOff::on_stdin();
    let mut err = std::io::stderr().lock();
    err.write_all(prompt.as_bytes())?;
    err.flush()?;
    let mut line = Zeroizing::new(Vec::with_capacity(256));
    // Zeroed on drop, like `line`: no stray byte of the secret stays.
    let mut byte = Zeroizing::new([0u8; 1]);
    let ended = loop {
        // Byte by byte from fd 0: nothing past the line is read ahead, and
        // no copy of the secret is left in a buffer.
        // SAFETY: reads at most one byte into a live one-byte buffer.
        let n = unsafe { libc::read(0, byte.as_mut_ptr().cast(), 1) };
        match n {
            0 => break true,
            1 if byte[0] == b'\n' => break false,
            1 => {
                if line.len() == line.capacity() {
                    // Grow by hand: a reallocation would leave a copy behind.
                    let mut bigger = Zeroizing::new(Vec::with_capacity(line.capacity() * 2));
                    bigger.extend_from_slice(&line);
                    line = bigger;
                }
                line.push(byte[0]);
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    };
    if echo_off.is_some() {
        // The newline the user typed was not echoed.
        let _ = err.write_all(b"\n");
    }
    drop(echo_off);
    if ended && line.is_empty() {
        return Ok(None);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Whether standard input is /dev/null.
fn stdin_is_dev_null() -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match (
        std::fs::metadata("/dev/stdin"),
        std::fs::metadata("/dev/null"),
    ) {
        (Ok(i), Ok(n)) => i.file_type().is_char_device() && i.rdev() == n.rdev(),
        _ => false,
    }
}

/// Echo turned off on standard input while it lives, if that is a terminal.
struct EchoOff(libc::termios);

impl EchoOff {
    fn on_stdin() -> Option<EchoOff> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills the termios on success; it is read only then.
        if unsafe { libc::tcgetattr(0, t.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: tcgetattr returned 0, so it filled `t`.
        let saved = unsafe { t.assume_init() };
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: a valid termios for fd 0, from tcgetattr.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) } != 0 {
            return None;
        }
        Some(EchoOff(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from fd 0 in on_stdin.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}
