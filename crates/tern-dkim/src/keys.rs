//! DKIM private keys: read from their files with the checks a secret needs, parsed,
//! generated (`tern dkim generate`), and their DNS records (`p=`) built and compared
//! (`tern dkim check`).
//!
//! A key file is trusted only when nobody but Tern's user could have written or read it:
//! - its directory is opened first and must be a directory owned by root or by the
//!   running user and writable by nobody else (so nobody else can swap the file), and the
//!   file is opened inside it with `O_NOFOLLOW | O_NONBLOCK`: a symbolic link, FIFO or
//!   device where the key should be is refused, never followed or waited on;
//! - the file must be a regular file owned by the running user, mode 0600 or stricter
//!   (no bit for group or others), at most [`MAX_KEY_FILE`] octets.
//!
//! Formats: PEM, PKCS#8 (`BEGIN PRIVATE KEY`) for both algorithms, or PKCS#1 (`BEGIN
//! RSA PRIVATE KEY`) for RSA. RSA keys under [`MIN_RSA_BITS`] bits are refused (RFC
//! 8301 §3.2 recommends 2048; large receivers ignore smaller ones), and over
//! [`MAX_RSA_BITS`] (slow to sign; a larger key's record would not fit a TXT record most
//! DNS hosting accepts). Ed25519 keys are read in PKCS#8 v1 (the
//! seed only: what `openssl genpkey -algorithm ed25519` writes) and v2 (with the public
//! key, which must then match the seed). Generated keys are written as PKCS#8 PEM, Ed25519
//! in v1 so OpenSSL, OpenDKIM and other tools read them too.

use std::io::Read;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use mail_auth::common::crypto::{CryptoError, Ed25519Key, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::rand_core::RngCore;
use rsa::traits::PublicKeyParts;
use rustix::fs::{FileType, Mode, OFlags};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::config::Algorithm;

/// Largest key file read (an 8192-bit RSA key in PEM is about 6.5 KiB).
pub const MAX_KEY_FILE: u64 = 64 * 1024;
/// Smallest RSA key accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA key accepted or generated, in bits: signing time grows with the cube of the
/// size, a larger key's record does not fit the TXT records most DNS hosts accept, and
/// receivers verifying with ring (Stalwart, for one) take at most 8192.
pub const MAX_RSA_BITS: usize = 4096;

/// Why a key could not be loaded or made. The `Display` text names the file and is what
/// event 4102 and `tern check-config` show; nothing of the key itself is ever in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file or its directory could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error (a symbolic link shows as "too many levels of symbolic links").
        source: std::io::Error,
    },
    /// The path has no file name or directory to open.
    #[error("{path}: not a file path")]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// The directory holding the key can be written by another user.
    #[error(
        "{path}: the key's directory must be owned by root or Tern's user and writable by nobody else (owner {uid}, mode {mode:o})"
    )]
    UnsafeDirectory {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a regular file (a directory, FIFO, device or socket).
    #[error("{path}: not a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// Owned by another user.
    #[error("{path}: owned by uid {uid}, but Tern runs as uid {euid}; chown it")]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// The running user.
        euid: u32,
    },
    /// Readable or writable by group or others.
    #[error("{path}: mode {mode:o} lets others read or change the key; chmod 600 it")]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than [`MAX_KEY_FILE`].
    #[error("{path}: larger than {MAX_KEY_FILE} octets, not a key")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// No PEM private key in it, or one of another algorithm or format.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key material).
        reason: String,
    },
    /// An RSA key outside [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`].
    #[error("{path}: RSA key of {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are accepted")]
    RsaSize {
        /// The file.
        path: PathBuf,
        /// Its size.
        bits: usize,
    },
    /// Generating a key failed (the system's random source).
    #[error("generating the key: {0}")]
    Generate(String),
}

/// A parsed private key, ready to sign; cheap to clone (one `Arc`), so a reload that
/// keeps a key builds its new signers around the same key.
#[derive(Clone)]
pub struct PrivateKey(Arc<KeyPair>);

/// The signing half of a key. RSA signs with AWS-LC (PKCS#1 v1.5 over SHA-256, RFC 6376
/// §3.3.1: three times as fast as ring, which mail-auth would use); Ed25519 with
/// mail-auth's own key (RFC 8463: the SHA-256 of the data is what is signed).
enum KeyPair {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519Key),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.write_str("PrivateKey(..)")
    }
}

impl SigningKey for PrivateKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match &*self.0 {
            KeyPair::Rsa(key) => {
                // The canonical header fields and the signature field: a few hundred
                // octets, hashed and signed by AWS-LC in one call.
                let mut data = Vec::with_capacity(512);
                input.write(&mut data);
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    &data,
                    &mut signature,
                )
                .map_err(|e| mail_auth::Error::Crypto(CryptoError::Library(e.to_string())))?;
                Ok(signature)
            }
            KeyPair::Ed25519(key) => key.sign(input),
        }
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        match &*self.0 {
            KeyPair::Rsa(_) => mail_auth::common::crypto::Algorithm::RsaSha256,
            KeyPair::Ed25519(_) => mail_auth::common::crypto::Algorithm::Ed25519Sha256,
        }
    }
}

/// A key read from its file: the key and the public half as published in `p=`.
#[derive(Debug)]
pub struct LoadedKey {
    /// The private key.
    pub key: PrivateKey,
    /// The public key as DKIM publishes it: SubjectPublicKeyInfo DER for RSA (what
    /// `opendkim-genkey` prints), the raw 32 octets for Ed25519 (RFC 8463 §4).
    pub public: Vec<u8>,
    /// RSA: its size in bits; Ed25519: 256.
    pub bits: usize,
}

fn io_err(path: &Path) -> impl Fn(rustix::io::Errno) -> KeyError + '_ {
    move |e| KeyError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Reads a key file with the checks of the module header (owner, mode, type, size,
/// directory); the contents, never followed through a link.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let bad = || KeyError::BadPath {
        path: path.to_path_buf(),
    };
    let name = path.file_name().ok_or_else(bad)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let euid = rustix::process::geteuid().as_raw();
    let dfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err(dir))?;
    let dst = rustix::fs::fstat(&dfd).map_err(io_err(dir))?;
    let dmode = dst.st_mode & 0o7777;
    if (dst.st_uid != 0 && dst.st_uid != euid) || dmode & 0o022 != 0 {
        return Err(KeyError::UnsafeDirectory {
            path: dir.to_path_buf(),
            uid: dst.st_uid,
            mode: dmode,
        });
    }
    let fd = rustix::fs::openat(
        &dfd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(io_err(path))?;
    let st = rustix::fs::fstat(&fd).map_err(io_err(path))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(KeyError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    if st.st_uid != euid {
        return Err(KeyError::Owner {
            path: path.to_path_buf(),
            uid: st.st_uid,
            euid,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_KEY_FILE.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Reads and parses the key of `algorithm` in `path` (see the module header).
pub fn load_key(path: &Path, algorithm: Algorithm) -> Result<LoadedKey, KeyError> {
    let pem = read_key_file(path)?;
    parse_key(&pem, algorithm).map_err(|reason| match reason {
        ParseError::Format(reason) => KeyError::Format {
            path: path.to_path_buf(),
            reason,
        },
        ParseError::RsaSize(bits) => KeyError::RsaSize {
            path: path.to_path_buf(),
            bits,
        },
    })
}

/// Why PEM text is not a usable key.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not a key of the expected algorithm and format; the reason.
    Format(String),
    /// An RSA key of this many bits, outside the accepted range.
    RsaSize(usize),
}

/// Parses a PEM private key of `algorithm`.
pub fn parse_key(pem: &[u8], algorithm: Algorithm) -> Result<LoadedKey, ParseError> {
    let fmt = |s: &str| ParseError::Format(s.to_string());
    let der = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| fmt("no PEM private key (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)"))?;
    match algorithm {
        Algorithm::RsaSha256 => {
            let parsed = match &der {
                PrivateKeyDer::Pkcs1(k) => rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                    .map_err(|_| fmt("not a valid PKCS#1 RSA private key"))?,
                PrivateKeyDer::Pkcs8(k) => rsa::RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der())
                    .map_err(|_| {
                        fmt("not an RSA private key in PKCS#8 (an Ed25519 key? set algorithm = \"ed25519-sha256\")")
                    })?,
                _ => return Err(fmt("an EC (SEC1) key: DKIM signs with RSA or Ed25519")),
            };
            let bits = parsed.size().saturating_mul(8);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(ParseError::RsaSize(bits));
            }
            let public = rsa::RsaPublicKey::from(&parsed)
                .to_public_key_der()
                .map_err(|_| fmt("the public key cannot be encoded"))?
                .as_bytes()
                .to_vec();
            let key = match &der {
                PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
                PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
                _ => return Err(fmt("not a valid RSA private key")),
            }
            .map_err(|_| fmt("not a valid RSA private key"))?;
            Ok(LoadedKey {
                key: PrivateKey(Arc::new(KeyPair::Rsa(key))),
                public,
                bits,
            })
        }
        Algorithm::Ed25519Sha256 => {
            let PrivateKeyDer::Pkcs8(k) = &der else {
                return Err(fmt(
                    "an Ed25519 key must be PKCS#8 (BEGIN PRIVATE KEY); an RSA key? set algorithm = \"rsa-sha256\"",
                ));
            };
            // v1 (seed only) or v2 (seed and public key, checked against each other).
            let key =
                Ed25519Key::from_pkcs8_maybe_unchecked_der(k.secret_pkcs8_der()).map_err(|_| {
                    fmt("not an Ed25519 private key (an RSA key? set algorithm = \"rsa-sha256\")")
                })?;
            let public = key.public_key();
            Ok(LoadedKey {
                key: PrivateKey(Arc::new(KeyPair::Ed25519(key))),
                public,
                bits: 256,
            })
        }
    }
}

/// A new key: its PKCS#8 PEM text (the secret, to be written with mode 0600) and its
/// public half for the DNS record.
pub struct GeneratedKey {
    /// PKCS#8 PEM.
    pub pem: String,
    /// As [`LoadedKey::public`].
    pub public: Vec<u8>,
}

/// Generates a key (`bits` for RSA only) from the system's random source.
pub fn generate(algorithm: Algorithm, bits: usize) -> Result<GeneratedKey, KeyError> {
    let gen_err = |e: &dyn std::fmt::Display| KeyError::Generate(e.to_string());
    let pem = match algorithm {
        Algorithm::RsaSha256 => {
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(KeyError::Generate(format!(
                    "RSA keys of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits"
                )));
            }
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
                .map_err(|e| gen_err(&e))?;
            key.to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| gen_err(&e))?
                .to_string()
        }
        Algorithm::Ed25519Sha256 => {
            let mut seed = [0u8; 32];
            rsa::rand_core::OsRng
                .try_fill_bytes(&mut seed)
                .map_err(|e| gen_err(&e))?;
            let der = ed25519_pkcs8_v1(&seed);
            seed.fill(0);
            rsa::pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &der)
                .map_err(|e| gen_err(&e))?
        }
    };
    let loaded = parse_key(pem.as_bytes(), algorithm)
        .map_err(|e| KeyError::Generate(format!("the new key does not parse: {e:?}")))?;
    Ok(GeneratedKey {
        pem,
        public: loaded.public,
    })
}

/// An Ed25519 private key as PKCS#8 v1 DER (RFC 8410 §7): `OneAsymmetricKey` version 0,
/// algorithm id-Ed25519 (1.3.101.112, no parameters), and the 32-octet seed wrapped in an
/// OCTET STRING inside the privateKey OCTET STRING. The layout is fixed for this key
/// type, so it is written directly.
fn ed25519_pkcs8_v1(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, // SEQUENCE, 46 octets
        0x02, 0x01, 0x00, // INTEGER 0 (v1)
        0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, // AlgorithmIdentifier { id-Ed25519 }
        0x04, 0x22, 0x04, 0x20, // OCTET STRING { OCTET STRING (32) }
    ];
    let mut der = Vec::with_capacity(48);
    der.extend_from_slice(&PREFIX);
    der.extend_from_slice(seed);
    der
}

/// Standard base64 with padding (RFC 4648 §4), as DKIM's `p=` and `b=` use.
pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |i: u32| char::from(ABC.get((i & 63) as usize).copied().unwrap_or(b'='));
    let mut out = String::with_capacity(data.len().div_ceil(3).saturating_mul(4));
    for chunk in data.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// The TXT record's text for a public key: `v=DKIM1; k=<type>; p=<base64>`.
pub fn record_text(algorithm: Algorithm, public: &[u8]) -> String {
    format!("v=DKIM1; k={}; p={}", algorithm.key_type(), base64(public))
}

/// The record in zone-file form, the text split into strings of at most 255 octets
/// (RFC 1035 §3.3.14): `<selector>._domainkey.<domain>. IN TXT "..." "..."`.
pub fn zone_line(selector: &str, domain: &str, text: &str) -> String {
    let parts: Vec<String> = text
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("{selector}._domainkey.{domain}. IN TXT {}", parts.join(" "))
}

/// How a published record compares with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordMatch {
    /// A DKIM record with this key's type and public key.
    Matches,
    /// DKIM records, none with this key (revoked, another key, another type); why.
    Differs(String),
    /// No DKIM record at the name.
    Missing,
}

/// Compares the TXT records found at a selector's name (each record's strings joined)
/// with a key: `Matches` when one of them is a `v=DKIM1` record (or has no `v=`) whose
/// `k=` (default `rsa`) is the key's type and whose `p=` is its public key.
pub fn compare_records(records: &[String], algorithm: Algorithm, public: &[u8]) -> RecordMatch {
    let want = base64(public);
    let mut why = None;
    let mut any = false;
    for r in records {
        let mut tags = std::collections::HashMap::new();
        for tag in r.split(';') {
            if let Some((k, v)) = tag.split_once('=') {
                tags.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        match tags.get("v") {
            Some(v) if v != "DKIM1" => continue,
            None if !tags.contains_key("p") => continue,
            _ => {}
        }
        any = true;
        let k = tags.get("k").map_or("rsa", String::as_str);
        let p: String = tags
            .get("p")
            .map(|p| p.chars().filter(|c| !c.is_whitespace()).collect())
            .unwrap_or_default();
        if k != algorithm.key_type() {
            why = Some(format!("k={k}, the key is {}", algorithm.key_type()));
        } else if p.is_empty() {
            why = Some("p= is empty: the key is revoked".to_string());
        } else if p == want {
            return RecordMatch::Matches;
        } else {
            why = Some("p= holds another public key".to_string());
        }
    }
    if any {
        RecordMatch::Differs(why.unwrap_or_default())
    } else {
        RecordMatch::Missing
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn generated_keys_load_back_with_their_public_half() {
        let dir = private_dir();
        for (alg, bits) in [(Algorithm::Ed25519Sha256, 0), (Algorithm::RsaSha256, 2048)] {
            let g = generate(alg, bits).unwrap();
            let p = write(dir.path(), alg.as_str(), &g.pem, 0o600);
            let k = load_key(&p, alg).unwrap();
            assert_eq!(k.public, g.public);
            // The other algorithm's loader refuses it with a hint.
            let other = match alg {
                Algorithm::RsaSha256 => Algorithm::Ed25519Sha256,
                Algorithm::Ed25519Sha256 => Algorithm::RsaSha256,
            };
            let e = load_key(&p, other).unwrap_err().to_string();
            assert!(e.contains("set algorithm"), "{e}");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pem(der: &[u8]) -> String {
        rsa::pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, der).unwrap()
    }

    #[test]
    fn ed25519_keys_load_in_pkcs8_v1_and_v2() {
        // RFC 8032 §7.1, test 1: the seed and the public key it gives.
        let seed: [u8; 32] =
            hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .try_into()
                .unwrap();
        let public = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        // v1, as `openssl genpkey -algorithm ed25519` writes it (and `generate` does).
        let v1 = ed25519_pkcs8_v1(&seed);
        assert_eq!(v1.len(), 48);
        let k = parse_key(pem(&v1).as_bytes(), Algorithm::Ed25519Sha256).unwrap();
        assert_eq!(k.public, public);
        // v2: version 1 and the public key as [1] (RFC 5958), checked against the seed.
        let v2 = |pk: &[u8]| {
            let mut d = vec![0x30, 0x51, 0x02, 0x01, 0x01];
            d.extend_from_slice(&v1[5..]);
            d.extend_from_slice(&[0x81, 0x21, 0x00]);
            d.extend_from_slice(pk);
            d
        };
        let k = parse_key(pem(&v2(&public)).as_bytes(), Algorithm::Ed25519Sha256).unwrap();
        assert_eq!(k.public, public);
        let mut wrong = public.clone();
        wrong[0] ^= 1;
        assert!(matches!(
            parse_key(pem(&v2(&wrong)).as_bytes(), Algorithm::Ed25519Sha256),
            Err(ParseError::Format(_))
        ));
        // What `generate` writes is v1 with a fresh seed.
        let g = generate(Algorithm::Ed25519Sha256, 0).unwrap();
        let der = PrivateKeyDer::from_pem_slice(g.pem.as_bytes()).unwrap();
        let PrivateKeyDer::Pkcs8(d) = der else {
            panic!("not PKCS#8")
        };
        let d = d.secret_pkcs8_der();
        assert_eq!(d.len(), 48);
        assert_eq!(d[..16], v1[..16]);
        assert_ne!(d[16..], v1[16..]);
    }

    #[test]
    fn pkcs1_rsa_keys_load_and_small_ones_are_refused() {
        let dir = private_dir();
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(&key, LineEnding::LF).unwrap();
        let p = write(dir.path(), "pkcs1.pem", &pem, 0o400);
        assert_eq!(load_key(&p, Algorithm::RsaSha256).unwrap().bits, 2048);
        let small = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pem = small.to_pkcs8_pem(LineEnding::LF).unwrap();
        let p = write(dir.path(), "small.pem", &pem, 0o600);
        assert!(matches!(
            load_key(&p, Algorithm::RsaSha256),
            Err(KeyError::RsaSize { bits: 1024, .. })
        ));
        assert!(generate(Algorithm::RsaSha256, 1024).is_err());
        assert!(generate(Algorithm::RsaSha256, MAX_RSA_BITS + 1024).is_err());
    }

    #[test]
    fn unsafe_key_files_are_refused() {
        let dir = private_dir();
        let pem = generate(Algorithm::Ed25519Sha256, 0).unwrap().pem;
        for mode in [0o640, 0o604, 0o660, 0o644] {
            let p = write(dir.path(), "k.pem", &pem, mode);
            assert!(
                matches!(
                    load_key(&p, Algorithm::Ed25519Sha256),
                    Err(KeyError::Mode { .. })
                ),
                "mode {mode:o}"
            );
        }
        let p = write(dir.path(), "k.pem", &pem, 0o600);
        load_key(&p, Algorithm::Ed25519Sha256).unwrap();
        // A link to a good key is not followed.
        let link = dir.path().join("link.pem");
        symlink(&p, &link).unwrap();
        assert!(matches!(
            load_key(&link, Algorithm::Ed25519Sha256),
            Err(KeyError::Io { .. })
        ));
        // A directory, and a FIFO (never waited on).
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert!(load_key(&dir.path().join("d"), Algorithm::Ed25519Sha256).is_err());
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(
            load_key(&fifo, Algorithm::Ed25519Sha256),
            Err(KeyError::NotRegular { .. })
        ));
        // Owned by someone else (the tests run as root, who can give it away).
        if rustix::process::geteuid().is_root() {
            rustix::fs::chown(&p, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
            assert!(matches!(
                load_key(&p, Algorithm::Ed25519Sha256),
                Err(KeyError::Owner { uid: 65534, .. })
            ));
        }
        // Too large, and not a key.
        let p = write(dir.path(), "big.pem", &"x".repeat(70_000), 0o600);
        assert!(matches!(
            load_key(&p, Algorithm::RsaSha256),
            Err(KeyError::TooLarge { .. })
        ));
        let p = write(dir.path(), "junk.pem", "hello", 0o600);
        assert!(matches!(
            load_key(&p, Algorithm::RsaSha256),
            Err(KeyError::Format { .. })
        ));
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = private_dir();
        let pem = generate(Algorithm::Ed25519Sha256, 0).unwrap().pem;
        let p = write(dir.path(), "k.pem", &pem, 0o600);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            load_key(&p, Algorithm::Ed25519Sha256),
            Err(KeyError::UnsafeDirectory { .. })
        ));
    }

    #[test]
    fn base64_and_records() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let text = record_text(Algorithm::RsaSha256, &[7u8; 300]);
        let line = zone_line("s1", "example.com", &text);
        assert!(line.starts_with("s1._domainkey.example.com. IN TXT \"v=DKIM1; k=rsa; p="));
        // Every string at most 255 octets, joined back to the text.
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert!(strings.len() > 1 && strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), text);

        let key = [1u8, 2, 3];
        let me = |t: &str| compare_records(&[t.to_string()], Algorithm::Ed25519Sha256, &key);
        assert_eq!(me("v=DKIM1; k=ed25519; p=AQID"), RecordMatch::Matches);
        assert_eq!(me("v=DKIM1;k=ed25519;p=AQ ID"), RecordMatch::Matches);
        assert!(matches!(
            me("v=DKIM1; k=ed25519; p=AQIE"),
            RecordMatch::Differs(_)
        ));
        assert!(matches!(me("v=DKIM1; p=AQID"), RecordMatch::Differs(_)));
        assert!(
            matches!(me("v=DKIM1; k=ed25519; p="), RecordMatch::Differs(w) if w.contains("revoked"))
        );
        assert_eq!(me("v=spf1 -all"), RecordMatch::Missing);
        assert_eq!(
            compare_records(&[], Algorithm::RsaSha256, &key),
            RecordMatch::Missing
        );
    }
}
