//! The public keys as JWKs (RFC 7517): one typed [`Jwk`] per key and the
//! [`Jwks`] set. `/.well-known/jwks.json` serves the set serialized; GetJwks
//! sends the same document and the same keys as `JsonWebKey` messages.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::{PublicKey, VerifyingKey, alg_name};
use crate::proto::v1::JsonWebKey;

/// One public key as a JWK. Members that do not apply to the key type are left
/// out of the JSON.
///
/// The fields are declared in alphabetical order, the order serde writes them:
/// the document has always listed its members sorted, and stays byte for byte
/// what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    /// Algorithm: `EdDSA`, `ES256`, `ES384` or `RS256`.
    pub alg: String,
    /// Curve (OKP, EC): `Ed25519`, `P-256`, `P-384`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// base64url RSA public exponent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Key id.
    pub kid: String,
    /// Key type: `OKP`, `EC` or `RSA`.
    pub kty: String,
    /// base64url RSA modulus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// Public key use: always `sig`.
    #[serde(rename = "use")]
    pub r#use: String,
    /// base64url x coordinate (OKP, EC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// base64url y coordinate (EC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A JWK Set: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Jwks {
    /// The keys, sorted by kid.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// The set as a JSON document, as `/.well-known/jwks.json` serves it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a JWK Set holds only strings")
    }
}

impl VerifyingKey {
    /// The key as a JWK (`kty`, `kid`, `alg`, `use`, and its public parameters);
    /// None for an HMAC secret, which is never published.
    pub fn jwk(&self) -> Option<Jwk> {
        let b64 = |b: &[u8]| Some(URL_SAFE_NO_PAD.encode(b));
        let mut jwk = Jwk {
            alg: alg_name(self.alg).into(),
            crv: None,
            e: None,
            kid: self.kid.clone(),
            kty: String::new(),
            n: None,
            r#use: "sig".into(),
            x: None,
            y: None,
        };
        match self.public.as_ref()? {
            PublicKey::Ed25519 { x } => {
                jwk.kty = "OKP".into();
                jwk.crv = Some("Ed25519".into());
                jwk.x = b64(x);
            }
            PublicKey::Ec { crv, x, y } => {
                jwk.kty = "EC".into();
                jwk.crv = Some((*crv).into());
                jwk.x = b64(x);
                jwk.y = b64(y);
            }
            PublicKey::Rsa { n, e } => {
                jwk.kty = "RSA".into();
                jwk.n = b64(n);
                jwk.e = b64(e);
            }
        }
        Some(jwk)
    }
}

impl From<&Jwk> for JsonWebKey {
    /// The key as GetJwks sends it: members that do not apply are empty strings.
    fn from(jwk: &Jwk) -> Self {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        JsonWebKey {
            kty: jwk.kty.clone(),
            kid: jwk.kid.clone(),
            alg: jwk.alg.clone(),
            r#use: jwk.r#use.clone(),
            crv: text(&jwk.crv),
            x: text(&jwk.x),
            y: text(&jwk.y),
            n: text(&jwk.n),
            e: text(&jwk.e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::KeyRing;
    use super::*;
    use crate::config::KeygenAlg;

    /// The JWK as revokd wrote it before it was typed: a `serde_json::json!`
    /// object (whose members serialize sorted).
    fn untyped(key: &VerifyingKey) -> Option<serde_json::Value> {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut jwk = match key.public.as_ref()? {
            PublicKey::Ed25519 { x } => serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)}),
            PublicKey::Ec { crv, x, y } => serde_json::json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)}),
            PublicKey::Rsa { n, e } => serde_json::json!({"kty": "RSA", "n": b64(n), "e": b64(e)}),
        };
        let obj = jwk.as_object_mut().expect("built as an object");
        obj.insert("kid".into(), key.kid.clone().into());
        obj.insert("alg".into(), alg_name(key.alg).into());
        obj.insert("use".into(), "sig".into());
        Some(jwk)
    }

    fn ring_of_every_type() -> (tempfile::TempDir, KeyRing) {
        let dir = tempfile::tempdir().unwrap();
        for (alg, kid) in [
            (KeygenAlg::EdDsa, "ed"),
            (KeygenAlg::Es256, "ec"),
            (KeygenAlg::Rs256, "rsa"),
            (KeygenAlg::Hs256, "hs"),
        ] {
            super::super::keygen(alg, kid, dir.path()).unwrap();
        }
        let ring = KeyRing::load_dir(dir.path(), Some("hs")).unwrap();
        (dir, ring)
    }

    #[test]
    fn the_document_is_byte_for_byte_the_untyped_one() {
        let (_dir, ring) = ring_of_every_type();
        let keys: Vec<_> = ring.verifying_keys().into_iter().filter_map(|k| untyped(k)).collect();
        let before = serde_json::json!({ "keys": keys }).to_string();
        assert_eq!(ring.jwks_json(), before);
        assert_eq!(ring.jwks().to_json(), before);
        // The HMAC secret is never published.
        let kids: Vec<_> = ring.jwks().keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["ec", "ed", "rsa"]);
    }

    #[test]
    fn the_proto_key_carries_the_same_members() {
        let (_dir, ring) = ring_of_every_type();
        for jwk in &ring.jwks().keys {
            let proto = JsonWebKey::from(jwk);
            let json = serde_json::to_value(jwk).unwrap();
            let member = |name: &str| json[name].as_str().unwrap_or_default().to_owned();
            assert_eq!(
                proto,
                JsonWebKey {
                    kty: member("kty"),
                    kid: member("kid"),
                    alg: member("alg"),
                    r#use: member("use"),
                    crv: member("crv"),
                    x: member("x"),
                    y: member("y"),
                    n: member("n"),
                    e: member("e"),
                }
            );
        }
    }
}
