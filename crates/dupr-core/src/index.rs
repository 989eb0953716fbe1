//! An index is a path relative to the backup root, compared component by
//! component (duplicity's tuple order): `a` < `a/b` < `a.b`. Plain byte order
//! of the joined string would put `a.b` before `a/b`, so it is not used.

use std::cmp::Ordering;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Relative path bytes with components joined by `/`; empty for the root.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Index(Vec<u8>);

/// In JSON reports a path is its display form as a string (bytes that are
/// not UTF-8 become U+FFFD).
impl serde::Serialize for Index {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(self.display_bytes()))
    }
}

impl Index {
    /// The backup root itself.
    pub fn root() -> Self {
        Index(Vec::new())
    }

    /// Build from already-validated `/`-joined bytes (no empty, `.` or `..` components).
    pub fn from_bytes(b: impl Into<Vec<u8>>) -> Self {
        Index(b.into())
    }

    /// Parse a user-given relative path (`a/b`, `./a//b/`); `..` is refused.
    pub fn parse(s: &[u8]) -> Option<Self> {
        let mut out = Vec::with_capacity(s.len());
        for c in s.split(|&b| b == b'/') {
            match c {
                b"" | b"." => continue,
                b".." => return None,
                c => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(c);
                }
            }
        }
        Some(Index(out))
    }

    /// True for the backup root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path bytes, components joined by `/` (empty for the root).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path's components, none for the root.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        let empty = self.0.is_empty();
        self.0.split(|&b| b == b'/').filter(move |_| !empty)
    }

    /// The number of components (0 for the root).
    pub fn len(&self) -> usize {
        self.components().count()
    }

    /// True for the root, which has no components.
    pub fn is_empty(&self) -> bool {
        self.is_root()
    }

    /// The path of `name` (one component) inside this directory.
    pub fn join(&self, name: &[u8]) -> Index {
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        Index(v)
    }

    /// The directory holding this path; None for the root.
    pub fn parent(&self) -> Option<Index> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(p) => Index(self.0[..p].to_vec()),
            None => Index::root(),
        })
    }

    /// True if `self` equals `other` or lies below it.
    pub fn starts_with(&self, other: &Index) -> bool {
        if other.is_root() {
            return true;
        }
        self.0.starts_with(&other.0)
            && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/')
    }

    /// Strip the leading `prefix` components; None if not below it.
    pub fn strip_prefix(&self, prefix: &Index) -> Option<Index> {
        if !self.starts_with(prefix) {
            return None;
        }
        if prefix.is_root() {
            return Some(self.clone());
        }
        let rest = &self.0[prefix.0.len()..];
        Some(Index(rest.strip_prefix(b"/").unwrap_or(rest).to_vec()))
    }

    /// The first `n` components.
    pub fn truncate(&self, n: usize) -> Index {
        if n == 0 {
            return Index::root();
        }
        let mut seen = 0;
        for (i, &b) in self.0.iter().enumerate() {
            if b == b'/' {
                seen += 1;
                if seen == n {
                    return Index(self.0[..i].to_vec());
                }
            }
        }
        self.clone()
    }

    /// The path below `base` this index names.
    pub fn to_path(&self, base: &Path) -> PathBuf {
        if self.is_root() {
            base.to_path_buf()
        } else {
            base.join(std::ffi::OsStr::from_bytes(&self.0))
        }
    }

    /// `.` for the root, else the joined bytes (list-current-files style).
    pub fn display_bytes(&self) -> &[u8] {
        if self.is_root() {
            b"."
        } else {
            &self.0
        }
    }
}

impl Ord for Index {
    fn cmp(&self, other: &Self) -> Ordering {
        // Comparing with '/' mapped below every other byte gives tuple order.
        let key = |b: u8| if b == b'/' { 0u16 } else { b as u16 + 1 };
        let mut a = self.0.iter();
        let mut b = other.0.iter();
        loop {
            match (a.next(), b.next()) {
                (None, None) => return Ordering::Equal,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (Some(&x), Some(&y)) => match key(x).cmp(&key(y)) {
                    Ordering::Equal => continue,
                    o => return o,
                },
            }
        }
    }
}

impl PartialOrd for Index {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Index({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.display_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ix(s: &str) -> Index {
        Index::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn tuple_order() {
        assert!(ix("") < ix("a"));
        assert!(ix("a") < ix("a/b"));
        assert!(ix("a/b") < ix("a.b"));
        assert!(ix("a/z") < ix("a.b"));
        assert!(ix("ab") > ix("a/zzz"));
    }

    #[test]
    fn parse_and_parts() {
        assert_eq!(ix("./a//b/"), ix("a/b"));
        assert!(Index::parse(b"a/../b").is_none());
        assert_eq!(ix("a/b/c").parent(), Some(ix("a/b")));
        assert_eq!(ix("a").parent(), Some(Index::root()));
        assert!(ix("a/b").starts_with(&ix("a")));
        assert!(!ix("ab").starts_with(&ix("a")));
        assert_eq!(ix("a/b/c").strip_prefix(&ix("a")), Some(ix("b/c")));
        assert_eq!(ix("a/b/c").truncate(2), ix("a/b"));
        assert_eq!(ix("a/b/c").len(), 3);
        assert_eq!(Index::root().len(), 0);
    }

    proptest! {
        #[test]
        fn order_matches_component_tuples(a in proptest::collection::vec("[a-c./]{1,3}", 0..4),
                                          b in proptest::collection::vec("[a-c./]{1,3}", 0..4)) {
            let clean = |v: &Vec<String>| -> Vec<Vec<u8>> {
                v.iter().map(|s| s.replace('/', "").into_bytes())
                    .filter(|c| !c.is_empty() && c != b"." && c != b"..").collect()
            };
            let (ca, cb) = (clean(&a), clean(&b));
            let ia = Index::from_bytes(ca.join(&b'/'));
            let ib = Index::from_bytes(cb.join(&b'/'));
            prop_assert_eq!(ia.cmp(&ib), ca.cmp(&cb));
        }
    }
}
