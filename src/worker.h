/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The launcher and the per-database background workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_WORKER_H
#define COUNTER_WORKER_H

#include "postgres.h"

extern void CounterWorkerRegister(void);
extern void CounterWorkerStop(Oid dboid);
extern PGDLLEXPORT void counter_launcher_main(Datum arg);
extern PGDLLEXPORT void counter_worker_main(Datum arg);

#endif							/* COUNTER_WORKER_H */
