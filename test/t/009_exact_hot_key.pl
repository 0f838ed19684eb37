# Proves exactness on one hot key: 16 pgbench clients x 2000 transactions of +1/-1 adds, some rolled back, in slots, events and buffered modes; the final value equals the committed sum (a ledger written in the same transactions) and the count of committed transactions pgbench reports.  Then 6 runs of 64 fresh backends on a hot slots key under asynchronous commit: no add fails on its own slot row, and the value equals the adds done.
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
log_statement = none
));
$node->safe_psql('postgres', q{
	CREATE EXTENSION counter;
	CREATE TABLE ledger (mode text, d int);
});

foreach my $mode ('slots', 'events', 'buffered')
{
	$node->safe_psql('postgres', "SELECT counter.create('hot_$mode', mode => '$mode')");

	# +1 three times as often as -1; one transaction in ten rolls back
	my %scripts = (
		'plus.sql@6' => "BEGIN;\nSELECT counter.add('hot_$mode', 'k', 1);\nINSERT INTO ledger VALUES ('$mode', 1);\nCOMMIT;\n",
		'minus.sql@2' => "BEGIN;\nSELECT counter.add('hot_$mode', 'k', -1);\nINSERT INTO ledger VALUES ('$mode', -1);\nCOMMIT;\n",
		'rollback.sql@1' => "BEGIN;\nSELECT counter.add('hot_$mode', 'k', 1000);\nINSERT INTO ledger VALUES ('$mode', 1000);\nROLLBACK;\n",
	);
	my @args;
	foreach my $s (sort keys %scripts)
	{
		my ($file, $weight) = split /@/, $s;
		my $path = $node->basedir . "/${mode}_$file";
		PostgreSQL::Test::Utils::append_to_file($path, $scripts{$s});
		push @args, '-f', "$path\@$weight";
	}
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

$node->stop;
done_testing();
