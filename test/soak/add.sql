-- Template (soak.sh writes add_<counter>.sql with @COUNTER@ replaced): one add on a zipfian (hot) and one on a uniform key of the keyspace k1..k:keys, each with its ledger row in the same transaction.
\set hot random_zipfian(1, :keys, 1.1)
\set cold random(1, :keys)
\set d random(-2, 5)
BEGIN;
SELECT counter.add('@COUNTER@', 'k' || :hot, :d::int8);
INSERT INTO ledger VALUES ('@COUNTER@', 'k' || :hot, :d::int8);
SELECT counter.add('@COUNTER@', 'k' || :cold, 1);
INSERT INTO ledger VALUES ('@COUNTER@', 'k' || :cold, 1);
COMMIT;
