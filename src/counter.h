/*-------------------------------------------------------------------------
 *
 * counter.h
 *	  Shared declarations of the counter extension.
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
#ifndef COUNTER_H
#define COUNTER_H

#include "postgres.h"

#include "access/attnum.h"
#include "access/htup.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"

#include "type.h"

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
	Oid			members;		/* InvalidOid before version 1.1 */
	Oid			wal_state;		/* InvalidOid before version 1.3 */
	AttrNumber	feed_channel;	/* of counters; InvalidAttrNumber before 1.4 */
	Oid			quarantine;		/* InvalidOid before version 1.4 */
	AttrNumber	totals_updated; /* of totals; InvalidAttrNumber before 1.4 */
} CounterRels;

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

/* guc.c */
extern int	counter_naptime;
extern int	counter_batch_size;
extern bool counter_worker_enabled;
extern int	counter_node_id;
extern int	counter_fold_after;
extern int	counter_idempotency_window;
extern int	counter_notify_interval;
extern int	counter_buffered_keys;
extern int	counter_flush_interval;
extern int	counter_rotate_size;
extern char *counter_node_conninfo;
extern void CounterGucInit(void);

/* catalog.c */
extern CounterRels *CounterGetRels(void);
extern CounterMeta *CounterLookup(const char *name, bool missing_ok);
extern bool CounterExists(int32 id, TimestampTz created);
extern void CounterCheckPrivs(CounterMeta *meta, int privs);
extern bool CounterCanRead(const char *name);
extern void CounterInvalidate(void);
extern CounterMode CounterParseMode(const char *mode);
extern const char *CounterModeName(CounterMode mode);
extern char *CounterArgName(FunctionCallInfo fcinfo, int argno);
extern text *CounterArgKey(FunctionCallInfo fcinfo, int argno);
extern text *CounterCheckKey(text *key);
extern void CounterSwitchToOwner(Oid *save_userid, int *save_sec_context);
extern void CounterRestoreUser(Oid save_userid, int save_sec_context);
extern int	CounterExec(CounterStmt *stmt, Datum *values, const char *nulls,
						bool read_only);
extern ErrorData *CounterInSubxact(void (*fn) (void *), void *arg);

/* events.c */
extern int	CounterEventsTableForAdd(CounterRels *r);
extern int	CounterEventsLive(CounterRels *r, Snapshot snapshot);
extern int	CounterEventsSync(void);
extern int	CounterEventsRotate(int folded, bool idle);
extern bool CounterEventsTruncate(void);

/* storage.c */
extern bool CounterSlotsAdd(CounterMeta *meta, text *key, int64 delta);
extern void CounterEventsInsert(CounterMeta *meta, text *key, int64 delta,
								TimestampTz at);
extern int64 CounterReadValue(CounterMeta *meta, text *key, Snapshot snapshot);
extern int64 CounterReadValueAt(CounterMeta *meta, text *key, Snapshot snapshot,
								TimestampTz *updated);

/* functions.c */
typedef enum ApplyResult
{
	APPLY_DONE,
	APPLY_REPEAT,				/* its idempotency key was used already */
	APPLY_BOUND					/* it would cross a bound: nothing changed */
} ApplyResult;
extern CounterMeta *CounterArgCounter(FunctionCallInfo fcinfo, int privs);
extern ApplyResult CounterApply(CounterMeta *meta, text *key, int64 delta, text *idem,
								bool has_at, TimestampTz at);
extern void CounterApplyChecked(CounterMeta *meta, text *key, int64 delta, text *idem,
								bool has_at, TimestampTz at);

/* buffer.c */
extern Size CounterBufferShmemSize(void);
extern void CounterBufferShmemInit(void);
extern bool CounterBufferAdd(CounterMeta *meta, text *key, int64 delta);
extern int128 CounterBufferPending(CounterMeta *meta, text *key, Snapshot snapshot,
								   TimestampTz *latest);
extern int	CounterBufferTake(Datum *values);
extern int64 CounterBufferUnflushed(CounterMeta *meta);

/* one add of a wal-mode message, put back by the replay after a restart */
typedef struct CounterWalAdd
{
	int32		counter_id;
	TimestampTz created;
	text	   *key;
	int64		delta;
} CounterWalAdd;
extern void CounterBufferReplay(CounterWalAdd *adds, int n);

/* wal.c */
extern Size CounterWalShmemSize(void);
extern void CounterWalShmemInit(LWLock *apply_lock);
extern bool CounterWalPossible(void);
extern bool CounterWalArmed(void);
extern void CounterWalWaitReady(void);
extern void CounterWalBegin(StringInfo buf);
extern void CounterWalAppend(StringInfo buf, int32 counter_id, TimestampTz created,
							 const char *key, int32 keylen, int64 delta);
extern void CounterWalWrite(StringInfo buf);
extern bool CounterWalApplyBegin(void);
extern void CounterWalApplyEnd(void);
extern void CounterWalAbort(void);
extern void CounterWalTakeBegin(void);
extern void CounterWalTakeEnd(void);
extern void CounterWalReplayBegin(void);
extern void CounterWalReplayEnd(void);
extern bool CounterWalRound(bool may_arm);
extern void CounterWalRoundDone(bool armed);
extern void CounterWalDisarm(Oid dboid, bool forget);

/* compact.c */
extern bool CounterCompactLock(bool wait);
/* what one compaction batch moved */
typedef struct CounterMoved
{
	int64		events;
	int64		slot_rows;
	int64		buffered_keys;
} CounterMoved;
extern bool CounterCompactBatch(int32 counter_id, bool maintenance, bool flush,
								CounterMoved *moved);
extern int64 CounterCompact(int32 counter_id, bool wait);

/* feed.c */
extern void CounterFeedCollect(void);
extern void CounterFeedFlush(void);

/* shmem.c */
typedef struct CounterDbWorker
{
	Oid			dboid;
	pid_t		pid;
	TimestampTz started;
	TimestampTz last_compaction;
	int64		compactions;
	int64		events_compacted;
	int64		slots_collected;
	int64		last_batch;
	double		last_rate;		/* events per second of the last batch */
	bool		wanted;
} CounterDbWorker;

#define COUNTER_MAX_DATABASES	64

/* which events table adds write, per database (events.c) */
typedef struct CounterEventsState
{
	Oid			dboid;
	Oid			incarnation;	/* counter.events_1 when set up */
	pg_atomic_uint32 bits;
} CounterEventsState;

typedef struct CounterShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	bool		rescan;
	CounterDbWorker dbs[COUNTER_MAX_DATABASES];
	CounterEventsState events[COUNTER_MAX_DATABASES];
} CounterShared;

extern CounterShared *counter_shared;
extern void CounterShmemInit(void);
extern CounterDbWorker *CounterDbSlot(Oid dboid, bool create);

/* worker.c */
extern void CounterWorkerRegister(void);
extern PGDLLEXPORT void counter_launcher_main(Datum arg);
extern PGDLLEXPORT void counter_worker_main(Datum arg);
extern void CounterWakeLauncher(void);

#endif							/* COUNTER_H */
