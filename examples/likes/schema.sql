-- The likes example's schema: two counters and one function per API call,
-- so that each HTTP request is one statement (one round trip, and one
-- transaction: what pgbouncer's transaction pooling needs).  Every call
-- reads the key back with counter.get() in the same transaction, which
-- sees the call's own add: the answer is the exact count after it.

-- post_counter: anonymous increments and decrements of a post's count;
-- likes: a membership counter (one like per user and post).  Both with the
-- change feed on (off by default since 1.4): the service pushes counts live.
SELECT counter.create('post_counter', mode => 'events', feed => true)
 WHERE NOT EXISTS (SELECT 1 FROM counter.list() WHERE name = 'post_counter');
SELECT counter.create('likes', mode => 'events', members => true, feed => true)
 WHERE NOT EXISTS (SELECT 1 FROM counter.list() WHERE name = 'likes');

CREATE SCHEMA IF NOT EXISTS likes_api;

-- PUT /v1/<post>/counter: add delta (idem: the Idempotency-Key header; a
-- repeat with the same key and delta adds nothing), return the count.
CREATE OR REPLACE FUNCTION likes_api.bump(post text, delta int8, idem text,
										  OUT count int8, OUT updated_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM counter.add('post_counter', post, delta, idempotency_key => idem);
	SELECT g.value, g.updated_at INTO count, updated_at FROM counter.get('post_counter', post) g;
END $$;

-- GET /v1/<post>/counter
CREATE OR REPLACE FUNCTION likes_api.read(post text, OUT count int8, OUT updated_at timestamptz)
LANGUAGE sql STABLE AS $$
	SELECT g.value, g.updated_at FROM counter.get('post_counter', post) g
$$;

-- PUT (liked true) / DELETE (liked false) /v1/<post>/likes/<usr>: changed
-- tells whether this call made the difference.
CREATE OR REPLACE FUNCTION likes_api.set_like(post text, usr text, liked bool,
											  OUT changed bool, OUT count int8,
											  OUT updated_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
	IF liked THEN
		changed := counter.like('likes', post, usr);
	ELSE
		changed := counter.unlike('likes', post, usr);
	END IF;
	SELECT g.value, g.updated_at INTO count, updated_at FROM counter.get('likes', post) g;
END $$;

-- GET /v1/<post>/likes/<usr>
CREATE OR REPLACE FUNCTION likes_api.get_like(post text, usr text,
											  OUT liked bool, OUT count int8,
											  OUT updated_at timestamptz)
LANGUAGE sql STABLE AS $$
	SELECT counter.is_member('likes', post, usr), g.value, g.updated_at
	  FROM counter.get('likes', post) g
$$;

-- GET /v1/stream: the current counts of a set of posts (an SSE stream's
-- first events, and again after the feed connection was lost).
CREATE OR REPLACE FUNCTION likes_api.snapshot(posts text[])
RETURNS TABLE (counter text, post text, count int8, updated_at timestamptz)
LANGUAGE sql STABLE AS $$
	SELECT c.c, p.p, g.value, g.updated_at
	  FROM unnest(posts) AS p(p), unnest(ARRAY['likes', 'post_counter']) AS c(c),
	       LATERAL counter.get(c.c, p.p) g
$$;
