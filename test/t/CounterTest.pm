# Shared set-up of the TAP tests of the counter extension.
package CounterTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(counter_node);

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

1;
