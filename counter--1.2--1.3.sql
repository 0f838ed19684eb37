/* counter--1.2--1.3.sql: wal mode, durable buffered adds logged in WAL */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION counter UPDATE TO '1.3'" to load this file. \quit

-- Mode 'wal': an add is kept in shared memory like a buffered one, and its
-- transaction writes one WAL record of its adds before it commits, so a
-- crash loses nothing: the worker replays the records not flushed yet.
ALTER TABLE counter.counters DROP CONSTRAINT counters_mode_check;
ALTER TABLE counter.counters ADD CONSTRAINT counters_mode_check
	CHECK (mode IN ('slots', 'events', 'buffered', 'wal'));

-- Where the replay of wal-mode records starts, as the last flush committed
-- it: start_lsn (the WAL before it is flushed into totals, and kept no
-- longer: the database's replication slot counter_wal_<oid> is advanced to
-- it), and per backend number the last transaction sequence number the
-- flush included (records of those transactions at or after start_lsn are
-- skipped).  NULL start_lsn: no wal-mode counter yet, no slot.  Not dumped:
-- a restored database starts without WAL of its own to replay.
CREATE TABLE counter.wal_state (
	one			bool PRIMARY KEY DEFAULT true CHECK (one),
	start_lsn	pg_lsn,
	seqs		int8[] NOT NULL DEFAULT '{}'
);
INSERT INTO counter.wal_state DEFAULT VALUES;
REVOKE ALL ON counter.wal_state FROM PUBLIC;
