# Proves idempotency keys make counter.add exactly-once: 16 concurrent clients repeating one key apply it once; repeats queued behind an open holder apply once whether it commits or aborts; after a backend SIGKILL crash and after an immediate stop, clients that retry every unacknowledged request (plus duplicate deliveries) leave every key of a slots and an events counter at exactly the sum of its distinct requests; reusing a key for another add raises 22023; a rolled-back add does not consume its key; keys are forgotten after counter.idempotency_window.
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

my $db = 'postgres';

my $node = counter_node('idem', qq(
max_connections = 60
fsync = on
restart_after_crash = on
));
my $basedir = $node->basedir;

$node->safe_psql(
	$db, q(
CREATE EXTENSION counter;
SELECT counter.create('c');
SELECT counter.create('ce', mode => 'events');
SELECT counter.create('c_slots');
SELECT counter.create('c_events', mode => 'events');
SELECT counter.create('b', min => 0);
));

sub value
{
	my ($c, $k) = @_;
	return $node->safe_psql($db, "SELECT counter.value('$c', '$k')");
}

# Run pgbench in the background on the given script files; returns the
# handle and refs to its stdout and stderr.
sub start_pgbench
{
	my ($clients, $txns, @scripts) = @_;
	my ($out, $err) = ('', '');
	# the TAP harness sets PGAPPNAME to the test's name; ours is looked for
	local $ENV{PGAPPNAME} = 'pgbench';
	my $h = IPC::Run::start(
		[
			'pgbench', '-n', '-c', $clients, '-j', '2', '-t', $txns,
			(map { ('-f', $_) } @scripts),
			'-h', $node->host, '-p', $node->port, $db
		],
		'>', \$out, '2>', \$err);
	return ($h, \$out, \$err);
}

sub finish_pgbench
{
	my ($name, $h, $out, $err, $expected) = @_;
	my $ok = $h->finish;
	ok($ok, "$name: pgbench exit status 0")
	  or diag "pgbench stdout:\n$$out\nstderr:\n$$err";
	like($$out, qr/number of transactions actually processed: $expected\/$expected\b/,
		"$name: all $expected pgbench transactions completed");
}

###
### 1. 16 concurrent clients, one idempotency key: applied exactly once
###
append_to_file("$basedir/same.sql", q(
SELECT counter.add('c', 'k', 1, 'same-key');
SELECT counter.add('ce', 'k', 1, 'same-key-events');
));
my ($h, $out, $err) = start_pgbench(16, 70, "$basedir/same.sql");
finish_pgbench('same key', $h, $out, $err, 16 * 70);
is(value('c', 'k'),  '1', '1120 concurrent repeats of one key: slots value is exactly 1');
is(value('ce', 'k'), '1', '1120 concurrent repeats of one key: events value is exactly 1');
is( $node->safe_psql(
		$db,
		"SELECT count(*) FROM counter.idempotency WHERE idem IN ('same-key', 'same-key-events')"),
	'2',
	'one idempotency row per key');
is( $node->safe_psql(
		$db,
		"SELECT counter.add_and_get('c', 'k', 1, 'same-key') || ' ' || counter.value('c', 'k')"),
	'1 1',
	'add_and_get repeating a used key returns the unchanged value');

###
### 2. Repeats queued behind an open holder: the holder's fate decides
###
# number of pgbench backends waiting on a lock
sub waiting_pgbench
{
	return "SELECT count(*) FROM pg_stat_activity"
	  . " WHERE application_name = 'pgbench' AND wait_event_type = 'Lock'";
}

foreach my $end ('ROLLBACK', 'COMMIT')
{
	my $idem = "held-$end";
	my $key  = "held-$end";
	my $holder = $node->background_psql($db);
	$holder->query_safe("BEGIN; SELECT counter.add('c', '$key', 1, '$idem');");

	append_to_file("$basedir/held-$end.sql",
		"SELECT counter.add('c', '$key', 1, '$idem');\n");
	my ($hh, $hout, $herr) = start_pgbench(8, 1, "$basedir/held-$end.sql");
	ok($node->poll_query_until($db, waiting_pgbench(), '8'),
		"$end: 8 repeats wait for the transaction holding the key");
	is(value('c', $key), '0', "$end: nothing visible while the holder is open");

	$holder->query_safe($end);
	$holder->quit;
	finish_pgbench("$end holder", $hh, $hout, $herr, 8);
	is(value('c', $key), '1',
		"$end: the holder plus 8 queued repeats applied exactly once");
}

###
### 3. Reusing a key for another add: 22023, nothing changes
###
$node->safe_psql($db, "SELECT counter.add('c', 'r', 5, 'reuse')");
foreach my $case (
	[ "counter.add('c', 'r', 6, 'reuse')",         'another delta' ],
	[ "counter.add('c', 'r2', 5, 'reuse')",        'another key' ],
	[ "counter.add('ce', 'r', 5, 'reuse')",        'another counter' ],
	[ "counter.add_and_get('c', 'r', -5, 'reuse')", 'add_and_get, another delta' ])
{
	my ($sql, $what) = @$case;
	my ($ret, $stdout, $stderr) =
	  $node->psql($db, "\\set VERBOSITY verbose\nSELECT $sql;");
	isnt($ret, 0, "reuse with $what fails");
	like($stderr, qr/ERROR:  22023: idempotency key "reuse" was already used for another add/,
		"reuse with $what raises 22023");
}
is( $node->safe_psql(
		$db,
		"SELECT counter.value('c', 'r') || ' ' || counter.value('c', 'r2') || ' ' || counter.value('ce', 'r')"),
	'5 0 0',
	'failed reuses changed nothing');
is($node->safe_psql($db, "SELECT counter.add('c', 'r', 5, 'reuse'); SELECT counter.value('c', 'r')"),
	"\n5", 'the same add with the same key is still a silent repeat');

###
### 4. An aborted transaction does not consume its key
###
foreach my $c ('c', 'ce')
{
	$node->safe_psql($db, "BEGIN; SELECT counter.add('$c', 'x', 1, 'x-$c'); ROLLBACK;");
	is(value($c, 'x'), '0', "$c: rolled-back add left nothing");
	$node->psql($db, "BEGIN; SELECT counter.add('$c', 'x', 1, 'y-$c'); SELECT 1/0; COMMIT;");
	$node->safe_psql($db,
		"BEGIN; SAVEPOINT s; SELECT counter.add('$c', 'x', 1, 'z-$c'); ROLLBACK TO s; COMMIT;");
	is( $node->safe_psql(
			$db, "SELECT count(*) FROM counter.idempotency WHERE idem IN ('x-$c', 'y-$c', 'z-$c')"),
		'0',
		"$c: rollback, error and rollback to savepoint leave no idempotency row");
	$node->safe_psql(
		$db, qq(
SELECT counter.add('$c', 'x', 1, 'x-$c');
SELECT counter.add('$c', 'x', 1, 'y-$c');
BEGIN;
SELECT counter.add('$c', 'x', 1, 'z-$c');
SELECT counter.add('$c', 'x', 1, 'z-$c');
COMMIT;
SELECT counter.add('$c', 'x', 1, 'x-$c');
));
	is(value($c, 'x'), '3',
		"$c: keys of aborted adds apply afterwards, each exactly once (also repeated in one transaction)");
}

# a bounded try_add stopped at its bound does not consume its key either
is( $node->safe_psql($db, "SELECT coalesce(counter.try_add('b', 'k', -1, 'b-1')::text, 'null')"),
	'null', 'try_add at the bound returns NULL');
is( $node->safe_psql(
		$db, "SELECT counter.add('b', 'k', 5, 'b-0'); SELECT counter.try_add('b', 'k', -1, 'b-1')"),
	"\n4", 'the key of a try_add stopped at its bound applies later');
is($node->safe_psql($db, "SELECT counter.try_add('b', 'k', -1, 'b-1')"),
	'4', 'and then repeats silently (try_add returns the current value)');

###
### 5. Crash and client retries: every request counted exactly once
###
# Requests n = 1..M of a round: slots counter for even n, events for odd,
# key k<n % 5>, delta n (so a lost or doubled request shows as its number),
# idempotency key r<round>-<n>.  Each driver
# is a psql running a script of its requests in order; "ack <n>" is printed
# only after the add returned (ON_ERROR_STOP: a lost connection ends it).
my $M        = 3000;
my $sessions = 6;

sub request
{
	my ($round, $n) = @_;
	return (($n % 2 ? 'c_events' : 'c_slots'), 'k' . ($n % 5), $n, "r$round-$n");
}

sub start_drivers
{
	my ($tag, $round, @ns) = @_;
	my @h;
	for my $s (0 .. $sessions - 1)
	{
		my $script = "$basedir/drv-$tag-$s.sql";
		my $text   = '';
		foreach my $n (grep { $_ % $sessions == $s } @ns)
		{
			my ($c, $k, $d, $i) = request($round, $n);
			# paced, so that the load outlasts the wait for a third of it
			# to commit even on an idle machine, and the crash lands mid-load
			$text .= "SELECT counter.add('$c', '$k', $d, '$i');\n\\echo ack $n\nSELECT pg_sleep(0.002);\n";
		}
		PostgreSQL::Test::Utils::append_to_file($script, $text);
		push @h,
		  IPC::Run::start(
			[
				'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
				'-d', $node->connstr($db) . " application_name=drv$s",
				'-f', $script
			],
			'>', "$script.out", '2>', "$script.err",
			IPC::Run::timeout(120));
	}
	return \@h;
}

# Wait for all drivers; return the acknowledged request numbers.
sub finish_drivers
{
	my ($tag, $h) = @_;
	my %acked;
	for my $s (0 .. $#$h)
	{
		eval { $h->[$s]->finish; 1 } or $h->[$s]->kill_kill;
		foreach my $line (split /\n/, slurp_file("$basedir/drv-$tag-$s.sql.out"))
		{
			$acked{$1}++ if $line =~ /^ack (\d+)$/;
		}
	}
	return \%acked;
}

sub driver_errors
{
	my ($tag) = @_;
	return join('', map { slurp_file("$basedir/drv-$tag-$_.sql.err") } 0 .. $sessions - 1);
}

# per counter and key: the sum of the deltas of the given requests
sub expected_sums
{
	my ($round, @ns) = @_;
	my %sum;
	foreach my $c ('c_slots', 'c_events')
	{
		$sum{"$c|k$_"} = 0 for 0 .. 4;
	}
	foreach my $n (@ns)
	{
		my ($c, $k, $d) = request($round, $n);
		$sum{"$c|$k"} += $d;
	}
	return \%sum;
}

sub actual_sums
{
	my %sum = map { my ($c, $k, $v) = split /\|/; ("$c|$k" => $v) } split /\n/,
	  $node->safe_psql(
		$db, q(
SELECT c, k, counter.value(c, k)
  FROM unnest(ARRAY['c_slots', 'c_events']) c, unnest(ARRAY['k0','k1','k2','k3','k4']) k));
	return \%sum;
}

sub sums_str
{
	my ($s) = @_;
	return join(', ', map { "$_=$s->{$_}" } sort keys %$s);
}

# compare actual with expected sums; on a difference, say by how much
sub check_sums
{
	my ($exp, $name) = @_;
	my $act = actual_sums();
	is(sums_str($act), sums_str($exp), $name)
	  or diag 'actual - expected: '
	  . join(', ', map { "$_: " . ($act->{$_} - $exp->{$_}) }
		  grep { $act->{$_} != $exp->{$_} } sort keys %$exp);
}

for my $round (1, 2)
{
	my $kind = $round == 1 ? 'SIGKILL of a backend' : 'immediate stop';
	my $before = actual_sums();
	my $log_offset = -s $node->logfile;

	my $drivers = start_drivers("r$round", $round, 1 .. $M);

	# crash once a third of the requests committed (bounded wait)
	my $committed = 0;
	for (my $i = 0; $i < 1200; $i++)
	{
		$committed = $node->safe_psql($db,
			"SELECT count(*) FROM counter.idempotency WHERE idem LIKE 'r$round-%'");
		last if $committed >= $M / 3 || !grep { $_->pumpable } @$drivers;
		usleep(50_000);
	}
	ok($committed >= $M / 3, "round $round: $committed requests committed before the crash");

	if ($round == 1)
	{
		my $pid = $node->safe_psql($db,
			"SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'drv%' ORDER BY pid LIMIT 1");
		ok($pid && kill('KILL', $pid), "round 1: SIGKILL sent to driver backend $pid");
		ok(eval { counter_crash_restarted($node, $log_offset) },
			'round 1: the postmaster did a crash restart');
	}
	else
	{
		$node->stop('immediate');
		$node->start;
	}
	my $acked = finish_drivers("r$round", $drivers);
	# (a connection attempt only: psql refused during recovery would not
	# read a query, and IPC::Run dies on the broken pipe)
	$node->poll_query_until($db, undef, '') or die "node did not come back";

	my @all     = 1 .. $M;
	my @acked   = grep { $acked->{$_} } @all;
	my @unacked = grep { !$acked->{$_} } @all;
	is(scalar(grep { $_ > 1 } values %$acked), 0, "round $round: no request acknowledged twice");
	ok(@acked > 0 && @unacked > 0,
		"round $round ($kind): " . scalar(@acked) . ' acknowledged, '
		  . scalar(@unacked) . ' not');

	# what survived: every acknowledged request, and values = committed requests
	my %durable = map { /^r\d+-(\d+)$/ ? ($1 => 1) : () } split /\n/,
	  $node->safe_psql($db, "SELECT idem FROM counter.idempotency WHERE idem LIKE 'r$round-%'");
	is(join(',', grep { !$durable{$_} } @acked), '',
		"round $round: every acknowledged request's key survived the crash");
	my $exp = expected_sums($round, keys %durable);
	$exp->{$_} += $before->{$_} for keys %$exp;
	check_sums($exp,
		"round $round: after recovery each key = sum of the requests whose key committed");

	# in flight at the crash: unacknowledged requests that had committed
	# (the acknowledgement was lost), and each driver's first unacknowledged one
	my @lost_ack = grep { $durable{$_} } @unacked;
	my %first_unacked;
	foreach my $n (@unacked)
	{
		$first_unacked{ $n % $sessions } //= $n;
	}
	note "round $round: none of the requests in flight at the crash had committed"
	  . ' (the retries still exercise the unacknowledged ones)'
	  unless @lost_ack;
	note "round $round: " . scalar(@lost_ack)
	  . " requests committed without acknowledgement (@lost_ack); "
	  . scalar(keys %first_unacked)
	  . " drivers had a request in flight or next ("
	  . join(' ', sort { $a <=> $b } values %first_unacked) . ')';

	# retry every unacknowledged request, plus every 7th acknowledged one
	# (a duplicate delivery), with the same key, until all are acknowledged
	my @dups  = grep { $_ % 7 == 0 } @acked;
	my @retry = sort { $a <=> $b } (@unacked, @dups);
	my %pending = map { $_ => 1 } @unacked;
	my $attempt = 0;
	my $retried = 0;
	while (%pending && $attempt < 4)
	{
		$attempt++;
		my @batch = $attempt == 1 ? @retry : sort { $a <=> $b } keys %pending;
		$retried += @batch;
		my $tag = "r$round-retry$attempt";
		my $ack = finish_drivers($tag, start_drivers($tag, $round, @batch));
		delete $pending{$_} for keys %$ack;
		note "round $round retry $attempt: sent " . scalar(@batch)
		  . ', acknowledged ' . scalar(keys %$ack)
		  . (driver_errors($tag) ne '' ? ', errors: ' . driver_errors($tag) : '');
	}
	is(scalar(keys %pending), 0,
		"round $round: all " . scalar(@unacked) . ' unacknowledged requests acknowledged on retry ('
		  . scalar(@lost_ack) . ' of them had committed before the crash, '
		  . scalar(@dups) . ' duplicate deliveries)');
	ok($retried > 0, "round $round: $retried requests were retried");

	$exp = expected_sums($round, @all);
	$exp->{$_} += $before->{$_} for keys %$exp;
	check_sums($exp, "round $round: every request counted exactly once in both counters");
	is( $node->safe_psql($db,
			"SELECT count(*) FROM counter.idempotency WHERE idem LIKE 'r$round-%'"),
		$M, "round $round: one idempotency row per request");
	$node->safe_psql($db, 'SELECT counter.compact()');
	check_sums($exp, "round $round: still exact after compact()");
}

###
### 6. The window: a key older than counter.idempotency_window applies again
###
$node->safe_psql($db, "ALTER SYSTEM SET counter.idempotency_window = 1; SELECT pg_reload_conf();");
$node->poll_query_until($db, "SHOW counter.idempotency_window", '1s');
$node->safe_psql($db, "SELECT counter.add('c', 'w', 1, 'w'); SELECT counter.add('c', 'w', 1, 'w');");
is(value('c', 'w'), '1', 'within the window the key applies once');
ok( $node->poll_query_until(
		$db,
		"SELECT coalesce((SELECT created < now() - interval '1 second' FROM counter.idempotency WHERE idem = 'w'), true)"
	),
	'the key grew older than the window');
$node->safe_psql($db, "SELECT counter.add('c', 'w', 1, 'w'); SELECT counter.add('c', 'w', 1, 'w');");
is(value('c', 'w'), '2', 'after the window the key applies again, once');

$node->stop;
done_testing();
