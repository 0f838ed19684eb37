-- Proves counter.sharded_counter: strict text and binary input (every malformed case shows its SQLSTATE and message), canonical output, value and casts, merge laws and the merge aggregate, increment, shards(), comparison by value and btree index use.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;

-- try(sql): run a query, return 'ok: <first column>' or 'SQLSTATE: message DETAIL: detail'.
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	res text;
	st text;
	msg text;
	det text;
BEGIN
	EXECUTE sql INTO res;
	RETURN 'ok: ' || coalesce(res, 'NULL');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL;
	RETURN st || ': ' || msg || CASE WHEN det <> '' THEN ' DETAIL: ' || det ELSE '' END;
END
$$;

--
-- Text input: valid forms and their canonical output.
--
SELECT n, input, input::counter.sharded_counter AS canonical,
       counter.value(input::counter.sharded_counter) AS value
FROM (VALUES
	(1, '{}'),
	(2, '  {  }  '),
	(3, '{0:+0}'),
	(4, '{5:+0}'),
	(5, '{3:-2}'),
	(6, '{3:+0-2}'),
	(7, '{1:+15-3,7:+4}'),
	(8, ' { 1 : +15 -3 , 7 : +4 } '),
	(9, E'\t{\n1:+1\r\n,2:-1\f}\n'),
	(10, '{007:+0010-000}'),
	(11, '{0:+1,1:+1,2147483647:+1}'),
	(12, '{2147483647:+9223372036854775807-9223372036854775807}'),
	(13, '{1:-9223372036854775807,2:-1}'),
	(14, '{1:+00000000000000000000000000000000000001}')
) AS t(n, input)
ORDER BY n;

-- Output is canonical: it reads back to the same text.
SELECT count(*) AS checked,
       count(*) FILTER (WHERE c::text::counter.sharded_counter::text <> c::text) AS mismatches
FROM (VALUES ('{}'::counter.sharded_counter), ('{3:+0-2,4:+0,5:+9-1}'),
             ('{2147483647:+9223372036854775807-9223372036854775807}')) AS t(c);

-- NULL in, NULL out.
SELECT NULL::counter.sharded_counter IS NULL AS null_ok;

--
-- Text input: malformed values.  Every one shows SQLSTATE and message.
-- The sign is required ("{1:5}" is rejected): a bare number could be
-- mistaken for a net value.  Negative shard numbers are syntax errors
-- (22P02); numbers too large for int4 (shard) or int8 (totals) are 22003.
--
SELECT n, input, pg_temp.try(format('SELECT %L::counter.sharded_counter::text', input)) AS result
FROM (VALUES
	(1, ''),
	(2, '   '),
	(3, '{'),
	(4, '}'),
	(5, '{,}'),
	(6, '{1}'),
	(7, '{1:}'),
	(8, '{1:+}'),
	(9, '{1:5}'),
	(10, '{a:+1}'),
	(11, '{1:+1,}'),
	(12, '{1:+1 2:+3}'),
	(13, '{1:+1,1:+2}'),
	(14, '{2:+1,1:+2}'),
	(15, '{1:+1,3:+1,2:+1}'),
	(16, '{-1:+1}'),
	(17, '{-0:+1}'),
	(18, '{+1:+1}'),
	(19, '{1:+-5}'),
	(20, '{1:-5+3}'),
	(21, '{1:+1+2}'),
	(22, '{1:-1-2}'),
	(23, '{1:+1-2-3}'),
	(24, '{1:+9223372036854775808}'),
	(25, '{1:-9223372036854775808}'),
	(26, '{1:+1-99999999999999999999999999}'),
	(27, '{2147483648:+1}'),
	(28, '{99999999999999999999:+1}'),
	(29, '{}x'),
	(30, 'x{}'),
	(31, '{1:+1}}'),
	(32, '{{1:+1}'),
	(33, '{1:+1e3}'),
	(34, '{1:+1.5}'),
	(35, '{1.5:+1}'),
	(36, '{1:+0x10}'),
	(37, '{1:+ 1}'),
	(38, '{1:- 1}'),
	(39, '{1;+1}'),
	(40, '{1:+1;2:+2}'),
	(41, '{1:+1,,2:+2}'),
	(42, '{1:+1'),
	(43, '{1:+1,'),
	(44, '{1'),
	(45, '{1:'),
	(46, '{1:+1-'),
	(47, '[1:+1]'),
	(48, '{1:+1,2}'),
	(49, 'null'),
	(50, '{}{}')
) AS t(n, input)
ORDER BY n;

-- The same error as a client sees it.
SELECT '{1:5}'::counter.sharded_counter;

-- 65536 shards are allowed, 65537 are not (54000).
SELECT counter.value(('{' || string_agg(g || ':+1', ',' ORDER BY g) || '}')::counter.sharded_counter) AS value_65536
FROM generate_series(0, 65535) AS g;
SELECT pg_temp.try(format('SELECT %L::counter.sharded_counter::text',
                          '{' || string_agg(g || ':+1', ',' ORDER BY g) || '}')) AS result_65537
FROM generate_series(0, 65536) AS g;

--
-- value(), casts to int8 and numeric.
--
SELECT c, counter.value(c), c::int8 AS as_int8, c::numeric AS as_numeric
FROM (VALUES ('{}'::counter.sharded_counter), ('{1:+15-3,7:+4}'), ('{3:-2}'),
             ('{1:+9223372036854775807,2:+9223372036854775807,3:-9223372036854775807}'),
             ('{1:-9223372036854775807,2:-1}')) AS t(c);
-- Exact numeric even when int8 overflows; value() and ::int8 fail with 22003.
SELECT c::numeric AS exact,
       pg_temp.try(format('SELECT counter.value(%L::counter.sharded_counter)', c)) AS value,
       pg_temp.try(format('SELECT %L::counter.sharded_counter::int8', c)) AS as_int8
FROM (VALUES ('{1:+9223372036854775807,2:+9223372036854775807}'::counter.sharded_counter),
             ('{1:-9223372036854775807,2:-9223372036854775807,3:-2}'),
             ('{1:-9223372036854775807,2:-2}')) AS t(c);
SELECT ('{' || string_agg(g || ':+9223372036854775807', ',' ORDER BY g) || '}')::counter.sharded_counter::numeric AS max_numeric
FROM generate_series(0, 65535) AS g;
-- Casts are explicit only, and there is no "+" operator (merge is not addition).
SELECT pg_temp.try($$SELECT ('{1:+1}'::counter.sharded_counter)::int4$$) AS to_int4;
SELECT pg_temp.try($$SELECT '{1:+1}'::counter.sharded_counter + 1$$) AS plus_int;
SELECT pg_temp.try($$SELECT '{1:+1}'::counter.sharded_counter + '{2:+1}'::counter.sharded_counter$$) AS plus_sc;
SELECT pg_temp.try($$SELECT pg_catalog.abs('{1:+1}'::counter.sharded_counter)$$) AS implicit_int8;

--
-- merge(a, b): the PN-counter join.
--
SELECT counter.merge('{1:+15-3,7:+4}'::counter.sharded_counter, '{1:+10-5,3:+1,9:-2}'::counter.sharded_counter);
SELECT counter.merge('{}'::counter.sharded_counter, '{2:+1}'::counter.sharded_counter),
       counter.merge('{2:+1}'::counter.sharded_counter, '{}'::counter.sharded_counter),
       counter.merge('{5:+0}'::counter.sharded_counter, '{}'::counter.sharded_counter),
       counter.merge(NULL, '{2:+1}'::counter.sharded_counter) IS NULL AS null_strict;
CREATE TEMP TABLE laws (id int, c counter.sharded_counter);
INSERT INTO laws VALUES
	(1, '{}'), (2, '{1:+1}'), (3, '{1:+5-2}'), (4, '{1:+3-7,2:+1}'),
	(5, '{0:-4,2:+8,9:+1-1}'), (6, '{2:+0}'), (7, '{2147483647:+9223372036854775807-9223372036854775807}'),
	(8, '{0:+1,1:+1,2:+1,3:+1}');
-- Compared as text (the exact state), not with "=" (which compares values).
SELECT 'commutative' AS law, count(*) AS checked,
       count(*) FILTER (WHERE counter.merge(a.c, b.c)::text <> counter.merge(b.c, a.c)::text) AS failures
FROM laws a, laws b
UNION ALL
SELECT 'associative', count(*),
       count(*) FILTER (WHERE counter.merge(counter.merge(a.c, b.c), c.c)::text <>
                              counter.merge(a.c, counter.merge(b.c, c.c))::text)
FROM laws a, laws b, laws c
UNION ALL
SELECT 'idempotent', count(*),
       count(*) FILTER (WHERE counter.merge(a.c, a.c)::text <> a.c::text)
FROM laws a
UNION ALL
SELECT 'absorbing', count(*),
       count(*) FILTER (WHERE counter.merge(a.c, counter.merge(a.c, b.c))::text <> counter.merge(a.c, b.c)::text)
FROM laws a, laws b;
-- Merging two disjoint 65536-shard states exceeds the limit.
SELECT pg_temp.try($$
	SELECT counter.merge(
		(SELECT ('{' || string_agg((2 * g) || ':+1', ',' ORDER BY g) || '}')::counter.sharded_counter FROM generate_series(0, 65535) g),
		(SELECT ('{' || string_agg((2 * g + 1) || ':+1', ',' ORDER BY g) || '}')::counter.sharded_counter FROM generate_series(0, 65535) g))::text
$$) AS too_many;

--
-- The merge aggregate.
--
SELECT counter.merge(c) FROM laws;
SELECT counter.merge(c) FROM laws WHERE id IN (2, 3, 4);
SELECT counter.merge(c) AS zero_rows FROM laws WHERE false;
SELECT counter.merge(c) AS only_nulls FROM (VALUES (NULL::counter.sharded_counter)) AS t(c);
SELECT id % 2 AS grp, counter.merge(c) FROM laws GROUP BY 1 ORDER BY 1;
-- Replicas: each replica increments its own shard; the merged state counts everything once.
SELECT counter.value(counter.merge(c)) AS total, counter.merge(c)
FROM (SELECT counter.increment(counter.increment('{}'::counter.sharded_counter, r, 10), r, -3) AS c
      FROM generate_series(1, 4) AS r
      UNION ALL
      SELECT counter.increment('{}'::counter.sharded_counter, 2, 10)) AS replicas;
-- Parallel aggregation uses merge as combine function.
CREATE TABLE sc_type_parallel (c counter.sharded_counter) WITH (parallel_workers = 2);
INSERT INTO sc_type_parallel
SELECT ('{' || (g % 100) || ':+' || g || '-' || (g % 7) || '}')::counter.sharded_counter
FROM generate_series(1, 20000) AS g;
ANALYZE sc_type_parallel;
BEGIN;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT counter.merge(c) FROM sc_type_parallel;
SELECT counter.value(counter.merge(c)) AS parallel_value, count(*) FROM sc_type_parallel;
COMMIT;
SELECT counter.value(counter.merge(c)) AS serial_value FROM sc_type_parallel;
DROP TABLE sc_type_parallel;

--
-- increment(sc, shard, delta).
--
SELECT counter.increment('{}'::counter.sharded_counter, 5, 3) AS absent,
       counter.increment('{5:+3}'::counter.sharded_counter, 5, 4) AS present,
       counter.increment('{5:+3}'::counter.sharded_counter, 5, -2) AS decrement,
       counter.increment('{5:+3}'::counter.sharded_counter, 5, 0) AS zero,
       counter.increment('{}'::counter.sharded_counter, 5, 0) AS zero_absent;
SELECT counter.increment('{2:+1,4:+1}'::counter.sharded_counter, 1, 1) AS first,
       counter.increment('{2:+1,4:+1}'::counter.sharded_counter, 3, 1) AS middle,
       counter.increment('{2:+1,4:+1}'::counter.sharded_counter, 5, -1) AS last,
       counter.increment('{2:+1,4:+1}'::counter.sharded_counter, 0, 9223372036854775807) AS max_delta,
       counter.increment('{2:+1,4:+1}'::counter.sharded_counter, 2147483647, -9223372036854775807) AS min_delta;
SELECT counter.increment(NULL, 1, 1) IS NULL AS null_sc,
       counter.increment('{}'::counter.sharded_counter, NULL, 1) IS NULL AS null_shard,
       counter.increment('{}'::counter.sharded_counter, 1, NULL) IS NULL AS null_delta;
SELECT n, pg_temp.try(sql) AS result
FROM (VALUES
	(1, $$SELECT counter.increment('{1:+9223372036854775807}'::counter.sharded_counter, 1, 1)::text$$),
	(2, $$SELECT counter.increment('{1:+1}'::counter.sharded_counter, 1, 9223372036854775807)::text$$),
	(3, $$SELECT counter.increment('{1:-9223372036854775807}'::counter.sharded_counter, 1, -1)::text$$),
	(4, $$SELECT counter.increment('{}'::counter.sharded_counter, 1, -9223372036854775808)::text$$),
	(5, $$SELECT counter.increment('{1:+5}'::counter.sharded_counter, 1, -9223372036854775808)::text$$),
	(6, $$SELECT counter.increment('{}'::counter.sharded_counter, -1, 1)::text$$),
	(7, $$SELECT counter.increment('{}'::counter.sharded_counter, -2147483648, 0)::text$$),
	(8, $$SELECT counter.increment(('{' || string_agg(g || ':+1', ',' ORDER BY g) || '}')::counter.sharded_counter, 65536, 1)::text FROM generate_series(0, 65535) g$$),
	(9, $$SELECT counter.value(counter.increment(('{' || string_agg(g || ':+1', ',' ORDER BY g) || '}')::counter.sharded_counter, 65535, 1)) FROM generate_series(0, 65535) g$$)
) AS t(n, sql)
ORDER BY n;

--
-- shards().
--
SELECT * FROM counter.shards('{1:+15-3,7:+4,9:-2,11:+0}'::counter.sharded_counter);
SELECT count(*) AS no_rows FROM counter.shards('{}'::counter.sharded_counter);
SELECT s.shard, s.incremented - s.decremented AS net
FROM laws, counter.shards(laws.c) AS s WHERE laws.id = 5 ORDER BY s.shard;

--
-- Comparison is by value: different states with the same value are equal.
--
SELECT a, b, counter.value(a) AS va, counter.value(b) AS vb,
       a OPERATOR(counter.<) b AS lt, a OPERATOR(counter.<=) b AS le,
       a OPERATOR(counter.=) b AS eq, a OPERATOR(counter.<>) b AS ne,
       a OPERATOR(counter.>=) b AS ge, a OPERATOR(counter.>) b AS gt,
       counter.sharded_counter_cmp(a, b) AS cmp
FROM (VALUES ('{}'::counter.sharded_counter, '{5:+0}'::counter.sharded_counter),
             ('{1:+3-3}', '{}'),
             ('{1:+1}', '{2:+1}'),
             ('{1:+1}', '{2:+2}'),
             ('{2:-1}', '{}'),
             ('{1:+10-4,2:+1}', '{3:+7}')) AS t(a, b);
-- Values beyond int8 still compare (exactly, without error).
SELECT a OPERATOR(counter.>) b AS gt, counter.sharded_counter_cmp(a, b) AS cmp,
       counter.sharded_counter_cmp(b, a) AS cmp_rev
FROM (VALUES ('{1:+9223372036854775807,2:+9223372036854775807}'::counter.sharded_counter,
              '{1:+9223372036854775807,2:+9223372036854775806}'::counter.sharded_counter),
             ('{1:-9223372036854775807,2:-9223372036854775807}', '{1:-9223372036854775807}')) AS t(a, b);
-- ORDER BY uses the default btree operator class (ties broken by id).
SELECT id, c, counter.value(c) FROM laws ORDER BY c, id;
SELECT DISTINCT counter.value(c) AS distinct_values FROM laws ORDER BY 1;

--
-- Btree index.
--
CREATE TEMP TABLE indexed (id int, c counter.sharded_counter);
INSERT INTO indexed
SELECT g, ('{' || (g % 10) || ':+' || (g + 3) || '-3}')::counter.sharded_counter
FROM generate_series(1, 1000) AS g;
CREATE INDEX indexed_c_idx ON indexed (c);
ANALYZE indexed;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF)
SELECT id, c FROM indexed WHERE c OPERATOR(counter.=) '{3:+400,4:+100}'::counter.sharded_counter;
-- Finds the row whose value is 500, though its state differs.
SELECT id, c FROM indexed WHERE c OPERATOR(counter.=) '{3:+400,4:+100}'::counter.sharded_counter;
EXPLAIN (COSTS OFF)
SELECT id, c FROM indexed WHERE c OPERATOR(counter.<) '{1:+4}'::counter.sharded_counter ORDER BY c;
SELECT id, c FROM indexed WHERE c OPERATOR(counter.<) '{1:+4}'::counter.sharded_counter ORDER BY c;
SELECT id, c FROM indexed
WHERE c OPERATOR(counter.>=) '{1:+997}'::counter.sharded_counter ORDER BY c DESC;
RESET enable_seqscan;
RESET enable_bitmapscan;
-- A unique index is unique by value.
CREATE TEMP TABLE uniq (c counter.sharded_counter UNIQUE);
INSERT INTO uniq VALUES ('{1:+1}');
SELECT pg_temp.try($$INSERT INTO uniq VALUES ('{2:+2-1}') RETURNING c::text$$) AS duplicate_value;
DROP TABLE indexed, uniq;

--
-- Large values are stored (toasted) and read back intact.
--
CREATE TEMP TABLE big (c counter.sharded_counter);
INSERT INTO big
SELECT ('{' || string_agg(g || ':+' || (g + 1) || '-1', ',' ORDER BY g) || '}')::counter.sharded_counter
FROM generate_series(0, 65535) AS g;
SELECT counter.value(c), (SELECT count(*) FROM counter.shards(c)) AS nshards,
       pg_catalog.pg_column_size(c) < 65536 * 24 AS compressed,
       pg_catalog.pg_column_size(c) <= 4 + 1 + 3 + 65536 * 5 AS compact,
       c::text = (SELECT '{' || string_agg(g || ':+' || (g + 1) || '-1', ',' ORDER BY g) || '}'
                  FROM generate_series(0, 65535) AS g) AS same_text
FROM big;

--
-- Binary send: int32 nshards, then per shard int32 shard, int64 inc, int64 dec
-- (network byte order).
--
SELECT counter.sharded_counter_send('{}'::counter.sharded_counter) AS empty,
       counter.sharded_counter_send('{1:+15-3,7:+4}'::counter.sharded_counter) AS two;

--
-- Binary receive, fed through COPY (FORMAT binary): a bytea column copied
-- out in binary carries exactly the field bytes given, which COPY into a
-- sharded_counter column hands to sharded_counter_recv.
--
SELECT '/tmp/counter_type_test_' || pg_backend_pid() || '.bin' AS binfile \gset
CREATE TEMP TABLE bin_src (b bytea);
CREATE TEMP TABLE bin_dst (c counter.sharded_counter);
-- recv(file, hex): receive the bytes hex, return 'ok: <text>' or 'SQLSTATE: message DETAIL: detail'.
CREATE FUNCTION pg_temp.recv(path text, hex text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
	det text;
BEGIN
	DELETE FROM pg_temp.bin_src;
	DELETE FROM pg_temp.bin_dst;
	INSERT INTO pg_temp.bin_src VALUES (decode(hex, 'hex'));
	EXECUTE format('COPY pg_temp.bin_src TO %L (FORMAT binary)', path);
	BEGIN
		EXECUTE format('COPY pg_temp.bin_dst FROM %L (FORMAT binary)', path);
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
			det = PG_EXCEPTION_DETAIL;
		RETURN st || ': ' || msg || CASE WHEN det <> '' THEN ' DETAIL: ' || det ELSE '' END;
	END;
	RETURN 'ok: ' || (SELECT c::text FROM pg_temp.bin_dst);
END
$$;
SELECT n, hex, pg_temp.recv(:'binfile', hex) AS result
FROM (VALUES
	(1, '00000000'),
	(2, '00000002' || '00000001' || '000000000000000f' || '0000000000000003'
	             || '00000007' || '0000000000000004' || '0000000000000000'),
	(3, '00000001' || '7fffffff' || '7fffffffffffffff' || '7fffffffffffffff'),
	(4, '00000001' || '00000000' || '0000000000000000' || '0000000000000000'),
	(5, ''),
	(6, '000000'),
	(7, 'ffffffff'),
	(8, '80000000'),
	(9, '00010001'),
	(10, '7fffffff'),
	(11, '00000001'),
	(12, '00000001' || '00000001' || '0000000000000001' || '00000000000000'),
	(13, '00000001' || '00000001' || '0000000000000001' || '0000000000000000' || 'ff'),
	(14, '00000000' || 'ff'),
	(15, '00000002' || '00000001' || '0000000000000001' || '0000000000000000'),
	(16, '00000002' || '00000007' || '0000000000000001' || '0000000000000000'
	             || '00000001' || '0000000000000001' || '0000000000000000'),
	(17, '00000002' || '00000001' || '0000000000000001' || '0000000000000000'
	             || '00000001' || '0000000000000002' || '0000000000000000'),
	(18, '00000001' || 'ffffffff' || '0000000000000001' || '0000000000000000'),
	(19, '00000001' || '80000000' || '0000000000000001' || '0000000000000000'),
	(20, '00000001' || '00000001' || 'ffffffffffffffff' || '0000000000000000'),
	(21, '00000001' || '00000001' || '0000000000000000' || '8000000000000000')
) AS t(n, hex)
ORDER BY n;
-- Round trip through binary COPY, including the largest allowed value.
INSERT INTO bin_dst SELECT c FROM big;
INSERT INTO bin_dst VALUES ('{}'), ('{1:+15-3,7:+4}'), ('{3:-2,5:+0}');
COPY bin_dst TO :'binfile' (FORMAT binary);
CREATE TEMP TABLE bin_back (c counter.sharded_counter);
COPY bin_back FROM :'binfile' (FORMAT binary);
SELECT count(*) AS rows_back,
       (SELECT count(*) FROM bin_dst d WHERE NOT EXISTS (SELECT 1 FROM bin_back b WHERE b.c::text = d.c::text)) AS missing
FROM bin_back;
\set rmcmd 'rm -f ' :binfile
COPY (SELECT 1 WHERE false) TO PROGRAM :'rmcmd';
DROP TABLE bin_src, bin_dst, bin_back, big;

--
-- Stored values with a bad header are reported as corrupted (XX001) instead
-- of being read.  A raw datum is made by relabelling bytea through a
-- function that returns its argument (varchar() with typmod -1); only
-- byte-order independent headers are used.
--
CREATE FUNCTION pg_temp.raw_sc(bytea, int4, bool) RETURNS counter.sharded_counter
	LANGUAGE internal IMMUTABLE STRICT AS 'varchar';
SELECT n, hex, pg_temp.try(format('SELECT pg_temp.raw_sc(%L::bytea, -1, false)::text', '\x' || hex)) AS result
FROM (VALUES
	(1, '010000000000000000000000'),
	(2, '030000000000000000000000'),
	(3, '000000000000000000000000'),
	(4, '0100'),
	(5, '010000000101010100000000'),
	(6, '01000000000000000000000000')
) AS t(n, hex)
ORDER BY n;

--
-- Stored format, version 2 (what every function returns): after the varlena
-- header, the version byte 2, then LEB128 varints: nshards, and per entry
-- the shard delta, inc and dec.  sc_raw() shows a value's bytes after its
-- header (the other relabelling: varchar() hands its argument back as is).
-- These bytes are the same on every platform.
--
CREATE FUNCTION pg_temp.sc_raw(counter.sharded_counter, int4, bool) RETURNS bytea
	LANGUAGE internal IMMUTABLE STRICT AS 'varchar';
CREATE TEMP TABLE v2 (n int, c counter.sharded_counter);
INSERT INTO v2 VALUES
	(1, '{}'),
	(2, '{0:+0}'),
	(3, '{1:+5}'),
	(4, '{3:+1000-20}'),
	(5, '{1:+15-3,7:+4}'),
	(6, '{0:+127}'),
	(7, '{0:+128}'),
	(8, '{127:+16383-16384}'),
	(9, '{0:+9223372036854775807-9223372036854775807}'),
	(10, '{2147483647:+9223372036854775807-9223372036854775807}'),
	(11, '{0:+1,1:+1,2147483647:+1}'),
	(12, '{0:+9223372036854775807,2147483647:-9223372036854775807}');
-- pg_column_size is the size in the row, 1-byte varlena header included: a
-- one-shard state with small numbers takes 6 bytes (version 1: 37).
SELECT n, c, pg_catalog.pg_column_size(c) AS stored_size,
       pg_temp.sc_raw(c, -1, false) AS bytes,
       c::text::counter.sharded_counter::text = c::text AS text_round_trip,
       pg_temp.sc_raw(c::text::counter.sharded_counter, -1, false) = pg_temp.sc_raw(c, -1, false) AS same_bytes
FROM v2
ORDER BY n;
-- Every function returning the type returns version 2.
SELECT f, pg_temp.sc_raw(c, -1, false) AS bytes
FROM (VALUES
	('in', '{2:+3}'::counter.sharded_counter),
	('increment', counter.increment('{}', 2, 3)),
	('increment by 0', counter.increment('{2:+3}', 2, 0)),
	('merge', counter.merge('{2:+3}', '{2:+1}')),
	('merge aggregate', (SELECT counter.merge(c) FROM (VALUES ('{2:+1}'::counter.sharded_counter), ('{2:+3}')) AS t(c))),
	('merge aggregate, no rows', (SELECT counter.merge(c) FROM v2 WHERE false))
) AS t(f, c);
-- Many shards: a dense and a sparse one, each read back intact.
CREATE TEMP TABLE v2_many (name text, c counter.sharded_counter);
INSERT INTO v2_many
SELECT 'dense', ('{' || string_agg(g || ':+' || (g + 1) || '-' || (g / 2 + 1), ',' ORDER BY g) || '}')::counter.sharded_counter
FROM generate_series(0, 999) AS g
UNION ALL
SELECT 'sparse', ('{' || string_agg((g * 2147483) || ':+9223372036854775807-' || (g + 1), ',' ORDER BY g) || '}')::counter.sharded_counter
FROM generate_series(0, 999) AS g;
SELECT name, (SELECT count(*) FROM counter.shards(c)) AS nshards, c::numeric AS value,
       c::text = CASE name
           WHEN 'dense' THEN (SELECT '{' || string_agg(g || ':+' || (g + 1) || '-' || (g / 2 + 1), ',' ORDER BY g) || '}' FROM generate_series(0, 999) AS g)
           ELSE (SELECT '{' || string_agg((g * 2147483) || ':+9223372036854775807-' || (g + 1), ',' ORDER BY g) || '}' FROM generate_series(0, 999) AS g)
       END AS same_text
FROM v2_many
ORDER BY name;
-- Binary send/recv round trip: recv gives the canonical version 2 bytes back.
COPY (SELECT c FROM v2 UNION ALL SELECT c FROM v2_many) TO :'binfile' (FORMAT binary);
CREATE TEMP TABLE v2_back (c counter.sharded_counter);
COPY v2_back FROM :'binfile' (FORMAT binary);
SELECT count(*) AS rows_back,
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM v2 WHERE pg_temp.sc_raw(v2.c, -1, false) = pg_temp.sc_raw(b.c, -1, false))
                          AND NOT EXISTS (SELECT 1 FROM v2_many m WHERE pg_temp.sc_raw(m.c, -1, false) = pg_temp.sc_raw(b.c, -1, false))) AS missing
FROM v2_back AS b;
COPY (SELECT 1 WHERE false) TO PROGRAM :'rmcmd';
DROP TABLE v2_many, v2_back;

--
-- Corrupted version 2 values are reported (XX001), both as a datum with a
-- 4-byte header and stored in a row (1-byte header).
--
CREATE TEMP TABLE v2_bad (n int, hex text, c counter.sharded_counter);
INSERT INTO v2_bad (n, hex)
VALUES
	(1, '02'),							-- count missing
	(2, '0280'),						-- count truncated
	(3, '028000'),						-- count not minimal
	(4, '02818004'),					-- count 65537
	(5, '02ffffffffffffffff7f'),		-- count 2^63 - 1
	(6, '02ffffffffffffffffff01'),		-- count longer than 9 bytes
	(7, '0201'),						-- one entry, no bytes for it
	(8, '0201000080'),					-- dec truncated
	(9, '020100ff01'),					-- dec missing
	(10, '020100008000'),				-- dec not minimal
	(11, '020100ffffffffffffffff8001'),	-- inc 2^63: 10 bytes
	(12, '020100ffffffffffffffff7f0000'),	-- inc 2^63 - 1, then a trailing byte
	(13, '0201ffffffff0f0000'),			-- shard 4294967295
	(14, '020180808080080000'),			-- shard 2^31
	(15, '0202010000000000'),			-- second shard delta 0: a repeated shard
	(16, '0202ffffffff070000010000'),	-- shard 2147483647 + 1
	(17, '020001'),						-- a trailing byte after no entries
	(18, '020101010100')				-- a trailing byte
;
SELECT n, hex, pg_temp.try(format('SELECT pg_temp.raw_sc(%L::bytea, -1, false)::text', '\x' || hex)) AS result
FROM v2_bad
ORDER BY n;
UPDATE v2_bad SET c = pg_temp.raw_sc(decode(hex, 'hex'), -1, false);
SELECT n, pg_temp.try(format('SELECT c::text FROM pg_temp.v2_bad WHERE n = %s', n)) AS stored
FROM v2_bad
ORDER BY n;
DROP TABLE v2_bad;

--
-- Version 1 values, as builds before version 2 stored them, are still read
-- (as they are; a state written again is version 2).  Version 1 is in
-- native byte order: v1() builds it for this machine.
--
CREATE TEMP TABLE endian AS
SELECT pg_temp.try(format('SELECT pg_temp.raw_sc(%L::bytea, -1, false)::text',
                          '\x' || '01000000' || '01000000' || '00000000' || repeat('00', 24))) = 'ok: {0:+0}' AS little;
-- ne(v, nbytes): v as nbytes bytes in native order, in hex.
CREATE FUNCTION pg_temp.ne(v int8, nbytes int) RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(substr(h, 2 * k + 1, 2), '' ORDER BY CASE WHEN e.little THEN -k ELSE k END)
	FROM (SELECT lpad(to_hex(v), 2 * nbytes, '0') AS h) AS b, pg_temp.endian AS e,
	     generate_series(0, nbytes - 1) AS k
$$;
-- v1(shards, incs, decs): the version 1 value with those entries.
CREATE FUNCTION pg_temp.v1(shards int4[], incs int8[], decs int8[]) RETURNS counter.sharded_counter LANGUAGE sql AS $$
	SELECT pg_temp.raw_sc(decode('01000000' || pg_temp.ne(coalesce(cardinality(shards), 0), 4) || '00000000'
	                             || coalesce((SELECT string_agg(pg_temp.ne(shards[i], 4) || '00000000'
	                                                            || pg_temp.ne(incs[i], 8) || pg_temp.ne(decs[i], 8), '' ORDER BY i)
	                                          FROM generate_subscripts(shards, 1) AS i), ''), 'hex'), -1, false)
$$;
CREATE TEMP TABLE v1 (n int, c counter.sharded_counter);
INSERT INTO v1 VALUES
	(1, pg_temp.v1('{}', '{}', '{}')),
	(2, pg_temp.v1('{1}', '{5}', '{0}')),
	(3, pg_temp.v1('{1,7}', '{15,4}', '{3,0}')),
	(4, pg_temp.v1('{0,2147483647}', '{9223372036854775807,0}', '{0,9223372036854775807}')),
	(5, pg_temp.v1(ARRAY(SELECT generate_series(0, 199)), ARRAY(SELECT generate_series(1, 200)::int8), ARRAY(SELECT 7::int8 FROM generate_series(1, 200))));
-- n = 5, 200 shards (4816 bytes), is stored compressed and read back intact.
SELECT n, pg_catalog.pg_column_size(c) < 4816 AS compressed, counter.value(c),
       c::text = (SELECT '{' || string_agg(g || ':+' || (g + 1) || '-7', ',' ORDER BY g) || '}' FROM generate_series(0, 199) AS g) AS same_text
FROM v1 WHERE n = 5;
-- The same states as version 2 values of table v2 (n 1, 3, 5, 12): equal
-- text, value, send, shards(), operators; different bytes.
SELECT v1.n, v1.c, pg_catalog.pg_column_size(v1.c) AS stored_size,
       v1.c::text = v2.c::text AS same_text,
       v1.c::numeric = v2.c::numeric AS same_value,
       counter.sharded_counter_send(v1.c) = counter.sharded_counter_send(v2.c) AS same_send,
       (SELECT array_agg(s) FROM counter.shards(v1.c) AS s) IS NOT DISTINCT FROM (SELECT array_agg(s) FROM counter.shards(v2.c) AS s) AS same_shards,
       v1.c OPERATOR(counter.=) v2.c AS eq,
       counter.sharded_counter_cmp(v1.c, v2.c) AS cmp,
       pg_temp.sc_raw(v1.c, -1, false) = pg_temp.sc_raw(v2.c, -1, false) AS same_bytes
FROM v1 JOIN v2 ON v2.n = (ARRAY[1, 3, 5, 12])[v1.n]
WHERE v1.n <= 4
ORDER BY v1.n;
-- Functions read version 1 and return version 2.
SELECT counter.increment(c, 1, 1) AS incremented,
       pg_temp.sc_raw(counter.increment(c, 1, 1), -1, false) AS bytes,
       counter.merge(c, '{2:+1}') AS merged,
       pg_temp.sc_raw(counter.merge(c, '{2:+1}'), -1, false) AS merged_bytes
FROM v1 WHERE n = 3;
SELECT counter.merge(c) AS merged, pg_temp.sc_raw(counter.merge(c), -1, false) AS bytes FROM v1 WHERE n <= 4;
-- A version 1 value written again is version 2 and smaller.
UPDATE v1 SET c = counter.increment(c, 1, 0);
SELECT n, CASE WHEN n <= 4 THEN c::text END AS c, pg_catalog.pg_column_size(c) AS stored_size,
       get_byte(pg_temp.sc_raw(c, -1, false), 0) AS version
FROM v1 ORDER BY n;
DROP TABLE v1, v2, endian;
DROP FUNCTION pg_temp.v1(int4[], int8[], int8[]);
DROP FUNCTION pg_temp.ne(int8, int);
DROP FUNCTION pg_temp.sc_raw(counter.sharded_counter, integer, boolean);

DROP TABLE laws;
DROP FUNCTION pg_temp.raw_sc(bytea, integer, boolean);
DROP EXTENSION counter;
