/*-------------------------------------------------------------------------
 *
 * counter.c
 *	  Module entry point: registers GUCs and, when preloaded, installs every
 *	  hook (shared memory request and startup, utility) and registers the
 *	  background worker launcher, the pg_stat_statements way: each module
 *	  has its size and init functions, the hooks that call them are here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "commands/dbcommands.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tcop/utility.h"

#include "buffer.h"
#include "guc.h"
#include "shmem.h"
#include "wal.h"
#include "walreplay.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* Ask for our shared memory and locks. */
static void
counter_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(add_size(CounterShmemSize(),
											 CounterBufferShmemSize()),
									CounterWalShmemSize()));
	/* the shared state's lock, and wal mode's apply lock */
	RequestNamedLWLockTranche("counter", 2);
}

/* Create or attach to our shared memory. */
static void
counter_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	CounterShmemInit();
	CounterBufferShmemInit();
	CounterWalShmemInit(&(GetNamedLWLockTranche("counter"))[1].lock);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Utility hook: let DROP DATABASE and RENAME of a database proceed, and
 * drop a dropped database's wal-mode slot.
 */
static void
counter_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	Oid			dropped = InvalidOid;

	if (IsA(parsetree, DropdbStmt))
	{
		dropped = get_database_oid(((DropdbStmt *) parsetree)->dbname, true);
		CounterWorkerStop(dropped);
	}
	else if (IsA(parsetree, RenameStmt) &&
			 ((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
		CounterWorkerStop(get_database_oid(((RenameStmt *) parsetree)->subname, true));

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
							queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

	/* the dropped database's replication slot would keep WAL forever */
	if (OidIsValid(dropped))
		CounterWalDisarm(dropped, true);
}

/* Module load: GUCs always; hooks and the launcher only when preloaded. */
void
_PG_init(void)
{
	CounterGucInit();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = counter_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = counter_shmem_startup;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = counter_ProcessUtility;
	CounterWorkerRegister();
}
