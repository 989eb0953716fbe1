//! dupr reads whatever gpg + duplicity produce: every cipher, S2K mode and
//! compression gpg 2.2 can write for a passphrase, made by the real gpg.

use std::io::Read;
use std::process::Command;

use dupr_core::crypt::{decoder, Codec, Crypto};
use zeroize::Zeroizing;

fn gpg_encrypt(
    home: &std::path::Path,
    input: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) {
    let st = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "pw",
        ])
        .args(extra)
        .arg("-c")
        .arg("-o")
        .arg(out)
        .arg(input)
        .output()
        .expect("gpg must be installed (scripts/install-test-deps)");
    assert!(
        st.status.success(),
        "gpg {extra:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn decrypts_every_symmetric_variant_gpg_writes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    let mut data = Vec::new();
    for i in 0..50_000u32 {
        data.extend_from_slice(format!("{i} some text for compression\n").as_bytes());
    }
    data.extend((0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let input = dir.path().join("in");
    std::fs::write(&input, &data).unwrap();
    let crypto = Crypto::symmetric(Zeroizing::new(b"pw".to_vec()), true).unwrap();
    let variants: &[&[&str]] = &[
        &[],
        &["--cipher-algo", "AES128"],
        &["--cipher-algo", "AES192"],
        &["--cipher-algo", "CAST5"],
        &["--cipher-algo", "3DES"],
        &["--s2k-mode", "0"],
        &["--s2k-mode", "1"],
        &["--s2k-digest-algo", "SHA512"],
        &["--compress-algo", "zlib"],
        &["--compress-algo", "bzip2"],
        &["--compress-algo", "none"],
    ];
    for extra in variants {
        let out = dir.path().join("out.gpg");
        gpg_encrypt(&home, &input, &out, extra);
        let mut got = Vec::new();
        decoder(
            std::fs::File::open(&out).unwrap(),
            &Codec::Gpg(crypto.clone()),
        )
        .unwrap_or_else(|e| panic!("{extra:?}: {e}"))
        .read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert!(got == data, "{extra:?}: plaintext differs");
    }
    // A tampered message is refused.
    let out = dir.path().join("out.gpg");
    gpg_encrypt(&home, &input, &out, &["--compress-algo", "none"]);
    let mut raw = std::fs::read(&out).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x40;
    std::fs::write(&out, &raw).unwrap();
    let r = decoder(
        std::fs::File::open(&out).unwrap(),
        &Codec::Gpg(crypto.clone()),
    )
    .and_then(|mut d| {
        let mut v = Vec::new();
        d.read_to_end(&mut v)
            .map_err(|e| dupr_core::Error::io("the decrypted stream", e))?;
        Ok(v)
    });
    assert!(r.is_err(), "tampered message must fail its MDC check");
}
