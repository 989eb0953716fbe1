//! Typed errors of the engine. Each maps to duplicity's exit code so scripts
//! that test `$?` keep working.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad time string {0:?}: expected now, seconds since the epoch, an interval like 60D/2W/1h30m, YYYY-MM-DD or an ISO date-time")]
    BadTime(String),
    #[error("{0}")]
    Usage(String),
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("backup source {0:?} does not exist or is not readable")]
    SourceMissing(PathBuf),
    #[error("restore target {0:?} exists and is not empty (use --force to restore into it)")]
    RestoreTargetNotEmpty(PathBuf),
    #[error("restore target {0:?} is a non-empty directory and the archive holds a file there: not replacing it (restore to a path inside it or elsewhere)")]
    RestoreTargetIsDir(PathBuf),
    #[error("no backup found at {0}")]
    NoBackups(String),
    #[error("no signature chain found at {0}: run a full backup first")]
    NoSignatures(String),
    #[error("{0:?} not found in archive (no file by that name was backed up)")]
    PathNotFound(String),
    #[error("volume {name} is missing from the target")]
    MissingVolume { name: String },
    #[error("volume {name} is corrupt: SHA-1 {got} does not match the manifest's {expected}")]
    HashMismatch {
        name: String,
        expected: String,
        got: String,
    },
    #[error("volume {name} is corrupt: {reason}")]
    CorruptVolume { name: String, reason: String },
    #[error("{path}: the restored content does not match the SHA-256 recorded at backup time in {set} (damaged archive or a replaced signature file); not written")]
    ContentMismatch { path: String, set: String },
    #[error("{name} is damaged: {reason}")]
    Damaged { name: String, reason: String },
    #[error("backup set {set} is incomplete: {missing}")]
    IncompleteSet { set: String, missing: String },
    #[error("manifest {name} is malformed: {reason}")]
    BadManifest { name: String, reason: String },
    #[error("signature file {name} is corrupt: {reason}; run a full backup to start a new chain")]
    BadSignature { name: String, reason: String },
    #[error("this backup was made on host {recorded:?} but this is {current:?} (use --allow-source-mismatch to continue)")]
    HostMismatch { recorded: String, current: String },
    #[error("this backup's source was {recorded:?} but now it is {current:?} (use --allow-source-mismatch to continue)")]
    SourceMismatch { recorded: String, current: String },
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
    #[error("encryption: key derivation failed: {0}")]
    KeyDerivation(String),
    /// A file named as encrypted that holds a different OpenPGP message.
    #[error("encryption: {name} is not encrypted as expected")]
    NotEncrypted { name: String },
    #[error("encryption: {name} has no encrypted session key")]
    NoSessionKey { name: String },
    #[error("encryption: {name}: cannot decrypt the session key with the secret key(s) {keys}: {reason}")]
    SessionKeyRefused {
        name: String,
        /// Fingerprints of the keys tried.
        keys: String,
        reason: String,
    },
    /// A key file or keyring that cannot be read as one.
    #[error("encryption: {path}: {reason}", path = .path.display())]
    KeyFile { path: PathBuf, reason: String },
    /// Running GnuPG (to fetch a secret key) failed.
    #[error("encryption: {0}")]
    Gpg(String),
    /// A secret key needed to decrypt or sign is not usable here: missing
    /// from the keyring, or its passphrase is not set or wrong. The message
    /// names the file, the key and the variable to set.
    #[error("{0}")]
    SecretKey(String),
    #[error("bad {role} key {id:?}: {reason}")]
    BadKey {
        role: crate::keys::KeyRole,
        id: String,
        reason: String,
    },
    #[error("volume {name} failed signature verification: {reason}")]
    VolumeSignature { name: String, reason: String },
    #[error("another dupr or duplicity instance is already running with this archive directory (lock {0:?}); if this is not the case, remove that file")]
    Locked(std::path::PathBuf),
    #[error("remote manifest {0} does not match the local cache's copy; run `dupr cleanup` or remove the cache directory and try again")]
    ManifestMismatch(String),
    #[error("another dupr run is writing to {url} ({holder}); if it is not running, delete the file .dupr-lock there")]
    TargetBusy { url: String, holder: String },
    #[error("cannot resume the interrupted backup: {0}")]
    ResumeInvalid(String),
    #[error("interrupted by {}", crate::interrupt::name(*.0))]
    Interrupted(i32),
    #[error("the target lock .dupr-lock was taken over by another run while this one was writing (this machine was suspended, or its clock is off?); stopped, the next run resumes")]
    LockLost,
    #[error(transparent)]
    Select(#[from] crate::select::SelectError),
    /// An upload whose stored size is not what was sent (or that is not
    /// there afterwards): duplicity's backend_validation_failed, exit 56.
    #[error("backend {url}: {reason}")]
    UploadMismatch { url: String, reason: String },
    #[error("backend {url}: {reason}{}", cause_text(.source))]
    Backend {
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
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
