# Proves the worker lifecycle: one worker per database with the extension, restarted after termination, compacting on its own, stopping on DROP EXTENSION, honouring worker_enabled and naptime reloads, and leaving with a killed postmaster so the node can start again.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;
use Time::HiRes qw(usleep);

my $node = counter_node('lifecycle');

# "db1:1,db2:1": the counter workers per database, as pg_stat_activity shows them
my $workers_sql = q(
SELECT coalesce(string_agg(datname || ':' || n, ',' ORDER BY datname), '')
  FROM (SELECT datname, count(*) AS n FROM pg_stat_activity
         WHERE backend_type = 'counter worker' GROUP BY datname) s);

sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'counter worker' AND datname = '$db'"
	);
}

sub launcher_pid
{
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'counter launcher'");
}

# Whether a process is gone (a zombie nobody reaps counts as gone).
sub gone
{
	my ($pid) = @_;
	return 1 unless kill(0, $pid);
	if (open my $fh, '<', "/proc/$pid/stat")
	{
		my $stat = <$fh>;
		close $fh;
		return 1 if defined $stat && $stat =~ /^\d+ \(.*\) Z /;
	}
	return 0;
}

# Wait (at most 30 s) until the given processes are gone; returns how many are left.
sub wait_gone
{
	my @pids = @_;
	my $left = scalar(@pids);
	for (my $i = 0; $i < 300 && $left > 0; $i++)
	{
		$left = grep { !gone($_) } @pids;
		usleep(100_000) if $left;
	}
	return $left;
}

# Sample the workers of $db ten times over about one second; returns how
# many processes showed up in more than one sample, i.e. stayed (a worker
# started by a launcher rescan that finds no extension leaves at once).
sub long_lived_workers
{
	my ($db) = @_;
	my %seen;
	for (my $i = 0; $i < 10; $i++)
	{
		$seen{$_}++ foreach split /\n/,
		  $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'counter worker' AND datname = '$db'"
		  );
		usleep(100_000);
	}
	return scalar(grep { $_ > 1 } values %seen);
}

# --- launcher and first worker -------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE db1');
$node->safe_psql('postgres', 'CREATE DATABASE db3');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'counter launcher'"
	),
	'one counter launcher runs');

$node->safe_psql('db1', 'CREATE EXTENSION counter');
ok($node->poll_query_until('postgres', $workers_sql, 'db1:1'),
	'CREATE EXTENSION in db1 starts one worker, for db1 only');
my $pid1 = worker_pid('db1');
is( $node->safe_psql(
		'db1', 'SELECT database || \':\' || pid FROM counter.worker_status()'),
	"db1:$pid1",
	'counter.worker_status() shows the db1 worker with its pid');
is( $node->safe_psql(
		'postgres',
		"SELECT application_name FROM pg_stat_activity WHERE pid = $pid1"),
	'counter worker',
	'the worker sets application_name');

# --- pg_terminate_backend: the launcher starts a new worker --------------------
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid1)"),
	't', 'pg_terminate_backend of the worker');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'counter worker'"
		  . " AND datname = 'db1' AND pid <> $pid1"),
	'a new worker for db1 is back after pg_terminate_backend');
my $pid1b = worker_pid('db1');
isnt($pid1b, $pid1, "the new worker has a new pid ($pid1 -> $pid1b)");

# --- events are compacted by the worker, without counter.compact() -------------
$node->safe_psql(
	'db1', q(
SELECT counter.create('ev', mode => 'events');
SELECT counter.add('ev', 'k' || (g % 3), g) FROM generate_series(1, 100) g;
SELECT counter.add('ev', 'k0', -7);
));
ok( $node->poll_query_until(
		'db1', 'SELECT count(*) FROM counter.pending_events', '0'),
	'the worker compacts events by itself');
# sum of g in 1..100 by g % 3: k0 = 1683, k1 = 1717, k2 = 1650; k0 also -7
is( $node->safe_psql(
		'db1',
		"SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM counter.values('ev', '{k0,k1,k2}')"
	),
	'k0=1676,k1=1717,k2=1650',
	'values are exact after the worker compacted');
is( $node->safe_psql(
		'db1',
		"SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM counter.totals WHERE counter = 'ev'"
	),
	'k0=1676,k1=1717,k2=1650',
	'the compacted values are in counter.totals');
ok( $node->safe_psql(
		'db1',
		'SELECT events_compacted >= 101 FROM counter.worker_status()'),
	'worker_status counts the compacted events');

# --- a second database gets its own worker --------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE db2');
$node->safe_psql('db2', 'CREATE EXTENSION counter');
ok($node->poll_query_until('postgres', $workers_sql, 'db1:1,db2:1'),
	'db2 gets its own worker: one worker per database');
my $pid2 = worker_pid('db2');
is(worker_pid('db1'), $pid1b, 'the db1 worker kept running meanwhile');
is( $node->safe_psql(
		'db2',
		'SELECT string_agg(database || \':\' || pid, \',\' ORDER BY database) FROM counter.worker_status()'
	),
	"db1:$pid1b,db2:$pid2",
	'worker_status lists both workers');

# --- DROP EXTENSION stops the worker of that database only --------------------
$node->safe_psql('db2', 'DROP EXTENSION counter');
ok($node->poll_query_until('postgres', $workers_sql, 'db1:1'),
	'DROP EXTENSION in db2 stops the db2 worker');
is(wait_gone($pid2), 0, 'the db2 worker process has exited');
is(worker_pid('db1'), $pid1b, 'the db1 worker keeps running');
is(long_lived_workers('db2'), 0,
	'no worker for db2 comes back without the extension');

$node->safe_psql('db2', 'CREATE EXTENSION counter');
ok($node->poll_query_until('postgres', $workers_sql, 'db1:1,db2:1'),
	'CREATE EXTENSION again in db2 brings its worker back');
$pid2 = worker_pid('db2');

# --- a database without the extension has no long-lived worker -----------------
# The launcher rescans every database (db3 included) when CREATE EXTENSION
# wakes it; db3's worker finds no extension and leaves at once.
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'counter worker' AND datname IN ('db3', 'postgres')",
		'0'),
	'no worker stays for databases without the extension');
is(long_lived_workers('db3'), 0, 'db3 has no long-lived worker');
is($node->safe_psql('postgres', $workers_sql),
	'db1:1,db2:1', 'still exactly one worker in db1 and db2');

# --- counter.worker_enabled = off: events stay pending --------------------------
$node->append_conf('postgresql.conf', 'counter.worker_enabled = off');
$node->reload;
ok( $node->poll_query_until(
		'db1', 'SHOW counter.worker_enabled', 'off'),
	'worker_enabled = off after reload');
# give the worker a few naptimes to take the reload (it does at its next
# wake-up, which the SIGHUP itself causes)
usleep(300_000);
$node->safe_psql('db1', "SELECT counter.add('ev', 'k9', 42)");
usleep(1_000_000);
is( $node->safe_psql(
		'db1',
		"SELECT count(*) || ' ' || counter.value('ev', 'k9') FROM counter.pending_events"),
	'1 42',
	'with worker_enabled = off the event stays pending (1 s, 20 naptimes), value exact');
is(worker_pid('db1'), $pid1b, 'the disabled worker stays connected');

$node->append_conf('postgresql.conf', 'counter.worker_enabled = on');
$node->reload;
ok( $node->poll_query_until(
		'db1', 'SELECT count(*) FROM counter.pending_events', '0'),
	'worker_enabled = on again: the pending event is compacted');
is($node->safe_psql('db1', "SELECT counter.value('ev', 'k9')"),
	'42', 'value exact after compaction');

# --- a SIGHUP reload of counter.naptime is honoured -----------------------------
# The worker wakes every min(naptime, flush_interval): raise both.
my $launcher = launcher_pid();
$node->append_conf('postgresql.conf',
	"counter.naptime = '1h'\ncounter.flush_interval = '1h'");
$node->reload;
ok( $node->poll_query_until(
		'db1', 'SHOW counter.naptime', '1h'),
	'naptime = 1h after reload');
usleep(300_000);
$node->safe_psql('db1', "SELECT counter.add('ev', 'k8', 5)");
usleep(1_000_000);
is( $node->safe_psql(
		'db1',
		"SELECT count(*) || ' ' || counter.value('ev', 'k8') FROM counter.pending_events"),
	'1 5',
	'with naptime = 1h the worker sleeps: the event stays pending, value exact');
$node->append_conf('postgresql.conf',
	"counter.naptime = '50ms'\ncounter.flush_interval = '1s'");
$node->reload;
ok( $node->poll_query_until(
		'db1', 'SELECT count(*) FROM counter.pending_events', '0'),
	'naptime back to 50ms: the event is compacted');
is(worker_pid('db1'), $pid1b, 'the db1 worker survived the reloads (same pid)');
is(worker_pid('db2'), $pid2,  'the db2 worker survived the reloads (same pid)');
is(launcher_pid(), $launcher, 'the launcher survived the reloads (same pid)');
ok(!$node->log_contains('terminated by signal'), 'no process crashed so far');

# --- postmaster SIGKILL: launcher and workers exit by themselves ------------------
my ($pm) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
my %children;
foreach my $stat (glob('/proc/[0-9]*/stat'))
{
	open my $fh, '<', $stat or next;
	my $line = <$fh>;
	close $fh;
	next unless defined $line && $line =~ /^(\d+) \(.*\) \S (\d+) /;
	$children{$1} = 1 if $2 == $pm;
}
ok($children{$launcher} && $children{$pid1b} && $children{$pid2},
	'launcher and workers are children of the postmaster');
note 'children of the postmaster: ' . join(' ', sort keys %children);

$node->kill9;
is(wait_gone($launcher, $pid1b, $pid2),
	0, 'launcher and both workers exit by themselves after the postmaster died');
# the other children (checkpointer, ...) must be gone before a new postmaster
# can take over the data directory
is(wait_gone(keys %children), 0, 'every child of the killed postmaster has exited');
# The dead postmaster itself may linger as a zombie until init reaps it, and a
# new postmaster takes any process with the old pid for a live one: wait a
# little for the reaping, then drop the stale lock file.
for (my $i = 0; $i < 100 && kill(0, $pm); $i++)
{
	usleep(100_000);
}
if (kill(0, $pm))
{
	ok(gone($pm), 'the killed postmaster is a zombie, removing postmaster.pid');
	unlink($node->data_dir . '/postmaster.pid');
}

$node->start;
ok($node->poll_query_until('postgres', $workers_sql, 'db1:1,db2:1'),
	'after a restart both databases have their worker again');
isnt(worker_pid('db1'), $pid1b, 'the db1 worker is a new process');
is( $node->safe_psql(
		'db1',
		"SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM counter.values('ev', '{k0,k1,k2,k8,k9}')"
	),
	'k0=1676,k1=1717,k2=1650,k8=5,k9=42',
	'values survived the postmaster kill');
$node->safe_psql('db1', "SELECT counter.add('ev', 'k7', 3)");
ok( $node->poll_query_until(
		'db1', 'SELECT count(*) FROM counter.pending_events', '0'),
	'the new worker compacts');

# --- DROP EXTENSION while the worker compacts ---------------------------------
# DROP EXTENSION locks the extension before its tables; the worker's round
# holds that lock in share mode, so the DROP waits for the round instead of
# deadlocking with it on the tables the round has locked.
my ($drops, $mid_round) = (0, 0);
for my $i (1 .. 6)
{
	$node->safe_psql('db2', 'CREATE EXTENSION IF NOT EXISTS counter');
	$node->safe_psql('db2',
		"SELECT counter.create('drop$i', mode => 'events', rollups => '{1 hour,1 day}');"
		  . " SELECT counter.add('drop$i', 'k' || g % 5000) FROM generate_series(1, 30000) g;"
		  . " SELECT counter.add('drop$i', 'k' || g % 5000) FROM generate_series(1, 30000) g");
	$node->poll_query_until('db2',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'counter worker'"
		  . " AND datname = 'db2' AND query = 'counter: compacting' AND state = 'active'");
	$mid_round++ if $node->safe_psql('db2',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'counter worker'"
		  . " AND datname = 'db2' AND state = 'active'") > 0;
	my ($ret, $out, $err) = $node->psql('db2', 'DROP EXTENSION counter');
	$drops++ if $ret == 0;
	diag("DROP EXTENSION $i: $err") if $ret != 0;
}
is($drops, 6, 'DROP EXTENSION during compaction rounds succeeds every time (no deadlock)');
cmp_ok($mid_round, '>', 0, 'some DROP EXTENSION came while a round was running');
$node->safe_psql('db2', 'CREATE EXTENSION counter');
ok($node->poll_query_until('postgres', $workers_sql, 'db1:1,db2:1'),
	'db2 has its worker again after the drops');

# --- DROP DATABASE of a database with a running worker -------------------------
$node->safe_psql('postgres', 'DROP DATABASE db2');
ok($node->poll_query_until('postgres', $workers_sql, 'db1:1'),
	'DROP DATABASE db2 succeeds and leaves only the db1 worker');

$node->stop;
done_testing();
