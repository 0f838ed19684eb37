# Shared set-up of the TAP tests of the counter extension.
package CounterTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use IPC::Run;
use Test::More ();

our @EXPORT = qw(counter_node counter_mesh_node counter_conninfo
  counter_pgbench_start counter_pgbench_finish counter_crash_restarted
  psql_session session_query);

# counter_node(name, extra postgresql.conf text, init options): an
# initialized, started node with the library preloaded and counter.naptime
# = '50ms'; later lines of the extra text override these.  The options go
# to init (allows_streaming => 1 for a primary).
sub counter_node
{
	my ($name, $conf, %init) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);

	$node->init(%init);
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'counter'\ncounter.naptime = '50ms'\n"
		  . ($conf // ''));
	$node->start;
	return $node;
}

# the settings of a node of an add_node() mesh, in the order written; the
# extra settings of counter_mesh_node replace these or come after them
my @mesh_conf = (
	wal_level => 'logical',
	max_worker_processes => 16,
	max_replication_slots => 8,
	max_wal_senders => 8,
	max_logical_replication_workers => 8,
	wal_retrieve_retry_interval => '500ms');

# counter_mesh_node(name, id, db, setting => value...): a counter_node ready
# for add_node() (logical WAL, room for a few peers' replication; id undef
# leaves counter.node_id unset), its counter.node_conninfo set to itself
# and reloaded, so every mesh test configures its nodes one way.
sub counter_mesh_node
{
	my ($name, $id, $db, %extra) = @_;
	my %default = @mesh_conf;
	my %conf = (%default, %extra);
	my @order = map { $mesh_conf[ 2 * $_ ] } 0 .. @mesh_conf / 2 - 1;
	push @order, sort grep { !exists $default{$_} } keys %extra;
	my $node = counter_node($name,
		(defined $id ? "counter.node_id = $id\n" : '')
		  . join('', map { "$_ = '$conf{$_}'\n" } @order));
	$node->append_conf('postgresql.conf',
		"counter.node_conninfo = '" . counter_conninfo($node, $db) . "'\n");
	$node->reload;
	return $node;
}

# counter_conninfo(node, db): the libpq conninfo of db on node, as the mesh
# functions (add_node, counter.node_conninfo) take it.
sub counter_conninfo
{
	my ($node, $db) = @_;
	return 'host=' . $node->host . ' port=' . $node->port . " dbname=$db";
}

# counter_pgbench_start(node, db, script, clients, secs, jobs): pgbench of
# script on node in the background, for counter_pgbench_finish.
sub counter_pgbench_start
{
	my ($node, $db, $script, $clients, $secs, $jobs) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'pgbench', '-n', '-f', $script, '-c', $clients, '-j', $jobs, '-T', $secs,
		  $node->connstr($db) ],
		'>', \$out, '2>', \$err);
	return { name => $node->name, h => $h, out => \$out, err => \$err };
}

# counter_pgbench_finish(run, label): waits for the run and asserts that
# its load ran (exit 0, transactions > 0); returns the transaction count.
sub counter_pgbench_finish
{
	my ($run, $label) = @_;
	$run->{h}->finish;
	my ($n) = ${ $run->{out} } =~ m{actually processed: (\d+)};
	Test::More::ok($? == 0 && $n && $n > 0,
		(defined $label ? "$label " : '') . "pgbench on $run->{name}: exit 0, "
		  . ($n // 0) . ' transactions')
	  or Test::More::diag(${ $run->{out} } . ${ $run->{err} });
	return $n;
}

# counter_crash_restarted(node, log offset): waits until the postmaster,
# after a process of node was killed, has reinitialized and finished crash
# recovery (its log since the offset says both), so that what comes next
# connects: a psql started while the node is in recovery mode exits before
# reading its query, and IPC::Run dies on the broken pipe.  Dies on timeout.
sub counter_crash_restarted
{
	my ($node, $offset) = @_;
	$node->wait_for_log(
		qr/all server processes terminated; reinitializing.*database system is ready to accept connections/s,
		$offset);
	return 1;
}

# psql_session(connstr): a psql session of our own, kept open, for
# session_query; it prints the notifications that arrive for it.
sub psql_session
{
	my ($connstr) = @_;
	my %s = (in => '', out => '', err => '', n => 0);
	$s{h} = IPC::Run::start([ 'psql', '-XAtq', '-d', $connstr ],
		'<', \$s{in}, '>', \$s{out}, '2>', \$s{err}, IPC::Run::timeout(170));
	return \%s;
}

# session_query(session, sql): run sql in the session; returns what it
# printed (the notifications that arrived with it included) and its errors.
sub session_query
{
	my ($s, $sql) = @_;
	my $marker = 'done-' . ++$s->{n};
	$s->{in} .= "$sql\n\\echo $marker\n";
	$s->{h}->pump until $s->{out} =~ /^\Q$marker\E$/m;
	my ($text) = $s->{out} =~ /\A(.*?)^\Q$marker\E\n/ms;
	$s->{out} =~ s/\A.*?^\Q$marker\E\n//ms;
	my $err = $s->{err};
	$s->{err} = '';
	return ($text, $err);
}

1;
