-- The settlement files a bank sends once a day (settlements-YYYY-MM-DD.csv under the batch
-- files' prefix), loaded line by line by the loader's bank-file runs. A duplicated line stays
-- two rows (the reconciliation reports it); a line that cannot be read is kept with its number
-- and reason instead.
create table raw.bank_settlements (
    bank_file        text not null,
    line_number      integer not null,
    settlement_date  date not null,
    transaction_id   text not null,
    amount           numeric(14, 2) not null check (amount > 0),
    currency         text not null check (currency in ('INR', 'USD')),
    status           text not null check (status in ('SUCCESS', 'FAILED')),
    settled_at       timestamptz not null,
    bank_reference   text not null,
    load_run_id      uuid not null,
    loaded_at        timestamptz not null default now(),
    primary key (bank_file, line_number)
);

create index bank_settlements_transaction_id on raw.bank_settlements (transaction_id);

comment on table raw.bank_settlements is
    'One row per line of a bank settlement file (grain: file and line). Loaded by fintech load --bank-files-url.';
comment on column raw.bank_settlements.settlement_date is
    'The day the file covers, from its name.';

create table raw.rejected_bank_lines (
    bank_file    text not null,
    line_number  integer not null,
    line         text not null,
    reason       text not null,
    error        text not null,
    load_run_id  uuid not null,
    rejected_at  timestamptz not null default now(),
    primary key (bank_file, line_number)
);

comment on table raw.rejected_bank_lines is
    'Lines of bank settlement files that cannot be read, with their 1-based line number (the header is line 1).';

create table metadata.loaded_bank_files (
    path             text primary key,
    settlement_date  date not null,
    size_bytes       bigint not null,
    etag             text,
    lines_loaded     bigint not null,
    lines_rejected   bigint not null,
    run_id           uuid not null,
    loaded_at        timestamptz not null default now()
);

comment on table metadata.loaded_bank_files is
    'Bank settlement files loaded, each exactly once (grain: file).';

alter table metadata.load_audit drop constraint load_audit_mode_check;
alter table metadata.load_audit
    add constraint load_audit_mode_check check (mode in ('incremental', 'replay', 'bank_files'));
