# Proves that a hot standby reads exact values while the primary rotates its events tables at every compaction round: READ COMMITTED and REPEATABLE READ reads on the standby always equal a ledger written in the same transactions on the primary, adds on the standby are refused with 25006, and the standby ends with the primary's values.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $db      = 'postgres';
my $primary = counter_node('primary', qq(
counter.naptime = '20ms'
counter.rotate_size = 0
max_connections = 50
log_statement = none
), allows_streaming => 1);
$primary->safe_psql($db, q{
	CREATE EXTENSION counter;
	SELECT counter.create('r', mode => 'events');
	CREATE TABLE ledger (k text NOT NULL, d int NOT NULL);
	CREATE INDEX ON ledger (k);
});
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->append_conf('postgresql.conf', "hot_standby_feedback = on\nwal_receiver_status_interval = 1s\nlog_statement = none\n");
$standby->start;
$primary->wait_for_catchup($standby);

my ($ret, $out, $err) = $standby->psql($db, "SELECT counter.add('r', 'k0', 1)");
like($err, qr/cannot execute counter.add\(\) in a read-only transaction/, 'an add on the standby is refused');
($ret, $out, $err) = $standby->psql($db, "SELECT counter.add('r', 'k0', 1)", extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/25006/, '... with SQLSTATE 25006');

sub filenodes
{
	return $primary->safe_psql($db,
		"SELECT pg_relation_filenode('counter.events') || ' ' || pg_relation_filenode('counter.events_1')");
}

my $base = $primary->basedir;
append_to_file("$base/write.sql", q(\set k random(0, 3)
\set sign random(0, 3)
\set d 1 - 2 * (:sign / 3)
BEGIN;
SELECT counter.add('r', 'k' || :k, :d);
INSERT INTO ledger VALUES ('k' || :k, :d);
COMMIT;
));
append_to_file("$base/read.sql", q(\set k random(0, 3)
SELECT 1 / (counter.value('r', 'k' || :k) =
            (SELECT coalesce(sum(d), 0) FROM ledger WHERE k = 'k' || :k))::int;
));
append_to_file("$base/rr.sql", q(\set k random(0, 3)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 1 / (counter.value('r', 'k' || :k) =
            (SELECT coalesce(sum(d), 0) FROM ledger WHERE k = 'k' || :k))::int;
SELECT pg_sleep(0.05);
SELECT 1 / ((SELECT sum(value) FROM counter.values('r', ARRAY['k0', 'k1', 'k2', 'k3'])) =
            (SELECT coalesce(sum(d), 0) FROM ledger))::int;
COMMIT;
));

my $before = filenodes();
my ($wout, $werr, $rout, $rerr) = ('', '', '', '');
my $writers = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '8', '-j', '1', '-T', '8', '-f', "$base/write.sql",
	  $primary->connstr($db) ],
	'>', \$wout, '2>', \$werr);
my $readers = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '6', '-j', '1', '-T', '8', '-f', "$base/read.sql\@3", '-f', "$base/rr.sql\@1",
	  $standby->connstr($db) ],
	'>', \$rout, '2>', \$rerr);
$writers->finish;
$readers->finish;

unlike($werr, qr/ERROR/, 'primary: no add failed') or diag($werr);
unlike($rerr, qr/division by zero/, 'standby: every read equalled the ledger') or diag($rerr);
unlike($rerr, qr/ERROR/, 'standby: no read failed') or diag($rerr);
my ($written) = $wout =~ /number of transactions actually processed: (\d+)/;
my ($read)    = $rout =~ /number of transactions actually processed: (\d+)/;
note("primary: $written adds; standby: $read read transactions");
cmp_ok($written // 0, '>', 500, 'the primary took adds');
cmp_ok($read // 0, '>', 500, 'the standby served reads');
isnt(filenodes(), $before, 'the primary rotated and emptied its events tables meanwhile');

$primary->wait_for_catchup($standby);
my $q = "SELECT string_agg(k || '=' || counter.value('r', k), ',' ORDER BY k) FROM unnest(ARRAY['k0','k1','k2','k3']) k";
my $values = $primary->safe_psql($db, $q);
is($standby->safe_psql($db, $q), $values, "the standby reads the primary's values ($values)");
is($primary->safe_psql($db,
	"SELECT count(*) FROM (SELECT k, sum(d) AS s FROM ledger GROUP BY k) l WHERE counter.value('r', k) <> s"),
	'0', 'primary: every key equals the ledger');

$standby->stop;
$primary->stop;
done_testing();
