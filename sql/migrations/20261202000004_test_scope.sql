-- A data test of an incremental model checks only the rows a run merged when the same query
-- passed the last time it ran (over everything, or over the windows since): what each test
-- checked, and which query it was, are recorded with its result.
alter table metadata.transform_runs
    add column scope text check (scope in ('all', 'window')),
    add column query_md5 text;

-- The runner looks up each test's previous result by its name.
create index transform_runs_node_started_at on metadata.transform_runs (node, started_at desc);

comment on column metadata.transform_runs.scope is
    'For a data test: all rows, or only the rows its incremental model merged in this run.';
comment on column metadata.transform_runs.query_md5 is
    'For a data test: md5 of its query over all rows, which tells a changed test from the same one.';
