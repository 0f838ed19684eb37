# Proves exactness on one hot key: 16 pgbench clients x 2000 transactions of +1/-1 adds, some rolled back, in slots, events and buffered modes; the final value equals the committed sum (a ledger written in the same transactions) and the count of committed transactions pgbench reports.  Then 6 runs of 64 fresh backends on a hot slots key under asynchronous commit: no add fails on its own slot row, and the value equals the adds done.  Then reads of a hot slots key and a hot bounded key while 40 clients add (savepoints, rollbacks, prepared transactions, compactions, a transaction holding its xid): every value() equals the sum of its rows scanned in the same snapshot, and reads (other than those of a snapshot of the same form) sum the adds noted since another snapshot's read.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $node = counter_node('exact', qq(
counter.naptime = '100ms'
max_connections = 80
max_prepared_transactions = 64
log_statement = none
));
$node->safe_psql('postgres', q{
	CREATE EXTENSION counter;
	CREATE TABLE ledger (mode text, d int);
});

# pgbench's -f arguments for scripts ("name.sql@weight" => text), written
# to files named with prefix.
sub script_args
{
	my ($prefix, %scripts) = @_;
	my @args;
	foreach my $s (sort keys %scripts)
	{
		my ($file, $weight) = split /@/, $s;
		my $path = $node->basedir . "/$prefix$file";
		PostgreSQL::Test::Utils::append_to_file($path, $scripts{$s});
		push @args, '-f', "$path\@$weight";
	}
	return @args;
}

foreach my $mode ('slots', 'events', 'buffered')
{
	$node->safe_psql('postgres', "SELECT counter.create('hot_$mode', mode => '$mode')");

	# +1 three times as often as -1; one transaction in ten rolls back
	my %scripts = (
		'plus.sql@6' => "BEGIN;\nSELECT counter.add('hot_$mode', 'k', 1);\nINSERT INTO ledger VALUES ('$mode', 1);\nCOMMIT;\n",
		'minus.sql@2' => "BEGIN;\nSELECT counter.add('hot_$mode', 'k', -1);\nINSERT INTO ledger VALUES ('$mode', -1);\nCOMMIT;\n",
		'rollback.sql@1' => "BEGIN;\nSELECT counter.add('hot_$mode', 'k', 1000);\nINSERT INTO ledger VALUES ('$mode', 1000);\nROLLBACK;\n",
	);
	my @args = script_args("${mode}_", %scripts);
	my ($out, $err);
	my $ok = IPC::Run::run(
		[ 'pgbench', '-n', '-c', '16', '-j', '2', '-t', '2000', @args, $node->connstr('postgres') ],
		'>', \$out, '2>', \$err);
	ok($ok, "$mode: pgbench ran 16 x 2000 transactions") or diag($err);
	my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
	is($processed, 32000, "$mode: all 32000 transactions done");

	my $sum = $node->safe_psql('postgres', "SELECT sum(d) FROM ledger WHERE mode = '$mode'");
	my $committed = $node->safe_psql('postgres', "SELECT count(*) FROM ledger WHERE mode = '$mode'");
	my $value = $node->safe_psql('postgres', "SELECT counter.value('hot_$mode', 'k')");
	note("$mode: value $value, ledger sum $sum over $committed committed transactions");
	cmp_ok($committed, '>', 20000, "$mode: most transactions committed");
	cmp_ok($committed, '<', 32000, "$mode: some rolled back");
	is($value, $sum, "$mode: value equals the committed sum");

	$node->safe_psql('postgres', 'SELECT counter.compact()');
	is($node->safe_psql('postgres', "SELECT counter.value('hot_$mode', 'k')"), $sum,
		"$mode: still exact after compaction");
	is($node->safe_psql('postgres',
		"SELECT coalesce(sum(value), 0) FROM counter.totals WHERE counter = 'hot_$mode'"), $sum,
		"$mode: everything compacted into totals");
}

# Fresh backends joining a hot slots key whose rows are updated as fast as
# asynchronous commit allows: rows move to new pages (non-HOT updates), and
# a backend whose own row it could not see must not fail inserting it.
# Each run starts 64 new backends (ids reused from the previous run's).
$node->safe_psql('postgres', "SELECT counter.create('hot_async')");
my $async = $node->basedir . '/async.sql';
PostgreSQL::Test::Utils::append_to_file($async, "SELECT counter.add('hot_async', 'k', 1);\n");
my $total = 0;
foreach my $run (1 .. 6)
{
	my ($out, $err);
	local $ENV{PGOPTIONS} = '-c synchronous_commit=off';
	my $ok = IPC::Run::run(
		[ 'pgbench', '-n', '-M', 'prepared', '-c', '64', '-j', '2', '-T', '3', '-f', $async,
		  $node->connstr('postgres') ],
		'>', \$out, '2>', \$err);
	ok($ok, "async run $run: pgbench exited with status 0") or diag($err);
	unlike($err, qr/ERROR/, "async run $run: no add failed") or diag($err);
	my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
	cmp_ok($processed // 0, '>', 0, "async run $run: the load ran");
	$total += $processed // 0;
}
note("asynchronous runs: $total adds");
is($node->safe_psql('postgres', "SELECT counter.value('hot_async', 'k')"), $total,
	'asynchronous runs: the value equals the adds done');

# Reads of a hot key while it is written: a read sums the slot rows from
# the adds noted since a read in another snapshot (src/read.c).  8 clients
# check that counter.value() equals the sum of the rows it reads (totals,
# slot rows, live events tables), scanned in the same statement's
# snapshot, while 40 add to a slots key and a bounded key: single adds,
# adds with a savepoint rolled back, rolled-back transactions, prepared
# transactions committed, compactions (the worker's, every 100ms), and a
# transaction holding its xid open throughout.
$node->safe_psql('postgres', q{
	SELECT counter.create('hot_read');
	SELECT counter.create('hot_bounded', min => 0, max => 1000000000000);
	SELECT counter.add('hot_read', 'k'), counter.add('hot_bounded', 'k');
});
my %writers = (
	'one.sql@5' => "\\set c random(0, 1)\nSELECT counter.add(CASE :c::int WHEN 0 THEN 'hot_read' ELSE 'hot_bounded' END, 'k', 1);\n",
	'savepoint.sql@3' => "\\set d random(0, 5)\nBEGIN;\nSELECT counter.add('hot_read', 'k', :d);\nSAVEPOINT s;\nSELECT counter.add('hot_read', 'k', 1000);\nSELECT counter.add('hot_bounded', 'k', 1000);\nROLLBACK TO s;\nSELECT counter.add('hot_bounded', 'k', :d);\nSELECT counter.add('hot_bounded', 'k', 2);\nEND;\n",
	'rollback.sql@1' => "BEGIN;\nSELECT counter.add('hot_read', 'k', 7);\nSELECT counter.add('hot_bounded', 'k', 7);\nROLLBACK;\n",
	'prepared.sql@1' => "BEGIN;\nSELECT counter.add('hot_read', 'k', 3);\nSELECT counter.add('hot_bounded', 'k', 3);\nPREPARE TRANSACTION 'hot_read_:client_id';\nCOMMIT PREPARED 'hot_read_:client_id';\n",
);
my @wargs = script_args('w_', %writers);
my $sum_of = sub {
	my ($c) = @_;
	my $id = "(SELECT id FROM counter.counters WHERE name = '$c')";
	return "(SELECT coalesce(sum(value), 0) FROM counter.totals WHERE counter = '$c' AND key = 'k')"
	  . " + (SELECT coalesce(sum(value), 0) FROM counter.slots WHERE counter_id = $id AND key = 'k')"
	  . " + (SELECT coalesce(sum(delta), 0) FROM counter.events WHERE counter_id = $id AND key = 'k' AND counter._event_table_live(0))"
	  . " + (SELECT coalesce(sum(delta), 0) FROM counter.events_1 WHERE counter_id = $id AND key = 'k' AND counter._event_table_live(1))";
};
my $check = $node->basedir . '/check.sql';
# random() * 0: a division by zero the planner cannot fold into an error of its own
PostgreSQL::Test::Utils::append_to_file($check,
	"SELECT CASE WHEN counter.value('hot_read', 'k') = " . $sum_of->('hot_read')
	  . " AND counter.value('hot_bounded', 'k') = " . $sum_of->('hot_bounded')
	  . " THEN 1 ELSE 1 / (random() * 0)::int END;\n");
my $long = psql_session($node->connstr('postgres'));
session_query($long, 'BEGIN; SELECT pg_current_xact_id();');
my ($wout, $werr, $cout, $cerr) = ('', '', '', '');
my $wh = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '40', '-j', '2', '-T', '12', @wargs,
	  $node->connstr('postgres') ],
	'>', \$wout, '2>', \$werr);
{
	local $ENV{PGOPTIONS} = '-c client_min_messages=debug2';
	IPC::Run::run(
		[ 'pgbench', '-n', '-M', 'prepared', '-c', '8', '-j', '2', '-T', '10', '-f', $check,
		  $node->connstr('postgres') ],
		'>', \$cout, '2>', \$cerr);
}
$wh->finish;
session_query($long, 'COMMIT;');
$long->{h}->finish;
my ($writes) = $wout =~ /actually processed: (\d+)/;
my ($checks) = $cout =~ /actually processed: (\d+)/;
cmp_ok($writes // 0, '>', 1000, 'hot reads: the writers ran') or diag($werr);
cmp_ok($checks // 0, '>', 1000, 'hot reads: the checks ran') or diag($cerr);
unlike($cerr, qr/ERROR/, 'hot reads: every value() equals the sum of its rows in its snapshot')
  or diag(join("\n", grep { /ERROR/ } split /\n/, $cerr));
my $summed = () = $cerr =~ /summed from \d+ adds since a read in another snapshot/g;
note("hot reads: $writes writes, $checks checks (2 reads each), $summed reads summed from adds");
cmp_ok($summed, '>', 100, "hot reads: reads summed the adds since another snapshot's ($summed)");

$node->stop;
done_testing();
