//! Verifying cosign simple-signing signatures, as pure functions.
//!
//! cosign signs a small JSON payload (the layer of its signature manifest) that names the
//! image by digest, `{"critical": {"image": {"docker-manifest-digest": "sha256:…"},
//! "type": "cosign container image signature", …}, "optional": …}`, with ECDSA P-256 over
//! SHA-256, and puts the DER signature, base64, into the layer's
//! `dev.cosignproject.cosign/signature` annotation. A signature counts for an image only
//! when a trusted key verifies it **and** its payload names that image's digest: a valid
//! signature copied next to another image proves nothing about it.

use crate::config::keys::SignatureKey;
use base64::Engine;
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

/// The payload types that sign a container image (cosign's, and containers/image's own
/// "atomic" simple signing, which cosign's format follows).
const IMAGE_SIGNATURE_TYPES: [&str; 2] = [
    "cosign container image signature",
    "atomic container signature",
];

/// A payload larger than this is not a simple-signing payload (they are a few hundred bytes;
/// `cosign sign -a` annotations make them a little longer).
pub const MAX_PAYLOAD: u64 = 64 * 1024;

/// One signature checked against the trusted keys, before knowing which image it is for
/// (so the result can be cached by payload and signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The digest the payload names.
    pub names: Option<String>,
    /// The keys (by name) that verify it.
    pub verified_by: Vec<String>,
    /// Why it cannot count at all (malformed payload or signature).
    pub problem: Option<String>,
}

impl Checked {
    fn problem(why: impl Into<String>) -> Checked {
        Checked {
            names: None,
            verified_by: Vec::new(),
            problem: Some(why.into()),
        }
    }
}

/// What a signature means for the image `subject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Verified by these keys.
    Verified(Vec<String>),
    /// It does not count, and why.
    Unverified(String),
}

/// The digest a simple-signing payload names.
pub fn payload_digest(payload: &[u8]) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|_| "the payload is not JSON (not a simple-signing payload)".to_string())?;
    let critical = &v["critical"];
    let kind = critical["type"].as_str().unwrap_or("");
    if !IMAGE_SIGNATURE_TYPES.contains(&kind) {
        return Err(format!(
            "the payload is not an image signature (type {:?})",
            kind.chars().take(64).collect::<String>()
        ));
    }
    critical["image"]["docker-manifest-digest"]
        .as_str()
        .filter(|d| super::artifacts::valid_digest(d))
        .map(str::to_string)
        .ok_or_else(|| "the payload names no image digest".to_string())
}

/// Checks `signature_b64` over `payload` against every key in `keys`.
pub fn check(payload: &[u8], signature_b64: &str, keys: &[SignatureKey]) -> Checked {
    let names = match payload_digest(payload) {
        Ok(d) => d,
        Err(why) => return Checked::problem(why),
    };
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature_b64.trim()) else {
        return Checked::problem("the signature annotation is not base64");
    };
    let Ok(signature) = Signature::from_der(&der) else {
        return Checked::problem("the signature is not a DER ECDSA P-256 signature");
    };
    let verified_by = keys
        .iter()
        .filter(|k| k.key.verify(payload, &signature).is_ok())
        .map(|k| k.name.clone())
        .collect();
    Checked {
        names: Some(names),
        verified_by,
        problem: None,
    }
}

/// What a checked signature means for `subject`.
pub fn verdict(checked: &Checked, subject: &str, keys: &[SignatureKey]) -> Verdict {
    if let Some(why) = &checked.problem {
        return Verdict::Unverified(why.clone());
    }
    match &checked.names {
        Some(d) if d != subject => {
            return Verdict::Unverified(format!("the payload names {d}, another image"));
        }
        _ => {}
    }
    if checked.verified_by.is_empty() {
        return Verdict::Unverified(if keys.is_empty() {
            "no signature_keys are configured".into()
        } else {
            "no trusted key verifies it".into()
        });
    }
    Verdict::Verified(checked.verified_by.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys;

    /// Made with openssl, independently of the crate that verifies here (see
    /// tests/fixtures/signatures/README.md).
    const PUB: &str = include_str!("../../../tests/fixtures/signatures/openssl.pub");
    const OTHER_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEoP8HpmtH6xJty6eH7a9g9tftSzDJ
iaJl3YSCOmiV3Lyl4NsOalFmuxI00ITJP5yGRvgr/rlIHL0H+rYGofwC4A==
-----END PUBLIC KEY-----
";
    const PAYLOAD: &str = include_str!("../../../tests/fixtures/signatures/openssl.payload");
    const SIG: &str = include_str!("../../../tests/fixtures/signatures/openssl.sig");
    const SUBJECT: &str = "sha256:4b2b1cbb1c1c4bd1e2b1ebd1a8d5f7f0b7c0a3e1f9d2c6b4a8e7f6d5c4b3a291";

    fn key(name: &str, pem: &str) -> SignatureKey {
        SignatureKey {
            name: name.into(),
            key: keys::parse(pem).unwrap(),
        }
    }

    #[test]
    fn an_openssl_signature_verifies_for_the_digest_it_names() {
        let trusted = [key("ci.pub", PUB)];
        let c = check(PAYLOAD.as_bytes(), SIG, &trusted);
        assert_eq!(c.names.as_deref(), Some(SUBJECT));
        assert_eq!(
            verdict(&c, SUBJECT, &trusted),
            Verdict::Verified(vec!["ci.pub".into()])
        );
        // The same valid signature next to another image proves nothing about it.
        let other_image = SUBJECT.replace("4b2b", "0000");
        assert!(matches!(
            verdict(&c, &other_image, &trusted),
            Verdict::Unverified(ref why) if why.contains("another image")
        ));
    }

    #[test]
    fn another_key_a_changed_payload_or_a_broken_signature_do_not_verify() {
        let other = [key("other.pub", OTHER_PUB)];
        let c = check(PAYLOAD.as_bytes(), SIG, &other);
        assert_eq!(
            verdict(&c, SUBJECT, &other),
            Verdict::Unverified("no trusted key verifies it".into())
        );
        assert_eq!(
            verdict(&check(PAYLOAD.as_bytes(), SIG, &[]), SUBJECT, &[]),
            Verdict::Unverified("no signature_keys are configured".into())
        );
        let trusted = [key("ci.pub", PUB)];
        // One byte of the payload changed (its optional part): the signature fails.
        let tampered = PAYLOAD.replace("\"optional\":null", "\"optional\":{}");
        let c = check(tampered.as_bytes(), SIG, &trusted);
        assert!(c.verified_by.is_empty());
        // A flipped bit in the signature.
        let mut der = base64::engine::general_purpose::STANDARD
            .decode(SIG)
            .unwrap();
        der[10] ^= 1;
        let flipped = base64::engine::general_purpose::STANDARD.encode(&der);
        assert!(
            check(PAYLOAD.as_bytes(), &flipped, &trusted)
                .verified_by
                .is_empty()
        );
        for (sig, why) in [
            ("not base64!", "not base64"),
            ("AAAA", "not a DER"),
            ("", "not a DER"),
        ] {
            let c = check(PAYLOAD.as_bytes(), sig, &trusted);
            assert!(c.problem.as_deref().unwrap().contains(why), "{sig}: {c:?}");
        }
    }

    #[test]
    fn payloads_that_are_not_image_signatures() {
        let trusted = [key("ci.pub", PUB)];
        for (payload, why) in [
            ("<html>", "not JSON"),
            ("{}", "not an image signature"),
            (
                r#"{"critical":{"type":"cosign container image signature","image":{}}}"#,
                "names no image digest",
            ),
            (
                r#"{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"sha256:../../x"}}}"#,
                "names no image digest",
            ),
        ] {
            let c = check(payload.as_bytes(), SIG, &trusted);
            assert!(
                c.problem.as_deref().unwrap_or("").contains(why),
                "{payload}: {c:?}"
            );
            assert!(matches!(
                verdict(&c, SUBJECT, &trusted),
                Verdict::Unverified(_)
            ));
        }
        let huge = format!(
            r#"{{"critical":{{"type":"{}","image":{{}}}}}}"#,
            "x".repeat(1 << 20)
        );
        let c = check(huge.as_bytes(), SIG, &trusted);
        assert!(
            c.problem.unwrap().len() < 200,
            "a problem is one short line"
        );
    }

    /// Mutated payloads and signatures (a seeded xorshift over the fixtures) never panic,
    /// and a changed payload or signature never verifies.
    #[test]
    fn mutations_never_panic_and_never_verify() {
        use crate::formats::log::test_support::XorShift;
        let trusted = [key("ci.pub", PUB)];
        let mut rng = XorShift::new(0x5160_ba5e);
        let mutate = |rng: &mut XorShift, input: &[u8]| {
            let mut out = input.to_vec();
            for _ in 0..=rng.below(3) {
                if out.is_empty() {
                    break;
                }
                let at = rng.below(out.len());
                match rng.below(3) {
                    0 => out[at] = rng.next() as u8,
                    1 => out[at] ^= 1 << rng.below(8),
                    _ => {
                        out.remove(at);
                    }
                }
            }
            out
        };
        for _ in 0..3000 {
            let payload = mutate(&mut rng, PAYLOAD.as_bytes());
            let sig = mutate(&mut rng, SIG.as_bytes());
            let sig = String::from_utf8_lossy(&sig);
            let c = check(&payload, &sig, &trusted);
            let v = verdict(&c, SUBJECT, &trusted);
            if payload != PAYLOAD.as_bytes() || sig != SIG {
                assert!(
                    matches!(v, Verdict::Unverified(_)),
                    "a changed input verified: {:?} {sig}",
                    String::from_utf8_lossy(&payload)
                );
            }
        }
        let manifest =
            include_bytes!("../../../tests/fixtures/signatures/cosign-sig-manifest.json");
        let index = include_bytes!("../../../tests/fixtures/signatures/referrers-index.json");
        for _ in 0..3000 {
            let _ = super::super::artifacts::parse(&mutate(&mut rng, manifest));
            let _ = super::super::artifacts::parse_referrers(&mutate(&mut rng, index));
        }
    }
}
