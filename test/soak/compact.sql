-- counter.compact() inside a transaction block after buffered and wal adds, once in a savepoint rolled back (with an add of 1000 rolled back with it) and once by name, committed with the rest.
\set k random_zipfian(1, :keys, 1.1)
\set d random(1, 5)
BEGIN;
SELECT counter.add('s_buffered', 'k' || :k, :d::int8);
INSERT INTO ledger VALUES ('s_buffered', 'k' || :k, :d::int8);
SAVEPOINT s;
SELECT counter.add('s_wal', 'k' || :k, 1000);
SELECT counter.compact();
ROLLBACK TO s;
SELECT counter.add('s_wal', 'k' || :k, :d::int8);
INSERT INTO ledger VALUES ('s_wal', 'k' || :k, :d::int8);
SELECT counter.compact('s_wal');
SELECT counter.add('s_switch', 'k' || :k, :d::int8);
INSERT INTO ledger VALUES ('s_switch', 'k' || :k, :d::int8);
COMMIT;
