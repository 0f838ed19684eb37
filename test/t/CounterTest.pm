# Shared set-up of the TAP tests of the counter extension.
package CounterTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(counter_node);

# counter_node(name, extra postgresql.conf text): an initialized, started
# node with the library preloaded and counter.naptime = '50ms'; later lines
# of the extra text override these.
sub counter_node
{
	my ($name, $conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);

	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'counter'\ncounter.naptime = '50ms'\n"
		  . ($conf // ''));
	$node->start;
	return $node;
}

1;
