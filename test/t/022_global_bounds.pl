# Global bounds across a mesh of three nodes (escrow rights per node): a
# counter with min => 0, +100 on one node, then -1 from every node until
# every unit is taken: no node ever reads below 0 and all 100 are taken
# (rights flow to the nodes that ask); then decrements from 4 clients per
# node with refills on one node, through a 20 s partition of one node (its
# subscriptions disabled both ways): the value read on any node never goes
# below 0, every node converges to the sum of the accepted adds, the rights
# moved and were asked for, and every node's slot rows always shared out
# exactly its rights; a live node removed from the mesh hands its rights
# over (the others can take them all); a drop takes a node's rights rows.  The fraction of refused
# decrements while rights existed elsewhere is reported in a note.
use strict;
use warnings;

use IPC::Run;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $db = 'postgres';
my %node;
my @names = qw(n1 n2 n3);

# a node of the mesh (counter_mesh_node) with counter stock (min => 0) and a
# ledger of every add tried on it: its amount, whether it was accepted, when
for my $i (1 .. 3)
{
	my $n = counter_mesh_node("n$i", $i, $db,
		wal_retrieve_retry_interval => '200ms',
		log_min_messages => 'warning');
	$n->safe_psql($db, q{
		CREATE EXTENSION counter;
		SELECT counter.create('stock', min => 0);
		CREATE TABLE ledger (k text NOT NULL, d int NOT NULL, ok bool NOT NULL,
							 at timestamptz NOT NULL DEFAULT clock_timestamp());
	});
	$node{"n$i"} = $n;
}

sub conninfo
{
	my ($name) = @_;
	return counter_conninfo($node{$name}, $db);
}

$node{n1}->safe_psql($db, "SELECT counter.add_node('n1')");
$node{n2}->safe_psql($db, "SELECT counter.add_node('n2', '" . conninfo('n1') . "')");
$node{n3}->safe_psql($db, "SELECT counter.add_node('n3', '" . conninfo('n2') . "')");
for my $name (@names)
{
	ok($node{$name}->poll_query_until($db,
			"SELECT count(*) FROM counter.nodes WHERE status IN ('self', 'streaming')", '3'),
		"$name: both peers streaming");
}

# one add of d to key k on $name, with its ledger row; true when accepted
sub try_add
{
	my ($name, $k, $d) = @_;
	return $node{$name}->safe_psql($db,
		"INSERT INTO ledger (k, d, ok) SELECT '$k', $d, counter.try_add('stock', '$k', $d) IS NOT NULL RETURNING ok") eq 't';
}

# the sum of the accepted adds to key k over every ledger
sub accepted
{
	my ($k) = @_;
	my $sum = 0;
	$sum += $node{$_}->safe_psql($db,
		"SELECT coalesce(sum(d), 0) FROM ledger WHERE k = '$k' AND ok") for @names;
	return $sum;
}

sub value_on
{
	my ($name, $k) = @_;
	return $node{$name}->safe_psql($db, "SELECT counter.value('stock', '$k')");
}

# every node reads the sum of the accepted adds to key k
sub converge
{
	my ($label, $k) = @_;
	my $want = accepted($k);
	for my $name (@names)
	{
		ok($node{$name}->poll_query_until($db, "SELECT counter.value('stock', '$k')", $want),
			"$label: $name reads $want, the sum of the accepted adds")
		  or diag "$name reads " . value_on($name, $k);
	}
	return $want;
}

# whether any of the pgbench runs still runs (reading what they printed)
sub running
{
	my (@runs) = @_;
	my $any = 0;
	for my $run (@runs)
	{
		$run->{h}->pump_nb if $run->{h}->pumpable;
		$any ||= $run->{h}->pumpable;
	}
	return $any;
}

my $dir = PostgreSQL::Test::Utils::tempdir();

# the lowest value any node reads now, into $$min; and whether the slot
# rows of key k on every node share out exactly that node's rights (lo
# sums to L - own shard: counter._rights_share), counted into $drifts
my $drifts = 0;
sub sample
{
	my ($k, $min) = @_;
	for my $name (@names)
	{
		my ($v, $drift) = split /\|/, $node{$name}->safe_psql($db, qq{
			SELECT counter.value('stock', '$k'),
				   (SELECT coalesce(sum(s.lo), 0) FROM counter.slots s
					 WHERE s.counter_id = c.id AND s.key = '$k') - sh.lo
			  FROM counter.counters c,
				   counter._rights_share(c.name, '$k', current_setting('counter.node_id')::int4,
										 c.min_value, c.max_value) sh
			 WHERE c.name = 'stock'});
		$$min = $v if !defined $$min || $v < $$min;
		if (length $drift && $drift != 0)
		{
			$drifts++;
			note "$name: the shares of $k differ from its rights by $drift";
		}
	}
}

#
# 1. The issue's case: +100 on n1, then -1 from every node, concurrently,
#    until all is taken.
#
ok(try_add('n1', 'a', 100), '+100 on n1');
ok($node{$_}->poll_query_until($db, "SELECT counter.value('stock', 'a')", '100'), "$_ reads 100")
  for @names;
my $dec_a = "$dir/dec_a.sql";
append_to_file($dec_a,
	"INSERT INTO ledger (k, d, ok) SELECT 'a', -1, counter.try_add('stock', 'a', -1) IS NOT NULL;\n");
my $min_a;
my @runs = map { counter_pgbench_start($node{$_}, $db, $dec_a, 1, 4, 1) } @names;
sample('a', \$min_a) while running(@runs);
counter_pgbench_finish($_, 'decrements of a:') for @runs;
# then one -1 per node in turn, until every unit is taken (rights must flow
# to whoever asks) or a minute has passed
my $deadline = time + 60;
while (accepted('a') > 0 && time < $deadline)
{
	try_add($_, 'a', -1) for @names;
	sample('a', \$min_a);
	sleep 0.05;
}
cmp_ok($min_a, '>=', 0, "no node ever read a below 0 (lowest read: $min_a)");
is($drifts, 0, "a: every node's slot rows always shared out exactly its rights");
is(accepted('a'), 0, 'every one of the 100 units was taken, whichever node held its right');
converge('a', 'a');
my $refused_a = $node{n1}->safe_psql($db,
	"SELECT count(*) FROM ledger WHERE k = 'a' AND NOT ok");
note "a: refusals on n1: $refused_a";

#
# 2. Decrements from 4 clients per node, refills on n1, through a 20 s
#    partition of n3.
#
ok(try_add('n1', 'b', 300), '+300 on n1');
ok($node{$_}->poll_query_until($db, "SELECT counter.value('stock', 'b')", '300'), "$_ reads 300")
  for @names;
my $dec_b = "$dir/dec_b.sql";
append_to_file($dec_b,
	"INSERT INTO ledger (k, d, ok) SELECT 'b', -1, counter.try_add('stock', 'b', -1) IS NOT NULL;\n");
my $refill = "$dir/refill.sql";
append_to_file($refill,
	"INSERT INTO ledger (k, d, ok) SELECT 'b', 2, counter.try_add('stock', 'b', 2) IS NOT NULL;\n\\sleep 25 ms\n");

my @subs = (
	[ n3 => 'counter_n3_from_n1' ], [ n3 => 'counter_n3_from_n2' ],
	[ n1 => 'counter_n1_from_n3' ], [ n2 => 'counter_n2_from_n3' ]);
sub partition
{
	my ($how) = @_;
	$node{ $_->[0] }->safe_psql($db, "ALTER SUBSCRIPTION $_->[1] $how") for @subs;
}

my $secs = 34;
my $t0 = time;
@runs = ((map { counter_pgbench_start($node{$_}, $db, $dec_b, 4, $secs, 1) } @names),
	counter_pgbench_start($node{n1}, $db, $refill, 1, $secs, 1));
my ($min_b, $cut, $healed);
while (running(@runs))
{
	my $t = time - $t0;
	if (!$cut && $t >= 6)
	{
		partition('DISABLE');
		$cut = time;
		note sprintf 'n3 cut off at %.1f s', $t;
	}
	if ($cut && !$healed && time - $cut >= 20)
	{
		partition('ENABLE');
		$healed = time;
		note sprintf 'n3 back at %.1f s', time - $t0;
	}
	sample('b', \$min_b);
	sleep 0.1;
}
ok($cut && $healed, 'n3 was cut off for 20 s while the load ran');
counter_pgbench_finish($_, 'b:') for @runs;
cmp_ok($min_b, '>=', 0, "no node ever read b below 0 (lowest read: $min_b)");
is($drifts, 0, "b: every node's slot rows always shared out exactly its rights");
my $final = converge('b after the partition', 'b');
cmp_ok($final, '>=', 0, "b ends at $final >= 0");

# the refusals while rights existed elsewhere: those at a moment when the
# accepted adds of every node summed to more than 0
my @events;
for my $name (@names)
{
	for my $line (split /\n/, $node{$name}->safe_psql($db,
			"SELECT extract(epoch FROM at), d, ok FROM ledger WHERE k = 'b' ORDER BY at"))
	{
		my ($at, $d, $ok) = split /\|/, $line;
		push @events, [ $at, $d, $ok eq 't', $name ];
	}
}
my ($sum, $dec, $refused, $refused_rich) = (0, 0, 0, 0);
for my $e (sort { $a->[0] <=> $b->[0] } @events)
{
	$sum += $e->[1] if $e->[2];
	next unless $e->[1] < 0;
	$dec++;
	next if $e->[2];
	$refused++;
	$refused_rich++ if $sum > 0;
}
ok($dec > 0 && $refused > 0, "b: $dec decrements tried, $refused refused");
my $moves = $node{n1}->safe_psql($db,
	"SELECT sum(transfers_out) FROM counter.rights WHERE counter = 'stock' AND key = 'b'");
my $asks = $node{n1}->safe_psql($db,
	"SELECT sum(asked) FROM counter.rights WHERE counter = 'stock' AND key = 'b'");
cmp_ok($moves, '>', 0, "rights of b moved between the nodes ($moves transfers, $asks asks)");
note sprintf 'b: %d decrements, %d refused (%.1f%%), %d of them while rights existed elsewhere '
  . '(%.1f%% of the refusals, %.1f%% of the decrements)',
  $dec, $refused, 100 * $refused / $dec, $refused_rich,
  100 * $refused_rich / $refused, 100 * $refused_rich / $dec;
note 'counter.rights on n1: ' . $node{n1}->safe_psql($db,
	"SELECT string_agg(format('%s %s: asked %s given %s received %s held %s', key, node, asked, given, received, held), '; ' ORDER BY key, node) FROM counter.rights");

#
# 3. A live node leaves: its rights go to the lowest remaining member.
#
ok(try_add('n1', 'c', 60), '+60 on n1');
ok($node{n3}->poll_query_until($db, "SELECT counter.value('stock', 'c')", '60'), 'n3 reads 60');
# n3 asks until it holds rights
$deadline = time + 30;
my $got = 0;
while (!$got && time < $deadline)
{
	$got = try_add('n3', 'c', -1);
	sleep 0.05 unless $got;
}
ok($got, 'n3 got rights on c from n1');
my $held = $node{n3}->safe_psql($db,
	"SELECT held FROM counter.rights WHERE counter = 'stock' AND key = 'c' AND node = 3");
cmp_ok($held, '>', 0, "n3 holds $held of c");
$node{n1}->safe_psql($db, "SELECT counter.remove_node('n3')");
@names = qw(n1 n2);
my $left = accepted('c') + $node{n3}->safe_psql($db,
	"SELECT coalesce(sum(d), 0) FROM ledger WHERE k = 'c' AND ok");
ok($node{$_}->poll_query_until($db, "SELECT counter.value('stock', 'c')", $left), "$_ reads $left")
  for @names;
$deadline = time + 60;
my $taken = 0;
while ($taken < $left && time < $deadline)
{
	for my $name (@names)
	{
		$taken++ if $taken < $left && try_add($name, 'c', -1);
	}
	sleep 0.02;
}
is($taken, $left, "n1 and n2 took all $left left of c, n3's handed-over rights included");
ok(!try_add('n1', 'c', -1) && !try_add('n2', 'c', -1), 'and not one more');

# counter.drop() takes this node's rights rows with its shard, on every node
$node{n1}->safe_psql($db, "SELECT counter.drop('stock')");
is($node{n1}->safe_psql($db, "SELECT count(*) FROM counter.bound_rights WHERE src = 1 AND counter = 'stock'")
	  . $node{n1}->safe_psql($db, "SELECT count(*) FROM counter.rights_local WHERE counter = 'stock'"),
	'00', "n1's drop deleted its rows of counter.bound_rights and its book");
ok($node{n2}->poll_query_until($db,
		"SELECT count(*) FROM counter.bound_rights WHERE src = 1 AND counter = 'stock'", '0'),
	"n2 lost n1's rows of counter.bound_rights too");

# ... the rows of a rights round still in flight when it starts included:
# the drop waits for the round (it once deleted only the rows it could see
# and left behind the ask row the round wrote for a key with none yet)
$node{n1}->safe_psql($db,
	"SELECT counter.create('stock2', min => 0); SELECT counter.add('stock2', 'fresh', 1)");
my $round = $node{n1}->background_psql($db);
my $round_pid = $round->query_safe('SELECT pg_backend_pid()');
$round->query_safe(
	"BEGIN; SELECT counter._rights_round(ARRAY[id], ARRAY[hashtext('fresh')], ARRAY[false], ARRAY[1::int8])"
	  . " FROM counter.counters WHERE name = 'stock2'");
my $round_xid = $round->query_safe('SELECT xid(pg_current_xact_id())');
is($round->query_safe("SELECT count(*) FROM counter.bound_rights WHERE counter = 'stock2' AND xmin = '$round_xid'"),
	'1', 'a rights round in flight wrote the first ask row of key fresh');
my $dropper = psql_session(conninfo('n1'));
$dropper->{in} .= "SELECT counter.drop('stock2');\n";
$dropper->{h}->pump_nb;
ok($node{n1}->poll_query_until($db,
		"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%counter.drop%'"
		  . " AND pg_blocking_pids(pid) @> ARRAY[$round_pid]", '1'),
	'a drop waits for the rights round in flight');
$round->query_safe('COMMIT');
$round->quit;
session_query($dropper, 'SELECT 1');
$dropper->{h}->finish;
# (the row's echo from n2 may arrive after the drop and insert it again: a
# known limit of the echo merge, see README)
is($node{n1}->safe_psql($db, "SELECT count(*) FROM counter.bound_rights WHERE xmin = '$round_xid'"),
	'0', "the drop deleted the round's row");

done_testing();
