//! Bank reconciliation: the daily settlement files a bank sends ([`file`]), a generator of
//! such files from the payments the producer made ([`statement`]), and their loading into
//! silver ([`load`]). The gold models `marts.bank_reconciliation` and
//! `marts.bank_reconciliation_daily` match them against the stream.

pub mod file;
pub mod load;
pub mod statement;
