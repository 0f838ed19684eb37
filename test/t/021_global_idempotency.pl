# Idempotency keys across a mesh of three nodes wired by counter.add_node(): a key used on two nodes during a partition counts once after it heals (the earlier claim wins, the later node undoes its add and counts the conflict), on slots, events and buffered counters; the same key used for another add, refused on node 1 and accepted on a cut-off node 2, ends with node 1's add (reads 1, not 6), a mismatch in counter.stats and a WARNING; 1,000 requests each sent to all three nodes by 8 clients per node, half of them while node 3 is cut off, end with every node reading exactly 1,000, every node holding the same claims, and each node's conflicts equal to the duplicates it undid (its applied adds minus its shard).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $db = 'postgres';
my %node;
my @names = qw(n1 n2 n3);
my @keys = map { "k$_" } 0 .. 9;

# a node of the mesh, with the counters and its table of applied requests
sub make_node
{
	my ($name, $id) = @_;
	my $n = counter_mesh_node($name, $id, $db,
		max_logical_replication_workers => 6,
		max_connections => 40,
		wal_retrieve_retry_interval => '200ms');
	$n->safe_psql($db, q{
		CREATE EXTENSION counter;
		SELECT counter.create('t');
		SELECT counter.create('te', mode => 'events');
		SELECT counter.create('tb', mode => 'buffered');
		SELECT counter.create('req');
		CREATE TABLE applied (r int PRIMARY KEY);
	});
	$node{$name} = $n;
	return $n;
}

sub conninfo
{
	my ($name) = @_;
	return counter_conninfo($node{$name}, $db);
}

sub id_of { my ($name) = @_; return substr($name, 1); }

# the subscriptions of both directions between $name and every other node
sub set_cut
{
	my ($name, $on) = @_;
	my $what = $on ? 'DISABLE' : 'ENABLE';
	my $me = id_of($name);
	for my $other (grep { $_ ne $name } @names)
	{
		my $o = id_of($other);
		$node{$name}->safe_psql($db, "ALTER SUBSCRIPTION counter_n${me}_from_n$o $what");
		$node{$other}->safe_psql($db, "ALTER SUBSCRIPTION counter_n${o}_from_n$me $what");
	}
	return unless $on;
	# no apply worker left on either side of the cut
	for my $other (grep { $_ ne $name } @names)
	{
		my $o = id_of($other);
		$node{$name}->poll_query_until($db,
			"SELECT count(*) = 0 FROM pg_stat_subscription WHERE subname = 'counter_n${me}_from_n$o' AND pid IS NOT NULL")
		  or die "apply worker from $other still runs on $name";
		$node{$other}->poll_query_until($db,
			"SELECT count(*) = 0 FROM pg_stat_subscription WHERE subname = 'counter_n${o}_from_n$me' AND pid IS NOT NULL")
		  or die "apply worker from $name still runs on $other";
	}
}

# what identifies the claims of keys like $pattern on a node
sub claims
{
	my ($name, $pattern) = @_;
	return $node{$name}->safe_psql($db,
		"SELECT count(*) || ':' || md5(coalesce(string_agg(idem || '/' || node || '/' || delta || '/' || created, ',' ORDER BY idem), ''))"
		  . " FROM counter.idempotency WHERE idem LIKE '$pattern'");
}

# every node holds the same claims of $pattern (all merged: every undo
# done), then every node reads $want from $query
sub converge
{
	my ($label, $pattern, $query, $want) = @_;
	my $same = 0;
	for (1 .. 600)
	{
		my %c = map { claims($_, $pattern) => 1 } @names;
		if (keys %c == 1) { $same = 1; last; }
		select undef, undef, undef, 0.1;
	}
	ok($same, "$label: every node holds the same claims") or diag join ' ', map { claims($_, $pattern) } @names;
	for my $name (@names)
	{
		ok($node{$name}->poll_query_until($db, $query, $want), "$label: $name reads $want")
		  or diag $node{$name}->safe_psql($db, $query);
	}
}

sub stats_of
{
	my ($name, $counter) = @_;
	return $node{$name}->safe_psql($db,
		"SELECT idempotency_conflicts || '/' || idempotency_mismatches FROM counter.stats WHERE name = '$counter'");
}

make_node("n$_", $_) for 1 .. 3;
$node{n1}->safe_psql($db, "SELECT counter.add_node('n1')");
$node{n2}->safe_psql($db, "SELECT counter.add_node('n2', '" . conninfo('n1') . "')");
$node{n3}->safe_psql($db, "SELECT counter.add_node('n3', '" . conninfo('n2') . "')");
for my $name (@names)
{
	ok($node{$name}->poll_query_until($db,
		"SELECT count(*) = 2 FROM counter.nodes WHERE status = 'streaming'"), "$name streams from both peers");
	is($node{$name}->safe_psql($db,
		"SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_publication_rel r JOIN pg_class c ON c.oid = r.prrelid"
		  . " WHERE c.relname IN ('idempotency', 'totals')"),
		'idempotency,totals', "$name publishes the claims with the totals");
}

#
# 1. A key reused on a second node, cut off: counted once after the heal.
#
my $read_t = "SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM counter.values('t', ARRAY['a', 'b'])";
$node{n1}->safe_psql($db, "SELECT counter.add('t', 'a', 1, idempotency_key => 'dup-1')");
# a retry that reaches node 3 once the claim has: skipped there
ok($node{n3}->poll_query_until($db, "SELECT count(*) = 1 FROM counter.idempotency WHERE idem = 'dup-1'"),
	'the claim of n1 reaches n3');
$node{n3}->safe_psql($db, "SELECT counter.add('t', 'a', 1, idempotency_key => 'dup-1')");
ok($node{n2}->poll_query_until($db, "SELECT counter.value('t', 'a') = 1"), 'n2 reads the add of dup-1');
set_cut('n2', 1);
# n2, cut off, has not seen dup-2: both nodes apply it
$node{n1}->safe_psql($db, "SELECT counter.add('t', 'a', 1, idempotency_key => 'dup-2')");
$node{n2}->safe_psql($db, "SELECT counter.add('t', 'a', 1, idempotency_key => 'dup-2')");
is($node{n2}->safe_psql($db, "SELECT counter.value('t', 'a')"), '2', 'cut off, n2 counts dup-1 and its own dup-2');
# the same on an events and a buffered counter (undone through their modes)
for my $name (qw(n1 n2))
{
	$node{$name}->safe_psql($db, q{
		SELECT counter.add('te', 'a', 3, idempotency_key => 'dup-e');
		SELECT counter.add('tb', 'a', 4, idempotency_key => 'dup-b');
	});
}

#
# 2. The same key for another add: refused on node 1, accepted on node 2.
#
$node{n1}->safe_psql($db, "SELECT counter.add('t', 'b', 1, idempotency_key => 'dup-3')");
my ($ret, $out, $err) = $node{n1}->psql($db,
	"\\set VERBOSITY verbose\nSELECT counter.add('t', 'b', 5, idempotency_key => 'dup-3')");
like($err, qr/ERROR:\s+22023: idempotency key "dup-3" was already used for another add/,
	'n1 refuses dup-3 for another add (22023)');
$node{n2}->safe_psql($db, "SELECT counter.add('t', 'b', 5, idempotency_key => 'dup-3')");
$node{$_}->safe_psql($db, 'SELECT counter.compact()') for @names;
set_cut('n2', 0);
converge('two table cases', 'dup-%', $read_t, 'a=2,b=1');
for my $name (@names)
{
	ok($node{$name}->poll_query_until($db,
		"SELECT counter.value('te', 'a') = 3 AND counter.value('tb', 'a') = 4"),
		"$name reads dup-e and dup-b once (events and buffered counters)");
}
is(stats_of('n2', 'te') . ',' . stats_of('n2', 'tb'), '1/0,1/0', 'n2 undid its dup-e and dup-b');
is(stats_of('n2', 't'), '2/1', 'n2 undid its two duplicates (dup-2, dup-3), one of them another add');
is(stats_of('n1', 't'), '0/0', 'n1, the winner, undid nothing');
is(stats_of('n3', 't'), '0/0', 'n3 undid nothing');
is($node{$_}->safe_psql($db, "SELECT node || ':' || delta FROM counter.idempotency WHERE idem = 'dup-3'"),
	'1:1', "$_ keeps n1's claim of dup-3 (delta 1)") for @names;
ok($node{n2}->wait_for_log(qr/WARNING:  idempotency key "dup-3" was used for another add on node 1/),
	'n2 warns about the reuse of dup-3');
# a retry of the losing add on n2 is now refused, the winner's skipped
($ret, $out, $err) = $node{n2}->psql($db, "SELECT counter.add('t', 'b', 5, idempotency_key => 'dup-3')");
like($err, qr/already used for another add/, 'n2 now refuses dup-3 with delta 5');
$node{n2}->safe_psql($db, "SELECT counter.add('t', 'b', 1, idempotency_key => 'dup-3')");
is($node{n2}->safe_psql($db, "SELECT counter.value('t', 'b')"), '1', 'and skips it with delta 1');

#
# 3. 1,000 requests, each sent to all three nodes by 8 clients per node;
#    requests 1-500 while n3 is cut off, 501-1000 with the mesh whole.
#
my $dir = PostgreSQL::Test::Utils::tempdir();

# the script of client $c of node $name for requests $from..$to: each
# request an add and, in its transaction, a row in applied if it applied
# here (this node's claim, made now)
sub script
{
	my ($name, $c, $from, $to) = @_;
	my @r = grep { $_ % 8 == $c } $from .. $to;
	@r = reverse @r if $name eq 'n2';
	@r = (@r[ grep { $_ % 2 } 0 .. $#r ], @r[ grep { !($_ % 2) } 0 .. $#r ]) if $name eq 'n3';
	my $file = "$dir/$name-$c-$from.sql";
	open my $fh, '>', $file or die $!;
	for my $r (@r)
	{
		print $fh "BEGIN;\nSELECT counter.add('req', 'k" . ($r % 10) . "', 1, idempotency_key => 'req-$r');\n"
		  . "INSERT INTO applied SELECT $r FROM counter.idempotency WHERE idem = 'req-$r'"
		  . " AND node = current_setting('counter.node_id')::int AND created = now();\nCOMMIT;\n";
	}
	close $fh;
	return ($file, scalar @r);
}

sub run_requests
{
	my ($label, $from, $to) = @_;
	my @runs;
	for my $name (@names)
	{
		for my $c (0 .. 7)
		{
			my ($file, $n) = script($name, $c, $from, $to);
			my ($o, $e) = ('', '');
			my $h = IPC::Run::start([ 'psql', '-XAt', '-v', 'ON_ERROR_STOP=1', '-f', $file,
				'-d', $node{$name}->connstr($db) ], '>', \$o, '2>', \$e);
			push @runs, { name => $name, h => $h, out => \$o, err => \$e, n => $n };
		}
	}
	my ($ok, $sent) = (1, 0);
	for my $run (@runs)
	{
		$run->{h}->finish;
		my $commits = () = ${ $run->{out} } =~ /^COMMIT$/mg;
		if ($? != 0 || $commits != $run->{n})
		{
			$ok = 0;
			diag "$run->{name}: exit $?, $commits of $run->{n}: ${ $run->{err} }";
		}
		$sent += $commits;
	}
	ok($ok, "$label: 24 clients exit 0, each committed all its requests");
	is($sent, 3 * ($to - $from + 1), "$label: every request sent to the three nodes");
}

set_cut('n3', 1);
run_requests('requests 1-500, n3 cut off', 1, 500);
set_cut('n3', 0);
run_requests('requests 501-1000', 501, 1000);

my $read_req = "SELECT sum(value) FROM counter.values('req', ARRAY['" . join("','", @keys) . "'])";
converge('1,000 requests', 'req-%', $read_req, '1000');
my $per_key = "SELECT string_agg(value::text, ',' ORDER BY key) FROM counter.values('req', ARRAY['" . join("','", @keys) . "'])";
is($node{$_}->safe_psql($db, $per_key), join(',', (100) x 10), "$_ reads 100 for each key") for @names;

my ($applied, $conflicts) = (0, 0);
for my $name (@names)
{
	my $me = id_of($name);
	$node{$name}->safe_psql($db, 'SELECT counter.compact()');
	my ($a, $c, $m, $shard) = split /\|/, $node{$name}->safe_psql($db,
		"SELECT (SELECT count(*) FROM applied), s.idempotency_conflicts, s.idempotency_mismatches,"
		  . " (SELECT coalesce(sum(value), 0) FROM counter.totals WHERE counter = 'req' AND node = $me)"
		  . " FROM counter.stats s WHERE s.name = 'req'");
	note "$name: applied $a, undone $c, shard $shard";
	is($a - $c, $shard, "$name: its shard holds its applied adds less the $c it undid");
	is($m, 0, "$name: no mismatch among the requests");
	$applied += $a;
	$conflicts += $c;
}
is($applied - $conflicts, 1000, "duplicates applied ($applied - 1000) equal the conflicts counted ($conflicts)");
ok($conflicts > 0, "some requests applied on two nodes at once were undone ($conflicts)");

done_testing();
