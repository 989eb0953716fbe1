//! File metadata as duplicity records it (lstat: permission bits, owner by
//! id and name, integer mtime, symlink target, device numbers) and its
//! mapping to and from tar headers.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::tar::{self, Header};

/// The type of a file, as lstat reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A Unix socket: the walk skips these and a restore ignores them.
    Socket,
}

impl Kind {
    /// The word list-current-files' machine output uses.
    pub fn word(self) -> &'static str {
        match self {
            Kind::File => "reg",
            Kind::Dir => "dir",
            Kind::Symlink => "sym",
            Kind::Fifo => "fifo",
            Kind::Char => "chr",
            Kind::Block => "blk",
            Kind::Socket => "sock",
        }
    }
}

/// One file's metadata: from lstat during a backup, or from a tar header
/// of a difftar or sigtar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The file's type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub perms: u32,
    /// The owner's user id.
    pub uid: u32,
    /// The owner's group id.
    pub gid: u32,
    /// The owner's user name; empty when the id has no name.
    pub uname: Vec<u8>,
    /// The owner's group name; empty when the id has no name.
    pub gname: Vec<u8>,
    /// Modification time, in whole seconds since the epoch (never negative
    /// from lstat).
    pub mtime: i64,
    /// Regular file size from lstat (not stored in archives).
    pub size: u64,
    /// The symlink's target; empty for other kinds.
    pub link: Vec<u8>,
    /// Major device number (character and block devices).
    pub devmajor: u32,
    /// Minor device number (character and block devices).
    pub devminor: u32,
    /// What dupr's own signature files add (PAX `DUPR.size`,
    /// `DUPR.mtime_nsec`) so a change within the same second, or of size
    /// alone, is never missed; None for duplicity's.
    pub exact: Option<Exact>,
    /// Device and inode (from lstat; 0 for archived entries).
    pub dev: u64,
    /// Inode number; see `dev`.
    pub ino: u64,
}

/// A regular file's exact size and sub-second mtime, beyond what tar headers
/// hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exact {
    /// Size in bytes.
    pub size: u64,
    /// Nanoseconds past `Meta::mtime`'s second.
    pub mtime_nsec: u32,
}

impl Meta {
    /// The metadata lstat gave, with `link` the symlink target (empty for
    /// other kinds); `names` resolves the owner's names.
    pub fn from_fs(md: &Metadata, link: Vec<u8>, names: &mut Names) -> Self {
        let ft = md.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else {
            Kind::Socket
        };
        let rdev = md.rdev();
        Meta {
            kind,
            perms: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            uname: names.user(md.uid()),
            gname: names.group(md.gid()),
            mtime: md.mtime().max(0),
            size: if kind == Kind::File { md.len() } else { 0 },
            link,
            devmajor: libc::major(rdev),
            devminor: libc::minor(rdev),
            dev: md.dev(),
            ino: md.ino(),
            exact: (kind == Kind::File).then(|| Exact {
                size: md.len(),
                mtime_nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
            }),
        }
    }

    /// The metadata a tar header records; None for an entry type without a
    /// [`Kind`] (a hard link, say).
    pub fn from_header(h: &Header) -> Option<Self> {
        let kind = match h.typeflag {
            tar::REGTYPE | b'7' => Kind::File,
            tar::DIRTYPE => Kind::Dir,
            tar::SYMTYPE => Kind::Symlink,
            tar::FIFOTYPE => Kind::Fifo,
            tar::CHRTYPE => Kind::Char,
            tar::BLKTYPE => Kind::Block,
            _ => return None,
        };
        Some(Meta {
            kind,
            perms: h.mode & 0o7777,
            uid: h.uid as u32,
            gid: h.gid as u32,
            uname: h.uname.clone(),
            gname: h.gname.clone(),
            mtime: h.mtime,
            size: 0,
            link: h.linkname.clone(),
            devmajor: h.devmajor,
            devminor: h.devminor,
            exact: exact_from_pax(&h.extra),
            dev: 0,
            ino: 0,
        })
    }

    /// The PAX records carrying `exact` (sigtar entries of regular files).
    pub fn exact_pax(&self) -> Vec<(String, Vec<u8>)> {
        match self.exact {
            Some(x) => vec![
                ("DUPR.size".into(), x.size.to_string().into_bytes()),
                (
                    "DUPR.mtime_nsec".into(),
                    x.mtime_nsec.to_string().into_bytes(),
                ),
            ],
            None => Vec::new(),
        }
    }

    /// A tar header for this file under `name` holding `size` data bytes.
    pub fn header(&self, name: Vec<u8>, size: u64) -> Header {
        let typeflag = match self.kind {
            Kind::File | Kind::Socket => tar::REGTYPE,
            Kind::Dir => tar::DIRTYPE,
            Kind::Symlink => tar::SYMTYPE,
            Kind::Fifo => tar::FIFOTYPE,
            Kind::Char => tar::CHRTYPE,
            Kind::Block => tar::BLKTYPE,
        };
        Header {
            name,
            typeflag,
            mode: self.perms,
            uid: self.uid as u64,
            gid: self.gid as u64,
            size,
            mtime: self.mtime,
            linkname: if self.kind == Kind::Symlink {
                self.link.clone()
            } else {
                Vec::new()
            },
            uname: self.uname.clone(),
            gname: self.gname.clone(),
            devmajor: self.devmajor,
            devminor: self.devminor,
            extra: Vec::new(),
        }
    }

    /// duplicity's change test (reference 2.8), plus a size change for
    /// regular files when both sizes are known.
    pub fn differs(&self, old: &Meta) -> bool {
        if self.kind != old.kind {
            return true;
        }
        match self.kind {
            Kind::Symlink => self.link != old.link,
            Kind::Char | Kind::Block => {
                self.perms != old.perms
                    || self.uid != old.uid
                    || self.gid != old.gid
                    || self.devmajor != old.devmajor
                    || self.devminor != old.devminor
            }
            _ => {
                let mt_eq = self.mtime == old.mtime || (self.mtime <= 0 && old.mtime <= 0);
                // dupr's own sigtars know the exact size and sub-second mtime.
                let exact_eq = match (self.exact, old.exact) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                self.perms != old.perms
                    || self.uid != old.uid
                    || self.gid != old.gid
                    || !mt_eq
                    || !exact_eq
            }
        }
    }
}

fn exact_from_pax(extra: &[(String, Vec<u8>)]) -> Option<Exact> {
    let get = |k: &str| {
        extra
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
    };
    Some(Exact {
        size: get("DUPR.size")?,
        mtime_nsec: get("DUPR.mtime_nsec")?.min(999_999_999) as u32,
    })
}

/// uid/gid → name lookups, cached (a backup asks for the same few ids
/// millions of times).
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
    uids: HashMap<Vec<u8>, Option<u32>>,
    gids: HashMap<Vec<u8>, Option<u32>>,
}

impl Names {
    /// The user name of `uid`, empty if it has none.
    pub fn user(&mut self, uid: u32) -> Vec<u8> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name.into_bytes())
                    .unwrap_or_default()
            })
            .clone()
    }

    /// The group name of `gid`, empty if it has none.
    pub fn group(&mut self, gid: u32) -> Vec<u8> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name.into_bytes())
                    .unwrap_or_default()
            })
            .clone()
    }

    /// The local uid for a recorded user name, falling back to the number.
    pub fn uid_for(&mut self, name: &[u8], fallback: u32) -> u32 {
        if name.is_empty() {
            return fallback;
        }
        let found = *self.uids.entry(name.to_vec()).or_insert_with(|| {
            std::str::from_utf8(name)
                .ok()
                .and_then(|n| nix::unistd::User::from_name(n).ok().flatten())
                .map(|u| u.uid.as_raw())
        });
        found.unwrap_or(fallback)
    }

    /// The local gid for a recorded group name, falling back to the number.
    pub fn gid_for(&mut self, name: &[u8], fallback: u32) -> u32 {
        if name.is_empty() {
            return fallback;
        }
        let found = *self.gids.entry(name.to_vec()).or_insert_with(|| {
            std::str::from_utf8(name)
                .ok()
                .and_then(|n| nix::unistd::Group::from_name(n).ok().flatten())
                .map(|g| g.gid.as_raw())
        });
        found.unwrap_or(fallback)
    }
}

/// The role of a tar entry in difftars and sigtars (reference 2.2, 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The whole file (`snapshot/`, `multivol_snapshot/`); in a sigtar, a
    /// file without a signature (not a regular file), by its header alone.
    Snapshot,
    /// An rdiff delta against the previous backup (`diff/`, `multivol_diff/`).
    Diff,
    /// A file gone since the previous backup (`deleted/`).
    Deleted,
    /// A file's rsync signature, in a sigtar (`signature/`).
    Signature,
}

impl Role {
    /// The entry name prefix for this role; `multivol` picks the chunked form
    /// of snapshots and diffs, which the others do not have.
    pub fn prefix(self, multivol: bool) -> &'static str {
        match (self, multivol) {
            (Role::Snapshot, false) => "snapshot/",
            (Role::Snapshot, true) => "multivol_snapshot/",
            (Role::Diff, false) => "diff/",
            (Role::Diff, true) => "multivol_diff/",
            (Role::Deleted, _) => "deleted/",
            (Role::Signature, _) => "signature/",
        }
    }
}

/// A parsed entry name: role, index and multivol chunk number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryName {
    /// What the entry holds for the file.
    pub role: Role,
    /// The file's path in the archive.
    pub index: crate::index::Index,
    /// The chunk number, from 1, of a `multivol_` entry; None for others.
    pub chunk: Option<u64>,
}

/// Tar entry name for `index` in `role`; `dir` adds the trailing slash and
/// `root_dot` writes the root as `./` (difftars) rather than `` (sigtars).
pub fn entry_name(
    role: Role,
    index: &crate::index::Index,
    chunk: Option<u64>,
    dir: bool,
    root_dot: bool,
) -> Vec<u8> {
    let mut n = role.prefix(chunk.is_some()).as_bytes().to_vec();
    if index.is_root() {
        if root_dot {
            n.extend_from_slice(b".");
        }
    } else {
        n.extend_from_slice(index.as_bytes());
    }
    if let Some(c) = chunk {
        n.push(b'/');
        n.extend_from_slice(c.to_string().as_bytes());
    }
    if dir && !n.ends_with(b"/") {
        n.push(b'/');
    }
    n
}

/// Why a tar entry's name is not one duplicity writes (the name follows,
/// lossily decoded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryNameError {
    /// The name starts with none of the known prefixes.
    #[error("unknown tar entry {0:?}")]
    Unknown(String),
    /// The path after the prefix starts with `/`.
    #[error("absolute path in tar entry {0:?}")]
    Absolute(String),
    /// A `multivol_` name without a `/N` chunk suffix.
    #[error("multivol entry without chunk number {0:?}")]
    NoChunk(String),
    /// A `multivol_` name whose chunk suffix is not a number.
    #[error("bad chunk number in {0:?}")]
    BadChunk(String),
    /// A `..` component: a path that would leave the restore root.
    #[error("path outside the backup root in tar entry {0:?}")]
    OutsideRoot(String),
}

/// Parse an entry name, refusing `..`, absolute paths and unknown prefixes.
pub fn parse_entry_name(name: &[u8]) -> Result<EntryName, EntryNameError> {
    let show = || String::from_utf8_lossy(name).into_owned();
    let table: [(&[u8], Role, bool); 6] = [
        (b"multivol_snapshot/", Role::Snapshot, true),
        (b"multivol_diff/", Role::Diff, true),
        (b"snapshot/", Role::Snapshot, false),
        (b"diff/", Role::Diff, false),
        (b"deleted/", Role::Deleted, false),
        (b"signature/", Role::Signature, false),
    ];
    let (rest, role, multivol) = table
        .iter()
        .find_map(|(p, r, m)| name.strip_prefix(*p).map(|rest| (rest, *r, *m)))
        .or_else(|| match name {
            b"snapshot" => Some((&b""[..], Role::Snapshot, false)),
            _ => None,
        })
        .ok_or_else(|| EntryNameError::Unknown(show()))?;
    if rest.starts_with(b"/") {
        return Err(EntryNameError::Absolute(show()));
    }
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    let (path, chunk) = if multivol {
        let slash = rest
            .iter()
            .rposition(|&b| b == b'/')
            .ok_or_else(|| EntryNameError::NoChunk(show()))?;
        let n = std::str::from_utf8(&rest[slash + 1..])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| EntryNameError::BadChunk(show()))?;
        (&rest[..slash], Some(n))
    } else {
        (rest, None)
    };
    let index =
        crate::index::Index::parse(path).ok_or_else(|| EntryNameError::OutsideRoot(show()))?;
    Ok(EntryName { role, index, chunk })
}

#[cfg(test)]
mod name_tests {
    use super::*;
    use crate::index::Index;

    #[test]
    fn names_round_trip() {
        let ix = Index::from_bytes(*b"dir1/large.bin");
        let n = entry_name(Role::Snapshot, &ix, Some(3), false, true);
        assert_eq!(n, b"multivol_snapshot/dir1/large.bin/3");
        let p = parse_entry_name(&n).unwrap();
        assert_eq!((p.role, p.index, p.chunk), (Role::Snapshot, ix, Some(3)));
        assert_eq!(
            entry_name(Role::Snapshot, &Index::root(), None, true, true),
            b"snapshot/./"
        );
        assert_eq!(
            entry_name(Role::Snapshot, &Index::root(), None, true, false),
            b"snapshot/"
        );
        assert!(parse_entry_name(b"snapshot/./").unwrap().index.is_root());
        assert!(parse_entry_name(b"snapshot/").unwrap().index.is_root());
        assert!(matches!(
            parse_entry_name(b"snapshot/a/../../etc/passwd"),
            Err(EntryNameError::OutsideRoot(_))
        ));
        assert!(matches!(
            parse_entry_name(b"snapshot//etc/passwd"),
            Err(EntryNameError::Absolute(_))
        ));
        assert!(matches!(
            parse_entry_name(b"evil/x"),
            Err(EntryNameError::Unknown(_))
        ));
        assert!(matches!(
            parse_entry_name(b"multivol_snapshot/a/x"),
            Err(EntryNameError::BadChunk(_))
        ));
    }
}
