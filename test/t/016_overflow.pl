# Proves that the background worker keeps compacting other counters while a key it cannot move exists (quarantined once, with one WARNING, with counter.rotate_size = -1: row by row only), releases the key once an opposite add lets it fold with nothing lost, and that the change feed's plan, first prepared while a rotation folds more than FEED_MAX_KEYS distinct keys, never scans counter.totals sequentially, and the fold of the whole table reads it in index order and aggregates it as it streams, with no hash table of its keys and no sort of its rows before the inserts, and a batch's plan reads its aggregate once per use among 30 counters (auto_explain of the nested statements); and that a key quarantined by a whole table's fold, carried into a table that its TRUNCATE emptied, is read there, as are rows that SQL (INSERT, COPY) writes into tables marked empty, and slot rows inserted into a counter marked as having none.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;

my $db   = 'postgres';
my $node = counter_node('overflow', qq(
counter.rotate_size = -1
));
$node->safe_psql($db, q{
	CREATE EXTENSION counter;
	SELECT counter.create('bad', mode => 'events', rollups => '{1 hour,1 day}');
	SELECT counter.create('good', mode => 'events');
	SELECT counter.add('bad', 'max', 9223372036854775807);
});

sub pending
{
	my ($name) = @_;
	return $node->safe_psql($db,
		"SELECT pending_events FROM counter.stats WHERE name = '$name'");
}

ok($node->poll_query_until($db,
		"SELECT pending_events = 0 FROM counter.stats WHERE name = 'bad'"),
	'the worker compacts INT64_MAX');

# the +1 cannot be folded into that total: the worker quarantines the key
my $log_offset = -s $node->logfile;
$node->safe_psql($db, q{
	SELECT counter.add('bad', 'max', 1);
	SELECT counter.add('good', 'g' || i, i) FROM generate_series(1, 10) AS i;
});
ok($node->poll_query_until($db,
		"SELECT pending_events = 0 FROM counter.stats WHERE name = 'good'"),
	'the worker compacts another counter while the bad key waits');
is($node->safe_psql($db, 'SELECT key, source FROM counter.quarantine'),
	'max|events', 'the bad key is quarantined');

# more rounds: the good counter keeps moving, the bad key is warned of once
foreach my $round (1 .. 3)
{
	$node->safe_psql($db,
		"SELECT counter.add('good', 'g' || i, 1) FROM generate_series(1, 10) AS i");
	ok($node->poll_query_until($db,
			"SELECT pending_events = 0 FROM counter.stats WHERE name = 'good'"),
		"round $round: the other counter is compacted again");
}
is(pending('bad'), '1', 'the bad key\'s event stays pending');
my $log = slurp_file($node->logfile, $log_offset);
my @warnings = $log =~ /WARNING:  counter: key "max" of counter "bad" cannot be compacted/g;
is(scalar(@warnings), 1, 'one WARNING for the newly quarantined key, from the worker');
my ($ret, $out, $err) = $node->psql($db, "SELECT counter.value('bad', 'max')");
like($err, qr/out of range for bigint/, 'its exact value, outside bigint, reads as 22003');
is($node->safe_psql($db, "SELECT sum(value) FROM counter.totals WHERE counter = 'good'"),
	'85', 'the other counter\'s totals are exact');

# fixed by the opposite add: released at a maintenance round, folded
$node->safe_psql($db, "SELECT counter.add('bad', 'max', -1)");
ok($node->poll_query_until($db,
		"SELECT NOT EXISTS (SELECT 1 FROM counter.quarantine)"
		  . " AND (SELECT pending_events = 0 FROM counter.stats WHERE name = 'bad')"),
	'the worker releases and folds the key');
is($node->safe_psql($db, "SELECT counter.value('bad', 'max')"),
	'9223372036854775807', 'nothing lost');
is($node->safe_psql($db,
		"SELECT sum(drift) FROM counter.verify('bad')"), '0', 'no drift');

# The feed: a fresh backend whose first feed flush happens while the
# rotation's fold of more than 10,000 keys runs; the worker stays off so
# that this backend compacts, and the rotation folds the whole table.
$node->append_conf('postgresql.conf', qq(
counter.rotate_size = 0
counter.worker_enabled = off
));
$node->reload;
ok($node->poll_query_until($db,
		"SELECT setting = 'off' FROM pg_settings WHERE name = 'counter.worker_enabled'"),
	'worker off');
$node->safe_psql($db, q{
	SELECT counter.create('feed', mode => 'events', feed => true);
	SELECT counter.add('feed', 'k' || i, 1) FROM generate_series(1, 12000) AS i;
});
$log_offset = -s $node->logfile;
my $moved = $node->safe_psql($db, q{
	LOAD 'auto_explain';
	SET auto_explain.log_min_duration = 0;
	SET auto_explain.log_nested_statements = on;
	SELECT counter.compact();
});
is($moved, '12000', 'one compaction folds the 12,000 events');
is($node->safe_psql($db,
		"SELECT count(*) FROM counter.event_tables WHERE folded IS NOT NULL"),
	'1', 'through the rotation\'s fold');
$log = slurp_file($node->logfile, $log_offset);
my @plans = grep { /json_build_object/ } split /Query Text:/, $log;
cmp_ok(scalar(@plans), '>=', 2, 'the feed flushed at least twice, nested');
my @seqscans = grep { /Seq Scan on totals/ } @plans;
is(scalar(@seqscans), 0, 'no feed plan scans totals sequentially');
# the fold of the whole table streams it in key order: no hash table of
# every key and bucket of the table (which spilled at a million keys)
my @folds = grep { /UPDATE counter.event_tables SET folded/ } split /Query Text:/, $log;
is(scalar(@folds), 1, 'one plan of the whole table\'s fold logged');
like($folds[0] // '', qr/Index Scan using events(_1)?_key on events(_1)? e.*GroupAggregate|GroupAggregate.*Index Scan using events(_1)?_key/s,
	'the fold reads the table through its index and aggregates it as it streams');
unlike($folds[0] // '', qr/HashAggregate[^\n]*\n[^\n]*Group Key: e?\.?counter_id, .*key/,
	'no hash aggregation of the table\'s keys');
unlike($folds[0] // '', qr/Sort Key: a\w*\.(counter_id, a\w*\.key|name)/,
	'its rows go into rollups and totals as they stream, not sorted again');

# A batch's fold reads its aggregate once per use, whatever the number of
# counters: the inserts took the counter's name from a join that the
# planner made a loop over counter.counters, scanning every row of the
# batch once per counter.
$node->safe_psql($db, q{
	SELECT counter.create('many_' || i, mode => 'events') FROM generate_series(1, 30) i;
	SELECT counter.add('many_7', 'k' || i, 1) FROM generate_series(1, 500) AS i;
});
$log_offset = -s $node->logfile;
is($node->safe_psql($db, q{
	LOAD 'auto_explain';
	SET auto_explain.log_min_duration = 0;
	SET auto_explain.log_nested_statements = on;
	SET auto_explain.log_analyze = on;
	SET auto_explain.log_timing = off;
	SELECT counter.compact();
}), '500', 'a batch folds the 500 events of one of 30 counters');
$log = slurp_file($node->logfile, $log_offset);
my @batches = grep { /DELETE FROM counter.events/ && /Insert on totals/ } split /Query Text:/, $log;
cmp_ok(scalar(@batches), '>=', 1, 'the batch\'s plan is logged');
my @loops = map { /CTE Scan on agg \S+ .*?loops=(\d+)/g } @batches;
cmp_ok(scalar(@loops), '>=', 3, 'its reads of the aggregate are in the plan');
is(scalar(grep { $_ > 1 } @loops), 0, 'each reads the aggregate once (loops=1)');

# A key quarantined by the fold of a whole table is carried to the current
# table, which the reads must then open: a table emptied by its TRUNCATE is
# skipped by reads until something writes it (an "empty" bit in shared
# memory), and the carry is such a write.  Worker off, every compaction
# rotates (rotate_size 0): the first folds the table holding INT64_MAX, the
# second empties it, the +1 goes to the other table, whose fold quarantines
# the key and carries the +1 back into the emptied one.
$node->safe_psql($db, q{
	SELECT counter.create('carry', mode => 'events', rollups => '{1 hour}');
	SELECT counter.add('carry', 'max', 9223372036854775807);
});
$node->safe_psql($db, 'SELECT counter.compact()') for 1 .. 2;
is($node->safe_psql($db, q{
	SELECT (SELECT count(*) FROM counter.event_tables WHERE folded IS NOT NULL) || ' ' ||
	       pg_relation_size('counter.events') + pg_relation_size('counter.events_1') || ' ' ||
	       (SELECT value FROM counter.totals WHERE counter = 'carry' AND key = 'max')}),
	'0 0 9223372036854775807', 'INT64_MAX folded, both events tables emptied');
$node->safe_psql($db, "SELECT counter.add('carry', 'max', 1)");
($ret, $out, $err) = $node->psql($db, 'SELECT counter.compact()');
like($err, qr/key "max" of counter "carry" cannot be compacted/,
	'the fold of the whole table quarantines the key');
is($node->safe_psql($db, q{
	SELECT (SELECT count(*) FROM counter.event_tables WHERE folded IS NOT NULL) || ' ' ||
	       (SELECT count(*) FROM counter.events WHERE key = 'max') +
	       (SELECT count(*) FROM counter.events_1 WHERE key = 'max')}),
	'1 2', 'its events are carried to the current table (the folded one still holds its own)');
($ret, $out, $err) = $node->psql($db, "SELECT counter.value('carry', 'max')");
like($err, qr/out of range for bigint/,
	'the read counts the carried +1 in the emptied table (22003, not INT64_MAX)');

# A write through SQL into a table marked empty (a restore's COPY; here an
# INSERT by the superuser) is read: the table's trigger clears the mark.
# With the quarantined counter gone, compactions leave both tables empty,
# each marked so (found without a block, or emptied by its TRUNCATE).
$node->safe_psql($db, q{
	SELECT counter.drop('carry');
	SELECT counter.create('copied', mode => 'events');
});
$node->safe_psql($db, 'SELECT counter.compact()') for 1 .. 3;
is($node->safe_psql($db, q{
	SELECT (SELECT count(*) FROM counter.event_tables WHERE folded IS NOT NULL) || ' ' ||
	       pg_relation_size('counter.events') + pg_relation_size('counter.events_1')}),
	'0 0', 'both events tables empty');
my $copied = $node->safe_psql($db, "SELECT id FROM counter.counters WHERE name = 'copied'");
is($node->safe_psql($db, qq{
INSERT INTO counter.events (counter_id, key, delta, at) VALUES ($copied, 'k', 5, now());
COPY counter.events_1 (counter_id, key, delta, at) FROM STDIN;
$copied	k	7	2026-01-01 00:00:00+00
\\.
SELECT counter.value('copied', 'k');}),
	'12', 'rows written into both by SQL (INSERT, COPY) are read');

# A counter without slot rows is marked so by a maintenance round, and its
# reads skip the slots index; a slot row inserted later, by an add or by
# SQL (the table's trigger), is read.
$node->safe_psql($db, q{
	SELECT counter.create('slotted');
	SELECT counter.create('slot_copied');
	SELECT counter.add('slotted', 'k', 1);
	SELECT counter.add('slot_copied', 'k', 1);
});
$node->safe_psql($db, 'SELECT counter.compact()') for 1 .. 2;
is($node->safe_psql($db, q{
	SELECT count(*) FROM counter.slots s JOIN counter.counters c ON c.id = s.counter_id
	 WHERE c.name IN ('slotted', 'slot_copied')}),
	'0', 'two slots-mode counters without slot rows (an uncontended add is an event)');
is($node->safe_psql($db, q{
	SET counter.slot_events = 0;
	SELECT 'added' FROM counter.add('slotted', 'k', 2);
	SELECT count(*) || ' ' || counter.value('slotted', 'k')
	  FROM counter.slots s JOIN counter.counters c ON c.id = s.counter_id WHERE c.name = 'slotted'}),
	"added\n1 3", 'a slot row an add inserts is read');
is($node->safe_psql($db, q{
	INSERT INTO counter.slots (counter_id, key, slot, value, touched, pad)
		SELECT id, 'k', 1, 5, now(), '' FROM counter.counters WHERE name = 'slot_copied';
	SELECT counter.value('slot_copied', 'k')}),
	'6', 'a slot row SQL inserts is read');

$node->stop;
done_testing();
