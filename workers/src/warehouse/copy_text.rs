//! Rows for `COPY … FROM STDIN (FORMAT text)`: each value escaped and followed by a tab, the
//! last tab of a row turned into its newline. The loader writes silver rows with it, the
//! transform runner its seeds.

use std::io::Write as _;

use chrono::DateTime;

/// A timestamp as PostgreSQL reads it, or `\N` out of chrono's range; `units` is
/// microseconds-per-unit of the value: 1 for µs, 1,000 for ms.
pub fn timestamp_text(value: i64, units: i64) -> String {
    DateTime::from_timestamp_micros(value.saturating_mul(units))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        .unwrap_or_else(|| "\\N".to_owned())
}

/// Appends `value` as it is (already COPY text, or `\N` for NULL), then the separator.
pub fn push_raw(line: &mut Vec<u8>, value: &str) {
    line.extend_from_slice(value.as_bytes());
    line.push(b'\t');
}

/// Appends a number as text, without an intermediate `String`.
pub fn push_display(line: &mut Vec<u8>, value: impl std::fmt::Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(line, "{value}\t");
}

/// Appends a finite float, or NULL.
pub fn push_float(line: &mut Vec<u8>, value: Option<f64>) {
    match value {
        Some(v) if v.is_finite() => push_display(line, v),
        _ => push_raw(line, "\\N"),
    }
}

/// Appends an amount in hundredths as a decimal with two places, e.g. `-12.05`.
pub fn push_cents(line: &mut Vec<u8>, cents: i128) {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    let _ = write!(line, "{sign}{}.{:02}\t", cents / 100, cents % 100);
}

/// Appends microseconds since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff+00`. This runs for
/// three columns of every row, so it formats by hand: chrono's formatter took most of the
/// loader's own time (see docs/benchmarks.md).
pub fn push_timestamp(line: &mut Vec<u8>, micros: i64) {
    const DAY: i64 = 86_400_000_000;
    let (days, of_day) = (micros.div_euclid(DAY), micros.rem_euclid(DAY));
    let (year, month, day) = civil_from_days(days);
    // PostgreSQL reads no year 0 and no five-digit year in this format; such a time (from
    // a broker's clock, say) is stored as the infinity on its side rather than failing the
    // whole run. Event times never get here: the loader rejects implausible ones first.
    if year < 1 {
        push_raw(line, "-infinity");
        return;
    }
    if year > 9999 {
        push_raw(line, "infinity");
        return;
    }
    let seconds = of_day / 1_000_000;
    let _ = write!(
        line,
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}+00\t",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        of_day % 1_000_000
    );
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Ends a row of `COPY … (FORMAT text)` whose fields were added with [`push_text`]: the
/// last field's tab becomes the end of the line.
pub fn end_copy_row(line: &mut Vec<u8>) {
    line.pop();
    line.push(b'\n');
}

/// Appends `value` escaped for `COPY … (FORMAT text)`, followed by the field separator.
pub fn push_text(line: &mut Vec<u8>, value: &str) {
    for byte in value.bytes() {
        match byte {
            b'\\' => line.extend_from_slice(b"\\\\"),
            b'\t' => line.extend_from_slice(b"\\t"),
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            other => line.push(other),
        }
    }
    line.push(b'\t');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_formatted_as_chrono_would() {
        let samples = [
            0,
            1,
            -1,
            86_399_999_999,
            951_782_400_000_000, // 2000-02-29
            1_795_484_072_091_362,
            -62_135_596_800_000_000, // 0001-01-01
            253_402_300_799_999_999, // 9999-12-31 23:59:59.999999
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let random = std::iter::repeat_with(move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Anywhere in years 1 to 9999.
            (state % 315_537_897_600_000_000) as i64 - 62_135_596_800_000_000
        });
        for micros in samples.into_iter().chain(random.take(10_000)) {
            let mut line = Vec::new();
            push_timestamp(&mut line, micros);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                format!("{}\t", timestamp_text(micros, 1)),
                "{micros}"
            );
        }
    }

    #[test]
    fn times_postgresql_cannot_read_are_written_as_infinities() {
        for (micros, text) in [
            (-62_135_596_800_000_001, "-infinity\t"), // 0000-12-31 23:59:59.999999
            (i64::MIN, "-infinity\t"),
            (253_402_300_800_000_000, "infinity\t"), // 10000-01-01
            (i64::MAX, "infinity\t"),
        ] {
            let mut line = Vec::new();
            push_timestamp(&mut line, micros);
            assert_eq!(String::from_utf8(line).unwrap(), text, "{micros}");
        }
    }

    #[test]
    fn amounts_are_written_with_two_places() {
        for (cents, text) in [
            (0, "0.00"),
            (5, "0.05"),
            (-5, "-0.05"),
            (123_456, "1234.56"),
            (-100, "-1.00"),
        ] {
            let mut line = Vec::new();
            push_cents(&mut line, cents);
            assert_eq!(String::from_utf8(line).unwrap(), format!("{text}\t"));
        }
    }
}
