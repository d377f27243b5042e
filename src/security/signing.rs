//! Standard Webhooks signatures: the `webhook-signature` header.
//!
//! Every delivery is signed over `{webhook-id}.{webhook-timestamp}.{body}`, so a receiver can
//! check that the body, the id it deduplicates on and the timestamp it checks for replays all
//! came from us:
//!
//! - `v1,<base64 HMAC-SHA256>` with a shared [`SigningSecret`] (`whsec_` + base64 of 24–64
//!   random bytes; we generate 32).
//! - `v1a,<base64 ed25519 signature>` with an optional [`Ed25519Secret`] (`whsk_` + base64 of the
//!   32-byte seed; receivers get the [`Ed25519PublicKey`], `whpk_` + base64).
//!
//! [`signature_header`] joins one signature per secret with spaces: during a rotation grace
//! period both the old and the new secret sign, and a receiver accepts if any one verifies.
//!
//! Invariants: secrets never appear in `Debug` output or error messages (only
//! [`SigningSecret::masked`] shows a few characters); the message id must not contain `.`,
//! since `{id}.{ts}.{body}` would then be ambiguous (the spec's warning; producers may choose
//! event ids, so this is checked, not assumed); verification compares in constant time.
//! Timestamp tolerance is the receiver's business and is not checked here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Decodes standard base64 with or without padding: secrets pasted from other providers'
/// dashboards are not always padded.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a secret or key could not be parsed. Never carries any of the secret's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SecretError {
    /// The text does not start with the expected prefix.
    #[error("expected a value starting with {expected}")]
    Prefix { expected: &'static str },
    /// What follows the prefix is not standard base64.
    #[error("the value after the prefix is not valid base64")]
    Base64,
    /// The decoded key has the wrong length.
    #[error("the key is {len} bytes; expected {expected}")]
    Length { len: usize, expected: &'static str },
    /// A 64-byte ed25519 key pair whose public half does not match its seed.
    #[error("the ed25519 key pair is inconsistent")]
    KeyPair,
}

/// Why a signature could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SigningError {
    /// The message id is empty or contains `.`, which would make the signed content ambiguous.
    #[error("a webhook id used for signing must be non-empty and contain no '.'")]
    MessageId,
}

fn check_msg_id(msg_id: &str) -> Result<(), SigningError> {
    if msg_id.is_empty() || msg_id.contains('.') {
        Err(SigningError::MessageId)
    } else {
        Ok(())
    }
}

fn decode(text: &str, prefix: &'static str) -> Result<Vec<u8>, SecretError> {
    let b64 = text
        .strip_prefix(prefix)
        .ok_or(SecretError::Prefix { expected: prefix })?;
    LENIENT.decode(b64).map_err(|_| SecretError::Base64)
}

/// `prefix…` + the last four characters of the text form: enough to tell secrets apart in a
/// listing, too little to matter (at most 3 of 24+ bytes).
fn mask(prefix: &str, text: &str) -> String {
    let tail: String = text
        .trim_end_matches('=')
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{prefix}…{tail}")
}

/// A shared HMAC secret (`whsec_…`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SigningSecret(Vec<u8>);

impl SigningSecret {
    pub(crate) const PREFIX: &'static str = "whsec_";
    /// The spec's bounds: at least 192 bits, at most 512.
    pub(crate) const MIN_LEN: usize = 24;
    pub(crate) const MAX_LEN: usize = 64;

    /// A new secret of 32 bytes from the thread's CSPRNG.
    pub(crate) fn generate() -> SigningSecret {
        SigningSecret(rand::random::<[u8; 32]>().to_vec())
    }

    /// Parses `whsec_` + base64 of 24 to 64 bytes.
    pub(crate) fn parse(text: &str) -> Result<SigningSecret, SecretError> {
        SigningSecret::from_bytes(decode(text, Self::PREFIX)?)
    }

    /// Wraps raw key bytes, 24 to 64 of them.
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Result<SigningSecret, SecretError> {
        if (Self::MIN_LEN..=Self::MAX_LEN).contains(&bytes.len()) {
            Ok(SigningSecret(bytes))
        } else {
            Err(SecretError::Length {
                len: bytes.len(),
                expected: "24 to 64",
            })
        }
    }

    /// The text form, `whsec_` + standard base64: what the tenant is shown once and stores.
    pub(crate) fn to_text(&self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(&self.0))
    }

    /// A display form safe for listings and logs, e.g. `whsec_…Xw8k`.
    pub(crate) fn masked(&self) -> String {
        mask(Self::PREFIX, &self.to_text())
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length (longer ones are hashed, RFC 2104), so this never fails.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }

    /// The HMAC of `{id}.{ts}.{body}`, fed in pieces so the body is never copied.
    fn mac_over(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret(<redacted, {} bytes>)", self.0.len())
    }
}

/// An ed25519 signing key (`whsk_…`), for receivers that prefer asymmetric signatures.
#[derive(Clone)]
pub(crate) struct Ed25519Secret(SigningKey);

impl Ed25519Secret {
    pub(crate) const PREFIX: &'static str = "whsk_";

    /// A new key from the thread's CSPRNG.
    pub(crate) fn generate() -> Ed25519Secret {
        Ed25519Secret(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// Parses `whsk_` + base64 of the 32-byte seed; a 64-byte `seed ‖ public key` pair (the
    /// other common serialisation) is accepted when its halves agree.
    pub(crate) fn parse(text: &str) -> Result<Ed25519Secret, SecretError> {
        let bytes = decode(text, Self::PREFIX)?;
        if let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(Ed25519Secret(SigningKey::from_bytes(&seed)));
        }
        if let Ok(pair) = <[u8; 64]>::try_from(bytes.as_slice()) {
            return SigningKey::from_keypair_bytes(&pair)
                .map(Ed25519Secret)
                .map_err(|_| SecretError::KeyPair);
        }
        Err(SecretError::Length {
            len: bytes.len(),
            expected: "32 (seed) or 64 (key pair)",
        })
    }

    /// The text form, `whsk_` + base64 of the 32-byte seed.
    pub(crate) fn to_text(&self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(self.0.to_bytes()))
    }

    #[cfg_attr(not(test), allow(dead_code))] // for receivers' verification and tests
    /// A display form safe for listings and logs.
    pub(crate) fn masked(&self) -> String {
        mask(Self::PREFIX, &self.to_text())
    }

    /// The key receivers verify with.
    pub(crate) fn public_key(&self) -> Ed25519PublicKey {
        Ed25519PublicKey(self.0.verifying_key())
    }
}

impl fmt::Debug for Ed25519Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The public half is not secret and helps tell keys apart.
        write!(
            f,
            "Ed25519Secret(<redacted>, {})",
            self.public_key().to_text()
        )
    }
}

/// An ed25519 public key (`whpk_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ed25519PublicKey(VerifyingKey);

impl Ed25519PublicKey {
    pub(crate) const PREFIX: &'static str = "whpk_";

    #[cfg_attr(not(test), allow(dead_code))] // for receivers' verification and tests
    /// Parses `whpk_` + base64 of the 32-byte key.
    pub(crate) fn parse(text: &str) -> Result<Ed25519PublicKey, SecretError> {
        let bytes = decode(text, Self::PREFIX)?;
        let len = bytes.len();
        let arr = <[u8; 32]>::try_from(bytes).map_err(|_| SecretError::Length {
            len,
            expected: "32",
        })?;
        VerifyingKey::from_bytes(&arr)
            .map(Ed25519PublicKey)
            .map_err(|_| SecretError::KeyPair)
    }

    /// The text form, `whpk_` + base64.
    pub(crate) fn to_text(self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(self.0.as_bytes()))
    }
}

/// `v1,` + base64(HMAC-SHA256(secret, `{msg_id}.{timestamp}.{body}`)).
pub(crate) fn sign_v1(
    secret: &SigningSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    check_msg_id(msg_id)?;
    let tag = secret.mac_over(msg_id, timestamp, body).finalize();
    Ok(format!("v1,{}", STANDARD.encode(tag.into_bytes())))
}

fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let ts = timestamp.to_string();
    let mut content = Vec::with_capacity(msg_id.len() + ts.len() + 2 + body.len());
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(ts.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// `v1a,` + base64(ed25519 signature over `{msg_id}.{timestamp}.{body}`).
pub(crate) fn sign_v1a(
    secret: &Ed25519Secret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    check_msg_id(msg_id)?;
    let sig = secret.0.sign(&signed_content(msg_id, timestamp, body));
    Ok(format!("v1a,{}", STANDARD.encode(sig.to_bytes())))
}

/// The `webhook-signature` header value: one `v1` signature per secret (current and, during a
/// rotation grace period, previous), then the `v1a` one if a key is set, space-separated.
pub(crate) fn signature_header(
    secrets: &[SigningSecret],
    ed25519: Option<&Ed25519Secret>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let mut parts = Vec::with_capacity(secrets.len() + 1);
    for secret in secrets {
        parts.push(sign_v1(secret, msg_id, timestamp, body)?);
    }
    if let Some(key) = ed25519 {
        parts.push(sign_v1a(key, msg_id, timestamp, body)?);
    }
    if parts.is_empty() {
        // Nothing to sign with is the caller's decision (no header); an id check still applies.
        check_msg_id(msg_id)?;
    }
    Ok(parts.join(" "))
}

#[cfg_attr(not(test), allow(dead_code))] // for receivers' verification and tests
/// The signatures of one scheme (`v1` or `v1a`) in a header value, base64-decoded; entries that
/// do not decode are skipped (they cannot match anything).
fn signatures<'a>(header: &'a str, scheme: &'a str) -> impl Iterator<Item = Vec<u8>> + 'a {
    header
        .split_ascii_whitespace()
        .filter_map(move |entry| entry.split_once(',').filter(|(v, _)| *v == scheme))
        .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
}

#[cfg_attr(not(test), allow(dead_code))] // for receivers' verification and tests
/// Whether any `v1` signature in `header` verifies under any of `secrets` (constant-time
/// comparison). Timestamp tolerance is not checked.
pub(crate) fn verify(
    header: &str,
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> bool {
    if check_msg_id(msg_id).is_err() {
        return false;
    }
    signatures(header, "v1").any(|sig| {
        secrets.iter().any(|secret| {
            secret
                .mac_over(msg_id, timestamp, body)
                .verify_slice(&sig)
                .is_ok()
        })
    })
}

#[cfg_attr(not(test), allow(dead_code))] // for receivers' verification and tests
/// Whether any `v1a` signature in `header` verifies under `key` (strict ed25519 verification).
pub(crate) fn verify_v1a(
    header: &str,
    key: &Ed25519PublicKey,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> bool {
    if check_msg_id(msg_id).is_err() {
        return false;
    }
    let content = signed_content(msg_id, timestamp, body);
    signatures(header, "v1a").any(|sig| {
        ed25519_dalek::Signature::from_slice(&sig)
            .is_ok_and(|sig| key.0.verify_strict(&content, &sig).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SigningSecret {
        SigningSecret::parse(text).expect("test secret")
    }

    /// From the Standard Webhooks reference implementations: `test_sign_function` in
    /// standard-webhooks/standard-webhooks `libraries/python/tests/test_webhooks.py` (the same
    /// vector appears in Svix's PHP and JS libraries).
    #[test]
    fn the_reference_test_vector_reproduces_exactly() {
        let s = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = sign_v1(
            &s,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    /// From `test_sign` in the reference Rust library (`libraries/rust/src/lib.rs`).
    #[test]
    fn the_reference_rust_library_vector_reproduces_exactly() {
        let s = secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let sig = sign_v1(
            &s,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Ok("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
    }

    #[test]
    fn verify_accepts_the_reference_header_and_rejects_tampering() {
        let s = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let secrets = std::slice::from_ref(&s);
        assert!(verify(good, secrets, id, 1_614_265_330, body));
        // Among others, unknown versions and junk are skipped.
        let multi = format!("v1,bm9wZQ== v2,{} junk v1,!!! {good}", &good[3..]);
        assert!(verify(&multi, secrets, id, 1_614_265_330, body));
        // The reference suite's one-character change.
        let bad = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        assert!(!verify(bad, secrets, id, 1_614_265_330, body));
        assert!(!verify(good, secrets, id, 1_614_265_331, body));
        assert!(!verify(good, secrets, "msg_other", 1_614_265_330, body));
        assert!(!verify(
            good,
            secrets,
            id,
            1_614_265_330,
            br#"{"test": 2432232315}"#
        ));
        assert!(!verify(good, &[], id, 1_614_265_330, body));
        assert!(!verify("", secrets, id, 1_614_265_330, body));
        // A truncated signature is not a prefix match.
        assert!(!verify(&good[..20], secrets, id, 1_614_265_330, body));
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let old = SigningSecret::generate();
        let new = SigningSecret::generate();
        let (id, ts, body) = ("evt_1", 1_700_000_000, b"{\"a\":1}".as_slice());
        let header =
            signature_header(&[new.clone(), old.clone()], None, id, ts, body).expect("header");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(Ok(parts[0].to_owned()), sign_v1(&new, id, ts, body));
        assert_eq!(Ok(parts[1].to_owned()), sign_v1(&old, id, ts, body));
        // A receiver holding either secret verifies.
        assert!(verify(&header, std::slice::from_ref(&old), id, ts, body));
        assert!(verify(&header, std::slice::from_ref(&new), id, ts, body));
        assert!(!verify(&header, &[SigningSecret::generate()], id, ts, body));
    }

    #[test]
    fn ed25519_signatures_round_trip() {
        let key = Ed25519Secret::generate();
        let public = key.public_key();
        let (id, ts, body) = ("evt_9", 1_700_000_123, br#"{"status":"PASSED"}"#.as_slice());
        let hmac = SigningSecret::generate();
        let header = signature_header(std::slice::from_ref(&hmac), Some(&key), id, ts, body)
            .expect("header");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts[0].starts_with("v1,"));
        assert!(parts[1].starts_with("v1a,"));
        assert!(verify_v1a(&header, &public, id, ts, body));
        assert!(verify(&header, std::slice::from_ref(&hmac), id, ts, body));
        assert!(!verify_v1a(&header, &public, id, ts + 1, body));
        assert!(!verify_v1a(&header, &public, id, ts, b"{}"));
        let other = Ed25519Secret::generate().public_key();
        assert!(!verify_v1a(&header, &other, id, ts, body));

        // Text forms round-trip.
        let again = Ed25519Secret::parse(&key.to_text()).expect("whsk_ parses");
        assert_eq!(again.public_key(), public);
        assert_eq!(
            Ed25519PublicKey::parse(&public.to_text()).expect("whpk_ parses"),
            public
        );
        assert!(public.to_text().starts_with("whpk_"));
        assert!(key.to_text().starts_with("whsk_"));
    }

    /// RFC 8032 §7.1 TEST 1: the public key derived from a known seed, so `whpk_` carries the
    /// right bytes and the 64-byte key-pair form is read in the usual order.
    #[test]
    fn ed25519_keys_match_rfc_8032() {
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .expect("hex");
        let public =
            hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .expect("hex");
        let key = Ed25519Secret::parse(&format!("whsk_{}", STANDARD.encode(&seed))).expect("seed");
        assert_eq!(
            key.public_key().to_text(),
            format!("whpk_{}", STANDARD.encode(&public))
        );
        let pair = [seed.as_slice(), public.as_slice()].concat();
        let from_pair =
            Ed25519Secret::parse(&format!("whsk_{}", STANDARD.encode(&pair))).expect("key pair");
        assert_eq!(from_pair.public_key(), key.public_key());
        let mut wrong = pair.clone();
        wrong[63] ^= 1;
        assert_eq!(
            Ed25519Secret::parse(&format!("whsk_{}", STANDARD.encode(&wrong))).map(|_| ()),
            Err(SecretError::KeyPair)
        );
    }

    #[test]
    fn secrets_round_trip_through_text() {
        let s = SigningSecret::generate();
        let text = s.to_text();
        assert!(text.starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&text), Ok(s.clone()));
        assert_eq!(s.0.len(), 32);
        assert_ne!(SigningSecret::generate(), s, "random, not constant");
        // Unpadded base64 is accepted too.
        let unpadded = text.trim_end_matches('=');
        assert_eq!(SigningSecret::parse(unpadded), Ok(s));
    }

    #[test]
    fn bad_secrets_are_refused_with_a_typed_error() {
        let b64 = |n: usize| STANDARD.encode(vec![7u8; n]);
        assert_eq!(
            SigningSecret::parse(&b64(32)),
            Err(SecretError::Prefix { expected: "whsec_" })
        );
        assert_eq!(
            SigningSecret::parse(&format!("whsk_{}", b64(32))),
            Err(SecretError::Prefix { expected: "whsec_" })
        );
        assert_eq!(
            SigningSecret::parse("whsec_not base64!"),
            Err(SecretError::Base64)
        );
        assert_eq!(
            SigningSecret::parse(&format!("whsec_{}", b64(23))),
            Err(SecretError::Length {
                len: 23,
                expected: "24 to 64"
            })
        );
        assert_eq!(
            SigningSecret::parse(&format!("whsec_{}", b64(65))),
            Err(SecretError::Length {
                len: 65,
                expected: "24 to 64"
            })
        );
        assert!(matches!(
            SigningSecret::parse("whsec_"),
            Err(SecretError::Length { len: 0, .. })
        ));
        assert!(SigningSecret::parse(&format!("whsec_{}", b64(24))).is_ok());
        assert!(SigningSecret::parse(&format!("whsec_{}", b64(64))).is_ok());
        assert!(matches!(
            Ed25519Secret::parse(&format!("whsk_{}", b64(31))).map(|_| ()),
            Err(SecretError::Length { len: 31, .. })
        ));
        assert!(matches!(
            Ed25519PublicKey::parse(&format!("whpk_{}", b64(33))),
            Err(SecretError::Length { len: 33, .. })
        ));
        // Error messages never echo the input.
        let msg = SigningSecret::parse("whsec_c2VjcmV0!")
            .expect_err("bad")
            .to_string();
        assert!(!msg.contains("c2VjcmV0"), "{msg}");
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let s = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{dbg}");
        assert!(!dbg.contains("LaSw"), "{dbg}");
        assert_eq!(dbg, "SigningSecret(<redacted, 24 bytes>)");
        assert_eq!(s.masked(), "whsec_…LaSw");

        let k = Ed25519Secret::generate();
        let seed_b64 = k.to_text()["whsk_".len()..].to_owned();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&seed_b64), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        let masked = k.masked();
        assert!(masked.starts_with("whsk_…"));
        assert_eq!(masked.chars().count(), "whsk_…".chars().count() + 4);
    }

    #[test]
    fn ids_with_dots_are_refused() {
        let s = SigningSecret::generate();
        let k = Ed25519Secret::generate();
        assert_eq!(sign_v1(&s, "evt.1", 1, b"{}"), Err(SigningError::MessageId));
        assert_eq!(sign_v1(&s, "", 1, b"{}"), Err(SigningError::MessageId));
        assert_eq!(sign_v1a(&k, "a.b", 1, b"{}"), Err(SigningError::MessageId));
        assert_eq!(
            signature_header(&[], None, "a.b", 1, b"{}"),
            Err(SigningError::MessageId)
        );
        assert_eq!(
            signature_header(&[], None, "evt_1", 1, b"{}"),
            Ok(String::new())
        );
        // `a` + ts 1 + body `2.{}` and `a.1` + ts 2 + body `{}` sign the same bytes.
        let header = sign_v1(&s, "a", 1, b"2.{}").expect("sign");
        assert!(!verify(&header, std::slice::from_ref(&s), "a.1", 2, b"{}"));
    }
}

/// A subscription's signing material as journaled (text forms): the current HMAC secret, the
/// previous ones still honoured during a rotation grace period, and an optional ed25519 key.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SigningKeys {
    /// `whsec_…`.
    pub secret: String,
    /// Rotated-out secrets and when they stop being sent (ms since the epoch).
    #[serde(default)]
    pub previous: Vec<PreviousSecret>,
    /// `whsk_…`, when asymmetric (`v1a`) signing is on.
    #[serde(default)]
    pub ed25519: Option<String>,
}

/// A rotated-out secret, still used until `until_ms`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreviousSecret {
    pub secret: String,
    pub until_ms: i64,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("secret", &"<redacted>")
            .field("previous", &self.previous.len())
            .field("ed25519", &self.ed25519.is_some())
            .finish()
    }
}

impl SigningKeys {
    /// Most rotated-out secrets kept at once.
    pub(crate) const MAX_PREVIOUS: usize = 10;

    /// New keys: the given `whsec_` secret or a generated one, and an ed25519 key if asked.
    pub(crate) fn create(secret: Option<&str>, ed25519: bool) -> Result<Self, SecretError> {
        let secret = match secret {
            Some(text) => SigningSecret::parse(text)?,
            None => SigningSecret::generate(),
        };
        Ok(SigningKeys {
            secret: secret.to_text(),
            previous: Vec::new(),
            ed25519: ed25519.then(|| Ed25519Secret::generate().to_text()),
        })
    }

    /// Replaces the current secret; the old one keeps being sent until `now + grace`. A zero
    /// grace revokes every old secret at once (the response to a leaked secret).
    pub(crate) fn rotate(
        &self,
        new: Option<&str>,
        grace: std::time::Duration,
        now_ms: i64,
    ) -> Result<Self, SecretError> {
        let next = Self::create(new, false)?;
        let mut previous: Vec<PreviousSecret> = self
            .previous
            .iter()
            .filter(|p| p.until_ms > now_ms)
            .cloned()
            .collect();
        if grace.is_zero() {
            previous.clear();
        } else if !self.secret.is_empty() {
            previous.push(PreviousSecret {
                secret: self.secret.clone(),
                until_ms: now_ms.saturating_add(grace.as_millis() as i64),
            });
        }
        let excess = previous.len().saturating_sub(Self::MAX_PREVIOUS);
        previous.drain(..excess);
        Ok(SigningKeys {
            secret: next.secret,
            previous,
            ed25519: self.ed25519.clone(),
        })
    }

    /// The secrets to sign with now: current first, then unexpired previous ones.
    pub(crate) fn active(&self, now_ms: i64) -> Result<Vec<SigningSecret>, SecretError> {
        let mut out = Vec::with_capacity(1 + self.previous.len());
        if !self.secret.is_empty() {
            out.push(SigningSecret::parse(&self.secret)?);
        }
        for p in self.previous.iter().filter(|p| p.until_ms > now_ms) {
            out.push(SigningSecret::parse(&p.secret)?);
        }
        Ok(out)
    }

    pub(crate) fn ed25519_key(&self) -> Result<Option<Ed25519Secret>, SecretError> {
        self.ed25519
            .as_deref()
            .map(Ed25519Secret::parse)
            .transpose()
    }

    /// The current secret masked for display.
    pub(crate) fn masked(&self) -> String {
        SigningSecret::parse(&self.secret)
            .map(|s| s.masked())
            .unwrap_or_default()
    }

    /// The `whpk_` public key of the ed25519 key, if any.
    pub(crate) fn public_key(&self) -> Option<String> {
        self.ed25519_key()
            .ok()
            .flatten()
            .map(|k| k.public_key().to_text())
    }

    /// When the last previous secret stops being sent.
    pub(crate) fn rotation_ends(&self, now_ms: i64) -> Option<i64> {
        self.previous
            .iter()
            .map(|p| p.until_ms)
            .filter(|t| *t > now_ms)
            .max()
    }
}

#[cfg(test)]
mod keys_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_period_only() {
        let keys = SigningKeys::create(None, false).expect("keys");
        let rotated = keys
            .rotate(None, Duration::from_secs(60), 1_000)
            .expect("rotate");
        assert_ne!(rotated.secret, keys.secret);
        assert_eq!(rotated.active(1_000).expect("active").len(), 2);
        assert_eq!(rotated.active(61_001).expect("active").len(), 1);
        let again = rotated
            .rotate(None, Duration::from_secs(10), 1_000)
            .expect("rotate");
        assert_eq!(
            again.active(1_000).expect("active").len(),
            3,
            "earlier grace still runs"
        );
        let revoked = again.rotate(None, Duration::ZERO, 1_000).expect("rotate");
        assert_eq!(
            revoked.active(1_000).expect("active").len(),
            1,
            "zero grace revokes all"
        );
        assert!(format!("{again:?}").contains("redacted"));
        assert!(!format!("{again:?}").contains(&again.secret));
    }

    #[test]
    fn given_secrets_are_validated() {
        assert!(SigningKeys::create(Some("whsec_short"), false).is_err());
        let k =
            SigningKeys::create(Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), true).expect("ok");
        assert!(k.public_key().is_some_and(|p| p.starts_with("whpk_")));
        assert!(k.masked().starts_with("whsec_"));
    }
}
