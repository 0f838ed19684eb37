# counter: PGXS build.  Targets: all install installcheck test demo bench soak fuzz clean
MODULE_big = counter
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
EXTENSION = counter
DATA = $(sort $(wildcard counter--*.sql))
PGFILEDESC = "counter - exact counters under contention"

PG_CPPFLAGS = -I$(srcdir)/src -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)
PG_CFLAGS = -Wall -Werror

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-config=test/counter.conf --temp-instance=tmp_check_regress
ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=output_iso --temp-config=test/counter.conf --temp-instance=tmp_check_iso
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl
EXTRA_CLEAN = tmp_check_regress tmp_check_iso output_iso test/bench/results/*.tmp

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: every object depends on our headers.
$(OBJS): $(wildcard src/*.h)

.PHONY: test demo example bench soak fuzz deps
deps:
	@test/setup.sh deps

# Full suite as CI runs it: installs what is missing, builds, installs, then
# runs pg_regress, isolation and TAP tests as an unprivileged user.
test:
	@test/setup.sh test

demo:
	@test/setup.sh demo

# The likes service of examples/likes on a scratch cluster (Node.js).
example:
	@examples/likes/run.sh

bench:
	@test/setup.sh bench

# Long runs, kept out of "make test": a 10-minute mixed load checked
# against a ledger, and the type's input functions under libFuzzer.
soak:
	@test/setup.sh soak

fuzz:
	@test/setup.sh fuzz
