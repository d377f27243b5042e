//! Subscription secrets encrypted at rest: [`MasterKey`], [`SecretBox`] and [`Redacted`].
//!
//! Subscriptions carry secrets (access keys, basic-auth passwords, bearer tokens, OAuth2 client
//! secrets, signing secrets, mTLS private keys). The journal stores them only as the output of
//! [`SecretBox::seal`], under a [`MasterKey`] that comes from configuration
//! (`HOOKLINE_SECRET_KEY`) or, for the embedded default, from a key file beside the journal
//! ([`MasterKey::load_or_create`]).
//!
//! # Sealed format
//! ```text
//! version (1 byte, = 1) ‖ key id (4 bytes) ‖ nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)
//! ```
//! The cipher is XChaCha20-Poly1305: its 24-byte nonces are drawn at random for every seal, and
//! at that size random nonces never realistically repeat under one key (unlike the 12-byte
//! nonces of plain ChaCha20-Poly1305 or AES-GCM), so no nonce counter has to be kept durable.
//! The associated data authenticated with the ciphertext is `version ‖ key id ‖ aad`, where `aad`
//! is chosen by the caller to bind the ciphertext to its row (the journal passes the
//! subscription id): a ciphertext copied into another row, or a header edited by hand, fails to
//! open instead of yielding someone else's secret.
//!
//! # Invariants
//! - Secret material (key bytes, key text, plaintexts) never appears in `Debug`/`Display`
//!   output or in a [`SecretBoxError`]. Parse errors name the expected format, never the input;
//!   JSON errors give only a category and position, because `serde_json` messages quote values.
//! - A ciphertext sealed under another key is reported as [`SecretBoxError::WrongKey`] with both
//!   key ids (from the header, checked before decryption), not as corruption.
//! - Every other failure to open (truncated, unknown version, any flipped bit, wrong `aad`) is
//!   [`SecretBoxError::Corrupt`]: an AEAD cannot tell these apart, and must not try to.
//! - The key bytes live in one heap allocation that is overwritten with zeros when the
//!   [`MasterKey`] is dropped. This is best effort: `unsafe` is denied in this crate (one audited exception loads wasm artifacts) and the
//!   `zeroize` crate is not a direct dependency, so [`wipe`] relies on [`std::hint::black_box`]
//!   rather than volatile writes. The cipher's own copy of the key is zeroized by
//!   `chacha20poly1305` itself when it is dropped after each operation.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::AeadInPlace as _;
use chacha20poly1305::{KeyInit as _, Tag, XChaCha20Poly1305, XNonce};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

/// Length of a master key in bytes.
const KEY_LEN: usize = 32;
/// The only sealed format so far; a new one gets a new byte so old rows stay readable.
const VERSION: u8 = 1;
/// Bytes of the key fingerprint stored in each sealed value.
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// `version ‖ key id`: authenticated as associated data along with the caller's `aad`.
const PREFIX_LEN: usize = 1 + KEY_ID_LEN;
/// Everything before the ciphertext.
const HEADER_LEN: usize = PREFIX_LEN + NONCE_LEN;
/// `base64:` + standard base64 of 32 bytes, padded.
const BASE64_PREFIX: &str = "base64:";
const BASE64_LEN: usize = 44;
/// A key file is one line; anything much longer is not a key file, and is not read whole.
const KEY_FILE_MAX: u64 = 1024;

/// The expected key formats, for error messages (which never repeat what was given).
const KEY_FORMATS: &str = "expected `base64:` followed by 44 characters of standard base64, or 64 \
     hex characters, encoding 32 bytes (e.g. from `openssl rand -hex 32`)";

/// Why a secret could not be sealed or opened, or a key could not be loaded. Never carries
/// secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SecretBoxError {
    /// The value was sealed under another master key.
    #[error(
        "the secret was sealed with key {found_id} but the configured key is {expected_id}; \
         configure the key it was sealed with"
    )]
    WrongKey {
        /// The id of the configured key ([`MasterKey::key_id`]).
        expected_id: String,
        /// The id stored with the sealed value.
        found_id: String,
    },
    /// Truncated, unknown format version, altered, or bound to another row (`aad`).
    #[error(
        "the sealed secret is corrupt: truncated, of an unknown format, altered, or moved from \
         another row"
    )]
    Corrupt,
    /// The secrets could not be serialized, or the opened plaintext is not the expected JSON.
    #[error("sealed secret JSON: {0}")]
    Json(String),
    /// A master key is not in one of the accepted text forms.
    #[error("invalid secret key: {0}")]
    KeyFormat(String),
    /// The key file could not be created or read.
    #[error("secret key file: {0}")]
    Io(String),
}

/// Overwrites `bytes` with zeros, best effort.
///
/// Without `unsafe` (denied in this crate) there is no volatile write, so the zeros could be
/// dropped as dead stores; [`std::hint::black_box`] makes the compiler assume they are read.
/// Copies made earlier (moves, reallocations) are out of reach either way.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// The 32-byte key that seals subscription secrets.
///
/// `Debug` shows only the [`key_id`](MasterKey::key_id). The bytes are boxed so that moving a
/// key moves a pointer rather than copying the secret around the stack, and are wiped on drop.
#[derive(Clone)]
pub(crate) struct MasterKey(Box<[u8; KEY_LEN]>);

impl MasterKey {
    /// A new key from the thread's CSPRNG (ChaCha-based, seeded from the OS).
    pub(crate) fn generate() -> MasterKey {
        MasterKey(Box::new(rand::random::<[u8; KEY_LEN]>()))
    }

    /// Parses `base64:` + 44 characters of standard (padded) base64, or 64 hex characters (either
    /// case), both encoding 32 bytes. Surrounding whitespace is ignored (a trailing newline in an
    /// environment variable or file is common). Errors name the expected format only.
    pub(crate) fn parse(text: &str) -> Result<MasterKey, SecretBoxError> {
        let text = text.trim();
        let mut key = Box::new([0u8; KEY_LEN]);
        if let Some(b64) = text.strip_prefix(BASE64_PREFIX) {
            if b64.len() != BASE64_LEN {
                return Err(key_format());
            }
            // Decode into a fixed buffer (not a `Vec`) so the copy can be wiped; 44 characters
            // never decode to more than 33 bytes, and anything but 32 is refused.
            let mut buf = [0u8; BASE64_LEN];
            let decoded = STANDARD.decode_slice(b64, &mut buf);
            let result = match decoded {
                Ok(KEY_LEN) => {
                    key.copy_from_slice(&buf[..KEY_LEN]);
                    Ok(MasterKey(key))
                }
                _ => Err(key_format()),
            };
            wipe(&mut buf);
            result
        } else if text.len() == 2 * KEY_LEN {
            match hex::decode_to_slice(text, &mut key[..]) {
                Ok(()) => Ok(MasterKey(key)),
                // `key` may hold a partial decode; dropping the `MasterKey` wipes it.
                Err(_) => Err(key_format()),
            }
        } else {
            Err(key_format())
        }
    }

    /// The text form, `base64:` + standard base64: what the key file holds.
    pub(crate) fn to_text(&self) -> String {
        format!("{BASE64_PREFIX}{}", STANDARD.encode(&self.0[..]))
    }

    /// A short fingerprint: the first 8 hex characters of SHA-256 of the key bytes. Stored with
    /// every sealed value so that a wrong key is reported as such. 32 bits of a hash of a 256-bit
    /// random key reveal nothing useful about it.
    pub(crate) fn key_id(&self) -> String {
        hex::encode(self.key_id_bytes())
    }

    fn key_id_bytes(&self) -> [u8; KEY_ID_LEN] {
        let digest = Sha256::digest(&self.0[..]);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }

    /// Loads the key from `path`, creating the file with a new key if there is none; returns
    /// the key and whether it was created. This is the embedded default when no key is
    /// configured; the journal passes `<db>.key`.
    ///
    /// A new file is created with mode 0600 on Unix and holds the key's text form and a newline.
    /// It is written in full under a temporary name and then hard-linked into place, which fails
    /// if the file already exists: two processes starting at once both end up with the one key
    /// that won, and no reader ever sees a half-written file. Both the file and its directory are
    /// synced before the key is returned, because secrets sealed with a key whose file is lost
    /// can never be opened again. An existing file must hold exactly one key in a form
    /// [`parse`](MasterKey::parse) accepts; anything else is refused, never replaced.
    ///
    /// **Trade-off**: a key file beside the database protects secrets in leaked copies or
    /// backups of the database file alone. It does not protect against anyone who can read the
    /// whole directory (they have the key too). Production deployments should pass the key in
    /// `HOOKLINE_SECRET_KEY`, from a secret store, and back it up separately from the journal.
    pub(crate) fn load_or_create(path: &Path) -> Result<(MasterKey, bool), SecretBoxError> {
        if !path.exists() {
            let key = MasterKey::generate();
            let mut text = format!("{}\n", key.to_text());
            let created = create_exclusive(path, text.as_bytes());
            wipe_string(&mut text);
            if created.map_err(|e| io_error("cannot create", path, &e))? {
                return Ok((key, true));
            }
            // Another process created it first: use its key.
        }
        Ok((read_key_file(path)?, false))
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.0[..]);
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.key_id())
            .finish_non_exhaustive()
    }
}

fn key_format() -> SecretBoxError {
    SecretBoxError::KeyFormat(KEY_FORMATS.to_owned())
}

/// An I/O error with what was being done and where; paths and OS messages are not secret.
fn io_error(what: &str, path: &Path, e: &io::Error) -> SecretBoxError {
    SecretBoxError::Io(format!("{what} {}: {e}", path.display()))
}

fn wipe_string(text: &mut String) {
    let mut bytes = std::mem::take(text).into_bytes();
    wipe(&mut bytes);
}

/// Reads and parses an existing key file.
fn read_key_file(path: &Path) -> Result<MasterKey, SecretBoxError> {
    let file = File::open(path).map_err(|e| io_error("cannot open", path, &e))?;
    let mut bytes = Vec::new();
    file.take(KEY_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("cannot read", path, &e))?;
    let parsed = if bytes.len() as u64 > KEY_FILE_MAX {
        Err(SecretBoxError::KeyFormat(format!(
            "{} is too large to be a key file; {KEY_FORMATS}",
            path.display()
        )))
    } else {
        std::str::from_utf8(&bytes)
            .map_err(|_| key_format())
            .and_then(MasterKey::parse)
            .map_err(|_| {
                SecretBoxError::KeyFormat(format!(
                    "{} does not hold a key; {KEY_FORMATS}. It is refused rather than replaced, \
                     since secrets may be sealed with the key it should hold",
                    path.display()
                ))
            })
    };
    wipe(&mut bytes);
    parsed
}

/// Creates `path` holding `contents` unless it exists. `Ok(true)`: created (and synced);
/// `Ok(false)`: it already existed (created by a concurrent process since the caller looked).
fn create_exclusive(path: &Path, contents: &[u8]) -> io::Result<bool> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the key path names no file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".{}.tmp", hex::encode(rand::random::<[u8; 6]>())));
    let tmp = dir.join(tmp_name);
    write_new_file(&tmp, contents)?;
    let linked = fs::hard_link(&tmp, path);
    // The temporary name holds the key too; it must not outlive this call either way.
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        // A file system without hard links: create the file in place. A concurrent reader
        // could then see it before it is complete, which is a clear error rather than a
        // wrong key.
        Err(_) => match write_new_file(path, contents) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        },
    }
    sync_dir(&dir)?;
    Ok(true)
}

/// Writes a file that must not exist yet, mode 0600 on Unix, and syncs it. A file this call
/// created but could not fill is removed, so a failed start leaves nothing to be refused later.
fn write_new_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if written.is_err() {
        drop(file);
        let _ = fs::remove_file(path);
    }
    written
}

/// Makes a new directory entry durable (POSIX needs the directory itself synced).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Seals and opens secrets under one [`MasterKey`]. `Debug` shows only the key id.
#[derive(Clone)]
pub(crate) struct SecretBox {
    key: MasterKey,
}

impl SecretBox {
    pub(crate) fn new(key: MasterKey) -> SecretBox {
        SecretBox { key }
    }

    #[cfg_attr(not(test), allow(dead_code))] // for diagnostics of a wrong key
    /// The id of the key in use, for logs and [`SecretBoxError::WrongKey`].
    pub(crate) fn key_id(&self) -> String {
        self.key.key_id()
    }

    /// Encrypts `plaintext`, bound to `aad` (e.g. the subscription id), under a fresh random
    /// nonce: sealing the same plaintext twice gives different outputs.
    ///
    /// # Panics
    /// Only if `plaintext` exceeds XChaCha20-Poly1305's limit of 256 GiB, which no secret does.
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        // The thread RNG is a CSPRNG; 192-bit random nonces make a repeat negligible.
        let nonce: [u8; NONCE_LEN] = rand::random();
        self.seal_with_nonce(plaintext, aad, &nonce)
    }

    fn seal_with_nonce(&self, plaintext: &[u8], aad: &[u8], nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.key.key_id_bytes());
        out.extend_from_slice(nonce);
        out.extend_from_slice(plaintext);
        let full_aad = associated_data(&out[..PREFIX_LEN], aad);
        // Encrypt in place so the plaintext is copied only into the buffer that becomes the
        // ciphertext.
        let tag = self
            .cipher()
            .encrypt_in_place_detached(&XNonce::from(*nonce), &full_aad, &mut out[HEADER_LEN..])
            .expect("XChaCha20-Poly1305 accepts up to 256 GiB; a secret is far smaller");
        out.extend_from_slice(&tag);
        out
    }

    /// Decrypts a value made by [`seal`](SecretBox::seal) with the same key and `aad`.
    pub(crate) fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != VERSION {
            return Err(SecretBoxError::Corrupt);
        }
        let expected = self.key.key_id_bytes();
        let found = &sealed[1..PREFIX_LEN];
        if found != expected {
            return Err(SecretBoxError::WrongKey {
                expected_id: hex::encode(expected),
                found_id: hex::encode(found),
            });
        }
        let (ciphertext, tag) = sealed[HEADER_LEN..].split_at(sealed.len() - HEADER_LEN - TAG_LEN);
        // Both lengths follow from the length check above; `Corrupt` keeps this panic-free.
        let nonce = <[u8; NONCE_LEN]>::try_from(&sealed[PREFIX_LEN..HEADER_LEN])
            .map_err(|_| SecretBoxError::Corrupt)?;
        let tag = <[u8; TAG_LEN]>::try_from(tag).map_err(|_| SecretBoxError::Corrupt)?;
        let full_aad = associated_data(&sealed[..PREFIX_LEN], aad);
        let mut plaintext = ciphertext.to_vec();
        // The tag is checked before anything is decrypted, so on failure `plaintext` still holds
        // ciphertext and nothing unauthenticated is released.
        self.cipher()
            .decrypt_in_place_detached(
                &XNonce::from(nonce),
                &full_aad,
                &mut plaintext,
                &Tag::from(tag),
            )
            .map_err(|_| SecretBoxError::Corrupt)?;
        Ok(plaintext)
    }

    /// Serializes `value` as JSON and seals it; the intermediate JSON is wiped.
    pub(crate) fn seal_json<T: Serialize>(
        &self,
        value: &T,
        aad: &[u8],
    ) -> Result<Vec<u8>, SecretBoxError> {
        let mut json = serde_json::to_vec(value)
            .map_err(|e| json_error("the secrets cannot be serialized", &e))?;
        let sealed = self.seal(&json, aad);
        wipe(&mut json);
        Ok(sealed)
    }

    /// Opens a value made by [`seal_json`](SecretBox::seal_json); the plaintext JSON is wiped.
    pub(crate) fn open_json<T: DeserializeOwned>(
        &self,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<T, SecretBoxError> {
        let mut json = self.open(sealed, aad)?;
        let value = serde_json::from_slice(&json)
            .map_err(|e| json_error("the opened secrets are not the expected JSON", &e));
        wipe(&mut json);
        value
    }

    /// A cipher for one operation; `chacha20poly1305` zeroizes its copy of the key on drop.
    /// Built from the slice (not `Key::from(array)`) so no extra copy of the key lands on the
    /// stack.
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(&self.key.0[..])
            .expect("a MasterKey is always 32 bytes, the XChaCha20-Poly1305 key size")
    }
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox")
            .field("key_id", &self.key.key_id())
            .finish_non_exhaustive()
    }
}

/// `version ‖ key id ‖ aad`: the header is fixed-length, so the concatenation is unambiguous.
fn associated_data(prefix: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(prefix.len() + aad.len());
    full.extend_from_slice(prefix);
    full.extend_from_slice(aad);
    full
}

/// A JSON error without `serde_json`'s message, which can quote values from the (secret) input:
/// only the category and, when parsing, the position.
fn json_error(what: &str, e: &serde_json::Error) -> SecretBoxError {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "I/O error",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected structure or type",
        Category::Eof => "unexpected end of input",
    };
    if e.line() == 0 {
        SecretBoxError::Json(format!("{what} ({kind})"))
    } else {
        SecretBoxError::Json(format!(
            "{what} ({kind} at line {}, column {})",
            e.line(),
            e.column()
        ))
    }
}

/// A value that must not be printed: `Debug` and `Display` show `<redacted>`.
///
/// For secret fields of model types, so that a `{:?}` of a subscription or a `tracing` field
/// never shows them. It deserializes transparently (secrets arrive in API requests) but
/// deliberately does not implement `Serialize`: a type holding one cannot be returned by the
/// API by accident. Where a secret must be serialized on purpose (the JSON that
/// [`SecretBox::seal_json`] seals), read it with [`expose`](Redacted::expose), e.g. through
/// `#[serde(serialize_with = …)]` or a separate plain struct. Dropping does not wipe `T`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    pub fn new(value: T) -> Redacted<T> {
        Redacted(value)
    }

    /// The secret itself: each call site is a place where it leaves its wrapper.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Redacted<T> {
        Redacted(value)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Redacted<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Redacted)
    }
}

#[cfg(test)]
mod tests;
