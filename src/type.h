/*-------------------------------------------------------------------------
 *
 * type.h
 *	  On-disk layout of counter.sharded_counter, the state of a PN-counter.
 *
 * A sharded_counter records, per shard, the total ever incremented and the
 * total ever decremented.  Its value is the sum over shards of (inc - dec);
 * two states are joined (merged) by taking, per shard, the maximum of each
 * total, which makes merging commutative, associative and idempotent.
 *
 * Varlena layout, version 1 (all fields in native byte order):
 *
 *	int32	vl_len_		varlena header (never touch directly)
 *	uint8	version		SC_FORMAT_VERSION
 *	uint8	flags		0 in version 1
 *	uint16	reserved	0
 *	int32	nshards		number of entries, 0 .. SC_MAX_SHARDS
 *	int32	pad			0; makes the entries 8-byte aligned
 *	entries[nshards]	{int32 shard; int32 reserved (0); int64 inc; int64 dec}
 *
 * Entries are sorted by shard, strictly ascending (no duplicates), and
 * shard >= 0, inc >= 0, dec >= 0.  Values are always built zero-filled so
 * that equal states have equal bytes.  The type has typalign double.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_TYPE_H
#define COUNTER_TYPE_H

#include "fmgr.h"

#define SC_FORMAT_VERSION	1
#define SC_MAX_SHARDS		65536

typedef struct ShardedCounterEntry
{
	int32		shard;			/* >= 0, strictly ascending in an array */
	int32		reserved;		/* always 0 */
	int64		inc;			/* total incremented, >= 0 */
	int64		dec;			/* total decremented, >= 0 */
} ShardedCounterEntry;

typedef struct ShardedCounter
{
	int32		vl_len_;		/* varlena header (do not touch directly!) */
	uint8		version;		/* SC_FORMAT_VERSION */
	uint8		flags;			/* 0 */
	uint16		reserved;		/* 0 */
	int32		nshards;		/* number of entries */
	int32		pad;			/* 0; aligns entries to 8 bytes */
	ShardedCounterEntry entries[FLEXIBLE_ARRAY_MEMBER];
} ShardedCounter;

#define SC_HEADER_SIZE		offsetof(ShardedCounter, entries)
#define SC_SIZE(n)			(SC_HEADER_SIZE + (Size) (n) * sizeof(ShardedCounterEntry))

/* Detoast a datum and check its format (ERRCODE_DATA_CORRUPTED if bad). */
#define DatumGetShardedCounterP(X)		sharded_counter_from_datum(X, false)
#define DatumGetShardedCounterPCopy(X)	sharded_counter_from_datum(X, true)
#define ShardedCounterPGetDatum(X)		PointerGetDatum(X)
#define PG_GETARG_SHARDED_COUNTER_P(n)	DatumGetShardedCounterP(PG_GETARG_DATUM(n))
#define PG_RETURN_SHARDED_COUNTER_P(x)	PG_RETURN_POINTER(x)

extern ShardedCounter *sharded_counter_from_datum(Datum d, bool copy);
extern ShardedCounter *sharded_counter_empty(void);
extern ShardedCounter *sharded_counter_add(ShardedCounter *sc, int32 shard,
										   int64 delta);
extern ShardedCounter *sharded_counter_join(ShardedCounter *a,
											ShardedCounter *b);
extern int64 sharded_counter_value(ShardedCounter *sc);

#endif							/* COUNTER_TYPE_H */
