# Shared set-up of the TAP tests of the counter extension.
package CounterTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use IPC::Run;

our @EXPORT = qw(counter_node psql_session session_query);

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
