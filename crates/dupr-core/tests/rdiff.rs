//! Byte-compatibility with librsync, checked against Debian's real `rdiff`
//! (installed by scripts/install-test-deps; a missing rdiff fails the test).

use std::process::Command;

use dupr_core::delta;
use dupr_core::signature::{block_len, SigBuilder};

fn rdiff(args: &[&std::ffi::OsStr]) {
    let out = Command::new("rdiff")
        .args(args)
        .output()
        .expect("rdiff must be installed (scripts/install-test-deps)");
    assert!(
        out.status.success(),
        "rdiff {:?}: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pseudo(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            if (i / 4096) % 3 == 0 {
                // Compressible stretches too.
                b"the quick brown fox "[i % 20]
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn our_signature(data: &[u8], bl: u32) -> Vec<u8> {
    let mut s = SigBuilder::new(bl);
    for c in data.chunks(65536) {
        s.update(c);
    }
    s.finish()
}

#[test]
fn signatures_are_byte_identical_to_rdiff() {
    let dir = tempfile::tempdir().unwrap();
    for (size, fixed_bl) in [
        (0usize, None),
        (6, None),
        (100_000, None),
        (1_500_000, None),
        (12_345_679, None),
        (3_000_000, Some(2048u32)),
        (3_000_000, Some(65536)),
    ] {
        let data = pseudo(size, size as u64 + 7);
        let f = dir.path().join("f");
        std::fs::write(&f, &data).unwrap();
        let bl = fixed_bl.unwrap_or_else(|| block_len(size as u64, None));
        let sig = dir.path().join("f.sig");
        let _ = std::fs::remove_file(&sig);
        let bls = bl.to_string();
        rdiff(&[
            "-H".as_ref(),
            "md4".as_ref(),
            "-R".as_ref(),
            "rollsum".as_ref(),
            "-b".as_ref(),
            bls.as_ref(),
            "-S".as_ref(),
            "8".as_ref(),
            "signature".as_ref(),
            f.as_os_str(),
            sig.as_os_str(),
        ]);
        let theirs = std::fs::read(&sig).unwrap();
        assert_eq!(&theirs[..4], &[0x72, 0x73, 0x01, 0x36], "rdiff magic");
        assert!(
            our_signature(&data, bl) == theirs,
            "signature differs for size {size}, block {bl}"
        );
    }
}

/// Our windowed delta (as the backup makes it) applied by `rdiff patch`,
/// and rdiff's delta applied by our patcher.
#[test]
fn deltas_interoperate_with_rdiff() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let base = pseudo(20_000_000, 1);
    let mut new = base.clone();
    new[5_000_000..5_010_000].fill(9);
    new.drain(9_000_000..9_100_000);
    new.splice(15_000_000..15_000_000, pseudo(300_000, 2));
    new.extend_from_slice(b"appended tail");
    std::fs::write(d("base"), &base).unwrap();
    std::fs::write(d("new"), &new).unwrap();

    // Ours → rdiff patch. Produce the delta through the real backup path:
    // signature of the base, then the engine's windowed diff.
    let bl = block_len(base.len() as u64, None);
    let sig = our_signature(&base, bl);
    let ours = dupr_core::backup::windowed_delta(&sig, &mut std::fs::File::open(d("new")).unwrap())
        .unwrap();
    std::fs::write(d("ours.delta"), &ours).unwrap();
    rdiff(&[
        "patch".as_ref(),
        d("base").as_os_str(),
        d("ours.delta").as_os_str(),
        d("out1").as_os_str(),
    ]);
    assert!(
        std::fs::read(d("out1")).unwrap() == new,
        "rdiff patch of our delta"
    );

    // rdiff delta → ours.
    std::fs::write(d("base.sig"), &sig).unwrap();
    rdiff(&[
        "delta".as_ref(),
        d("base.sig").as_os_str(),
        d("new").as_os_str(),
        d("theirs.delta").as_os_str(),
    ]);
    let theirs = std::fs::read(d("theirs.delta")).unwrap();
    let mut out = Vec::new();
    delta::apply(&base[..], &theirs[..], &mut out).unwrap();
    assert!(out == new, "our patch of rdiff's delta");
}
