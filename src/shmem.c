/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state of the counter extension: the launcher's latch, one
 *	  status entry per database worker, read by counter.worker_status(),
 *	  and which events table adds write in each database.
 *
 * Everything here is protected by the "counter" LWLock tranche's single
 * lock, except launcher_latch, which is set once by the launcher, and the
 * events tables' state bits (events.c), written under the lock but read
 * without it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

#include "shmem.h"

CounterShared *counter_shared = NULL;

/* Shared memory of the state below. */
Size
CounterShmemSize(void)
{
	return MAXALIGN(sizeof(CounterShared));
}

/*
 * Create or attach to the shared state; called from the shmem startup hook
 * under AddinShmemInitLock.
 */
void
CounterShmemInit(void)
{
	bool		found;

	counter_shared = ShmemInitStruct("counter", sizeof(CounterShared), &found);
	if (!found)
	{
		int			i;

		memset(counter_shared, 0, sizeof(CounterShared));
		counter_shared->lock = &(GetNamedLWLockTranche("counter"))->lock;
		for (i = 0; i < COUNTER_MAX_DATABASES; i++)
			pg_atomic_init_u32(&counter_shared->events[i].bits, 0);
	}
}

/*
 * The status entry of a database, or NULL; with create, a free entry is
 * claimed for it (NULL only when all are taken).  Caller holds the lock
 * exclusively when create.
 */
CounterDbWorker *
CounterWorkerEntry(Oid dboid, bool create)
{
	CounterDbWorker *free_entry = NULL;
	int			i;

	for (i = 0; i < COUNTER_MAX_DATABASES; i++)
	{
		CounterDbWorker *w = &counter_shared->dbs[i];

		if (w->dboid == dboid)
			return w;
		if (w->dboid == InvalidOid && free_entry == NULL)
			free_entry = w;
	}
	if (create && free_entry != NULL)
	{
		memset(free_entry, 0, sizeof(CounterDbWorker));
		free_entry->dboid = dboid;
		free_entry->wanted = true;
	}
	return create ? free_entry : NULL;
}
