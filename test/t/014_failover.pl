# Proves failover with a synchronous standby: after kill -9 of the primary under a 16-client load and promotion of the standby, 3 rounds in a row, every read on the new primary either fails with 55000 or is at least the acknowledged value (the ledger, written in the same transactions), and once the worker has replayed, slots, events and wal counters equal the ledger exactly (no acknowledged add lost); with the worker off, wal reads fail with 55000 instead of returning short values; no promotion logs a "was dropped" warning.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $db       = 'postgres';
my @counters = ('s', 'e', 'w');
my $keys     = q{ARRAY['k0','k1','k2','k3']};

# the primary; its postgresql.conf goes to every standby with the backups
my $primary = counter_node('node0', qq(
counter.flush_interval = '100ms'
max_connections = 50
log_statement = none
synchronous_commit = on
wal_keep_size = '256MB'
), allows_streaming => 1);
$primary->safe_psql($db, q{
	CREATE EXTENSION counter;
	SELECT counter.create('s', mode => 'slots');
	SELECT counter.create('e', mode => 'events');
	SELECT counter.create('w', mode => 'wal');
	CREATE TABLE ledger (k text NOT NULL, d int NOT NULL);
});
ok($primary->poll_query_until($db, q{SELECT start_lsn IS NOT NULL FROM counter.wal_state}),
	'the worker arms the database for wal mode');

my $script = $primary->basedir . '/add.sql';
append_to_file($script, q{\set k random(0, 3)
BEGIN;
SELECT counter.add('s', 'k' || :k, 1);
SELECT counter.add('e', 'k' || :k, 1);
SELECT counter.add('w', 'k' || :k, 1);
INSERT INTO ledger VALUES ('k' || :k, 1);
COMMIT;
});

# a streaming standby of $from, then made synchronous; it has no standby
# of its own (its commits would wait for none)
sub make_standby
{
	my ($from, $name) = @_;
	$from->backup("b_$name");
	my $standby = PostgreSQL::Test::Cluster->new($name);
	$standby->init_from_backup($from, "b_$name", has_streaming => 1);
	$standby->append_conf('postgresql.conf', "synchronous_standby_names = ''\n");
	$standby->start;
	$from->wait_for_catchup($standby);
	$from->append_conf('postgresql.conf', "synchronous_standby_names = '*'\n");
	$from->reload;
	ok($from->poll_query_until($db,
		q{SELECT count(*) = 1 FROM pg_stat_replication WHERE sync_state = 'sync'}),
		"$name is a synchronous standby");
	return $standby;
}

# sum over the keys of counter $c on $node, through session $s: (value,
# error text)
sub read_value
{
	my ($s, $c) = @_;
	$s->{stderr} = '';
	my ($out, $ret) = $s->query(qq{SELECT coalesce(sum(counter.value('$c', k)), 0) FROM unnest($keys) k});
	return $ret ? (undef, $s->{stderr}) : ($out, '');
}

# keys of counter $c on $node whose value differs from the ledger
sub mismatches
{
	my ($node, $c) = @_;
	return $node->safe_psql($db, qq{
		SELECT coalesce(string_agg(k || ': ' || counter.value('$c', k) || ' vs ' || s, ', '), '')
		  FROM (SELECT k, sum(d) AS s FROM ledger GROUP BY k) l
		 WHERE counter.value('$c', k) <> s});
}

for my $round (1 .. 3)
{
	my $worker_off = ($round == 3);
	my $standby = make_standby($primary, "node$round");

	# the flush after the backup puts the replay position inside the WAL
	# the standby has; then nothing is flushed until the crash
	$primary->safe_psql($db, q{
		SELECT counter.add(c, 'k0', 1) FROM unnest(ARRAY['s','e','w']) c;
		INSERT INTO ledger VALUES ('k0', 1);});
	ok($primary->poll_query_until($db,
		q{SELECT buffered_unflushed = 0 FROM counter.stats WHERE name = 'w'}),
		"round $round: a flush after the standby's backup");
	$primary->append_conf('postgresql.conf', "counter.flush_interval = '10min'\n");
	$primary->reload;
	$primary->safe_psql($db, 'SELECT pg_sleep(0.3)');
	if ($worker_off)
	{
		$standby->append_conf('postgresql.conf', "counter.worker_enabled = off\n");
		$standby->reload;
	}

	my $before = $primary->safe_psql($db, 'SELECT count(*) FROM ledger');
	my ($out, $err) = ('', '');
	my $load = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '16', '-j', '2', '-T', '60', '-f', $script, $primary->connstr($db) ],
		'>', \$out, '2>', \$err);
	ok($primary->poll_query_until($db, "SELECT count(*) >= $before + 1000 FROM ledger"),
		"round $round: the load runs");
	cmp_ok($primary->safe_psql($db, q{SELECT buffered_unflushed FROM counter.stats WHERE name = 'w'}),
		'>', 0, "round $round: wal adds are unflushed at the crash");

	# a session on the standby lives through its promotion
	my $s = $standby->background_psql($db, on_error_stop => 0,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	my $offset = -s $standby->logfile;
	$primary->kill9;
	$load->finish;
	$standby->promote;

	my $ack = $standby->safe_psql($db, 'SELECT coalesce(sum(d), 0) FROM ledger');
	note("round $round: $ack acknowledged adds, " . ($ack - $before) . ' in this round');
	cmp_ok($ack - $before, '>', 0, "round $round: transactions were acknowledged");

	if ($worker_off)
	{
		my ($v, $e) = read_value($s, 'w');
		like($e, qr/55000/, "round $round, worker off: a wal read fails with 55000")
		  or diag("read $v of $ack");
		$standby->append_conf('postgresql.conf', "counter.worker_enabled = on\n");
		$standby->reload;
	}

	# sample every counter from the promotion on, until all are exact
	my ($samples, $waited, $short, $other, $exact) = (0, 0, 0, 0, 0);
	my $deadline = time + 60;
	while (time < $deadline)
	{
		my $all = 1;
		for my $c (@counters)
		{
			my ($v, $e) = read_value($s, $c);
			$samples++;
			if (!defined $v)
			{
				$e =~ /55000/ ? $waited++ : $other++;
				diag("round $round: $c: $e") unless $e =~ /55000/;
				$all = 0;
			}
			elsif ($v < $ack)
			{
				$short++;
				diag("round $round: $c read $v of $ack");
				$all = 0;
			}
			elsif ($v != $ack)
			{
				$all = 0;
			}
		}
		last if $all && ++$exact >= 5;
	}
	$s->quit;
	note("round $round: $samples reads, $waited waited for the replay (55000)");
	is($short, 0, "round $round: no read after the promotion was short");
	is($other, 0, "round $round: no read failed but with 55000");
	ok($exact >= 5, "round $round: after the replay every counter equals the ledger");
	for my $c (@counters)
	{
		is(mismatches($standby, $c), '', "round $round: every key of $c equals its ledger sum");
	}
	ok(!$standby->log_contains(qr/was dropped/, $offset),
		"round $round: no \"was dropped\" warning on the promoted node");

	# the promoted node is the next primary
	$standby->append_conf('postgresql.conf', "counter.flush_interval = '100ms'\n");
	$standby->reload;
	$primary = $standby;
}

$primary->stop;
done_testing();
