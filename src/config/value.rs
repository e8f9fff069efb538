//! Parsing of option values: booleans, sizes and durations, as pgBackRest writes them.

use std::time::Duration;

/// `y` / `n` (pgBackRest's spelling).
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "y" => Ok(true),
        "n" => Ok(false),
        other => Err(format!("boolean value must be 'y' or 'n', not '{other}'")),
    }
}

/// A byte size: `1048576`, `1MiB`, `1mb`, `512KiB`, `2GB` (all units binary, as pgBackRest's).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("'{text}' is not a size (like 1048576, 64KiB, 1MiB or 2GiB)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return Err(format!("'{text}' has an unknown size unit '{unit}' (use KiB, MiB, GiB, TiB or PiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{text}' is too large"))
}

/// A duration: seconds (`60`, `0.5`) or with a unit (`500ms`, `30s`, `5m`, `2h`, `7d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{text}' is not a duration (like 60, 0.5, 500ms, 5m or 7d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(format!("'{text}' has an unknown time unit '{unit}' (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64kb"), Ok(64 << 10));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("99999999999PiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("5 years").is_err());
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("y"), Ok(true));
        assert_eq!(parse_bool("n"), Ok(false));
        assert!(parse_bool("yes").is_err());
    }
}
