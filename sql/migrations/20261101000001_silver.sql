-- Silver: validated payment events, one row per accepted event, loaded from bronze.
create schema if not exists raw;

create table raw.transactions (
    event_id         uuid primary key,
    transaction_id   text not null,
    status           text not null check (status in ('PENDING', 'SUCCESS', 'FAILED')),
    event_time       timestamptz not null,
    customer_id      text not null check (customer_id <> ''),
    merchant_id      text not null,
    merchant_name    text not null,
    category         text not null,
    amount           numeric(14, 2) not null check (amount > 0),
    currency         text not null check (currency in ('INR', 'USD')),
    payment_method   text not null check (payment_method in ('UPI', 'CARD', 'NETBANKING', 'WALLET')),
    city             text not null,
    state            text not null,
    country          text not null,
    latitude         double precision,
    longitude        double precision,
    is_fraud         boolean not null,
    source           text not null check (source in ('kaggle', 'synthetic')),
    schema_version   integer not null,
    kafka_partition  integer not null,
    kafka_offset     bigint not null,
    kafka_timestamp  timestamptz,
    ingested_at      timestamptz not null,
    bronze_file      text not null,
    load_run_id      uuid not null,
    loaded_at        timestamptz not null default now()
);

comment on table raw.transactions is
    'One row per accepted payment event (grain: event_id). Loaded from bronze by fintech load.';

-- The transforms read a payment's events in time order, and incremental runs read recent rows.
create index transactions_transaction_time on raw.transactions (transaction_id, event_time);
create index transactions_event_time on raw.transactions (event_time);
create index transactions_loaded_at on raw.transactions (loaded_at);

-- Rows that failed validation, with the reason; nothing read from bronze is lost.
create table raw.rejected_transactions (
    bronze_file      text not null,
    kafka_partition  integer not null,
    kafka_offset     bigint not null,
    event_id         text,
    transaction_id   text,
    reason           text not null,
    row_data         jsonb not null,
    load_run_id      uuid not null,
    rejected_at      timestamptz not null default now(),
    primary key (bronze_file, kafka_partition, kafka_offset)
);

comment on table raw.rejected_transactions is
    'Bronze rows the loader refused (grain: bronze row), with the reason and the row as JSON.';
