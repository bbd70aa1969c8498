//! Any payload becomes a bronze row or a dead letter with its kind, and never panics: the
//! decoder, then the row's columns as the streamer appends them.
#![no_main]

use fintech_workers::bronze::decode::{TransactionColumns, decode};
use fintech_workers::source::SourceMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let Ok(event) = decode(Some(payload), 1 << 20) else {
        return;
    };
    let message = SourceMessage {
        partition: 0,
        offset: 0,
        timestamp_ms: Some(0),
        key: None,
        payload: Some(payload.to_vec()),
    };
    let mut columns = TransactionColumns::default();
    columns.append(&event, &message);
    let batch = columns.finish(0);
    assert_eq!(batch.num_rows(), 1);
});
