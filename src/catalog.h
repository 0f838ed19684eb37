/*-------------------------------------------------------------------------
 *
 * catalog.h
 *	  The extension's catalog: counters' metadata and rights, the hidden
 *	  tables' OIDs, and internal SQL run as the extension's owner.
 *
 * A counter key's exact value is the sum of four sources, always read in
 * one snapshot:
 *
 *	- totals:	compacted per-node PN-counter state (counter.totals), one row
 *				per (counter, key, node); peer nodes' rows arrive by logical
 *				replication;
 *	- slots:	live slot rows (counter.slots) updated by adds in slots mode;
 *	- events:	append-only event rows (counter.events) inserted by adds in
 *				events mode and not yet compacted;
 *	- buffered:	increments held in shared memory by adds in buffered mode.
 *
 * The mode of a counter only decides where a new add goes; a read always
 * sums every source, so switching modes or slot counts is exact at once.
 * The background worker moves slots, events and buffered deltas into totals
 * and rollups, each move in one transaction.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_CATALOG_H
#define COUNTER_CATALOG_H

#include "postgres.h"
#include "access/attnum.h"
#include "access/skey.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/timestamp.h"

#define COUNTER_SCHEMA			"counter"
#define COUNTER_NAME_MAXLEN		55	/* counter_<name> fits a channel name */
#define COUNTER_KEY_MAXLEN		1024

/* modes, as stored in counter.counters.mode */
typedef enum CounterMode
{
	COUNTER_MODE_SLOTS,
	COUNTER_MODE_EVENTS,
	COUNTER_MODE_BUFFERED,
	COUNTER_MODE_WAL
} CounterMode;

/* privilege bits of counter.grants; the owner holds all of them */
#define COUNTER_PRIV_READ		0x01
#define COUNTER_PRIV_ADD		0x02
#define COUNTER_PRIV_ADMIN		0x04
#define COUNTER_PRIV_ALL		0x07

/* one grant of a counter, cached with its metadata */
typedef struct CounterGrant
{
	Oid			grantee;		/* InvalidOid means PUBLIC */
	int			privs;
} CounterGrant;

/* backend-local copy of one counter.counters row */
typedef struct CounterMeta
{
	char		name[COUNTER_NAME_MAXLEN + 1];	/* hash key */
	int32		id;
	Oid			owner;
	CounterMode mode;
	int32		nslots;
	bool		has_min;
	bool		has_max;
	int64		min;
	int64		max;
	bool		members;
	TimestampTz created;		/* tells incarnations of one id apart */
	char		feed_channel[NAMEDATALEN];	/* "" before version 1.4 */
	bool		feed;			/* compaction feeds its keys (true before 1.4) */
	int			ngrants;
	CounterGrant *grants;		/* in CacheMemoryContext */
	Oid			checked_user;	/* last role checked, and its rights */
	int			checked_privs;
	int32		last_slot;		/* slot number this backend last added to */
} CounterMeta;

/* OIDs of the extension's relations, cached per backend */
typedef struct CounterRels
{
	bool		valid;
	Oid			schema;
	Oid			owner;			/* owner of the schema: runs internal SQL */
	Oid			counters;
	Oid			grants;
	Oid			slots;
	Oid			slots_pkey;
	Oid			events[2];		/* events tables 0 and 1; [1] InvalidOid */
	Oid			events_key[2];	/* before version 1.2 */
	Oid			event_tables;
	Oid			totals;
	Oid			totals_pkey;
	Oid			flushed;		/* InvalidOid before version 1.1 */
	Oid			flushed_pkey;
	AttrNumber	feed_channel;	/* of counters; InvalidAttrNumber before 1.4 */
	Oid			quarantine;		/* InvalidOid before version 1.4 */
	AttrNumber	totals_updated; /* of totals; InvalidAttrNumber before 1.4 */
	AttrNumber	feed;			/* of counters; InvalidAttrNumber before 1.4 */
	Oid			totals_top;		/* (counter, node, value DESC, key) since 1.4 */
	int			version;		/* installed extension version: 104 for 1.4 */
} CounterRels;

/* the version of the extension's SQL this library was built with (1.4) */
#define COUNTER_VERSION_CURRENT 104

/*
 * One internal SQL statement: its text, argument types, and the plan
 * prepared on first use and kept for the life of the backend.
 */
typedef struct CounterStmt
{
	const char *sql;
	int			nargs;
	Oid			argtypes[10];
	SPIPlanPtr	plan;
} CounterStmt;

/* attribute numbers of counter.slots, counter.events and counter.totals */
#define Anum_slots_counter_id	1
#define Anum_slots_key			2
#define Anum_slots_slot			3
#define Anum_slots_value		4
#define Anum_slots_lo			5
#define Anum_slots_hi			6
#define Anum_slots_touched		7
#define Anum_slots_pad			8
#define Natts_slots				8

#define Anum_events_counter_id	1
#define Anum_events_key			2
#define Anum_events_delta		3
#define Anum_events_at			4
#define Natts_events			4

#define Anum_totals_value		5

extern CounterRels *CounterGetRels(void);
extern CounterMeta *CounterArgCounter(FunctionCallInfo fcinfo, int privs);
extern int	CounterScanKeys(ScanKey keys, int32 id, text *key, bool with_slot, int32 slot);
extern void CounterValueOutOfRange(CounterMeta *meta, const char *key) pg_attribute_noreturn();
extern CounterMeta *CounterLookup(const char *name, bool missing_ok);
extern bool CounterExists(int32 id, TimestampTz created);
extern void CounterCheckPrivs(CounterMeta *meta, int privs);
extern bool CounterCanRead(const char *name);
extern void CounterInvalidate(void);
extern CounterMode CounterParseMode(const char *mode);
extern char *CounterArgName(FunctionCallInfo fcinfo, int argno);
extern text *CounterArgKey(FunctionCallInfo fcinfo, int argno);
extern text *CounterCheckKey(text *key);
extern int	CounterExec(CounterStmt *stmt, Datum *values, const char *nulls,
						bool read_only);
extern ErrorData *CounterInSubxact(void (*fn) (void *), void *arg);

#endif							/* COUNTER_CATALOG_H */
