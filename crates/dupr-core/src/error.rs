//! Typed errors of the engine. Each maps to duplicity's exit code so scripts
//! that test `$?` keep working.

use std::path::PathBuf;

/// The engine's result type: [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an engine operation can fail with; [`Error::exit_code`] gives
/// duplicity's exit status for each.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory it failed on.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// A time given by the user (`--time`, `remove-older-than`) does not parse.
    #[error("bad time string {0:?}: expected now, seconds since the epoch, an interval like 60D/2W/1h30m, YYYY-MM-DD or an ISO date-time")]
    BadTime(String),
    /// A request that cannot be carried out as asked (a bad option value or
    /// setting); the text says what. Exit 2, like duplicity's usage errors.
    #[error("{0}")]
    Usage(String),
    /// A target URL that does not parse or names no supported storage.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backup source cannot be read.
    #[error("backup source {0:?} does not exist or is not readable")]
    SourceMissing(PathBuf),
    /// A restore would write into an existing non-empty directory without
    /// `--force`.
    #[error("restore target {0:?} exists and is not empty (use --force to restore into it)")]
    RestoreTargetNotEmpty(PathBuf),
    /// A restore of a file would replace a non-empty directory at the
    /// restore target, which even `--force` does not do.
    #[error("restore target {0:?} is a non-empty directory and the archive holds a file there: not replacing it (restore to a path inside it or elsewhere)")]
    RestoreTargetIsDir(PathBuf),
    /// The target holds no backup set (at or before the time asked for);
    /// the value is the target's display URL.
    #[error("no backup found at {0}")]
    NoBackups(String),
    /// An incremental backup or a file listing needs a signature chain and
    /// the target has none; the value is the target's display URL.
    #[error("no signature chain found at {0}: run a full backup first")]
    NoSignatures(String),
    /// The path asked for with `--path-to-restore` is not in the backup.
    #[error("{0:?} not found in archive (no file by that name was backed up)")]
    PathNotFound(String),
    /// A volume a restore needs is not on the target (the set does not
    /// list it, or its download finds no such file).
    #[error("volume {name} is missing from the target")]
    MissingVolume {
        /// The file's name, or the volume's number and set when the set
        /// does not list it.
        name: String,
    },
    /// A downloaded volume's SHA-1 is not the one its manifest records.
    #[error("volume {name} is corrupt: SHA-1 {got} does not match the manifest's {expected}")]
    HashMismatch {
        /// The volume's file name.
        name: String,
        /// The SHA-1 in the manifest, hex.
        expected: String,
        /// The SHA-1 of the downloaded file, hex.
        got: String,
    },
    /// A volume's content cannot be read as the tar stream it should hold
    /// (truncated, bad headers, chunks missing, undecodable).
    #[error("volume {name} is corrupt: {reason}")]
    CorruptVolume {
        /// The volume's file name, or the archive path whose data is bad.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A restored file's content hash is not the one its archive entry recorded
    /// at backup time; the file is not put in place.
    #[error("{path}: the restored content does not match the content hash recorded at backup time in {set} (damaged archive or a replaced signature file); not written")]
    ContentMismatch {
        /// The file's path in the archive.
        path: String,
        /// The backup set whose signature recorded the hash.
        set: String,
    },
    /// A file of the archive cannot be read (not an OpenPGP message), or a
    /// browsed file cannot be rebuilt from its backup.
    #[error("{name} is damaged: {reason}")]
    Damaged {
        /// What is damaged: a file name, or a path and its backup time.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A backup set lacks a file the operation needs (a volume, its
    /// manifest or its signature file).
    #[error("backup set {set} is incomplete: {missing}")]
    IncompleteSet {
        /// The set, by its time.
        set: String,
        /// What is missing and what to do about it.
        missing: String,
    },
    /// A manifest is missing or does not parse.
    #[error("manifest {name} is malformed: {reason}")]
    BadManifest {
        /// The manifest's file name (or the set's, when it has none).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A signature file is missing, undecodable or not a valid signature
    /// tar; only a new full backup gets past it.
    #[error("signature file {name} is corrupt: {reason}; run a full backup to start a new chain")]
    BadSignature {
        /// The signature file's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An incremental backup runs on another host than the chain's last
    /// manifest names, without `--allow-source-mismatch`.
    #[error("this backup was made on host {recorded:?} but this is {current:?} (use --allow-source-mismatch to continue)")]
    HostMismatch {
        /// The host name in the manifest.
        recorded: String,
        /// This host's name.
        current: String,
    },
    /// An incremental backup's source directory is not the one the chain's
    /// last manifest names, without `--allow-source-mismatch`.
    #[error("this backup's source was {recorded:?} but now it is {current:?} (use --allow-source-mismatch to continue)")]
    SourceMismatch {
        /// The source directory in the manifest.
        recorded: String,
        /// This backup's source directory.
        current: String,
    },
    /// A passphrase-encrypted file does not decrypt with the passphrase
    /// given (or decrypts to garbage).
    #[error("wrong passphrase: cannot decrypt the archive with the given PASSPHRASE")]
    WrongPassphrase,
    /// A passphrase is needed and none was given.
    #[error("encryption: {subject}: set PASSPHRASE{hint}")]
    NoPassphrase {
        /// What needs it ("vol1.difftar.gpg is encrypted").
        subject: String,
        /// Another way out, if any (", or name a recipient with --encrypt-key").
        hint: &'static str,
    },
    /// Deriving the symmetric key from the passphrase failed.
    #[error("encryption: key derivation failed: {0}")]
    KeyDerivation(String),
    /// A file named as encrypted that holds a different OpenPGP message.
    #[error("encryption: {name} is not encrypted as expected")]
    NotEncrypted {
        /// The file's name.
        name: String,
    },
    /// An encrypted file that carries neither a passphrase- nor a
    /// key-encrypted session key.
    #[error("encryption: {name} has no encrypted session key")]
    NoSessionKey {
        /// The file's name.
        name: String,
    },
    /// None of the secret keys at hand decrypts a file's session key.
    #[error("encryption: {name}: cannot decrypt the session key with the secret key(s) {keys}: {reason}")]
    SessionKeyRefused {
        /// The file's name.
        name: String,
        /// Fingerprints of the keys tried.
        keys: String,
        /// The OpenPGP library's error.
        reason: String,
    },
    /// A key file or keyring that cannot be read as one.
    #[error("encryption: {path}: {reason}", path = .path.display())]
    KeyFile {
        /// The key file or keyring.
        path: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
    /// Running GnuPG (to fetch a secret key) failed.
    #[error("encryption: {0}")]
    Gpg(String),
    /// A secret key needed to decrypt or sign is not usable here: missing
    /// from the keyring, or its passphrase is not set or wrong. The message
    /// names the file, the key and the variable to set.
    #[error("{0}")]
    SecretKey(String),
    /// A key named by an option (`--sign-key`, `--encrypt-key`, ...) is not
    /// found or cannot do what its role needs; the exit code depends on the
    /// role, as in duplicity.
    #[error("bad {role} key {id:?}: {reason}")]
    BadKey {
        /// What the key was named for.
        role: KeyRole,
        /// The key as named (id, fingerprint, user id or key file).
        id: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A volume is unsigned, or its signature does not verify with the
    /// key that signs the backups.
    #[error("volume {name} failed signature verification: {reason}")]
    VolumeSignature {
        /// The volume's file name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// Another run holds the archive directory's lock file (the value is its
    /// path).
    #[error("another dupr or duplicity instance is already running with this archive directory (lock {0:?}); if this is not the case, remove that file")]
    Locked(std::path::PathBuf),
    /// The last manifest on the target and the cache's copy disagree (the
    /// value is the manifest's name), so the cached signatures cannot be
    /// trusted for an incremental.
    #[error("remote manifest {0} does not match the local cache's copy; run `dupr cleanup` or remove the cache directory and try again")]
    ManifestMismatch(String),
    /// Another live run holds the target's `.dupr-lock`.
    #[error("another dupr run is writing to {url} ({holder}); if it is not running, delete the file .dupr-lock there")]
    TargetBusy {
        /// The target's display URL.
        url: String,
        /// Who holds the lock, as its record describes it.
        holder: String,
    },
    /// An interrupted backup's leftovers (journal, partial manifest,
    /// volumes) do not fit the backup asked for now.
    #[error("cannot resume the interrupted backup: {0}")]
    ResumeInvalid(String),
    /// A signal (the value: its number) stopped the run at a safe point.
    #[error("interrupted by {}", crate::interrupt::name(*.0))]
    Interrupted(i32),
    /// Another run took over the target lock while this one was writing.
    #[error("the target lock .dupr-lock was taken over by another run while this one was writing (this machine was suspended, or its clock is off?); stopped, the next run resumes")]
    LockLost,
    /// A selection option (`--include`, `--exclude`, filelists) is invalid.
    #[error(transparent)]
    Select(#[from] crate::select::SelectError),
    /// An upload whose stored size is not what was sent (or that is not
    /// there afterwards): duplicity's backend_validation_failed, exit 56.
    #[error("backend {url}: {reason}")]
    UploadMismatch {
        /// The target's display URL.
        url: String,
        /// Which upload, and the size stored against the size sent.
        reason: String,
    },
    /// A storage operation failed.
    #[error("backend {url}: {reason}{}", cause_text(.source))]
    Backend {
        /// The target's display URL.
        url: String,
        /// What failed, on what, in words ("download X: not found").
        reason: String,
        /// Worth retrying (a timeout, a 5xx), unlike a refused permission.
        transient: bool,
        /// The storage service's own error, kept for callers (dupr-backend's
        /// `ServiceError` holds OpenDAL's); its text follows `reason`.
        #[source]
        source: Option<BoxError>,
    },
}

/// An error from below the engine (a storage service's), kept whole.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// ": " and the text of `source`, when there is one with text.
fn cause_text(source: &Option<BoxError>) -> String {
    match source.as_ref().map(|s| s.to_string()) {
        Some(t) if !t.is_empty() => format!(": {t}"),
        _ => String::new(),
    }
}

impl Error {
    /// A storage error without an underlying service error.
    pub fn backend(url: impl Into<String>, reason: impl Into<String>, transient: bool) -> Self {
        Error::Backend {
            url: url.into(),
            reason: reason.into(),
            transient,
            source: None,
        }
    }

    /// A local file system error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A storage error that a retry may cure.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Backend {
                transient: true,
                ..
            } | Error::UploadMismatch { .. }
        )
    }

    /// duplicity's exit code for this error (reference section 10.5).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. } => 1,
            Error::BadTime(_) | Error::Usage(_) => 2,
            // duplicity 3: a bad URL is a user error.
            Error::BadUrl { .. } => 23,
            Error::SourceMissing(_) => 13,
            Error::Select(e) => e.exit_code(),
            Error::ResumeInvalid(_) => 39,
            Error::TargetBusy { .. } => 23,
            Error::RestoreTargetNotEmpty(_) | Error::RestoreTargetIsDir(_) => 11,
            Error::NoBackups(_) => 4,
            Error::NoSignatures(_) => 17,
            Error::PathNotFound(_) => 19,
            Error::MissingVolume { .. } => 53,
            Error::HashMismatch { .. }
            | Error::CorruptVolume { .. }
            | Error::ContentMismatch { .. }
            | Error::Damaged { .. } => 21,
            Error::IncompleteSet { .. } => 30,
            Error::BadManifest { .. } => 6,
            Error::BadSignature { .. } => 18,
            Error::HostMismatch { .. } => 3,
            Error::SourceMismatch { .. } => 42,
            Error::WrongPassphrase
            | Error::NoPassphrase { .. }
            | Error::KeyDerivation(_)
            | Error::NotEncrypted { .. }
            | Error::NoSessionKey { .. }
            | Error::SessionKeyRefused { .. }
            | Error::KeyFile { .. }
            | Error::Gpg(_)
            | Error::SecretKey(_) => 31,
            Error::BadKey { role, .. } => role.exit_code(),
            Error::VolumeSignature { .. } => 22,
            Error::Locked(_) => 23,
            Error::ManifestMismatch(_) => 5,
            Error::Backend { .. } => 50,
            Error::UploadMismatch { .. } => 56,
            // The shell's convention: 130 for SIGINT, 143 for SIGTERM.
            Error::Interrupted(sig) => 128 + sig,
            Error::LockLost => 23,
        }
    }
}

/// An error's text followed by each of its causes whose text it does
/// not already hold, on one line: how the CLI and logs show an error.
pub fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !t.is_empty() && !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Attach a path to an `io::Error`.
pub trait IoContext<T> {
    /// The result with an error turned into [`Error::Io`] on `path`.
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// What a key is named for on the command line (duplicity's exit codes
/// 80/81/82 tell them apart). Defined here, with the error that names it,
/// so errors do not depend on [`crate::keys`] (which re-exports it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// `--sign-key`: the key that signs the encrypted files written.
    Sign,
    /// `--encrypt-key`: a recipient named in the encrypted files.
    Encrypt,
    /// `--hidden-encrypt-key`: a recipient whose key id the files do not show.
    HiddenEncrypt,
}

impl KeyRole {
    /// duplicity's exit code for a bad key in this role.
    pub fn exit_code(self) -> i32 {
        match self {
            KeyRole::Sign => 80,
            KeyRole::Encrypt => 81,
            KeyRole::HiddenEncrypt => 82,
        }
    }
}

impl std::fmt::Display for KeyRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyRole::Sign => "sign",
            KeyRole::Encrypt => "encrypt",
            KeyRole::HiddenEncrypt => "hidden encrypt",
        })
    }
}
