//! New keys: a fresh private key as the text of a key file, and `revokd keygen`
//! writing one into the keys directory (mode 0600, never overwriting).

use std::path::Path;

use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature as sig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::KeyError;
use crate::config::KeygenAlg;

/// A new private key as the text of a key file (PEM, or the secret for HS256).
pub fn generate_private_pem(alg: KeygenAlg) -> Result<String, KeyError> {
    let fail = || KeyError::Set("key generation failed".into());
    let pkcs8: Vec<u8> = match alg {
        KeygenAlg::EdDsa => sig::Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| fail())?
            .as_ref()
            .to_vec(),
        KeygenAlg::Es256 => sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| fail())?
            .as_ref()
            .to_vec(),
        KeygenAlg::Rs256 => {
            use aws_lc_rs::encoding::AsDer;
            sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map_err(|_| fail())?
                .as_ref()
                .to_vec()
        }
        KeygenAlg::Hs256 => {
            let mut secret = [0u8; 48];
            aws_lc_rs::rand::SystemRandom::new()
                .fill(&mut secret)
                .map_err(|_| fail())?;
            return Ok(format!("{}\n", URL_SAFE_NO_PAD.encode(secret)));
        }
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8)))
}

/// Writes a new key file `<kid>.pem` or `<kid>.secret` into `dir` (mode 0600); returns its path.
pub fn keygen(alg: KeygenAlg, kid: &str, dir: &Path) -> Result<std::path::PathBuf, KeyError> {
    if kid.is_empty() || kid.starts_with('.') || kid.contains(['/', '\\']) {
        return Err(KeyError::Set(format!("--kid {kid:?}: not usable as a file name")));
    }
    let ext = if alg == KeygenAlg::Hs256 { "secret" } else { "pem" };
    let path = dir.join(format!("{kid}.{ext}"));
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = generate_private_pem(alg)?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm;

    use super::super::KeyRing;
    use super::*;

    fn sign_and_verify(ring: &KeyRing, kid: &str) {
        let key = ring.get(kid).expect("kid loaded");
        let signing = ring.signing();
        assert_eq!(signing.kid, kid);
        let message = b"header.payload";
        let sig = jsonwebtoken::crypto::sign(message, &signing.encoding, signing.alg).unwrap();
        assert!(jsonwebtoken::crypto::verify(&sig, message, &key.decoding, key.alg).unwrap());
        assert!(!jsonwebtoken::crypto::verify(&sig, b"header.other", &key.decoding, key.alg).unwrap());
    }

    #[test]
    fn keygen_writes_keys_that_load_sign_and_verify() {
        for (alg, kid, expected) in [
            (KeygenAlg::EdDsa, "ed", Algorithm::EdDSA),
            (KeygenAlg::Es256, "ec", Algorithm::ES256),
            (KeygenAlg::Rs256, "rsa", Algorithm::RS256),
            (KeygenAlg::Hs256, "hs", Algorithm::HS256),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = keygen(alg, kid, dir.path()).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
            let ring = KeyRing::load_dir(dir.path(), None).unwrap();
            assert_eq!(ring.get(kid).unwrap().alg, expected);
            assert_eq!(ring.get(kid).unwrap().public.is_none(), alg == KeygenAlg::Hs256);
            sign_and_verify(&ring, kid);
            // keygen never overwrites.
            assert!(keygen(alg, kid, dir.path()).is_err());
        }
    }
}
