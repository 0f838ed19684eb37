/*-------------------------------------------------------------------------
 *
 * counter.c
 *	  Module entry point: registers GUCs, and when preloaded the shared
 *	  memory and the background worker launcher.
 *
 *-------------------------------------------------------------------------
 */
#include "counter.h"

#include "miscadmin.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Module load: GUCs always; shared memory and worker only when preloaded. */
void
_PG_init(void)
{
	CounterGucInit();

	if (!process_shared_preload_libraries_in_progress)
		return;

	CounterShmemInit();
	CounterWorkerRegister();
}
