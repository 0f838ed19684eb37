-- counter.try_add of -3..+3 on bounded (min 0) counter s_bounded, zipfian over 1000 keys; the ledger row is inserted only if the add was applied (try_add not NULL).
\set k random_zipfian(1, 1000, 1.1)
\set d random(-3, 3)
BEGIN;
INSERT INTO ledger SELECT 's_bounded', 'k' || :k, :d::int8
 WHERE counter.try_add('s_bounded', 'k' || :k, :d::int8) IS NOT NULL;
COMMIT;
