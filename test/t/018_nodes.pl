# Meshes wired by counter.add_node()/remove_node(): three nodes, a fourth joining in one call under pgbench load, one leaving (drained: its unflushed buffered adds reach the others), one killed and removed from the survivors, a fifth joining afterwards and the removed one re-joining without any DELETE; every node converges to the exact total of every add acknowledged anywhere (departed nodes included), no orphaned slot remains, counter.nodes shows disabled and dead peers, and every refusal has its SQLSTATE.
use strict;
use warnings;

use IPC::Run;
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $db = 'postgres';
my @keys = map { "k$_" } 0 .. 4;
# the three counters of every node, and what each gets per unit of an add
my %mult = (likes => 1, views => 2, hits => 3);
my %node;

# a node of the mesh (counter_mesh_node) with room for five nodes'
# replication; $id undef leaves counter.node_id unset; %conf overrides
sub make_node
{
	my ($name, $id, %conf) = @_;
	my $n = counter_mesh_node($name, $id, $db,
		max_worker_processes => 20,
		max_replication_slots => 12,
		max_wal_senders => 12,
		max_logical_replication_workers => 10,
		log_min_messages => 'warning',
		%conf);
	# an add of d to each counter goes with its ledger row, in one transaction
	$n->safe_psql($db, q{
		CREATE EXTENSION counter;
		SELECT counter.create('likes');
		SELECT counter.create('views', mode => 'events');
		SELECT counter.create('hits', mode => 'buffered');
		CREATE TABLE ledger (k text NOT NULL, d int NOT NULL);
	});
	$node{$name} = $n;
	return $n;
}

sub conninfo
{
	my ($name) = @_;
	return counter_conninfo($node{$name}, $db);
}

# add_node on $name (through $via, undef: found a mesh); returns seconds taken
sub add_node
{
	my ($name, $via) = @_;
	my $t0 = time;
	$node{$name}->safe_psql($db,
		"SELECT counter.add_node('$name'"
		  . (defined $via ? ", '" . conninfo($via) . "'" : '') . ')');
	return time - $t0;
}

# the ledger of the adds acknowledged on departed nodes ({k} = sum of d)
my %departed;

sub ledger_of
{
	my ($name) = @_;
	my %l = map { split /=/ } split /,/, $node{$name}->safe_psql($db,
		"SELECT string_agg(k || '=' || s, ',') FROM (SELECT k, sum(d) AS s FROM ledger GROUP BY k) l");
	return \%l;
}

# "likes:k0=..,..;views:...": what every node must read, from the ledgers of
# the nodes in @live plus the departed ones
sub expected
{
	my (@live) = @_;
	my %sum = map { $_ => $departed{$_} // 0 } @keys;
	for my $name (@live)
	{
		my $l = ledger_of($name);
		$sum{$_} += $l->{$_} // 0 for @keys;
	}
	return join ';', map {
		my $c = $_;
		"$c:" . join ',', map { "$_=" . $sum{$_} * $mult{$c} } @keys
	} sort keys %mult;
}

my $values_query = "SELECT string_agg(c || ':' || v, ';' ORDER BY c) FROM"
  . " (SELECT c, string_agg(key || '=' || value, ',' ORDER BY key) AS v FROM"
  . " unnest(ARRAY['hits','likes','views']) c, counter.values(c, ARRAY['"
  . join("','", @keys) . "']) GROUP BY c) s";

# every node of @live reads exactly the expected totals; returns the
# seconds until the last one did
sub converge
{
	my ($label, @live) = @_;
	my $want = expected(@live);
	my $t0 = time;
	for my $name (@live)
	{
		my $ok = $node{$name}->poll_query_until($db, $values_query, $want);
		ok($ok, "$label: $name reads the exact total of every acknowledged add")
		  or diag 'got ' . $node{$name}->safe_psql($db, $values_query) . " want $want";
	}
	my $secs = time - $t0;
	note sprintf "%s: converged in %.2f s", $label, $secs;
	return $secs;
}

# n synchronous adds of 1..5 cycling over the keys on node $name
sub add_loop
{
	my ($name, $n) = @_;
	$node{$name}->safe_psql($db, qq{
		SELECT count(counter.add(c, 'k' || (i % 5), (i % 5 + 1) * m))
		  FROM generate_series(1, $n) i,
		       (VALUES ('likes', 1), ('views', 2), ('hits', 3)) v(c, m);
		INSERT INTO ledger SELECT 'k' || (i % 5), i % 5 + 1 FROM generate_series(1, $n) i;
	});
}

# the pgbench script of 3.: each transaction one add to each counter and
# its ledger row
my $script = PostgreSQL::Test::Utils::tempdir() . '/adds.sql';
append_to_file($script, q{\set k random(0, 4)
\set d random(1, 3)
BEGIN;
SELECT counter.add('likes', 'k' || :k, :d);
SELECT counter.add('views', 'k' || :k, 2 * :d);
SELECT counter.add('hits', 'k' || :k, 3 * :d);
INSERT INTO ledger VALUES ('k' || :k, :d);
COMMIT;
});

# the SQLSTATE of a failing statement
sub sqlstate_of
{
	my ($name, $sql) = @_;
	my ($ret, $out, $err) = $node{$name}->psql($db,
		"\\set VERBOSITY verbose\n$sql", on_error_stop => 1);
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	note "$name: $err" if $err;
	return $state // "none (exit $ret)";
}

# names of the counter slots on $name, sorted
sub slots_on
{
	my ($name) = @_;
	return $node{$name}->safe_psql($db,
		"SELECT coalesce(string_agg(slot_name, ',' ORDER BY slot_name), '') FROM pg_replication_slots");
}

#
# 1. Three nodes in one call each: n1 founds the mesh, n2 joins through
#    n1, n3 through n2 (and is wired to n1 too, found in n2's mesh).
#
make_node("n$_", $_) for 1 .. 3;
add_loop('n1', 100);
add_loop('n2', 200);
note sprintf 'n1 founds: %.2f s', add_node('n1');
note sprintf 'n2 joins: %.2f s', add_node('n2', 'n1');
note sprintf 'n3 joins: %.2f s', add_node('n3', 'n2');
ok($node{n1}->poll_query_until($db, 'SELECT string_agg(name || \'/\' || status, \',\' ORDER BY name) FROM counter.nodes',
	'n1/self,n2/streaming,n3/streaming'), 'n1 sees both peers streaming');
is(slots_on('n1'), 'counter_n2_from_n1,counter_n3_from_n1', 'n1 holds one slot per peer');
add_loop('n3', 300);
add_loop('n1', 50);
converge('three nodes', qw(n1 n2 n3));

#
# 2. Refusals, each with its SQLSTATE, on a would-be fourth node x.
#
my $x = make_node('n4', undef, wal_level => 'replica');

# after $conf (restarting when $restart), $sql on n4 (by default its join
# through n1) fails with SQLSTATE $want
sub refused
{
	my ($want, $label, %o) = @_;
	if ($o{conf})
	{
		$x->append_conf('postgresql.conf', $o{conf});
		$o{restart} ? $x->restart : $x->reload;
	}
	my $sql = $o{sql} // "SELECT counter.add_node('n4', '" . conninfo('n1') . "')";
	is(sqlstate_of('n4', $sql), $want, "$label: refused");
}

refused('55000', 'wal_level replica here');
refused('22023', 'counter.node_id left at its default', conf => "wal_level = logical\n", restart => 1);
refused('42710', 'node id of n2 used twice', conf => "counter.node_id = 2\n");
refused('42710', 'name of n2 used twice', conf => "counter.node_id = 4\n",
	sql => "SELECT counter.add_node('n2', '" . conninfo('n1') . "')");
refused('55000', 'joining through a node in no mesh',
	sql => "SELECT counter.add_node('n4', '" . conninfo('n4') . "')");
refused('25001', 'in a transaction that has written',
	sql => "BEGIN; INSERT INTO ledger VALUES ('k0', 0); SELECT counter.add_node('n4', '" . conninfo('n1') . "')");
$x->safe_psql($db, "UPDATE pg_extension SET extversion = '1.3' WHERE extname = 'counter'");
refused('55000', 'extension versions differ');
$x->safe_psql($db, "UPDATE pg_extension SET extversion = '1.4' WHERE extname = 'counter'");
refused('53400', 'too few logical replication workers for three subscriptions',
	conf => "max_logical_replication_workers = 2\n", restart => 1);
refused('53400', 'too few replication slots for three peers',
	conf => "max_logical_replication_workers = 10\nmax_replication_slots = 2\n", restart => 1);
refused('42704', 'removing an unknown node', conf => "max_replication_slots = 12\n", restart => 1,
	sql => "SELECT counter.remove_node('nobody')");
is($x->safe_psql($db, 'SELECT count(*) FROM pg_subscription'), '0', 'the refusals created no subscription');
is(slots_on('n1'), 'counter_n2_from_n1,counter_n3_from_n1', 'the refusals created no slot on n1');

#
# 3. n4 joins in one call while pgbench adds on n1, n2 and n3.
#
add_loop('n4', 150);    # its own history from before the join
my @runs = map { counter_pgbench_start($node{$_}, $db, $script, 4, 25, 2) } qw(n1 n2 n3);
sleep 2;
ok($_->{h}->pumpable, "pgbench on $_->{name} runs as n4 starts joining") for @runs;
note sprintf 'n4 joins under load: %.2f s', add_node('n4', 'n3');
note "pgbench on $_->{name} still running as n4 has joined: " . ($_->{h}->pumpable ? 'yes' : 'no')
  for @runs;
for my $run (@runs)
{
	my $n = counter_pgbench_finish($run);
	my $rows = $node{ $run->{name} }->safe_psql($db, 'SELECT count(*) FROM ledger');
	ok($n && $rows >= $n, "ledger of $run->{name} holds its $n pgbench transactions ($rows rows)");
}
ok($node{n4}->poll_query_until($db, 'SELECT string_agg(name || \'/\' || status, \',\' ORDER BY name) FROM counter.nodes',
	'n1/streaming,n2/streaming,n3/streaming,n4/self'), 'n4 receives from every member');
my $t = converge('n4 joined under load', qw(n1 n2 n3 n4));

#
# 4. A disabled subscription shows in counter.nodes; enabled again, it
#    catches up.
#
$node{n1}->safe_psql($db, 'ALTER SUBSCRIPTION counter_n1_from_n4 DISABLE');
is($node{n1}->safe_psql($db, "SELECT status FROM counter.nodes WHERE name = 'n4'"),
	'disabled', 'counter.nodes: a disabled peer');
add_loop('n4', 100);
$node{n1}->safe_psql($db, 'ALTER SUBSCRIPTION counter_n1_from_n4 ENABLE');

#
# 5. n3 leaves with remove_node, run on itself; its last buffered adds were
#    never flushed (flush_interval 1 h): the drain flushes and ships them.
#
$node{n3}->append_conf('postgresql.conf', "counter.flush_interval = '1h'\n");
$node{n3}->reload;
sleep 1;
add_loop('n3', 250);
ok($node{n3}->safe_psql($db, "SELECT sum(buffered_unflushed) FROM counter.stats WHERE name = 'hits'") > 0,
	'n3 holds unflushed buffered adds before it leaves');
# n1 does not receive from n3: the drain cannot finish, nothing is changed
$node{n1}->safe_psql($db, 'ALTER SUBSCRIPTION counter_n1_from_n3 DISABLE');
is(sqlstate_of('n3', "SELECT counter.remove_node('n3', '2s')"), '55000',
	'remove_node refuses when a member does not receive the drained changes');
is(slots_on('n3'), 'counter_n1_from_n3,counter_n2_from_n3,counter_n4_from_n3',
	'the refused remove_node dropped nothing');
$node{n1}->safe_psql($db, 'ALTER SUBSCRIPTION counter_n1_from_n3 ENABLE');
$node{n3}->safe_psql($db, "SELECT counter.remove_node('n3')");
my $l3 = ledger_of('n3');
$node{n3}->append_conf('postgresql.conf', "counter.flush_interval = '1s'\n");
$node{n3}->reload;
$departed{$_} += $l3->{$_} // 0 for @keys;
converge('n3 removed', qw(n1 n2 n4));
is(slots_on('n3'), '', 'n3 keeps no slot');
is($node{n3}->safe_psql($db, 'SELECT count(*) FROM pg_subscription'), '0', 'n3 keeps no subscription');
is($node{n3}->safe_psql($db, 'SELECT count(*) FROM counter.mesh'), '0', 'n3 is in no mesh');
is(slots_on('n1'), 'counter_n2_from_n1,counter_n4_from_n1', 'n1: no slot of n3 left');

#
# 6. n2 dies (kill: immediate stop, never started again) after its adds
#    reached the others; counter.nodes on n1 shows it down; removed from
#    the survivors, with its shard kept.
#
add_loop('n2', 120);
converge('before n2 dies', qw(n1 n2 n4));
my $l2 = ledger_of('n2');
$departed{$_} += $l2->{$_} // 0 for @keys;
$node{n2}->stop('immediate');
ok($node{n1}->poll_query_until($db, "SELECT status FROM counter.nodes WHERE name = 'n2'", 'down'),
	'counter.nodes: a dead peer is down');
ok($node{n1}->poll_query_until($db,
		"SELECT slot_active FROM counter.nodes WHERE name = 'n2'", 'f'),
	'counter.nodes: the dead peer takes nothing from its slot');
$node{n1}->safe_psql($db, "SELECT counter.remove_node('n2')");
converge('n2 dead and removed', qw(n1 n4));
for my $name (qw(n1 n4))
{
	unlike(slots_on($name), qr/n2/, "$name: no slot of n2 left");
	is($node{$name}->safe_psql($db, "SELECT count(*) FROM pg_subscription WHERE subname LIKE '%from_n2'"),
		'0', "$name: no subscription from n2 left");
	is($node{$name}->safe_psql($db, "SELECT count(*) FROM counter.totals WHERE node = 2"),
		'15', "$name: n2's shard kept");
}

#
# 7. A fifth node joins afterwards: it copies the history of every node,
#    the departed n2 and n3 included.
#
make_node('n5', 5);
add_loop('n5', 80);
note sprintf 'n5 joins: %.2f s', add_node('n5', 'n4');
converge('n5 joined after two departures', qw(n1 n4 n5));

#
# 8. n3, removed in 5., joins again: no DELETE needed; the rows it kept
#    are merged with the mesh's.
#
add_loop('n3', 60);    # made while it was out of the mesh
note sprintf 'n3 re-joins: %.2f s', add_node('n3', 'n1');
delete $departed{$_} for @keys;
$departed{$_} += $l2->{$_} // 0 for @keys;
add_loop('n3', 40);
converge('n3 re-joined', qw(n1 n3 n4 n5));

#
# 9. No orphaned slot anywhere; one made up shows in counter.nodes.
#
my @live = qw(n1 n3 n4 n5);
for my $name (@live)
{
	my ($id) = $name =~ /(\d)/;
	is(slots_on($name),
		join(',', map { "counter_n${_}_from_n$id" } grep { $_ != $id } (1, 3, 4, 5)),
		"$name: exactly one slot per member, none orphaned");
	ok($node{$name}->poll_query_until($db, "SELECT count(*) FROM counter.nodes WHERE status <> 'self' AND status <> 'streaming'",
		'0'), "$name: every peer streaming");
	ok(!$node{$name}->log_contains(qr/duplicate key value violates unique constraint "totals_pkey"/),
		"$name: no replication conflict in the log");
}
# the cost of echoes, for the record: rows written into totals on each node
# (inserts and updates; an echo that changes nothing writes none)
note "$_: totals rows written " . $node{$_}->safe_psql($db,
	"SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE relid = 'counter.totals'::regclass")
  for @live;
$node{n1}->safe_psql($db, "SELECT pg_create_logical_replication_slot('counter_n9_from_n1', 'pgoutput')");
is($node{n1}->safe_psql($db, "SELECT node_id || '/' || slot FROM counter.nodes WHERE status = 'orphaned slot'"),
	'9/counter_n9_from_n1', 'counter.nodes shows an orphaned slot');
$node{n1}->safe_psql($db, "SELECT pg_drop_replication_slot('counter_n9_from_n1')");

$node{$_}->stop for (@live);
done_testing();
