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
    #[error("encryption: {0}")]
    Crypto(String),
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
    #[error("backend {url}: {reason}")]
    Backend {
        url: String,
        reason: String,
        /// Worth retrying (a timeout, a 5xx), unlike a refused permission.
        transient: bool,
    },
}

impl Error {
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
            Error::WrongPassphrase | Error::Crypto(_) | Error::SecretKey(_) => 31,
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

/// Attach a path to an `io::Error`.
pub trait IoContext<T> {
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
