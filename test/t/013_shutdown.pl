# Proves that a clean shutdown loses nothing: a fast stop in the middle of a 16-client load, and a smart stop that waits for the load to end, keep every acknowledged add of a buffered and of a wal counter (value = ledger, written in the same transactions) with nothing flushed before the stop; the worker still leaves at once for pg_terminate_backend, ALTER DATABASE RENAME and DROP DATABASE.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

# nothing is flushed during the test but by the shutdown (the worker's first
# round flushes once, before any add); wal mode needs wal_level replica
my $node = counter_node('shutdown', qq(
counter.flush_interval = '10min'
max_connections = 50
log_statement = none
), allows_streaming => 1);
my $db = 'postgres';
$node->safe_psql($db, q{
	CREATE EXTENSION counter;
	SELECT counter.create('b', mode => 'buffered');
	SELECT counter.create('w', mode => 'wal');
	CREATE TABLE ledger (r int NOT NULL, k text NOT NULL, d int NOT NULL);
});
ok($node->poll_query_until($db, q{SELECT start_lsn IS NOT NULL FROM counter.wal_state}),
	'the worker arms the database for wal mode');

# one transaction: an add to each counter and its ledger row; keys are
# those of round r
my $script = $node->basedir . '/add.sql';
append_to_file($script, q{\set k random(0, 3)
\set d random(1, 3)
BEGIN;
SELECT counter.add('b', :r || '.k' || :k, :d);
SELECT counter.add('w', :r || '.k' || :k, :d);
INSERT INTO ledger VALUES (:r, :r || '.k' || :k, :d);
COMMIT;
});

# start round $r, a 16-client load of $secs seconds; returns the harness and
# its output
sub start_load
{
	my ($r, $secs) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '16', '-j', '2', '-T', $secs, '-D', "r=$r", '-f', $script,
		  $node->connstr($db) ],
		'>', \$out, '2>', \$err);
	return ($h, \$out, \$err);
}

# keys whose value differs from the ledger, for counter $c ('' when none)
sub mismatches
{
	my ($c) = @_;
	return $node->safe_psql($db, qq{
		SELECT coalesce(string_agg(k || ': ' || counter.value('$c', k) || ' vs ' || s, ', '), '')
		  FROM (SELECT k, sum(d) AS s FROM ledger GROUP BY k) l
		 WHERE counter.value('$c', k) <> s});
}

# acknowledged adds (the ledger sum) minus the value of counter $c
sub lost
{
	my ($c) = @_;
	return $node->safe_psql($db, qq{
		SELECT coalesce(sum(s - counter.value('$c', k)), 0)
		  FROM (SELECT k, sum(d) AS s FROM ledger GROUP BY k) l});
}

# both counters equal the ledger after the restart that follows a stop
sub check_after
{
	my ($what) = @_;
	for my $c ('b', 'w')
	{
		is(lost($c), '0', "$what: counter $c lost no acknowledged add");
		is(mismatches($c), '', "$what: every key of counter $c equals its ledger sum");
	}
}

sub unflushed
{
	return $node->safe_psql($db,
		q{SELECT sum(buffered_unflushed) FROM counter.stats WHERE name IN ('b', 'w')});
}

# 1. fast stop in the middle of the load: every backend is terminated at once
my ($h, $out, $err) = start_load(1, 60);
ok($node->poll_query_until($db, q{SELECT count(*) >= 2000 FROM ledger}),
	'fast: the load runs');
ok(unflushed() > 0, 'fast: adds are unflushed before the stop');
$node->stop('fast');
$h->finish;
$node->start;
my $n = $node->safe_psql($db, 'SELECT count(*) FROM ledger');
note("fast stop: $n transactions committed");
cmp_ok($n, '>', 0, 'fast: transactions committed before the stop');
check_after('fast stop');

# 2. smart stop while the load runs: it waits for the clients, which end on
# their own; pgbench completes normally
($h, $out, $err) = start_load(2, 5);
ok($node->poll_query_until($db, q{SELECT count(*) >= 500 FROM ledger WHERE r = 2}),
	'smart: the load runs');
ok(unflushed() != 0, 'smart: adds are unflushed before the stop');
$node->stop('smart');
ok($h->finish, 'smart: pgbench ended normally') or diag($$err);
my ($processed) = $$out =~ /number of transactions actually processed: (\d+)/;
note("smart stop: pgbench processed " . ($processed // 'none'));
cmp_ok($processed // 0, '>', 0, 'smart: pgbench processed transactions');
$node->start;
is($node->safe_psql($db, 'SELECT count(*) FROM ledger WHERE r = 2'), $processed,
	'smart: every processed transaction is in the ledger');
check_after('smart stop');

# 3. the other SIGTERMs still end the worker without waiting: it comes back
# after pg_terminate_backend even while a client stays connected, and leaves
# for ALTER DATABASE RENAME and DROP DATABASE (which wait 5 s at most)
my $worker = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'counter worker' AND datname = };
my $idle = $node->background_psql($db);
my $pid = $node->safe_psql($db, "$worker 'postgres'");
$node->safe_psql($db, "SELECT pg_terminate_backend($pid)");
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM ($worker 'postgres' AND pid <> $pid) s"),
	'pg_terminate_backend: a new worker runs');
$idle->quit;
$node->safe_psql($db, 'CREATE DATABASE d1');
$node->safe_psql('d1', q{CREATE EXTENSION counter; SELECT counter.create('x', mode => 'buffered'); SELECT counter.add('x', 'k', 1);});
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM ($worker 'd1') s"), 'd1 has its worker');
$node->safe_psql($db, 'ALTER DATABASE d1 RENAME TO d2');
$node->safe_psql($db, 'DROP DATABASE d2');
is($node->safe_psql($db, "SELECT count(*) FROM pg_database WHERE datname LIKE 'd_'"), '0',
	'RENAME and DROP DATABASE succeed with a worker running');

$node->stop;
done_testing();
