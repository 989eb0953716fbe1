//! The compression/encryption layer between tar bytes and stored files.
//! Every stored byte passes a counter (volume boundaries are measured on
//! stored size, as duplicity does) and a SHA-1 (the manifest's hash).
//!
//! OpenPGP is rPGP (pure Rust, permissive, fastest in our measurements).
//! Its encoder pulls from a reader, so encryption runs on its own thread fed
//! through a channel; that also puts it on the second core.
//! Symmetric messages carry an SKESK without an encrypted session key (as
//! gpg writes them): the S2K-derived key is the session key, derived once
//! per run and shared by every file of the run, so the deliberately slow
//! S2K is paid once rather than per volume.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pgp::composed::{DecryptionOptions, Esk, SignedPublicKey, SignedSecretKey};
use pgp::composed::{Message, MessageBuilder, PlainSessionKey, RawSessionKey, TheRing};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
pub use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::ser::Serialize;
use pgp::types::{
    CompressionAlgorithm, KeyDetails, KeyId, Password, Seipdv1ReadMode, StringToKey, VerifyingKey,
};
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use crate::error::{Error, IoContext, Result};
use crate::stream::Format;

mod s2k;

/// Deflate level for gzip volumes and OpenPGP compression. Data that does not
/// compress is stored instead (see `stream`), so the level only costs time
/// on compressible data.
pub const DEFAULT_LEVEL: u32 = 3;
/// Deflate level of incremental sets' volumes when none is given: they are
/// small (what changed in minutes or hours), so their bytes on the wire
/// matter more than their CPU.
/// 7, not 9: zlib-rs's level 9 makes text volumes bigger than its level 6
/// (measured on the bench tree's incremental: 6 796,615, 7 791,973, 8
/// 788,808 at three times 6's CPU, 9 841,222 bytes).
pub const INCREMENTAL_LEVEL: u32 = 7;
/// Deflate level of incremental sets' signature tars and manifests (when no
/// level is given): signatures are mostly checksums, where level 9 gains
/// and costs little on the few MB an incremental writes.
pub const INCREMENTAL_SIDE_LEVEL: u32 = 9;

/// What `--gpg-options` and `--compress-level` can change about written
/// OpenPGP messages.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Deflate level, 0 to 9, of written files.
    pub level: u32,
    /// The level was chosen (`--compress-level`, `-z`), not dupr's default.
    pub level_given: bool,
    /// Compress written data (off with `--no-compression` or
    /// `--compress-algo none`); unencrypted backups then store plain tars.
    pub compress: bool,
    /// The symmetric cipher of written messages (`--cipher-algo`).
    pub cipher: SymmetricKeyAlgorithm,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            level: DEFAULT_LEVEL,
            level_given: false,
            compress: true,
            cipher: SymmetricKeyAlgorithm::AES256,
        }
    }
}
use crate::keys::{self, EncryptionKey, KeyRole, Keyring, SignKey};

/// Public-key settings of a run, as named on the command line.
#[derive(Default)]
pub struct PublicKeyOptions {
    /// `--encrypt-key` (and `--encrypt-sign-key`) ids.
    pub encrypt: Vec<String>,
    /// `--hidden-encrypt-key` ids.
    pub hidden: Vec<String>,
    /// `--sign-key` (or `--encrypt-sign-key`) id.
    pub sign: Option<String>,
    /// Exported key files whose keys are all recipients (a secret key file
    /// also decrypts).
    pub encrypt_files: Vec<PathBuf>,
    /// Exported key file holding the sign key (secret for signing, public
    /// is enough for verifying).
    pub sign_file: Option<PathBuf>,
    /// `PASSPHRASE`: the secret keys' passphrase (and the symmetric one).
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    /// `SIGN_PASSPHRASE`.
    pub sign_passphrase: Option<Zeroizing<Vec<u8>>>,
    /// The GnuPG home to search (default: `GNUPGHOME` or `~/.gnupg`).
    pub gnupg_home: Option<PathBuf>,
    /// New encrypted files will be written (a backup): the sign key's secret
    /// is needed now. Otherwise the recipients' secret keys are.
    pub writing: bool,
    /// Compress the data of written messages (off with `--no-compression`).
    pub compress: bool,
}

impl PublicKeyOptions {
    /// Whether any public-key option is set.
    pub fn any(&self) -> bool {
        !self.encrypt.is_empty()
            || !self.hidden.is_empty()
            || self.sign.is_some()
            || !self.encrypt_files.is_empty()
            || self.sign_file.is_some()
    }
}

/// Passphrase packets (SKESKs) of one message a key is derived for.
const MAX_SKESK_TRIES: usize = 4;

/// The OpenPGP settings of one run, shared by every file.
struct Shared {
    /// `PASSPHRASE`: symmetric encryption, and the secret keys' passphrase.
    passphrase: Option<Zeroizing<Vec<u8>>>,
    s2k: StringToKey,
    sym_alg: SymmetricKeyAlgorithm,
    /// Derived on first use: reading unencrypted archives never pays the S2K.
    /// The S2K and key new files are written with: `s2k` derived on first
    /// use, or adopted from the chain's existing files, so a run pays the
    /// deliberately slow derivation once rather than once per salt.
    own: std::sync::OnceLock<(StringToKey, RawSessionKey)>,
    /// Held while `own` is being derived, so a file written while the
    /// previous manifest's key is derived on another thread waits for that
    /// key instead of deriving a second one.
    deriving: Mutex<()>,
    compression: Option<CompressionAlgorithm>,
    /// Deflate level of written files.
    level: u32,
    /// Session keys derived while decrypting, by serialized SKESK.
    derived: Mutex<HashMap<Vec<u8>, PlainSessionKey>>,
    /// Key derivations made for SKESKs read (bounded per message).
    derivations: std::sync::atomic::AtomicUsize,
    /// Public-key encryption when not empty: (key, hidden recipient).
    recipients: Vec<(EncryptionKey, bool)>,
    /// Sign every written file with this (unlocked) key.
    signer: Option<SignKey>,
    /// Difftar volumes read must carry a good signature by this key.
    verifier: Option<(String, SignedPublicKey)>,
    /// Where secret keys are looked up; loaded on first need when `None`.
    keyring: Mutex<Option<Keyring>>,
    /// Unlocked secret keys for decryption.
    secrets: Mutex<Vec<Arc<SignedSecretKey>>>,
    /// Primary fingerprints whose secret key was already sought, with why
    /// it could not be used (None: unlocked).
    tried: Mutex<HashMap<Vec<u8>, Option<String>>>,
    /// The recipients named on the command line: tried, on first need, for
    /// files whose recipient is hidden (wildcard key id).
    candidates: Vec<SignedPublicKey>,
}

/// OpenPGP settings of a run; a handle made by [`Codec::for_name`] also
/// knows which stored file it reads.
pub struct Crypto {
    shared: Arc<Shared>,
    file: Option<String>,
    /// Deflate level of files this handle writes, when not the run's.
    level: Option<u32>,
}

impl fmt::Debug for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Crypto { .. }")
    }
}

impl Crypto {
    /// Derive this run's key from `passphrase` (iterated + salted SHA-256,
    /// the maximum count gpg uses, AES-256).
    pub fn symmetric(passphrase: Zeroizing<Vec<u8>>, compress: bool) -> Result<Arc<Crypto>> {
        Ok(Arc::new(Crypto {
            shared: Arc::new(Shared::new(Some(passphrase), compress)),
            file: None,
            level: None,
        }))
    }

    /// No passphrase and no key named: reads files encrypted to a public
    /// key whose secret key is in the GnuPG home (the PKESK names it, as
    /// gpg finds it), and says what is missing for any other file.
    pub fn keyring_only() -> Arc<Crypto> {
        Arc::new(Crypto {
            shared: Arc::new(Shared::new(None, true)),
            file: None,
            level: None,
        })
    }

    /// Apply `--gpg-options` / `--compress-level` to a fresh handle.
    pub fn tuned(mut c: Arc<Crypto>, t: &Tuning) -> Arc<Crypto> {
        if let Some(sh) = Arc::get_mut(&mut c).and_then(|c| Arc::get_mut(&mut c.shared)) {
            sh.level = t.level.min(9);
            sh.compression = t.compress.then_some(CompressionAlgorithm::ZLIB);
            sh.sym_alg = t.cipher;
        }
        c
    }

    /// Public-key encryption and/or signing (duplicity's `--encrypt-key`,
    /// `--hidden-encrypt-key`, `--sign-key`). Keys are looked up now: an
    /// unknown key, or a sign key that cannot sign, fails here, before
    /// anything is read or written. Secret keys for decryption are unlocked
    /// only when a file must be decrypted: as with duplicity, backups,
    /// listings, status and retention of a public-key archive work from the
    /// cache with the public keys alone.
    pub fn public(opts: PublicKeyOptions) -> Result<Arc<Crypto>> {
        let mut ring = Keyring::new();
        let mut recipients: Vec<(SignedPublicKey, bool)> = Vec::new();
        let add = |k: SignedPublicKey, hidden: bool, list: &mut Vec<(SignedPublicKey, bool)>| {
            let fpr = k.primary_key.fingerprint();
            match list
                .iter_mut()
                .find(|(r, _)| r.primary_key.fingerprint() == fpr)
            {
                Some(r) => r.1 &= hidden,
                None => list.push((k, hidden)),
            }
        };
        for f in &opts.encrypt_files {
            for k in ring.add_file(f)? {
                if keys::encryption_key(&k).is_none() {
                    return Err(Error::BadKey {
                        role: KeyRole::Encrypt,
                        id: f.display().to_string(),
                        reason: format!(
                            "key {} has no valid encryption (sub)key",
                            keys::fingerprint_hex(&k)
                        ),
                    });
                }
                add(k, false, &mut recipients);
            }
        }
        let sign_file_key = match &opts.sign_file {
            Some(f) => ring.add_file(f)?.into_iter().next(),
            None => None,
        };
        ring.add_gnupg_home(&opts.gnupg_home.clone().unwrap_or_else(keys::gnupg_home))?;
        for id in &opts.encrypt {
            add(ring.lookup(id, KeyRole::Encrypt)?, false, &mut recipients);
        }
        for id in &opts.hidden {
            add(
                ring.lookup(id, KeyRole::HiddenEncrypt)?,
                true,
                &mut recipients,
            );
        }
        let sign_key = match (&opts.sign, sign_file_key) {
            (Some(id), _) => Some((id.clone(), ring.lookup(id, KeyRole::Sign)?)),
            (None, Some(k)) => Some((keys::fingerprint_hex(&k), k)),
            (None, None) => None,
        };
        let sign_is_recipient = sign_key.as_ref().is_some_and(|(_, s)| {
            recipients
                .iter()
                .any(|(r, _)| r.primary_key.fingerprint() == s.primary_key.fingerprint())
        });
        // One passphrase stands in for the other when the sign key is also
        // a recipient (duplicity's rule); with symmetric encryption gpg gets
        // only one passphrase, so PASSPHRASE signs too.
        let pass = match (&opts.passphrase, &opts.sign_passphrase) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(sp)) if sign_is_recipient => Some(sp.clone()),
            _ => None,
        };
        let sign_pass = match (&opts.sign_passphrase, &opts.passphrase) {
            (Some(sp), _) => Some(sp.clone()),
            (None, Some(p)) if sign_is_recipient || recipients.is_empty() => Some(p.clone()),
            _ => None,
        };
        if recipients.is_empty() && pass.is_none() && opts.writing {
            return Err(Error::NoPassphrase {
                subject: "no passphrase for symmetric encryption".into(),
                hint: ", or name a recipient with --encrypt-key",
            });
        }
        let mut shared = Shared::new(pass, opts.compress);
        for (k, hidden) in &recipients {
            let enc = keys::encryption_key(k).ok_or_else(|| Error::BadKey {
                role: if *hidden {
                    KeyRole::HiddenEncrypt
                } else {
                    KeyRole::Encrypt
                },
                id: keys::fingerprint_hex(k),
                reason: "no valid encryption (sub)key".into(),
            })?;
            shared.recipients.push((enc, *hidden));
        }
        if let Some((id, pk)) = &sign_key {
            if opts.writing {
                let pass = sign_pass.as_ref().map(|p| p.as_slice());
                let var = if sign_is_recipient || recipients.is_empty() {
                    "SIGN_PASSPHRASE (or PASSPHRASE)"
                } else {
                    "SIGN_PASSPHRASE"
                };
                let fpr = keys::fingerprint_hex(pk);
                let sec = match ring.secret_for(pk, pass)? {
                    keys::Secret::Key(s) => *s,
                    keys::Secret::Missing => {
                        return Err(Error::BadKey {
                            role: KeyRole::Sign,
                            id: id.clone(),
                            reason: format!("no secret key for {fpr} in {}", ring.searched()),
                        })
                    }
                    keys::Secret::NeedsPassphrase => {
                        return Err(Error::SecretKey(format!(
                            "signing needs the passphrase of the sign key {id} ({fpr}): set {var}"
                        )))
                    }
                    keys::Secret::WrongPassphrase => {
                        return Err(Error::SecretKey(format!(
                        "wrong passphrase for the sign key {id} ({fpr}): {var} does not unlock it"
                    )))
                    }
                };
                shared.signer = Some(keys::signing_key(&sec).ok_or_else(|| Error::BadKey {
                    role: KeyRole::Sign,
                    id: id.clone(),
                    reason: "no usable signing (sub)key with its secret".into(),
                })?);
            }
            shared.verifier = Some((id.clone(), pk.clone()));
        }
        shared.candidates = recipients.into_iter().map(|(k, _)| k).collect();
        *shared.keyring.get_mut().expect("fresh") = Some(ring);
        Ok(Arc::new(Crypto {
            shared: Arc::new(shared),
            file: None,
            level: None,
        }))
    }

    /// A handle for reading the stored file `name`.
    fn for_file(&self, name: &str) -> Crypto {
        Crypto {
            shared: self.shared.clone(),
            file: Some(name.to_string()),
            level: self.level,
        }
    }

    /// The cipher and session key of a symmetric message whose
    /// session-key packets are `head` (to read a seekable volume from any
    /// block, see `blocks`); None when no SKESK in it is for our passphrase.
    /// With an SKESK that carries no encrypted key any passphrase yields a
    /// key: callers confirm it with [`crate::blocks::check_key`].
    pub fn session_key_of(&self, head: &[u8]) -> Result<Option<(u8, Zeroizing<Vec<u8>>)>> {
        let esk: Vec<Esk> = pgp::packet::PacketParser::new(head)
            .filter_map(|p| match p {
                Ok(pgp::packet::Packet::SymKeyEncryptedSessionKey(k)) => {
                    Some(Esk::SymKeyEncryptedSessionKey(k))
                }
                _ => None,
            })
            .collect();
        Ok(match &self.shared.session_key_for(&esk)? {
            Some(PlainSessionKey::V3_4 { sym_alg, key }) => {
                Some((u8::from(*sym_alg), Zeroizing::new(key.as_ref().to_vec())))
            }
            _ => None,
        })
    }

    /// Whether written files are encrypted to public keys.
    pub fn is_public_key(&self) -> bool {
        !self.shared.recipients.is_empty()
    }
}

impl Shared {
    fn new(passphrase: Option<Zeroizing<Vec<u8>>>, compress: bool) -> Shared {
        Shared {
            passphrase,
            s2k: StringToKey::new_iterated(rand::thread_rng(), HashAlgorithm::Sha256, 255),
            sym_alg: SymmetricKeyAlgorithm::AES256,
            own: std::sync::OnceLock::new(),
            deriving: Mutex::new(()),
            compression: compress.then_some(CompressionAlgorithm::ZLIB),
            level: DEFAULT_LEVEL,
            derived: Mutex::new(HashMap::new()),
            derivations: Default::default(),
            recipients: Vec::new(),
            signer: None,
            verifier: None,
            keyring: Mutex::new(None),
            secrets: Mutex::new(Vec::new()),
            tried: Mutex::new(HashMap::new()),
            candidates: Vec::new(),
        }
    }

    fn own(&self) -> Result<&(StringToKey, RawSessionKey)> {
        if let Some(o) = self.own.get() {
            return Ok(o);
        }
        let pass = self
            .passphrase
            .as_ref()
            .ok_or_else(|| Error::NoPassphrase {
                subject: "no passphrase for symmetric encryption".into(),
                hint: "",
            })?;
        self.own_from(&self.s2k, pass, self.sym_alg.key_size())
            .map_err(|e| Error::KeyDerivation(e.to_string()))
    }

    /// This run's key: the one already set, else `s2k`'s, derived now and
    /// kept. Derived under `deriving`, so two threads never derive it both.
    fn own_from(
        &self,
        s2k: &StringToKey,
        pass: &[u8],
        key_size: usize,
    ) -> pgp::errors::Result<&(StringToKey, RawSessionKey)> {
        let _deriving = self.deriving.lock().expect("poisoned");
        if let Some(o) = self.own.get() {
            return Ok(o);
        }
        let key = s2k::derive(s2k, pass, key_size)?;
        Ok(self.own.get_or_init(|| (s2k.clone(), key)))
    }

    fn key(&self) -> Result<RawSessionKey> {
        Ok(self.own()?.1.clone())
    }

    /// The SKESK v4 packet (no encrypted session key) every message starts with.
    fn skesk(&self) -> Vec<u8> {
        let mut body = vec![4u8, u8::from(self.sym_alg)];
        let s2k = self.own().map(|o| &o.0).unwrap_or(&self.s2k);
        s2k.to_writer(&mut body).expect("writing to a Vec");
        let mut p = vec![0xC0 | 3, body.len() as u8];
        p.extend_from_slice(&body);
        p
    }

    /// Open an SKESK with the passphrase. A strong iterated S2K with no
    /// encrypted session key, in our cipher, becomes the key this run writes
    /// with when it has none yet (one derivation for reading the chain and
    /// writing the new set; every message still gets a fresh CFB prefix).
    /// It is derived under `deriving`, so a writer waits for it.
    fn open_skesk(
        &self,
        k: &pgp::packet::SymKeyEncryptedSessionKey,
        pass: &[u8],
    ) -> pgp::errors::Result<PlainSessionKey> {
        // Anything but a v4 SKESK with a cipher goes to rPGP as it is.
        let v4 = k.version() == pgp::types::SkeskVersion::V4;
        let (alg, s2k_spec, esk) = match (k.sym_algorithm(), k.s2k(), k.encrypted_key()) {
            (Some(alg), Some(s), Some(esk)) if v4 && alg != SymmetricKeyAlgorithm::Plaintext => {
                (alg, s, esk)
            }
            _ => return pgp::composed::decrypt_session_key_with_password(k, &Password::from(pass)),
        };
        let strong = matches!(
            s2k_spec,
            StringToKey::IteratedAndSalted { count, .. } if *count >= 192
        );
        if strong && esk.is_empty() && alg == self.sym_alg && self.own.get().is_none() {
            let o = self.own_from(s2k_spec, pass, alg.key_size())?;
            if &o.0 == s2k_spec {
                return Ok(PlainSessionKey::V3_4 {
                    sym_alg: alg,
                    key: o.1.clone(),
                });
            }
        }
        let key = s2k::derive(s2k_spec, pass, alg.key_size())?;
        if esk.is_empty() {
            // No encrypted session key: the derived key is the session key.
            return Ok(PlainSessionKey::V3_4 { sym_alg: alg, key });
        }
        k.decrypt(key.as_ref())
    }

    /// A session key for an SKESK: ours without derivation, others derived
    /// once and remembered (gpg salts each file differently).
    fn session_key_for(&self, esk: &[Esk]) -> Result<Option<PlainSessionKey>> {
        let Some(passphrase) = &self.passphrase else {
            return Ok(None);
        };
        // Each SKESK of a hostile file could cost a full derivation (gpg's
        // strongest S2K hashes 65 MB): a few are tried, never all. Files
        // from dupr, duplicity and gpg carry one per passphrase.
        let mut tries = 0;
        for e in esk {
            let Esk::SymKeyEncryptedSessionKey(k) = e else {
                continue;
            };
            let mut id = Vec::new();
            let _ = k.to_writer(&mut id);
            if let Some(sk) = self.derived.lock().expect("poisoned").get(&id) {
                return Ok(Some(sk.clone()));
            }
            let empty_esk = k.encrypted_key().is_none_or(|b| b.is_empty());
            let ours = self.own.get().is_some_and(|o| k.s2k() == Some(&o.0));
            let sk = if empty_esk && ours && k.sym_algorithm() == Some(self.sym_alg) {
                PlainSessionKey::V3_4 {
                    sym_alg: self.sym_alg,
                    key: self.key()?,
                }
            } else {
                if tries == MAX_SKESK_TRIES {
                    tracing::warn!(
                        "more than {MAX_SKESK_TRIES} passphrase packets in one file: the rest are not tried"
                    );
                    break;
                }
                tries += 1;
                self.derivations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match self.open_skesk(k, passphrase) {
                    Ok(sk) => sk,
                    Err(_) => continue,
                }
            };
            self.derived
                .lock()
                .expect("poisoned")
                .insert(id, sk.clone());
            return Ok(Some(sk));
        }
        Ok(None)
    }

    /// Unlocked secret keys for the PKESK recipients `ids` of the stored
    /// file `what` (a wildcard id matches every key we hold, and the
    /// recipients named on the command line). Missing ones are looked up in
    /// the keyring (the GnuPG home by default) once. When none can be used,
    /// the error says why for each key: no secret key, or its passphrase
    /// (`PASSPHRASE`) not set or wrong.
    fn secrets_for(&self, ids: &[KeyId], what: &str) -> Result<Vec<Arc<SignedSecretKey>>> {
        let holds = |s: &SignedSecretKey, id: &KeyId| {
            id.is_wildcard()
                || s.primary_key.legacy_key_id() == *id
                || s.secret_subkeys
                    .iter()
                    .any(|k| k.key.legacy_key_id() == *id)
        };
        let find = |v: &[Arc<SignedSecretKey>]| -> Vec<Arc<SignedSecretKey>> {
            v.iter()
                .filter(|s| ids.iter().any(|id| holds(s, id)))
                .cloned()
                .collect()
        };
        let found = find(&self.secrets.lock().expect("poisoned"));
        if !found.is_empty() {
            return Ok(found);
        }
        let mut ring = self.keyring.lock().expect("poisoned");
        if ring.is_none() {
            let mut r = Keyring::new();
            r.add_gnupg_home(&keys::gnupg_home())?;
            *ring = Some(r);
        }
        let ring = ring.as_ref().expect("loaded");
        // An anonymous recipient and no key named: every secret key at
        // hand, one by one, as gpg tries them.
        let at_hand = if self.candidates.is_empty() && ids.iter().any(|id| id.is_wildcard()) {
            ring.keys_with_secret()
        } else {
            Vec::new()
        };
        // The keys to try, each with the id the file names it by.
        let mut wanted: Vec<(String, &SignedPublicKey)> = Vec::new();
        for id in ids {
            if id.is_wildcard() {
                for k in self.candidates.iter().chain(&at_hand) {
                    wanted.push((keys::fingerprint_hex(k), k));
                }
            } else if let Some(pk) = ring.find_id(id) {
                wanted.push((keys::key_id_hex(id), pk));
            }
        }
        let mut reasons = Vec::new();
        for (name, pk) in &wanted {
            let fpr = pk.primary_key.fingerprint().as_bytes().to_vec();
            let known = self.tried.lock().expect("poisoned").get(&fpr).cloned();
            let reason = match known {
                Some(r) => r,
                None => {
                    let pass = self.passphrase.as_ref().map(|p| p.as_slice());
                    let full = keys::fingerprint_hex(pk);
                    let r = match ring.secret_for(pk, pass)? {
                        keys::Secret::Key(s) => {
                            self.secrets.lock().expect("poisoned").push(Arc::new(*s));
                            None
                        }
                        keys::Secret::Missing => Some(format!(
                            "no secret key for key {name} ({full}) was found in {}",
                            ring.searched()
                        )),
                        keys::Secret::NeedsPassphrase => Some(format!(
                            "the secret key {name} ({full}) is protected by a passphrase: set PASSPHRASE to it"
                        )),
                        keys::Secret::WrongPassphrase => Some(format!(
                            "wrong passphrase for the secret key {name} ({full}): PASSPHRASE does not unlock it"
                        )),
                    };
                    self.tried.lock().expect("poisoned").insert(fpr, r.clone());
                    r
                }
            };
            if let Some(r) = reason {
                if !reasons.contains(&r) {
                    reasons.push(r);
                }
            }
        }
        let found = find(&self.secrets.lock().expect("poisoned"));
        if !found.is_empty() {
            return Ok(found);
        }
        let named: Vec<String> = ids
            .iter()
            .map(|id| {
                if id.is_wildcard() {
                    "an anonymous recipient (hidden key id; name the key with --hidden-encrypt-key, --encrypt-key or --encrypt-key-file)".to_string()
                } else {
                    format!("key {}", keys::key_id_hex(id))
                }
            })
            .collect();
        if reasons.is_empty() {
            reasons.push(format!(
                "no secret key for {} was found in {}",
                if ids.len() > 1 { "them" } else { "it" },
                ring.searched()
            ));
        }
        Err(Error::SecretKey(format!(
            "{what} is encrypted to {}: {} (decrypting needs that secret key: restore, verify and rebuilding the local cache do)",
            named.join(", "),
            reasons.join("; ")
        )))
    }
}

/// Whether a stored file name is a difftar volume (long or short form).
fn is_volume_name(name: &str) -> bool {
    let mut parts = name.split('.');
    parts.any(|p| p == "difftar") || {
        let parts: Vec<&str> = name.split('.').collect();
        parts.contains(&"dt") && parts.iter().any(|p| p.ends_with("df") || p.ends_with("di"))
    }
}

/// The signature failure carried by an I/O error from reading a volume
/// (see [`decoder`]), if that is what it is.
pub fn signature_failure(e: &io::Error) -> Option<Error> {
    match e.get_ref()?.downcast_ref::<Error>()? {
        Error::VolumeSignature { name, reason } => Some(Error::VolumeSignature {
            name: name.clone(),
            reason: reason.clone(),
        }),
        _ => None,
    }
}

/// How a stored file is encoded.
#[derive(Clone, Debug)]
pub enum Codec {
    /// Neither compressed nor encrypted: the bytes as they are.
    Plain,
    /// gzip; the level applies to files written.
    Gzip(u32),
    /// An OpenPGP message, with the run's keys and settings.
    Gpg(Arc<Crypto>),
}

impl PartialEq for Codec {
    fn eq(&self, other: &Self) -> bool {
        matches!(
            (self, other),
            (Codec::Plain, Codec::Plain)
                | (Codec::Gzip(_), Codec::Gzip(_))
                | (Codec::Gpg(_), Codec::Gpg(_))
        )
    }
}

impl Codec {
    /// gzip at the default level (cache files, and reading, where the level
    /// does not matter).
    pub const GZIP: Codec = Codec::Gzip(DEFAULT_LEVEL);

    /// The same codec writing at deflate `level`.
    pub fn with_level(&self, level: u32) -> Codec {
        match self {
            Codec::Plain => Codec::Plain,
            Codec::Gzip(_) => Codec::Gzip(level.min(9)),
            Codec::Gpg(c) => Codec::Gpg(Arc::new(Crypto {
                shared: c.shared.clone(),
                file: c.file.clone(),
                level: Some(level.min(9)),
            })),
        }
    }

    /// Remote name suffix flags: (encrypted, gzipped).
    pub fn flags(&self) -> (bool, bool) {
        match self {
            Codec::Plain => (false, false),
            Codec::Gzip(_) => (false, true),
            Codec::Gpg(_) => (true, false),
        }
    }

    /// The codec for a stored file with these name flags.
    pub fn for_name(
        encrypted: bool,
        gzipped: bool,
        crypto: Option<&Arc<Crypto>>,
        name: &str,
    ) -> Result<Codec> {
        match (encrypted, gzipped) {
            (true, _) => crypto
                .map(|c| Codec::Gpg(Arc::new(c.for_file(name))))
                .ok_or_else(|| Error::NoPassphrase {
                    subject: format!("{name} is encrypted"),
                    hint: " (or drop --no-encryption)",
                }),
            (false, true) => Ok(Codec::GZIP),
            (false, false) => Ok(Codec::Plain),
        }
    }
}

/// Counts and hashes the bytes that reach the file.
pub struct Stored<W> {
    inner: W,
    count: Arc<AtomicU64>,
    sha1: Sha1,
}

impl<W: Write> Write for Stored<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        self.sha1.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Stored<W> {
    fn finish(self) -> io::Result<(W, String)> {
        Ok((self.inner, hex::encode(self.sha1.finalize())))
    }
}

/// A reader fed by a channel: the encrypting thread pulls plaintext from it.
struct ChannelReader {
    rx: crossbeam_channel::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    /// Bytes handed to the encoder so far (for the in-flight estimate).
    consumed: Arc<AtomicU64>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

struct GpgWriter {
    tx: Option<crossbeam_channel::Sender<Vec<u8>>>,
    buf: Vec<u8>,
    pushed: u64,
    consumed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<io::Result<(File, String)>>>,
}

const GPG_BATCH: usize = 256 * 1024;

impl GpgWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.buf, Vec::with_capacity(GPG_BATCH));
        self.pushed += b.len() as u64;
        match self.tx.as_ref().map(|t| t.send(b)) {
            Some(Ok(())) => Ok(()),
            _ => Err(self.thread_error()),
        }
    }

    fn thread_error(&mut self) -> io::Error {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("encryption thread stopped"),
        }
    }

    fn finish(mut self) -> io::Result<(File, String)> {
        self.send()?;
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("encryption thread panicked")),
        }
    }
}

impl Write for GpgWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= GPG_BATCH {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Layer {
    Gpg(GpgWriter),
    /// The fast path: gzip, plain, and symmetric OpenPGP without signing.
    Fast(crate::stream::FastEncoder),
}

/// A file being written through a codec.
pub struct Encoder {
    layer: Layer,
    count: Arc<AtomicU64>,
}

/// What an encoder leaves behind.
pub struct Written {
    /// Bytes written to the file.
    pub size: u64,
    /// SHA-1 of the file, in hex (the hash a volume's manifest entry records).
    pub sha1_hex: String,
    /// Where its independently compressed blocks are (dupr's fast writer).
    pub layout: Option<crate::blocks::Layout>,
}

impl Encoder {
    /// An encoder for a side file (signature tar, manifest, index): little
    /// data, little memory. Volumes use [`Encoder::create_volume`].
    pub fn create(path: &Path, codec: &Codec) -> io::Result<Self> {
        Self::create_scaled(path, codec, crate::stream::Scale::Small)
    }

    /// An encoder for a volume: every core compresses.
    pub fn create_volume(path: &Path, codec: &Codec) -> io::Result<Self> {
        Self::create_scaled(path, codec, crate::stream::Scale::Volume)
    }

    fn create_scaled(path: &Path, codec: &Codec, scale: crate::stream::Scale) -> io::Result<Self> {
        let file = File::create(path)?;
        let count = Arc::new(AtomicU64::new(0));
        let stored = Stored {
            inner: BufWriter::with_capacity(1 << 20, file),
            count: count.clone(),
            sha1: Sha1::new(),
        };
        let layer = match codec {
            Codec::Plain | Codec::Gzip(_) => {
                let file = stored.inner.into_inner().map_err(|e| e.into_error())?;
                let format = match codec {
                    Codec::Gzip(level) => Format::Gzip {
                        level: (*level).min(9),
                    },
                    _ => Format::Plain,
                };
                Layer::Fast(crate::stream::FastEncoder::with_scale(file, format, scale)?)
            }
            Codec::Gpg(c) if c.shared.recipients.is_empty() && c.shared.signer.is_none() => {
                let sh = &c.shared;
                let key = sh.key().map_err(io::Error::other)?;
                let file = stored.inner.into_inner().map_err(|e| e.into_error())?;
                Layer::Fast(crate::stream::FastEncoder::with_scale(
                    file,
                    Format::Pgp {
                        skesk: sh.skesk(),
                        key: Zeroizing::new(key.as_ref().to_vec()),
                        cipher: u8::from(sh.sym_alg),
                        deflate_level: sh.compression.map(|_| c.level.unwrap_or(sh.level)),
                    },
                    scale,
                )?)
            }
            Codec::Gpg(c) => {
                let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(8);
                let consumed = Arc::new(AtomicU64::new(0));
                let consumed2 = consumed.clone();
                let sh = c.shared.clone();
                let key = if sh.recipients.is_empty() {
                    Some(sh.key().map_err(io::Error::other)?)
                } else {
                    None
                };
                let thread = std::thread::spawn(move || -> io::Result<(File, String)> {
                    let mut out = stored;
                    let reader = ChannelReader {
                        rx,
                        cur: Vec::new(),
                        pos: 0,
                        consumed: consumed2,
                    };
                    let mut rng = rand::thread_rng();
                    let mut b =
                        MessageBuilder::from_reader("", reader).seipd_v1(&mut rng, sh.sym_alg);
                    match key {
                        Some(key) => {
                            out.write_all(&sh.skesk())?;
                            b.set_session_key(key).map_err(io::Error::other)?;
                        }
                        None => {
                            for (k, hidden) in &sh.recipients {
                                let r = match (k, hidden) {
                                    (EncryptionKey::Primary(k), false) => {
                                        b.encrypt_to_key(&mut rng, k)
                                    }
                                    (EncryptionKey::Subkey(k), false) => {
                                        b.encrypt_to_key(&mut rng, k)
                                    }
                                    (EncryptionKey::Primary(k), true) => {
                                        b.encrypt_to_key_anonymous(&mut rng, k)
                                    }
                                    (EncryptionKey::Subkey(k), true) => {
                                        b.encrypt_to_key_anonymous(&mut rng, k)
                                    }
                                };
                                r.map_err(io::Error::other)?;
                            }
                        }
                    }
                    if let Some(alg) = sh.compression {
                        b.compression(alg);
                    }
                    if let Some(s) = &sh.signer {
                        // SHA-512 as gpg uses; (EC)DSA keys get their own size.
                        let hash = match s.algorithm() {
                            PublicKeyAlgorithm::ECDSA | PublicKeyAlgorithm::DSA => {
                                s.as_signer().hash_alg()
                            }
                            _ => HashAlgorithm::Sha512,
                        };
                        b.sign(s.as_signer(), Password::empty(), hash);
                    }
                    b.to_writer(&mut rng, &mut out).map_err(io::Error::other)?;
                    let (w, sha) = out.finish()?;
                    let f = w.into_inner().map_err(|e| e.into_error())?;
                    Ok((f, sha))
                });
                Layer::Gpg(GpgWriter {
                    tx: Some(tx),
                    buf: Vec::with_capacity(GPG_BATCH),
                    pushed: 0,
                    consumed,
                    thread: Some(thread),
                })
            }
        };
        Ok(Encoder { layer, count })
    }

    /// Bytes stored so far (lags the input by the codec's buffering).
    pub fn stored_bytes(&self) -> u64 {
        match &self.layer {
            Layer::Fast(f) => f.stored_estimate(),
            Layer::Gpg(g) => {
                // What is still queued for the encryption thread will be
                // stored too; count it at the ratio seen so far.
                let stored = self.count.load(Ordering::Relaxed);
                let consumed = g.consumed.load(Ordering::Relaxed);
                crate::stream::estimate(stored, consumed, g.pushed + g.buf.len() as u64)
            }
        }
    }

    /// Flush and close the file: what was written, its hash and block layout.
    pub fn finish(self) -> io::Result<Written> {
        let (file, sha1_hex, layout) = match self.layer {
            Layer::Gpg(g) => {
                let (f, sha) = g.finish()?;
                (f, sha, None)
            }
            Layer::Fast(f) => {
                let done = f.finish()?;
                self.count.store(done.size, Ordering::Relaxed);
                (done.file, done.sha1_hex, done.layout)
            }
        };
        file.sync_data()?;
        Ok(Written {
            size: self.count.load(Ordering::Relaxed),
            sha1_hex,
            layout,
        })
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.layer {
            Layer::Gpg(g) => g.write(buf),
            Layer::Fast(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.layer {
            Layer::Gpg(g) => g.flush(),
            Layer::Fast(f) => f.flush(),
        }
    }
}

/// Open a stored file for reading its plaintext. For OpenPGP this parses
/// the message head and finds the session key, so a wrong passphrase is
/// reported here, before any plaintext is used.
pub fn decoder<R: Read + Send + 'static>(r: R, codec: &Codec) -> Result<Box<dyn Read + Send>> {
    let r = BufReader::with_capacity(1 << 20, r);
    Ok(match codec {
        Codec::Plain => Box::new(r),
        // Buffered on the plaintext side too: tar headers are read 512
        // bytes at a time, and inflating into tiny buffers costs copies.
        Codec::Gzip(_) => Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(r),
        )),
        Codec::Gpg(c) => Box::new(BufReader::with_capacity(256 * 1024, open_pgp(r, c)?)),
    })
}

struct DebugReader<R>(R);
impl<R> fmt::Debug for DebugReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DebugReader")
    }
}
impl<R: Read> Read for DebugReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl<R: io::BufRead> io::BufRead for DebugReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.0.consume(n)
    }
}

fn open_pgp<R: io::BufRead + Send + 'static>(r: R, c: &Crypto) -> Result<Box<dyn Read + Send>> {
    let sh = &c.shared;
    let what = c.file.as_deref().unwrap_or("file");
    let bad = |e: pgp::errors::Error| Error::Damaged {
        name: what.to_string(),
        reason: format!("not a readable OpenPGP message: {e}"),
    };
    let msg = Message::from_bytes(DebugReader(r)).map_err(bad)?;
    let Message::Encrypted { esk, .. } = &msg else {
        return Err(Error::NotEncrypted {
            name: what.to_string(),
        });
    };
    let has_skesk = esk
        .iter()
        .any(|e| matches!(e, Esk::SymKeyEncryptedSessionKey(_)));
    let pkesk_ids: Vec<KeyId> = esk
        .iter()
        .filter_map(|e| match e {
            Esk::PublicKeyEncryptedSessionKey(p) => p.id().ok().cloned(),
            _ => None,
        })
        .collect();
    let options = DecryptionOptions::new()
        .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming)
        .enable_gnupg_aead();
    let sk = if has_skesk {
        sh.session_key_for(esk)?
    } else {
        None
    };
    let msg = match sk {
        Some(sk) => {
            let ring = TheRing {
                session_keys: vec![sk],
                decrypt_options: options,
                ..Default::default()
            };
            msg.decrypt_the_ring(ring, true)
                .map_err(|_| Error::WrongPassphrase)?
                .0
        }
        None if !pkesk_ids.is_empty() => {
            let secrets = sh.secrets_for(&pkesk_ids, what)?;
            let ring = TheRing {
                secret_keys: secrets.iter().map(|s| s.as_ref()).collect(),
                decrypt_options: options,
                ..Default::default()
            };
            msg.decrypt_the_ring(ring, true)
                .map_err(|e| Error::SessionKeyRefused {
                    name: what.to_string(),
                    keys: secrets
                        .iter()
                        .map(|s| keys::fingerprint_hex(&s.to_public_key()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    reason: e.to_string(),
                })?
                .0
        }
        None if has_skesk && sh.passphrase.is_none() => {
            return Err(Error::NoPassphrase {
                subject: format!("{what} is encrypted with a passphrase"),
                hint: "",
            })
        }
        None if has_skesk => return Err(Error::WrongPassphrase),
        None => {
            return Err(Error::NoSessionKey {
                name: what.to_string(),
            })
        }
    };
    let msg = if msg.is_compressed() {
        // Garbage from a wrong key fails here too; callers that can tell
        // (other files of the archive decrypt) report damage instead.
        msg.decompress().map_err(|_| Error::WrongPassphrase)?
    } else {
        msg
    };
    match (&sh.verifier, &c.file) {
        (Some((id, _)), Some(name)) if is_volume_name(name) && !msg.is_signed() => {
            Err(Error::VolumeSignature {
                name: name.clone(),
                reason: format!("it is not signed (expected a signature by key {id})"),
            })
        }
        (Some((id, key)), Some(name)) if is_volume_name(name) => Ok(Box::new(Verified {
            msg,
            key: key.clone(),
            id: id.clone(),
            name: name.clone(),
            done: false,
        })),
        _ => Ok(Box::new(msg)),
    }
}

/// A signed message whose signature is checked when its end is read.
struct Verified {
    msg: Message<'static>,
    key: SignedPublicKey,
    id: String,
    name: String,
    done: bool,
}

impl Verified {
    fn check(&self) -> Result<()> {
        let fail = |reason: String| Error::VolumeSignature {
            name: self.name.clone(),
            reason,
        };
        let Message::Signed { reader, .. } = &self.msg else {
            return Err(fail(format!(
                "it is not signed (expected a signature by key {})",
                self.id
            )));
        };
        let mut keys: Vec<&dyn VerifyingKey> = vec![&self.key.primary_key];
        keys.extend(
            self.key
                .public_subkeys
                .iter()
                .map(|s| &s.key as &dyn VerifyingKey),
        );
        for i in 0..reader.num_signatures() {
            if keys
                .iter()
                .any(|k| self.msg.verify_nested_explicit(i, *k).is_ok())
            {
                return Ok(());
            }
        }
        let issuers: Vec<String> = (0..reader.num_signatures())
            .filter_map(|i| reader.signature(i))
            .flat_map(|s| s.issuer_key_id().into_iter().map(keys::key_id_hex))
            .collect();
        Err(fail(if issuers.is_empty() {
            format!("no good signature by key {}", self.id)
        } else {
            format!(
                "signed by key {}, not by {} (or the signature is bad)",
                issuers.join(", "),
                self.id
            )
        }))
    }
}

impl Read for Verified {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.msg.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            self.check().map_err(io::Error::other)?;
        }
        Ok(n)
    }
}

/// SHA-1 of a file, hex.
pub fn sha1_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Write a whole small file (a manifest) through a codec.
pub fn write_file(path: &Path, data: &[u8], codec: &Codec) -> Result<Written> {
    let mut e = Encoder::create(path, codec).ctx(path)?;
    e.write_all(data).ctx(path)?;
    e.finish().ctx(path)
}

/// Keep secrets out of core dumps and away from same-user debuggers: the
/// process holds passphrases and unlocked keys in memory.
pub fn protect_process() {
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto(pw: &str) -> Arc<Crypto> {
        Crypto::symmetric(Zeroizing::new(pw.as_bytes().to_vec()), true).unwrap()
    }

    #[test]
    fn volume_names() {
        assert!(is_volume_name(
            "duplicity-full.20260101T000000Z.vol1.difftar.gpg"
        ));
        assert!(is_volume_name(
            "pre-duplicity-inc.20260101T000000Z.to.20260102T000000Z.vol12.difftar.gpg"
        ));
        assert!(is_volume_name("df.abc.1.dt.g"));
        assert!(!is_volume_name(
            "duplicity-full.20260101T000000Z.manifest.gpg"
        ));
        assert!(!is_volume_name(
            "duplicity-full-signatures.20260101T000000Z.sigtar.gpg"
        ));
        assert!(!is_volume_name("df.abc.m.g"));
    }

    #[test]
    fn pgp_round_trip_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gpg");
        let c = crypto("secret");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 97) as u8).collect();
        let w = write_file(&p, &data, &Codec::Gpg(c.clone())).unwrap();
        assert_eq!(w.size, std::fs::metadata(&p).unwrap().len());
        assert_eq!(w.sha1_hex, sha1_file(&p).unwrap());
        let mut out = Vec::new();
        decoder(File::open(&p).unwrap(), &Codec::Gpg(c))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let other = crypto("wrong");
        let e = decoder(File::open(&p).unwrap(), &Codec::Gpg(other))
            .err()
            .unwrap();
        assert!(matches!(e, Error::WrongPassphrase), "{e}");
    }

    /// Fuzzing found messages with several SKESKs of gpg's largest S2K
    /// count taking seconds each: only a few are derived.
    #[test]
    fn many_passphrase_packets_cost_a_bounded_number_of_derivations() {
        let mut msg = Vec::new();
        for i in 0..20u8 {
            // v4, AES-256, iterated+salted SHA-256 (smallest count), an
            // encrypted session key that the passphrase does not open.
            let mut body = vec![4u8, 9, 3, 8];
            body.extend_from_slice(&[i; 8]);
            body.push(0);
            body.extend((0..33u8).map(|b| b.wrapping_mul(37).wrapping_add(i)));
            msg.extend_from_slice(&[0x8c, body.len() as u8]);
            msg.extend_from_slice(&body);
        }
        let c = crypto("secret");
        let _ = c.session_key_of(&msg);
        let n = c
            .shared
            .derivations
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(n, MAX_SKESK_TRIES, "derivations for 20 SKESKs");
    }
}
