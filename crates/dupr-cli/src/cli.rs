//! The command line, duplicity's way: `dupr [command] [options] args`, with
//! options anywhere and the command inferred from the arguments when absent.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "dupr",
    version,
    about = "Encrypted, incremental, duplicity-compatible backups",
    long_about = "dupr backs up a directory to a target URL in duplicity's archive format.\n\n\
Usage:\n  dupr [full|incremental] SOURCE URL\n  dupr restore URL DEST   (or: dupr URL DEST)\n  \
dupr list-current-files URL\n  dupr collection-status URL",
    infer_long_args = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Command (full, incremental, restore, list-current-files, collection-status, ...) and its arguments.
    #[arg(value_name = "ARGS", allow_hyphen_values = false)]
    pub args: Vec<OsString>,

    /// Volume size in MiB.
    #[arg(long, value_name = "MB", default_value_t = 200)]
    pub volsize: u64,

    /// Root of the local metadata cache (default: $XDG_CACHE_HOME/dupr).
    #[arg(long, value_name = "PATH", env = "DUPR_ARCHIVE_DIR")]
    pub archive_dir: Option<PathBuf>,

    /// Cache sub-directory name (default: MD5 of the target URL).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Store volumes gzipped instead of OpenPGP-encrypted.
    #[arg(long)]
    pub no_encryption: bool,

    /// Encrypt to this public key (key id, fingerprint or user id; repeatable). Backups then need no passphrase; restores need the secret key and its passphrase in PASSPHRASE.
    #[arg(long, value_name = "ID")]
    pub encrypt_key: Vec<String>,

    /// Encrypt to this public key without naming it in the files (repeatable).
    #[arg(long, value_name = "ID")]
    pub hidden_encrypt_key: Vec<String>,

    /// Both --encrypt-key ID and --sign-key ID.
    #[arg(long, value_name = "ID")]
    pub encrypt_sign_key: Option<String>,

    /// Sign every encrypted file with this key (passphrase: SIGN_PASSPHRASE); at restore, require its signature on every volume.
    #[arg(long, value_name = "ID")]
    pub sign_key: Option<String>,

    /// Encrypt to the keys in this exported key file (armored or binary; a secret key file also decrypts; repeatable).
    #[arg(long, value_name = "FILE")]
    pub encrypt_key_file: Vec<PathBuf>,

    /// The sign key as an exported key file (secret to sign, public is enough to verify).
    #[arg(long, value_name = "FILE")]
    pub sign_key_file: Option<PathBuf>,

    /// Extra GnuPG options, as duplicity passes them: --compress-algo,
    /// -z/--compress-level and --cipher-algo are honoured, others ignored
    /// with a warning. Write as --gpg-options='...'.
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    pub gpg_options: Vec<String>,

    /// Deflate level 0-9 for gzip volumes and OpenPGP compression (default 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compress_level: Option<u32>,

    /// Do not compress volumes.
    #[arg(long)]
    pub no_compression: bool,

    /// Really delete (cleanup/remove-*), or restore over existing files.
    #[arg(long)]
    pub force: bool,

    /// Do everything but write to the target.
    #[arg(long)]
    pub dry_run: bool,

    /// Verbosity: 0-9 or e, w, n, i, d (error, warning, notice, info, debug).
    #[arg(short = 'v', long, value_name = "LEVEL")]
    pub verbosity: Option<String>,

    /// Show progress on the terminal.
    #[arg(long)]
    pub progress: bool,

    /// Time to restore or list, e.g. now, 3D, 2W, 1h30m, 2026-01-31, epoch seconds.
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "restore-time",
        value_name = "TIME"
    )]
    pub time: Option<String>,

    /// Restore only this path (relative to the backup root).
    #[arg(
        short = 'r',
        long = "path-to-restore",
        visible_alias = "file-to-restore",
        value_name = "PATH"
    )]
    pub path_to_restore: Option<OsString>,

    /// Cap on the librsync block length, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_blocksize: Option<u32>,

    /// Directory for temporary files.
    #[arg(long, value_name = "DIR")]
    pub tempdir: Option<PathBuf>,

    /// Make a full backup instead of an incremental when the chain's full is older than TIME (e.g. 14D).
    #[arg(long, value_name = "TIME")]
    pub full_if_older_than: Option<String>,

    /// Continue even if the hostname or source path differ from the last backup's.
    #[arg(long)]
    pub allow_source_mismatch: bool,

    /// Do not restore file owners.
    #[arg(long, visible_alias = "do-not-restore-ownership")]
    pub no_restore_ownership: bool,

    /// verify: compare the backup's data and metadata with the source tree.
    #[arg(long)]
    pub compare_data: bool,

    /// Do not print backup statistics.
    #[arg(long)]
    pub no_print_statistics: bool,

    /// Accepted for compatibility: statistics are printed by default.
    #[arg(long, hide = true)]
    pub print_statistics: bool,

    /// Prefix for every file name written to the target.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub file_prefix: String,
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub file_prefix_archive: String,
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub file_prefix_manifest: String,
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub file_prefix_signature: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Backup,
    Full,
    Incremental,
    Restore,
    Verify,
    CollectionStatus,
    ListCurrentFiles,
    Cleanup,
    RemoveOlderThan,
    RemoveAllButNFull,
    RemoveAllIncOfButNFull,
}

const COMMANDS: &[(&str, &[&str], Command)] = &[
    ("backup", &["bu"], Command::Backup),
    ("full", &["fb"], Command::Full),
    ("incremental", &["incr", "inc", "ib"], Command::Incremental),
    ("restore", &["rb"], Command::Restore),
    ("verify", &["vb"], Command::Verify),
    ("collection-status", &["st"], Command::CollectionStatus),
    ("list-current-files", &["ls"], Command::ListCurrentFiles),
    ("cleanup", &["cl"], Command::Cleanup),
    ("remove-older-than", &["ro"], Command::RemoveOlderThan),
    ("remove-all-but-n-full", &["ra"], Command::RemoveAllButNFull),
    (
        "remove-all-inc-of-but-n-full",
        &["ri"],
        Command::RemoveAllIncOfButNFull,
    ),
];

/// A URL is anything like `scheme://`.
pub fn is_url(s: &OsString) -> bool {
    let s = s.to_string_lossy();
    match s.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '+')
        }
        None => false,
    }
}

/// Find the command word (exact, alias, or a unique prefix as 0.8 allowed).
pub fn parse_command(word: &str) -> Option<Command> {
    for (name, aliases, c) in COMMANDS {
        if *name == word || aliases.contains(&word) {
            return Some(*c);
        }
    }
    let matches: Vec<Command> = COMMANDS
        .iter()
        .filter(|(n, _, _)| word.len() >= 3 && n.starts_with(word))
        .map(|(_, _, c)| *c)
        .collect();
    (matches.len() == 1).then(|| matches[0])
}

/// Split the positionals into the command and its arguments.
pub fn resolve(args: &[OsString]) -> Result<(Command, Vec<OsString>), String> {
    let Some(first) = args.first() else {
        return Err("no command given; see dupr --help".into());
    };
    if let Some(c) = first.to_str().and_then(parse_command) {
        return Ok((c, args[1..].to_vec()));
    }
    if args.len() == 2 {
        if is_url(&args[0]) && !is_url(&args[1]) {
            return Ok((Command::Restore, args.to_vec()));
        }
        if is_url(&args[1]) && !is_url(&args[0]) {
            return Ok((Command::Backup, args.to_vec()));
        }
        return Err("expected one local path and one URL (scheme://...)".into());
    }
    Err(format!(
        "unknown command {:?}; see dupr --help",
        first.to_string_lossy()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn commands_and_inference() {
        assert_eq!(
            resolve(&os(&["full", "a", "file:///b"])).unwrap().0,
            Command::Full
        );
        assert_eq!(
            resolve(&os(&["incr", "a", "file:///b"])).unwrap().0,
            Command::Incremental
        );
        assert_eq!(
            resolve(&os(&["coll", "file:///b"])).unwrap().0,
            Command::CollectionStatus
        );
        assert_eq!(
            resolve(&os(&["a", "file:///b"])).unwrap().0,
            Command::Backup
        );
        assert_eq!(
            resolve(&os(&["file:///b", "a"])).unwrap().0,
            Command::Restore
        );
        assert!(resolve(&os(&["a", "b"])).is_err());
        assert!(resolve(&os(&[])).is_err());
        assert!(resolve(&os(&["re", "x"])).is_err());
    }
}
