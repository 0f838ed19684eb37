# Proves wal mode's contract: an acknowledged add is never lost and never counted twice across crashes (immediate stop, SIGKILL), a CHECKPOINT between the add and the crash, a clean restart, and partial flushes; rolled-back adds and aborted subtransactions never count; reads wait for the replay (55000 without a worker) and are then exact even for a snapshot older than the replay; a dropped slot costs only the unflushed adds whose WAL is gone; the slot keeps only the WAL since the last flush and goes with DROP EXTENSION (worker on or off) and DROP DATABASE.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

# wal_level replica (allows_streaming): wal mode needs a replication slot
my $node = counter_node('wal', qq(
counter.flush_interval = '1h'
fsync = on
restart_after_crash = on
max_prepared_transactions = 2
), allows_streaming => 1);
my $db = 'postgres';
$node->safe_psql($db, q{
	CREATE EXTENSION counter;
	SELECT counter.create('hits', mode => 'wal', rollups => '{1 hour,1 day}');
	CREATE TABLE ledger (k text, delta int8);
});

my $slot = 'counter_wal_'
  . $node->safe_psql($db, q{SELECT oid FROM pg_database WHERE datname = current_database()});

ok( $node->poll_query_until($db,
		"SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = '$slot' AND slot_type = 'physical'"),
	'the worker arms the database: its physical slot exists');
ok( $node->poll_query_until($db, q{SELECT start_lsn IS NOT NULL FROM counter.wal_state}),
	'and wal_state has a replay position');

# pgbench: N transactions per client of one wal add each and a ledger row,
# in the same transaction, from 8 clients
my $script = $node->basedir . '/add.sql';
append_to_file($script, q{\set k random(0, 3)
\set d random(1, 3)
BEGIN;
SELECT counter.add('hits', 'k' || :k, :d);
INSERT INTO ledger VALUES ('k' || :k, :d);
COMMIT;
});
sub load
{
	my ($n) = @_;
	$node->command_ok(
		[ 'pgbench', '-n', '-c', '8', '-j', '2', '-t', $n, '-f', $script, $node->connstr($db) ],
		"pgbench: $n transactions per client");
}

# value of every key against the ledger, and the total
sub check
{
	my ($what) = @_;
	my $bad = $node->safe_psql($db, q{
		SELECT string_agg(k || ': ' || counter.value('hits', k) || ' vs ' || s, ', ')
		  FROM (SELECT k, sum(delta) AS s FROM ledger GROUP BY k) l
		 WHERE counter.value('hits', k) <> s});
	is($bad, '', "$what: every key equals its ledger sum");
	return $node->safe_psql($db, q{SELECT coalesce(sum(delta), 0) FROM ledger});
}

sub unflushed
{
	return $node->safe_psql($db,
		q{SELECT buffered_unflushed FROM counter.stats WHERE name = 'hits'});
}

# 1. adds are buffered (no events, nothing flushed), and exact
load(200);
my $total = check('before any crash');
is(unflushed(), $total, 'every add is in shared memory, none flushed');
is($node->safe_psql($db, q{SELECT count(*) FROM counter.pending_events}),
	'0', 'no add went to events');

# 2. immediate stop: all unflushed adds come back from the WAL
my $offset = -s $node->logfile;
$node->stop('immediate');
$node->start;
check('after an immediate stop with nothing flushed');
ok($node->log_contains(qr/replayed \d+ wal-mode adds/, $offset),
	'the worker says it replayed the adds');

# 3. a CHECKPOINT after the adds, then a backend crash
load(100);
$node->safe_psql($db, 'CHECKPOINT');
$offset = -s $node->logfile;
my $pid = $node->safe_psql($db, q{
	SELECT pid FROM pg_stat_activity WHERE backend_type = 'counter worker' AND datname = current_database()});
ok(kill('KILL', $pid), 'SIGKILL the counter worker: a crash restart');
counter_crash_restarted($node, $offset);
$node->poll_query_until($db, 'SELECT 1', '1') or die 'node did not come back';
check('after a checkpoint and a crash restart');

# 4. rollbacks and aborted subtransactions never count, across a crash
$node->safe_psql($db, q{
	BEGIN; SELECT counter.add('hits', 'k0', 1000); ROLLBACK;
	BEGIN;
	SELECT counter.add('hits', 'k1', 5); INSERT INTO ledger VALUES ('k1', 5);
	SAVEPOINT s; SELECT counter.add('hits', 'k1', 1000); ROLLBACK TO s;
	SELECT counter.add('hits', 'k2', 7); INSERT INTO ledger VALUES ('k2', 7);
	COMMIT;
});
check('after a rollback and an aborted subtransaction');
$node->stop('immediate');
$node->start;
check('the same after an immediate stop');

# 5. a clean restart keeps the unflushed adds too
load(50);
$node->restart;
check('after a clean restart');

# 6. once flushed, a crash counts nothing twice; the slot follows the flushes
my $lsn0 = $node->safe_psql($db, "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
$node->append_conf('postgresql.conf', "counter.flush_interval = '100ms'\n");
$node->reload;
ok($node->poll_query_until($db,
	q{SELECT buffered_unflushed = 0 FROM counter.stats WHERE name = 'hits'}),
	'the worker flushes every add');
ok( $node->poll_query_until($db,
		"SELECT restart_lsn > '$lsn0' FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'the slot is advanced past the flushed WAL');
load(100);
$node->append_conf('postgresql.conf', "counter.flush_interval = '1h'\n");
$node->reload;
$node->safe_psql($db, 'SELECT pg_sleep(0.3)');
load(100);
ok(unflushed() > 0, 'some adds flushed, some not');
$node->stop('immediate');
$node->start;
$total = check('after a crash with part of the adds flushed');
$node->safe_psql($db, 'SELECT counter.compact()');
is($node->safe_psql($db, q{SELECT sum(counter.value(state)) FROM counter.totals WHERE counter = 'hits'}),
	$total, 'after compact() totals hold exactly the ledger sum');
is($node->safe_psql($db, q{SELECT count(*) FILTER (WHERE drift <> 0 OR drifted_keys <> 0) FROM counter.verify('hits')}),
	'0', 'no drift between totals and rollups');

# 7. PREPARE is refused
my ($ret, $out, $err) = $node->psql($db, q{
	BEGIN; SELECT counter.add('hits', 'k0'); PREPARE TRANSACTION 'p';});
like($err, qr/cannot prepare a transaction that added to a buffered or wal-mode counter/,
	'PREPARE TRANSACTION is refused after a wal add');
check('after the refused PREPARE');

# 8. a dropped slot: the WAL of unflushed adds can be removed; the replay
# then says so and carries on (the database is not stuck), the worker makes
# the slot again, and later adds are exact again
load(20);
my $before = check('before the slot is dropped');
my $lost = unflushed();
ok($lost > 0, 'unflushed adds before the slot is dropped');
# (the worker is held off meanwhile: it would make the slot again at once,
# and the slot would keep the WAL)
$node->append_conf('postgresql.conf', "counter.worker_enabled = off\n");
$node->reload;
$node->safe_psql($db, 'SELECT pg_sleep(0.3)');
my $offset0 = -s $node->logfile;
$node->safe_psql($db, "SELECT pg_drop_replication_slot('$slot')");
$node->safe_psql($db, 'SELECT pg_switch_wal(); CHECKPOINT;') for 1 .. 3;
$offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "counter.worker_enabled = on\n");
$node->stop('immediate');
$node->start;
is($node->safe_psql($db, q{SELECT sum(v) FROM (SELECT counter.value('hits', k) AS v FROM unnest(ARRAY['k0','k1','k2','k3']) k) s}),
	$before - $lost, 'the unflushed adds whose WAL was removed are lost, nothing else');
ok($node->log_contains(qr/cannot be replayed: requested WAL segment .* has already been removed/, $offset),
	'the worker warns that they could not be replayed');
ok($node->log_contains(qr/replication slot "$slot" of the counter extension was dropped/, $offset0),
	'and that the slot had been dropped');
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'the worker makes the slot again');
$node->safe_psql($db, q{DELETE FROM ledger; INSERT INTO ledger SELECT k, counter.value('hits', k) FROM unnest(ARRAY['k0','k1','k2','k3']) k});
load(20);
$node->stop('immediate');
$node->start;
check('adds after the slot came back survive a crash exactly');

# 9. reads right after a restart, before the replay: with no worker to
# replay (counter.worker_enabled = off) a read waits, then fails with 55000;
# a transaction whose snapshot is older than the replay reads exactly all
# the same (the replayed adds are back in shared memory, not in new rows)
load(20);
check('before a restart without a worker');
$node->append_conf('postgresql.conf', "counter.worker_enabled = off\n");
$node->stop('immediate');
$node->start;
($ret, $out, $err) = $node->psql($db, q{SELECT counter.value('hits', 'k0')});
like($err, qr/wal-mode adds of this database are not replayed yet/,
	'no replay yet: a read waits, then fails with 55000');
my $rr = $node->background_psql($db, on_error_stop => 0);
$rr->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$rr->query_safe('SELECT count(*) FROM ledger');
$offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "counter.worker_enabled = on\n");
$node->reload;
$node->wait_for_log(qr/replayed \d+ wal-mode adds/, $offset);
is($rr->query_safe(q{
	SELECT count(*) FROM (SELECT k, sum(delta) AS s FROM ledger GROUP BY k) l
	 WHERE counter.value('hits', k) = s}),
	'4', 'a snapshot older than the replay reads every key exactly');
$rr->quit;
check('a new transaction after the replay');

# 10. DROP DATABASE and DROP EXTENSION drop the slot
$node->safe_psql($db, 'CREATE DATABASE other');
$node->safe_psql('other', q{CREATE EXTENSION counter; SELECT counter.create('c', mode => 'wal');});
my $other = 'counter_wal_' . $node->safe_psql($db, q{SELECT oid FROM pg_database WHERE datname = 'other'});
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = '$other'"),
	'a second database gets its own slot');
$node->safe_psql('other', 'DROP EXTENSION counter');
ok($node->poll_query_until($db, "SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name = '$other'"),
	'DROP EXTENSION: the worker drops the slot');
$node->safe_psql('other', q{CREATE EXTENSION counter; SELECT counter.create('c', mode => 'wal');});
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = '$other'"),
	'CREATE EXTENSION again: the slot again');
$node->safe_psql($db, 'DROP DATABASE other');
is($node->safe_psql($db, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$other'"),
	'0', 'DROP DATABASE drops its slot');
$node->append_conf('postgresql.conf', "counter.worker_enabled = off\n");
$node->reload;
$node->safe_psql($db, 'SELECT pg_sleep(0.3)');
$node->safe_psql($db, 'DROP EXTENSION counter');
ok($node->poll_query_until($db, "SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'DROP EXTENSION with the worker disabled: the slot is dropped all the same');

$node->stop;
done_testing();
