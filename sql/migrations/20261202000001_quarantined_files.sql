-- Bronze files the loader cannot read (corrupt or truncated Parquet, columns that are not the
-- bronze schema's, or an object a manifest announces that is not there) are set aside with
-- the reason instead of failing every run: one bad file must not stop every other from
-- loading. Bronze itself is never changed; a replay of the file's dates loads it once fixed.
create table metadata.quarantined_files (
    path            text primary key,
    reason          text not null check (reason in ('unreadable', 'wrong_schema', 'missing')),
    error           text not null,
    run_id          uuid not null,
    quarantined_at  timestamptz not null default now()
);

comment on table metadata.quarantined_files is
    'Bronze files set aside by the loader (grain: file); a later load of the file removes its row.';

alter table metadata.load_audit add column files_quarantined integer not null default 0;

-- A run that set files aside has not loaded everything it found: it says so.
create or replace view metadata.load_health as
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
        when status = 'SUCCESS' and files_quarantined > 0 then 'quarantined_files'
        when status = 'SUCCESS' and files_pending > 0 and rows_loaded = 0 then 'silent_failure'
        when status = 'RUNNING' and started_at < now() - interval '1 hour' then 'stalled'
        else 'healthy'
    end as health,
    files_quarantined
from metadata.load_audit
order by started_at desc;
