//! Content digests (`<algorithm>:<encoded>`), as in the OCI image spec's
//! "Digests" section, and streaming hashers that produce them.

use sha2::Digest as _;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding of a digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn digester(self) -> Digester {
        match self {
            Algorithm::Sha256 => Digester::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Digester::Sha512(sha2::Sha512::new()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form <algorithm>:<hex>")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (sha256 and sha512 are)")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} has an encoded part of the wrong length or characters")]
    BadEncoding(String),
}

/// A validated digest. The encoded part is always lowercase hex of the right length.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn new(algorithm: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        let valid =
            hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestError::BadEncoding(format!("{algorithm}:{hex}")));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Digest of `bytes` with sha256, the algorithm every client uses by default.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut d = Algorithm::Sha256.digester();
        d.update(bytes);
        d.finish()
    }
}

fn is_algorithm_component(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let (algo, encoded) = s.split_once(':').ok_or_else(|| DigestError::Malformed(s.to_owned()))?;
        // The grammar: algorithm ::= component (separator component)*, separator ::= [+._-]
        let algo_ok = algo.split(['+', '.', '_', '-']).all(is_algorithm_component);
        let encoded_ok = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
        if !algo_ok || !encoded_ok {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        let algorithm = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_owned())),
        };
        Digest::new(algorithm, encoded)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one algorithm.
#[derive(Clone)]
pub enum Digester {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Digester {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(bytes),
            Digester::Sha512(h) => h.update(bytes),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Digester::Sha256(_) => Algorithm::Sha256,
            Digester::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Digester::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Digester::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn sha512() {
        let mut h = Algorithm::Sha512.digester();
        h.update(b"abc");
        let d = h.finish();
        assert!(d.to_string().starts_with("sha512:ddaf35a193617aba"));
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/x",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
    }
}
