/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Shared state of the launcher and the per-database workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_SHMEM_H
#define COUNTER_SHMEM_H

#include "postgres.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

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
extern Size CounterShmemSize(void);
extern void CounterShmemInit(void);
extern CounterDbWorker *CounterWorkerEntry(Oid dboid, bool create);

#endif							/* COUNTER_SHMEM_H */
