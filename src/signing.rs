//! Ed25519 signing keys kept in the state directory: the broker's own key and the dev
//! issuer's key (`serve --dev`, `token mint`). Key generation and signing are done by aws-lc-rs through jsonwebtoken.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The broker's own signing key in the state directory: created by the first start, it signs
/// assertions to backends (`tools::broker_keys`) and decision-log checkpoints (`audit`).
pub const BROKER_KEY_FILE: &str = "broker-signing-ed25519.pk8";

/// An error creating, loading or using a signing key.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key file could not be read or written.
    #[error("key file `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key material is not an Ed25519 PKCS#8 key.
    #[error("key file `{0}` does not hold an Ed25519 PKCS#8 key")]
    BadKey(String),
    /// Key generation failed.
    #[error("cannot generate a key")]
    Generate,
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// An Ed25519 private key with its key id and public JWK.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public_x: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key.
    pub fn generate() -> Result<(Self, Vec<u8>), SigningError> {
        let pair = Ed25519KeyPair::generate().map_err(|_| SigningError::Generate)?;
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| SigningError::Generate)?;
        let bytes = pkcs8.as_ref().to_vec();
        Ok((Self::from_pkcs8(&bytes, "generated")?, bytes))
    }

    /// Reads a key from PKCS#8 DER bytes; `origin` names them in errors.
    pub fn from_pkcs8(bytes: &[u8], origin: &str) -> Result<Self, SigningError> {
        let pair = Ed25519KeyPair::from_pkcs8(bytes)
            .map_err(|_| SigningError::BadKey(origin.to_owned()))?;
        let public = pair.public_key().as_ref();
        // The key id is derived from the public key, so it changes exactly when the key does.
        let kid = hex::encode(&Sha256::digest(public)[..8]);
        Ok(Self {
            kid,
            encoding: EncodingKey::from_ed_der(bytes),
            public_x: URL_SAFE_NO_PAD.encode(public),
        })
    }

    /// Loads the key at `path`, creating it (mode 0600) if the file does not exist.
    /// Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), SigningError> {
        let io = |source| SigningError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                crate::private_files::secure_file(path).map_err(io)?;
                Ok((
                    Self::from_pkcs8(&bytes, &path.display().to_string())?,
                    false,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, bytes) = Self::generate()?;
                if let Some(dir) = path.parent() {
                    crate::private_files::create_dir(dir).map_err(io)?;
                }
                write_private(path, &bytes).map_err(io)?;
                Ok((key, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Loads an existing key.
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let bytes = std::fs::read(path).map_err(|source| SigningError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pkcs8(&bytes, &path.display().to_string())
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.public_x,
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// A JWKS holding just this key.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.public_jwk()] })
    }

    /// Signs `claims` as a compact JWS with `typ` and this key's `kid`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, SigningError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| SigningError::Sign(e.to_string()))
    }
}

/// Writes a private file: created with mode 0600 on Unix, never world-readable.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
