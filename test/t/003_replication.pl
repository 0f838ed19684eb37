# Multi-node: three nodes in a full logical-replication mesh (row-filtered publications of counter.totals) converge to the exact sum of all adds, with no echo, across partitions, a rejoin and a crash.
use strict;
use warnings;

use IPC::Run;
use Storable qw(dclone);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my @ids  = (1, 2, 3);
my @keys = map { "p$_" } 0 .. 4;
my @counters = ('likes', 'views');
my %node;

# Every node: counter.node_id = its id, wal_level = logical; the extension
# and the two counters are created on each node with the same names.
for my $id (@ids)
{
	my $n = counter_node("n$id", qq(
counter.node_id = $id
wal_level = logical
max_worker_processes = 16
max_replication_slots = 10
max_wal_senders = 10
max_logical_replication_workers = 8
wal_retrieve_retry_interval = '500ms'
));
	$n->safe_psql('postgres', q(
		CREATE EXTENSION counter;
		SELECT counter.create('likes', rollups => '{1 hour,1 day}');
		SELECT counter.create('views', mode => 'events', rollups => '{1 hour,1 day}');
	));
	$node{$id} = $n;
}

# Each node publishes only its own shard of counter.totals ...
for my $id (@ids)
{
	$node{$id}->safe_psql('postgres',
		"CREATE PUBLICATION counter_pub_n$id FOR TABLE counter.totals WHERE (node = $id);");
}

# ... and subscribes to every peer's publication (subscription "n<sub>_from_n<pub>").
sub subname { my ($sub, $pub) = @_; return "n${sub}_from_n$pub"; }

sub subscribe
{
	my ($sub, $pub, $opts) = @_;
	(my $connstr = $node{$pub}->connstr('postgres')) =~ s/'/''/g;
	my $name = subname($sub, $pub);
	$node{$sub}->safe_psql('postgres',
		"CREATE SUBSCRIPTION $name CONNECTION '$connstr' PUBLICATION counter_pub_n$pub"
		  . ($opts ? " WITH ($opts)" : '') . ';');
}

for my $sub (@ids)
{
	subscribe($sub, $_) for grep { $_ != $sub } @ids;
}
for my $sub (@ids)
{
	$node{$sub}->wait_for_subscription_sync($node{$_}, subname($sub, $_))
	  for grep { $_ != $sub } @ids;
}

# Bookkeeping: what each node added, per counter and key ({id}{counter}{key}).
my %contrib;

sub contribute
{
	my ($id, $counter, $key, $delta) = @_;
	$contrib{$id}{$counter}{$key} += $delta;
}

# "p0=..,p1=..": the value every key must have when node id sees the
# contributions in %$view (id => snapshot of %contrib{id}); by default all.
sub expected
{
	my ($counter, %view) = @_;
	my %sum = map { $_ => 0 } @keys;
	for my $id (@ids)
	{
		my $c = exists $view{$id} ? $view{$id} : $contrib{$id};
		$sum{$_} += $c->{$counter}{$_} // 0 for @keys;
	}
	return join ',', map { "$_=$sum{$_}" } @keys;
}

sub values_query
{
	my ($counter) = @_;
	my $arr = join ',', map { "'$_'" } @keys;
	return "SELECT string_agg(key || '=' || value, ',' ORDER BY key COLLATE \"C\")"
	  . " FROM counter.values('$counter', ARRAY[$arr])";
}

# Poll node id until every key of every counter has the expected value.
sub converges
{
	my ($id, $label, %view) = @_;
	for my $counter (@counters)
	{
		my $want = expected($counter, %view);
		my $ok = $node{$id}->poll_query_until('postgres', values_query($counter), $want);
		my $got = $node{$id}->safe_psql('postgres', values_query($counter));
		note "n$id $counter: $got";
		ok($ok, "$label: n$id $counter converges to $want");
	}
}

# pgbench on several nodes at once: 10 clients, 2 per key; client c adds
# (c % 5 + 1) * id to likes 'p<c % 5>' and 1 to views 'p<c % 5>'.
my $script = PostgreSQL::Test::Utils::tempdir() . '/adds.sql';

sub start_pgbench
{
	my ($id, $tx) = @_;
	my $clients = 10;
	my $file = "$script.$id";
	open my $fh, '>', $file or die "open $file: $!";
	print $fh "\\set k :client_id % 5\n";
	print $fh "SELECT counter.add('likes', 'p' || :k, (:k + 1) * $id);\n";
	print $fh "SELECT counter.add('views', 'p' || :k, 1);\n";
	close $fh;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'pgbench', '-n', '-f', $file, '-c', $clients, '-j', '2',
			'-t', $tx, '-h', $node{$id}->host, '-p', $node{$id}->port,
			'postgres'
		],
		'>', \$out, '2>', \$err);
	for my $c (0 .. $clients - 1)
	{
		my $k = $c % 5;
		contribute($id, 'likes', "p$k", ($k + 1) * $id * $tx);
		contribute($id, 'views', "p$k", $tx);
	}
	return { id => $id, h => $h, out => \$out, err => \$err, n => $clients * $tx };
}

sub finish_pgbench
{
	my ($run) = @_;
	$run->{h}->finish;
	my $n = $run->{n};
	ok($? == 0 && ${ $run->{out} } =~ m{actually processed: $n/$n},
		"pgbench on n$run->{id}: $n transactions")
	  or diag ${ $run->{out} } . ${ $run->{err} };
}

# A synchronous batch of n adds (n a multiple of 5) of delta on node id.
sub add_loop
{
	my ($id, $counter, $n, $delta) = @_;
	$node{$id}->safe_psql('postgres',
		"SELECT count(counter.add('$counter', 'p' || (i % 5), $delta)) FROM generate_series(1, $n) i");
	contribute($id, $counter, $_, $delta * $n / 5) for @keys;
}

# Compact everywhere, then wait until every active subscription has caught up.
sub sync_all
{
	my (%skip) = @_;
	$node{$_}->safe_psql('postgres', 'SELECT counter.compact()') for @ids;
	for my $pub (@ids)
	{
		for my $sub (grep { $_ != $pub } @ids)
		{
			my $name = subname($sub, $pub);
			$node{$pub}->wait_for_catchup($name) unless $skip{$name};
		}
	}
}

sub totals_text
{
	my ($id) = @_;
	return $node{$id}->safe_psql('postgres',
		"SELECT string_agg(format('%s/%s/%s/%s', counter, key, node, state), ' '"
		  . " ORDER BY counter, key, node) FROM counter.totals");
}

# Totals of every node identical row for row; one row per (counter, key,
# node) for every node id, each holding only its own node's shard.
sub check_no_echo
{
	my ($label) = @_;
	my $n1 = totals_text(1);
	for my $id (@ids)
	{
		is( $node{$id}->safe_psql('postgres',
				"SELECT string_agg(node || ':' || n, ',' ORDER BY node) FROM"
				  . " (SELECT node, count(*) AS n FROM counter.totals GROUP BY node) s"),
			'1:10,2:10,3:10',
			"$label: n$id has one totals row per counter, key and node");
		is( $node{$id}->safe_psql('postgres',
				'SELECT count(*) FROM counter.totals t, counter.shards(t.state) s'
				  . ' WHERE s.shard <> t.node'),
			'0',
			"$label: n$id totals rows hold only their own node's shard");
		is(totals_text($id), $n1, "$label: n$id totals rows identical to n1's")
		  if $id != 1;
	}
}

# merge() of a key's totals rows = its value (each shard once); merging
# every row twice (n1's copy and n2's copy) changes nothing: idempotent.
sub check_merge
{
	my ($label) = @_;
	for my $id (@ids)
	{
		is( $node{$id}->safe_psql('postgres',
				"SELECT string_agg(k || '=' || (SELECT counter.value(counter.merge(state))"
				  . " FROM counter.totals WHERE counter = 'likes' AND key = k), ','"
				  . " ORDER BY k) FROM unnest(ARRAY['p0','p1','p2','p3','p4']) k"),
			expected('likes'),
			"$label: n$id merge of totals rows equals counter.value");
	}
	my $n2states = $node{2}->safe_psql('postgres',
		"SELECT string_agg(quote_literal(state::text), ',') FROM counter.totals"
		  . " WHERE counter = 'likes' AND key = 'p1'");
	my $p1 = (expected('likes') =~ /p1=(-?\d+)/)[0];
	is( $node{1}->safe_psql('postgres',
			'SELECT counter.value(counter.merge(s)) FROM ('
			  . "SELECT state AS s FROM counter.totals WHERE counter = 'likes' AND key = 'p1'"
			  . " UNION ALL SELECT x::counter.sharded_counter FROM unnest(ARRAY[$n2states]) x) u"),
		$p1,
		"$label: merging n1's and n2's totals of likes/p1 together counts each shard once");
}

sub check_top
{
	my ($label) = @_;
	my %v = map { split /=/ } split /,/, expected('likes');
	my $want = join ',', map { "$_=$v{$_}" }
	  sort { $v{$b} <=> $v{$a} || $a cmp $b } @keys;
	for my $id (@ids)
	{
		is( $node{$id}->safe_psql('postgres',
				"SELECT string_agg(key || '=' || value, ',' ORDER BY value DESC, key COLLATE \"C\")"
				  . " FROM counter.top('likes', 5)"),
			$want,
			"$label: n$id counter.top sums all nodes' rows");
	}
}

#
# 1. Concurrent adds on every node converge everywhere to the exact total.
#
my @runs = map { start_pgbench($_, 200) } @ids;
add_loop(1, 'likes', 500, -1);    # decrements too, while pgbench runs
finish_pgbench($_) for @runs;
converges($_, 'concurrent adds') for @ids;
sync_all();

#
# 2. No echo, 4. idempotent merge, plus top and verify over peer rows.
#
check_no_echo('after concurrent adds');
check_merge('after concurrent adds');
check_top('after concurrent adds');
for my $id (@ids)
{
	is( $node{$id}->safe_psql('postgres',
			"SELECT sum(drift) FROM counter.verify('likes')"),
		'0', "n$id verify: own shard matches its rollups");
	is( $node{$id}->safe_psql('postgres',
			'SELECT sum(apply_error_count + sync_error_count) FROM pg_stat_subscription_stats'),
		'0', "n$id: no replication errors");
}

#
# 3. Partition between n1 and n2 (n3 still talks to both), then heal.
#
$node{2}->safe_psql('postgres', 'ALTER SUBSCRIPTION n2_from_n1 DISABLE');
$node{1}->safe_psql('postgres', 'ALTER SUBSCRIPTION n1_from_n2 DISABLE');
for my $pair ([ 2, 'n2_from_n1' ], [ 1, 'n1_from_n2' ])
{
	$node{ $pair->[0] }->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_subscription WHERE subname = '$pair->[1]' AND pid IS NOT NULL")
	  or die "apply worker $pair->[1] did not stop";
}
my %before = %{ dclone(\%contrib) };
add_loop(1, 'likes', 1000, 3);
add_loop(1, 'views', 500, 1);
add_loop(2, 'likes', 1000, -2);
add_loop(2, 'views', 500, 7);
add_loop(3, 'likes', 500, 5);
sync_all(n2_from_n1 => 1, n1_from_n2 => 1);
converges(1, 'partitioned', 2 => $before{2});
converges(2, 'partitioned', 1 => $before{1});
converges(3, 'partitioned');
isnt( $node{1}->safe_psql('postgres', values_query('likes')),
	$node{2}->safe_psql('postgres', values_query('likes')),
	'partitioned: n1 and n2 disagree');

$node{2}->safe_psql('postgres', 'ALTER SUBSCRIPTION n2_from_n1 ENABLE');
$node{1}->safe_psql('postgres', 'ALTER SUBSCRIPTION n1_from_n2 ENABLE');
converges($_, 'healed') for @ids;
sync_all();
check_no_echo('healed');
check_merge('healed');

#
# 5. Rejoin: n2 drops its subscription to n1, n1 keeps adding; n2 deletes
#    n1's (stale) rows and subscribes again with copy_data = true.
#
$node{2}->safe_psql('postgres', 'DROP SUBSCRIPTION n2_from_n1');
%before = %{ dclone(\%contrib) };
add_loop(1, 'likes', 1000, 1);
add_loop(1, 'views', 1000, 2);
add_loop(2, 'views', 500, 1);
sync_all(n2_from_n1 => 1);
converges(2, 'unsubscribed, stale n1 rows', 1 => $before{1});
# a superuser's local DELETE of peer rows: n2 publishes node 2 rows only,
# so the deletion reaches neither n1 nor n3
$node{2}->safe_psql('postgres', 'DELETE FROM counter.totals WHERE node = 1');
sync_all(n2_from_n1 => 1);
converges(2, 'n1 rows deleted on n2', 1 => {});
converges($_, 'n1 rows deleted on n2 only') for (1, 3);
subscribe(2, 1, 'copy_data = true');
$node{2}->wait_for_subscription_sync($node{1}, 'n2_from_n1');
converges($_, 'rejoined') for @ids;
sync_all();
check_no_echo('rejoined');

#
# 6. n1 crashes while n2 and n3 add (and replicate to it) and while its own
#    fresh adds are being compacted and published; all converge after restart.
#
my %p1 = map { split /=/ } split /,/, expected('likes');
@runs = map { start_pgbench($_, 300) } (2, 3);
add_loop(1, 'views', 3000, 1);
add_loop(1, 'likes', 1000, 2);
# some of the new n2/n3 adds have reached n1: replication is under way
$node{1}->poll_query_until('postgres',
	"SELECT counter.value('likes', 'p4') > $p1{p4} + 1000")
  or die 'no replication to n1';
$node{1}->stop('immediate');
$node{1}->start;
finish_pgbench($_) for @runs;
converges($_, 'after crash of n1') for @ids;
sync_all();
check_no_echo('after crash of n1');
check_merge('after crash of n1');
check_top('after crash of n1');

for my $id (@ids)
{
	ok( !$node{$id}->log_contains(qr/duplicate key value violates unique constraint "totals_pkey"/),
		"n$id: no replication conflict on totals in the log");
	is( $node{$id}->safe_psql('postgres',
			"SELECT count(*) FROM counter.pending_events"), '0',
		"n$id: no events left after compaction");
}

$node{$_}->stop for @ids;
done_testing();
