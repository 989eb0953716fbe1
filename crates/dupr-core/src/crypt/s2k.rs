//! The OpenPGP iterated and salted S2K (RFC 4880 3.7.1.3), computed in large
//! pieces. rPGP feeds the hash 8 + n bytes at a time through a boxed digest:
//! gpg's default count (65 MB) then takes ~65 ms here against ~33 ms when
//! the repeated salt and passphrase are hashed in 64 KiB runs. The derived
//! key is the same; other S2Ks (and other hashes) go to rPGP.

use pgp::composed::RawSessionKey;
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::StringToKey;
use sha1::Digest;
use zeroize::Zeroizing;

/// The decoded byte count of a coded S2K count (RFC 4880 3.7.1.3).
fn decode_count(coded: u8) -> usize {
    (16usize + usize::from(coded & 15)) << (usize::from(coded >> 4) + 6)
}

/// Hash the first `total` bytes of `salt || pass` repeated, after `zeros`
/// zero bytes (the preload of the key's later hash contexts).
fn iterated<D: Digest>(zeros: usize, salt: &[u8], pass: &[u8], total: usize) -> Vec<u8> {
    let unit = salt.len() + pass.len();
    let mut h = D::new();
    h.update(vec![0u8; zeros]);
    // Whole repetitions, enough of them for about 64 KiB per update.
    let reps = (65536 / unit.max(1)).max(1);
    let mut run = Zeroizing::new(Vec::with_capacity(unit * reps));
    for _ in 0..reps {
        run.extend_from_slice(salt);
        run.extend_from_slice(pass);
    }
    let mut left = total;
    while left > 0 {
        let n = left.min(run.len());
        h.update(&run[..n]);
        left -= n;
    }
    h.finalize().to_vec()
}

/// The key of `key_size` bytes that `s2k` derives from `pass`.
pub(crate) fn derive(
    s2k: &StringToKey,
    pass: &[u8],
    key_size: usize,
) -> pgp::errors::Result<RawSessionKey> {
    let StringToKey::IteratedAndSalted {
        hash_alg,
        salt,
        count,
    } = s2k
    else {
        return s2k.derive_key(pass, key_size);
    };
    let hash: fn(usize, &[u8], &[u8], usize) -> Vec<u8> = match hash_alg {
        HashAlgorithm::Sha1 => iterated::<sha1::Sha1>,
        HashAlgorithm::Sha224 => iterated::<sha2::Sha224>,
        HashAlgorithm::Sha256 => iterated::<sha2::Sha256>,
        HashAlgorithm::Sha384 => iterated::<sha2::Sha384>,
        HashAlgorithm::Sha512 => iterated::<sha2::Sha512>,
        _ => return s2k.derive_key(pass, key_size),
    };
    // At least one whole salt || passphrase is hashed, whatever the count.
    let total = decode_count(*count).max(salt.len() + pass.len());
    let mut key = Zeroizing::new(Vec::with_capacity(key_size));
    let mut round = 0;
    while key.len() < key_size {
        let d = Zeroizing::new(hash(round, salt, pass, total));
        let take = (key_size - key.len()).min(d.len());
        key.extend_from_slice(&d[..take]);
        round += 1;
    }
    Ok(key.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s2k(hash_alg: HashAlgorithm, salt: [u8; 8], count: u8) -> StringToKey {
        StringToKey::IteratedAndSalted {
            hash_alg,
            salt,
            count,
        }
    }

    /// rPGP's derivation is the reference (its keys open gpg's files in the
    /// interop tests); these are the S2Ks dupr, gpg 2.2 and gpg 1.4 write.
    #[test]
    fn same_key_as_rpgp_for_the_usual_s2ks() {
        for (alg, count, size) in [
            (HashAlgorithm::Sha256, 255u8, 32usize),
            (HashAlgorithm::Sha1, 96, 16),
            (HashAlgorithm::Sha1, 200, 32),
            (HashAlgorithm::Sha512, 100, 32),
        ] {
            let s = s2k(alg, [7, 1, 2, 3, 4, 5, 6, 9], count);
            let ours = derive(&s, b"correct horse", size).unwrap();
            let theirs = s.derive_key(b"correct horse", size).unwrap();
            assert_eq!(ours.as_ref(), theirs.as_ref(), "{alg:?} {count}");
        }
        // A passphrase longer than the smallest count (1024 bytes): it is
        // hashed whole, once.
        let long = vec![b'x'; 1100];
        let s = s2k(HashAlgorithm::Sha256, [1; 8], 0);
        let ours = derive(&s, &long, 32).unwrap();
        assert_eq!(ours.as_ref(), s.derive_key(&long, 32).unwrap().as_ref());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any passphrase length (the count falling anywhere in a
        /// repetition, or below one), any key size needing 1-3 contexts.
        #[test]
        fn same_key_as_rpgp(
            pass in proptest::collection::vec(any::<u8>(), 0..1200),
            salt in any::<[u8; 8]>(),
            count in 0u8..40,
            alg in prop_oneof![Just(HashAlgorithm::Sha1), Just(HashAlgorithm::Sha256),
                               Just(HashAlgorithm::Sha224), Just(HashAlgorithm::Sha384)],
            size in prop_oneof![Just(16usize), Just(24), Just(32), Just(64)],
        ) {
            let s = s2k(alg, salt, count);
            let ours = derive(&s, &pass, size).unwrap();
            let theirs = s.derive_key(&pass, size).unwrap();
            prop_assert_eq!(ours.as_ref(), theirs.as_ref());
        }
    }
}
