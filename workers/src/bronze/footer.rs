//! A bound on the work of reading a Parquet footer, checked before the Parquet reader sees it.
//!
//! The footer is Thrift in the compact protocol. When the reader skips a field it does not
//! know, it treats each boolean element of a list as taking no bytes, and loops over the
//! element count the list header declares. A corrupt footer can therefore declare lists of
//! billions of booleans, nested, and keep the reader busy for hours on a few kilobytes (the
//! `bronze_reader` fuzz target found a 5 KB file that holds it for seconds to minutes). A
//! loader meeting one would hold its run until the liveness probe restarted it, and then meet
//! the file again.
//!
//! [`check`] walks the footer the way the reader skips it and counts the steps. A footer
//! the streamer writes takes about one step per byte, because every other value takes at
//! least one byte; one that needs many more steps than it has bytes is refused, and the
//! loader sets the file aside as unreadable. Footers that are malformed in other ways are
//! left to the reader, which reports them itself.

/// Steps allowed per byte of footer, with [`FIXED_STEPS`] on top: a footer the streamer
/// writes needs at most one step per byte, so this leaves room for any valid writer.
const STEPS_PER_BYTE: usize = 4;
const FIXED_STEPS: usize = 1 << 16;
/// The nesting the reader accepts when it skips a value.
const MAX_DEPTH: u8 = 64;

/// Why a footer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "its footer of {footer_bytes} bytes declares more than {steps_allowed} values to skip; \
     the Parquet reader would take hours over it"
)]
pub struct FooterTooCostly {
    /// Length of the footer's metadata.
    pub footer_bytes: usize,
    /// The steps a footer of that length is allowed.
    pub steps_allowed: usize,
}

/// Refuses a Parquet file whose footer would cost the reader far more steps than it has
/// bytes. Files too short to have a footer, and footers malformed in other ways, pass: the
/// reader refuses those with its own message.
pub fn check(file: &[u8]) -> Result<(), FooterTooCostly> {
    let Some(metadata) = metadata(file) else {
        return Ok(());
    };
    let steps_allowed = metadata.len().saturating_mul(STEPS_PER_BYTE) + FIXED_STEPS;
    let mut walk = Walk {
        bytes: metadata,
        at: 0,
        steps_left: steps_allowed,
    };
    match walk.value(STRUCT, MAX_DEPTH) {
        Err(Stop::TooCostly) => Err(FooterTooCostly {
            footer_bytes: metadata.len(),
            steps_allowed,
        }),
        Ok(()) | Err(Stop::Malformed) => Ok(()),
    }
}

/// The footer's metadata: the Thrift bytes before the 4-byte length and the `PAR1` magic.
fn metadata(file: &[u8]) -> Option<&[u8]> {
    let trailer = file.len().checked_sub(8)?;
    if &file[trailer + 4..] != b"PAR1" {
        return None;
    }
    let length = u32::from_le_bytes(file[trailer..trailer + 4].try_into().ok()?) as usize;
    file.get(trailer.checked_sub(length)?..trailer)
}

// Compact-protocol type codes.
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;

enum Stop {
    TooCostly,
    Malformed,
}

struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    steps_left: usize,
}

impl Walk<'_> {
    fn value(&mut self, kind: u8, depth: u8) -> Result<(), Stop> {
        self.steps_left = self.steps_left.checked_sub(1).ok_or(Stop::TooCostly)?;
        let depth = depth.checked_sub(1).ok_or(Stop::Malformed)?;
        match kind {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.skip(1),
            I16 | I32 | I64 => self.varint().map(drop),
            DOUBLE => self.skip(8),
            UUID => self.skip(16),
            BINARY => {
                let length = self.varint()?;
                self.skip(usize::try_from(length).map_err(|_| Stop::Malformed)?)
            }
            STRUCT => loop {
                let header = self.byte()?;
                if header == 0 {
                    return Ok(());
                }
                if header >> 4 == 0 {
                    // The field id follows in full when it is not a small delta.
                    self.varint()?;
                }
                self.value(header & 0x0f, depth)?;
            },
            LIST | SET => {
                let header = self.byte()?;
                let count = match header >> 4 {
                    15 => self.varint()?,
                    short => u64::from(short),
                };
                for _ in 0..count {
                    self.value(header & 0x0f, depth)?;
                }
                Ok(())
            }
            MAP => {
                let count = self.varint()?;
                if count > 0 {
                    let kinds = self.byte()?;
                    for _ in 0..count {
                        self.value(kinds >> 4, depth)?;
                        self.value(kinds & 0x0f, depth)?;
                    }
                }
                Ok(())
            }
            _ => Err(Stop::Malformed),
        }
    }

    fn byte(&mut self) -> Result<u8, Stop> {
        let byte = *self.bytes.get(self.at).ok_or(Stop::Malformed)?;
        self.at += 1;
        Ok(byte)
    }

    fn skip(&mut self, n: usize) -> Result<(), Stop> {
        let end = self.at.checked_add(n).ok_or(Stop::Malformed)?;
        if end > self.bytes.len() {
            return Err(Stop::Malformed);
        }
        self.at = end;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, Stop> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Stop::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_footer(metadata: &[u8]) -> Vec<u8> {
        let mut file = b"PAR1".to_vec();
        file.extend_from_slice(metadata);
        file.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
        file.extend_from_slice(b"PAR1");
        file
    }

    #[test]
    fn every_footer_the_streamer_writes_passes() {
        use crate::source::SourceMessage;
        let mut generator = crate::synthetic::SyntheticGenerator::new(7, 0.0);
        let mut injector = crate::faults::FaultInjector::new(Default::default(), 7);
        let mut split = crate::bronze::writer::DaySplit::new("transactions", 64 * 1024 * 1024);
        let start = chrono::Utc::now();
        for offset in 0..5_000 {
            let time = start + chrono::Duration::minutes(offset);
            let payload = match offset % 100 {
                0 => b"{not json".to_vec(),
                _ => {
                    injector
                        .encode(generator.next_payment(time))
                        .remove(0)
                        .payload
                }
            };
            split.add(&SourceMessage {
                partition: 0,
                offset,
                timestamp_ms: Some(time.timestamp_millis()),
                key: None,
                payload: Some(payload),
            });
        }
        let files = split
            .encode(0, |kind, date| format!("{kind:?}/{date}").into())
            .unwrap();
        assert!(files.len() > 2, "files of several days and dead letters");
        for file in files {
            assert_eq!(check(&file.body), Ok(()), "{}", file.path);
        }
    }

    #[test]
    fn nested_lists_of_booleans_declaring_billions_are_refused() {
        // A struct whose field 1 is a list of 15 lists, each declaring 2^31 - 1 booleans.
        let mut metadata = vec![0x19, 0xf9, 15];
        for _ in 0..15 {
            metadata.extend_from_slice(&[0xf1, 0xff, 0xff, 0xff, 0xff, 0x07]);
        }
        metadata.push(0);
        let refused = check(&file_with_footer(&metadata)).unwrap_err();
        assert_eq!(refused.footer_bytes, metadata.len());
    }

    #[test]
    fn malformed_footers_are_left_to_the_reader() {
        assert_eq!(check(b"not parquet"), Ok(()));
        assert_eq!(check(&file_with_footer(&[0x19, 0xf9])), Ok(()));
        let mut lying_length = file_with_footer(&[0]);
        lying_length[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(check(&lying_length), Ok(()));
    }
}
