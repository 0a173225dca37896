//! `signature_keys`: the public keys a registry's image signatures are verified against.
//! cosign writes them as PEM SubjectPublicKeyInfo (`cosign.pub`, ECDSA P-256); each file is
//! read and parsed when the config loads, so a wrong file is a located error at `check`
//! instead of every image showing as unverified.

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;
use std::path::Path;

/// A key file is a few hundred bytes; anything much larger is not one.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// One trusted signing key.
#[derive(Clone)]
pub struct SignatureKey {
    /// The path as written in the config: how outputs name who signed ("signed by").
    pub name: String,
    pub key: VerifyingKey,
}

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Reads the P-256 public key in `path` (PEM). The message says what the file is instead,
/// never what it contains (a private key given by mistake must not reach a log).
pub fn read(path: &Path) -> Result<VerifyingKey, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(format!(
            "{} is larger than {MAX_KEY_FILE} bytes: not a public key file",
            path.display()
        ));
    }
    let text = String::from_utf8_lossy(&bytes);
    parse(&text).map_err(|why| format!("{}: {why}", path.display()))
}

/// Parses a PEM public key; the error says what the text is instead.
pub fn parse(text: &str) -> Result<VerifyingKey, String> {
    match p256::PublicKey::from_public_key_pem(text.trim()) {
        Ok(k) => Ok(VerifyingKey::from(&k)),
        Err(e) if text.contains("PRIVATE KEY-----") => Err(format!(
            "this is a private key, not a public one: give the public key (cosign.pub), and keep the private key off this host ({})",
            kind_of(&e)
        )),
        Err(e) if text.contains("-----BEGIN PUBLIC KEY-----") => Err(format!(
            "{}, not ECDSA P-256 (the key type cosign makes and regwatch verifies)",
            algorithm(text).unwrap_or_else(|| format!("an unreadable public key ({})", kind_of(&e)))
        )),
        Err(_) => Err(
            "not a PEM public key: expected \"-----BEGIN PUBLIC KEY-----\", as `cosign generate-key-pair` writes it in cosign.pub"
                .into(),
        ),
    }
}

/// What kind of public key a PEM SubjectPublicKeyInfo holds, by its algorithm (and curve).
fn algorithm(text: &str) -> Option<String> {
    use p256::pkcs8::der::pem;
    use p256::pkcs8::spki::SubjectPublicKeyInfoRef;
    let (_, der) = pem::decode_vec(text.trim().as_bytes()).ok()?;
    let spki = SubjectPublicKeyInfoRef::try_from(der.as_slice()).ok()?;
    let oid = spki.algorithm.oid.to_string();
    let curve = spki.algorithm.parameters_oid().ok().map(|o| o.to_string());
    Some(match (oid.as_str(), curve.as_deref()) {
        ("1.2.840.113549.1.1.1", _) => "an RSA public key".into(),
        ("1.3.101.112", _) => "an Ed25519 public key".into(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => "an ECDSA P-384 public key".into(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.35")) => "an ECDSA P-521 public key".into(),
        ("1.2.840.10045.2.1", Some(c)) => format!("an ECDSA public key on curve {c}"),
        (other, _) => format!("a public key of algorithm {other}"),
    })
}

/// The parser's reason, which names algorithms and encodings but never key material.
fn kind_of(e: &p256::pkcs8::spki::Error) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with openssl (tests/fixtures/signatures/README.md).
    const P256_PUB: &str = include_str!("../../tests/fixtures/signatures/openssl.pub");
    /// `openssl ecparam -name secp384r1 -genkey | openssl ec -pubout`.
    const P384_PUB: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE2WEk0PR4dOqvsfIRdD1DRIDvJft7yxnR
n7mMNIs6SRxjwj+H5nRC6vB5XT2ehgjKxJiG/0J7aQRR/R2iWQtA5nTuo2HzV61O
VtYhl59PYI7ypnY9juRmhWnOrH0tYkPz
-----END PUBLIC KEY-----
";

    #[test]
    fn reads_a_p256_key_and_names_what_else_a_file_is() {
        assert!(parse(P256_PUB).is_ok());
        let e = parse(P384_PUB).unwrap_err();
        assert!(
            e.starts_with("an ECDSA P-384 public key, not ECDSA P-256"),
            "{e}"
        );
        let e = parse("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n")
            .unwrap_err();
        assert!(
            e.contains("private key") && !e.contains("MHcCAQEEIB"),
            "{e}"
        );
        let e = parse("ssh-ed25519 AAAAC3Nza me@host").unwrap_err();
        assert!(e.contains("not a PEM public key"), "{e}");
        assert!(parse("").is_err());
        let mangled = P256_PUB.replace("MFkw", "MFkx");
        assert!(parse(&mangled).is_err());
    }
}
