//! Byte ranges of `Range: bytes=...` requests (RFC 9110 §14.1.2), one range
//! only, and the Content-Range of upload chunks.

use std::ops::Range;

/// A `bytes=first-last` range with `last < first`: satisfiable by no object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackwardsRange;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-last`, both inclusive.
    FromTo(u64, u64),
    /// `bytes=first-`
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses a Range header value. `Ok(None)` means "not a single bytes
    /// range" (another unit, several ranges, or garbage), which a server may
    /// ignore and answer with the whole object. `Err` is a bytes range whose
    /// last byte comes before its first (`bytes=500-0`): no object satisfies
    /// it, so it is answered 416, as the OCI conformance suite expects.
    pub fn parse(header: &str) -> Result<Option<ByteRange>, BackwardsRange> {
        let Some(spec) = header.trim().strip_prefix("bytes=").map(str::trim) else {
            return Ok(None);
        };
        if spec.contains(',') {
            return Ok(None);
        }
        let Some((a, b)) = spec.split_once('-') else {
            return Ok(None);
        };
        let num = |s: &str| -> Option<u64> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        Ok(match (a.trim().is_empty(), b.trim().is_empty()) {
            (true, true) => None,
            (true, false) => num(b).map(ByteRange::Suffix),
            (false, true) => num(a).map(ByteRange::From),
            (false, false) => match (num(a), num(b)) {
                (Some(a), Some(b)) if a > b => return Err(BackwardsRange),
                (Some(a), Some(b)) => Some(ByteRange::FromTo(a, b)),
                _ => None,
            },
        })
    }

    /// The half-open range of an object of `size` bytes, or `None` when the
    /// range cannot be satisfied (416).
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            ByteRange::FromTo(a, b) if a < size => Some(a..(b.saturating_add(1)).min(size)),
            ByteRange::From(a) if a < size => Some(a..size),
            ByteRange::Suffix(n) if n > 0 && size > 0 => Some(size.saturating_sub(n)..size),
            _ => None,
        }
    }
}

/// Parses the Content-Range of an upload chunk: `<start>-<end>` per the
/// distribution spec; `bytes=`, `bytes ` prefixes and a `/<total>` suffix
/// (RFC 9110's form, which some clients send) are tolerated. Returns
/// (start, end), both inclusive.
pub fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes=")
        .or_else(|| v.strip_prefix("bytes "))
        .unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes=5-9"), Some((5, 9)));
        assert_eq!(parse_content_range("bytes 5-9/100"), Some((5, 9)));
        assert_eq!(parse_content_range("9-5"), None);
        assert_eq!(parse_content_range("x"), None);
    }

    #[test]
    fn parse_and_resolve() {
        assert_eq!(ByteRange::parse("bytes=0-9"), Ok(Some(ByteRange::FromTo(0, 9))));
        assert_eq!(ByteRange::parse("bytes=5-"), Ok(Some(ByteRange::From(5))));
        assert_eq!(ByteRange::parse("bytes=-3"), Ok(Some(ByteRange::Suffix(3))));
        assert_eq!(ByteRange::parse("bytes=9-1"), Err(BackwardsRange));
        assert_eq!(ByteRange::parse("bytes=500-0"), Err(BackwardsRange));
        for ignored in [
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=9-x",
            "items=0-1",
            "bytes=0-1,3-4",
            "0-1",
        ] {
            assert_eq!(ByteRange::parse(ignored), Ok(None), "{ignored}");
        }
        assert_eq!(ByteRange::FromTo(0, 9).resolve(5), Some(0..5));
        assert_eq!(ByteRange::FromTo(2, 3).resolve(5), Some(2..4));
        assert_eq!(ByteRange::From(5).resolve(5), None);
        assert_eq!(ByteRange::Suffix(10).resolve(5), Some(0..5));
        assert_eq!(ByteRange::Suffix(0).resolve(5), None);
        assert_eq!(ByteRange::FromTo(0, 0).resolve(0), None);
    }
}
