-- Proves membership counters' registers (1.4) on one node and their merge as apply workers run it: every like/unlike writes the member's row (an unlike of an unknown member leaves an unliked row, a tombstone, that a later like revives), stamps only grow per row, return values and the count follow the liked rows, is_member/members() skip tombstones, a dropped counter's rows go; with session_replication_role = replica (rows as a peer sends them) a later peer row wins and this node's count follows (issue 14's cases: the same like on two nodes counts 1, a like and a later unlike elsewhere end at 0), an earlier row or an echo changes nothing, equal stamps go to the higher node id, a peer's row for a member unknown here is taken as it is, a peer's deletion of a row liked here takes it off the count, corrections pass a bound; counter._correct is not for PUBLIC.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;
\set SHOW_CONTEXT never

SELECT counter.create('m', members => true);
SELECT counter.create('m_ev', mode => 'events', members => true);

-- this node's id is 1 (the default); the rows as the registers hold them
CREATE VIEW rows AS
SELECT counter, key, member, liked, node FROM counter.members ORDER BY counter, key, member;

--
-- One node
--
SELECT counter."like"('m', 'A', 'alice');                 -- t: new
SELECT counter."like"('m', 'A', 'alice');                 -- f: liked already
SELECT counter.unlike('m', 'A', 'bob');                   -- f: not liked, but a tombstone
SELECT counter.value('m', 'A'), counter.is_member('m', 'A', 'bob');
SELECT * FROM rows;
SELECT counter."like"('m', 'A', 'bob');                   -- t: revived
SELECT counter.unlike('m', 'A', 'alice');                 -- t
SELECT counter.unlike('m', 'A', 'alice');                 -- f: a tombstone again
SELECT counter.value('m', 'A'), counter.is_member('m', 'A', 'alice'), counter.is_member('m', 'A', 'bob');
SELECT * FROM counter.members('m', 'A');
-- pages skip tombstones: carol, dave, erin liked, bob unliked
SELECT count(counter."like"('m', 'A', x)) FROM unnest(ARRAY['carol', 'dave', 'erin']) x;
SELECT counter.unlike('m', 'A', 'bob');
SELECT * FROM counter.members('m', 'A', 2);
SELECT * FROM counter.members('m', 'A', 2, after => 'dave');
SELECT * FROM counter.members('m', 'A', 10, after => 'alice');
SELECT counter.value('m', 'A');

-- every write of a row stamps it later, in one transaction too
CREATE TEMP TABLE stamps (n int, stamp timestamptz);
BEGIN;
INSERT INTO stamps SELECT 0, stamp FROM counter.members WHERE counter = 'm' AND member = 'carol';
SELECT counter.unlike('m', 'A', 'carol'), counter."like"('m', 'A', 'carol'), counter."like"('m', 'A', 'carol');
INSERT INTO stamps SELECT 1, stamp FROM counter.members WHERE counter = 'm' AND member = 'carol';
COMMIT;
SELECT (SELECT stamp FROM stamps WHERE n = 1) > (SELECT stamp FROM stamps WHERE n = 0) AS later;
-- a row stamped in the future (a peer's fast clock): the next write still beats it
UPDATE counter.members SET stamp = '3000-01-01 00:00:00+00' WHERE counter = 'm' AND member = 'dave';
SELECT counter.unlike('m', 'A', 'dave');
SELECT stamp - '3000-01-01 00:00:00+00' AS past_the_future FROM counter.members
 WHERE counter = 'm' AND member = 'dave';

-- the same in events mode, through compaction
SELECT counter."like"('m_ev', 'A', 'alice'), counter."like"('m_ev', 'A', 'bob'),
       counter.unlike('m_ev', 'A', 'bob'), counter.unlike('m_ev', 'A', 'carol');
SELECT counter.compact('m_ev') >= 0;
SELECT counter.value('m_ev', 'A'), (SELECT count(*) FROM counter.members('m_ev', 'A'));

-- value = liked rows, per key, in both counters
SELECT c, counter.value(c, 'A') AS value,
       (SELECT count(*) FROM counter.members WHERE counter = c AND key = 'A' AND liked) AS liked
  FROM unnest(ARRAY['m', 'm_ev']) c;

--
-- Rows from peers, as an apply worker applies them
--
SELECT counter.create('p', members => true);
-- a row of node n, stamped secs seconds from now, as replication applies it
CREATE FUNCTION peer(c text, k text, mem text, liked bool, n int, secs int)
RETURNS void LANGUAGE sql AS
$$ INSERT INTO counter.members (counter, key, member, liked, node, stamp)
   VALUES (c, k, mem, liked, n, now() + secs * interval '1 second') $$;

-- issue 14, row 1: alice likes A here and on node 2 (later): it counts once
SELECT counter."like"('p', 'A', 'alice');
SET session_replication_role = replica;
SELECT peer('p', 'A', 'alice', true, 2, 10);
SELECT * FROM rows WHERE counter = 'p';
SELECT counter.value('p', 'A');                          -- 0 here: node 2's shard has it
-- its echo, and an earlier row of node 3: nothing changes
UPDATE counter.members SET liked = true, node = 2, stamp = stamp WHERE counter = 'p' AND member = 'alice';
SELECT peer('p', 'A', 'alice', false, 3, -10);
SELECT * FROM rows WHERE counter = 'p';
SELECT counter.value('p', 'A');

-- issue 14, row 2: bob likes B here, a node that had not seen it unlikes later: 0
RESET session_replication_role;
SELECT counter."like"('p', 'B', 'bob');
SELECT counter.value('p', 'B');
SET session_replication_role = replica;
SELECT peer('p', 'B', 'bob', false, 2, 10);
SELECT counter.value('p', 'B'), counter.is_member('p', 'B', 'bob');

-- equal stamps: the higher node id wins
RESET session_replication_role;
SELECT counter."like"('p', 'C', 'carol');
SET session_replication_role = replica;
INSERT INTO counter.members (counter, key, member, liked, node, stamp)
SELECT 'p', 'C', 'carol', false, 2, stamp FROM counter.members WHERE counter = 'p' AND key = 'C';
SELECT counter.value('p', 'C'), counter.is_member('p', 'C', 'carol');
INSERT INTO counter.members (counter, key, member, liked, node, stamp)
SELECT 'p', 'C', 'carol', true, 1, stamp FROM counter.members WHERE counter = 'p' AND key = 'C';
SELECT counter.value('p', 'C'), counter.is_member('p', 'C', 'carol');   -- node 1 lost the tie

-- after a peer's unlike, a like here is later still
RESET session_replication_role;
SELECT counter."like"('p', 'C', 'carol');                -- t, +1 here
SELECT counter.value('p', 'C');
-- a member unknown here, liked by node 2; an unlike here takes it over as unliked
SET session_replication_role = replica;
SELECT peer('p', 'D', 'dan', true, 2, -5);
SELECT counter.value('p', 'D'), counter.is_member('p', 'D', 'dan');     -- 0: node 2 counts it
RESET session_replication_role;
SELECT counter.unlike('p', 'D', 'dan');                  -- t: it was liked (by node 2)
SELECT counter.value('p', 'D'), counter.is_member('p', 'D', 'dan');     -- node 2 takes its 1 off
SELECT counter."like"('p', 'D', 'dan');                  -- t: liked here now, +1
SELECT counter.value('p', 'D');
SELECT counter.unlike('p', 'E', 'erin');                 -- f: a tombstone
SELECT * FROM rows WHERE counter = 'p';

-- the initial copy of a node that joins: rows that exist are merged, the
-- others taken as they are
SET session_replication_role = replica;
COPY counter.members (counter, key, member, liked, node, stamp) FROM stdin;
p	A	alice	true	3	2000-01-01 00:00:00+00
p	E	erin	true	3	2000-01-01 00:00:00+00
p	F	fay	true	3	2000-01-01 00:00:00+00
\.
SELECT * FROM rows WHERE counter = 'p' AND key IN ('A', 'E', 'F');

-- a peer deletes the rows (the counter dropped there): liked rows of this
-- node leave this node's count
DELETE FROM counter.members WHERE counter = 'p' AND key = 'D';
RESET session_replication_role;
SELECT counter.value('p', 'D'), counter.is_member('p', 'D', 'dan');

-- this node's shard counts its own liked rows
SELECT (SELECT sum(counter.value('p', k)) FROM unnest(ARRAY['A', 'B', 'C', 'D', 'E', 'F']) k) AS value,
       (SELECT count(*) FROM counter.members WHERE counter = 'p' AND liked AND node = 1) AS own_liked;

-- a correction passes a bound: a row of this node's own that it lacked
-- (the echo of a row deleted here, say) counts, at the max already
SELECT counter.create('pb', members => true, max => 1);
SELECT counter."like"('pb', 'A', 'alice');
SET session_replication_role = replica;
SELECT peer('pb', 'A', 'bob', true, 1, 0);
-- and the rows of a counter not defined here change no count
SELECT peer('elsewhere', 'A', 'alice', true, 1, 0);
RESET session_replication_role;
SELECT counter.value('pb', 'A'), (SELECT count(*) FROM counter.members('pb', 'A'));
DELETE FROM counter.members WHERE counter = 'elsewhere';

--
-- A counter's member rows go with it; counter._correct is internal
--
SELECT counter.drop('m');
SELECT counter, count(*) FROM counter.members GROUP BY counter ORDER BY counter;
CREATE ROLE counter_members_other;
SET ROLE counter_members_other;
SELECT counter._correct('p', 'A', 1);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE counter_members_other;

DROP FUNCTION peer(text, text, text, bool, int, int);
DROP VIEW rows;
SELECT counter.drop(name) FROM counter.list();
SELECT count(*) FROM counter.members;
DROP EXTENSION counter;
