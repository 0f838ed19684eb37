-- Proves the laws of counter.sharded_counter over 1,000 random cases each (setseed, so deterministic): merge is commutative, associative, idempotent, has '{}' as identity and takes the per-shard maximum; increment changes the value by exactly delta, is absorbed by merge, and raises 22023/22003 exactly when it must; value() agrees with the numeric cast or raises 22003; the merge aggregate is the fold of the binary merge; text input agrees with a model (and raises 22003/22P02 exactly when it must); text and binary (send, COPY binary recv) round trips keep the shards.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;

-- Every failed check is recorded here with the case that broke it.
CREATE TEMP TABLE violations (law text, id int, detail text);

-- rand_total(): a total (numeric), often 0 or small, sometimes near 2^62 or the int8 limit.
CREATE FUNCTION pg_temp.rand_total() RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
	r float8 := random();
BEGIN
	RETURN CASE
		WHEN r < 0.25 THEN 0
		WHEN r < 0.55 THEN floor(random() * 100)::numeric
		WHEN r < 0.75 THEN floor(random() * 1000000)::numeric
		WHEN r < 0.90 THEN floor(random()::numeric * 4611686018427387904)
		ELSE 9223372036854775807 - floor(random() * 20)::numeric
	END;
END
$$;

-- rand_shard(neg): a shard number, mostly 0..7 so that states overlap, also
-- anywhere in int4 and at its top; with neg, sometimes negative.
CREATE FUNCTION pg_temp.rand_shard(neg bool) RETURNS int8 LANGUAGE plpgsql AS $$
DECLARE
	r float8 := random();
BEGIN
	IF neg AND random() < 0.15 THEN
		RETURN CASE
			WHEN r < 0.3 THEN -1
			WHEN r < 0.5 THEN -2147483648
			ELSE -1 - floor(random()::numeric * 2147483647)::int8
		END;
	END IF;
	RETURN CASE
		WHEN r < 0.6 THEN floor(random() * 8)::int8
		WHEN r < 0.85 THEN floor(random()::numeric * 2147483648)::int8
		ELSE 2147483647 - floor(random() * 3)::int8
	END;
END
$$;

-- ws(): optional whitespace, to exercise the parser's skipping.
CREATE FUNCTION pg_temp.ws() RETURNS text LANGUAGE sql AS $$
	SELECT (ARRAY['', '', '', ' ', E'\t', E'\n  '])[1 + floor(random() * 6)::int]
$$;

-- zeros(): optional leading zeros.
CREATE FUNCTION pg_temp.zeros() RETURNS text LANGUAGE sql AS $$
	SELECT CASE WHEN random() < 0.15 THEN repeat('0', 1 + floor(random() * 3)::int) ELSE '' END
$$;

-- rand_text(bad): a random text form of up to 6 shards, in any of the
-- accepted spellings, with the model of its shards and the SQLSTATE its
-- input must raise ('ok' if none).  With bad, some entries have a negative
-- shard (22P02) or a shard or total just outside its type (22003); the
-- first bad entry decides, and in an entry the shard comes first.
CREATE FUNCTION pg_temp.rand_text(bad bool, OUT txt text, OUT shards int8[],
								  OUT incs numeric[], OUT decs numeric[], OUT expect text)
LANGUAGE plpgsql AS $$
DECLARE
	n int := floor(random() * 7)::int;
	i int;
	s int8;
	inc numeric;
	dec numeric;
	ent text;
	incpart text;
	decpart text;
	probl text;
BEGIN
	SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}')
	INTO shards
	FROM (SELECT pg_temp.rand_shard(bad) AS x FROM generate_series(1, n)) AS g;
	n := coalesce(array_length(shards, 1), 0);
	incs := '{}';
	decs := '{}';
	expect := 'ok';
	txt := pg_temp.ws() || '{' || pg_temp.ws();
	FOR i IN 1 .. n LOOP
		s := shards[i];
		inc := pg_temp.rand_total();
		dec := pg_temp.rand_total();
		probl := NULL;
		IF s < 0 THEN
			probl := '22P02';
		ELSIF bad AND random() < 0.05 THEN
			s := 2147483648 + floor(random() * 3)::int8 * 2147483648;
			shards[i] := s;
			probl := '22003';
		END IF;
		IF bad AND random() < 0.05 THEN
			IF random() < 0.5 THEN
				inc := 9223372036854775808 + floor(random() * 3)::numeric;
			ELSE
				dec := 9223372036854775808 * (1 + floor(random() * 1000)::numeric);
			END IF;
			probl := coalesce(probl, '22003');
		END IF;
		IF expect = 'ok' AND probl IS NOT NULL THEN
			expect := probl;
		END IF;
		incs := incs || inc;
		decs := decs || dec;
		incpart := '+' || pg_temp.zeros() || inc::text;
		decpart := '-' || pg_temp.zeros() || dec::text;
		IF dec = 0 AND random() < 0.6 THEN
			ent := incpart;
		ELSIF inc = 0 AND random() < 0.6 THEN
			ent := decpart;
		ELSE
			ent := incpart || pg_temp.ws() || decpart;
		END IF;
		IF s < 0 THEN
			ent := '-' || pg_temp.zeros() || (-s)::text || pg_temp.ws() || ':' || pg_temp.ws() || ent;
		ELSE
			ent := pg_temp.zeros() || s::text || pg_temp.ws() || ':' || pg_temp.ws() || ent;
		END IF;
		txt := txt || CASE WHEN i > 1 THEN ',' || pg_temp.ws() ELSE '' END || ent || pg_temp.ws();
	END LOOP;
	txt := txt || '}' || pg_temp.ws();
END
$$;

-- rand_state(): a random valid state.
CREATE FUNCTION pg_temp.rand_state() RETURNS counter.sharded_counter LANGUAGE sql AS $$
	SELECT (pg_temp.rand_text(false)).txt::counter.sharded_counter
$$;

-- rand_delta(): an increment, often small, sometimes 0, near the int8
-- limits or int8's minimum (whose magnitude is 2^63).
CREATE FUNCTION pg_temp.rand_delta() RETURNS int8 LANGUAGE plpgsql AS $$
DECLARE
	r float8 := random();
BEGIN
	RETURN CASE
		WHEN r < 0.05 THEN 0
		WHEN r < 0.35 THEN 1 + floor(random() * 100)::int8
		WHEN r < 0.60 THEN -1 - floor(random() * 100)::int8
		WHEN r < 0.70 THEN floor(random()::numeric * 4611686018427387904)::int8
		WHEN r < 0.80 THEN -floor(random()::numeric * 4611686018427387904)::int8
		WHEN r < 0.88 THEN 9223372036854775807 - floor(random() * 20)::int8
		WHEN r < 0.96 THEN -9223372036854775807 + floor(random() * 20)::int8
		ELSE -9223372036854775808
	END;
END
$$;

-- shard_rows(x): the shards of x as one comparable array.
CREATE FUNCTION pg_temp.shard_rows(x counter.sharded_counter) RETURNS int8[] LANGUAGE sql AS $$
	SELECT coalesce(array_agg(v ORDER BY ord), '{}')
	FROM counter.shards(x) WITH ORDINALITY AS s(shard, inc, dec, o),
		 LATERAL (VALUES (o * 3 - 2, shard::int8), (o * 3 - 1, inc), (o * 3, dec)) AS t(ord, v)
$$;

-- same(x, y): equal by the type's = AND by shards AND by text form.
CREATE FUNCTION pg_temp.same(x counter.sharded_counter, y counter.sharded_counter) RETURNS bool
LANGUAGE sql AS $$
	SELECT x OPERATOR(counter.=) y AND x::text = y::text
		AND pg_temp.shard_rows(x) = pg_temp.shard_rows(y)
$$;

-- check(law, id, ok, detail, experr): count one case (experr: one where an
-- error is the expected outcome); record it when ok is not true; return ok.
CREATE TEMP TABLE tally (law text PRIMARY KEY, cases int, expected_errors int, ord serial);
CREATE FUNCTION pg_temp.check(law text, id int, ok bool, detail text, experr bool DEFAULT false)
RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO pg_temp.tally AS t (law, cases, expected_errors)
	VALUES (law, 1, experr::int)
	ON CONFLICT ON CONSTRAINT tally_pkey
	DO UPDATE SET cases = t.cases + 1, expected_errors = t.expected_errors + experr::int;
	IF ok IS NOT TRUE THEN
		INSERT INTO pg_temp.violations VALUES (law, id, detail);
	END IF;
	RETURN coalesce(ok, false);
END
$$;

-- try_sql(sql): the SQLSTATE a query raises, or 'ok' and its text result.
CREATE FUNCTION pg_temp.try_sql(sql text, OUT st text, OUT res text) LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql INTO res;
	st := 'ok';
EXCEPTION WHEN OTHERS THEN
	st := SQLSTATE;
	res := SQLERRM;
END
$$;

SELECT setseed(0.4242);
CREATE TEMP TABLE cases AS
SELECT g AS id, pg_temp.rand_state() AS a, pg_temp.rand_state() AS b, pg_temp.rand_state() AS c,
	   pg_temp.rand_shard(true)::int4 AS shard, pg_temp.rand_delta() AS delta,
	   ARRAY(SELECT pg_temp.rand_state() FROM generate_series(1, floor(random() * 6)::int + g * 0)) AS many
FROM generate_series(1, 1000) AS g;
-- A third of the increments go to a shard the state already has.
UPDATE cases SET shard = (SELECT s.shard FROM counter.shards(a) AS s ORDER BY random() LIMIT 1)
WHERE id % 3 = 0 AND a::text <> '{}';

-- merge is commutative.
SELECT count(*) FILTER (WHERE pg_temp.check('commutative', id,
					 pg_temp.same(counter.merge(a, b), counter.merge(b, a)),
					 format('%s %s', a, b))) AS passed
FROM cases;

-- merge is associative.
SELECT count(*) FILTER (WHERE pg_temp.check('associative', id,
					 pg_temp.same(counter.merge(counter.merge(a, b), c),
								  counter.merge(a, counter.merge(b, c))),
					 format('%s %s %s', a, b, c))) AS passed
FROM cases;

-- merge is idempotent, also when one side is already merged in.
SELECT count(*) FILTER (WHERE pg_temp.check('idempotent', id,
					 pg_temp.same(counter.merge(a, a), a)
					 AND pg_temp.same(counter.merge(a, counter.merge(a, b)), counter.merge(a, b)),
					 format('%s %s', a, b))) AS passed
FROM cases;

-- '{}' is the identity of merge, on either side.
SELECT count(*) FILTER (WHERE pg_temp.check('identity', id,
					 pg_temp.same(counter.merge(a, '{}'), a)
					 AND pg_temp.same(counter.merge('{}', a), a),
					 a::text)) AS passed
FROM cases;

-- merge takes, per shard of the union, the maximum of each total.
SELECT count(*) FILTER (WHERE pg_temp.check('merge_is_max', id,
					 pg_temp.shard_rows(counter.merge(a, b)) =
					 (SELECT coalesce(array_agg(v ORDER BY ord), '{}')
					  FROM (SELECT row_number() OVER (ORDER BY shard) AS o, shard,
								   greatest(x.incremented, y.incremented) AS inc,
								   greatest(x.decremented, y.decremented) AS dec
							FROM counter.shards(a) AS x FULL JOIN counter.shards(b) AS y USING (shard)) AS m,
						   LATERAL (VALUES (o * 3 - 2, shard::int8), (o * 3 - 1, inc), (o * 3, dec)) AS t(ord, v)),
					 format('%s %s', a, b))) AS passed
FROM cases;

-- increment(a, shard, delta): 22023 for a negative shard, 22003 when the
-- total would leave int8, else the value moves by exactly delta, only that
-- shard changes, and merging the old state into the new one changes nothing.
CREATE TEMP TABLE incs AS
SELECT id, a, cases.shard, delta, r.st, r.res,
	   CASE
		   WHEN cases.shard < 0 THEN '22023'
		   WHEN delta > 0 AND coalesce(o.incremented, 0)::numeric + delta > 9223372036854775807 THEN '22003'
		   WHEN delta < 0 AND coalesce(o.decremented, 0)::numeric - delta > 9223372036854775807 THEN '22003'
		   ELSE 'ok'
	   END AS expect,
	   coalesce(o.incremented, 0) AS old_inc, coalesce(o.decremented, 0) AS old_dec,
	   o.shard IS NOT NULL AS found
FROM cases
	 LEFT JOIN LATERAL (SELECT * FROM counter.shards(a) AS s WHERE s.shard = cases.shard) AS o ON true,
	 LATERAL pg_temp.try_sql(format('SELECT counter.increment(%L, %s, %s)', a, cases.shard, delta)) AS r;
SELECT count(*) FILTER (WHERE pg_temp.check('increment', id,
					 st = expect AND (st <> 'ok' OR (
						 res::counter.sharded_counter::numeric = a::numeric + delta
						 AND CASE
							 WHEN delta > 0 THEN res::counter.sharded_counter OPERATOR(counter.>) a
							 WHEN delta < 0 THEN res::counter.sharded_counter OPERATOR(counter.<) a
							 ELSE pg_temp.same(res::counter.sharded_counter, a)
						 END
						 AND pg_temp.same(counter.merge(a, res::counter.sharded_counter), res::counter.sharded_counter)
						 AND pg_temp.same(counter.merge(res::counter.sharded_counter, a), res::counter.sharded_counter)
						 AND (SELECT array_agg(s ORDER BY s.shard) FROM counter.shards(res::counter.sharded_counter) s
							  WHERE s.shard <> incs.shard)
							 IS NOT DISTINCT FROM
							 (SELECT array_agg(s ORDER BY s.shard) FROM counter.shards(a) s WHERE s.shard <> incs.shard)
						 AND (SELECT array_agg(s) FROM counter.shards(res::counter.sharded_counter) s
							  WHERE s.shard = incs.shard)
							 IS NOT DISTINCT FROM
							 CASE WHEN delta <> 0 OR found
								  THEN ARRAY[(shard, old_inc + greatest(delta, 0), old_dec + greatest(-delta, 0))]
							 END)),
					 format('%s %s %s: got %s %s, expected %s', a, shard, delta, st, res, expect),
					 expect <> 'ok')) AS passed
FROM incs;

-- value() is the exact value (the numeric cast) when it fits in int8, else 22003.
SELECT count(*) FILTER (WHERE pg_temp.check('value', id,
					 CASE WHEN x::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
						  THEN r.st = 'ok' AND r.res::numeric = x::numeric
						  ELSE r.st = '22003'
					 END,
					 format('%s: %s %s', x, r.st, r.res),
					 NOT x::numeric BETWEEN -9223372036854775808 AND 9223372036854775807)) AS passed
FROM (SELECT id, counter.merge(counter.merge(a, b), c) AS x FROM cases) AS m,
	 LATERAL pg_temp.try_sql(format('SELECT counter.value(%L)', x)) AS r;

-- The aggregate equals the fold of the binary merge from '{}', in either order.
CREATE FUNCTION pg_temp.fold(xs counter.sharded_counter[]) RETURNS counter.sharded_counter
LANGUAGE plpgsql AS $$
DECLARE
	acc counter.sharded_counter := '{}';
	x counter.sharded_counter;
BEGIN
	FOREACH x IN ARRAY xs LOOP
		acc := counter.merge(acc, x);
	END LOOP;
	RETURN acc;
END
$$;
SELECT count(*) FILTER (WHERE pg_temp.check('aggregate', id,
					 pg_temp.same((SELECT counter.merge(x) FROM unnest(many) AS x), pg_temp.fold(many))
					 AND pg_temp.same((SELECT counter.merge(x ORDER BY o DESC)
									   FROM unnest(many) WITH ORDINALITY AS u(x, o)), pg_temp.fold(many)),
					 many::text)) AS passed
FROM cases;

-- Text input agrees with the model of a random spelling, or raises the
-- SQLSTATE of its first bad entry.
CREATE TEMP TABLE texts AS
SELECT id, (t).* FROM (SELECT g AS id, pg_temp.rand_text(true) AS t
						FROM generate_series(1, 1000) AS g OFFSET 0) AS r;
SELECT count(*) FILTER (WHERE pg_temp.check('text_input', id,
					 r.st = expect AND (r.st <> 'ok' OR
						 pg_temp.shard_rows(r.res::counter.sharded_counter) =
						 (SELECT coalesce(array_agg(v ORDER BY o, k), '{}')
						  FROM unnest(shards, incs, decs) WITH ORDINALITY AS u(s, i, d, o),
							   LATERAL (VALUES (1, s), (2, i::int8), (3, d::int8)) AS t(k, v))),
					 format('%L: got %s %s, expected %s', txt, r.st, r.res, expect),
					 expect <> 'ok')) AS passed
FROM texts, LATERAL pg_temp.try_sql(format('SELECT %L::counter.sharded_counter', txt)) AS r;

-- Text round trip: the output parses back to the same shards, and the
-- output is canonical (a fixed point).
SELECT count(*) FILTER (WHERE pg_temp.check('text_round_trip', id,
					 pg_temp.same(x::text::counter.sharded_counter, x)
					 AND x::text::counter.sharded_counter::text = x::text,
					 x::text)) AS passed
FROM (SELECT id, counter.merge(a, b) AS x FROM cases) AS m;

-- send() writes int32 nshards, then per shard int32 shard, int64 inc, int64 dec.
SELECT count(*) FILTER (WHERE pg_temp.check('send_format', id,
					 counter.sharded_counter_send(a) =
					 int4send((SELECT count(*)::int4 FROM counter.shards(a)))
					 || coalesce((SELECT string_agg(int4send(s.shard) || int8send(s.incremented)
													|| int8send(s.decremented), ''::bytea ORDER BY s.shard)
								  FROM counter.shards(a) AS s), ''::bytea),
					 a::text)) AS passed
FROM cases;

-- Binary round trip: COPY (FORMAT binary) out (send) and back in (recv).
SELECT '/tmp/counter_type_laws_' || pg_backend_pid() || '.bin' AS binfile \gset
CREATE TEMP TABLE bin_out AS SELECT id, counter.merge(a, c) AS x FROM cases;
COPY bin_out TO :'binfile' (FORMAT binary);
CREATE TEMP TABLE bin_in (id int, x counter.sharded_counter);
COPY bin_in FROM :'binfile' (FORMAT binary);
SELECT count(*) FILTER (WHERE pg_temp.check('binary_round_trip', o.id, pg_temp.same(i.x, o.x), o.x::text)) AS passed
FROM bin_out AS o LEFT JOIN bin_in AS i USING (id);
\set rmcmd 'rm -f ' :binfile
COPY (SELECT 1 WHERE false) TO PROGRAM :'rmcmd';

-- Cases per law, the expected errors among them, and the violations (all 0).
SELECT t.law, t.cases, t.expected_errors,
	   (SELECT count(*) FROM violations AS v WHERE v.law = t.law) AS violations
FROM tally AS t
ORDER BY t.ord;
SELECT * FROM violations ORDER BY law, id LIMIT 20;

DROP TABLE cases, incs, texts, bin_out, bin_in;
DROP FUNCTION pg_temp.rand_state(), pg_temp.fold(counter.sharded_counter[]),
	pg_temp.same(counter.sharded_counter, counter.sharded_counter),
	pg_temp.shard_rows(counter.sharded_counter);
DROP EXTENSION counter;
