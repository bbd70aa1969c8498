-- The history of transform runs: one row per model run and per data test.
create table metadata.transform_runs (
    run_id       uuid not null,
    node         text not null,
    kind         text not null check (kind in ('seed', 'model', 'test')),
    status       text not null check (status in ('SUCCESS', 'FAILED', 'SKIPPED')),
    rows         bigint,
    duration_ms  bigint not null,
    error        text,
    started_at   timestamptz not null,
    primary key (run_id, node)
);

create index transform_runs_started_at on metadata.transform_runs (started_at desc);

comment on table metadata.transform_runs is
    'One row per seed, model and data test of each fintech transform run (grain: run_id, node).';
