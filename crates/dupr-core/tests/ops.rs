//! The engine's commands driven through the library API (no binary): a
//! backup interrupted by a refusing target and then resumed, restores
//! collated across a full and its incrementals, and retention.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use dupr_core::backend::{self, Local};
use dupr_core::crypt::Crypto;
use dupr_core::index::Index;
use dupr_core::ops::{self, BackupKind, BackupRequest, Removal, RestoreRequest, Settings, Target};
use dupr_core::time::Timestamp;
use dupr_core::Error;

/// The engine's clock is process-wide (`time::set_now`): tests that move
/// it run one at a time.
static CLOCK: Mutex<()> = Mutex::new(());

fn clock() -> MutexGuard<'static, ()> {
    CLOCK.lock().unwrap_or_else(|p| p.into_inner())
}

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    store: PathBuf,
    cache: PathBuf,
    work: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| {
            let p = dir.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        Fixture {
            src: p("src"),
            store: p("store"),
            cache: p("cache"),
            work: p("work"),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.store.display())
    }

    fn settings(&self) -> Settings {
        let crypto = Crypto::symmetric(zeroize::Zeroizing::new(b"library test".to_vec()), true)
            .expect("a symmetric key");
        let mut s = Settings::new(self.url(), Some(crypto));
        s.archive_dir = Some(self.cache.clone());
        s.tempdir = self.work.clone();
        s.backend.num_retries = 0;
        s.backend.tempdir = self.work.clone();
        s
    }

    /// The target through the local backend, with `faults` (rules as in
    /// `DUPR_FAULTS`) injected.
    fn target_with(&self, faults: &str) -> Target {
        let s = self.settings();
        let local = Box::new(Local::new(self.store.clone(), &s.url));
        let b = backend::wrap(local, &s.backend, faults).expect("the fault rules parse");
        Target::open(s, b).expect("the target opens")
    }

    fn target(&self) -> Target {
        self.target_with("")
    }

    fn write(&self, rel: &str, data: &[u8]) {
        let p = self.src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    fn backup(&self, t: &Target, kind: BackupKind) -> dupr_core::Result<ops::BackupOutcome> {
        let mut req = BackupRequest::new(&self.src);
        req.volsize_mib = 1;
        req.kind = kind;
        ops::backup(t, req)
    }

    fn restore(&self, t: &Target, time: Timestamp, path: Option<&str>, dest: &Path) {
        let mut req = RestoreRequest::new(time, dest);
        req.path = path.map(|p| Index::parse(p.as_bytes()).unwrap());
        ops::restore(t, req).expect("the restore succeeds");
    }
}

/// Every regular file under `root`, by relative path, with its bytes.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Bytes that do not compress, so that a few MiB fill several 1 MiB volumes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn stored(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn an_interrupted_backup_resumes_where_it_stopped() {
    let _c = clock();
    dupr_core::time::set_now(1_700_000_000);
    let f = Fixture::new();
    for i in 0..5 {
        f.write(&format!("big/{i}.bin"), &noise(900 << 10, i));
    }
    f.write("small.txt", b"small\n");

    // A target that refuses for good (a permission): the run fails and
    // leaves nothing behind, no volumes of a set that will never complete.
    let e = f
        .backup(&f.target_with("put:4+:deny"), BackupKind::Full)
        .err()
        .expect("the refused upload fails the run");
    assert!(
        matches!(
            e,
            Error::Backend {
                transient: false,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(stored(&f.store), Vec::<String>::new());

    // A target that fails for now (retries exhausted): the volumes stored
    // so far stay, with no manifest, so the set never looks complete.
    let e = f
        .backup(&f.target_with("put:4+:fail"), BackupKind::Full)
        .err()
        .expect("the failing upload fails the run");
    assert!(e.is_transient(), "{e}");
    let before = stored(&f.store);
    let vols_before = before.iter().filter(|n| n.contains(".vol")).count();
    assert!(vols_before >= 2, "{before:?}");
    assert!(
        !before.iter().any(|n| n.contains(".manifest")),
        "{before:?}"
    );

    // The next run continues the same set: a volume already stored is
    // not uploaded again (the target refuses any such upload here), and
    // the set completes.
    let stored_vols: Vec<String> = before
        .iter()
        .filter(|n| n.contains(".vol"))
        .map(|n| format!("put:~{n}:deny"))
        .collect();
    let out = f
        .backup(&f.target_with(&stored_vols.join(",")), BackupKind::Auto)
        .expect("the resumed run completes without storing a volume twice");
    assert!(!out.incremental, "resuming the interrupted full");
    let after = stored(&f.store);
    let vols_after = after.iter().filter(|n| n.contains(".vol")).count();
    assert!(vols_after > vols_before, "{after:?}");
    // One set, the interrupted one: its volumes kept, no second set time.
    for n in &before {
        assert!(after.contains(n), "{n} was removed: {after:?}");
    }
    let set_of = |n: &String| n.split(".vol").next().map(str::to_string);
    let sets: std::collections::BTreeSet<_> = after
        .iter()
        .filter(|n| n.contains(".vol"))
        .filter_map(set_of)
        .collect();
    assert_eq!(sets.len(), 1, "{after:?}");
    let manifests: Vec<_> = after.iter().filter(|n| n.contains(".manifest")).collect();
    assert_eq!(manifests.len(), 1, "one set: {after:?}");

    let dest = f.work.join("restored");
    f.restore(&f.target(), dupr_core::time::now(), None, &dest);
    assert_eq!(tree(&dest), tree(&f.src));
}

#[test]
fn restores_collate_the_full_and_its_incrementals() {
    let _c = clock();
    let f = Fixture::new();
    let text: Vec<u8> = (0..40_000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    f.write("keep.txt", b"unchanged\n");
    f.write("grow.log", &text);
    f.write("gone.txt", b"deleted later\n");
    f.write("dir/edit.txt", b"first version\n");

    let t0 = 1_700_000_000;
    dupr_core::time::set_now(t0);
    let t = f.target();
    assert!(!f.backup(&t, BackupKind::Full).unwrap().incremental);
    let state0 = tree(&f.src);

    // A delta (an append), a deletion, an edit and a new file.
    let mut grown = text.clone();
    grown.extend_from_slice(b"appended\n");
    f.write("grow.log", &grown);
    std::fs::remove_file(f.src.join("gone.txt")).unwrap();
    f.write("dir/edit.txt", b"second version\n");
    f.write("dir/new.txt", b"new\n");
    dupr_core::time::set_now(t0 + 3600);
    assert!(f.backup(&t, BackupKind::Incremental).unwrap().incremental);
    let state1 = tree(&f.src);

    f.write("dir/edit.txt", b"third version\n");
    dupr_core::time::set_now(t0 + 7200);
    assert!(f.backup(&t, BackupKind::Auto).unwrap().incremental);
    let state2 = tree(&f.src);

    for (when, want, name) in [
        (t0, &state0, "at0"),
        (t0 + 3600, &state1, "at1"),
        (t0 + 7200, &state2, "at2"),
    ] {
        let dest = f.work.join(name);
        f.restore(&t, when, None, &dest);
        assert_eq!(&tree(&dest), want, "the state at {when}");
    }
    // Between two sets: the older one's state.
    let dest = f.work.join("between");
    f.restore(&t, t0 + 5000, None, &dest);
    assert_eq!(tree(&dest), state1);

    // One path: the delta applied to its full's snapshot.
    let one = f.work.join("one.log");
    f.restore(&t, t0 + 7200, Some("grow.log"), &one);
    assert_eq!(std::fs::read(&one).unwrap(), grown);

    // A path deleted in a later set is not there any more.
    let mut req = RestoreRequest::new(t0 + 7200, f.work.join("gone"));
    req.path = Index::parse(b"gone.txt");
    let e = ops::restore(&t, req).expect_err("a deleted path is not restored");
    assert!(matches!(e, Error::PathNotFound(_)), "{e}");
}

#[test]
fn retention_removes_whole_old_chains_only() {
    let _c = clock();
    let f = Fixture::new();
    f.write("a.txt", b"a\n");
    let t = f.target();
    let day = 86_400;
    let t0 = 1_700_000_000;
    // Two chains: full + incremental, then full + incremental.
    for (i, (when, kind)) in [
        (t0, BackupKind::Full),
        (t0 + day, BackupKind::Incremental),
        (t0 + 2 * day, BackupKind::Full),
        (t0 + 3 * day, BackupKind::Incremental),
    ]
    .into_iter()
    .enumerate()
    {
        f.write("a.txt", format!("version {i}\n").as_bytes());
        dupr_core::time::set_now(when);
        f.backup(&t, kind).unwrap();
    }
    let all = stored(&f.store);
    let (_, c) = t.collection().unwrap();
    assert_eq!(c.chains.len(), 2);

    // Without force: a list, nothing deleted.
    let r = ops::remove(&t, Removal::OlderThan(t0 + 2 * day), false).unwrap();
    assert!(!r.files.is_empty());
    assert_eq!(stored(&f.store), all);

    // A time inside the second chain removes the first chain whole (its
    // incremental too), never a set the newer chain needs.
    let r = ops::remove(&t, Removal::OlderThan(t0 + 2 * day + 1), true).unwrap();
    let left = stored(&f.store);
    for n in &r.files {
        assert!(!left.contains(n), "{n} still stored");
    }
    let (_, c) = t.collection().unwrap();
    assert_eq!(c.chains.len(), 1);
    assert_eq!(c.chains[0].start(), t0 + 2 * day);
    let dest = f.work.join("latest");
    f.restore(&t, t0 + 3 * day, None, &dest);
    assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"version 3\n");

    // The last chain is never removed, whatever the time.
    ops::remove(&t, Removal::OlderThan(t0 + 30 * day), true).unwrap();
    let (_, c) = t.collection().unwrap();
    assert_eq!(c.chains.len(), 1);
    ops::remove(&t, Removal::AllButNFull(1), true).unwrap();
    assert_eq!(t.collection().unwrap().1.chains.len(), 1);
}
