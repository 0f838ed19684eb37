-- Proves rollups: back-dated events land in their own buckets; series() over random ranges equals the raw sum of the same events (before and after compaction, for every granularity); retention drops old buckets only, keeps their sum in the -infinity bucket, and verify() stays at zero drift; a key whose adds all fall in one bucket of each granularity has no rollups row (its total holds them, totals.sole), until an add in another bucket, retention or alter() writes them out, with series() and verify() exact at each step, in events, slots and buffered modes; a whole events table's fold inserts its rollups rows in primary-key order.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;
SET TimeZone = 'UTC';

SELECT counter.create('hits', mode => 'events', rollups => '{1 minute,1 hour,1 day}');

-- 2000 random events over three days, kept aside as the raw truth
SELECT setseed(0.42);
CREATE TEMP TABLE raw AS
SELECT 'k' || (i % 3) AS key,
       (1 + floor(random() * 10))::int8 AS delta,
       timestamptz '2026-03-01 00:00:00+00' + random() * interval '3 days' AS at
  FROM generate_series(1, 2000) i;
SELECT count(counter.add('hits', key, delta, at => at)) FROM raw;

-- random ranges: series() sums equal raw sums, for every granularity
CREATE TEMP TABLE ranges AS
SELECT r, ts AS f, ts + (1 + floor(random() * 40)) * interval '1 hour' AS t
  FROM (SELECT r, timestamptz '2026-03-01 00:00:00+00' + random() * interval '3 days' AS ts
          FROM generate_series(1, 20) r) x;

CREATE FUNCTION pg_temp.mismatches(g interval) RETURNS int8 LANGUAGE sql AS $$
	SELECT count(*) FROM ranges, unnest(ARRAY['k0', 'k1', 'k2']) AS k
	 WHERE (SELECT coalesce(sum(s.value), 0) FROM counter.series('hits', k, f, t, g) s)
	    <> (SELECT coalesce(sum(delta), 0) FROM raw
	         WHERE raw.key = k
	           AND date_bin(g, raw.at, timestamptz '2000-01-01 00:00:00+00')
	               >= date_bin(g, f, timestamptz '2000-01-01 00:00:00+00')
	           AND date_bin(g, raw.at, timestamptz '2000-01-01 00:00:00+00') < t)
$$;

SELECT g, pg_temp.mismatches(g) FROM unnest('{1 minute,1 hour,1 day}'::interval[]) g;
SELECT counter.compact('hits') >= 0;
SELECT g, pg_temp.mismatches(g) FROM unnest('{1 minute,1 hour,1 day}'::interval[]) g;

-- whole range: series total = value = raw total
SELECT (SELECT sum(value) FROM counter.series('hits', 'k1', '2026-01-01', '2027-01-01', '1 hour'))
     = (SELECT sum(delta) FROM raw WHERE key = 'k1') AS series_is_raw,
       counter.value('hits', 'k1') = (SELECT sum(delta) FROM raw WHERE key = 'k1') AS value_is_raw;

-- a back-dated event lands in its own bucket
SELECT counter.add('hits', 'late', 5, at => '2020-06-01 12:34:56+00');
SELECT * FROM counter.series('hits', 'late', '2020-06-01', '2020-06-02', '1 hour');
SELECT * FROM counter.series('hits', 'late', '2020-06-01', '2020-06-02', '1 minute');

--
-- Retention: minute buckets older than one day go; their sum stays, and
-- newer buckets and the other granularities are untouched.
--
SELECT counter.alter('hits', rollups => '{1 minute,1 hour,1 day}', retention => '{1 day,NULL,NULL}');
SELECT counter.add('hits', 'k0', 7, at => now() - interval '5 minutes');
SELECT counter.compact('hits') >= 0;
SELECT count(*) FILTER (WHERE bucket > '-infinity' AND bucket < now() - interval '1 day') AS old_minute_buckets,
       count(*) FILTER (WHERE bucket > now() - interval '1 day') AS recent_minute_buckets,
       count(*) FILTER (WHERE bucket = '-infinity') > 0 AS kept_in_minus_infinity
  FROM counter.rollups r JOIN counter.counters c ON c.id = r.counter_id
 WHERE c.name = 'hits' AND r.granularity = '1 minute';
SELECT count(*) > 0 AS hour_buckets_kept
  FROM counter.rollups r JOIN counter.counters c ON c.id = r.counter_id
 WHERE c.name = 'hits' AND r.granularity = '1 hour' AND r.bucket < now() - interval '1 day';
SELECT value FROM counter.series('hits', 'k0', now() - interval '1 hour', now() + interval '1 hour', '1 minute');
SELECT granularity, keys, drifted_keys, drift FROM counter.verify('hits');

-- Retention reads rollups only of the counters that keep one: with none,
-- the maintenance of a compaction scans no rollups (before 1.4 it scanned
-- and sorted every rollup of the database, at each of the worker's
-- maintenance rounds, ten seconds apart).
SELECT counter.alter('hits', rollups => '{1 minute,1 hour,1 day}', retention => '{NULL,NULL,NULL}');
DO $$ BEGIN WHILE counter.compact() > 0 LOOP END LOOP; END $$;
SELECT pg_stat_force_next_flush();	-- the scans above are not counted below
BEGIN;
SELECT counter.compact();
SELECT seq_scan + idx_scan AS rollups_scans
  FROM pg_stat_xact_user_tables WHERE relid = 'counter.rollups'::regclass;
COMMIT;

-- One compaction of keys whose events spread over many buckets in no time
-- order, with granularities given out of order: every bucket in
-- counter.rollups is the raw sum of its events (compaction sums each key's
-- buckets in one pass, since 1.4).  A bucket whose running sum leaves
-- bigint on the way and comes back folds: only a final sum is refused.
SELECT counter.create('spread', mode => 'events', rollups => '{1 day,1 minute,1 hour}');
SELECT setseed(0.7);
CREATE TEMP TABLE spread_raw AS
SELECT 'k' || (i % 4) AS key, (1 + floor(random() * 10))::int8 * (CASE WHEN random() < 0.5 THEN -1 ELSE 1 END) AS delta,
       timestamptz '2026-05-01 00:00:00+00' + random() * interval '2 days' AS at
  FROM generate_series(1, 3000) i;
INSERT INTO spread_raw VALUES ('big', 9223372036854775807, '2026-05-01 00:00:10+00'),
	('big', 5, '2026-05-01 00:00:20+00'), ('big', -10, '2026-05-01 00:00:30+00');
-- in one transaction, so that the worker cannot compact the events meanwhile
BEGIN;
SELECT count(counter.add('spread', key, delta, at => at)) FROM spread_raw;
SELECT counter.compact('spread') AS moved;
COMMIT;
SELECT count(*) AS quarantined FROM counter.quarantine;
CREATE FUNCTION pg_temp.spread_check() RETURNS TABLE (buckets int8, mismatched int8, keys_daily int8)
LANGUAGE sql AS $$
WITH truth AS (SELECT key, g, date_bin(g, at, timestamptz '2000-01-01 00:00:00+00') AS bucket,
                      sum(delta) AS value
                 FROM spread_raw, unnest('{1 minute,1 hour,1 day}'::interval[]) AS g
                GROUP BY 1, 2, 3),
     got AS (SELECT r.key, r.granularity AS g, r.bucket, r.value
               FROM counter.rollups r JOIN counter.counters c ON c.id = r.counter_id
              WHERE c.name = 'spread'
             UNION ALL	-- a key in one bucket of each: its total holds them (1.4)
             SELECT t.key, g, date_bin(g, t.sole, timestamptz '2000-01-01 00:00:00+00'), t.value
               FROM counter.totals t JOIN counter.counters c ON c.name = t.counter,
                    unnest(c.rollups) AS g
              WHERE c.name = 'spread' AND t.sole IS NOT NULL)
SELECT count(*), count(*) FILTER (WHERE t.value IS DISTINCT FROM o.value),
       count(DISTINCT (t.key, t.g)) FILTER (WHERE t.g = '1 day')
  FROM truth t FULL JOIN got o USING (key, g, bucket)
$$;
SELECT * FROM pg_temp.spread_check();
-- a second compaction: keys already there, a new key below the greatest
-- one of the counter (inserted ON CONFLICT) and one above it (inserted as
-- new): every bucket and total is still the raw sum
CREATE TEMP TABLE spread_more (key text, delta int8, at timestamptz);
INSERT INTO spread_more VALUES ('k1', 3, '2026-05-01 10:00:30+00'), ('k2', -4, '2026-05-03 10:00:00+00'),
	('a_new', 4, '2026-05-02 10:00:00+00'), ('z_new', 6, '2026-05-02 11:00:00+00');
INSERT INTO spread_raw SELECT * FROM spread_more;
BEGIN;
SELECT count(counter.add('spread', key, delta, at => at)) FROM spread_more;
SELECT counter.compact('spread') AS moved;
COMMIT;
SELECT * FROM pg_temp.spread_check();
SELECT counter.value('spread', 'big') AS big,
       (SELECT sum(value) FROM counter.totals WHERE counter = 'spread')
     = (SELECT sum(delta) FROM spread_raw) AS totals_are_raw;
SELECT counter.drop('spread');

-- A key whose adds all fall in one bucket of each granularity has no row in
-- counter.rollups: its total holds them (totals.sole, 1.4), and series and
-- verify read them there.  More adds in the same buckets keep it so; an
-- add in another bucket writes every bucket out; so do a bucket past
-- retention and counter.alter() of the granularities.  Reads stay exact
-- at every step, in every mode.
CREATE FUNCTION pg_temp.sole_state(c text)
RETURNS TABLE (key text, value int8, sole timestamptz, rollup_rows int8)
LANGUAGE sql AS $$
SELECT t.key, t.value, t.sole,
       (SELECT count(*) FROM counter.rollups r JOIN counter.counters k ON k.id = r.counter_id
         WHERE k.name = c AND r.key = t.key)
  FROM counter.totals t WHERE t.counter = c ORDER BY t.key
$$;
CREATE FUNCTION pg_temp.sole_reads(c text, k text)
RETURNS TABLE (hourly text, daily text, drift numeric)
LANGUAGE sql AS $$
SELECT (SELECT string_agg(to_char(bucket AT TIME ZONE 'UTC', 'DD HH24') || '=' || value, ' ' ORDER BY bucket)
          FROM counter.series(c, k, '2026-06-01', '2026-06-05', '1 hour')),
       (SELECT string_agg(to_char(bucket AT TIME ZONE 'UTC', 'DD') || '=' || value, ' ' ORDER BY bucket)
          FROM counter.series(c, k, '2026-06-01', '2026-06-05', '1 day')),
       (SELECT sum(drift) + sum(drifted_keys) FROM counter.verify(c))
$$;
-- (each compaction below folds what the worker has not folded yet)
SELECT mode, counter.create('sole_' || mode, mode => mode, rollups => '{1 hour,1 day}')
  FROM unnest('{events,slots,buffered}'::text[]) AS mode;
SELECT count(counter.add('sole_events', k, d, at => t::timestamptz))
  FROM (VALUES ('a', 5, '2026-06-02 10:10+00'), ('a', 2, '2026-06-02 10:20+00'),
               ('b', 1, '2026-06-02 10:20+00'), ('b', 1, '2026-06-02 11:20+00')) AS v(k, d, t);
SELECT counter.compact() >= 0 AS folded;
SELECT * FROM pg_temp.sole_state('sole_events');
SELECT * FROM pg_temp.sole_reads('sole_events', 'a');
SELECT * FROM pg_temp.sole_reads('sole_events', 'b');
-- the same buckets again: still held by the total
SELECT counter.add('sole_events', 'a', 3, at => '2026-06-02 10:50+00');
SELECT counter.compact() >= 0 AS folded;
SELECT * FROM pg_temp.sole_state('sole_events') WHERE key = 'a';
SELECT * FROM pg_temp.sole_reads('sole_events', 'a');
-- another hour: every bucket written out, the total's among them
SELECT counter.add('sole_events', 'a', 4, at => '2026-06-02 12:50+00');
SELECT counter.compact() >= 0 AS folded;
SELECT * FROM pg_temp.sole_state('sole_events') WHERE key = 'a';
SELECT * FROM pg_temp.sole_reads('sole_events', 'a');
-- a new granularity: the held buckets are written out, the new one starts
-- from the total (in its -infinity bucket)
SELECT counter.add('sole_events', 'c', 7, at => '2026-06-03 09:00+00');
SELECT counter.compact() >= 0 AS folded;
SELECT counter.alter('sole_events', rollups => '{1 hour,1 day,7 days}');
SELECT * FROM pg_temp.sole_state('sole_events') WHERE key = 'c';
SELECT * FROM pg_temp.sole_reads('sole_events', 'c');
-- past retention: written out, then moved to the -infinity bucket (one
-- compaction folds the key, then applies retention)
SELECT counter.create('sole_kept', mode => 'events', rollups => '{1 hour,1 day}',
                      retention => '{2 days,NULL}');
SELECT counter.add('sole_kept', 'old', 9, at => now() - interval '30 days');
SELECT counter.compact() >= 0 AS folded;
SELECT key, value, sole IS NOT NULL AS held FROM counter.totals WHERE counter = 'sole_kept';
SELECT r.granularity, r.bucket = '-infinity' AS folded_away, r.value
  FROM counter.rollups r JOIN counter.counters k ON k.id = r.counter_id
 WHERE k.name = 'sole_kept' ORDER BY 1;
SELECT sum(drift) + sum(drifted_keys) AS drift FROM counter.verify('sole_kept');
-- slots and buffered adds (bucketed when compacted) are held the same way
SELECT counter.add('sole_slots', 's', 1), counter.add('sole_slots', 's', 2),
       counter.add('sole_buffered', 's', 3);
SELECT counter.compact() >= 0 AS folded;
SELECT k.name, t.value, t.sole IS NOT NULL AS held,
       (SELECT count(*) FROM counter.rollups r WHERE r.counter_id = k.id) AS rollup_rows,
       (SELECT sum(value) FROM counter.series(k.name, 's', now() - interval '1 day', now() + interval '1 day', '1 day')) AS daily,
       (SELECT sum(drift) + sum(drifted_keys) FROM counter.verify(k.name)) AS drift
  FROM counter.counters k JOIN counter.totals t ON t.counter = k.name
 WHERE k.name IN ('sole_slots', 'sole_buffered') ORDER BY 1;
SELECT count(counter.drop(name)) AS dropped FROM counter.counters WHERE name LIKE 'sole\_%';

-- A whole events table's fold streams its keys in (counter, key) order to
-- its inserts: the rollups rows of keys added in two hours are inserted in
-- primary-key order (seen by a trigger that logs each insert; joined to
-- the fold's row per counter by a hash join, they came in reverse).  The
-- adds and their compaction in one transaction, so the worker cannot fold
-- them first (in batches, which sort).
SELECT counter.compact() >= 0 AS settled;
SELECT counter.create('stream', mode => 'events', rollups => '{1 hour,1 day}');
CREATE TABLE stream_log (n bigserial, key text COLLATE "C", granularity interval, bucket timestamptz);
CREATE FUNCTION stream_logged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.stream_log (key, granularity, bucket) VALUES (NEW.key, NEW.granularity, NEW.bucket);
	RETURN NULL;
END $$;
CREATE TRIGGER stream_logged AFTER INSERT ON counter.rollups FOR EACH ROW EXECUTE FUNCTION stream_logged();
BEGIN;
SELECT count(counter.add('stream', 'k' || lpad(i::text, 5, '0'), 1, at => '2026-06-02 10:10+00'))
  FROM generate_series(1, 2000) i;
SELECT count(counter.add('stream', 'k' || lpad(i::text, 5, '0'), 1, at => '2026-06-02 11:10+00'))
  FROM generate_series(1, 2000) i;
SELECT counter.compact('stream');
COMMIT;
SELECT count(*) AS rows, bool_and(n > prev) AS in_key_order
  FROM (SELECT n, lag(n) OVER (ORDER BY key, granularity, bucket) AS prev FROM stream_log) l
 WHERE prev IS NOT NULL;
DROP TRIGGER stream_logged ON counter.rollups;
DROP FUNCTION stream_logged();
DROP TABLE stream_log;
SELECT counter.drop('stream');

SELECT counter.drop('hits');
DROP EXTENSION counter;
