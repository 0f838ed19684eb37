-- counter.sharded_counter: the state of a PN-counter (per shard: total
-- incremented, total decremented).  Objects defined in src/type.c.
-- Must be pasted in this order: shell type, I/O functions, full type, rest.

CREATE TYPE counter.sharded_counter;

CREATE FUNCTION counter.sharded_counter_in(pg_catalog.cstring)
	RETURNS counter.sharded_counter
	AS 'MODULE_PATHNAME', 'sharded_counter_in'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_out(counter.sharded_counter)
	RETURNS pg_catalog.cstring
	AS 'MODULE_PATHNAME', 'sharded_counter_out'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_recv(pg_catalog.internal)
	RETURNS counter.sharded_counter
	AS 'MODULE_PATHNAME', 'sharded_counter_recv'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_send(counter.sharded_counter)
	RETURNS pg_catalog.bytea
	AS 'MODULE_PATHNAME', 'sharded_counter_send'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE counter.sharded_counter (
	INPUT = counter.sharded_counter_in,
	OUTPUT = counter.sharded_counter_out,
	RECEIVE = counter.sharded_counter_recv,
	SEND = counter.sharded_counter_send,
	INTERNALLENGTH = VARIABLE,
	ALIGNMENT = double,
	STORAGE = extended
);

COMMENT ON TYPE counter.sharded_counter IS
	'PN-counter state: per shard the total incremented and the total decremented, e.g. {1:+15-3,7:+4}';

-- Sum over shards of (incremented - decremented); error if outside int8.
CREATE FUNCTION counter.value(counter.sharded_counter)
	RETURNS pg_catalog.int8
	AS 'MODULE_PATHNAME', 'sharded_counter_get_value'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Exact value as numeric, never overflows; used by the cast to numeric.
CREATE FUNCTION counter.sharded_counter_to_numeric(counter.sharded_counter)
	RETURNS pg_catalog.numeric
	AS 'MODULE_PATHNAME', 'sharded_counter_to_numeric'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- PN-counter join: union of shards, per shard max of each total.
CREATE FUNCTION counter.merge(a counter.sharded_counter, b counter.sharded_counter)
	RETURNS counter.sharded_counter
	AS 'MODULE_PATHNAME', 'sharded_counter_merge'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Join of all non-NULL rows.  Over zero rows the result is '{}', the
-- identity of the join (the state nobody has touched, value 0), so that
-- merge() always yields a usable state, like count() and unlike sum().
CREATE AGGREGATE counter.merge(counter.sharded_counter) (
	SFUNC = counter.merge,
	STYPE = counter.sharded_counter,
	COMBINEFUNC = counter.merge,
	INITCOND = '{}',
	PARALLEL = SAFE
);

-- New state with delta added to one shard (delta < 0 counts as a decrement).
CREATE FUNCTION counter.increment(sc counter.sharded_counter, shard pg_catalog.int4, delta pg_catalog.int8)
	RETURNS counter.sharded_counter
	AS 'MODULE_PATHNAME', 'sharded_counter_increment'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- One row per shard, for inspection.
CREATE FUNCTION counter.shards(counter.sharded_counter)
	RETURNS TABLE(shard pg_catalog.int4, incremented pg_catalog.int8, decremented pg_catalog.int8)
	AS 'MODULE_PATHNAME', 'sharded_counter_shards'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
	ROWS 10;

-- Comparison by value: states with equal values compare equal.
CREATE FUNCTION counter.sharded_counter_lt(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_lt'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_le(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_le'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_eq(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_eq'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_ne(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_ne'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_ge(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_ge'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_gt(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_gt'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_cmp(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.int4
	AS 'MODULE_PATHNAME', 'sharded_counter_cmp'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR counter.< (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_lt,
	COMMUTATOR = OPERATOR(counter.>),
	NEGATOR = OPERATOR(counter.>=),
	RESTRICT = pg_catalog.scalarltsel,
	JOIN = pg_catalog.scalarltjoinsel
);

CREATE OPERATOR counter.<= (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_le,
	COMMUTATOR = OPERATOR(counter.>=),
	NEGATOR = OPERATOR(counter.>),
	RESTRICT = pg_catalog.scalarlesel,
	JOIN = pg_catalog.scalarlejoinsel
);

CREATE OPERATOR counter.= (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_eq,
	COMMUTATOR = OPERATOR(counter.=),
	NEGATOR = OPERATOR(counter.<>),
	RESTRICT = pg_catalog.eqsel,
	JOIN = pg_catalog.eqjoinsel,
	MERGES
);

CREATE OPERATOR counter.<> (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_ne,
	COMMUTATOR = OPERATOR(counter.<>),
	NEGATOR = OPERATOR(counter.=),
	RESTRICT = pg_catalog.neqsel,
	JOIN = pg_catalog.neqjoinsel
);

CREATE OPERATOR counter.>= (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_ge,
	COMMUTATOR = OPERATOR(counter.<=),
	NEGATOR = OPERATOR(counter.<),
	RESTRICT = pg_catalog.scalargesel,
	JOIN = pg_catalog.scalargejoinsel
);

CREATE OPERATOR counter.> (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_gt,
	COMMUTATOR = OPERATOR(counter.<),
	NEGATOR = OPERATOR(counter.<=),
	RESTRICT = pg_catalog.scalargtsel,
	JOIN = pg_catalog.scalargtjoinsel
);

-- Btree by value.  No equalimage support function on purpose: equal values
-- need not have equal bytes, so btree deduplication must stay off.
CREATE OPERATOR CLASS counter.sharded_counter_ops
	DEFAULT FOR TYPE counter.sharded_counter USING btree AS
		OPERATOR 1 counter.<,
		OPERATOR 2 counter.<=,
		OPERATOR 3 counter.=,
		OPERATOR 4 counter.>=,
		OPERATOR 5 counter.>,
		FUNCTION 1 counter.sharded_counter_cmp(counter.sharded_counter, counter.sharded_counter);

-- Explicit casts to the value; deliberately no "+" operator (merge is not addition).
CREATE CAST (counter.sharded_counter AS pg_catalog.int8)
	WITH FUNCTION counter.value(counter.sharded_counter);

CREATE CAST (counter.sharded_counter AS pg_catalog.numeric)
	WITH FUNCTION counter.sharded_counter_to_numeric(counter.sharded_counter);
