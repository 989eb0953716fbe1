//! A test environment for running dupr and the reference duplicitys on the
//! same target, in one of the two encryption modes, with a private
//! GNUPGHOME (its gpg-agents stopped when the context is dropped). Test
//! modules add their own methods in `impl Ctx` blocks.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Output;

use super::{run_duplicity, try_duplicity, Dup, Env, GpgHome};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `--no-encryption` (gzip volumes).
    Plain,
    /// Symmetric OpenPGP with `PASSPHRASE`.
    Gpg,
}

pub struct Ctx {
    pub env: Env,
    pub mode: Mode,
    pub gnupg: GpgHome,
    /// `PASSPHRASE` in [`Mode::Gpg`], for every tool.
    pub pass: &'static str,
}

impl Ctx {
    pub fn new(mode: Mode, pass: &'static str) -> Ctx {
        let env = Env::new();
        let gnupg = GpgHome::new(env.path());
        Ctx {
            env,
            mode,
            gnupg,
            pass,
        }
    }

    pub fn src(&self) -> PathBuf {
        self.env.src()
    }

    pub fn url(&self) -> String {
        self.env.target_url()
    }

    pub fn enc_flags(&self) -> Vec<&'static str> {
        match self.mode {
            Mode::Plain => vec!["--no-encryption"],
            Mode::Gpg => vec![],
        }
    }

    /// dupr with the env's cache, the mode's flags and (encrypted) PASSPHRASE.
    pub fn dupr(&self) -> assert_cmd::Command {
        let mut c = self.env.dupr();
        c.args(self.enc_flags());
        if self.mode == Mode::Gpg {
            c.env("PASSPHRASE", self.pass);
        }
        c
    }

    /// Environment for the reference duplicitys.
    pub fn dup_env(&self) -> Vec<(&str, &str)> {
        let mut e = vec![("GNUPGHOME", self.gnupg.to_str().unwrap())];
        if self.mode == Mode::Gpg {
            e.push(("PASSPHRASE", self.pass));
        }
        e
    }

    fn dup_args(&self, archive: &Path, cmd: &str, rest: &[&OsStr]) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![cmd.into()];
        args.extend(self.enc_flags().into_iter().map(OsString::from));
        args.push("--archive-dir".into());
        args.push(archive.as_os_str().to_os_string());
        args.extend(rest.iter().map(|a| a.to_os_string()));
        args
    }

    /// `duplicity CMD <mode flags> --archive-dir A REST...` with `v`'s own
    /// archive dir; it must succeed.
    pub fn dup(&self, v: Dup, cmd: &str, rest: &[&OsStr]) -> Output {
        let archive = self.env.archive_dir(v);
        run_duplicity(v, self.dup_args(&archive, cmd, rest), &self.dup_env())
    }

    /// The same with the archive dir `archive`, whatever its exit status.
    pub fn dup_with_archive(&self, v: Dup, archive: &Path, cmd: &str, rest: &[&OsStr]) -> Output {
        try_duplicity(v, self.dup_args(archive, cmd, rest), &self.dup_env())
    }
}
