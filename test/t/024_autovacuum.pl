# Proves that autovacuum leaves the events tables alone (1.4): with autovacuum waking every second, a burst of adds that makes it vacuum and analyze a plain table of as many rows never makes it vacuum or analyze counter.events or counter.events_1, whose VACUUM or ANALYZE would hold a lock the rotation cannot take (after a second of waiting, compaction gave the rotation up and deleted the events row by row); the next compaction then folds the table whole, exactly.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $db   = 'postgres';
my $node = counter_node('autovacuum', qq(
autovacuum_naptime = 1
counter.worker_enabled = off
));
$node->safe_psql($db, q{
	CREATE EXTENSION counter;
	SELECT counter.create('burst', mode => 'events');
	SELECT counter.compact();
	CREATE TABLE control (k text, d int8);
});
$node->safe_psql($db, q{
	SELECT count(counter.add('burst', 'k' || (i % 50000), 1)) FROM generate_series(1, 100000) i;
	INSERT INTO control SELECT 'k' || (i % 50000), 1 FROM generate_series(1, 100000) i;
});
is($node->safe_psql($db, 'SELECT count(*) FROM counter.pending_events'), '100000', 'the burst is pending');

# autovacuum has run over the database: it vacuumed and analyzed the control table
ok($node->poll_query_until($db, q{
	SELECT autovacuum_count > 0 AND autoanalyze_count > 0
	  FROM pg_stat_user_tables WHERE relid = 'public.control'::regclass}),
	'autovacuum vacuums and analyzes a plain table of the same rows');
# one more launcher round, past the control table's
sleep(2);
is($node->safe_psql($db, q{
	SELECT string_agg(relname || ' ' || autovacuum_count || ' ' || autoanalyze_count || ' '
	                  || (last_autovacuum IS NULL) || ' ' || (last_autoanalyze IS NULL), ', ' ORDER BY relname)
	  FROM pg_stat_user_tables WHERE relid IN ('counter.events'::regclass, 'counter.events_1'::regclass)}),
	'events 0 0 true true, events_1 0 0 true true', 'but never an events table');

# the compaction rotates and folds the burst's table whole
$node->safe_psql($db, 'SELECT counter.compact()');
is($node->safe_psql($db, q{
	SELECT (SELECT count(*) FROM counter.event_tables WHERE folded IS NOT NULL) || ' '
	       || (SELECT count(*) FROM counter.pending_events) || ' '
	       || (SELECT sum(value) FROM counter.totals WHERE counter = 'burst') || ' '
	       || (SELECT count(*) FROM counter.totals WHERE counter = 'burst')}),
	'1 0 100000 50000', 'the next compaction folds the table whole, exactly');

$node->stop;
done_testing();
