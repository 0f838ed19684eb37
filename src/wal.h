/*-------------------------------------------------------------------------
 *
 * wal.h
 *	  Wal mode at commit: one logical WAL message per transaction, its
 *	  format (read back by walreplay.c), and the per-database ready/armed
 *	  state.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_WAL_H
#define COUNTER_WAL_H

#include "postgres.h"
#include "lib/stringinfo.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "shmem.h"

#define WAL_PREFIX				"counter.wal"
#define WAL_FORMAT				1

/* header of a wal-mode message; the adds follow */
typedef struct WalHeader
{
	uint32		format;			/* WAL_FORMAT */
	int32		backend;		/* MyBackendId of the writer */
	uint64		seq;
} WalHeader;

/* one add in a message, followed by keylen bytes of key */
typedef struct WalAdd
{
	int32		counter_id;
	int32		keylen;
	TimestampTz created;
	int64		delta;
} WalAdd;

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

extern bool CounterWalLoaded(void);
extern CounterWalState *CounterWalDb(Oid dboid, bool create);
extern bool CounterWalDatabaseArmed(void);
extern void CounterWalRaiseSeq(uint64 maxseq);

#endif							/* COUNTER_WAL_H */
