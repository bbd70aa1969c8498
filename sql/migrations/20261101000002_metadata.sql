-- Metadata: the audit of every load run, per-run data quality, and which bronze files are loaded.
create schema if not exists metadata;

create table metadata.load_audit (
    run_id          uuid primary key,
    started_at      timestamptz not null,
    finished_at     timestamptz,
    duration_ms     bigint,
    status          text not null check (status in ('RUNNING', 'SUCCESS', 'FAILED')),
    files_pending   integer not null default 0,
    files_loaded    integer not null default 0,
    rows_read       bigint not null default 0,
    rows_loaded     bigint not null default 0,
    rows_rejected   bigint not null default 0,
    rows_duplicate  bigint not null default 0,
    error           text,
    loader_version  text not null,
    host            text not null
);

create index load_audit_started_at on metadata.load_audit (started_at desc);

create table metadata.data_quality_metrics (
    run_id      uuid not null references metadata.load_audit (run_id),
    metric      text not null,
    dimension   text not null default '',
    value       bigint not null,
    primary key (run_id, metric, dimension)
);

comment on table metadata.data_quality_metrics is
    'Per load run and metric (duplicates, nulls by column, invalid rows), one value; dimension names the column or reason.';

create table metadata.loaded_files (
    path          text primary key,
    size_bytes    bigint not null,
    etag          text,
    rows_read     bigint not null,
    run_id        uuid not null,
    loaded_at     timestamptz not null default now()
);

-- Manifests whose transaction files are all loaded; the loader lists only recent manifest
-- folders and skips these.
create table metadata.loaded_manifests (
    path          text primary key,
    manifest_date date not null,
    run_id        uuid not null,
    loaded_at     timestamptz not null default now()
);

create index loaded_manifests_date on metadata.loaded_manifests (manifest_date);

-- Explicit failures, silent failures (a successful run that loaded nothing although files were
-- pending) and runs that never finished, newest first.
create view metadata.load_health as
select
    run_id,
    started_at,
    finished_at,
    status,
    files_pending,
    files_loaded,
    rows_read,
    rows_loaded,
    rows_rejected,
    rows_duplicate,
    error,
    case
        when status = 'FAILED' then 'explicit_failure'
        when status = 'SUCCESS' and files_pending > 0 and rows_loaded = 0 then 'silent_failure'
        when status = 'RUNNING' and started_at < now() - interval '1 hour' then 'stalled'
        else 'healthy'
    end as health
from metadata.load_audit
order by started_at desc;
