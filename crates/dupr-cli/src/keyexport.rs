//! `dupr -p NAME export-keys FILE` and `dupr import-keys FILE`: the profile,
//! its filelists and its keys in one symmetric-encrypted tar for disaster
//! recovery, opened with `gpg -d FILE | tar x`.
//!
//! The file is an OpenPGP message written by dupr-core's own encoder (the
//! one backups are written with, which gpg reads), holding a tar written by
//! dupr-core's tar writer:
//!
//! ```text
//! dupr-NAME/README.txt            how to restore, by hand or with dupr
//! dupr-NAME/profile.toml          the profile file, as it is
//! dupr-NAME/files.toml            original path = "files/..." for each file below
//! dupr-NAME/files/...             filelists and key files the profile reads
//! dupr-NAME/keys/FPR.public.asc   gpg --export --armor
//! dupr-NAME/keys/FPR.secret.asc   gpg --export-secret-keys --armor
//! ```
//!
//! Key material only ever passes through gpg (exporting, importing) and
//! this process's memory; the export itself is never written unencrypted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use dupr_core::crypt::{Codec, Crypto, Encoder};
use dupr_core::keys::{self, KeySpec, Keyring};
use dupr_core::tar;
use zeroize::Zeroizing;

use crate::profile::{self, Loaded};

/// Profile options naming files a run reads.
const FILE_KEYS: &[&str] = &[
    "include-filelist",
    "exclude-filelist",
    "files-from",
    "encrypt-key-file",
    "sign-key-file",
];

/// Profile options naming keys, and whether the key signs (its passphrase
/// is then SIGN_PASSPHRASE first).
const KEY_KEYS: &[(&str, bool)] = &[
    ("encrypt-key", false),
    ("hidden-encrypt-key", false),
    ("sign-key", true),
    ("encrypt-sign-key", true),
];

/// Largest entry `import-keys` accepts (filelists and keys are small).
const MAX_ENTRY: u64 = 64 << 20;

type Secret = Zeroizing<Vec<u8>>;

// ----------------------------------------------------------------- export

/// The export's own passphrase, when one is given: `--export-passphrase-file`,
/// else `DUPR_EXPORT_PASSPHRASE`, else asked on the terminal (`ask` says
/// whether to, `confirm` whether twice). With the secret, the words the
/// README and the output use for it (never the secret).
fn export_passphrase(
    file: Option<&Path>,
    ask_prompt: Option<(&str, bool)>,
) -> Result<Option<(Secret, String)>> {
    if let Some(f) = file {
        let f = f.display().to_string();
        let s = secret(&None, &Some(f.clone()), &None, "export passphrase")?
            .ok_or_else(|| anyhow!("--export-passphrase-file {f}: empty"))?;
        if s.is_empty() {
            bail!("--export-passphrase-file {f}: the file is empty");
        }
        return Ok(Some((
            s,
            format!("the export passphrase from the file {f} (--export-passphrase-file)"),
        )));
    }
    if let Some(s) = env_secret("DUPR_EXPORT_PASSPHRASE") {
        std::env::remove_var("DUPR_EXPORT_PASSPHRASE");
        if s.is_empty() {
            bail!("DUPR_EXPORT_PASSPHRASE is empty");
        }
        return Ok(Some((
            s,
            "the export passphrase from the environment variable DUPR_EXPORT_PASSPHRASE".into(),
        )));
    }
    use std::io::IsTerminal;
    match ask_prompt {
        Some((prompt, confirm)) if std::io::stdin().is_terminal() => Ok(Some((
            ask(prompt, confirm)?,
            "an export passphrase asked on the terminal".into(),
        ))),
        _ => Ok(None),
    }
}

pub fn export_keys(l: &Loaded, out: &Path, export_file: Option<&Path>) -> Result<i32> {
    let name = &l.name;
    if name.contains('/') || name.is_empty() {
        bail!("export-keys: profile name {name:?} can't name an export (use -p NAME)");
    }
    let text = std::fs::read_to_string(&l.path)
        .with_context(|| format!("reading profile {}", l.path.display()))?;
    let raw: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow!("profile {}: {}", l.path.display(), e.message()))?;
    let p = &l.profile;
    let profile_pass = secret(
        &p.passphrase,
        &p.passphrase_file,
        &p.passphrase_command,
        "passphrase",
    )?;
    let sign_pass = secret(
        &p.sign_passphrase,
        &p.sign_passphrase_file,
        &p.sign_passphrase_command,
        "sign passphrase",
    )?
    .or_else(|| env_secret("SIGN_PASSPHRASE"));
    let mut backup_pass = profile_pass.or_else(|| env_secret("PASSPHRASE"));
    // The export's own passphrase; without one (no file, no variable, no
    // terminal), the backup passphrase encrypts it.
    let prompt = format!(
        "Export passphrase for {} (it protects the export, not the backups): ",
        out.display()
    );
    let (pass, pass_from) = match export_passphrase(export_file, Some((&prompt, true)))? {
        Some(x) => x,
        None => {
            let p = match backup_pass.clone() {
                Some(p) => p,
                None => ask(&format!("Passphrase for {}: ", out.display()), true)?,
            };
            backup_pass = Some(p.clone());
            (
                p,
                "the profile's backup passphrase (no export passphrase was given)".into(),
            )
        }
    };

    let top = format!("dupr-{name}");
    let mut t = TarOut::new();
    t.dir(&top);
    let (files, report) = add_files(&mut t, &top, l, &raw)?;
    let ids = key_ids(p);
    let passes = (backup_pass.as_ref(), sign_pass.as_ref());
    let key_lines = add_keys(&mut t, &top, name, &ids, passes)?;

    let mut index = String::from(
        "# Files the profile reads: original path = file in this directory.\n[files]\n",
    );
    for (orig, stored) in &files {
        index.push_str(&format!(
            "{} = {}\n",
            toml::Value::String(orig.clone()),
            toml::Value::String(stored.clone())
        ));
    }
    t.file(&format!("{top}/files.toml"), index.as_bytes());
    t.file(&format!("{top}/profile.toml"), text.as_bytes());
    let readme = readme(name, out, l, &files, &key_lines, &pass_from);
    t.file(&format!("{top}/README.txt"), readme.as_bytes());
    let data = t.finish();

    write_encrypted(out, &data, pass)?;
    println!(
        "exported profile {name} to {} (mode 600, encrypted with {pass_from}):",
        out.display()
    );
    println!("  {top}/profile.toml, {top}/README.txt");
    for r in &report {
        println!("{r}");
    }
    for k in &key_lines {
        println!("{k}");
    }
    if ids.is_empty() {
        println!("  (the profile names no keys: encrypt-key, sign-key, hidden-encrypt-key, encrypt-sign-key)");
    }
    if let Some(f) = &p.passphrase_file {
        println!("  not included: the passphrase file {f} (keep the passphrase elsewhere)");
    }
    println!(
        "open it with: gpg -d {} | tar x   or restore it with: dupr import-keys {}",
        out.display(),
        out.display()
    );
    Ok(0)
}

/// Add the files the profile reads (key files, filelists, ...) under
/// `top/files/`; their original paths map to the stored names, and a line
/// per file for the report.
fn add_files(
    t: &mut TarOut,
    top: &str,
    l: &Loaded,
    raw: &toml::Table,
) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let name = &l.name;
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut report = Vec::new();
    let mut stored_names = Vec::new();
    for key in FILE_KEYS {
        for orig in strings(raw.get(*key)) {
            if files.contains_key(&orig) {
                continue;
            }
            let path = locate(&orig, &l.path).ok_or_else(|| {
                anyhow!(
                    "profile {name}: {key} {orig:?} does not exist (relative paths are read from the current directory or the profile's)"
                )
            })?;
            let data = std::fs::read(&path)
                .with_context(|| format!("reading {key} {}", path.display()))?;
            let base = path
                .file_name()
                .map(|b| b.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let mut stored = format!("files/{base}");
            let mut n = 2;
            while stored_names.contains(&stored) {
                stored = format!("files/{n}-{base}");
                n += 1;
            }
            stored_names.push(stored.clone());
            if stored_names.len() == 1 {
                t.dir(&format!("{top}/files"));
            }
            t.file(&format!("{top}/{stored}"), &data);
            report.push(format!("  {key} {orig} -> {top}/{stored}"));
            files.insert(orig, stored);
        }
    }
    Ok((files, report))
}

/// The key ids the profile names, and whether each signs.
fn key_ids(p: &profile::Profile) -> Vec<(String, bool)> {
    let mut ids: Vec<(String, bool)> = Vec::new();
    for (key, signs) in KEY_KEYS {
        for id in strings(p.options.get(*key)) {
            ids.push((id, *signs));
        }
    }
    ids
}

/// Add the keys `ids` under `top/keys/`: each public key, and its secret
/// key when GNUPGHOME has it (exported with the backup or sign
/// passphrase). Returns a line per key for the report.
fn add_keys(
    t: &mut TarOut,
    top: &str,
    name: &str,
    ids: &[(String, bool)],
    (backup_pass, sign_pass): (Option<&Secret>, Option<&Secret>),
) -> Result<Vec<String>> {
    let mut ring = Keyring::new();
    if !ids.is_empty() {
        ring.add_gnupg_home(&keys::gnupg_home())?;
    }
    let mut done: Vec<String> = Vec::new();
    let mut key_lines = Vec::new();
    for (id, signs) in ids {
        let k = ring.find(&KeySpec::parse(id)).ok_or_else(|| {
            anyhow!(
                "profile {name}: key {id:?} is not in {} (GNUPGHOME)",
                ring.searched()
            )
        })?;
        let fpr = keys::fingerprint_hex(k);
        if done.contains(&fpr) {
            continue;
        }
        if done.is_empty() {
            t.dir(&format!("{top}/keys"));
        }
        done.push(fpr.clone());
        let uid = k
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .unwrap_or_default();
        let public = gpg_export_public(&fpr)?;
        t.file(&format!("{top}/keys/{fpr}.public.asc"), &public);
        // The sign key's passphrase is SIGN_PASSPHRASE, falling back to
        // PASSPHRASE (duplicity's rule); encryption keys the other way.
        let mut tries: Vec<&Secret> = Vec::new();
        let main = backup_pass;
        let (first, second) = if *signs {
            (sign_pass, main)
        } else {
            (main, sign_pass)
        };
        tries.extend(first);
        tries.extend(second.filter(|s| Some(*s) != first));
        let secret = gpg_export_secret(&fpr, &tries)?;
        let what = match &secret {
            Some(s) => {
                t.file(&format!("{top}/keys/{fpr}.secret.asc"), s);
                "public + secret key"
            }
            None => "public key only: no secret key in GNUPGHOME",
        };
        key_lines.push(format!("  {fpr} {uid} ({id}): {what}"));
    }
    Ok(key_lines)
}

/// A string or an array of strings of a profile key.
fn strings(v: Option<&toml::Value>) -> Vec<String> {
    match v {
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Where a file named in the profile is: as given (relative to the current
/// directory, as a run reads it), else relative to the profile's directory.
fn locate(orig: &str, profile_path: &Path) -> Option<PathBuf> {
    let p = PathBuf::from(orig);
    if p.is_file() {
        return Some(p);
    }
    if p.is_relative() {
        let q = profile_path.parent()?.join(&p);
        if q.is_file() {
            return Some(q);
        }
    }
    None
}

fn env_secret(var: &str) -> Option<Secret> {
    std::env::var_os(var).map(|v| Zeroizing::new(std::os::unix::ffi::OsStringExt::into_vec(v)))
}

/// Ask on the terminal (twice when `confirm`).
fn ask(prompt: &str, confirm: bool) -> Result<Secret> {
    crate::secret::ask(prompt, confirm.then_some("Again, to confirm: "), false)?.ok_or_else(|| {
        anyhow!("no passphrase: set PASSPHRASE (or give the profile a passphrase source)")
    })
}

/// A secret from the profile, read as a profile run reads it.
fn secret(
    clear: &Option<String>,
    file: &Option<String>,
    command: &Option<String>,
    what: &str,
) -> Result<Option<Secret>> {
    Ok(crate::profile::secret(clear, file, command, what)?
        .map(|s| Zeroizing::new(s.as_bytes().to_vec())))
}

/// Run gpg (batch, C locale) with `stdin`; (success, stdout, stderr).
fn gpg(args: &[&str], stdin: Option<&[u8]>) -> Result<(bool, Secret, String)> {
    let mut child = Command::new("gpg")
        .env("LC_ALL", "C")
        .env("LANGUAGE", "C")
        .args(["--batch", "--no-tty"])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running gpg (is GnuPG installed?)")?;
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("piped");
        // gpg may exit without reading it (an unprotected key).
        let _ = w.write_all(input);
    }
    let o = child.wait_with_output().context("running gpg")?;
    Ok((
        o.status.success(),
        Zeroizing::new(o.stdout),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

fn last_line(s: &str) -> &str {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

fn gpg_export_public(fpr: &str) -> Result<Secret> {
    let (ok, out, err) = gpg(&["--armor", "--export", fpr], None)?;
    if !ok || out.is_empty() {
        bail!("gpg --export {fpr} failed: {}", last_line(&err));
    }
    Ok(out)
}

/// The armored secret key, unlocked for gpg with the first passphrase
/// that works; `None` when GNUPGHOME has no secret key for it.
fn gpg_export_secret(fpr: &str, tries: &[&Secret]) -> Result<Option<Secret>> {
    let empty = Zeroizing::new(Vec::new());
    let tries: Vec<&Secret> = if tries.is_empty() {
        vec![&empty]
    } else {
        tries.to_vec()
    };
    let mut bad = false;
    for pass in tries {
        if pass.contains(&b'\n') {
            continue;
        }
        let mut line = Zeroizing::new(pass.to_vec());
        line.push(b'\n');
        let (ok, out, err) = gpg(
            &[
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                "0",
                "--armor",
                "--export-secret-keys",
                fpr,
            ],
            Some(&line),
        )?;
        if err.contains("Bad passphrase") || err.contains("bad passphrase") {
            bad = true;
            continue;
        }
        if !ok && out.is_empty() {
            if err.contains("No passphrase") || err.contains("No pinentry") {
                bail!("the secret key {fpr} is protected: set PASSPHRASE (or SIGN_PASSPHRASE for the sign key)");
            }
            bail!("gpg --export-secret-keys {fpr} failed: {}", last_line(&err));
        }
        return Ok((!out.is_empty()).then_some(out));
    }
    if bad {
        bail!("wrong passphrase for the secret key {fpr}: set PASSPHRASE (or SIGN_PASSPHRASE for the sign key) to its passphrase");
    }
    bail!("the secret key {fpr} can't be exported: its passphrase contains a newline");
}

fn readme(
    name: &str,
    out: &Path,
    l: &Loaded,
    files: &BTreeMap<String, String>,
    key_lines: &[String],
    pass_from: &str,
) -> String {
    let file = out
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "FILE".into());
    let top = format!("dupr-{name}");
    let mut s = format!(
        "dupr export of profile {name}
Written {} by `dupr -p {name} export-keys {file}`.

This file holds what it takes to reach the backups of profile {name} again
after losing the machine they were made on: the profile, the files it reads
and the OpenPGP keys it names, secret keys included. It is encrypted with
a passphrase: keep it (and the passphrase) apart from the backups.
The passphrase of this export: {pass_from}.

Contents, after `gpg -d {file} | tar x`:
  {top}/README.txt        this file
  {top}/profile.toml      the profile (was {})
  {top}/files.toml        where each file of {top}/files/ was
  {top}/files/            the filelists and key files the profile reads
  {top}/keys/             FINGERPRINT.public.asc and FINGERPRINT.secret.asc
",
        dupr_core::time::pretty_local(dupr_core::time::now()),
        l.path.display()
    );
    if !files.is_empty() {
        s.push_str("\nFiles:\n");
        for (orig, stored) in files {
            s.push_str(&format!("  {top}/{stored}  was  {orig}\n"));
        }
    }
    if !key_lines.is_empty() {
        s.push_str("\nKeys:\n");
        for k in key_lines {
            s.push_str(k);
            s.push('\n');
        }
    }
    s.push_str(&format!(
        "
Restore with dupr
-----------------
  dupr import-keys {file}

It reads the export's passphrase from --export-passphrase-file FILE, else
DUPR_EXPORT_PASSPHRASE, else PASSPHRASE, else asks for it; imports the keys into
GnuPG (GNUPGHOME, else ~/.gnupg), installs the profile as
$XDG_CONFIG_HOME/dupr/profiles/{name}.toml (~/.config/dupr/profiles/{name}.toml)
and the files it reads next to it; files that were at absolute paths go to
$XDG_CONFIG_HOME/dupr/profiles/{name}.files/ and the profile is changed to
point there. An existing profile {name} is never replaced.

Restore by hand
---------------
  gpg -d {file} | tar x
  gpg --import {top}/keys/*.asc
  mkdir -p ~/.config/dupr/profiles
  cp {top}/profile.toml ~/.config/dupr/profiles/{name}.toml
  chmod 600 ~/.config/dupr/profiles/{name}.toml
Then put each file of {top}/files/ where files.toml says it was (or edit
the profile to point at it).

Then
----
  dupr -p {name} status
  dupr -p {name} list
  dupr -p {name} restore DEST
"
    ));
    let p = &l.profile;
    let source = match (&p.passphrase, &p.passphrase_file, &p.passphrase_command) {
        (Some(_), _, _) => Some("the profile itself (in clear)".to_string()),
        (_, Some(f), _) => Some(format!(
            "the file {f}, which is NOT in this export: create it again (mode 600)"
        )),
        (_, _, Some(c)) => Some(format!(
            "the command {c:?}, which must work on the new machine"
        )),
        _ => None,
    };
    if let Some(src) = source {
        s.push_str(&format!("\nThe profile reads its passphrase from {src}.\n"));
    } else {
        s.push_str("\nThe profile's passphrase comes from PASSPHRASE or the terminal.\n");
    }
    s
}

/// Encrypt `data` to `out` (mode 600), through a temp file in the same
/// directory renamed into place.
fn write_encrypted(out: &Path, data: &[u8], pass: Secret) -> Result<()> {
    if out.is_dir() {
        bail!("{} is a directory", out.display());
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = out
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", out.display()))?;
    let tmp = dir.join(format!(
        ".{}.dupr-tmp-{}",
        base.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", out.display()))?;
    let r = (|| -> Result<()> {
        let codec = Codec::Gpg(Crypto::symmetric(pass, true)?);
        let mut e = Encoder::create(&tmp, &codec)?;
        e.write_all(data)?;
        e.finish()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, out)?;
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("writing {}", out.display()))
}

/// A tar archive in memory (it holds secret keys: wiped when dropped).
struct TarOut {
    buf: Secret,
    mtime: i64,
    uid: u64,
    gid: u64,
}

impl TarOut {
    fn new() -> TarOut {
        TarOut {
            buf: Zeroizing::new(Vec::new()),
            mtime: dupr_core::time::now(),
            uid: nix::unistd::getuid().as_raw() as u64,
            gid: nix::unistd::getgid().as_raw() as u64,
        }
    }

    fn header(&self, name: &str, typeflag: u8, mode: u32, size: u64) -> tar::Header {
        tar::Header {
            name: name.as_bytes().to_vec(),
            typeflag,
            mode,
            uid: self.uid,
            gid: self.gid,
            size,
            mtime: self.mtime,
            ..Default::default()
        }
    }

    fn dir(&mut self, name: &str) {
        let h = self.header(&format!("{name}/"), tar::DIRTYPE, 0o700, 0);
        h.encode(&mut self.buf);
    }

    fn file(&mut self, name: &str, data: &[u8]) {
        let h = self.header(name, tar::REGTYPE, 0o600, data.len() as u64);
        h.encode(&mut self.buf);
        self.buf.extend_from_slice(data);
        tar::pad_block(&mut self.buf);
    }

    /// The end marker (two zero blocks), padded to a whole record.
    fn finish(mut self) -> Secret {
        let n = self.buf.len() + 2 * tar::BLOCK;
        let n = n.div_ceil(tar::RECORD) * tar::RECORD;
        self.buf.resize(n, 0);
        std::mem::take(&mut self.buf)
    }
}

// ----------------------------------------------------------------- import

/// A private temp directory, removed when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> Result<PrivateDir> {
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let p = base.join(format!(
                "dupr-import-{}-{}-{i}",
                std::process::id(),
                dupr_core::time::now()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(PrivateDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("creating a temp dir in {}", base.display()))
                }
            }
        }
        bail!("creating a temp dir in {}: too many tries", base.display())
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The archive's top directory name and relative path of an entry, if the
/// entry is safe to extract (relative, no `..`, under `dupr-NAME/`).
fn entry_path(name: &[u8]) -> Option<(String, PathBuf)> {
    let s = std::str::from_utf8(name).ok()?;
    let p = Path::new(s.trim_end_matches('/'));
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => parts.push(x.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    let top = parts.first()?.clone();
    if !top.starts_with("dupr-") || top.len() <= 5 {
        return None;
    }
    Some((top, parts.iter().collect()))
}

pub fn import_keys(file: &Path, export_file: Option<&Path>) -> Result<i32> {
    let show = file.display().to_string();
    // As export-keys: the export passphrase (file, variable), else
    // PASSPHRASE (an export made with the backup passphrase), else asked.
    let pass = match export_passphrase(export_file, None)? {
        Some((p, _)) => p,
        None => match env_secret("PASSPHRASE") {
            Some(p) => p,
            None => ask(&format!("Passphrase for {show}: "), false)?,
        },
    };
    let f = std::fs::File::open(file).with_context(|| format!("opening {show}"))?;
    let crypto = Crypto::symmetric(pass.clone(), true)?;
    let plain = dupr_core::crypt::decoder(f, &Codec::Gpg(crypto)).map_err(|e| match e {
        e @ (dupr_core::Error::NotEncrypted { .. }
        | dupr_core::Error::NoSessionKey { .. }
        | dupr_core::Error::SessionKeyRefused { .. }) => anyhow!(
            "{show}: not a dupr export-keys file ({})",
            e.to_string()
                .trim_start_matches("encryption: ")
                .trim_start_matches("file: ")
        ),
        // A wrong passphrase keeps its own message and exit code.
        e => anyhow::Error::from(e).context(show.clone()),
    })?;

    // Everything is extracted and the message's integrity checked before
    // anything is installed.
    let tmp = PrivateDir::new()?;
    let top = extract(plain, &tmp.0, &show)?;
    let name = top["dupr-".len()..].to_string();
    let dir = tmp.0.join(&top);
    let text = std::fs::read_to_string(dir.join("profile.toml"))
        .map_err(|_| anyhow!("{show}: no {top}/profile.toml in it"))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow!("{show}: {top}/profile.toml: {}", e.message()))?;
    let index: toml::Table = match std::fs::read_to_string(dir.join("files.toml")) {
        Ok(t) => {
            toml::from_str(&t).map_err(|e| anyhow!("{show}: {top}/files.toml: {}", e.message()))?
        }
        Err(_) => toml::Table::new(),
    };
    let stored: BTreeMap<String, String> = index
        .get("files")
        .and_then(|f| f.as_table())
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();

    // Where everything goes; refuse before changing anything.
    let conf = profile::config_dir();
    let dest = conf.join(format!("{name}.toml"));
    if dest.exists() {
        bail!(
            "profile {name} exists already ({}); not replaced: move it away and run import-keys again",
            dest.display()
        );
    }
    let mut installs: Vec<(PathBuf, PathBuf, String)> = Vec::new(); // (from, to, original)
    let mut rewrites: Vec<(String, String)> = Vec::new();
    let mut used: Vec<PathBuf> = Vec::new();
    for (orig, st) in &stored {
        let (_, rel) = entry_path(format!("{top}/{st}").as_bytes())
            .ok_or_else(|| anyhow!("{show}: bad file entry {st:?} in files.toml"))?;
        let from = tmp.0.join(rel);
        if !from.is_file() {
            bail!("{show}: files.toml names {st}, which is not in it");
        }
        let o = Path::new(orig);
        let plain_rel = o.is_relative()
            && o.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        let to = if plain_rel {
            conf.join(o)
        } else {
            let base = o
                .file_name()
                .map(|b| b.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let d = conf.join(format!("{name}.files"));
            let mut to = d.join(&base);
            let mut n = 2;
            while used.contains(&to) {
                to = d.join(format!("{n}-{base}"));
                n += 1;
            }
            rewrites.push((orig.clone(), to.display().to_string()));
            to
        };
        if to.exists() && std::fs::read(&to).ok() != std::fs::read(&from).ok() {
            bail!(
                "{} exists already with other contents; not replaced: move it away and run import-keys again",
                to.display()
            );
        }
        used.push(to.clone());
        installs.push((from, to, orig.clone()));
    }
    let new_text = rewrite(&text, &table, &rewrites)?;

    // Keys first: without them the profile is of no use.
    let mut report = import_gpg_keys(&dir.join("keys"), &pass, &show)?;

    install_files(&installs, &rewrites, &mut report)?;
    profile::write_private(&dest, &new_text)?;
    report.push(format!("installed profile {name} as {}", dest.display()));
    for r in &report {
        println!("{r}");
    }
    if let Some(f) = table.get("passphrase-file").and_then(|v| v.as_str()) {
        let p = match f.strip_prefix("~/") {
            Some(rest) => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(rest),
            None => PathBuf::from(f),
        };
        if !p.exists() {
            println!("note: the profile reads its passphrase from {f}, which does not exist here: create it (mode 600) before running it");
        }
    }
    println!("check it with: dupr profile edit-check {name}; dupr -p {name} status");
    Ok(0)
}

/// Unpack an export (`plain`, decrypted) into `into`, refusing anything
/// but the directories and files of one profile; returns its top
/// directory (`dupr-NAME`). Reads to the end, so the message's integrity
/// check has passed when this returns.
fn extract(plain: impl Read, into: &Path, show: &str) -> Result<String> {
    let mut top: Option<String> = None;
    let mut tr = tar::Reader::new(plain);
    let damaged =
        |e: std::io::Error| anyhow!("{show}: damaged or not a dupr export-keys file: {e}");
    while let Some(h) = tr.next_header().map_err(damaged)? {
        let (t, rel) = entry_path(&h.name).ok_or_else(|| {
            anyhow!(
                "{show}: unexpected entry {:?} (not a dupr export-keys file)",
                String::from_utf8_lossy(&h.name)
            )
        })?;
        if top.get_or_insert_with(|| t.clone()) != &t {
            bail!(
                "{show}: entries of two profiles ({} and {t})",
                top.unwrap_or_default()
            );
        }
        let dest = into.join(&rel);
        match h.typeflag {
            tar::DIRTYPE => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dest)?;
            }
            tar::REGTYPE | 0 => {
                if h.size > MAX_ENTRY {
                    bail!("{show}: entry {} is too large", rel.display());
                }
                if let Some(d) = dest.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(d)?;
                }
                let mut data = Zeroizing::new(Vec::with_capacity(h.size as usize));
                (&mut tr)
                    .take(h.size)
                    .read_to_end(&mut data)
                    .map_err(damaged)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dest)
                    .and_then(|mut f| f.write_all(&data))
                    .with_context(|| format!("extracting {}", rel.display()))?;
            }
            other => bail!(
                "{show}: unexpected entry type {:?} for {}",
                other as char,
                rel.display()
            ),
        }
    }
    tr.drain().map_err(damaged)?;
    top.ok_or_else(|| anyhow!("{show}: empty archive"))
}

/// Import the exported keys (`*.asc` in `keys_dir`, public before secret)
/// into the user's GnuPG home; the lines of gpg's report worth showing.
fn import_gpg_keys(keys_dir: &Path, pass: &[u8], show: &str) -> Result<Vec<String>> {
    let mut key_files: Vec<PathBuf> = std::fs::read_dir(keys_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "asc"))
                .collect()
        })
        .unwrap_or_default();
    // Public keys before secret ones.
    key_files.sort_by_key(|p| {
        (
            p.to_string_lossy().ends_with(".secret.asc"),
            p.to_path_buf(),
        )
    });
    let mut report = Vec::new();
    if !key_files.is_empty() {
        let home = keys::gnupg_home();
        if !home.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&home)
                .with_context(|| format!("creating the GnuPG home {}", home.display()))?;
        }
        let mut args: Vec<String> = [
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--import",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(key_files.iter().map(|p| p.display().to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut line = Zeroizing::new(pass.to_vec());
        line.push(b'\n');
        let (ok, _, err) = gpg(&argv, Some(&line))?;
        if !ok {
            bail!(
                "gpg --import of the keys in {show} failed: {}",
                last_line(&err)
            );
        }
        report.push(format!("imported the keys into {}:", home.display()));
        for l in err.lines() {
            let l = l.trim_start_matches("gpg: ").trim();
            if l.starts_with("key ") || l.contains("imported:") || l.contains("unchanged:") {
                report.push(format!("  {l}"));
            }
        }
    }
    Ok(report)
}

/// Install the profile's files (`(from, to, original path)`), each new
/// file private (0600); one already there with the same contents is kept.
fn install_files(
    installs: &[(PathBuf, PathBuf, String)],
    rewrites: &[(String, String)],
    report: &mut Vec<String>,
) -> Result<()> {
    for (from, to, orig) in installs {
        if to.exists() {
            report.push(format!(
                "{orig}: {} is there already (same contents)",
                to.display()
            ));
            continue;
        }
        let data = Zeroizing::new(std::fs::read(from)?);
        if let Some(d) = to.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .and_then(|mut f| f.write_all(&data))
            .with_context(|| format!("writing {}", to.display()))?;
        let note = if rewrites.iter().any(|(o, _)| o == orig) {
            " (the profile now points there)"
        } else {
            ""
        };
        report.push(format!("installed {orig} as {}{note}", to.display()));
    }
    Ok(())
}

/// The profile text with file paths replaced: in place when the result
/// parses to the intended table (comments and layout kept), else the table
/// written out anew.
fn rewrite(text: &str, table: &toml::Table, rewrites: &[(String, String)]) -> Result<String> {
    if rewrites.is_empty() {
        return Ok(text.to_string());
    }
    let mut want = table.clone();
    for key in FILE_KEYS {
        let swap = |s: &str| {
            rewrites
                .iter()
                .find(|(o, _)| o == s)
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| s.to_string())
        };
        match want.get_mut(*key) {
            Some(toml::Value::String(s)) => *s = swap(s),
            Some(toml::Value::Array(a)) => {
                for v in a.iter_mut() {
                    if let toml::Value::String(s) = v {
                        *s = swap(s);
                    }
                }
            }
            _ => {}
        }
    }
    let basic = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut t = text.to_string();
    for (orig, new) in rewrites {
        t = t.replace(&basic(orig), &basic(new));
        if !orig.contains('\'') {
            t = t.replace(&format!("'{orig}'"), &basic(new));
        }
    }
    if toml::from_str::<toml::Table>(&t).ok().as_ref() == Some(&want) {
        return Ok(t);
    }
    Ok(toml::to_string(&want)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        assert!(entry_path(b"dupr-x/profile.toml").is_some());
        assert!(entry_path(b"dupr-x/").is_some());
        assert!(entry_path(b"/etc/passwd").is_none());
        assert!(entry_path(b"dupr-x/../../etc").is_none());
        assert!(entry_path(b"other/x").is_none());
        assert!(entry_path(b"dupr-").is_none());
    }

    #[test]
    fn rewrites_keep_comments() {
        let text = "# mine\ntarget = \"file:///t\"\ninclude-filelist = [\"/a/list\", 'rel']\n";
        let table: toml::Table = toml::from_str(text).unwrap();
        let out = rewrite(
            text,
            &table,
            &[("/a/list".into(), "/c/x.files/list".into())],
        )
        .unwrap();
        assert!(out.starts_with("# mine\n"), "{out}");
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(
            strings(t.get("include-filelist")),
            vec!["/c/x.files/list".to_string(), "rel".to_string()]
        );
    }

    #[test]
    fn tar_layout() {
        let mut t = TarOut::new();
        t.dir("dupr-x");
        t.file("dupr-x/a", b"hello");
        let data = t.finish();
        assert_eq!(data.len() % tar::RECORD, 0);
        let mut r = tar::Reader::new(&data[..]);
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.name, b"dupr-x/");
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.name, b"dupr-x/a");
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert!(r.next_header().unwrap().is_none());
    }
}
