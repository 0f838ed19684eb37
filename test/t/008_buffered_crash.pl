# Proves buffered mode's crash contract: flushed adds survive a crash exactly, a crash loses exactly the unflushed amount that counter.stats showed (never more, never a double count), and the worker flushes within counter.flush_interval.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $node = counter_node('buffered', qq(
counter.flush_interval = '100ms'
fsync = on
));
$node->safe_psql('postgres', q{
	CREATE EXTENSION counter;
	SELECT counter.create('views', mode => 'buffered', rollups => '{1 hour,1 day}');
});

# pgbench: N transactions of one buffered add each, from 8 clients
sub load
{
	my ($n) = @_;
	my $script = $node->basedir . '/add.sql';
	PostgreSQL::Test::Utils::append_to_file($script,
		"SELECT counter.add('views', 'k' || :client_id % 4, 1);\n")
	  unless -e $script;
	$node->command_ok(
		[ 'pgbench', '-n', '-c', '8', '-j', '2', '-t', $n, '-f', $script, $node->connstr('postgres') ],
		"pgbench: $n transactions per client");
}

sub total
{
	return $node->safe_psql('postgres',
		q{SELECT sum(value) FROM counter.values('views', ARRAY['k0','k1','k2','k3'])});
}

sub unflushed
{
	return $node->safe_psql('postgres',
		q{SELECT buffered_unflushed FROM counter.stats WHERE name = 'views'});
}

# 1. adds are exact while in memory, then flushed by the worker
load(250);
is(total(), '2000', 'buffered value exact before any flush is known');
ok($node->poll_query_until('postgres',
	q{SELECT buffered_unflushed = 0 FROM counter.stats WHERE name = 'views'}),
	'the worker flushes everything');
is($node->safe_psql('postgres', q{SELECT sum(value) FROM counter.totals WHERE counter = 'views'}),
	'2000', 'flushed into totals');

# 2. a crash after the flush loses nothing
$node->stop('immediate');
$node->start;
is(total(), '2000', 'flushed adds survive a crash exactly');

# 3. with flushing held off, a crash loses exactly what stats showed unflushed
$node->append_conf('postgresql.conf', "counter.flush_interval = '1h'\n");
$node->reload;
# let the worker pick up the setting and finish a round
$node->safe_psql('postgres', 'SELECT pg_sleep(0.5)');
load(125);
my $before = total();
my $lost = unflushed();
is($before, '3000', 'value includes the unflushed adds');
is($lost, '1000', 'stats show the 1000 unflushed adds: the loss window');
$node->stop('immediate');
$node->start;
is(total(), $before - $lost, 'a crash loses exactly the unflushed adds, nothing else');
is(unflushed(), '0', 'nothing unflushed after restart');

# 4. no double count: after restart new adds flush on top of the durable value
$node->append_conf('postgresql.conf', "counter.flush_interval = '100ms'\n");
$node->reload;
load(50);
ok($node->poll_query_until('postgres',
	q{SELECT buffered_unflushed = 0 FROM counter.stats WHERE name = 'views'}),
	'flushed again');
is(total(), $before - $lost + 400, 'exact after restart and new adds');
is($node->safe_psql('postgres', q{SELECT string_agg(drifted_keys::text, ',') FROM counter.verify('views')}),
	'0,0', 'no drift between totals and rollups');

$node->stop;
done_testing();
