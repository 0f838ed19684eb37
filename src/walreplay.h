/*-------------------------------------------------------------------------
 *
 * walreplay.h
 *	  Wal mode in the worker: the replay after a restart, and the
 *	  database's physical replication slot.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_WALREPLAY_H
#define COUNTER_WALREPLAY_H

#include "postgres.h"

extern bool CounterWalRound(bool may_arm);
extern void CounterWalRoundDone(bool armed);
extern void CounterWalDisarm(Oid dboid, bool forget);

#endif							/* COUNTER_WALREPLAY_H */
