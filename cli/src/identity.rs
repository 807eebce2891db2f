//! The platform's identity key: an Ed25519 key pair generated once per platform. The gateway
//! signs each verified caller's identity assertion with the private half
//! (`GATEWAY_IDENTITY_KEY`); every service checks assertions with the public half
//! (`IDENTITY_PUBLIC_KEY`), so a caller cannot be claimed by reaching a service's port.
//! Both are unpadded base64url: the PKCS#8 document, and the 32 raw public bytes.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// A new private key, or `None` when the system's random source fails.
pub fn generate() -> Option<String> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).ok()?;
    Some(URL_SAFE_NO_PAD.encode(pkcs8.as_ref()))
}

/// The public half of `private`, or `None` when it is not a key.
pub fn public_key(private: &str) -> Option<String> {
    let der = URL_SAFE_NO_PAD.decode(private.trim()).ok()?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).ok()?;
    Some(URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_generated_key_has_a_32_byte_public_half() {
        use base64::Engine as _;
        let key = super::generate().unwrap();
        let public = super::public_key(&key).unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(public)
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert!(super::public_key("not a key").is_none());
    }
}
