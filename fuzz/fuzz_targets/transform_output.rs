//! A transform's `deliver` output as the runtime checks it before sending: reserved and
//! framing headers, header syntax, the header count and the output size; and the truncation of
//! a guest's messages.
//!
//! Input: one mode byte (bit 0: small limits, 64 bytes and 4 headers, instead of the
//! defaults), then NUL-separated records: headers as `name:value` (split at the first colon),
//! the last record being the body.
//!
//! Properties: no panic; what is kept is a subsequence of what the guest returned, each a valid
//! HTTP header, none `webhook-*` (any case) nor a framing header, within the count and size
//! limits; `webhook-*` is refused naming that header; a size or count refusal means a limit
//! was passed; a truncated message fits its limit, ends with `…` and starts as the original.
#![no_main]

use hookline::fuzz_support::{transform_message, transform_output};
use hookline::transform::{TransformError, TransformLimits};
use libfuzzer_sys::fuzz_target;

const FRAMING: [&str; 4] = ["content-length", "host", "transfer-encoding", "connection"];

fn reserved(name: &str) -> bool {
    name.get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("webhook-"))
}

fuzz_target!(init: hookline_fuzz::init(), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let limits = if mode & 1 == 1 {
        TransformLimits { output_bytes: 64, headers: 4, ..TransformLimits::default() }
    } else {
        TransformLimits::default()
    };
    let mut records: Vec<&[u8]> = rest.split(|b| *b == 0).collect();
    let body = records.pop().unwrap_or_default();
    let headers: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            let text = hookline_fuzz::text(r);
            match text.split_once(':') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => (text, String::new()),
            }
        })
        .collect();
    let size: usize = body.len() + headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();

    match transform_output(headers.clone(), body, &limits) {
        Ok(kept) => {
            assert!(kept.len() <= limits.headers && size <= limits.output_bytes);
            let mut input = headers.iter();
            for (name, value) in &kept {
                assert!(input.any(|h| h.0 == *name && h.1 == *value), "{name} was not returned");
                assert!(http::HeaderName::from_bytes(name.as_bytes()).is_ok(), "name {name:?}");
                assert!(http::HeaderValue::from_str(value).is_ok(), "value of {name}: {value:?}");
                assert!(!reserved(name), "{name} kept");
                assert!(!FRAMING.iter().any(|f| f.eq_ignore_ascii_case(name)), "{name} kept");
            }
        }
        Err(TransformError::ForbiddenHeader(name)) => {
            assert!(reserved(&name) && headers.iter().any(|h| h.0 == name), "{name}");
        }
        Err(TransformError::OutputTooLarge(m)) => {
            assert!(headers.len() > limits.headers || size > limits.output_bytes, "{m}");
        }
        Err(TransformError::InvalidHeader(m)) => {
            assert!(!m.is_empty());
        }
        Err(other) => panic!("an output check refused with {other:?}"),
    }

    let message = hookline_fuzz::text(body);
    let max = usize::from(mode >> 1);
    let cut = transform_message(&message, max);
    if message.len() <= max {
        assert_eq!(cut, message);
    } else {
        let kept = cut.strip_suffix('…').expect("a cut message ends with …");
        assert!(message.starts_with(kept), "{cut:?} is not a prefix of the message");
        assert!(cut.len() <= max.max('…'.len_utf8()), "{} bytes for a limit of {max}", cut.len());
    }
});
