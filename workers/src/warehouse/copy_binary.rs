//! Rows for `COPY … FROM STDIN (FORMAT binary)`: a header, then each row as its field count
//! and each field as its length and its value in PostgreSQL's send/receive form, then a
//! trailer. The loader writes silver rows with it: the server then parses no text, which is
//! most of what `COPY` costs it for timestamps and numerics.
//!
//! Values outside what a column of the target type holds are mapped as the loader's text
//! form mapped them before, so that switching formats changes no stored value: non-finite
//! floats are NULL, and times before year 1 or from year 10000 are the infinities.

/// The signature, the flags (no OIDs) and the length of the header extension (none).
pub const HEADER: &[u8; 19] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The field count -1 that ends the data.
pub const TRAILER: [u8; 2] = (-1_i16).to_be_bytes();

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch for timestamps.
pub const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// 0001-01-01 00:00:00 UTC in microseconds since 1970: the first time the text form wrote.
const YEAR_1_MICROS: i64 = -62_135_596_800_000_000;

/// 10000-01-01 00:00:00 UTC in microseconds since 1970: the first time the text form did not.
const YEAR_10000_MICROS: i64 = 253_402_300_800_000_000;

/// Starts a row of `fields` fields.
pub fn start_row(out: &mut Vec<u8>, fields: i16) {
    out.extend_from_slice(&fields.to_be_bytes());
}

/// Appends a NULL field.
pub fn push_null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1_i32).to_be_bytes());
}

/// Appends a field of `bytes`, already in the column type's binary form.
fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Bronze values come from Arrow arrays with 32-bit offsets, so no field reaches 2 GiB.
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends an `integer`.
pub fn push_i32(out: &mut Vec<u8>, value: i32) {
    push_field(out, &value.to_be_bytes());
}

/// Appends a `bigint`.
pub fn push_i64(out: &mut Vec<u8>, value: i64) {
    push_field(out, &value.to_be_bytes());
}

/// Appends a `boolean`.
pub fn push_bool(out: &mut Vec<u8>, value: bool) {
    push_field(out, &[u8::from(value)]);
}

/// Appends a `double precision`, or NULL when it is not finite.
pub fn push_f64(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        push_field(out, &value.to_be_bytes());
    } else {
        push_null(out);
    }
}

/// Appends `text` (UTF-8 as it is; the caller keeps NUL out, which text cannot store).
pub fn push_text(out: &mut Vec<u8>, value: &str) {
    push_field(out, value.as_bytes());
}

/// Appends a `uuid` given as its 128 bits.
pub fn push_uuid(out: &mut Vec<u8>, value: u128) {
    push_field(out, &value.to_be_bytes());
}

/// Appends a `timestamp with time zone` given in microseconds since 1970-01-01 UTC.
pub fn push_timestamp(out: &mut Vec<u8>, micros: i64) {
    let postgres = if micros < YEAR_1_MICROS {
        i64::MIN // -infinity
    } else if micros >= YEAR_10000_MICROS {
        i64::MAX // infinity
    } else {
        micros - POSTGRES_EPOCH_MICROS
    };
    push_field(out, &postgres.to_be_bytes());
}

/// Appends a `numeric` with two decimal places, given in hundredths.
///
/// PostgreSQL's binary numeric is base 10,000: the count of digits, the weight of the first
/// (the power of 10,000 it stands for), the sign, the display scale, then the digits, with
/// no zero digit at either end.
pub fn push_hundredths(out: &mut Vec<u8>, hundredths: i128) {
    const POSITIVE: u16 = 0x0000;
    const NEGATIVE: u16 = 0x4000;
    let sign = if hundredths < 0 { NEGATIVE } else { POSITIVE };
    let magnitude = hundredths.unsigned_abs();
    let (mut whole, cents) = (magnitude / 100, magnitude % 100);

    // An i128 of hundredths has at most 37 decimal digits before the point: 10 base-10,000
    // digits, plus one after the point.
    let mut digits = [0_u16; 11];
    let mut whole_digits = 0;
    while whole > 0 {
        digits[whole_digits] = (whole % 10_000) as u16;
        whole /= 10_000;
        whole_digits += 1;
    }
    digits[..whole_digits].reverse();
    // The first digit after the point holds four decimal places: .05 is 0500.
    digits[whole_digits] = (cents * 100) as u16;
    let mut used = &digits[..=whole_digits];
    let mut weight = whole_digits as i16 - 1;
    while let [0, rest @ ..] = used {
        used = rest;
        weight -= 1;
    }
    while let [rest @ .., 0] = used {
        used = rest;
    }
    if used.is_empty() {
        weight = 0;
    }

    // Written in place: this runs for every row the loader copies.
    let len = 8 + 2 * used.len() as i32;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&(used.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&(if used.is_empty() { POSITIVE } else { sign }).to_be_bytes());
    out.extend_from_slice(&2_i16.to_be_bytes());
    for digit in used {
        out.extend_from_slice(&digit.to_be_bytes());
    }
}

/// The fields of binary `COPY` data written with this module, row by row (`None` for NULL);
/// `None` when `data` is not such data. The benchmark's row-by-row baseline binds what it reads.
pub fn read_rows(data: &[u8]) -> Option<Vec<Vec<Option<&[u8]>>>> {
    fn take<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
        let (taken, left) = rest.split_at_checked(len)?;
        *rest = left;
        Some(taken)
    }
    let mut rest = data.strip_prefix(&HEADER[..])?.strip_suffix(&TRAILER[..])?;
    let mut rows = Vec::new();
    while !rest.is_empty() {
        let fields = i16::from_be_bytes(take(&mut rest, 2)?.try_into().ok()?);
        let mut row = Vec::with_capacity(usize::try_from(fields).ok()?);
        for _ in 0..fields {
            let len = i32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?);
            row.push(match usize::try_from(len) {
                Ok(len) => Some(take(&mut rest, len)?),
                Err(_) => None,
            });
        }
        rows.push(row);
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numeric field of `hundredths` as (weight, sign, digits), checking the header.
    fn numeric(hundredths: i128) -> (i16, u16, Vec<u16>) {
        let mut out = Vec::new();
        push_hundredths(&mut out, hundredths);
        let word = |i: usize| u16::from_be_bytes([out[i], out[i + 1]]);
        let len = i32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        let ndigits = word(4) as usize;
        assert_eq!(len, 8 + 2 * ndigits);
        assert_eq!(word(10), 2, "display scale");
        let digits = (0..ndigits).map(|d| word(12 + 2 * d)).collect();
        (word(6) as i16, word(8), digits)
    }

    #[test]
    fn amounts_are_base_ten_thousand_digits_with_no_zero_at_either_end() {
        assert_eq!(numeric(123_456), (0, 0, vec![1234, 5600])); // 1234.56
        assert_eq!(numeric(5), (-1, 0, vec![500])); // 0.05
        assert_eq!(numeric(1_000_000), (1, 0, vec![1])); // 10000.00
        assert_eq!(numeric(1_234_500), (1, 0, vec![1, 2345])); // 12345.00
        assert_eq!(numeric(100_000_001), (1, 0, vec![100, 0, 100])); // 1000000.01
        assert_eq!(numeric(-1_205), (0, 0x4000, vec![12, 500])); // -12.05
        assert_eq!(numeric(0), (0, 0, vec![]));
        assert_eq!(
            numeric(99_999_999_999_999), // the largest numeric(14, 2)
            (2, 0, vec![9999, 9999, 9999, 9900])
        );
        // 2^127 hundredths: ten digits before the point (37 decimal ones), one after.
        assert_eq!(numeric(i128::MIN).2.len(), 11);
    }

    #[test]
    fn timestamps_count_from_the_year_2000_and_out_of_range_ones_are_infinities() {
        let value = |micros| {
            let mut out = Vec::new();
            push_timestamp(&mut out, micros);
            assert_eq!(out[..4], 8_i32.to_be_bytes());
            i64::from_be_bytes(out[4..].try_into().unwrap())
        };
        assert_eq!(value(POSTGRES_EPOCH_MICROS), 0);
        assert_eq!(value(0), -POSTGRES_EPOCH_MICROS);
        assert_eq!(value(YEAR_1_MICROS), YEAR_1_MICROS - POSTGRES_EPOCH_MICROS);
        assert_eq!(value(YEAR_1_MICROS - 1), i64::MIN);
        assert_eq!(
            value(YEAR_10000_MICROS - 1),
            YEAR_10000_MICROS - 1 - POSTGRES_EPOCH_MICROS
        );
        assert_eq!(value(YEAR_10000_MICROS), i64::MAX);
        assert_eq!(value(i64::MIN), i64::MIN);
    }

    #[test]
    fn fields_carry_their_length_and_null_has_none() {
        let mut out = Vec::new();
        start_row(&mut out, 3);
        push_text(&mut out, "ab");
        push_null(&mut out);
        push_f64(&mut out, f64::NAN);
        assert_eq!(
            out,
            [
                &[0, 3][..],
                &[0, 0, 0, 2, b'a', b'b'],
                &[0xff; 4],
                &[0xff; 4]
            ]
            .concat()
        );
        let data = [&HEADER[..], &out, &TRAILER].concat();
        assert_eq!(
            read_rows(&data),
            Some(vec![vec![Some(&b"ab"[..]), None, None]])
        );
        assert_eq!(read_rows(&data[..data.len() - 3]), None);
    }
}
