//! Any payload becomes a bronze row or a dead letter with its kind, and never panics: the
//! decoder, then the row's columns as the streamer appends them. Where the decoder's fast
//! path reads a row, the reference decoder must accept the payload with the same row.
#![no_main]

use fintech_workers::bronze::decode::{TransactionColumns, decode, decode_row};
use fintech_workers::bronze::row;
use fintech_workers::source::SourceMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let message = SourceMessage {
        partition: 0,
        offset: 0,
        timestamp_ms: Some(0),
        key: None,
        payload: Some(payload.to_vec()),
    };
    if let Some(fast) = row::scan(payload) {
        let event = decode(Some(payload), 1 << 20)
            .expect("the reference decoder accepts what the fast path reads");
        let mut reference = TransactionColumns::default();
        reference.append_event(&event, &message);
        let mut columns = TransactionColumns::default();
        columns.append(&fast, &message);
        assert_eq!(
            columns.finish(0),
            reference.finish(0),
            "the fast path and the reference decoder agree"
        );
    }
    let mut columns = TransactionColumns::default();
    if decode_row(Some(payload), 1 << 20, |row| columns.append(row, &message)).is_ok() {
        assert_eq!(columns.finish(0).num_rows(), 1);
    }
});
