-- counter.add_many of 1..20 keys (skewed towards k1, duplicates allowed) on one of the unbounded counters, with one ledger row per array element, in one transaction.
\set m random(1, 5)
\set n random(1, 20)
BEGIN;
WITH c AS (SELECT (ARRAY['s_slots', 's_events', 's_buffered', 's_wal', 's_switch'])[:m::int] AS c),
     b AS (SELECT 'k' || (1 + floor(power(random(), 3) * :keys::int))::int AS k,
                  (1 + floor(random() * 5))::int8 AS d
             FROM generate_series(1, :n::int)),
     a AS (SELECT counter.add_many((SELECT c FROM c), array_agg(b.k), array_agg(b.d)) AS n FROM b)
INSERT INTO ledger SELECT (SELECT c FROM c), b.k, b.d FROM b, a;
COMMIT;
