//! Encrypt and decrypt one file with dupr's OpenPGP layer (the same code a
//! backup and a restore run), for `bench/crypt.py`:
//!   crypt_bench encrypt IN OUT   (PASSPHRASE from the environment)
//!   crypt_bench decrypt IN OUT
use std::io::{Read, Write};

use dupr_core::crypt::{decoder, Codec, Crypto, Encoder};
use zeroize::Zeroizing;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: crypt_bench encrypt|decrypt IN OUT");
        std::process::exit(2);
    }
    let pw = std::env::var("PASSPHRASE").unwrap_or_else(|_| "bench".into());
    let crypto = Crypto::symmetric(Zeroizing::new(pw.into_bytes()), true).expect("crypto");
    let level = std::env::var("CRYPT_LEVEL")
        .ok()
        .and_then(|l| l.parse().ok());
    let crypto = match level {
        Some(level) => Crypto::tuned(
            crypto,
            &dupr_core::crypt::Tuning {
                level,
                ..Default::default()
            },
        ),
        None => crypto,
    };
    let codec = Codec::Gpg(crypto);
    let mut input = std::fs::File::open(&args[2]).expect("open input");
    let mut buf = vec![0u8; 1 << 20];
    match args[1].as_str() {
        "encrypt" => {
            let mut e = Encoder::create(std::path::Path::new(&args[3]), &codec).expect("create");
            loop {
                let n = input.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                e.write_all(&buf[..n]).expect("write");
            }
            e.finish().expect("finish");
        }
        "decrypt" => {
            let mut d = decoder(input, &codec).expect("decrypt");
            let mut out = std::io::BufWriter::new(std::fs::File::create(&args[3]).expect("create"));
            std::io::copy(&mut d, &mut out).expect("copy");
            out.flush().expect("flush");
        }
        _ => {
            eprintln!("usage: crypt_bench encrypt|decrypt IN OUT");
            std::process::exit(2);
        }
    }
}
