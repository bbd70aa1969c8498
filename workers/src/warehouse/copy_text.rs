//! Rows for `COPY … FROM STDIN (FORMAT text)`: each value escaped and followed by a tab, the
//! last tab of a row turned into its newline. The transform runner writes its seeds with it;
//! the loader writes silver rows in the binary format (`copy_binary`).

use chrono::DateTime;

/// A timestamp as PostgreSQL reads it, or `\N` out of chrono's range; `units` is
/// microseconds-per-unit of the value: 1 for µs, 1,000 for ms.
pub fn timestamp_text(value: i64, units: i64) -> String {
    DateTime::from_timestamp_micros(value.saturating_mul(units))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        .unwrap_or_else(|| "\\N".to_owned())
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
    fn text_fields_are_escaped_and_the_row_ends_with_a_newline() {
        let mut line = Vec::new();
        push_text(&mut line, "tab\there\nnewline \\ backslash\r");
        push_text(&mut line, "plain");
        end_copy_row(&mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "tab\\there\\nnewline \\\\ backslash\\r\tplain\n"
        );
    }

    #[test]
    fn timestamps_out_of_chronos_range_are_null() {
        assert_eq!(timestamp_text(0, 1), "1970-01-01 00:00:00.000000+00");
        assert_eq!(
            timestamp_text(1_000, 1_000),
            "1970-01-01 00:00:01.000000+00"
        );
        assert_eq!(timestamp_text(i64::MAX, 1), "\\N");
    }
}
