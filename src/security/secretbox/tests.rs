//! Sealing and opening secrets, the master key's forms and its file.
use super::*;

const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The same 32 bytes as `HEX_KEY`.
const B64_KEY: &str = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn key(text: &str) -> MasterKey {
    MasterKey::parse(text).expect("test key")
}

fn sbox() -> SecretBox {
    SecretBox::new(key(HEX_KEY))
}

#[test]
fn round_trip() {
    let b = sbox();
    for plaintext in [&b""[..], b"s3cr3t", &[0xffu8; 5000][..]] {
        let sealed = b.seal(plaintext, b"sub_1");
        assert_eq!(sealed.len(), HEADER_LEN + plaintext.len() + TAG_LEN);
        assert_eq!(sealed[0], VERSION);
        assert_eq!(hex::encode(&sealed[1..5]), b.key_id());
        assert_eq!(b.open(&sealed, b"sub_1").as_deref(), Ok(plaintext));
    }
}

#[test]
fn json_round_trip() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Secrets {
        access_key: Option<String>,
        bearer: String,
    }
    let b = sbox();
    let secrets = Secrets {
        access_key: Some("ak".into()),
        bearer: "tok".into(),
    };
    let sealed = b.seal_json(&secrets, b"sub_1").expect("seal");
    assert_eq!(b.open_json::<Secrets>(&sealed, b"sub_1"), Ok(secrets));
}

#[test]
fn json_errors_do_not_quote_the_plaintext() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Wanted {
        n: u32,
    }
    let b = sbox();
    let sealed = b.seal(br#"{"n":"hunter2-secret"}"#, b"sub_1");
    let err = b
        .open_json::<Wanted>(&sealed, b"sub_1")
        .expect_err("a string is not a u32");
    assert!(matches!(err, SecretBoxError::Json(_)), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("line 1"), "{shown}");
}

#[test]
fn two_seals_of_the_same_plaintext_differ() {
    let b = sbox();
    let one = b.seal(b"same", b"sub_1");
    let two = b.seal(b"same", b"sub_1");
    assert_ne!(one, two);
    assert_ne!(one[PREFIX_LEN..HEADER_LEN], two[PREFIX_LEN..HEADER_LEN]);
}

#[test]
fn wrong_aad_is_corrupt() {
    let b = sbox();
    let sealed = b.seal(b"s3cr3t", b"sub_1");
    assert_eq!(b.open(&sealed, b"sub_2"), Err(SecretBoxError::Corrupt));
    assert_eq!(b.open(&sealed, b""), Err(SecretBoxError::Corrupt));
}

#[test]
fn every_flipped_byte_is_refused() {
    let b = sbox();
    let sealed = b.seal(b"s3cr3t", b"sub_1");
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        let err = b.open(&bad, b"sub_1").expect_err("tampered");
        if (1..PREFIX_LEN).contains(&i) {
            // The key id is checked first: an edited id reads as another key.
            assert!(matches!(err, SecretBoxError::WrongKey { .. }), "byte {i}");
        } else {
            assert_eq!(err, SecretBoxError::Corrupt, "byte {i}");
        }
    }
}

#[test]
fn truncated_is_corrupt() {
    let b = sbox();
    let sealed = b.seal(b"s3cr3t", b"sub_1");
    for len in 0..sealed.len() {
        assert_eq!(
            b.open(&sealed[..len], b"sub_1"),
            Err(SecretBoxError::Corrupt),
            "len {len}"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(b.open(&longer, b"sub_1"), Err(SecretBoxError::Corrupt));
}

#[test]
fn unknown_version_is_corrupt() {
    let b = sbox();
    let mut sealed = b.seal(b"s3cr3t", b"sub_1");
    sealed[0] = 2;
    assert_eq!(b.open(&sealed, b"sub_1"), Err(SecretBoxError::Corrupt));
}

#[test]
fn a_different_key_is_reported_with_both_ids() {
    let sealer = sbox();
    let other = SecretBox::new(MasterKey::generate());
    let sealed = sealer.seal(b"s3cr3t", b"sub_1");
    let err = other.open(&sealed, b"sub_1").expect_err("wrong key");
    assert_eq!(
        err,
        SecretBoxError::WrongKey {
            expected_id: other.key_id(),
            found_id: sealer.key_id(),
        }
    );
    let shown = err.to_string();
    assert!(shown.contains(&other.key_id()) && shown.contains(&sealer.key_id()));
}

/// Pins the sealed format: rows written today must open in every later version. The
/// expected bytes were checked against an independent XChaCha20-Poly1305 implementation
/// (HChaCha20 + the IETF ChaCha20-Poly1305 of Python's `cryptography`).
#[test]
fn the_sealed_format_is_stable() {
    let b = sbox();
    let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0x40 + i as u8);
    let sealed = b.seal_with_nonce(b"s3cr3t", b"sub_1", &nonce);
    assert_eq!(hex::encode(&sealed), GOLDEN);
    assert_eq!(b.open(&sealed, b"sub_1").as_deref(), Ok(&b"s3cr3t"[..]));
}
const GOLDEN: &str = "01630dcd29404142434445464748494a4b4c4d4e4f5051525354555657\
                      a70a6602e3949adbcaeedb3ed3b6be50ea31828d0e3c";

#[test]
fn key_id_is_the_sha256_prefix() {
    // sha256 of the bytes 00..1f.
    assert_eq!(key(HEX_KEY).key_id(), "630dcd29");
}

#[test]
fn parse_accepts_base64_and_hex_forms() {
    let from_hex = key(HEX_KEY);
    assert_eq!(from_hex.0[..], key(B64_KEY).0[..]);
    assert_eq!(from_hex.0[..], key(&HEX_KEY.to_uppercase()).0[..]);
    assert_eq!(from_hex.0[..], key(&format!("  {B64_KEY}\n")).0[..]);
    assert_eq!(from_hex.to_text(), B64_KEY);
    let generated = MasterKey::generate();
    assert_eq!(key(&generated.to_text()).0[..], generated.0[..]);
}

#[test]
fn parse_refuses_everything_else_without_echoing_it() {
    let no_pad = B64_KEY.trim_end_matches('=');
    let cases = [
        "".to_owned(),
        "garbage-key-material".to_owned(),
        HEX_KEY[..62].to_owned(),
        format!("{HEX_KEY}00"),
        format!("zz{}", &HEX_KEY[2..]),
        no_pad.to_owned(),
        format!("{no_pad}A"), // 44 characters of base64 without padding: 33 bytes
        format!("{no_pad}=="),
        B64_KEY.replace("base64:", "base64url:"),
        B64_KEY.replace('A', "*"),
        // 48 bytes of valid base64 (a 36-byte key)
        format!("base64:{}", STANDARD.encode([7u8; 36])),
        B64_KEY.trim_start_matches("base64:").to_owned(),
    ];
    for text in cases {
        let err = MasterKey::parse(&text).expect_err(&text);
        assert_eq!(err, key_format(), "{text}");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("64 hex characters"), "{shown}");
        let body = text.trim_start_matches("base64:");
        if body.len() >= 8 {
            assert!(!shown.contains(body), "{shown} echoes {text}");
        }
    }
}

#[test]
fn debug_reveals_no_key_material() {
    let k = MasterKey::generate();
    let hex_form = hex::encode(&k.0[..]);
    let b64_form = STANDARD.encode(&k.0[..]);
    let shown = format!("{k:?} {:?} {:#?}", SecretBox::new(k.clone()), k);
    assert!(!shown.contains(&hex_form), "{shown}");
    assert!(!shown.contains(&b64_form), "{shown}");
    assert!(!shown.contains(&b64_form[..16]), "{shown}");
    assert!(!shown.contains(&hex_form[8..24]), "{shown}");
    assert!(shown.contains(&k.key_id()), "{shown}");
}

#[test]
fn redacted_hides_its_value_but_deserializes() {
    let r = Redacted::new("hunter2".to_owned());
    assert_eq!(format!("{r:?}"), "<redacted>");
    assert_eq!(r.to_string(), "<redacted>");
    assert_eq!(format!("{:?}", Some(&r)), "Some(<redacted>)");
    assert_eq!(r.expose(), "hunter2");
    let back: Redacted<String> = serde_json::from_str(r#""hunter2""#).expect("json");
    assert_eq!(back, r);
    assert_eq!(back.into_inner(), "hunter2");
}

#[test]
fn load_or_create_creates_a_private_file_then_reads_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hookline.db.key");
    let (created, was_created) = MasterKey::load_or_create(&path).expect("create");
    assert!(was_created);
    let contents = fs::read_to_string(&path).expect("read");
    assert_eq!(contents, format!("{}\n", created.to_text()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // No temporary file is left beside it.
    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("hookline.db.key")]);

    let (loaded, was_created) = MasterKey::load_or_create(&path).expect("load");
    assert!(!was_created);
    assert_eq!(loaded.0[..], created.0[..]);
    assert_eq!(loaded.key_id(), created.key_id());
}

#[test]
fn concurrent_load_or_create_agree_on_one_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k");
    let barrier = std::sync::Barrier::new(8);
    let results: Vec<(MasterKey, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    MasterKey::load_or_create(&path).expect("load_or_create")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let first = results[0].0.key_id();
    assert!(results.iter().all(|(k, _)| k.key_id() == first));
    assert_eq!(fs::read_dir(dir.path()).expect("read_dir").count(), 1);
}

#[test]
fn load_or_create_reads_a_hex_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k");
    fs::write(&path, format!("{HEX_KEY}\n")).expect("write");
    let (loaded, was_created) = MasterKey::load_or_create(&path).expect("load");
    assert!(!was_created);
    assert_eq!(loaded.0[..], key(HEX_KEY).0[..]);
}

#[test]
fn load_or_create_refuses_a_file_with_wrong_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k");
    let cases: Vec<Vec<u8>> = vec![
        b"not-a-key-but-quite-secret".to_vec(),
        Vec::new(),
        vec![0xff, 0xfe, 0x00],
        format!("{B64_KEY}\n{B64_KEY}\n").into_bytes(),
        vec![b'a'; 5000],
    ];
    for contents in cases {
        fs::write(&path, &contents).expect("write");
        let err = MasterKey::load_or_create(&path).expect_err("garbage");
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, SecretBoxError::KeyFormat(_)), "{shown}");
        assert!(!shown.contains("quite-secret"), "{shown}");
        assert!(!shown.contains("aaaaaaaa"), "{shown}");
        assert!(shown.contains("64 hex characters"), "{shown}");
        // Refused, not replaced.
        assert_eq!(fs::read(&path).expect("read"), contents);
    }
}

#[test]
fn load_or_create_reports_io_errors_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing-dir").join("k");
    let err = MasterKey::load_or_create(&path).expect_err("no directory");
    assert!(
        matches!(&err, SecretBoxError::Io(m) if m.contains("missing-dir")),
        "{err:?}"
    );
}
