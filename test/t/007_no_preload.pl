# Proves the extension installs and works in a cluster without shared_preload_libraries (slots mode fully, events compacted by counter.compact(), buffered adds stored as events), says so with a hint, and that DROP EXTENSION leaves no object behind.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->start;

# every catalog object of the database, to compare before and after
my $census = q{
	SELECT (SELECT count(*) FROM pg_class) || '/' || (SELECT count(*) FROM pg_proc)
	    || '/' || (SELECT count(*) FROM pg_type) || '/' || (SELECT count(*) FROM pg_namespace)
	    || '/' || (SELECT count(*) FROM pg_operator) || '/' || (SELECT count(*) FROM pg_opclass)
	    || '/' || (SELECT count(*) FROM pg_depend) || '/' || (SELECT count(*) FROM pg_init_privs)
};
my $before = $node->safe_psql('postgres', $census);

my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION counter');
is($ret, 0, 'CREATE EXTENSION works without the preload');
like($err, qr/background worker is not running/, 'it says compaction is not running');
like($err, qr/shared_preload_libraries/, 'with a hint naming the setting');

$node->safe_psql('postgres', q{
	SELECT counter.create('s');
	SELECT counter.create('e', mode => 'events', rollups => '{1 hour,1 day}');
	SELECT counter.create('b', mode => 'buffered');
	SELECT count(counter.add('s', 'k' || (i % 3), 1)) FROM generate_series(1, 300) i;
	SELECT count(counter.add('e', 'k', 2)) FROM generate_series(1, 100) i;
	SELECT count(counter.add('b', 'k', 3)) FROM generate_series(1, 100) i;
});
is($node->safe_psql('postgres', q{SELECT sum(value) FROM counter.values('s', ARRAY['k0','k1','k2'])}),
	'300', 'slots mode is exact');
is($node->safe_psql('postgres', q{SELECT counter.value('e', 'k')}), '200', 'events mode is exact before compaction');
is($node->safe_psql('postgres', q{SELECT counter.value('b', 'k')}), '300',
	'buffered adds without shared memory are stored and exact');
is($node->safe_psql('postgres', q{SELECT count(*) FROM counter.pending_events e JOIN counter.counters c ON c.id = e.counter_id WHERE c.name = 'b'}),
	'100', 'buffered adds fell back to event rows');
is($node->safe_psql('postgres', 'SELECT count(*) FROM counter.worker_status()'), '0', 'no worker');

ok($node->safe_psql('postgres', 'SELECT counter.compact()') >= 200, 'counter.compact() compacts');
is($node->safe_psql('postgres', 'SELECT count(*) FROM counter.pending_events'), '0', 'no event left');
is($node->safe_psql('postgres', q{SELECT counter.value('e', 'k') || ',' || counter.value('b', 'k')}),
	'200,300', 'values unchanged by compaction');
is($node->safe_psql('postgres', q{SELECT string_agg(drifted_keys::text, ',') FROM counter.verify('e')}),
	'0,0', 'no drift');

$node->safe_psql('postgres', 'DROP EXTENSION counter');
is($node->safe_psql('postgres', $census), $before, 'DROP EXTENSION leaves nothing behind');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_namespace WHERE nspname = 'counter'}), '0', 'schema gone');

# and installs again cleanly
$node->safe_psql('postgres', 'CREATE EXTENSION counter; DROP EXTENSION counter');
is($node->safe_psql('postgres', $census), $before, 'a second install and drop leaves nothing either');

$node->stop;
done_testing();
