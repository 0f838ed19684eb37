# Proves that every acknowledged counter.add is counted exactly once across crashes (worker SIGKILL, backend SIGKILL, immediate stop) under concurrent load, in slots, events and wal mode (replayed from the WAL), with the events tables rotating at every compaction in odd rounds, and that indexes and heaps stay intact.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;
use IPC::Run;
use Time::HiRes qw(usleep);

my $clients     = 16;
my $rounds      = 15;
my @kinds       = ('worker_kill', 'backend_kill', 'immediate_stop');
my @counters    = ('c_slots', 'c_events', 'c_wal');
my %ledger_col  = (c_slots => 'ks', c_events => 'ke', c_wal => 'kw');
my $db          = 'postgres';

my $node = counter_node('crash', qq(
max_connections = 100
fsync = on
restart_after_crash = on
log_statement = none
), allows_streaming => 1);	# wal_level replica: wal mode needs a replication slot

$node->safe_psql(
	$db, q(
CREATE EXTENSION counter;
CREATE EXTENSION amcheck;
SELECT counter.create('c_slots', mode => 'slots', rollups => '{1 hour,1 day}');
SELECT counter.create('c_events', mode => 'events', rollups => '{1 hour,1 day}');
SELECT counter.create('c_wal', mode => 'wal', rollups => '{1 hour,1 day}');
CREATE TABLE ledger (
	id		bigserial PRIMARY KEY,
	round	int NOT NULL,
	client	int NOT NULL,
	ks		text NOT NULL,
	ke		text NOT NULL,
	kw		text NOT NULL,
	delta	int NOT NULL
);
CREATE INDEX ledger_round ON ledger (round, client);
));

# pgbench scripts: one that commits (weight 9), one that rolls back (weight 1).
# One delta in five is -1.  The ledger row commits atomically with the adds.
my $basedir = $node->basedir;
my $body    = q(\set ks random(0, 3)
\set ke random(0, 3)
\set kw random(0, 3)
\set sign random(0, 4)
\set delta 1 - 2 * (:sign / 4)
BEGIN;
SELECT counter.add('c_slots', 'k' || :ks, :delta);
SELECT counter.add('c_events', 'k' || :ke, :delta);
SELECT counter.add('c_wal', 'k' || :kw, :delta);
INSERT INTO ledger (round, client, ks, ke, kw, delta) VALUES (:round, :client_id, 'k' || :ks, 'k' || :ke, 'k' || :kw, :delta);
);
append_to_file("$basedir/commit.sql",   $body . "COMMIT;\n");
append_to_file("$basedir/rollback.sql", $body . "ROLLBACK;\n");

# Pid of the counter worker of our database, once there is exactly one.
sub worker_pid
{
	$node->poll_query_until($db,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'counter worker' AND datname = '$db'"
	) or die "no counter worker for $db";
	return $node->safe_psql($db,
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'counter worker' AND datname = '$db'"
	);
}

# Acknowledged commit-script transactions per client, from pgbench's
# per-transaction logs (one line per completed transaction; script 0 is
# commit.sql), and the number of completed transactions of both scripts.
sub acked_per_client
{
	my ($prefix) = @_;
	my %acked;
	my $completed = 0;
	foreach my $file (glob("$prefix.*"))
	{
		foreach my $line (split /\n/, slurp_file($file))
		{
			my ($client, $txno, $time, $script) = split / /, $line;
			next unless defined $script && $time =~ /^\d+$/;
			$completed++;
			$acked{$client}++ if $script == 0;
		}
	}
	return (\%acked, $completed);
}

# All invariants that must hold after a crash and recovery.
sub check_invariants
{
	my ($round, $when) = @_;

	foreach my $c (@counters)
	{
		my $col = $ledger_col{$c};
		my $res = $node->safe_psql(
			$db, qq(
SELECT k, counter.value('$c', k),
       (SELECT coalesce(sum(delta), 0) FROM ledger WHERE $col = k)
  FROM unnest(ARRAY['k0', 'k1', 'k2', 'k3']) AS k ORDER BY k));
		my @bad;
		foreach my $row (split /\n/, $res)
		{
			my ($k, $value, $ledger) = split /\|/, $row;
			push @bad, "$k: value $value, ledger $ledger" if $value != $ledger;
		}
		note "round $round $when $c (key|value|ledger): "
		  . join(', ', split /\n/, $res);
		is(join('; ', @bad), '',
			"round $round $when: $c value equals the ledger sum for every key");
	}

	# no key other than the ones the load used exists anywhere
	is( $node->safe_psql(
			$db, q(
SELECT count(*) FROM (
	SELECT key FROM counter.totals
	UNION SELECT key FROM counter.slots
	UNION SELECT key FROM counter.pending_events) s
 WHERE key NOT IN ('k0', 'k1', 'k2', 'k3'))),
		'0',
		"round $round $when: no stray keys");
}

sub check_storage
{
	my ($round) = @_;

	foreach my $c (@counters)
	{
		is( $node->safe_psql(
				$db,
				"SELECT (count(*) > 0) || ' ' || count(*) FILTER (WHERE drift <> 0 OR drifted_keys <> 0)"
				  . " FROM counter.verify('$c')"),
			'true 0',
			"round $round: counter.verify('$c') shows no drift in any granularity"
		);
	}

	# every btree index of the extension's tables and of the ledger
	my $indexes = $node->safe_psql(
		$db, q(
SELECT c.oid::regclass
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_am a ON a.oid = c.relam
 WHERE n.nspname IN ('counter', 'public') AND a.amname = 'btree'
 ORDER BY 1::text));
	my @indexes = split /\n/, $indexes;
	foreach my $expected (
		qw(counter.slots_pkey counter.events_key counter.events_1_key counter.totals_pkey
		counter.totals_top counter.rollups_pkey counter.idempotency_pkey
		ledger_pkey))
	{
		ok((grep { $_ eq $expected } @indexes),
			"round $round: index $expected is among those checked");
	}
	my ($ret, $out, $err) = $node->psql($db,
		join('', map { "SELECT bt_index_check('$_', true);\n" } @indexes),
		on_error_stop => 1);
	is($ret . $err, '0',
		"round $round: bt_index_check(heapallindexed) clean on "
		  . scalar(@indexes)
		  . " indexes");

	($ret, $out, $err) = $node->psql(
		$db, q(
SELECT c.oid::regclass, v.*
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
       verify_heapam(c.oid) v
 WHERE n.nspname IN ('counter', 'public') AND c.relkind = 'r'),
		on_error_stop => 1);
	is("$ret|$out|$err", '0||', "round $round: verify_heapam clean on every table");
}

# The events tables' file numbers: TRUNCATE of a folded table changes one.
sub events_filenodes
{
	return $node->safe_psql($db,
		"SELECT pg_relation_filenode('counter.events') || ' ' || pg_relation_filenode('counter.events_1')"
	);
}

# wal-mode adds go through shared memory and the WAL only once armed
ok($node->poll_query_until($db, 'SELECT start_lsn IS NOT NULL FROM counter.wal_state'),
	'the worker armed the database for wal mode');

my $total_acked = 0;
my $truncating_rounds = 0;
for my $round (1 .. $rounds)
{
	my $kind   = $kinds[ ($round - 1) % 3 ];

	# odd rounds rotate the events tables at every compaction, even rounds
	# only past the default 1MB: each crash kind meets both
	my $rotate = $round % 2 ? '0' : '1MB';
	$node->safe_psql($db, "ALTER SYSTEM SET counter.rotate_size = '$rotate'");
	$node->reload;
	my $filenodes = events_filenodes();
	my $prefix = "$basedir/pgbench_log_r$round";
	my ($out, $err) = ('', '');
	my $log_offset = -s $node->logfile;

	# let a varying amount of load commit before the crash: a threshold, or
	# at most about 4 s of load (but never fewer than 200 transactions)
	my $threshold = 4000 * (1 + $round % 4);
	my $minimum   = 200;

	my $h = IPC::Run::start(
		[
			'pgbench', '-n', '-c', $clients, '-j', '2', '-T', '60',
			'-D', "round=$round", '--log', "--log-prefix=$prefix",
			'-f', "$basedir/commit.sql\@9",
			'-f', "$basedir/rollback.sql\@1",
			'-h', $node->host, '-p', $node->port, $db
		],
		'>', \$out, '2>', \$err);

	# poll until enough transactions have committed (bounded: 60 s)
	my $committed = 0;
	for (my $i = 0; $i < 600; $i++)
	{
		$committed = $node->safe_psql($db,
			"SELECT count(*) FROM ledger WHERE round = $round");
		last
		  if $committed >= $threshold
		  || ($i >= 40 && $committed >= $minimum)
		  || !$h->pumpable;
		usleep(100_000);
	}
	ok($committed >= $minimum,
		"round $round: $committed transactions committed before the crash")
	  or diag "pgbench stdout:\n$out\nstderr:\n$err";

	# crash
	my $crashed;
	if ($kind eq 'worker_kill')
	{
		my $pid = worker_pid();
		note "round $round: SIGKILL counter worker $pid";
		$crashed = ok(kill('KILL', $pid), "round $round: SIGKILL sent to the counter worker");
	}
	elsif ($kind eq 'backend_kill')
	{
		my $pid = $node->safe_psql($db,
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
			  . " AND datname = '$db' AND pid <> pg_backend_pid() ORDER BY random() LIMIT 1"
		);
		note "round $round: SIGKILL pgbench backend $pid";
		$crashed = ok($pid && kill('KILL', $pid), "round $round: SIGKILL sent to a pgbench backend");
	}
	else
	{
		note "round $round: immediate stop";
		$crashed = $node->stop('immediate');
	}
	# without a crash pgbench would run on: stop it
	$h->kill_kill unless $crashed;

	# pgbench ends once all its connections are gone (crash restart or stop)
	my $finished = eval { $h->finish; 1 };
	$h->kill_kill unless $finished;
	note "round $round: pgbench exit status " . ($h->result // 'none');
	unlike($out . $err, qr/ERROR:/,
		"round $round: no statement of the load failed with an ERROR")
	  or diag "pgbench stdout:\n$out\nstderr:\n$err";

	if ($kind eq 'immediate_stop')
	{
		$node->start;
	}
	else
	{
		ok(eval { counter_crash_restarted($node, $log_offset) },
			"round $round: the postmaster did a crash restart");
	}
	$node->poll_query_until($db, 'SELECT 1', '1')
	  or die "node did not come back";

	# client side: acked <= committed <= acked + in flight, per client and overall
	# (pgbench's per-script counts are racy with -j 2; its total is not)
	my ($acked, $completed) = acked_per_client($prefix);
	my ($processed) =
	  $out =~ /^number of transactions actually processed: (\d+)/m;
	is($completed, $processed // 'no summary',
		"round $round: pgbench's log and summary agree on completed transactions");
	my %ledger = map { split /\|/ } split /\n/,
	  $node->safe_psql($db,
		"SELECT client, count(*) FROM ledger WHERE round = $round GROUP BY client");
	my ($sum_acked, $sum_ledger) = (0, 0);
	my @bad;
	foreach my $client (0 .. $clients - 1)
	{
		my $ack = $acked->{$client} // 0;
		my $l = $ledger{$client} // 0;
		$sum_acked  += $ack;
		$sum_ledger += $l;
		push @bad, "client $client: acked $ack, ledger $l"
		  unless $ack <= $l && $l <= $ack + 1;
	}
	push @bad, "unknown client in ledger"
	  if grep { $_ < 0 || $_ >= $clients } keys %ledger;
	note "round $round ($kind): acked $sum_acked, ledger $sum_ledger";
	is(join('; ', @bad), '',
		"round $round: per client, acked <= ledger rows <= acked + 1");
	ok( $sum_acked <= $sum_ledger && $sum_ledger <= $sum_acked + $clients,
		"round $round: acked $sum_acked <= ledger $sum_ledger <= acked + $clients");
	ok($sum_acked > 0, "round $round: some transactions were acknowledged");
	$total_acked += $sum_acked;

	check_invariants($round, 'after recovery');

	my $moved = $node->safe_psql($db, 'SELECT counter.compact()');
	note "round $round: counter.compact() moved $moved";
	is( $node->safe_psql(
			$db,
			'SELECT (SELECT count(*) FROM counter.pending_events) || \' \' ||'
			  . ' (SELECT count(*) FROM counter.slots WHERE value <> 0)'),
		'0 0',
		"round $round: compact() left no pending events and no non-zero slot");
	check_invariants($round, 'after compact');

	check_storage($round);

	my $changed = events_filenodes() ne $filenodes;
	note "round $round: rotate_size $rotate, an events table was emptied: "
	  . ($changed ? 'yes' : 'no');
	$truncating_rounds++ if $changed;

	ok( $node->poll_query_until(
			$db,
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'counter worker' AND datname = '$db'"
		),
		"round $round: the counter worker is running again");
}

note "acknowledged transactions over all rounds: $total_acked";
ok($truncating_rounds > 0,
	"the events tables were rotated and emptied under load ($truncating_rounds rounds)");
$node->stop;
done_testing();
