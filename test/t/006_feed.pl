# Proves the change feed: the worker NOTIFYs the private channel of each counter (counter.channel(), random: a guessed counter_<name> receives nothing) with well-formed JSON arrays of {counter, key, updated_at, value} (updated_at an ISO time), the last value notified for every changed key (slots and events) equals its final value, adds themselves never notify (not even to the adding session), under 16 clients x 2000 adds there are far fewer notifications than adds and per-key values never go backwards, payloads stay under the NOTIFY limit however long the keys, and a role whose read right is revoked stops receiving at once (the channel is rotated; the old one gets one empty array) while readers follow on the new channel.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use CounterTest;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep time);

my $db = 'postgres';

my $node = counter_node('feed', qq(
counter.notify_interval = '200ms'
max_connections = 40
));
my $basedir = $node->basedir;

$node->safe_psql(
	$db, q(
CREATE EXTENSION counter;
SELECT counter.create('c', feed => true);
SELECT counter.create('e', mode => 'events', feed => true);
SELECT counter.create('long', mode => 'events', feed => true);
));

sub q1 { return $node->safe_psql($db, $_[0]); }

# counter => its feed channel now; and every channel it has had
my %chan = map { split /\|/ } split /\n/,
  q1("SELECT name || '|' || counter.channel(name) FROM counter.list()");
my %had = map { ($_ => [ $chan{$_} ]) } keys %chan;
my @rotations;    # channels that got the empty array of a rotation

###
### A psql session of our own: LISTENs, and prints the notifications that
### arrived after each statement it runs.
###
my $sess = psql_session($node->connstr($db));

my @notes;       # every notification: { channel, pid, payload, items }
my @malformed;   # descriptions of payloads that are not what they must be
my %last;        # "counter|key" => last notified value
my %history;     # "counter|key" => [values in order]

# Run sql in the session; collect the notifications printed with it.
sub listen_query
{
	my ($text, $err) = session_query($sess, $_[0]);
	die "listener error: $err" if $err ne '';
	my $rest = '';
	foreach my $line (split /\n/, $text)
	{
		if ($line =~
			/^Asynchronous notification "([^"]+)" with payload "(.*)" received from server process with PID (\d+)\.$/
		  )
		{
			add_note($1, $2, $3);
		}
		else
		{
			$rest .= "$line\n";
		}
	}
	return $rest;
}

sub add_note
{
	my ($channel, $payload, $pid) = @_;
	my $items = eval { decode_json($payload) };
	my $n = { channel => $channel, pid => $pid, payload => $payload, items => $items };
	push @notes, $n;
	my $where = "notification " . scalar(@notes) . " on $channel";
	push @malformed, "$where: payload of " . length($payload) . ' bytes'
	  if length($payload) >= 8000;
	if ($payload eq '[]')
	{
		push @rotations, $channel;
		return;
	}
	if (ref($items) ne 'ARRAY' || !@$items)
	{
		push @malformed, "$where: not a non-empty JSON array: " . substr($payload, 0, 200);
		return;
	}
	my %seen;
	foreach my $o (@$items)
	{
		if (ref($o) ne 'HASH'
			|| join(',', sort keys %$o) ne 'counter,key,updated_at,value'
			|| ($o->{updated_at} // '') !~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/
			|| !(grep { $_ eq $channel } @{ $had{ $o->{counter} // "" } // [] })
			|| ref(\$o->{key}) ne 'SCALAR'
			|| ($o->{value} // '') !~ /^-?\d+$/)
		{
			push @malformed, "$where: bad element " . encode_json($o);
			next;
		}
		push @malformed, "$where: key $o->{key} twice" if $seen{ $o->{key} }++;
		my $k = "$o->{counter}|$o->{key}";
		$last{$k} = $o->{value};
		push @{ $history{$k} }, $o->{value};
	}
}

# Poll (bounded) until the last notified value of every "counter|key" of
# %$expected equals it; returns whether it did.
sub wait_for_values
{
	my ($expected, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	while (time() < $deadline)
	{
		listen_query('SELECT 1;');
		return 1
		  unless grep { ($last{$_} // 'none') ne $expected->{$_} } keys %$expected;
		usleep(50_000);
	}
	my @missed = grep { ($last{$_} // 'none') ne $expected->{$_} } sort keys %$expected;
	diag scalar(@missed) . ' keys not (yet) notified with their value; last notified vs expected: '
	  . join(', ',
		map { (length > 40 ? substr($_, 0, 40) . '...' : $_) . ': ' . ($last{$_} // 'none') . " vs $expected->{$_}" }
		  @missed[ 0 .. ($#missed < 4 ? $#missed : 4) ]);
	return 0;
}

# exact values of counter|key pairs, as counter.value reads them now
sub values_of
{
	my (@ck) = @_;
	my %v;
	foreach my $ck (@ck)
	{
		my ($c, $k) = split /\|/, $ck, 2;
		(my $lit = $k) =~ s/'/''/g;
		$v{$ck} = q1("SELECT counter.value('$c', '$lit')");
	}
	return \%v;
}

like($chan{c}, qr/^counter_[0-9a-f]{32}$/, 'a counter\'s channel is counter_ and 32 random hex digits');
listen_query("LISTEN $chan{c}; LISTEN $chan{e}; LISTEN $chan{long}; LISTEN counter_c; LISTEN counter_e;");
my $worker_sql =
  "SELECT pid FROM pg_stat_activity WHERE backend_type = 'counter worker' AND datname = '$db'";
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM ($worker_sql) w"), 'the counter worker runs');
my $worker = q1($worker_sql);

###
### 1. A few adds: the last notification of each changed key has its value
###
my $qkey = "q\"\\\tx";    # a key that needs JSON escaping: q"\<tab>x
q1(q(
SELECT counter.add('c', 'a', 3);
SELECT counter.add('c', 'b', 5);
SELECT counter.add('c', 'b', -2);
SELECT counter.add('c', 'q"\' || chr(9) || 'x', 4);
SELECT counter.add('e', 'a', 7);
SELECT counter.add('e', 'b', 1);
SELECT counter.add('e', 'b', 1);
SELECT counter.add_many('e', ARRAY['m1', 'm2', 'm1'], ARRAY[1, 2, 3]);
));
my @changed = ('c|a', 'c|b', "c|$qkey", 'e|a', 'e|b', 'e|m1', 'e|m2');
my $exp = values_of(@changed);
is(join(',', map { $exp->{$_} } @changed), '3,3,4,7,2,4,2', 'the adds give the expected values');
ok(wait_for_values($exp), 'each changed key\'s last notified value is its value');
is(join(',', sort keys %last), join(',', sort @changed), 'exactly the changed keys were notified');
is(join('; ', @malformed), '', 'every payload is a JSON array of {counter, key, value}, under 8000 bytes');
is(join(',', map { $_->{pid} } grep { $_->{pid} != $worker } @notes),
	'', "all notifications came from the counter worker (pid $worker)");
note scalar(@notes) . ' notifications so far';

###
### 2. Adds never notify: with compaction held off (its advisory lock is
###    taken), adds by the listening session itself and by another session
###    bring no notification; once released, the worker's does
###
my $hold = $node->background_psql($db);
# the compaction lock: COMPACT_LOCK_KEY1/2 of src/compact.c ("coun", "ter")
$hold->query_safe('SELECT pg_advisory_lock(1668248942, 1952805376)');
listen_query(q(
SELECT counter.add('c', 'fresh', 1);
SELECT counter.add('e', 'fresh', 2);
));
q1("SELECT counter.add('c', 'fresh2', 5); SELECT counter.add('e', 'fresh2', 6);");
listen_query('SELECT 1;');
# all four are events: slots counter c's uncontended keys too (1.4)
is(q1("SELECT count(*) FROM counter.pending_events WHERE key LIKE 'fresh%'"),
	'4', 'the events of these adds are still uncompacted');
my @fresh = grep { /\|fresh/ } keys %last;
is(join(',', @fresh), '', 'no notification for keys that were only added to (self or other session)');
$hold->query_safe('SELECT pg_advisory_unlock(1668248942, 1952805376)');
$hold->quit;
ok( wait_for_values(
		{ 'c|fresh' => 1, 'e|fresh' => 2, 'c|fresh2' => 5, 'e|fresh2' => 6 }),
	'after compaction resumes, the worker notifies their values');

###
### 3. Under load: 16 clients x 2000 adds on 5 keys of each counter
###
my %load_keys = map { ("c|L$_" => 1, "e|L$_" => 1) } 0 .. 4;
my %scripts = (
	c => q(\set k random(0, 4)
SELECT counter.add('c', 'L' || :k, 1);
),
	e => q(\set k random(0, 4)
SELECT counter.add('e', 'L' || :k, 1);
));
my @files;
foreach my $s (sort keys %scripts)
{
	append_to_file("$basedir/load-$s.sql", $scripts{$s});
	push @files, '-f', "$basedir/load-$s.sql";
}
my ($out, $err) = ('', '');
my $first_load_note = scalar @notes;
my $pgbench;
{
	local $ENV{PGAPPNAME} = 'pgbench';
	$pgbench = IPC::Run::start(
		[
			'pgbench', '-n', '-c', 16, '-j', 2, '-t', 2000, @files,
			'-h', $node->host, '-p', $node->port, $db
		],
		'>', \$out, '2>', \$err, IPC::Run::timeout(120));
}
# keep reading notifications while the load runs
my $timed_out = 0;
while (1)
{
	# pump dies when the timer expires (and then finish would not notice)
	$timed_out = 1, last unless eval { $pgbench->pump_nb; 1 };
	last unless $pgbench->pumpable;
	listen_query('SELECT 1;');
	usleep(50_000);
}
my $finished = $timed_out ? undef : eval { $pgbench->finish };
$pgbench->kill_kill unless defined $finished;
ok($finished, 'load: pgbench exit status 0 (within the time limit)')
  or diag "pgbench stdout:\n$out\nstderr:\n$err";
like($out, qr/number of transactions actually processed: 32000\/32000/, 'load: 32000 adds');

$exp = values_of(sort keys %load_keys);
my $sum = 0;
$sum += $_ for values %$exp;
is($sum, 32000, 'load: the 10 keys add up to 32000');
ok(wait_for_values($exp), 'load: each key\'s last notified value is its final value');

my @load_notes = @notes[ $first_load_note .. $#notes ];
note 'load: ' . scalar(@load_notes) . ' notifications for 32000 adds ('
  . scalar(grep { $_->{channel} eq $chan{c} } @load_notes) . ' on the channel of c, '
  . scalar(grep { $_->{channel} eq $chan{e} } @load_notes) . ' on that of e)';
cmp_ok(scalar(@load_notes), '<', 32000 / 10,
	'load: far fewer notifications than adds (no notification per add)');
cmp_ok(scalar(@load_notes), '>', 0, 'load: notifications did arrive');
my @backwards;
foreach my $k (sort keys %load_keys)
{
	my @h = @{ $history{$k} // [] };
	for my $i (1 .. $#h)
	{
		push @backwards, "$k: $h[$i-1] then $h[$i]" if $h[$i] < $h[ $i - 1 ];
	}
}
is(join('; ', @backwards), '', 'load: notified values of a key never go backwards (adds were all +1)');
is(join(',', map { $_->{pid} } grep { $_->{pid} != $worker } @load_notes),
	'', 'load: all notifications came from the counter worker');

###
### 4. Long keys: payloads are split under the 8000-byte NOTIFY limit.  40
###    keys of 1000 bytes whose JSON elements are 1339 bytes each (297 quotes
###    escaped), compacted in one batch.
###
my $long_sql = q(SELECT array_agg(lpad(i::text, 4, '0') || repeat('"', 297) || repeat('x', 699))
  FROM generate_series(1, 40) i);
q1("SELECT counter.add_many('long', ($long_sql))");
my %long_exp =
  map { ('long|' . sprintf('%04d', $_) . ('"' x 297) . ('x' x 699) => 1) } 1 .. 40;
ok(wait_for_values(\%long_exp, 15), 'long keys: all 40 keys notified with their values');
my ($lret, $lout, $lerr) = $node->psql($db,
	"SELECT counter.add_many('long', ($long_sql)); SELECT counter.compact('long');");
is("$lret $lerr", '0 ', 'long keys: counter.compact() succeeds (its flush fits the NOTIFY limit)');
$_ = 2 for values %long_exp;
ok(wait_for_values(\%long_exp, 15), 'long keys: the second round is notified too');
is(join('; ', @malformed), '',
	'every payload of the whole test is a JSON array of {counter, key, value}, under 8000 bytes');
my @worker_errors = grep { /payload string too long/ } split /\n/, slurp_file($node->logfile);
is(scalar(@worker_errors), 0, 'no NOTIFY failed in the server log')
  or diag $worker_errors[0];

###
### 5. A private feed: eve, granted read, follows the channel counter.channel()
###    tells her; once her right is revoked the feed moves to a new channel:
###    she receives nothing more (re-LISTENing the old one does not help),
###    while the readers that ask counter.channel() again follow it
###
q1("CREATE ROLE eve LOGIN; SELECT counter.grant('c', 'eve', 'read');");
my $eve = psql_session($node->connstr($db) . ' user=eve');

# Run sql as eve; return what it printed (notifications included), and its errors.
sub eve_query { return session_query($eve, $_[0]); }

my ($eve_out, $eve_err) = eve_query("SELECT counter.channel('c');");
is($eve_out, "$chan{c}\n", 'eve, granted read, is told the channel of c');
eve_query("LISTEN $chan{c}; LISTEN counter_c;");
q1("SELECT counter.add('c', 'private', 1); SELECT counter.compact('c');");
my $eve_seen = '';
for (my $i = 0; $i < 600 && $eve_seen !~ /"private", "updated_at" : "[^"]+", "value" : 1\}/; $i++)
{
	$eve_seen .= (eve_query('SELECT 1;'))[0];
	usleep(50_000);
}
like($eve_seen, qr/^Asynchronous notification "\Q$chan{c}\E" with payload .*"private", "updated_at" : "[^"]+", "value" : 1\}/m,
	'eve receives the feed of c on its channel');
unlike($eve_seen, qr/notification "counter_c"/, 'nothing arrives on the guessed channel counter_c');

my $old = $chan{c};
q1("SELECT counter.revoke('c', 'eve', 'read')");
$chan{c} = q1("SELECT counter.channel('c')");
push @{ $had{c} }, $chan{c};
isnt($chan{c}, $old, 'the revoke gave c a new channel');
($eve_out, $eve_err) = eve_query("SELECT counter.channel('c');");
like($eve_err, qr/permission denied for counter "c"/, 'eve is told the channel no longer');
eve_query("UNLISTEN *; LISTEN $old; LISTEN counter_c;");
listen_query("LISTEN $chan{c};");
q1("SELECT counter.add('c', 'private', 1); SELECT counter.compact('c');");
ok(wait_for_values({ 'c|private' => 2 }), 'a reader on the new channel receives the new value');
is(join(',', grep { $_ eq $old } @rotations), $old, 'the old channel got one empty array: ask again');
# every notification sent so far was queued before this statement of eve's
($eve_out) = eve_query('SELECT 1;');
my @eve_values = grep { /^Asynchronous notification/ && !/with payload "\[\]"/ } split /\n/, $eve_out;
is(join("\n", @eve_values), '', 'eve, revoked, receives no value any more (re-LISTENing the old channel does not help)');
$eve->{in} .= "\\q\n";
$eve->{h}->finish;

note 'notifications in all: ' . scalar(@notes);
$sess->{in} .= "\\q\n";
$sess->{h}->finish;
$node->stop;
done_testing();
