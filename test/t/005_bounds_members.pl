# Proves bounded counters never cross their bounds under 64 concurrent clients (try_add NULL at the bound, every committed value and every reader's value within bounds, final value = ledger of applied deltas, from 0 and from a pre-filled 1000, and a max bound filled to exactly 50), and membership counters stay exact under 32 concurrent like/unlike clients (value = liked member rows per key, like/unlike return values consistent with the rows, before and after compact, members()/is_member agree with the table).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;
use IPC::Run;

my $db       = 'postgres';
my $duration = 10;    # seconds of the like/unlike run

my $node = counter_node('bounds', qq(
max_connections = 100
));
my $basedir = $node->basedir;

$node->safe_psql(
	$db, q(
CREATE EXTENSION counter;
SELECT counter.create('stock', min => 0);
SELECT counter.create('stock2', min => 0);
SELECT counter.create('seats', min => 0, max => 50);
SELECT counter.create('likes', members => true);
SELECT counter.create('likes_ev', mode => 'events', members => true);
CREATE TABLE ledger (id bigserial PRIMARY KEY, c text NOT NULL, d int8 NOT NULL, v int8);
CREATE TABLE violations (c text NOT NULL, src text NOT NULL, v int8);
CREATE TABLE mlog (c text NOT NULL, p int NOT NULL, u int NOT NULL, op int NOT NULL, r bool NOT NULL);
));

# Start pgbench on scripts (name => text, with optional @weight).
sub pgbench
{
	my ($name, $clients, $limit, %scripts) = @_;
	my @files;
	foreach my $s (sort keys %scripts)
	{
		my ($base, $weight) = $s =~ /^(.*?)(\@\d+)?$/;
		my $file = "$basedir/$name-$base.sql";
		append_to_file($file, $scripts{$s});
		push @files, '-f', $file . ($weight // '');
	}
	my $b = { name => $name, out => '', err => '' };
	local $ENV{PGAPPNAME} = 'pgbench';
	$b->{h} = IPC::Run::start(
		[
			'pgbench', '-n', '--failures-detailed', '-c', $clients, '-j', '2', @$limit, @files,
			'-h', $node->host, '-p', $node->port, $db
		],
		'>', \$b->{out}, '2>', \$b->{err}, IPC::Run::timeout(45));
	return $b;
}

# Wait for pgbench; check that it and every transaction succeeded; return
# the number of transactions.
sub finish
{
	my ($b) = @_;
	my $name = $b->{name};
	# (a timer that expired while read_while pumped no longer fires in finish)
	my $ok = $b->{timed_out} ? undef : eval { $b->{h}->finish };
	unless (defined $ok)
	{
		# killed at its time limit: its backends may still wait on locks
		$b->{h}->kill_kill;
		$node->safe_psql($db,
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgbench'");
		$node->poll_query_until($db,
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'pgbench'");
	}
	ok($ok, "$name: pgbench exit status 0 (within the time limit)")
	  or diag "pgbench stdout:\n$b->{out}\nstderr:\n$b->{err}";
	like($b->{out}, qr/number of failed transactions: 0 /, "$name: no failed transactions")
	  or diag join("\n", grep { /failures|failed/ } split /\n/, $b->{out});
	my ($n) = $b->{out} =~ /number of transactions actually processed: (\d+)/;
	note "$name: " . ($n // 'no') . ' transactions';
	return $n // 0;
}

# While pgbench $b runs, read the value of ($c, $k) in a loop in a psql
# session of its own; returns the number of reads and the values outside
# [$min, $max].
sub read_while
{
	my ($b, $c, $k, $min, $max) = @_;
	my ($in, $out, $err) = ('', '', '');
	my $timer = IPC::Run::timeout(50);
	my $psql = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr($db) ],
		'<', \$in, '>', \$out, '2>', \$err, $timer);
	my ($reads, @bad) = (0);
	# (pump dies when a handle's timer expires: that ends the loop)
	while (1)
	{
		unless (eval { $b->{h}->pump_nb; 1 })
		{
			$b->{timed_out} = 1;
			last;
		}
		last unless $b->{h}->pumpable;
		$in .= "SELECT counter.value('$c', '$k');\n";
		eval { $psql->pump while $out !~ /\n/ && $err eq ''; 1 } or last;
		last if $err ne '';
		$out =~ s/^(-?\d+)\n// or last;
		$reads++;
		push @bad, $1 if (defined $min && $1 < $min) || (defined $max && $1 > $max);
	}
	push @bad, "reader error: $err" if $err ne '';
	$in .= "\\q\n";
	eval { $psql->finish; 1 } or $psql->kill_kill;
	return ($reads, @bad);
}

sub q1 { return $node->safe_psql($db, $_[0]); }

###
### 1. Membership counters: 32 clients like (3) / unlike (1) random pairs
###
my %mscripts;
foreach my $c ('likes', 'likes_ev')
{
	foreach my $op ([ 'like', 1, 3 ], [ 'unlike', -1, 1 ])
	{
		my ($f, $sign, $w) = @$op;
		$mscripts{"$c-$f\@$w"} = qq(\\set p random(1, 20)
\\set u random(1, 50)
INSERT INTO mlog VALUES ('$c', :p, :u, $sign, counter.$f('$c', 'p' || :p, 'u' || :u));
);
	}
}
my $nl = finish(pgbench('likes', 32, [ '-T', $duration ], %mscripts));

note 'likes: ' . join(', ', split /\n/, q1(
	"SELECT c || ' op ' || op || ' ' || r || ': ' || count(*) FROM mlog GROUP BY c, op, r ORDER BY 1"));
is( q1("SELECT count(DISTINCT (c, op, r)) FROM mlog"),
	'8', 'likes: both counters saw likes and unlikes that changed something and that were repeats');

my $mismatch = q(
SELECT c.name || ' p' || p || ': value ' || counter.value(c.name, 'p' || p) || ', rows ' || n.n
  FROM counter.counters c CROSS JOIN generate_series(1, 20) p
  CROSS JOIN LATERAL (SELECT count(*) AS n FROM counter.members m
                       WHERE m.counter = c.name AND m.key = 'p' || p AND m.liked) n
 WHERE c.name IN ('likes', 'likes_ev') AND counter.value(c.name, 'p' || p) <> n.n
 ORDER BY 1);
is(q1($mismatch), '', 'likes: every post\'s value = its liked member rows, in both counters');
is( q1(
		"SELECT sum(counter.value(c, 'p' || p)) FROM unnest(ARRAY['likes', 'likes_ev']) c, generate_series(1, 20) p"),
	q1("SELECT count(*) FROM counter.members WHERE liked"),
	'likes: the values add up to all liked member rows');

# the return values: per pair, the changes that reported true sum to its membership
is( q1(q(
WITH l AS (SELECT c, p, u, sum(CASE WHEN r THEN op ELSE 0 END) AS s FROM mlog GROUP BY 1, 2, 3),
     m AS (SELECT m.counter AS c, substr(m.key, 2)::int AS p, substr(m.member, 2)::int AS u
             FROM counter.members m WHERE m.liked)
SELECT count(*) FROM l FULL JOIN m USING (c, p, u)
 WHERE coalesce(l.s, 0) <> CASE WHEN m.c IS NULL THEN 0 ELSE 1 END)),
	'0',
	'likes: per (post, user), likes that returned true minus unlikes that returned true = membership');

q1('SELECT counter.compact()');
is(q1($mismatch), '', 'likes: still exact after compact()');

# members() and is_member() agree with the table, also page by page
foreach my $c ('likes', 'likes_ev')
{
	foreach my $p (1, 7, 20)
	{
		my $rows = q1(
			"SELECT string_agg(m.member, ',' ORDER BY m.member) FROM counter.members m"
			  . " WHERE m.counter = '$c' AND m.key = 'p$p' AND m.liked");
		is(q1("SELECT string_agg(m, ',') FROM counter.members('$c', 'p$p', 1000) m"),
			$rows, "$c p$p: members() lists the member rows in order");
		my @paged;
		my $after = 'NULL';
		for (my $i = 0; $i < 60; $i++)
		{
			my @page = split /\n/,
			  q1("SELECT m FROM counter.members('$c', 'p$p', 7, $after) m");
			push @paged, @page;
			last if @page < 7;
			$after = "'$page[-1]'";
		}
		is(join(',', @paged), $rows, "$c p$p: pages of 7 (after => last) list the same");
		is( q1(qq(
SELECT count(*) FROM generate_series(1, 50) u
 WHERE counter.is_member('$c', 'p$p', 'u' || u) <>
       EXISTS (SELECT 1 FROM counter.members m
                WHERE m.counter = '$c' AND m.key = 'p$p' AND m.member = 'u' || u AND m.liked))),
			'0', "$c p$p: is_member agrees with the table for all 50 users");
	}
}

###
### 2. Lower bound under 64 clients: from 0 (+-1, slightly biased down: 11 in
### 20 steps are -1, so the walk hovers at the bound; an unbiased walk that
### started with +1 could, about once in 200 runs, never come back to 0) and
### from 1000 (biased down: 2 in 3)
###
foreach my $run (
	[ 'stock',  0,    'CASE WHEN random(1, 20) <= 9 THEN 1 ELSE -1 END' ],
	[ 'stock2', 1000, 'CASE WHEN random(0, 2) = 0 THEN 1 ELSE -1 END' ])
{
	my ($c, $start, $dexpr) = @$run;
	if ($start)
	{
		q1("SELECT counter.add('$c', 'k', $start)");
		q1("SELECT counter.compact('$c')");    # the pre-fill is a compacted total
	}
	my $writers = pgbench(
		"$c-writers", 64, [ '-t', 80 ],
		writer => qq(\\set d $dexpr
BEGIN;
WITH a AS MATERIALIZED (SELECT counter.try_add('$c', 'k', :d) AS v)
INSERT INTO ledger (c, d, v) SELECT '$c', :d, a.v FROM a;
INSERT INTO violations (c, src, v)
  SELECT '$c', 'writer', x.v FROM (SELECT counter.value('$c', 'k') AS v) x WHERE x.v < 0;
COMMIT;
));
	my ($nr, @bad) = read_while($writers, $c, 'k', 0, undef);
	my $nw = finish($writers);
	is($nw, 64 * 80, "$c: all 5120 writer transactions ran");
	is(join(',', @bad), '', "$c: none of $nr reads by a separate session saw a value below 0");

	my ($applied, $rejected, $sum, $neg) = split /\|/, q1(
		"SELECT count(v), count(*) - count(v), coalesce(sum(d) FILTER (WHERE v IS NOT NULL), 0),"
		  . " count(*) FILTER (WHERE v < 0) FROM ledger WHERE c = '$c'");
	note "$c: start $start, $applied adds applied, $rejected stopped at the bound, net $sum";
	ok($rejected > 0, "$c: the bound was reached ($rejected try_add calls returned NULL)");
	is($neg, '0', "$c: no try_add returned a value below 0");
	is(q1("SELECT count(*) FROM violations WHERE c = '$c'"),
		'0', "$c: no writer saw a value below 0 after its add, in its transaction");
	my $value = q1("SELECT counter.value('$c', 'k')");
	is($value, $start + $sum, "$c: value = start + sum of the applied deltas in the ledger");
	cmp_ok($value, '>=', 0, "$c: final value $value >= 0");
	q1("SELECT counter.compact('$c')");
	is(q1("SELECT counter.value('$c', 'k')"), $value, "$c: unchanged by compact()");

	# exactly at the bound, sequentially: the whole value can go, not one more
	is(q1("SELECT counter.try_add('$c', 'k', -$value)"), '0', "$c: try_add(-value) reaches 0");
	is(q1("SELECT coalesce(counter.try_add('$c', 'k', -1)::text, 'null')"),
		'null', "$c: try_add(-1) at 0 returns NULL");
	my ($ret, $o, $e) = $node->psql($db,
		"\\set VERBOSITY verbose\nSELECT counter.add('$c', 'k', -1);");
	like($e, qr/ERROR:  23514: adding -1 to counter "$c" key "k" would cross its bound/,
		"$c: add(-1) at 0 raises 23514");
	($ret, $o, $e) = $node->psql($db,
		"\\set VERBOSITY verbose\nSELECT counter.add_many('$c', ARRAY['j', 'k'], ARRAY[1, -1]);");
	like($e, qr/ERROR:  23514/, "$c: add_many crossing at one key raises 23514");
	is( q1("SELECT counter.value('$c', 'k') || ' ' || counter.value('$c', 'j')"),
		'0 0', "$c: failed adds changed nothing");
	is(q1("SELECT counter.try_add('$c', 'k', 1)"), '1', "$c: and +1 still goes");
}

###
### 3. Upper bound: 32 clients take seats until full
###
my $seats = pgbench(
	'seats', 32, [ '-t', 10 ],
	take => q(WITH a AS MATERIALIZED (SELECT counter.try_add('seats', 'show', 1) AS v)
INSERT INTO ledger (c, d, v) SELECT 'seats', 1, a.v FROM a;
));
my ($snr, @sbad) = read_while($seats, 'seats', 'show', 0, 50);
is(finish($seats), 320, 'seats: 320 attempts');
is(join(',', @sbad), '', "seats: none of $snr concurrent reads saw a value outside 0..50");
is( q1("SELECT count(v) || ' ' || count(*) FILTER (WHERE v < 1 OR v > 50) FROM ledger WHERE c = 'seats'"),
	'50 0', 'seats: exactly 50 takes succeeded, each returning a value within 1..50');
is(q1("SELECT counter.value('seats', 'show')"), '50', 'seats: value is exactly 50');
q1("SELECT counter.compact('seats')");
is(q1("SELECT counter.value('seats', 'show')"), '50', 'seats: still 50 after compact()');
is(q1("SELECT coalesce(counter.try_add('seats', 'show', 1)::text, 'null')"),
	'null', 'seats: one more returns NULL');
is(q1("SELECT counter.try_add('seats', 'show', -50)"), '0', 'seats: all 50 can be given back');
my ($sret, $so, $se) = $node->psql($db, "SELECT counter.add('seats', 'show', 51);");
like($se, qr/would cross its bound/, 'seats: 51 at once is refused');

my ($lret, $lo, $le) = $node->psql($db, "\\set VERBOSITY verbose\nSELECT counter.add('likes', 'p1', 1);");
like($le, qr/ERROR:  22023: counter "likes" counts members/, 'plain add on a membership counter: 22023');
($lret, $lo, $le) = $node->psql($db, "\\set VERBOSITY verbose\nSELECT counter.like('stock', 'k', 'u1');");
like($le, qr/ERROR:  22023: counter "stock" does not count members/, 'like on a plain counter: 22023');

$node->stop;
done_testing();
