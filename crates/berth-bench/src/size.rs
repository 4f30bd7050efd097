//! Byte sizes on the command line: `1KiB`, `10MiB`, `1GiB`, `512`, `5M`.

pub fn parse(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?} (use B, KiB, MiB, GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

/// A short human form: `1KiB`, `10MiB`, `1GiB`, or bytes.
pub fn human(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n.trailing_zeros() >= shift {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse("1KiB"), Ok(1024));
        assert_eq!(parse("10MiB"), Ok(10 << 20));
        assert_eq!(parse("1g"), Ok(1 << 30));
        assert_eq!(parse("512"), Ok(512));
        assert!(parse("1TiB").is_err());
        assert!(parse("MiB").is_err());
        assert_eq!(human(1 << 30), "1GiB");
        assert_eq!(human(1000), "1000B");
    }
}
