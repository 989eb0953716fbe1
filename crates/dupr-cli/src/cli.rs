//! The command line, duplicity's way: `dupr [command] [options] args`, with
//! options anywhere and the command inferred from the arguments when absent.

use std::ffi::OsString;
use std::path::PathBuf;

use std::os::unix::ffi::OsStrExt;

use clap::{ArgAction, ArgMatches, Args, CommandFactory, Parser};
use dupr_core::select::{Filter, Rule, Spec};

#[derive(Parser, Debug)]
#[command(
    name = "dupr",
    version,
    about = "Encrypted, incremental, duplicity-compatible backups",
    long_about = "dupr backs up a directory to a target URL in duplicity's archive format.\n\
Options and environment variables are duplicity's own (3.2.1, plus the 0.8 spellings).",
    override_usage = USAGE,
    after_help = COMMANDS_HELP,
    infer_long_args = true,
    // As in duplicity's parsers, a repeated option's last value wins.
    args_override_self = true,
    disable_help_subcommand = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Command (full, incremental, restore, verify, collection-status,
    /// list-current-files, cleanup, remove-older-than, remove-all-but-n-full,
    /// remove-all-inc-of-but-n-full, mount) and its arguments.
    #[arg(value_name = "ARGS")]
    pub args: Vec<OsString>,

    #[command(flatten)]
    pub general: General,
    #[command(flatten)]
    pub backup: BackupOpts,
    #[command(flatten)]
    pub crypt: CryptOpts,
    #[command(flatten)]
    pub select: SelectOpts,
    #[command(flatten)]
    pub restore: RestoreOpts,
    #[command(flatten)]
    pub mount: MountOpts,
    #[command(flatten)]
    pub backend: BackendOpts,
    #[command(flatten)]
    pub compat: CompatOpts,
    #[command(flatten)]
    pub profile: ProfileOpts,
}

/// Profiles, schedules and key export (see `dupr profile`).
#[derive(Args, Debug)]
#[command(next_help_heading = "Profiles")]
pub struct ProfileOpts {
    /// Run ACTION of this profile: dupr -p NAME backup|full|incr|verify|status|list|restore [DEST]|fetch PATH DEST|mount DIR|purge|cleanup|export-keys FILE.
    #[arg(short = 'p', long = "profile", value_name = "NAME")]
    pub profile: Option<String>,
    /// The profile file to use instead of $XDG_CONFIG_HOME/dupr/profiles/NAME.toml.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print what a profile action would run (secrets hidden), run nothing.
    #[arg(long)]
    pub preview: bool,
    /// `status`: fail when the last successful backup is older than this (default: the profile's max-age, else 2D).
    #[arg(long, value_name = "TIME")]
    pub max_age: Option<String>,
    /// `schedule install`: how often (e.g. 15m, 1h, 1d).
    #[arg(long, value_name = "INTERVAL")]
    pub every: Option<String>,
    /// `schedule install`: write a crontab line even where systemd runs.
    #[arg(long)]
    pub cron: bool,
    /// `export-keys`, `import-keys`: the export's own passphrase, from this private file (mode 600).
    #[arg(long, value_name = "FILE")]
    pub export_passphrase_file: Option<PathBuf>,
}

pub const USAGE: &str = "dupr [full|incremental] [OPTIONS] SOURCE_DIR TARGET_URL
       dupr [restore] [OPTIONS] SOURCE_URL TARGET_DIR
       dupr verify [OPTIONS] SOURCE_URL TARGET_DIR
       dupr collection-status [OPTIONS] TARGET_URL
       dupr list-current-files [OPTIONS] TARGET_URL
       dupr cleanup [OPTIONS] TARGET_URL
       dupr remove-older-than TIME [OPTIONS] TARGET_URL
       dupr remove-all-but-n-full COUNT [OPTIONS] TARGET_URL
       dupr remove-all-inc-of-but-n-full COUNT [OPTIONS] TARGET_URL";

const COMMANDS_HELP: &str =
    "Commands (aliases): backup (bu), full (fb), incremental (incr, inc, ib), \
restore (rb), verify (vb), collection-status (st), list-current-files (ls), cleanup (cl), \
remove-older-than (ro), remove-all-but-n-full (ra), remove-all-inc-of-but-n-full (ri), \
mount (browse every backup time as a read-only file system: dupr mount URL DIR); \
any unique prefix of a command also works. `dupr COMMAND --help` shows the options of one command.

Profiles, schedules and key export (each has its own --help):
  dupr profile list|show|create|edit-check|import ...
  dupr -p NAME [ACTION]
  dupr schedule install|list|remove ...
  dupr -p NAME export-keys FILE
  dupr import-keys FILE

Environment: PASSPHRASE, SIGN_PASSPHRASE, TMPDIR, XDG_CACHE_HOME, and the storage \
variables duplicity reads (AWS_*, DPBX_ACCESS_TOKEN, BACKEND_PASSWORD/FTP_PASSWORD, ...).";

/// Options every command takes.
#[derive(Args, Debug)]
#[command(next_help_heading = "General")]
pub struct General {
    /// Root of the local metadata cache (default: $XDG_CACHE_HOME/dupr).
    #[arg(long, value_name = "PATH", env = "DUPR_ARCHIVE_DIR")]
    pub archive_dir: Option<PathBuf>,
    /// Cache sub-directory name (default: MD5 of the target URL).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Accepted for duplicity compatibility (its config directory); unused.
    #[arg(long, value_name = "PATH")]
    pub config_dir: Option<PathBuf>,
    /// Directory for temporary files.
    #[arg(long, value_name = "DIR")]
    pub tempdir: Option<PathBuf>,
    /// Continue even if the hostname or source path differ from the last backup's.
    #[arg(long)]
    pub allow_source_mismatch: bool,
    /// Check the remote manifests against the cache (the default).
    #[arg(long, overrides_with = "no_check_remote")]
    pub check_remote: bool,
    /// Trust the local cache's manifests without comparing them with the target's.
    #[arg(long)]
    pub no_check_remote: bool,
    /// Which remote metadata to copy into the cache: full or partial.
    #[arg(long, value_name = "MODE", value_parser = ["full", "partial"])]
    pub metadata_sync_mode: Option<String>,
    /// Do everything but write to the target.
    #[arg(long)]
    pub dry_run: bool,
    /// Really delete (cleanup, remove-*), or restore into a non-empty directory.
    #[arg(long)]
    pub force: bool,
    /// Keep going past some errors (duplicity's debugging aid; see the warning).
    #[arg(long)]
    pub ignore_errors: bool,
    /// Retries of a failed storage operation.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub num_retries: u32,
    /// Seconds between retries.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub backend_retry_delay: u64,
    /// Network timeout in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    /// Time separator of legacy file names to read (dupr reads all spellings).
    #[arg(long, value_name = "CHAR")]
    pub time_separator: Option<String>,
    /// Time to restore, verify or list: now, 3D, 2W, 1h30m, 2026-01-31, epoch seconds.
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "restore-time",
        value_name = "TIME"
    )]
    pub time: Option<String>,
    /// Verbosity: 0-9 or e, w, n, i, d (error, warning, notice, info, debug).
    #[arg(short = 'v', long, value_name = "LEVEL")]
    pub verbosity: Option<String>,
    /// Show progress on the terminal.
    #[arg(long)]
    pub progress: bool,
    /// Seconds between progress updates.
    #[arg(long, value_name = "SECONDS")]
    pub progress_rate: Option<f64>,
    /// Also write the log to this file descriptor.
    #[arg(long, value_name = "FD")]
    pub log_fd: Option<i32>,
    /// Also write the log to this file (appended).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Time-stamp every log line.
    #[arg(long)]
    pub log_timestamp: bool,
    /// Print backup statistics (the default).
    #[arg(long, overrides_with = "no_print_statistics")]
    pub print_statistics: bool,
    /// Do not print backup statistics.
    #[arg(long)]
    pub no_print_statistics: bool,
    /// Print the backup statistics as JSON too.
    #[arg(long)]
    pub jsonstat: bool,
    /// Machine-readable output: JSON lines for backup and restore (status,
    /// then a summary), one JSON document for listing, status, verify and
    /// removal, errors as a JSON object on stderr (schema in the README).
    #[arg(long)]
    pub json: bool,
    /// Exit codes for monitoring: 100 when files were skipped (unreadable),
    /// 101 when there was nothing to do; duplicity exits 0 for both.
    #[arg(long, env = "DUPR_DETAILED_EXIT_CODES", value_parser = clap::builder::BoolishValueParser::new())]
    pub detailed_exit_codes: bool,
    /// Pretend the current time is this (epoch seconds); for tests.
    #[arg(long, value_name = "SECONDS", hide = true)]
    pub current_time: Option<i64>,
    /// Generate a man page or shell completions: man, bash, zsh, fish, elvish, powershell.
    #[arg(long, value_name = "WHAT", hide = true)]
    pub generate: Option<String>,
}

/// Options that shape what a backup writes.
#[derive(Args, Debug)]
#[command(next_help_heading = "Backup")]
pub struct BackupOpts {
    /// Volume size in MiB.
    #[arg(long, value_name = "MB", default_value_t = 200)]
    pub volsize: u64,
    /// Cap on the librsync block length, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_blocksize: Option<u32>,
    /// Copy buffer size in KiB (accepted; dupr sizes its buffers itself).
    #[arg(long, value_name = "KIB")]
    pub copy_blocksize: Option<u64>,
    /// Back up what symbolic links point to instead of the links.
    #[arg(long)]
    pub copy_links: bool,
    /// Make a full backup when the chain's full is older than TIME (e.g. 14D).
    #[arg(long, value_name = "TIME")]
    pub full_if_older_than: Option<String>,
    /// Make a full backup when the chain already has N incrementals.
    #[arg(long, value_name = "N")]
    pub full_if_n_inc: Option<usize>,
    /// Write no incremental set when nothing changed.
    #[arg(long)]
    pub skip_if_no_change: bool,
    /// Record changed files in the manifest (the default).
    #[arg(long, overrides_with = "no_files_changed")]
    pub files_changed: bool,
    /// Do not record changed files in the manifest.
    #[arg(long)]
    pub no_files_changed: bool,
    /// Parallel uploads and downloads.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub concurrency: usize,
    /// Accepted for compatibility; dupr always overlaps uploads with work.
    #[arg(long)]
    pub asynchronous_upload: bool,
    /// Prefix for every file name written to the target.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub file_prefix: String,
    /// Prefix for volume names.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub file_prefix_archive: String,
    /// Prefix for manifest names.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub file_prefix_manifest: String,
    /// Prefix for signature names.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub file_prefix_signature: String,
    /// Prefix for JSON statistics names.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub file_prefix_jsonstat: String,
}

/// Encryption and compression.
#[derive(Args, Debug)]
#[command(next_help_heading = "Encryption")]
pub struct CryptOpts {
    /// Encrypt volumes (the default).
    #[arg(long, overrides_with = "no_encryption")]
    pub encryption: bool,
    /// Store volumes gzipped instead of OpenPGP-encrypted.
    #[arg(long)]
    pub no_encryption: bool,
    /// Compress volumes (the default).
    #[arg(long, overrides_with = "no_compression")]
    pub compression: bool,
    /// Do not compress volumes.
    #[arg(long)]
    pub no_compression: bool,
    /// Deflate level 0-9 for gzip volumes and OpenPGP compression (default 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compress_level: Option<u32>,
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
    /// Accepted for compatibility (ineffective in duplicity too).
    #[arg(long, value_name = "PATH")]
    pub encrypt_secret_keyring: Option<PathBuf>,
    /// Accepted for compatibility: dupr encrypts natively, without a gpg binary.
    #[arg(long, value_name = "PATH")]
    pub gpg_binary: Option<PathBuf>,
    /// Extra GnuPG options, as duplicity passes them: --compress-algo,
    /// -z/--compress-level and --cipher-algo are honoured, others ignored
    /// with a warning. Write as --gpg-options='...'.
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    pub gpg_options: Vec<String>,
    /// Accepted for compatibility: dupr reads the passphrase from PASSPHRASE or the terminal.
    #[arg(long)]
    pub use_agent: bool,
    /// Not supported: dupr writes OpenPGP, not CMS.
    #[arg(long)]
    pub use_gpgsm: bool,
}

/// File selection: first matching option wins, in command-line order.
#[derive(Args, Debug)]
#[command(next_help_heading = "Selection")]
pub struct SelectOpts {
    /// Exclude paths matching this shell pattern (*, ?, **, [...], ignorecase:).
    #[arg(long, value_name = "SHELL_PATTERN")]
    pub exclude: Vec<OsString>,
    /// Include paths matching this shell pattern.
    #[arg(long, value_name = "SHELL_PATTERN")]
    pub include: Vec<OsString>,
    /// Exclude paths matching this regular expression.
    #[arg(long, value_name = "REGEXP")]
    pub exclude_regexp: Vec<OsString>,
    /// Include paths matching this regular expression.
    #[arg(long, value_name = "REGEXP")]
    pub include_regexp: Vec<OsString>,
    /// Exclude the patterns listed in FILE (lines starting "+ " include).
    #[arg(long, value_name = "FILE", visible_alias = "exclude-globbing-filelist")]
    pub exclude_filelist: Vec<PathBuf>,
    /// Include the patterns listed in FILE (lines starting "- " exclude).
    #[arg(long, value_name = "FILE", visible_alias = "include-globbing-filelist")]
    pub include_filelist: Vec<PathBuf>,
    /// --exclude-filelist read from standard input (duplicity 0.8).
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub exclude_filelist_stdin: Vec<bool>,
    /// --include-filelist read from standard input (duplicity 0.8).
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub include_filelist_stdin: Vec<bool>,
    /// Exclude directories that contain an entry named NAME.
    #[arg(long, value_name = "NAME")]
    pub exclude_if_present: Vec<OsString>,
    /// Exclude regular files last modified before TIME.
    #[arg(long, value_name = "TIME")]
    pub exclude_older_than: Vec<String>,
    /// Exclude files on other file systems than the source's.
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub exclude_other_filesystems: Vec<bool>,
    /// Exclude character and block devices.
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub exclude_device_files: Vec<bool>,
    /// Back up only the paths listed in FILE (relative to the source).
    #[arg(long, value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Read the following patterns as shell globs (the default).
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub filter_globbing: Vec<bool>,
    /// Read the following patterns as literal paths.
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub filter_literal: Vec<bool>,
    /// Read the following patterns as regular expressions.
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub filter_regexp: Vec<bool>,
    /// Match the following patterns case-insensitively.
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub filter_ignorecase: Vec<bool>,
    /// Match the following patterns case-sensitively (the default).
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub filter_strictcase: Vec<bool>,
    /// Filelists are separated by NUL characters instead of newlines.
    #[arg(long)]
    pub null_separator: bool,
}

/// Restore, verify and status.
#[derive(Args, Debug)]
#[command(next_help_heading = "Restore and verify")]
pub struct RestoreOpts {
    /// Restore (or verify) only this path, relative to the backup root.
    #[arg(
        short = 'r',
        long = "path-to-restore",
        visible_alias = "file-to-restore",
        value_name = "PATH"
    )]
    pub path_to_restore: Option<OsString>,
    /// Restore path FROM as TO (repeatable).
    #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
    pub rename: Vec<OsString>,
    /// Restore file owners (the default when run as root).
    #[arg(long, overrides_with = "no_restore_ownership")]
    pub restore_ownership: bool,
    /// Do not restore file owners.
    #[arg(long, visible_alias = "do-not-restore-ownership")]
    pub no_restore_ownership: bool,
    /// Restore owners by number, ignoring the names.
    #[arg(long)]
    pub numeric_owner: bool,
    /// verify: compare the backup's data and metadata with the source tree.
    #[arg(long)]
    pub compare_data: bool,
    /// verify URL (no source): read only this share of the volumes, e.g. 10%.
    #[arg(long, value_name = "PERCENT")]
    pub read_data_subset: Option<String>,
    /// collection-status: show the history of this path.
    #[arg(long, value_name = "PATH")]
    pub file_changed: Option<OsString>,
    /// collection-status: show the files changed in the given set (0 = newest).
    #[arg(long, value_name = "INDEX", num_args = 0..=1, default_missing_value = "0")]
    pub show_changes_in_set: Option<i64>,
}

/// `dupr mount` options.
#[derive(Args, Debug)]
#[command(next_help_heading = "Mount")]
pub struct MountOpts {
    /// mount: disk space for files rebuilt for reading (least recently used
    /// go first), in MiB; under --tempdir.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub mount_cache_mib: u64,
    /// mount: go to the background once mounted (default: stay in the
    /// foreground until unmounted, SIGINT or SIGTERM).
    #[arg(long)]
    pub daemon: bool,
}

/// Storage options (see the README for which backends dupr serves).
#[derive(Args, Debug)]
#[command(next_help_heading = "Storage")]
pub struct BackendOpts {
    #[arg(long)]
    pub ssh_askpass: bool,
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    pub ssh_options: Vec<String>,
    #[arg(long, value_name = "COMMAND")]
    pub scp_command: Option<String>,
    #[arg(long, value_name = "COMMAND")]
    pub sftp_command: Option<String>,
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    pub rsync_options: Option<String>,
    #[arg(long)]
    pub ftp_passive: bool,
    #[arg(long)]
    pub ftp_regular: bool,
    #[arg(long)]
    pub imap_full_address: bool,
    #[arg(long, value_name = "MAILBOX")]
    pub imap_mailbox: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub ssl_cacert_file: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub ssl_cacert_path: Option<PathBuf>,
    #[arg(long)]
    pub ssl_no_check_certificate: bool,
    #[arg(long, value_name = "CSV")]
    pub webdav_headers: Option<String>,
    /// S3 endpoint, e.g. http://127.0.0.1:3900 for a local Garage.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint_url: Option<String>,
    #[arg(long, value_name = "REGION")]
    pub s3_region_name: Option<String>,
    #[arg(long)]
    pub s3_unencrypted_connection: bool,
    #[arg(long)]
    pub s3_use_rrs: bool,
    #[arg(long)]
    pub s3_use_ia: bool,
    #[arg(long)]
    pub s3_use_onezone_ia: bool,
    #[arg(long)]
    pub s3_use_glacier: bool,
    #[arg(long)]
    pub s3_use_glacier_ir: bool,
    #[arg(long)]
    pub s3_use_deep_archive: bool,
    #[arg(long, value_name = "MB")]
    pub s3_multipart_chunk_size: Option<u64>,
    #[arg(long, value_name = "N")]
    pub s3_multipart_max_procs: Option<u32>,
    #[arg(long)]
    pub s3_use_server_side_encryption: bool,
    #[arg(long)]
    pub s3_use_server_side_kms_encryption: bool,
    #[arg(long, value_name = "ID")]
    pub s3_kms_key_id: Option<String>,
    #[arg(long, value_name = "GRANT")]
    pub s3_kms_grant: Option<String>,
    #[arg(long, value_name = "TIER")]
    pub azure_blob_tier: Option<String>,
    #[arg(long, value_name = "BYTES")]
    pub azure_max_single_put_size: Option<u64>,
    #[arg(long, value_name = "BYTES")]
    pub azure_max_block_size: Option<u64>,
    #[arg(long, value_name = "N")]
    pub azure_max_connections: Option<u32>,
    #[arg(long)]
    pub b2_hide_files: bool,
    #[arg(long, value_name = "BACKEND")]
    pub cf_backend: Option<String>,
    #[arg(long, value_name = "POLICY")]
    pub swift_storage_policy: Option<String>,
    #[arg(long, value_name = "MB")]
    pub mp_segment_size: Option<u64>,
    #[arg(long)]
    pub mf_purge: bool,
    #[arg(long, value_name = "PATH")]
    pub idr_fakeroot: Option<PathBuf>,
    #[arg(long, value_name = "PERCENT")]
    pub par2_redundancy: Option<u32>,
    #[arg(long, value_name = "N")]
    pub par2_volumes: Option<u32>,
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    pub par2_options: Option<String>,
}

/// Options of duplicity 0.8 and test hooks, accepted so old scripts run.
#[derive(Args, Debug)]
#[command(next_help_heading = "Compatibility (accepted, see warnings)")]
pub struct CompatOpts {
    #[arg(long)]
    pub s3_european_buckets: bool,
    #[arg(long)]
    pub s3_use_new_style: bool,
    #[arg(long, value_name = "SECONDS")]
    pub s3_multipart_max_timeout: Option<u64>,
    #[arg(long)]
    pub s3_use_multiprocessing: bool,
    #[arg(long)]
    pub gio: bool,
    #[arg(long)]
    pub old_filenames: bool,
    #[arg(long)]
    pub short_filenames: bool,
    #[arg(long, hide = true)]
    pub pydevd: bool,
    #[arg(long, value_name = "N", hide = true)]
    pub skip_volume: Option<u32>,
    #[arg(long, value_name = "N", hide = true)]
    pub fail_on_volume: Option<u32>,
    #[arg(long, hide = true)]
    pub help_backup: bool,
    #[arg(long, hide = true)]
    pub help_full: bool,
    #[arg(long, hide = true)]
    pub help_inc: bool,
    #[arg(long, hide = true)]
    pub help_restore: bool,
    #[arg(long, hide = true)]
    pub help_verify: bool,
    #[arg(long, hide = true)]
    pub help_cleanup: bool,
    #[arg(long, hide = true)]
    pub help_collection_status: bool,
    #[arg(long, hide = true)]
    pub help_list_current_files: bool,
    #[arg(long, hide = true)]
    pub help_remove_older_than: bool,
    #[arg(long, hide = true)]
    pub help_remove_all_but_n_full: bool,
    #[arg(long, hide = true)]
    pub help_remove_all_inc_of_but_n_full: bool,
    #[arg(long, hide = true)]
    pub help_urls: bool,
}

/// The parser. As in duplicity's argparse parser (which has no option that
/// looks like a negative number), a token such as `-1` after an option that
/// takes a value is that value, not an unknown option: `--show-changes-in-set
/// -1`, `--current-time -5`. Range checks then judge the number.
pub fn command() -> clap::Command {
    Cli::command().mut_args(|a| {
        // Before the build, an arg's action is already set by the derive;
        // `num_args = 0` marks the flags that take none.
        let takes =
            a.get_action().takes_values() && a.get_num_args().is_none_or(|n| n.takes_values());
        if takes {
            a.allow_negative_numbers(true)
        } else {
            a
        }
    })
}

/// Every option spelling (`--volsize`, `-t`) and whether it takes a value,
/// read from the built parser (only a built one knows each arity).
pub fn option_arity() -> std::collections::BTreeMap<String, bool> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = std::collections::BTreeMap::new();
    for a in cmd.get_arguments() {
        let takes = a.get_num_args().is_some_and(|n| n.takes_values())
            && !matches!(a.get_action(), ArgAction::SetTrue | ArgAction::Count);
        out.extend(a.get_long().map(|l| (format!("--{l}"), takes)));
        out.extend(a.get_short().map(|c| (format!("-{c}"), takes)));
    }
    out
}

/// The selection options in command-line order (duplicity's rule: the first
/// that matches wins), as the engine's [`Spec`].
pub fn selection_spec(m: &ArgMatches, now: i64) -> Result<Spec, String> {
    let mut items: Vec<(usize, Rule)> = Vec::new();
    let bytes = |v: &std::ffi::OsStr| v.as_bytes().to_vec();
    for id in [
        "exclude",
        "include",
        "exclude_regexp",
        "include_regexp",
        "exclude_if_present",
        "exclude_filelist",
        "include_filelist",
        "files_from",
        "exclude_older_than",
    ] {
        let (Some(ix), Some(vals)) = (m.indices_of(id), m.get_raw(id)) else {
            continue;
        };
        for (i, v) in ix.zip(vals) {
            if v.is_empty() {
                return Err(format!("option --{} cannot be empty", id.replace('_', "-")));
            }
            let rule = match id {
                "exclude" => Rule::Exclude(bytes(v)),
                "include" => Rule::Include(bytes(v)),
                "exclude_regexp" => Rule::ExcludeRegexp(bytes(v)),
                "include_regexp" => Rule::IncludeRegexp(bytes(v)),
                "exclude_if_present" => Rule::ExcludeIfPresent(bytes(v)),
                "exclude_filelist" => Rule::ExcludeFilelist(PathBuf::from(v)),
                "include_filelist" => Rule::IncludeFilelist(PathBuf::from(v)),
                "files_from" => Rule::FilesFrom(PathBuf::from(v)),
                _ => {
                    let s = v.to_string_lossy();
                    let t = dupr_core::time::parse_time_string(&s, now)
                        .map_err(|e| format!("--exclude-older-than: {e}"))?;
                    Rule::ExcludeOlderThan(t)
                }
            };
            items.push((i, rule));
        }
    }
    let stdin = || PathBuf::from("/dev/stdin");
    for id in [
        "exclude_other_filesystems",
        "exclude_device_files",
        "filter_globbing",
        "filter_literal",
        "filter_regexp",
        "filter_ignorecase",
        "filter_strictcase",
        "exclude_filelist_stdin",
        "include_filelist_stdin",
    ] {
        if m.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let Some(ix) = m.indices_of(id) else { continue };
        for i in ix {
            let rule = match id {
                "exclude_other_filesystems" => Rule::ExcludeOtherFilesystems,
                "exclude_device_files" => Rule::ExcludeDeviceFiles,
                "filter_globbing" => Rule::Filter(Filter::Globbing),
                "filter_literal" => Rule::Filter(Filter::Literal),
                "filter_regexp" => Rule::Filter(Filter::Regexp),
                "filter_ignorecase" => Rule::Filter(Filter::IgnoreCase),
                "filter_strictcase" => Rule::Filter(Filter::StrictCase),
                "exclude_filelist_stdin" => Rule::ExcludeFilelist(stdin()),
                _ => Rule::IncludeFilelist(stdin()),
            };
            items.push((i, rule));
        }
    }
    items.sort_by_key(|(i, _)| *i);
    Ok(Spec {
        rules: items.into_iter().map(|(_, r)| r).collect(),
        null_separator: m.get_flag("null_separator"),
    })
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
    Mount,
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
    ("mount", &[], Command::Mount),
];

/// Which help sections a command's `--help` shows, and its usage line.
fn command_help(c: Command) -> (&'static [&'static str], &'static str) {
    const ALL_BACKUP: &[&str] = &["General", "Backup", "Encryption", "Selection", "Storage"];
    const RESTORE: &[&str] = &["General", "Encryption", "Restore and verify", "Storage"];
    const VERIFY: &[&str] = &[
        "General",
        "Encryption",
        "Selection",
        "Restore and verify",
        "Storage",
    ];
    const TARGET: &[&str] = &["General", "Encryption", "Storage"];
    const STATUS: &[&str] = &["General", "Encryption", "Restore and verify", "Storage"];
    match c {
        Command::Backup => (ALL_BACKUP, "dupr [backup] [OPTIONS] SOURCE_DIR TARGET_URL"),
        Command::Full => (ALL_BACKUP, "dupr full [OPTIONS] SOURCE_DIR TARGET_URL"),
        Command::Incremental => (
            ALL_BACKUP,
            "dupr incremental [OPTIONS] SOURCE_DIR TARGET_URL",
        ),
        Command::Restore => (RESTORE, "dupr [restore] [OPTIONS] SOURCE_URL TARGET_DIR"),
        Command::Verify => (
            VERIFY,
            "dupr verify [OPTIONS] SOURCE_URL SOURCE_DIR\n       dupr verify [--read-data-subset N%] [OPTIONS] SOURCE_URL   (check the target alone)",
        ),
        Command::CollectionStatus => (STATUS, "dupr collection-status [OPTIONS] TARGET_URL"),
        Command::ListCurrentFiles => (TARGET, "dupr list-current-files [OPTIONS] TARGET_URL"),
        Command::Cleanup => (TARGET, "dupr cleanup [--force] [OPTIONS] TARGET_URL"),
        Command::RemoveOlderThan => (
            TARGET,
            "dupr remove-older-than TIME [--force] [OPTIONS] TARGET_URL",
        ),
        Command::RemoveAllButNFull => (
            TARGET,
            "dupr remove-all-but-n-full COUNT [--force] [OPTIONS] TARGET_URL",
        ),
        Command::RemoveAllIncOfButNFull => (
            TARGET,
            "dupr remove-all-inc-of-but-n-full COUNT [--force] [OPTIONS] TARGET_URL",
        ),
        Command::Mount => (
            &["General", "Encryption", "Mount", "Storage"],
            "dupr mount [OPTIONS] TARGET_URL MOUNTPOINT",
        ),
    }
}

/// `dupr COMMAND --help` and duplicity's `--help-COMMAND`: the options of
/// one command. Returns the exit code when help was printed.
pub fn help(argv: &[OsString]) -> Option<u8> {
    let words: Vec<&str> = argv.iter().skip(1).filter_map(|a| a.to_str()).collect();
    let mut cmd = None;
    let mut wanted = false;
    for w in &words {
        if *w == "--" {
            break;
        }
        if *w == "-h" || *w == "--help" {
            wanted = true;
        } else if let Some(name) = w.strip_prefix("--help-") {
            wanted = true;
            cmd = match name {
                "inc" => Some(Command::Incremental),
                "urls" => None,
                n => parse_command(n),
            };
            if name == "urls" {
                println!("{URLS_HELP}");
                return Some(0);
            }
        } else if cmd.is_none() && !w.starts_with('-') {
            cmd = parse_command(w);
        }
    }
    if wanted {
        // The wrapper's commands: the first word that is not an option.
        let first = words
            .iter()
            .take_while(|w| **w != "--")
            .enumerate()
            .find(|(i, w)| {
                let option_value =
                    *i > 0 && matches!(words[i - 1], "-p" | "--profile" | "-c" | "--config");
                !w.starts_with('-') && !option_value
            })
            .map(|(_, w)| *w);
        let text = match first {
            Some("profile") => Some(PROFILE_HELP),
            Some("schedule") => Some(SCHEDULE_HELP),
            Some("export-keys") => Some(EXPORT_KEYS_HELP),
            Some("import-keys") => Some(IMPORT_KEYS_HELP),
            // `dupr -p NAME --help`: the profile's help.
            None if words.iter().any(|w| {
                matches!(*w, "-p" | "--profile" | "-c" | "--config")
                    || w.starts_with("--profile=")
                    || w.starts_with("--config=")
            }) =>
            {
                Some(PROFILE_HELP)
            }
            _ => None,
        };
        if let Some(t) = text {
            print!("{t}");
            return Some(0);
        }
    }
    let c = cmd.filter(|_| wanted)?;
    let (sections, usage) = command_help(c);
    let mut command = Cli::command().override_usage(usage).mut_args(|a| {
        let keep = match a.get_help_heading() {
            Some(h) => sections.contains(&h),
            None => true,
        };
        if keep {
            a
        } else {
            a.hide(true)
        }
    });
    let _ = command.print_help();
    Some(0)
}

const PROFILE_HELP: &str = "\
Profiles: a backup's settings in one TOML file,
$XDG_CONFIG_HOME/dupr/profiles/NAME.toml (or any file given with -c FILE).

Usage: dupr profile list
       dupr profile show NAME
       dupr profile create NAME [SOURCE TARGET]
       dupr profile edit-check NAME
       dupr profile import FILE|DIR [NAME]
       dupr -p NAME [OPTIONS] [ACTION [ARGS]]
       dupr -c FILE [OPTIONS] [ACTION [ARGS]]

Commands:
  list                    the profiles and their last run
  show NAME               the profile's settings (passphrases hidden)
  create NAME             write a starter profile (mode 600)
  edit-check NAME         check the profile and the command lines it makes
  import FILE|DIR [NAME]  convert a duply profile directory or a
                          duplicity-backup.sh configuration file

Actions of dupr -p NAME:
  backup (the default)    pre hook, backup, retention, cleanup, post hook
  full, incr              a full or an incremental backup only
  verify                  compare the backup with the source
  status [--max-age TIME] the last success; exit 1 when it is older than TIME
  list, collection-status the files of the latest backup, the chains
  restore [DEST]          the latest backup into DEST (default: the source)
  fetch PATH DEST         one path of the latest backup
  mount DIR               every backup time as a read-only file system
  purge, cleanup          retention only, cleanup only
  export-keys FILE        see dupr export-keys --help

Options:
  -p, --profile NAME      the profile to run
  -c, --config FILE       the profile file to use
      --preview           print what the action would run and where its
                          passphrase comes from (never the secret); run nothing
      --max-age TIME      status: the age limit (default: the profile's, else 2D)
Every other dupr option given is passed on to each step of the run.

Passphrase of a run, first found wins: the profile's passphrase,
passphrase-file or passphrase-command; the environment's PASSPHRASE; asked
on the terminal (twice for a backup) when there is one. Unencrypted
profiles and backups to public keys need none. SIGN_PASSPHRASE: the
profile's sign-passphrase sources, then the environment; never asked.

Environment: DUPR_<KEY> overrides the profile's field or option KEY
(DUPR_TARGET=..., DUPR_VOLSIZE=50).
";

const SCHEDULE_HELP: &str = "\
Schedules: run dupr -p NAME backup regularly, through a systemd user timer,
or a crontab line where systemd is not usable (or with --cron).

Usage: dupr schedule install -p NAME --every INTERVAL [--cron] [--preview]
       dupr schedule list [-p NAME]
       dupr schedule remove -p NAME [--preview]

Options:
  -p, --profile NAME      the profile (or a positional NAME)
  -c, --config FILE       a profile file outside the profile directory
      --every INTERVAL    15m, 1h, 2h30m, 1d, 1w, @hourly, @daily, @weekly, ...
      --cron              write a crontab line even where systemd runs
      --preview, --dry-run
                          print exactly the unit files or crontab line that
                          would be written (or removed); change nothing

One schedule per profile: installing one kind removes the other. The
schedule holds no secret: the profile's passphrase source is read at run
time. A run skipped because the previous one is still going exits 102.
";

const EXPORT_KEYS_HELP: &str = "\
Export a profile for disaster recovery: the profile, the files it reads
and its OpenPGP keys (secret keys included) in one encrypted tar, opened
with gpg -d FILE | tar x or dupr import-keys FILE.

Usage: dupr -p NAME export-keys FILE [--export-passphrase-file PWFILE]

The export's passphrase, first found wins:
  --export-passphrase-file PWFILE   a private file (mode 600)
  DUPR_EXPORT_PASSPHRASE            the environment
  the terminal                      asked twice, when there is one
  the backup passphrase             the profile's, else PASSPHRASE
The export's README.txt says which one was used (never the secret).
The secret keys are unlocked with the backup passphrase (the profile's,
else PASSPHRASE) and SIGN_PASSPHRASE.
";

const IMPORT_KEYS_HELP: &str = "\
Import an export made by dupr -p NAME export-keys: the keys into GnuPG
(GNUPGHOME, else ~/.gnupg), the profile as
$XDG_CONFIG_HOME/dupr/profiles/NAME.toml and the files it reads next to it.
An existing profile is never replaced.

Usage: dupr import-keys FILE [--export-passphrase-file PWFILE]

The export's passphrase, first found wins: --export-passphrase-file PWFILE
(mode 600), DUPR_EXPORT_PASSPHRASE, PASSPHRASE, asked on the terminal.
";

const URLS_HELP: &str = "Target URLs (duplicity's spellings):
  file:///some_dir                 local directory (tested)
  s3://bucket/prefix, s3+http://bucket/prefix, boto3+s3://bucket/prefix
  sftp://user@host/dir, scp://..., webdav://..., webdavs://...
  gdrive://..., gdocs://..., dpbx:///some_dir, b2://..., azure://..., gs://..., swift://...
See the README for which of them this build serves.";

/// A command-line error duplicity's way: one line, then where to look; exit 2.
pub fn parse_error(e: clap::Error) -> u8 {
    use clap::error::{ContextKind, ErrorKind};
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::UnknownArgument => {
            let arg = e
                .get(ContextKind::InvalidArg)
                .map(|v| v.to_string())
                .unwrap_or_default();
            // clap reports an ambiguous abbreviation as unknown; say which
            // options it could mean, as duplicity's parsers do.
            let stem = arg.split('=').next().unwrap_or(&arg);
            let candidates: Vec<String> = match stem.strip_prefix("--") {
                Some(p) if !p.is_empty() => Cli::command()
                    .get_arguments()
                    .flat_map(|a| {
                        a.get_long_and_visible_aliases()
                            .unwrap_or_default()
                            .into_iter()
                            .map(str::to_string)
                    })
                    .filter(|l| l.starts_with(p))
                    .map(|l| format!("--{l}"))
                    .collect(),
                _ => Vec::new(),
            };
            if candidates.len() > 1 {
                eprintln!(
                    "dupr: error: ambiguous option: {stem} could match {}",
                    candidates.join(", ")
                );
                eprintln!("Enter 'dupr --help' for help screen.");
                return 2;
            }
            eprintln!("dupr: error: no such option: {arg}");
            eprintln!("Enter 'dupr --help' for help screen.");
            2
        }
        _ => {
            // duplicity 3.2.1 exits 23 for a bad option value, 2 stays for
            // the rest (unknown options, missing values).
            let code = match e.kind() {
                ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::InvalidUtf8 => 23,
                _ => 2,
            };
            let text = e.kind().as_str().map(str::to_string).unwrap_or_default();
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(&text)
                .trim_start_matches("error: ")
                .to_string();
            eprintln!("dupr: error: {first}");
            eprintln!("Enter 'dupr --help' for help screen.");
            code
        }
    }
}

/// `--generate man|bash|zsh|fish|elvish|powershell`: the man page or a
/// completion script, from the same definitions as the parser.
pub fn generate(what: &str) -> u8 {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    let shell = match what {
        "man" => {
            return match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("dupr: writing the man page: {e}");
                    1
                }
            };
        }
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        "fish" => clap_complete::Shell::Fish,
        "elvish" => clap_complete::Shell::Elvish,
        "powershell" => clap_complete::Shell::PowerShell,
        other => {
            eprintln!("dupr: error: --generate {other:?}: expected man, bash, zsh, fish, elvish or powershell");
            return 2;
        }
    };
    clap_complete::generate(shell, &mut cmd, "dupr", &mut out);
    0
}

/// One line for each option that is accepted but has no effect in dupr.
pub fn warn_ignored(cli: &Cli) {
    let b = &cli.backend;
    let c = &cli.compat;
    let list: &[(bool, &str)] = &[
        (
            cli.general.config_dir.is_some(),
            "--config-dir is ignored: dupr keeps no configuration there",
        ),
        (
            cli.general.ignore_errors,
            "--ignore-errors is ignored: dupr stops on errors that could lose data",
        ),
        (
            cli.general.time_separator.is_some(),
            "--time-separator is ignored: dupr reads every legacy name spelling",
        ),
        (
            cli.general.metadata_sync_mode.is_some(),
            "--metadata-sync-mode is ignored: dupr copies only the metadata it needs",
        ),
        (
            cli.backup.copy_blocksize.is_some(),
            "--copy-blocksize is ignored: dupr sizes its buffers itself",
        ),
        (
            cli.backup.asynchronous_upload,
            "--asynchronous-upload is ignored: dupr overlaps uploads with work anyway",
        ),
        (
            cli.crypt.encrypt_secret_keyring.is_some(),
            "--encrypt-secret-keyring is ignored (it has no effect in duplicity either)",
        ),
        (
            cli.crypt.gpg_binary.is_some(),
            "--gpg-binary is ignored: dupr does OpenPGP natively",
        ),
        (
            cli.crypt.use_agent,
            "--use-agent is ignored: give the passphrase in PASSPHRASE or on the terminal",
        ),
        (c.gio, "--gio is ignored: dupr does not use GIO"),
        (
            c.old_filenames,
            "--old-filenames is ignored: dupr writes duplicity's current names",
        ),
        (
            c.short_filenames,
            "--short-filenames is ignored: dupr writes long names (it reads short ones)",
        ),
        (
            c.s3_multipart_max_timeout.is_some(),
            "--s3-multipart-max-timeout is ignored: use --timeout",
        ),
        (
            c.s3_use_multiprocessing,
            "--s3-use-multiprocessing is ignored: use --concurrency",
        ),
        (
            c.pydevd,
            "--pydevd is ignored: it attaches duplicity's Python debugger",
        ),
        (
            c.skip_volume.is_some(),
            "--skip-volume is ignored: it is a duplicity test hook",
        ),
        (
            c.fail_on_volume.is_some(),
            "--fail-on-volume is ignored: it is a duplicity test hook",
        ),
        (
            b.par2_redundancy.is_some() || b.par2_volumes.is_some() || b.par2_options.is_some(),
            "--par2-* options are ignored: dupr does not write par2 recovery files",
        ),
        (
            b.ssh_askpass || b.scp_command.is_some() || b.sftp_command.is_some(),
            "--ssh-askpass, --scp-command and --sftp-command are ignored: dupr talks SFTP itself through the system ssh (keys and agent)",
        ),
        (
            b.rsync_options.is_some() || b.ftp_passive || b.ftp_regular,
            "--rsync-options and --ftp-* are ignored: dupr has no rsync or FTP backend",
        ),
        (
            b.imap_full_address || b.imap_mailbox.is_some(),
            "--imap-* options are ignored: dupr has no IMAP backend",
        ),
        (
            b.azure_blob_tier.is_some()
                || b.azure_max_single_put_size.is_some()
                || b.azure_max_block_size.is_some()
                || b.azure_max_connections.is_some(),
            "--azure-* options are ignored: use --concurrency for parallel transfers",
        ),
        (
            b.b2_hide_files
                || b.cf_backend.is_some()
                || b.swift_storage_policy.is_some()
                || b.mp_segment_size.is_some()
                || b.mf_purge
                || b.idr_fakeroot.is_some()
                || b.s3_kms_grant.is_some(),
            "backend options of services dupr does not serve this way (--b2-hide-files, --cf-backend, --swift-storage-policy, --mp-*, --mf-purge, --idr-fakeroot, --s3-kms-grant) are ignored",
        ),
    ];
    for (on, msg) in list {
        if *on {
            tracing::warn!("{msg}");
        }
    }
}

/// Numeric options outside what dupr can honour, as one line naming the
/// option (exit 23, before anything is read or written): too many threads
/// would abort the process, sizes beyond these overflow.
pub fn check_values(cli: &Cli) -> Result<(), String> {
    let b = &cli.backend;
    let checks: [(&str, Option<u64>, u64, u64); 8] = [
        ("--volsize", Some(cli.backup.volsize), 1, 1 << 20),
        ("--concurrency", Some(cli.backup.concurrency as u64), 1, 128),
        (
            "--num-retries",
            Some(cli.general.num_retries as u64),
            0,
            1000,
        ),
        (
            "--backend-retry-delay",
            Some(cli.general.backend_retry_delay),
            0,
            86_400,
        ),
        ("--timeout", Some(cli.general.timeout), 1, 86_400),
        (
            "--max-blocksize",
            cli.backup.max_blocksize.map(u64::from),
            1,
            1 << 30,
        ),
        (
            "--s3-multipart-chunk-size",
            b.s3_multipart_chunk_size,
            1,
            5120,
        ),
        (
            "--s3-multipart-max-procs",
            b.s3_multipart_max_procs.map(u64::from),
            1,
            64,
        ),
    ];
    for (name, v, lo, hi) in checks {
        if let Some(v) = v.filter(|v| !(lo..=hi).contains(v)) {
            return Err(format!("{name} {v}: out of range (allowed: {lo} to {hi})"));
        }
    }
    Ok(())
}

/// The remote file name prefixes (`--file-prefix*`).
pub fn prefixes(cli: &Cli) -> dupr_core::naming::Prefixes {
    dupr_core::naming::Prefixes {
        file: cli.backup.file_prefix.clone(),
        archive: cli.backup.file_prefix_archive.clone(),
        manifest: cli.backup.file_prefix_manifest.clone(),
        signature: cli.backup.file_prefix_signature.clone(),
        jsonstat: cli.backup.file_prefix_jsonstat.clone(),
    }
}

/// The storage options, from duplicity's backend flags.
pub fn backend_options(
    cli: &Cli,
    tempdir: &std::path::Path,
) -> anyhow::Result<dupr_core::backend::BackendOptions> {
    use dupr_core::backend::{BackendOptions, S3Options, SseMode};
    let b = &cli.backend;
    let classes = [
        (b.s3_use_rrs, "REDUCED_REDUNDANCY"),
        (b.s3_use_ia, "STANDARD_IA"),
        (b.s3_use_onezone_ia, "ONEZONE_IA"),
        (b.s3_use_glacier, "GLACIER"),
        (b.s3_use_glacier_ir, "GLACIER_IR"),
        (b.s3_use_deep_archive, "DEEP_ARCHIVE"),
    ];
    let sse = if b.s3_use_server_side_kms_encryption {
        let Some(id) = b.s3_kms_key_id.clone() else {
            anyhow::bail!("--s3-use-server-side-kms-encryption needs the key id (--s3-kms-key-id)");
        };
        Some(SseMode::Kms(id))
    } else if b.s3_use_server_side_encryption {
        Some(SseMode::Aes256)
    } else {
        None
    };
    let mut headers = Vec::new();
    if let Some(csv) = &b.webdav_headers {
        let f: Vec<&str> = csv.split(',').map(str::trim).collect();
        if !f.len().is_multiple_of(2) {
            anyhow::bail!("--webdav-headers wants NAME,VALUE pairs separated by commas");
        }
        for pair in f.chunks(2) {
            headers.push((pair[0].to_string(), pair[1].to_string()));
        }
    }
    Ok(BackendOptions {
        num_retries: cli.general.num_retries,
        retry_delay: std::time::Duration::from_secs_f64(cli.general.backend_retry_delay as f64),
        timeout: std::time::Duration::from_secs(cli.general.timeout.max(1)),
        concurrency: cli.backup.concurrency.max(1),
        tempdir: tempdir.to_path_buf(),
        s3: S3Options {
            endpoint_url: b.s3_endpoint_url.clone(),
            region_name: b.s3_region_name.clone(),
            unencrypted_connection: b.s3_unencrypted_connection,
            use_new_style: cli.compat.s3_use_new_style,
            european_buckets: cli.compat.s3_european_buckets,
            storage_class: classes
                .iter()
                .find(|(on, _)| *on)
                .map(|(_, c)| c.to_string()),
            sse,
        },
        // Smaller than duplicity's 20 MB x 4: each part in flight is held
        // in memory.
        s3_multipart_chunk_size: b.s3_multipart_chunk_size.unwrap_or(8).max(5) << 20,
        s3_multipart_max_procs: b.s3_multipart_max_procs.unwrap_or(2).max(1) as usize,
        ssh_options: b.ssh_options.clone(),
        ssl_cacert_file: b.ssl_cacert_file.clone(),
        ssl_cacert_path: b.ssl_cacert_path.clone(),
        ssl_no_check_certificate: b.ssl_no_check_certificate,
        webdav_headers: headers,
    })
}

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
