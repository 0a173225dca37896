//! What a registry hands the signature check: an artifact manifest or referrers index
//! (`artifacts::parse`, `artifacts::parse_referrers`), and a payload with the signature
//! annotation (`cosign::check`, then `cosign::verdict`) against a trusted P-256 key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regwatch::config::keys::{self, SignatureKey};
use regwatch::sources::registry_api::{artifacts, cosign};

const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEUP27z0jcgvndyVwS9/SlAZbzPIvw
KiW1+vckoJPZyaYqAo7Qe/UI3qyCQD6jWpvnb6Ou0Pm936lkGjpgbv2W3A==
-----END PUBLIC KEY-----
";
const SUBJECT: &str = "sha256:4b2b1cbb1c1c4bd1e2b1ebd1a8d5f7f0b7c0a3e1f9d2c6b4a8e7f6d5c4b3a291";

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 3 {
        0 => {
            let _ = artifacts::parse(body);
        }
        1 => {
            let _ = artifacts::parse_referrers(body);
        }
        _ => {
            // payload, a NUL, the signature annotation (as text).
            let (payload, signature) = match body.iter().position(|b| *b == 0) {
                Some(i) => (&body[..i], &body[i + 1..]),
                None => (body, &b""[..]),
            };
            let trusted = [SignatureKey {
                name: "ci.pub".into(),
                key: keys::parse(KEY).expect("the test key parses"),
            }];
            let checked = cosign::check(payload, &String::from_utf8_lossy(signature), &trusted);
            let _ = cosign::verdict(&checked, SUBJECT, &trusted);
        }
    }
});
