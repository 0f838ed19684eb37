# Proves the rotation of the events tables under load: with the worker rotating at every round (counter.rotate_size = 0, naptime 20ms), reads are exact at every moment (value, values, top and series against a ledger written in the same transactions, in READ COMMITTED and across REPEATABLE READ snapshots), the folded tables are emptied (by the worker, and with the worker off by counter.compact() itself, so that compaction rotates again), and pg_dump / pg_restore of a database holding a folded table restores the same values.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $db   = 'postgres';
my $node = counter_node('rotation', qq(
counter.naptime = '20ms'
counter.rotate_size = 0
max_connections = 50
));
$node->safe_psql($db, q{
	CREATE EXTENSION counter;
	SELECT counter.create('r', mode => 'events', rollups => '{1 minute}');
	CREATE TABLE ledger (k text NOT NULL, d int NOT NULL);
	CREATE INDEX ON ledger (k);
});

sub filenodes
{
	return $node->safe_psql($db,
		"SELECT pg_relation_filenode('counter.events') || ' ' || pg_relation_filenode('counter.events_1')");
}

# Writers: +1 or -1 on one of 4 keys with its ledger row; some roll back.
# Readers: one statement compares each read with the ledger in the same
# snapshot and divides by zero on a mismatch; the REPEATABLE READ reader
# compares twice in one snapshot, 50 ms apart (a rotation in between).
my %scripts = (
	'write.sql@8' => q(\set k random(0, 3)
\set sign random(0, 3)
\set d 1 - 2 * (:sign / 3)
BEGIN;
SELECT counter.add('r', 'k' || :k, :d);
INSERT INTO ledger VALUES ('k' || :k, :d);
COMMIT;
),
	'rollback.sql@1' => q(\set k random(0, 3)
BEGIN;
SELECT counter.add('r', 'k' || :k, 1000);
INSERT INTO ledger VALUES ('k' || :k, 1000);
ROLLBACK;
),
	'value.sql@2' => q(\set k random(0, 3)
SELECT 1 / (counter.value('r', 'k' || :k) =
            (SELECT coalesce(sum(d), 0) FROM ledger WHERE k = 'k' || :k))::int;
),
	'values.sql@1' => q(SELECT 1 / ((SELECT sum(value) FROM counter.values('r', ARRAY['k0', 'k1', 'k2', 'k3'])) =
            (SELECT coalesce(sum(d), 0) FROM ledger))::int;
),
	'top.sql@1' => q(SELECT 1 / ((SELECT coalesce(sum(value), 0) FROM counter.top('r', 10)) =
            (SELECT coalesce(sum(d), 0) FROM ledger))::int;
),
	'series.sql@1' => q(SELECT 1 / ((SELECT coalesce(sum(value), 0)
              FROM counter.series('r', 'k0', now() - interval '1 hour', now() + interval '1 hour', '1 minute')) =
            (SELECT coalesce(sum(d), 0) FROM ledger WHERE k = 'k0'))::int;
),
	'rr.sql@1' => q(\set k random(0, 3)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 1 / (counter.value('r', 'k' || :k) =
            (SELECT coalesce(sum(d), 0) FROM ledger WHERE k = 'k' || :k))::int;
SELECT pg_sleep(0.05);
SELECT 1 / (counter.value('r', 'k' || :k) =
            (SELECT coalesce(sum(d), 0) FROM ledger WHERE k = 'k' || :k))::int;
COMMIT;
),
);
my @args;
foreach my $s (sort keys %scripts)
{
	my ($file, $weight) = split /@/, $s;
	my $path = $node->basedir . "/$file";
	append_to_file($path, $scripts{$s});
	push @args, '-f', "$path\@$weight";
}

my $before = filenodes();
my ($out, $err);
my $ok = IPC::Run::run(
	[ 'pgbench', '-n', '-c', '16', '-j', '2', '-T', '8', @args, $node->connstr($db) ],
	'>', \$out, '2>', \$err);
ok($ok, 'pgbench: no client aborted (every read equalled the ledger)') or diag("$out\n$err");
unlike($err, qr/division by zero|ERROR/, 'no read differed from the ledger') or diag($err);
my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
note("transactions: $processed");
cmp_ok($processed // 0, '>', 1000, 'the load ran');
isnt(filenodes(), $before, 'the events tables were rotated and emptied during the load');

is($node->safe_psql($db,
	"SELECT count(*) FILTER (WHERE counter.value('r', k) <> s) FROM (SELECT k, sum(d) AS s FROM ledger GROUP BY k) l"),
	'0', 'every key equals the ledger after the load');
$node->safe_psql($db, 'SELECT counter.compact()');
is($node->safe_psql($db,
	"SELECT (SELECT sum(value) FROM counter.totals WHERE counter = 'r') = (SELECT sum(d) FROM ledger)"),
	't', 'all compacted into totals');
is($node->safe_psql($db, "SELECT count(*) FROM counter.verify('r') WHERE drift <> 0 OR drifted_keys <> 0"),
	'0', 'verify: rollups agree with totals');

# A folded table that is not emptied yet: worker off, compact() rotates.
$node->safe_psql($db, 'ALTER SYSTEM SET counter.worker_enabled = off');
$node->reload;
$node->poll_query_until($db,
	"SELECT current_setting('counter.worker_enabled') = 'off'") or die;
$node->safe_psql($db, q{
	SELECT counter.add('r', 'k0', 7);
	SELECT counter.add('r', 'k9', 5);
	SELECT counter.compact();
	SELECT counter.add('r', 'k0', 1);
});
is($node->safe_psql($db,
	'SELECT (SELECT count(*) FROM counter.event_tables WHERE folded IS NOT NULL) || \' \' ||'
	  . ' (SELECT count(*) FROM counter.pending_events)'),
	'1 1', 'one table folded (rows kept), one pending event');
my $values = $node->safe_psql($db,
	"SELECT string_agg(k || '=' || counter.value('r', k), ',' ORDER BY k) FROM unnest(ARRAY['k0','k1','k2','k3','k9']) k");

my $dump = $node->basedir . '/rot.dump';
command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr($db) ], 'pg_dump');
$node->safe_psql($db, 'CREATE DATABASE restored');
command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ], 'pg_restore');
is($node->safe_psql('restored',
	"SELECT string_agg(k || '=' || counter.value('r', k), ',' ORDER BY k) FROM unnest(ARRAY['k0','k1','k2','k3','k9']) k"),
	$values, "restored values equal the dumped ones ($values)");
is($node->safe_psql('restored',
	'SELECT (SELECT count(*) FROM counter.event_tables WHERE folded IS NOT NULL) || \' \' ||'
	  . ' (SELECT count(*) FROM counter.pending_events)'),
	'0 1', 'restored: no folded table, the pending event only');
$node->safe_psql('restored', q{
	SELECT counter.add('r', 'k9', 1);
	SELECT counter.compact();
});
is($node->safe_psql('restored', "SELECT counter.value('r', 'k9')"), '6', 'restored database adds and compacts');

# still off: counter.compact() itself empties the folded table, so that the
# next call can rotate again (before 1.4 a folded table stayed until the
# worker ran, and every compaction deleted its events row by row)
my $tables = 'SELECT (SELECT count(*) FROM counter.event_tables WHERE folded IS NOT NULL) || \' \' ||'
  . ' (SELECT count(*) FROM counter.pending_events)';
my $folded = 'SELECT tab FROM counter.event_tables WHERE folded IS NOT NULL';
my $was = $node->safe_psql($db, $folded);
$node->safe_psql($db, 'SELECT counter.compact()');
is($node->safe_psql($db, $tables), '0 0',
	'worker off: counter.compact() empties the folded table (and moves the pending event)');
$node->safe_psql($db, q{
	SELECT counter.add('r', 'k0', 1);
	SELECT counter.add('r', 'k0', -1);
	SELECT counter.compact();
});
is($node->safe_psql($db, $tables) . ' ' . $node->safe_psql($db, $folded), '1 0 ' . (1 - $was),
	'the next counter.compact() rotates again: the other table is folded now');
is($node->safe_psql($db,
	"SELECT string_agg(k || '=' || counter.value('r', k), ',' ORDER BY k) FROM unnest(ARRAY['k0','k1','k2','k3','k9']) k"),
	$values, 'values unchanged by the emptying and the rotation');

# Once the compaction that empties a folded table commits, reads stop
# consulting counter.event_tables (before, each read scanned it until the
# next compaction round, which with the worker off never came).
$node->safe_psql($db, 'SELECT counter.compact()');
is($node->safe_psql($db, $tables), '0 0', 'worker off: counter.compact() empties it again');
is($node->safe_psql($db, q{
	SELECT count(counter.value('r', 'k' || i)) FROM generate_series(0, 9) i;
	SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relid = 'counter.event_tables'::regclass;
}), "10\n0", 'and then reads do not scan counter.event_tables');

# back on: the worker empties the folded table
$node->safe_psql($db, 'ALTER SYSTEM RESET counter.worker_enabled');
$node->reload;
ok($node->poll_query_until($db,
	'SELECT NOT EXISTS (SELECT 1 FROM counter.event_tables WHERE folded IS NOT NULL)'),
	'the worker empties the folded table');
is($node->safe_psql($db,
	"SELECT string_agg(k || '=' || counter.value('r', k), ',' ORDER BY k) FROM unnest(ARRAY['k0','k1','k2','k3','k9']) k"),
	$values, 'values unchanged after emptying');

$node->stop;
done_testing();
