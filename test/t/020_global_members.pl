# Proves membership counters across a mesh of three nodes wired by counter.add_node(): issue 14's cases, made while every node is cut off from the others (each then reads what it has seen), give the correct value on every node once the mesh heals (alice liking post A on two nodes counts 1; a like on n1 and a later unlike on n2, which had not seen it and returns false, count 0; 1,000 members liking post C on all three nodes count 1,000); then 8 pgbench clients per node of random likes and unlikes for 20 s (a slots and an events counter), through a partition of n3 (both directions) and a crash of n2 (immediate stop, restarted): once converged every node holds the same member rows, and on every node each key's value = its liked members = members(), and is_member() agrees.
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
my @names = qw(n1 n2 n3);
my %node;

# a node of the mesh with both membership counters (as 018_nodes.pl's)
sub make_node
{
	my ($name, $id) = @_;
	my $n = counter_mesh_node($name, $id, $db, log_min_messages => 'warning');
	$n->safe_psql($db, q{
		CREATE EXTENSION counter;
		SELECT counter.create('likes', members => true);
		SELECT counter.create('likes_ev', mode => 'events', members => true);
	});
	$node{$name} = $n;
	return $n;
}

sub run_sql
{
	my ($name, $sql) = @_;
	return $node{$name}->safe_psql($db, $sql);
}

# enable or disable every subscription that brings rows to or from a node
# of @cut (all of them when @cut holds every node); disabled, wait until
# their apply workers have stopped
sub subscriptions
{
	my ($enable, @cut) = @_;
	my %cut = map { /(\d+)/; ($1 => 1) } @cut;
	my %subs;
	for my $name (@names)
	{
		$subs{$name} = [ grep { my @ends = /^counter_n(\d+)_from_n(\d+)$/; grep { $cut{$_} } @ends }
			  split /\n/, run_sql($name, 'SELECT subname FROM pg_subscription ORDER BY subname') ];
		run_sql($name, "ALTER SUBSCRIPTION $_ " . ($enable ? 'ENABLE' : 'DISABLE'))
		  for @{ $subs{$name} };
	}
	return if $enable;
	for my $name (@names)
	{
		my $list = join ',', map { "'$_'" } @{ $subs{$name} };
		$node{$name}->poll_query_until($db,
			"SELECT count(*) = 0 FROM pg_stat_subscription WHERE subname IN ($list) AND pid IS NOT NULL")
		  or die "$name: the apply workers of $list do not stop"
		  if $list;
	}
}

# one value on every node: "n1=..,n2=..,n3=.."
sub on_all
{
	my ($sql) = @_;
	return join ',', map { "$_=" . run_sql($_, $sql) } @names;
}

# every node reads $want for $sql (polled: the mesh converges)
sub all_read
{
	my ($sql, $want, $label) = @_;
	for my $name (@names)
	{
		ok($node{$name}->poll_query_until($db, $sql, $want), "$label: $name reads $want")
		  or diag "$name: " . run_sql($name, $sql);
	}
}

#
# 1. Three nodes wired by add_node.
#
make_node("n$_", $_) for 1 .. 3;
run_sql('n1', "SELECT counter.add_node('n1')");
for my $name (qw(n2 n3))
{
	run_sql($name, "SELECT counter.add_node('$name', '" . counter_conninfo($node{n1}, $db) . "')");
}
for my $name (@names)
{
	ok($node{$name}->poll_query_until($db,
			"SELECT count(*) FROM counter.nodes WHERE status NOT IN ('self', 'streaming')", '0'),
		"$name: both peers streaming");
}

#
# 2. Issue 14's cases, each node cut off from the others while they are made.
#
subscriptions(0, @names);
# alice likes post A on n1, then on n2
is(run_sql('n1', "SELECT counter.\"like\"('likes', 'A', 'alice')"), 't', 'n1: alice likes A');
is(run_sql('n2', "SELECT counter.\"like\"('likes', 'A', 'alice')"), 't', 'n2, cut off: alice likes A, new here');
# bob likes post B on n1, then unlikes it on n2, which has not seen the like
is(run_sql('n1', "SELECT counter.\"like\"('likes', 'B', 'bob')"), 't', 'n1: bob likes B');
is(run_sql('n2', "SELECT counter.unlike('likes', 'B', 'bob')"), 'f', 'n2, cut off: bob unlikes B, unknown here');
# 1,000 members like post C on every node
for my $name (@names)
{
	is(run_sql($name, "SELECT count(*) FILTER (WHERE counter.\"like\"('likes', 'C', 'm' || i)) FROM generate_series(1, 1000) i"),
		'1000', "$name, cut off: 1,000 members like C, all new here");
}
is(on_all("SELECT counter.value('likes', 'A') || '/' || counter.value('likes', 'B') || '/' || counter.value('likes', 'C')"),
	'n1=1/1/1000,n2=1/0/1000,n3=0/0/1000', 'in the partition, each node counts what it has seen');
subscriptions(1, @names);
all_read("SELECT counter.value('likes', 'A') || '/' || counter.value('likes', 'B') || '/' || counter.value('likes', 'C')",
	'1/0/1000', 'healed');
all_read("SELECT counter.is_member('likes', 'A', 'alice') || '/' || counter.is_member('likes', 'B', 'bob')"
	  . " || '/' || (SELECT count(*) FROM counter.members('likes', 'C', 2000))",
	'true/false/1000', 'healed: is_member and members()');

#
# 3. 8 clients per node, random likes and unlikes of 20 members on 5 keys
#    of both counters, 20 s; n3 cut off from 3 s to 8 s; n2 killed at
#    about 10 s and restarted.
#
my $script = PostgreSQL::Test::Utils::tempdir() . '/likes.sql';
append_to_file($script, q{\set c random(0, 1)
\set k random(0, 4)
\set m random(0, 19)
\set op random(0, 1)
SELECT CASE WHEN :op = 1 THEN counter."like"(c, k, m) ELSE counter.unlike(c, k, m) END
  FROM (VALUES ((ARRAY['likes', 'likes_ev'])[:c + 1], 'k' || :k, 'm' || :m)) v(c, k, m);
});

my $t0 = time;
my @runs = map { counter_pgbench_start($node{$_}, $db, $script, 8, $_ eq 'n2' ? 9 : 20, 2) } @names;
sleep 3;
subscriptions(0, 'n3');
note sprintf 'n3 cut off at %.1f s', time - $t0;
sleep 5;
subscriptions(1, 'n3');
note sprintf 'n3 back at %.1f s', time - $t0;
counter_pgbench_finish($runs[1]);
$node{n2}->stop('immediate');
note sprintf 'n2 killed at %.1f s', time - $t0;
$node{n2}->start;
$runs[1] = counter_pgbench_start($node{n2}, $db, $script, 8, 8, 2);
counter_pgbench_finish($_) for @runs;
note sprintf 'load over at %.1f s', time - $t0;

#
# 4. Converged: the same rows everywhere, and on every node the values,
#    members() and is_member() follow them.
#
# rows of every node, and per node the (counter, key) pairs whose value or
# members() differs from the liked rows, and the is_member() that differ
my $rows = "SELECT md5(string_agg(concat_ws('/', counter, key, member, liked, node, stamp), ','"
  . " ORDER BY counter, key, member)) FROM counter.members";
my $wrong = q{
SELECT count(*) FILTER (WHERE value <> liked OR listed <> liked) || '/' || sum(liked)
  FROM (SELECT c, k, counter.value(c, k) AS value,
               (SELECT count(*) FROM counter.members m WHERE m.counter = c AND m.key = k AND m.liked) AS liked,
               (SELECT count(*) FROM counter.members(c, k, 2000)) AS listed
          FROM unnest(ARRAY['likes', 'likes_ev']) c,
               unnest(ARRAY['A', 'B', 'C', 'k0', 'k1', 'k2', 'k3', 'k4']) k) s};
my $is_member = q{
SELECT count(*) FROM unnest(ARRAY['likes', 'likes_ev']) c, unnest(ARRAY['k0', 'k1', 'k2', 'k3', 'k4']) k,
       generate_series(0, 19) i
 WHERE counter.is_member(c, k, 'm' || i) IS DISTINCT FROM
       EXISTS (SELECT 1 FROM counter.members m WHERE m.counter = c AND m.key = k AND m.member = 'm' || i AND m.liked)};

my ($same, $last);
my $deadline = time + 60;
while (time < $deadline)
{
	$last = on_all("SELECT ($rows) || ' ' || ($wrong)");
	my @v = map { (split /=/)[1] } split /,/, $last;
	$same = (grep { $_ eq $v[0] } @v) == @v && $v[0] =~ / 0\//;
	last if $same;
	sleep 0.5;
}
ok($same, 'after the load, every node holds the same member rows and reads values = liked rows = members()')
  or diag $last;
note sprintf 'converged %.1f s after the start of the load', time - $t0;
my ($liked) = $last =~ m{ 0/(\d+)};
ok($liked > 1000, "the liked members count ($liked) includes the load's");
is(on_all($is_member), 'n1=0,n2=0,n3=0', 'is_member() agrees with the rows on every node');
all_read("SELECT counter.value('likes', 'A') || '/' || counter.value('likes', 'B') || '/' || counter.value('likes', 'C')",
	'1/0/1000', 'after the load, the cases still');
note 'member rows: ' . on_all('SELECT count(*) FROM counter.members')
  . '; liked: ' . on_all('SELECT count(*) FROM counter.members WHERE liked');
for my $name (@names)
{
	ok($node{$name}->poll_query_until($db,
			"SELECT count(*) FROM counter.nodes WHERE status NOT IN ('self', 'streaming')", '0'),
		"$name: both peers streaming at the end");
}

$node{$_}->stop for @names;
done_testing();
