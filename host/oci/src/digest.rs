//! `sha256:<hex>` content digests, validated before they name a file or a
//! blob: a digest may come from a blueprint, a run's pin or a registry.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::OciError;

/// A SHA-256 content digest (`sha256:` and 64 lowercase hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = OciError;

    fn from_str(text: &str) -> Result<Self, OciError> {
        let invalid = || OciError::InvalidDigest {
            digest: text.chars().take(80).collect(),
        };
        let hex = text.strip_prefix("sha256:").ok_or_else(invalid)?;
        let well_formed = hex.len() == 64
            && hex
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        if !well_formed {
            return Err(invalid());
        }
        Ok(Self {
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_sha256_and_64_lowercase_hex_digits() {
        let digest = Digest::of(b"bundle");
        assert_eq!(digest.to_string().parse::<Digest>().unwrap(), digest);
        for bad in [
            "",
            "sha256:",
            "sha512:00",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "0".repeat(63)),
            &format!("sha256:../{}", "0".repeat(61)),
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(OciError::InvalidDigest { .. })),
                "{bad}"
            );
        }
    }
}
