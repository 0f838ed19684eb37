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
#include "counter.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

CounterShared *counter_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Ask for our shared memory and lock. */
static void
counter_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(add_size(MAXALIGN(sizeof(CounterShared)),
											 CounterBufferShmemSize()),
									CounterWalShmemSize()));
	/* the shared state's lock, and wal mode's apply lock */
	RequestNamedLWLockTranche("counter", 2);
}

/* Create or attach to our shared memory. */
static void
counter_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	counter_shared = ShmemInitStruct("counter", sizeof(CounterShared), &found);
	if (!found)
	{
		int			i;

		memset(counter_shared, 0, sizeof(CounterShared));
		counter_shared->lock = &(GetNamedLWLockTranche("counter"))->lock;
		for (i = 0; i < COUNTER_MAX_DATABASES; i++)
			pg_atomic_init_u32(&counter_shared->events[i].bits, 0);
	}
	CounterBufferShmemInit();
	CounterWalShmemInit(&(GetNamedLWLockTranche("counter"))[1].lock);
	LWLockRelease(AddinShmemInitLock);
}

/* Install the shared memory hooks; called from _PG_init when preloaded. */
void
CounterShmemInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = counter_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = counter_shmem_startup;
}

/*
 * The status entry of a database, or NULL; with create, a free entry is
 * claimed for it (NULL only when all are taken).  Caller holds the lock
 * exclusively when create.
 */
CounterDbWorker *
CounterDbSlot(Oid dboid, bool create)
{
	CounterDbWorker *free_slot = NULL;
	int			i;

	for (i = 0; i < COUNTER_MAX_DATABASES; i++)
	{
		CounterDbWorker *w = &counter_shared->dbs[i];

		if (w->dboid == dboid)
			return w;
		if (w->dboid == InvalidOid && free_slot == NULL)
			free_slot = w;
	}
	if (create && free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(CounterDbWorker));
		free_slot->dboid = dboid;
		free_slot->wanted = true;
	}
	return create ? free_slot : NULL;
}
