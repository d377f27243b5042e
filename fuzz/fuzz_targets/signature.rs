//! Standard Webhooks signatures: the secret and key parsers, the `webhook-signature` header the
//! sender builds, the verifier on any header, and a rotation of journaled keys.
//!
//! Input, one field per line: a `whsec_` secret, a `whsk_` (or `whpk_`) key, the message id,
//! the timestamp (decimal), a `webhook-signature` header value, then the body (the rest).
//!
//! Properties: no panic; parsed secrets and keys print as a text form that parses to itself;
//! whatever the sender signs, the verifier accepts, and refuses for another timestamp or body;
//! an id that cannot be signed (empty, with a dot) is refused by both; a header verifies only
//! if it carries the very signature the sender computes; a rotation with a grace period keeps
//! the old secret active, one without revokes it.
#![no_main]

use std::time::Duration;

use hookline::fuzz_support::{
    parse_ed25519, parse_public_key, parse_secret, rotate, sign, verify, verify_v1a,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: hookline_fuzz::init(), |data: &[u8]| {
    let [secret, key, msg_id, ts, header, body] = hookline_fuzz::fields::<6>(data);
    let (secret, key, msg_id, header) = (
        hookline_fuzz::text(secret),
        hookline_fuzz::text(key),
        hookline_fuzz::text(msg_id),
        hookline_fuzz::text(header),
    );
    let ts: i64 = std::str::from_utf8(ts)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1_614_265_330);

    let secret = parse_secret(&secret).ok();
    if let Some(s) = &secret {
        assert_eq!(parse_secret(s).as_ref(), Ok(s), "whsec_ text form");
    }
    let ed = parse_ed25519(&key).ok();
    if let Some((k, public)) = &ed {
        assert_eq!(parse_ed25519(k).as_ref(), Ok(&(k.clone(), public.clone())), "whsk_ text form");
        assert_eq!(parse_public_key(public).as_ref(), Ok(public), "whpk_ text form");
    }
    if let Ok(public) = parse_public_key(&key) {
        assert_eq!(parse_public_key(&public), Ok(public.clone()), "whpk_ text form");
        let _ = verify_v1a(&header, &public, &msg_id, ts, body);
    }

    let signable = !msg_id.is_empty() && !msg_id.contains('.');
    let secrets: Vec<&str> = secret.iter().map(String::as_str).collect();
    let ed_key = ed.as_ref().map(|(k, _)| k.as_str());
    let signed = sign(&secrets, ed_key, &msg_id, ts, body);
    assert_eq!(signed.is_ok(), signable, "signing {msg_id:?}: {signed:?}");
    let fuzzed_ok = verify(&header, &secrets, &msg_id, ts, body).expect("parsed secrets");
    if !signable {
        assert!(!fuzzed_ok, "a header verified for an unsignable id");
        return;
    }
    let signed = signed.expect("signable");
    if let Some(s) = &secret {
        assert!(verify(&signed, &[s], &msg_id, ts, body).expect("parsed"), "own signature");
        assert!(!verify(&signed, &[s], &msg_id, ts.wrapping_add(1), body).expect("parsed"));
        let mut other = body.to_vec();
        other.push(b'x');
        assert!(!verify(&signed, &[s], &msg_id, ts, &other).expect("parsed"));
        if fuzzed_ok {
            let v1 = signed.split(' ').next().expect("one v1 signature");
            assert!(
                header.split_ascii_whitespace().any(|e| e == v1),
                "{header:?} verified without the signature {v1}"
            );
        }
    } else {
        assert!(!fuzzed_ok, "a header verified against no secret");
    }
    if let Some((_, public)) = &ed {
        assert!(verify_v1a(&signed, public, &msg_id, ts, body).expect("parsed"), "own v1a");
        assert!(!verify_v1a(&signed, public, &msg_id, ts.wrapping_add(1), body).expect("parsed"));
    }

    if let Some(s) = &secret {
        let keys = serde_json::json!({ "secret": s }).to_string();
        let grace = Duration::from_secs(u64::from(body.first().copied().unwrap_or(0)) * 2371);
        let now_ms = ts.clamp(0, 253_402_300_799_000);
        let active = rotate(&keys, Some(s), grace, now_ms).expect("rotating to a parsed secret");
        let expected = if grace.is_zero() { 1 } else { 2 };
        assert_eq!(active.len(), expected, "active secrets after a rotation with {grace:?}");
    }
});
