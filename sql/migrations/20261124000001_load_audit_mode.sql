-- A load run either picks up what the streamer's manifests announce (incremental) or re-reads
-- every bronze file of a date range (replay, after a fix or a loss in silver).
alter table metadata.load_audit
    add column mode text not null default 'incremental' check (mode in ('incremental', 'replay'));
