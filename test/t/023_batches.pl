# Proves that compaction moves a backlog in batches, each its own transaction: a backlog of many batches (counter.batch_events = 100, events tables analyzed while empty) compacts in as many worker transactions and exactly (totals and rollups against a ledger), a second counter's events are compacted while the first still has a backlog pending, counter.compact() drains a backlog of many batches in one call exactly, a kill -9 of the worker between batches loses and double counts nothing, and the worker's maintenance rounds apply retention to buckets that come due after its first round.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $db   = 'postgres';
my $node = counter_node('batches', qq(
counter.batch_events = 100
counter.batch_time = '1h'
counter.rotate_size = -1
counter.worker_enabled = off
restart_after_crash = on
));
$node->safe_psql($db, q{
	CREATE EXTENSION counter;
	SELECT counter.create('big', mode => 'events', rollups => '{1 minute}');
	SELECT counter.create('small', mode => 'events', rollups => '{1 minute}');
	CREATE TABLE ledger (c text NOT NULL, k text NOT NULL, d int8 NOT NULL);
	ANALYZE counter.events, counter.events_1;
	-- the transaction that deleted each event: which batch moved it
	CREATE TABLE moved (c int4 NOT NULL, x xid8 NOT NULL);
	CREATE FUNCTION log_moved() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.moved VALUES (OLD.counter_id, pg_catalog.pg_current_xact_id());
		RETURN NULL;
	END $$;
	CREATE TRIGGER log_moved AFTER DELETE ON counter.events
		FOR EACH ROW EXECUTE FUNCTION log_moved();
	CREATE TRIGGER log_moved AFTER DELETE ON counter.events_1
		FOR EACH ROW EXECUTE FUNCTION log_moved();
});

# Add n events to counter c over nkeys keys, with their ledger rows.
sub load
{
	my ($c, $n, $nkeys) = @_;
	$node->safe_psql($db, qq{
		WITH e AS (SELECT 'k' || (i % $nkeys) AS k, 1 + i % 3 AS d FROM generate_series(1, $n) i)
		INSERT INTO ledger SELECT '$c', k, d FROM e WHERE counter.add('$c', k, d) IS NOT NULL});
}

# Worker settings: on or off, reloaded and waited for.
sub worker
{
	my ($on) = @_;
	$node->safe_psql($db, "ALTER SYSTEM SET counter.worker_enabled = $on; SELECT pg_reload_conf()");
}

# Every key of every counter: totals, rollups and reads against the ledger.
sub exact
{
	my ($what) = @_;
	is($node->safe_psql($db, q{
		SELECT count(*) FROM (SELECT c, k, sum(d) AS d FROM ledger GROUP BY 1, 2) l
		  FULL JOIN (SELECT counter AS c, key AS k, sum(value) AS v FROM counter.totals GROUP BY 1, 2) t
		    USING (c, k)
		 WHERE l.d IS DISTINCT FROM t.v}), '0', "$what: totals equal the ledger, key by key");
	is($node->safe_psql($db, q{
		SELECT count(*) FROM (SELECT c, k, sum(d) AS d FROM ledger GROUP BY 1, 2) l
		  FULL JOIN (SELECT c.name AS c, r.key AS k, sum(r.value) AS v
		               FROM (SELECT counter_id, key, value FROM counter.rollups
		                     UNION ALL	-- the buckets a total holds (totals.sole), one per granularity
		                     SELECT c.id, t.key, t.value * cardinality(c.rollups)
		                       FROM counter.totals t JOIN counter.counters c ON c.name = t.counter
		                      WHERE t.sole IS NOT NULL) r
		               JOIN counter.counters c ON c.id = r.counter_id
		              GROUP BY 1, 2) r USING (c, k)
		 WHERE l.d IS DISTINCT FROM r.v}), '0', "$what: rollups equal the ledger, key by key");
	is($node->safe_psql($db, q{
		SELECT count(*) FROM (SELECT c, k, sum(d) AS d FROM ledger GROUP BY 1, 2) l
		 WHERE counter.value(l.c, l.k) <> l.d}), '0', "$what: value() of every key is exact");
}

# pending events of counter c
sub pending
{
	my ($c) = @_;
	return $node->safe_psql($db, "SELECT pending_events FROM counter.stats WHERE name = '$c'");
}

# the worker's compaction transactions so far
sub compactions
{
	return $node->safe_psql($db, 'SELECT coalesce(sum(compactions), 0) FROM counter.worker_status()');
}

# 1. A backlog of 300 batches, and a second counter's few events behind it.
load('big', 30000, 500);
load('small', 10, 5);
is(pending('big'), '30000', 'the backlog waits while the worker is off');
my $before = compactions();
worker('on');
ok($node->poll_query_until($db, q{
	SELECT pending_events = 0 FROM counter.stats WHERE name = 'small'}), 'the second counter is compacted');
ok($node->poll_query_until($db, q{
	SELECT pending_events = 0 FROM counter.stats WHERE name = 'big'}), 'the backlog drains');
# the batch that moved the second counter's events came before the last
# batches of the big backlog, however fast the batches ran
is($node->safe_psql($db, q{
	SELECT (SELECT max(m.x) FROM moved m JOIN counter.counters c ON c.id = m.c WHERE c.name = 'small')
		 < (SELECT max(m.x) FROM moved m JOIN counter.counters c ON c.id = m.c WHERE c.name = 'big')}),
	't', 'the second counter is compacted while the big backlog is still pending');
my $rounds = compactions() - $before;
cmp_ok($rounds, '>=', 300, "in one transaction per batch of 100 events ($rounds transactions)");
exact('worker batches');

# 2. counter.compact() drains a backlog of many batches in one call.
worker('off');
load('big', 3000, 700);
is($node->safe_psql($db, "SELECT counter.compact('big')"), '3000', 'counter.compact() moves the whole backlog');
is(pending('big'), '0', 'and nothing is left pending');
exact('counter.compact batches');

# 3. kill -9 of the worker between batches: nothing lost, nothing counted twice.
load('big', 8000, 900);
load('small', 500, 50);
worker('on');
ok($node->poll_query_until($db, q{
	SELECT pending_events < 6000 FROM counter.stats WHERE name = 'big'}), 'the worker is part way through');
my $pid = $node->safe_psql($db, 'SELECT pid FROM counter.worker_status()');
ok($pid =~ /^\d+$/, "the worker runs (pid $pid)");
my $offset = -s $node->logfile;
kill 'KILL', $pid;
# the postmaster restarts every backend after the crash
counter_crash_restarted($node, $offset);
ok($node->poll_query_until($db, 'SELECT count(*) = 1 FROM counter.worker_status() WHERE pid <> ' . $pid),
	'a new worker runs after the crash');
ok($node->poll_query_until($db, q{
	SELECT sum(pending_events) = 0 FROM counter.stats WHERE name IN ('big', 'small')}), 'the rest drains');
exact('after kill -9 between batches');

# The worker's retention: a bucket past retention moves into the -infinity
# bucket at a maintenance round, and again at a later round for a bucket
# that came due since (each round goes on from the last that ran).
$node->safe_psql($db, q{
	SELECT counter.create('kept', mode => 'events', rollups => '{1 second}', retention => '{1 minute}');
	SELECT counter.add('kept', 'k', 3, at => now() - interval '1 hour');
});
my $kept = q{
	SELECT coalesce(sum(r.value) FILTER (WHERE r.bucket = '-infinity'), 0) || ' ' || count(*)
	  FROM counter.rollups r JOIN counter.counters c ON c.id = r.counter_id
	 WHERE c.name = 'kept'};
ok($node->poll_query_until($db, $kept, '3 1'), 'the worker moves a bucket past retention into -infinity');
$node->safe_psql($db, q{SELECT counter.add('kept', 'k', 4, at => now() - interval '2 hours')});
ok($node->poll_query_until($db, $kept, '7 1'), 'and at a later round the bucket come due since');
is($node->safe_psql($db, q{SELECT counter.value('kept', 'k')}), '7', 'the value keeps both adds');

$node->stop;
done_testing();
