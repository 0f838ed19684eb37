# Proves that plans made while counter.totals was empty stay right once it
# holds many keys: the worker runs its batches on an empty install (so it
# keeps plans made then), then 200k keys are added and compacted, then each
# of them is added to again, which makes every key's batch merge into its
# total (a probe of totals by key).  The worker catches up exactly, and no
# statement but top() ever reads the index of top() (totals_top): planned on
# the empty table, the probe of a key's total took it over the primary key
# and walked every total of the node for each key, and the second
# compaction, quadratic, did not end in minutes.  Autovacuum is off, so that
# no ANALYZE replaces the kept plans while the test runs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $db    = 'postgres';
my $nkeys = 200_000;
my $node  = counter_node('cold_plans', qq(
autovacuum = off
counter.rotate_size = -1
));
$node->safe_psql($db, q{
	CREATE EXTENSION counter;
	SELECT counter.create('likes', mode => 'events', rollups => '{1 day}');
});

# the worker's batches run on the empty tables (each reads the events
# table's index), more than the 5 runs after which a kept plan may stay
# generic
ok($node->poll_query_until($db,
		"SELECT idx_scan >= 10 FROM pg_stat_all_indexes WHERE indexrelname = 'events_key'"),
	'the worker ran its batches on the empty install');

# the scans of totals_top so far (none: nothing has called top())
sub top_scans
{
	return $node->safe_psql($db,
		"SELECT idx_scan FROM pg_stat_all_indexes WHERE indexrelname = 'totals_top'");
}

# add 1 to every key, then wait for the worker to fold every event: the
# counter's totals then hold the expected sum over every key
sub load_and_fold
{
	my ($round) = @_;
	is($node->safe_psql($db,
			"SELECT count(counter.add('likes', 'k' || i, 1)) FROM generate_series(1, $nkeys) i"),
		$nkeys, "round $round: $nkeys adds ran");
	ok($node->poll_query_until($db,
			"SELECT count(*) = $nkeys AND sum(value) = $nkeys * $round FROM counter.totals"
			  . " WHERE counter = 'likes'"),
		"round $round: the worker folded every event into the $nkeys totals");
	is($node->safe_psql($db,
			'SELECT (SELECT count(*) FROM counter.events) + (SELECT count(*) FROM counter.events_1)'),
		'0', "round $round: no event left");
}

load_and_fold(1);
load_and_fold(2);
is($node->safe_psql($db, "SELECT count(*) FROM counter.rollups r JOIN counter.counters c ON c.id = r.counter_id WHERE c.name = 'likes'"),
	'0', 'every key held its one bucket in its total (no rollups row)');
is($node->safe_psql($db, "SELECT keys || ' ' || drifted_keys FROM counter.verify('likes')"),
	"$nkeys 0", 'verify: every key consistent');
# the worker's counts of its second fold have reached the statistics (its
# upserts of every total), so those of its scans have too
ok($node->poll_query_until($db,
		"SELECT n_tup_upd >= $nkeys FROM pg_stat_all_tables WHERE relid = 'counter.totals'::regclass"),
	"the worker's statistics of the second fold are flushed");
is(top_scans(), '0', 'no compaction statement read the index of top()');
is($node->safe_psql($db, "SELECT string_agg(value::text, ',') FROM counter.top('likes', 3)"),
	'2,2,2', 'top() reads it');
cmp_ok(top_scans(), '>', 0, 'top() scanned it');

done_testing();
