# Proves the buffered hash keeps to its size: with counter.buffered_keys = 16, adds to 60,000 buffered keys are all exact (those past the limit stored as events, each counted in counter.stats.buffered_fallbacks), the hash takes none of the server's spare shared memory and unrelated work (3,000 advisory locks, which need it) still gets it; and after a crash the replay of wal-mode adds finds room although buffered adds made before it filled the adds' share of the hash.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $node = counter_node('limits', qq(
counter.buffered_keys = 16
counter.flush_interval = '1h'
), allows_streaming => 1);
my $db = 'postgres';
$node->safe_psql($db, q{
	CREATE EXTENSION counter;
	SELECT counter.create('b', mode => 'buffered');
	SELECT counter.create('w', mode => 'wal');
});
ok($node->poll_query_until($db, q{SELECT start_lsn IS NOT NULL FROM counter.wal_state}),
	'wal mode is armed');

# the server's spare shared memory, before and after
my $free_sql = q{SELECT size FROM pg_shmem_allocations WHERE name IS NULL};
my $free_before = $node->safe_psql($db, $free_sql);

$node->safe_psql($db,
	q{SELECT counter.add('b', 'k' || g, g) FROM generate_series(1, 60000) g});
is($node->safe_psql($db, q{
		SELECT count(*) FROM generate_series(1, 60000) g
		 WHERE counter.value('b', 'k' || g) <> g}),
	'0', 'all 60,000 keys read exactly');
# each key had one add: it is in an event still pending, or in the totals
# the worker compacted it into (buffered entries flush only hourly here)
my $events = $node->safe_psql($db, q{
	SELECT (SELECT count(*) FROM counter.pending_events e JOIN counter.counters c ON c.id = e.counter_id
			 WHERE c.name = 'b')
		 + (SELECT count(*) FROM counter.totals WHERE counter = 'b')});
cmp_ok($events, '>=', 60000 - 16, 'the adds past the 16 entries went to events');
is($node->safe_psql($db, q{SELECT buffered_fallbacks FROM counter.stats WHERE name = 'b'}),
	60000 - 16, 'counter.stats counts each add stored as an event for want of room');
is($node->safe_psql($db, q{
		SELECT s.buffered_unflushed
			   + coalesce((SELECT sum(e.delta) FROM counter.pending_events e
							JOIN counter.counters c ON c.id = e.counter_id
						   WHERE c.name = 'b'), 0)
			   + coalesce((SELECT sum(t.value) FROM counter.totals t WHERE t.counter = 'b'), 0)
		  FROM counter.stats s WHERE s.name = 'b'}),
	60000 * 60001 / 2, 'shared memory, events and totals hold every add, once');
my $free_after = $node->safe_psql($db, $free_sql);
# 60,000 entries would take about 9 MB; the server itself may take a little
cmp_ok($free_before - $free_after, '<', 512 * 1024,
	"no spare shared memory taken by the hash ($free_before -> $free_after bytes free)");

# unrelated work needing shared memory still gets it
$node->safe_psql($db, q{
	DO $$ BEGIN PERFORM pg_advisory_xact_lock(g) FROM generate_series(1, 3000) g; END $$});
pass('3,000 advisory locks in one transaction (they take spare shared memory)');

# 2. a crash with unflushed wal-mode adds of 8 keys; after the restart the
# worker is off while buffered adds take the adds' share of the hash
$node->safe_psql($db, q{SELECT counter.drop('b'); SELECT counter.create('b2', mode => 'buffered')});
$node->safe_psql($db, q{SELECT counter.compact()});
$node->safe_psql($db, q{SELECT counter.add('w', 'w' || g, 100 + g) FROM generate_series(1, 8) g});
$node->append_conf('postgresql.conf', "counter.worker_enabled = off\n");
$node->stop('immediate');
$node->start;
$node->safe_psql($db,
	q{SELECT counter.add('b2', 'x' || g, 1) FROM generate_series(1, 100) g});
my $b2events = $node->safe_psql($db,
	q{SELECT count(*) FROM counter.pending_events e JOIN counter.counters c ON c.id = e.counter_id WHERE c.name = 'b2'});
cmp_ok($b2events, '>', 0, 'buffered adds before the replay filled the adds\' share');
is($node->safe_psql($db, q{SELECT buffered_fallbacks FROM counter.stats WHERE name = 'b2'}),
	$b2events, 'and counter.stats counts them, from 0 since the restart');

my $offset = -s $node->logfile;
$node->adjust_conf('postgresql.conf', 'counter.worker_enabled', 'on');
$node->reload;
ok($node->poll_query_until($db, q{
		SELECT count(*) = 8 FROM generate_series(1, 8) g
		 WHERE counter.value('w', 'w' || g) = 100 + g}),
	'the replay found room: every wal-mode add is back');
ok(!$node->log_contains('no room in shared memory', $offset), 'no replay failure logged');
is($node->safe_psql($db, q{
		SELECT count(*) FROM generate_series(1, 100) g WHERE counter.value('b2', 'x' || g) <> 1}),
	'0', 'the buffered adds read exactly');

done_testing();
