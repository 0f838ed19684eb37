-- Proves the security model where one session can show it: counter.stats is a security barrier (a cheap leaky function in WHERE sees only readable counters, counter.list() too), counter.channel() tells the private feed channel only to readers, counter.revoke of read or admin rotates it (add does not), rights follow a superuser bit taken away within the session, and every read function refuses a role without read (42501).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;
\set SHOW_CONTEXT never

CREATE ROLE counter_sec_owner;
CREATE ROLE counter_sec_other;
CREATE ROLE counter_sec_super SUPERUSER;
SET ROLE counter_sec_owner;
SELECT counter.create('sec_secret', members => true);
SELECT counter.create('sec_shared', mode => 'events');
SELECT counter."like"('sec_secret', 'k', 'm1');
SELECT counter.add('sec_shared', 'k', 2);
SELECT counter.grant('sec_shared', 'counter_sec_other', 'read');
RESET ROLE;

-- a leaky function, cheaper than counter.can_read() (no casts in its
-- arguments, which would add to its cost), that shows its arguments
CREATE FUNCTION sec_leak(text, regrole, text) RETURNS bool
LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
	RAISE NOTICE 'saw % owned by % in mode %', $1, $2, $3;
	RETURN true;
END $$;

--
-- counter.stats is a security barrier: only sec_shared reaches sec_leak()
--
SELECT reloptions FROM pg_class WHERE oid = 'counter.stats'::regclass;
SET ROLE counter_sec_other;
SELECT name, quarantined_keys FROM counter.stats
 WHERE sec_leak(name, owner, mode) AND name LIKE 'sec\_%';
SELECT name FROM counter.list() WHERE sec_leak(name, owner, mode) AND name LIKE 'sec\_%';
RESET ROLE;

--
-- The feed channel: random, per counter, told only to readers
--
SET ROLE counter_sec_owner;
SELECT counter.channel('sec_shared') ~ '^counter_[0-9a-f]{32}$' AS random_channel,
       counter.channel('sec_shared') <> counter.channel('sec_secret') AS per_counter;
SELECT counter.channel('sec_shared') AS ch0 \gset
SET ROLE counter_sec_other;
SELECT counter.channel('sec_shared') = :'ch0' AS reader_gets_it;
SELECT counter.channel('sec_secret');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.channel(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.channel('sec_nope');
\echo :LAST_ERROR_SQLSTATE

-- revoking add keeps the channel; revoking read gives a new one
SET ROLE counter_sec_owner;
SELECT counter.grant('sec_shared', 'counter_sec_other', 'add');
SELECT counter.revoke('sec_shared', 'counter_sec_other', 'add');
SELECT counter.channel('sec_shared') = :'ch0' AS kept_on_add_revoke;
SELECT counter.revoke('sec_shared', 'counter_sec_other', 'read');
SELECT counter.channel('sec_shared') <> :'ch0' AS rotated_on_read_revoke;
SELECT counter.channel('sec_shared') AS ch1 \gset
SET ROLE counter_sec_other;
SELECT counter.channel('sec_shared');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM counter.stats WHERE name LIKE 'sec\_%';

-- admin includes read: revoking it rotates too; so does a revoke from a
-- role holding no grant (to cut off one that lost a membership)
SET ROLE counter_sec_owner;
SELECT counter.grant('sec_shared', 'counter_sec_other', 'admin');
SELECT counter.revoke('sec_shared', 'counter_sec_other', 'admin');
SELECT counter.channel('sec_shared') <> :'ch1' AS rotated_on_admin_revoke;
SELECT counter.channel('sec_shared') AS ch2 \gset
SELECT counter.revoke('sec_shared', 'public', 'read');
SELECT counter.channel('sec_shared') <> :'ch2' AS rotated_without_grant;
-- a rolled-back revoke keeps the channel
SELECT counter.channel('sec_shared') AS ch3 \gset
BEGIN;
SELECT counter.revoke('sec_shared', 'counter_sec_other', 'read');
ROLLBACK;
SELECT counter.channel('sec_shared') = :'ch3' AS kept_on_rollback;
RESET ROLE;

--
-- A superuser bit taken away counts at once (the rights were cached)
--
SET ROLE counter_sec_super;
SELECT counter.value('sec_secret', 'k');
RESET ROLE;
ALTER ROLE counter_sec_super NOSUPERUSER;
SET ROLE counter_sec_super;
SELECT counter.value('sec_secret', 'k');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

--
-- Every read of a counter needs read (42501), hidden helpers included
--
SET ROLE counter_sec_other;
SELECT counter.value('sec_secret', 'k');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM counter."values"('sec_secret', '{k}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM counter.top('sec_secret');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM counter.series('sec_secret', 'k', now() - interval '1 day', now());
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM counter.verify('sec_secret');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.is_member('sec_secret', 'k', 'm1');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM counter.members('sec_secret', 'k');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.compact('sec_secret');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM counter._buffered('sec_secret');
\echo :LAST_ERROR_SQLSTATE
SELECT counter._buffered_unflushed('sec_secret') IS NULL AS unflushed_hidden,
       counter.can_read('sec_secret') AS can_read;
SELECT count(*) FROM counter.counters;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

SELECT counter.drop(name) FROM counter.list() WHERE name LIKE 'sec\_%';
DROP FUNCTION sec_leak(text, regrole, text);
DROP ROLE counter_sec_owner;
DROP ROLE counter_sec_other;
DROP ROLE counter_sec_super;
DROP EXTENSION counter;
