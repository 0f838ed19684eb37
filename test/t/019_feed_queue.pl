# Proves the feed option and the NOTIFY queue limit (1.4): a counter created without feed sends nothing (a listener on its channel receives nothing) while one with feed => true does; counter.alter(feed => ...) turns it on and off; existing counters keep their feed over the update to 1.4; and with a listener that holds a transaction open (so that the queue cannot advance) and counter.feed_queue_limit below the queue's real usage, counter.compact() still succeeds, values stay exact, the dropped entries are counted in counter.stats.feed_dropped, one WARNING is logged, and under the limit again the feed flows again.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;
use Time::HiRes qw(usleep time);

my $db = 'postgres';

# no worker: every compaction and flush below is a counter.compact() call
my $node = counter_node('feed_queue', qq(
counter.worker_enabled = off
));

sub q1 { return $node->safe_psql($db, $_[0]); }

###
### 0. Existing counters keep their feed over the update to 1.4
###
q1(q(
CREATE EXTENSION counter VERSION '1.3';
SELECT counter.create('old');
ALTER EXTENSION counter UPDATE TO '1.4';
SELECT counter.create('off');
SELECT counter.create('on', feed => true);
SELECT counter.create('toggled', mode => 'events');
));
is(q1("SELECT string_agg(name || '=' || feed, ',' ORDER BY name) FROM counter.stats"),
	'off=false,old=true,on=true,toggled=false',
	'a counter of 1.3 keeps its feed; a new one has none unless created with feed => true');
q1("SELECT counter.alter('toggled', feed => true)");
is(q1("SELECT feed FROM counter.stats WHERE name = 'toggled'"), 't', 'counter.alter(feed => true) turns it on');

my %chan = map { split /\|/ } split /\n/,
  q1("SELECT name || '|' || counter.channel(name) FROM counter.list()");

###
### A psql session of our own: LISTENs, and returns the notifications that
### arrived after each statement it runs.
###
my $sess = psql_session($node->connstr($db));

# Run sql in the session; return the payloads of the notifications printed
# with it, by counter (or by channel, for another one).
sub listen_query
{
	my ($text, $err) = session_query($sess, $_[0]);
	die "listener error: $err" if $err ne '';
	my %by;
	foreach my $line (split /\n/, $text)
	{
		$by{$1} .= $2
		  if $line =~ /^Asynchronous notification "([^"]+)" with payload "(.*)" received/;
	}
	return { map { my $c = $_; (((grep { $chan{$_} eq $c } keys %chan)[0] // $c) => $by{$c}) } keys %by };
}

listen_query(join(' ', map { "LISTEN $chan{$_};" } sort keys %chan));

# add to key k of every counter, compact; the feed that then arrives
sub round
{
	my ($k) = @_;
	q1(join(' ', map { "SELECT counter.add('$_', '$k', 1);" } sort keys %chan)
		  . ' SELECT counter.compact();');
	my $got = {};
	# counter.compact() notifies at its commit: the listener has it after its next statement
	for (my $i = 0; $i < 20 && !%$got; $i++)
	{
		$got = listen_query('SELECT 1;');
		usleep(50_000) unless %$got;
	}
	return $got;
}

###
### 1. Only the counters with feed notify
###
my $got = round('a');
is(join(',', sort keys %$got), 'old,on,toggled', 'the counters with feed notify; the one without sends nothing');
like($got->{on} // '', qr/"key" : "a", "updated_at" : "[^"]+", "value" : 1\}/, 'the feed carries the value');
q1("SELECT counter.alter('on', feed => false); SELECT counter.alter('toggled', feed => false)");
$got = round('b');
is(join(',', sort keys %$got), 'old', 'counter.alter(feed => false) stops the feed at once');
is(q1("SELECT string_agg(name || '=' || counter.value(name, 'b'), ',' ORDER BY name) FROM counter.list()"),
	'off=1,old=1,on=1,toggled=1', 'compaction without feed moves the values all the same');
q1("SELECT counter.alter('on', feed => true)");

###
### 2. A listener that holds a transaction open: the queue cannot advance
###    past what it has not read.  Fill a few pages of it; with the limit
###    below that usage, compaction drops its feed, warns and goes on.
###
my $stuck = $node->background_psql($db);
$stuck->query_safe('LISTEN anything');
$stuck->query_safe('BEGIN');
$stuck->query_safe('SELECT 1');
q1("SELECT pg_notify('filler', i || repeat('x', 7000)) FROM generate_series(1, 10) i");
my $usage = q1('SELECT pg_notification_queue_usage()');
cmp_ok($usage, '>', 1e-7, "the stuck listener holds the queue: usage $usage");
q1("ALTER SYSTEM SET counter.feed_queue_limit = 1e-7; SELECT pg_reload_conf()");
ok($node->poll_query_until($db, "SELECT current_setting('counter.feed_queue_limit')::float8 < 1e-6"),
	'the limit is in force');
listen_query('SELECT 1;');    # the filler, read by this listener

my $log_start = -s $node->logfile;
my ($ret, $out, $err) = $node->psql($db,
	"SELECT counter.add('on', 'k' || i, i) FROM generate_series(1, 5) i;"
	  . " SELECT counter.add('old', 'k1', 7); SELECT counter.add('off', 'k1', 9);"
	  . " SELECT counter.compact() > 0;");
is($ret, 0, 'counter.compact() succeeds with the queue over the limit');
like($out, qr/^t\z/m, 'and moves what was added');
my @warnings = $err =~ /WARNING:  counter: the change feed of \d+ keys is dropped/g;
is(scalar(@warnings), 1, 'one WARNING for the round') or diag $err;
like(substr(slurp_file($node->logfile), $log_start),
	qr/WARNING:  counter: the change feed of 6 keys is dropped: the NOTIFY queue is [0-9.]+% full/,
	'the WARNING is in the server log, with the keys it dropped');
is(q1("SELECT string_agg(name || '=' || feed_dropped, ',' ORDER BY name) FROM counter.stats"),
	'off=0,old=1,on=5,toggled=0', 'the dropped entries are counted per counter in counter.stats');
is(q1("SELECT sum(counter.value('on', 'k' || i)) FROM generate_series(1, 5) i"),
	'15', 'the values are exact');
is(q1("SELECT count(*) FROM counter.pending_events"), '0', 'and compacted (no event pending)');
$got = listen_query('SELECT 1;');
is(join(',', sort keys %$got), '', 'nothing was queued for the dropped feed');

###
### 3. Under the limit again (the default, 0.5), the feed flows again
###
$stuck->query_safe('COMMIT');
$stuck->quit;
q1("ALTER SYSTEM RESET counter.feed_queue_limit; SELECT pg_reload_conf()");
ok($node->poll_query_until($db, "SELECT current_setting('counter.feed_queue_limit')::float8 = 0.5"),
	'the default limit is in force');
$got = round('c');
is(join(',', sort keys %$got), 'old,on', 'the feed flows again');
is(q1("SELECT sum(feed_dropped) FROM counter.stats"), '6', 'nothing more was dropped');

$sess->{in} .= "\\q\n";
$sess->{h}->finish;
$node->stop;
done_testing();
