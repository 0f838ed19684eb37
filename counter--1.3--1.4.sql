/* counter--1.3--1.4.sql: hardening (isolated compaction failures, private change feed, security barrier) */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION counter UPDATE TO '1.4'" to load this file. \quit

-- == section: quarantine (compaction that one bad key cannot stop) ==

-- == end section: quarantine ==

-- == section: feed (change feed only for roles that may read) ==

-- == end section: feed ==

-- == section: misc ==

-- == end section: misc ==
