/*-------------------------------------------------------------------------
 *
 * guc.h
 *	  The extension's settings (counter.*).
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_GUC_H
#define COUNTER_GUC_H

#include "postgres.h"

extern int	counter_naptime;
extern int	counter_batch_size;
extern int	counter_batch_events;
extern int	counter_batch_time;
extern bool counter_worker_enabled;
extern int	counter_node_id;
extern int	counter_fold_after;
extern int	counter_slot_events;
extern int	counter_idempotency_window;
extern int	counter_notify_interval;
extern double counter_feed_queue_limit;
extern int	counter_buffered_keys;

/*
 * Shared memory a key of counter.buffered_keys takes: an entry of the
 * buffered hash (about 170 bytes with its bucket) and one more kept in
 * reserve for the replay of wal-mode adds (buffer.c).
 */
#define COUNTER_BUFFER_KEY_BYTES	340
extern int	counter_flush_interval;
extern int	counter_rotate_size;
extern char *counter_node_conninfo;
extern void CounterGucInit(void);

#endif							/* COUNTER_GUC_H */
