//! Finding OpenPGP keys for public-key encryption and signing.
//!
//! Public keys are read natively: from exported key files (armored or
//! binary) and from the user's GnuPG home — `pubring.kbx` (the GnuPG 2.1+
//! keybox) or the legacy `pubring.gpg`. Secret keys of a GnuPG 1 home are
//! read natively too, from its `secring.gpg`. Those of a GnuPG 2.1+ home live
//! in gpg-agent's own format (`private-keys-v1.d`), which rPGP can't read:
//! they are fetched once per run with `gpg --export-secret-keys`, the
//! passphrase fed on a pipe (never on a command line), and unlocked with
//! rPGP. gpg never sees the data itself. A home that has both (a GnuPG 1
//! keyring that gpg 2 has migrated) is served from either: `secring.gpg`
//! first, gpg-agent's copy when that one does not unlock.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pgp::composed::{Deserializable, SignedPublicKey, SignedSecretKey};
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::SignatureType;
use pgp::packet::{KeyFlags, PublicKey, PublicSubkey, SecretKey, SecretSubkey, Signature};
use pgp::types::{KeyDetails, KeyId, Password, SigningKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub use crate::error::KeyRole;

/// How a key is named: key id (8 or 16 hex digits, optionally `0x`),
/// fingerprint (40 hex digits), or a user id (substring, case-insensitive;
/// `=` prefix for an exact match), as gpg accepts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// The low-order bytes of a key id (4 or 8 bytes).
    KeyId(Vec<u8>),
    /// A full fingerprint (20 bytes, or 32 for a v6 key).
    Fingerprint(Vec<u8>),
    /// A user id substring, lower-cased for a case-insensitive match.
    UserId(String),
    /// A user id that must match exactly (given with a `=` prefix).
    ExactUserId(String),
}

impl KeySpec {
    /// How gpg would read `s`: a key id or fingerprint when it is one (`0x`,
    /// a trailing `!` and spaces allowed), else a user id.
    pub fn parse(s: &str) -> KeySpec {
        let t = s.trim();
        let h = t.strip_suffix('!').unwrap_or(t);
        let h = h
            .strip_prefix("0x")
            .or_else(|| h.strip_prefix("0X"))
            .unwrap_or(h);
        let compact: String = h.chars().filter(|c| *c != ' ').collect();
        if !compact.is_empty() && compact.chars().all(|c| c.is_ascii_hexdigit()) {
            let bytes = hex::decode(&compact).unwrap_or_default();
            match compact.len() {
                8 | 16 => return KeySpec::KeyId(bytes),
                40 | 64 => return KeySpec::Fingerprint(bytes),
                _ => {}
            }
        }
        match t.strip_prefix('=') {
            Some(exact) => KeySpec::ExactUserId(exact.to_string()),
            None => KeySpec::UserId(t.to_lowercase()),
        }
    }

    /// True when the key (its primary key or any subkey) is the one named.
    pub fn matches(&self, key: &SignedPublicKey) -> bool {
        let ids = std::iter::once((
            key.primary_key.legacy_key_id(),
            key.primary_key.fingerprint(),
        ))
        .chain(
            key.public_subkeys
                .iter()
                .map(|s| (s.key.legacy_key_id(), s.key.fingerprint())),
        );
        match self {
            KeySpec::KeyId(want) => ids.into_iter().any(|(id, _)| id.as_ref().ends_with(want)),
            KeySpec::Fingerprint(want) => ids.into_iter().any(|(_, fp)| fp.as_bytes() == want),
            KeySpec::UserId(want) => key.details.users.iter().any(|u| {
                String::from_utf8_lossy(u.id.id())
                    .to_lowercase()
                    .contains(want)
            }),
            KeySpec::ExactUserId(want) => key
                .details
                .users
                .iter()
                .any(|u| u.id.id() == want.as_bytes()),
        }
    }
}

/// Upper-case hex of a key id, as gpg prints it.
pub fn key_id_hex(id: &KeyId) -> String {
    hex::encode_upper(id.as_ref())
}

/// Upper-case hex fingerprint of a key.
pub fn fingerprint_hex(key: &SignedPublicKey) -> String {
    hex::encode_upper(key.primary_key.fingerprint().as_bytes())
}

/// The user's GnuPG home: `GNUPGHOME`, else `~/.gnupg`.
pub fn gnupg_home() -> PathBuf {
    if let Some(h) = std::env::var_os("GNUPGHOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".gnupg")
}

/// The OpenPGP keyblocks in a GnuPG keybox (`pubring.kbx`). The file is a
/// sequence of blobs: `u32 BE length, u8 type (1 header, 2 OpenPGP, 3 X.509,
/// 0 empty), u8 version, u16 flags`, and for OpenPGP blobs `u32 offset, u32
/// length` of the keyblock inside the blob.
pub fn kbx_keyblocks(data: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let be32 = |b: &[u8], at: usize| -> usize {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
    };
    if data.len() < 12 || data[4] != 1 || &data[8..12] != b"KBXf" {
        return Err("not a keybox file (no KBXf header blob)".into());
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        if data.len() - pos < 5 {
            return Err(format!("truncated blob at offset {pos}"));
        }
        let len = be32(data, pos);
        if len < 5 || len > data.len() - pos {
            return Err(format!("bad blob length {len} at offset {pos}"));
        }
        let blob = &data[pos..pos + len];
        if blob[4] == 2 {
            if len < 16 {
                return Err(format!("short OpenPGP blob at offset {pos}"));
            }
            let (off, klen) = (be32(blob, 8), be32(blob, 12));
            if off > len || klen > len - off {
                return Err(format!("keyblock outside its blob at offset {pos}"));
            }
            out.push(&blob[off..off + klen]);
        }
        pos += len;
    }
    Ok(out)
}

/// Drop GnuPG's ring trust packets (tag 12), which keyrings interleave with
/// the transferable key's packets and rPGP's key parser does not expect.
fn strip_trust_packets(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0;
    while pos < data.len() {
        let ctb = data[pos];
        if ctb & 0x80 == 0 {
            break;
        }
        let (tag, hdr, body) = if ctb & 0x40 != 0 {
            let tag = ctb & 0x3f;
            let Some(&l0) = data.get(pos + 1) else { break };
            match l0 {
                0..=191 => (tag, 2, l0 as usize),
                192..=223 => {
                    let Some(&l1) = data.get(pos + 2) else { break };
                    (tag, 3, ((l0 as usize - 192) << 8) + l1 as usize + 192)
                }
                255 => {
                    let Some(b) = data.get(pos + 2..pos + 6) else {
                        break;
                    };
                    (
                        tag,
                        6,
                        u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
                    )
                }
                // Partial lengths never occur in keyrings: keep the rest as is.
                _ => break,
            }
        } else {
            let tag = (ctb >> 2) & 0x0f;
            match ctb & 3 {
                0 => match data.get(pos + 1) {
                    Some(&l) => (tag, 2, l as usize),
                    None => break,
                },
                1 => match data.get(pos + 1..pos + 3) {
                    Some(b) => (tag, 3, u16::from_be_bytes([b[0], b[1]]) as usize),
                    None => break,
                },
                2 => match data.get(pos + 1..pos + 5) {
                    Some(b) => (
                        tag,
                        5,
                        u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
                    ),
                    None => break,
                },
                _ => break,
            }
        };
        let end = (pos + hdr).saturating_add(body).min(data.len());
        if tag != 12 {
            out.extend_from_slice(&data[pos..end]);
        }
        pos = end;
    }
    out.extend_from_slice(&data[pos..]);
    out
}

/// Every transferable public key in binary keyring data, skipping the ones
/// rPGP can't parse (unsupported algorithms and the like).
fn parse_public_keys(data: &[u8]) -> Vec<SignedPublicKey> {
    let clean = strip_trust_packets(data);
    let keys = match SignedPublicKey::from_bytes_many(&clean[..]) {
        Ok(it) => it.filter_map(|k| k.ok()).collect(),
        Err(_) => Vec::new(),
    };
    keys
}

/// Every transferable secret key in a GnuPG 1 `secring.gpg` (locked),
/// skipping the ones rPGP can't parse.
fn parse_secret_keyring(data: &[u8]) -> Vec<SignedSecretKey> {
    let clean = strip_trust_packets(data);
    let keys = match SignedSecretKey::from_bytes_many(&clean[..]) {
        Ok(it) => it.filter_map(|k| k.ok()).collect(),
        Err(_) => Vec::new(),
    };
    keys
}

/// Keys loaded from a key file: public keys, and secret keys (still locked).
fn parse_key_file(data: &[u8]) -> (Vec<SignedPublicKey>, Vec<SignedSecretKey>) {
    let secret: Vec<SignedSecretKey> = match SignedSecretKey::from_reader_many(data) {
        Ok((it, _)) => it.filter_map(|k| k.ok()).collect(),
        Err(_) => Vec::new(),
    };
    if !secret.is_empty() {
        let public = secret.iter().map(|s| s.to_public_key()).collect();
        return (public, secret);
    }
    let public = match SignedPublicKey::from_reader_many(data) {
        Ok((it, _)) => it.filter_map(|k| k.ok()).collect(),
        Err(_) => Vec::new(),
    };
    if public.is_empty() && data.first().is_some_and(|b| b & 0x80 != 0) {
        return (parse_public_keys(data), Vec::new());
    }
    (public, Vec::new())
}

/// The keys a run may use: key files first, then the GnuPG home.
#[derive(Default)]
pub struct Keyring {
    public: Vec<SignedPublicKey>,
    /// Secret keys from key files, still locked.
    secret: Vec<SignedSecretKey>,
    /// Secret keys from the GnuPG home's `secring.gpg` (GnuPG 1), locked.
    legacy_secret: Vec<SignedSecretKey>,
    /// The GnuPG home, when it is searched (its secret keys come from gpg).
    home: Option<PathBuf>,
    /// What was searched, for messages.
    searched: Vec<String>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({})", self.searched())
    }
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// What was searched, for error messages.
    pub fn searched(&self) -> String {
        if self.searched.is_empty() {
            "no keyring".into()
        } else {
            self.searched.join(", ")
        }
    }

    /// Add the keys of an exported key file (armored or binary, public or
    /// secret). Returns the public keys it holds.
    pub fn add_file(&mut self, path: &Path) -> Result<Vec<SignedPublicKey>> {
        let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (public, secret) = parse_key_file(&data);
        if public.is_empty() {
            return Err(Error::KeyFile {
                path: path.to_path_buf(),
                reason: "no OpenPGP key found in the file".into(),
            });
        }
        self.public.extend(public.iter().cloned());
        self.secret.extend(secret);
        self.searched.push(path.display().to_string());
        Ok(public)
    }

    /// Search the GnuPG home `home` too: its `pubring.kbx`, else the legacy
    /// `pubring.gpg`, and GnuPG 1's `secring.gpg` for secret keys (a missing
    /// home is an empty keyring).
    pub fn add_gnupg_home(&mut self, home: &Path) -> Result<()> {
        let kbx = home.join("pubring.kbx");
        let gpg = home.join("pubring.gpg");
        if kbx.is_file() {
            let data = std::fs::read(&kbx).map_err(|e| Error::io(&kbx, e))?;
            let blocks = kbx_keyblocks(&data).map_err(|e| Error::KeyFile {
                path: kbx.clone(),
                reason: e.to_string(),
            })?;
            for b in blocks {
                self.public.extend(parse_public_keys(b));
            }
            self.searched.push(kbx.display().to_string());
        }
        if gpg.is_file() {
            let data = std::fs::read(&gpg).map_err(|e| Error::io(&gpg, e))?;
            self.public.extend(parse_public_keys(&data));
            self.searched.push(gpg.display().to_string());
        }
        let sec = home.join("secring.gpg");
        if sec.is_file() {
            let data = std::fs::read(&sec).map_err(|e| Error::io(&sec, e))?;
            self.legacy_secret.extend(parse_secret_keyring(&data));
            self.searched.push(sec.display().to_string());
        }
        if !kbx.is_file() && !gpg.is_file() {
            self.searched.push(format!(
                "{} (no pubring.kbx or pubring.gpg)",
                home.display()
            ));
        }
        self.home = Some(home.to_path_buf());
        Ok(())
    }

    /// The public keys whose secret key this keyring can supply: from key
    /// files, from `secring.gpg`, and from gpg-agent's store (as
    /// `gpg --list-secret-keys` lists it). What gpg tries, one by one, for a
    /// file encrypted to an anonymous recipient.
    pub fn keys_with_secret(&self) -> Vec<SignedPublicKey> {
        let mut fprs: Vec<String> = self
            .secret
            .iter()
            .chain(&self.legacy_secret)
            .map(|s| fingerprint_hex(&s.to_public_key()))
            .collect();
        if let Some(home) = self
            .home
            .as_ref()
            .filter(|h| h.join("private-keys-v1.d").is_dir())
        {
            fprs.extend(gpg_secret_fingerprints(home));
        }
        let mut out: Vec<SignedPublicKey> = Vec::new();
        for f in fprs {
            if out.iter().any(|k| fingerprint_hex(k) == f) {
                continue;
            }
            let public = self
                .public
                .iter()
                .find(|k| fingerprint_hex(k) == f)
                .cloned();
            let from_secret = || {
                self.legacy_secret
                    .iter()
                    .map(|s| s.to_public_key())
                    .find(|k| fingerprint_hex(k) == f)
            };
            out.extend(public.or_else(from_secret));
        }
        out.retain(|k| encryption_key(k).is_some());
        out
    }

    /// All public keys (file keys first).
    pub fn keys(&self) -> &[SignedPublicKey] {
        &self.public
    }

    /// The first key matching `spec`.
    pub fn find(&self, spec: &KeySpec) -> Option<&SignedPublicKey> {
        self.public.iter().find(|k| spec.matches(k))
    }

    /// The key with this key id (primary or subkey).
    pub fn find_id(&self, id: &KeyId) -> Option<&SignedPublicKey> {
        self.find(&KeySpec::KeyId(id.as_ref().to_vec()))
    }

    /// Look up a key named on the command line for `role`.
    pub fn lookup(&self, name: &str, role: KeyRole) -> Result<SignedPublicKey> {
        let key = self
            .find(&KeySpec::parse(name))
            .ok_or_else(|| Error::BadKey {
                role,
                id: name.to_string(),
                reason: format!("not found in {}", self.searched()),
            })?;
        let usable = match role {
            KeyRole::Sign => can_sign(key),
            KeyRole::Encrypt | KeyRole::HiddenEncrypt => encryption_key(key).is_some(),
        };
        if !usable {
            return Err(Error::BadKey {
                role,
                id: name.to_string(),
                reason: format!(
                    "key {} has no valid {} (sub)key",
                    fingerprint_hex(key),
                    if role == KeyRole::Sign {
                        "signing"
                    } else {
                        "encryption"
                    }
                ),
            });
        }
        Ok(key.clone())
    }

    /// The secret key of `key`, unlocked with `pass`: from a key file, else
    /// from the GnuPG home (its `secring.gpg`, then gpg-agent's store through
    /// gpg), the first copy that unlocks.
    pub fn secret_for(&self, key: &SignedPublicKey, pass: Option<&[u8]>) -> Result<Secret> {
        let fpr = key.primary_key.fingerprint();
        let same = |s: &&SignedSecretKey| s.primary_key.fingerprint() == fpr;
        // The best answer so far, when no copy unlocks.
        let mut verdict = Secret::Missing;
        let consider = |mut s: SignedSecretKey, verdict: &mut Secret| match unlock(&mut s, pass) {
            Unlocked::Yes => Some(Secret::Key(Box::new(s))),
            Unlocked::NoPassphrase => {
                *verdict = Secret::NeedsPassphrase;
                None
            }
            Unlocked::Wrong => {
                *verdict = Secret::WrongPassphrase;
                None
            }
        };
        if let Some(s) = self.secret.iter().find(same).cloned() {
            // A key file named on the command line is the only source.
            return Ok(consider(s, &mut verdict).unwrap_or(verdict));
        }
        if let Some(s) = self.legacy_secret.iter().find(same).cloned() {
            if let Some(found) = consider(s, &mut verdict) {
                return Ok(found);
            }
        }
        let Some(home) = &self.home else {
            return Ok(verdict);
        };
        match gpg_export_secret(home, &fingerprint_hex(key), pass) {
            Ok(Exported::Key(k)) => Ok(consider(*k, &mut verdict).unwrap_or(verdict)),
            Ok(Exported::None) => Ok(verdict),
            Ok(Exported::Locked) if pass.is_none() => Ok(Secret::NeedsPassphrase),
            Ok(Exported::Locked) => Ok(Secret::WrongPassphrase),
            // gpg is not needed when secring.gpg had the key.
            Err(_) if !matches!(verdict, Secret::Missing) => Ok(verdict),
            Err(e) => Err(e),
        }
    }
}

/// What looking up a secret key found.
pub enum Secret {
    /// Found and unlocked.
    Key(Box<SignedSecretKey>),
    /// Not in any keyring searched.
    Missing,
    /// Protected by a passphrase, and none was given.
    NeedsPassphrase,
    /// Protected by a passphrase other than the one given.
    WrongPassphrase,
}

enum Exported {
    Key(Box<SignedSecretKey>),
    None,
    /// gpg needs the key's passphrase (none given, or a wrong one).
    Locked,
}

/// Fetch a secret key from gpg-agent's store with `gpg --export-secret-keys`
/// (the passphrase goes down a pipe).
fn gpg_export_secret(home: &Path, fpr: &str, pass: Option<&[u8]>) -> Result<Exported> {
    let mut child = Command::new("gpg")
        .env("GNUPGHOME", home)
        .env("LC_ALL", "C")
        .env("LANGUAGE", "C")
        .args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--export-secret-keys",
            fpr,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Gpg(format!(
                "cannot run gpg to fetch the secret key {fpr} from {}: {e}",
                home.display()
            ))
        })?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        // gpg reads one line; a passphrase with a newline can't be fed this way.
        let _ = stdin.write_all(pass.unwrap_or_default());
        let _ = stdin.write_all(b"\n");
    }
    let mut stdout = Zeroizing::new(Vec::new());
    let mut stderr = Vec::new();
    let (mut o, mut e) = (
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let t = std::thread::spawn(move || {
        let _ = e.read_to_end(&mut stderr);
        stderr
    });
    let _ = o.read_to_end(&mut stdout);
    let stderr = t.join().unwrap_or_default();
    let status = child.wait().map_err(|e| Error::Gpg(format!("gpg: {e}")))?;
    let err = String::from_utf8_lossy(&stderr);
    if err.contains("Bad passphrase") || err.contains("bad passphrase") {
        return Ok(Exported::Locked);
    }
    if !status.success() && stdout.is_empty() {
        let msg = err.lines().last().unwrap_or("").trim().to_string();
        if err.contains("No passphrase") || err.contains("No pinentry") {
            return Ok(Exported::Locked);
        }
        return Err(Error::Gpg(format!(
            "gpg --export-secret-keys {fpr} failed ({status}): {msg}"
        )));
    }
    let (_, secret) = parse_key_file(&stdout);
    Ok(secret
        .into_iter()
        .next()
        .map_or(Exported::None, |k| Exported::Key(Box::new(k))))
}

/// Fingerprints (hex, as [`fingerprint_hex`]) of the primary keys
/// gpg-agent holds secrets for in `home`; none if gpg cannot say.
fn gpg_secret_fingerprints(home: &Path) -> Vec<String> {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .env("LC_ALL", "C")
        .args(["--batch", "--no-tty", "--with-colons", "--list-secret-keys"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fprs = Vec::new();
    let mut want = false;
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        match f[0] {
            "sec" => want = true,
            "fpr" if want => {
                if let Some(fpr) = f.get(9) {
                    fprs.push(fpr.to_ascii_uppercase());
                }
                want = false;
            }
            _ => {}
        }
    }
    fprs
}

/// Whether [`unlock`] opened a key.
pub enum Unlocked {
    /// The key is usable: nothing was locked, or some part unlocked.
    Yes,
    /// The key is locked and no passphrase was given.
    NoPassphrase,
    /// The passphrase given unlocks no part of the key.
    Wrong,
}

/// Remove the passphrase protection of a secret key in memory (all its
/// packets that carry key material). Keys held offline by gpg (stubs) are
/// left alone as long as some part unlocks.
pub fn unlock(key: &mut SignedSecretKey, pass: Option<&[u8]>) -> Unlocked {
    let pw = Password::from(pass.unwrap_or_default());
    let mut locked = 0;
    let mut opened = 0;
    let mut failed = 0;
    if key.primary_key.secret_params().is_encrypted() {
        locked += 1;
        match key.primary_key.remove_password(&pw) {
            Ok(()) => opened += 1,
            Err(_) => failed += 1,
        }
    }
    for s in key.secret_subkeys.iter_mut() {
        if s.key.secret_params().is_encrypted() {
            locked += 1;
            match s.key.remove_password(&pw) {
                Ok(()) => opened += 1,
                Err(_) => failed += 1,
            }
        }
    }
    match (locked > 0 && opened == 0 && failed > 0, pass) {
        (false, _) => Unlocked::Yes,
        (true, None) => Unlocked::NoPassphrase,
        (true, Some(_)) => Unlocked::Wrong,
    }
}

fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A subkey's binding state: its key flags, or `None` when revoked or expired.
fn subkey_flags(created: u32, sigs: &[Signature]) -> Option<KeyFlags> {
    if sigs
        .iter()
        .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
    {
        return None;
    }
    let b = newest(
        sigs.iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding)),
    )?;
    if let Some(exp) = b.key_expiration_time() {
        if exp.as_secs() > 0 && created as u64 + exp.as_secs() as u64 <= now_secs() {
            return None;
        }
    }
    Some(b.key_flags())
}

fn has_flags(f: &KeyFlags) -> bool {
    f.sign() || f.certify() || f.encrypt_comms() || f.encrypt_storage() || f.authentication()
}

/// The primary key's flags from its newest self-signature, or `None` when
/// it is revoked or expired.
fn primary_flags(key: &SignedPublicKey) -> Option<KeyFlags> {
    if !key.details.revocation_signatures.is_empty() {
        return None;
    }
    let own = key.primary_key.legacy_key_id();
    let selfsig = newest(
        key.details
            .users
            .iter()
            .flat_map(|u| u.signatures.iter())
            .chain(key.details.direct_signatures.iter())
            .filter(|s| s.issuer_key_id().iter().all(|i| **i == own)),
    );
    if let Some(exp) = selfsig.and_then(|s| s.key_expiration_time()) {
        let created = key.primary_key.created_at().as_secs() as u64;
        if exp.as_secs() > 0 && created + exp.as_secs() as u64 <= now_secs() {
            return None;
        }
    }
    Some(selfsig.map(|s| s.key_flags()).unwrap_or_default())
}

/// A public key to encrypt session keys to.
#[derive(Clone, Debug)]
pub enum EncryptionKey {
    /// The primary key encrypts.
    Primary(PublicKey),
    /// An encryption subkey encrypts.
    Subkey(PublicSubkey),
}

impl EncryptionKey {
    /// The legacy (8-byte) key id of the key that encrypts.
    pub fn key_id(&self) -> KeyId {
        match self {
            EncryptionKey::Primary(k) => k.legacy_key_id(),
            EncryptionKey::Subkey(k) => k.legacy_key_id(),
        }
    }
}

/// The key gpg would encrypt to: the newest valid encryption subkey, else
/// the primary key if it may encrypt.
pub fn encryption_key(key: &SignedPublicKey) -> Option<EncryptionKey> {
    let primary = primary_flags(key)?;
    let sub = key
        .public_subkeys
        .iter()
        .filter(|s| {
            subkey_flags(s.key.created_at().as_secs(), &s.signatures)
                .is_some_and(|f| f.encrypt_comms() || f.encrypt_storage())
        })
        .max_by_key(|s| s.key.created_at().as_secs());
    if let Some(s) = sub {
        return Some(EncryptionKey::Subkey(s.key.clone()));
    }
    let can = if has_flags(&primary) {
        primary.encrypt_comms() || primary.encrypt_storage()
    } else {
        matches!(
            key.primary_key.algorithm(),
            PublicKeyAlgorithm::RSA | PublicKeyAlgorithm::RSAEncrypt
        )
    };
    can.then(|| EncryptionKey::Primary(key.primary_key.clone()))
}

fn can_sign(key: &SignedPublicKey) -> bool {
    let Some(primary) = primary_flags(key) else {
        return false;
    };
    let sub = key.public_subkeys.iter().any(|s| {
        subkey_flags(s.key.created_at().as_secs(), &s.signatures).is_some_and(|f| f.sign())
    });
    sub || !has_flags(&primary) || primary.sign()
}

/// A secret key to sign with.
#[derive(Clone, Debug)]
pub enum SignKey {
    /// The primary key signs.
    Primary(SecretKey),
    /// A signing subkey signs.
    Subkey(SecretSubkey),
}

impl SignKey {
    /// The key as rPGP's signer.
    pub fn as_signer(&self) -> &dyn SigningKey {
        match self {
            SignKey::Primary(k) => k,
            SignKey::Subkey(k) => k,
        }
    }

    /// The public-key algorithm of the key that signs.
    pub fn algorithm(&self) -> PublicKeyAlgorithm {
        match self {
            SignKey::Primary(k) => k.algorithm(),
            SignKey::Subkey(k) => k.algorithm(),
        }
    }
}

/// The key gpg would sign with: the newest valid signing subkey whose
/// secret is present, else the primary key.
pub fn signing_key(key: &SignedSecretKey) -> Option<SignKey> {
    let public = key.to_public_key();
    let primary = primary_flags(&public)?;
    let sub = key
        .secret_subkeys
        .iter()
        .filter(|s| !s.key.secret_params().is_encrypted())
        .filter(|s| {
            subkey_flags(s.key.created_at().as_secs(), &s.signatures).is_some_and(|f| f.sign())
        })
        .max_by_key(|s| s.key.created_at().as_secs());
    if let Some(s) = sub {
        return Some(SignKey::Subkey(s.key.clone()));
    }
    let ok =
        (!has_flags(&primary) || primary.sign()) && !key.primary_key.secret_params().is_encrypted();
    ok.then(|| SignKey::Primary(key.primary_key.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs() {
        assert_eq!(
            KeySpec::parse("0x9DF5519E98E58503"),
            KeySpec::KeyId(hex::decode("9DF5519E98E58503").unwrap())
        );
        assert_eq!(
            KeySpec::parse("98e58503"),
            KeySpec::KeyId(hex::decode("98e58503").unwrap())
        );
        assert!(matches!(
            KeySpec::parse("2F537F29C9F73785CED89AF39DF5519E98E58503"),
            KeySpec::Fingerprint(f) if f.len() == 20
        ));
        assert!(matches!(
            KeySpec::parse("2F53 7F29 C9F7 3785 CED8  9AF3 9DF5 519E 98E5 8503"),
            KeySpec::Fingerprint(f) if f.len() == 20
        ));
        assert_eq!(
            KeySpec::parse("Test <T@example.org>"),
            KeySpec::UserId("test <t@example.org>".into())
        );
        assert_eq!(KeySpec::parse("=Ed"), KeySpec::ExactUserId("Ed".into()));
        assert_eq!(
            KeySpec::parse("deadbeefcafe"),
            KeySpec::UserId("deadbeefcafe".into())
        );
    }

    #[test]
    fn keybox_blobs() {
        let mut kbx = Vec::new();
        // Header blob: 32 bytes, type 1, version 1, flags, "KBXf".
        let mut header = vec![0u8; 32];
        header[..4].copy_from_slice(&32u32.to_be_bytes());
        header[4] = 1;
        header[5] = 1;
        header[8..12].copy_from_slice(b"KBXf");
        kbx.extend_from_slice(&header);
        // OpenPGP blob with a 3-byte keyblock at offset 20.
        let mut blob = vec![0u8; 24];
        blob[..4].copy_from_slice(&24u32.to_be_bytes());
        blob[4] = 2;
        blob[5] = 1;
        blob[8..12].copy_from_slice(&20u32.to_be_bytes());
        blob[12..16].copy_from_slice(&3u32.to_be_bytes());
        blob[20..23].copy_from_slice(b"abc");
        kbx.extend_from_slice(&blob);
        // An empty (deleted) blob.
        let mut empty = vec![0u8; 8];
        empty[..4].copy_from_slice(&8u32.to_be_bytes());
        kbx.extend_from_slice(&empty);
        assert_eq!(kbx_keyblocks(&kbx).unwrap(), vec![&b"abc"[..]]);
        assert!(kbx_keyblocks(b"not a keybox at all").is_err());
        let mut bad = kbx.clone();
        bad[32..36].copy_from_slice(&999u32.to_be_bytes());
        assert!(kbx_keyblocks(&bad).is_err());
    }

    #[test]
    fn trust_packets_are_dropped() {
        // old-format tag 6 (len 2), tag 12 (len 2), new-format tag 13 (len 1)
        let data = [0x98, 2, 1, 2, 0xb0, 2, 9, 9, 0xcd, 1, 7];
        assert_eq!(strip_trust_packets(&data), vec![0x98, 2, 1, 2, 0xcd, 1, 7]);
    }
}
