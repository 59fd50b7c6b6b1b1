//! Cores and memory: parsing `4g` / `512m` / `2Gi`, and printing them for people.

use crate::error::InvalidInput;

/// Parses a size in bytes: `4096`, `512k`, `1m`, `2Gi` (units of 1024).
pub fn parse_bytes(field: &str, text: &str) -> Result<u64, InvalidInput> {
    let bad = || {
        InvalidInput::new(
            field,
            format!("{text:?} is not a size (use e.g. 4096, 512k, 1m, 2g)"),
        )
    };
    let (number, unit) = split_number(text.trim());
    let value: u64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit_letter(unit).as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| InvalidInput::new(field, format!("{text:?} is too large")))
}

/// Parses a memory size into MiB: `512m`, `4g`, `1.5g`, `2Gi`, `1t`, or a bare number of MiB.
///
/// Sizes below one MiB and zero are refused: no slot can be that small.
pub fn parse_memory_mb(field: &str, text: &str) -> Result<u64, InvalidInput> {
    let t = text.trim();
    let bad = || {
        InvalidInput::new(
            field,
            format!("{text:?} is not a memory size (use e.g. 512m, 4g, 2Gi)"),
        )
    };
    let (number, unit) = split_number(t);
    if number.is_empty() {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    // "512 MiB", as the UI and `hearth list` print it, reads back.
    let mb_per_unit = match unit_letter(unit).as_str() {
        "" | "m" => 1.0,
        "k" => 1.0 / 1024.0,
        "g" => 1024.0,
        "t" => 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let mb = value * mb_per_unit;
    if !mb.is_finite() || mb > MAX_MEMORY_MB as f64 {
        return Err(InvalidInput::new(
            field,
            format!("{text:?} is too large; at most {MAX_MEMORY_MB}m"),
        ));
    }
    let mb = mb.floor() as u64;
    if mb == 0 {
        return Err(InvalidInput::new(
            field,
            format!("{text:?} is less than 1 MiB; must be at least 1m"),
        ));
    }
    Ok(mb)
}

/// Splits `4.5g` into `("4.5", "g")`: the leading digits and dots, then the rest.
/// A size's unit as one lower-case letter (`k`, `m`, `g`, `t`) or empty: `MiB`, `Mi`, `mb`
/// and `M` all read as `m`.
fn unit_letter(unit: &str) -> String {
    let unit = unit.trim().to_ascii_lowercase();
    unit.strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .or_else(|| unit.strip_suffix('i'))
        .unwrap_or(&unit)
        .to_string()
}

pub(crate) fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Parses a core count: a whole number of at least one.
pub fn parse_cores(field: &str, text: &str) -> Result<u32, InvalidInput> {
    let t = text.trim();
    match t.parse::<i64>() {
        Ok(n) if n >= 1 && n <= i64::from(MAX_CORES) => Ok(n as u32),
        Ok(n) if n < 1 => Err(InvalidInput::new(
            field,
            format!("must be at least 1, got {n}"),
        )),
        Ok(n) => Err(InvalidInput::new(
            field,
            format!("{n} is more than {MAX_CORES}"),
        )),
        Err(_) => Err(InvalidInput::new(
            field,
            format!("{text:?} is not a whole number of cores"),
        )),
    }
}

/// Upper bound on cores in one request or offer, to keep arithmetic far from overflow.
pub const MAX_CORES: u32 = 1 << 16;
/// Upper bound on MiB in one request or offer (1 PiB).
pub const MAX_MEMORY_MB: u64 = 1 << 30;

/// `512 MiB`, `4.0 GiB`, `1.5 TiB`.
pub fn format_mb(mb: u64) -> String {
    if mb < 1024 {
        format!("{mb} MiB")
    } else if mb < 1024 * 1024 {
        format!("{:.1} GiB", mb as f64 / 1024.0)
    } else {
        format!("{:.1} TiB", mb as f64 / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_binary_units_and_name_the_field_when_wrong() {
        for (text, bytes) in [
            ("4096", 4096),
            ("512k", 512 << 10),
            ("1m", 1 << 20),
            ("2Gi", 2 << 30),
        ] {
            assert_eq!(parse_bytes("log_tail", text).ok(), Some(bytes), "{text}");
        }
        for bad in ["", "1.5m", "-1", "12x", "99999999999999999999t"] {
            let e = parse_bytes("log_tail", bad).err().map(|e| e.to_string());
            assert!(e.unwrap_or_default().contains("log_tail"), "{bad}");
        }
    }

    #[test]
    fn memory_sizes_parse_like_spark_and_kubernetes() {
        for (text, mb) in [
            ("512m", 512),
            ("512M", 512),
            ("4g", 4096),
            ("4G", 4096),
            ("2Gi", 2048),
            ("2gb", 2048),
            ("1.5g", 1536),
            ("1t", 1024 * 1024),
            ("2048", 2048),
            ("2048k", 2),
            (" 1g ", 1024),
        ] {
            assert_eq!(parse_memory_mb("memory", text), Ok(mb), "{text}");
        }
    }

    #[test]
    fn bad_memory_sizes_name_the_field_and_reason() {
        for text in ["4x", "", "g", "-1g", "0", "0m", "100k", "1e9g", "abc"] {
            let err = parse_memory_mb("memory", text).unwrap_err();
            assert_eq!(err.field, "memory", "{text}");
            assert!(!err.reason.is_empty());
        }
        let err = parse_memory_mb("memory", "4x").unwrap_err();
        assert!(err.reason.contains("\"4x\" is not a memory size"), "{err}");
    }

    #[test]
    fn cores_must_be_positive_whole_numbers() {
        assert_eq!(parse_cores("cores", "3"), Ok(3));
        assert!(
            parse_cores("cores", "0")
                .unwrap_err()
                .reason
                .contains("at least 1")
        );
        assert!(
            parse_cores("cores", "-2")
                .unwrap_err()
                .reason
                .contains("at least 1")
        );
        assert!(parse_cores("cores", "1.5").is_err());
        assert!(parse_cores("cores", "99999999").is_err());
    }

    #[test]
    fn sizes_print_for_people() {
        assert_eq!(format_mb(512), "512 MiB");
        assert_eq!(format_mb(4096), "4.0 GiB");
    }
}
