-- Proves idempotency claims on one node and their merge with claims that replication brings (simulated with session_replication_role = replica, as apply workers run; this node is node 1): a claim records its counter's name and this node; an expired claim is replaced by a new one (delete and insert); a replicated claim is stored whole, its counter id found by name; an earlier claim of the same key from another node wins, this node's own add is undone on its shard and counted in counter.stats (idempotency_conflicts, and idempotency_mismatches with a WARNING when it named another add); a later, equal or far-apart claim keeps the right winner; replicated deletes are skipped; counter._correct adds past a bound and is refused to PUBLIC.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;
\set SHOW_CONTEXT never
-- this node is node 1 (counter.node_id's default)
SELECT counter.create('ic');
SELECT counter.create('ic_events', mode => 'events');
SELECT counter.add('ic', 'k', 1, idempotency_key => 'c-1');
SELECT idem, counter, key, delta, node, counter_id = (SELECT id FROM counter.counters WHERE name = 'ic') AS local_id
  FROM counter.idempotency WHERE idem = 'c-1';
-- an expired claim is replaced: the add applies again, the claim is new
UPDATE counter.idempotency SET created = created - interval '2 days' WHERE idem = 'c-1';
SELECT counter.add('ic', 'k', 3, idempotency_key => 'c-1');
SELECT counter.value('ic', 'k'), (SELECT delta FROM counter.idempotency WHERE idem = 'c-1'),
       (SELECT created > now() - interval '1 minute' FROM counter.idempotency WHERE idem = 'c-1');

-- replicated claims (as an apply worker writes them)
SET session_replication_role = replica;
-- a new key: stored whole, with this node's id of the counter
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
VALUES ('r-1', 9999, 'k', 5, now(), 'ic', 3);
SELECT idem, counter, key, delta, node, counter_id = (SELECT id FROM counter.counters WHERE name = 'ic') AS local_id
  FROM counter.idempotency WHERE idem = 'r-1';
-- a counter this node does not have: kept, without an id
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
VALUES ('r-2', 9999, 'k', 5, now(), 'nowhere', 3);
SELECT counter_id IS NULL, counter FROM counter.idempotency WHERE idem = 'r-2';
-- an expired one is not stored
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
VALUES ('r-3', 1, 'k', 5, now() - interval '2 days', 'ic', 3);
SELECT count(*) FROM counter.idempotency WHERE idem = 'r-3';
-- replicated deletes are skipped (each node forgets by itself)
DELETE FROM counter.idempotency WHERE idem = 'r-1';
SELECT count(*) FROM counter.idempotency WHERE idem = 'r-1';
RESET session_replication_role;

-- a retry here of a replicated claim's add is a repeat, another add 22023
SELECT counter.add('ic', 'k', 5, idempotency_key => 'r-1');
SELECT counter.value('ic', 'k');
\set VERBOSITY terse
SELECT counter.add('ic', 'k', 6, idempotency_key => 'r-1');
\set VERBOSITY default

-- this node's claims, made now
SELECT counter.add('ic', 'k', 10, idempotency_key => 'own-1');
SELECT counter.add('ic_events', 'e', 7, idempotency_key => 'own-2');
SELECT counter.add('ic', 'k', 20, idempotency_key => 'own-3');
SELECT counter.add('ic', 'k', 30, idempotency_key => 'own-4');
SELECT counter.value('ic', 'k'), counter.value('ic_events', 'e');
SET session_replication_role = replica;
-- a later claim of own-1 from node 2: this node's claim wins, nothing changes
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
VALUES ('own-1', 1, 'k', 10, now() + interval '1 second', 'ic', 2);
-- a tie (the same claim time) from node 3: the lower node id, this one, wins
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
SELECT 'own-1', 1, 'k', 10, created, 'ic', 3 FROM counter.idempotency WHERE idem = 'own-1';
-- its echo (the same claim) changes nothing either
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
SELECT idem, counter_id, key, delta, created, counter, node FROM counter.idempotency WHERE idem = 'own-1';
SELECT node, delta FROM counter.idempotency WHERE idem = 'own-1';
-- earlier claims of own-1 from node 3 and of own-2 from node 2: this
-- node's adds are undone
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
VALUES ('own-1', 1, 'k', 10, now() - interval '1 second', 'ic', 3);
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
SELECT 'own-2', 1, 'e', 7, created - interval '1 ms', 'ic_events', 2
  FROM counter.idempotency WHERE idem = 'own-2';
-- a claim from node 2 earlier still than own-1's winner: no undo here (this
-- node's add is undone already), the winner changes
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
VALUES ('own-1', 1, 'k', 10, now() - interval '2 seconds', 'ic', 2);
-- an earlier claim of own-3 for another add (delta 2): undone, and reported
\set VERBOSITY terse
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
VALUES ('own-3', 1, 'k', 2, now() - interval '1 minute', 'ic', 2);
\set VERBOSITY default
-- a claim of own-4 made a window before: another add, so this node's stays
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
VALUES ('own-4', 1, 'k', 30, now() - interval '25 hours', 'ic', 2);
-- and a claim made a window after this node's replaces it, as a new add
INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
VALUES ('r-1', 1, 'k', 5, now() + interval '25 hours', 'ic', 2);
RESET session_replication_role;
SELECT idem, node, delta FROM counter.idempotency WHERE idem LIKE 'own-%' OR idem = 'r-1' ORDER BY idem;
-- the winners' adds are theirs (on their shards): here 1 + 3 + 30 and 0 remain
SELECT counter.value('ic', 'k'), counter.value('ic_events', 'e');
SELECT counter.compact() >= 0;
SELECT counter.value('ic', 'k'), counter.value('ic_events', 'e');
SELECT name, idempotency_conflicts, idempotency_mismatches FROM counter.stats
 WHERE name LIKE 'ic%' ORDER BY name;
-- a retry here of own-3's losing add is now another add than the winner's
\set VERBOSITY terse
SELECT counter.add('ic', 'k', 20, idempotency_key => 'own-3');
\set VERBOSITY default
SELECT counter.add('ic', 'k', 2, idempotency_key => 'own-3');
SELECT counter.value('ic', 'k');

-- counter._correct: past a bound, on this node's shard; internal only
SELECT counter.create('ic_bounded', min => 0, max => 10);
SELECT counter.add('ic_bounded', 'b', 10);
SELECT counter._correct('ic_bounded', 'b', 5);
SELECT counter.value('ic_bounded', 'b');
SELECT counter._correct('ic_bounded', 'b', -15);
SELECT counter.value('ic_bounded', 'b');
SELECT counter._correct(NULL, 'b', 1) IS NULL AS strict;
-- a key claimed for an add that a bound refuses leaves no claim behind (its
-- subtransaction is rolled back), and a later add may use it
SELECT counter.try_add('ic_bounded', 'c', 11, idempotency_key => 'b-1');
SELECT count(*) FROM counter.idempotency WHERE idem = 'b-1';
SELECT counter.try_add('ic_bounded', 'c', 4, idempotency_key => 'b-1');
SELECT counter.try_add('ic_bounded', 'c', 4, idempotency_key => 'b-1');
SELECT node, delta FROM counter.idempotency WHERE idem = 'b-1';
\set VERBOSITY terse
SELECT counter._correct('no_such', 'b', 1);
CREATE ROLE ic_plain;
SET ROLE ic_plain;
SELECT counter._correct('ic', 'k', 1);
RESET ROLE;
\set VERBOSITY default
DROP ROLE ic_plain;

-- counter.drop() forgets the counter's claims and conflicts
SELECT counter.drop('ic');
SELECT counter.drop('ic_events');
SELECT counter.drop('ic_bounded');
SELECT idem, counter_id IS NULL AS no_id FROM counter.idempotency ORDER BY idem;
SELECT count(*) FROM counter.idempotency_conflicts;
DROP EXTENSION counter;
