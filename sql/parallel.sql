-- Proves that every function labelled PARALLEL RESTRICTED or SAFE works as the first call of a fresh session inside a forced parallel plan (a Gather really used, EXPLAIN shows it): reads above a Gather run in parallel mode, where no new snapshot may be taken, and _event_table_live and the type's functions run in the parallel workers themselves.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;
\set SHOW_CONTEXT never

CREATE TABLE par_rows AS SELECT g FROM generate_series(1, 5000) g;
ANALYZE par_rows;
CREATE ROLE counter_par_reader;
GRANT SELECT ON par_rows TO counter_par_reader;
SELECT counter.create('par_e', mode => 'events', rollups => '{1 hour,1 day}');
SELECT counter.create('par_m', members => true);
SELECT counter.create('par_b', mode => 'buffered');
SELECT counter.add('par_e', 'k', 5);
SELECT counter."like"('par_m', 'k', 'alice');
SELECT counter.add('par_b', 'k', 3);
SELECT counter.grant(name, 'counter_par_reader', 'read') FROM counter.list();
-- compacted: verify and series read rollups, whatever the worker does next
SELECT counter.compact('par_e') >= 0 AS compacted;

-- the settings of a forced parallel plan, for each fresh session
\set par 'SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2; SET force_parallel_mode = on;'

-- each \c is a fresh session: the query is the first call of the backend
\c
:par
SELECT count(*), counter.value('par_e', 'k') FROM par_rows;
EXPLAIN (COSTS OFF) SELECT count(*), counter.value('par_e', 'k') FROM par_rows;

\c
:par
SELECT count(*), counter.value('par_b', 'k') FROM par_rows;

\c
:par
SELECT count(*), (SELECT sum(value) FROM counter."values"('par_e', '{k,x}')) FROM par_rows;
EXPLAIN (COSTS OFF) SELECT count(*), (SELECT sum(value) FROM counter."values"('par_e', '{k,x}')) FROM par_rows;

\c
:par
SELECT count(*), (SELECT sum(value) FROM counter.top('par_e', 3)) FROM par_rows;

\c
:par
SELECT count(*), (SELECT count(*) FROM counter.series('par_e', 'k', now() - interval '1 day', now() + interval '1 day')) FROM par_rows;

\c
:par
SELECT count(*), (SELECT sum(drift) FROM counter.verify('par_e')) FROM par_rows;

\c
:par
SELECT count(*), counter.is_member('par_m', 'k', 'alice') FROM par_rows;

\c
:par
SELECT count(*), (SELECT count(*) FROM counter.members('par_m', 'k')) FROM par_rows;

\c
:par
SELECT count(*), counter.can_read('par_e') FROM par_rows;

\c
:par
SELECT count(*), (SELECT coalesce(sum(pending), 0) >= 0 FROM counter._buffered('par_b')) FROM par_rows;

\c
:par
SELECT count(*), counter._buffered_unflushed('par_b') >= 0 FROM par_rows;

\c
:par
SELECT count(*), (SELECT count(*) >= 0 FROM counter.worker_status()) FROM par_rows;

\c
:par
SELECT count(*), (SELECT count(*) FROM counter.stats WHERE name LIKE 'par\_%') FROM par_rows;
EXPLAIN (COSTS OFF) SELECT count(*), (SELECT count(*) FROM counter.stats WHERE name LIKE 'par\_%') FROM par_rows;

\c
:par
SELECT count(*), (SELECT count(*) FROM counter.list() WHERE name LIKE 'par\_%') FROM par_rows;

-- the same reads as a role that reads by grants
\c
:par
SET ROLE counter_par_reader;
SELECT count(*), counter.value('par_e', 'k'), counter.is_member('par_m', 'k', 'alice'),
       (SELECT count(*) FROM counter.stats WHERE name LIKE 'par\_%')
  FROM par_rows;
RESET ROLE;

-- PARALLEL SAFE: run in the workers (below the Gather)
\c
:par
SELECT count(*) FROM par_rows WHERE counter._event_table_live(0) OR counter._event_table_live(1);
EXPLAIN (COSTS OFF) SELECT count(*) FROM par_rows WHERE counter._event_table_live(0) OR counter._event_table_live(1);

\c
:par
SELECT count(*) FROM counter.pending_events e, par_rows p WHERE e.counter_id = p.g;

\c
:par
SELECT counter.value(counter.merge(('{' || (g % 7 + 1) || ':+' || g || '-1}')::counter.sharded_counter)),
       sum(length(counter.sharded_counter_send(('{1:+' || g || '}')::counter.sharded_counter))),
       count(*) FILTER (WHERE ('{1:+' || g || '}')::counter.sharded_counter::text <> ''
                          AND ('{1:+' || g || '}')::counter.sharded_counter OPERATOR(counter.>) '{}'
                          AND ('{1:+' || g || '}')::counter.sharded_counter::int8 = g
                          AND counter.increment('{}', 1, g)::numeric = g)
  FROM par_rows;
EXPLAIN (COSTS OFF) SELECT counter.value(counter.merge(('{' || (g % 7 + 1) || ':+' || g || '-1}')::counter.sharded_counter)) FROM par_rows;

\c
:par
SELECT count(*), sum(s.incremented) FROM par_rows p, counter.shards(('{1:+' || p.g || ',2:+1}')::counter.sharded_counter) s;
EXPLAIN (COSTS OFF) SELECT count(*), sum(s.incremented) FROM par_rows p, counter.shards(('{1:+' || p.g || ',2:+1}')::counter.sharded_counter) s;

\c
SELECT counter.drop(name) FROM counter.list() WHERE name LIKE 'par\_%';
DROP TABLE par_rows;
DROP ROLE counter_par_reader;
DROP EXTENSION counter;
