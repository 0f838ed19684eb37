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
 * Two formats exist; the first byte after the varlena header (whether a
 * 1-byte or a 4-byte one) is the version in both, so one test tells them
 * apart.
 *
 * Version 2, SC_VERSION_COMPACT: what every function returns, hence what is
 * stored.  After the varlena header, with no padding anywhere:
 *
 *	uint8	version		2
 *	varint	nshards		number of entries, 0 .. SC_MAX_SHARDS
 *	per entry, in ascending shard order:
 *	varint	shard delta	shard minus the previous entry's shard (the first
 *						entry: the shard itself); >= 1 after the first
 *	varint	inc			total incremented
 *	varint	dec			total decremented
 *
 * A varint is unsigned LEB128: 7 bits per byte, least significant group
 * first, the high bit set on every byte but the last.  It is minimal (no
 * trailing 0x00 group after the first byte) and at most 9 bytes, since no
 * field exceeds 2^63 - 1.  A one-shard state with shard and totals below
 * 128 is 6 bytes in a tuple (1-byte varlena header included); the type
 * keeps typalign double, which matters only for values above 126 bytes,
 * the ones with a 4-byte header.
 *
 * Version 1, SC_VERSION_EXPANDED: the struct ShardedCounter below, in
 * native byte order.  It is what every function of the extension works on
 * in memory (the "expanded" form: fixed-size, aligned entries), and what
 * builds before version 2 stored; such values are still read, as they
 * are, and replaced by version 2 the next time the row's state is written.
 *
 *	int32	vl_len_		varlena header (never touch directly)
 *	uint8	version		1
 *	uint8	flags		0
 *	uint16	reserved	0
 *	int32	nshards		number of entries, 0 .. SC_MAX_SHARDS
 *	int32	pad			0; makes the entries 8-byte aligned
 *	entries[nshards]	{int32 shard; int32 reserved (0); int64 inc; int64 dec}
 *
 * In both, entries are sorted by shard, strictly ascending (no duplicates),
 * and shard >= 0, inc >= 0, dec >= 0.  Values are always built canonically
 * (version 2 leaves no choice: minimal varints, deltas from the previous
 * shard; version 1 is zero-filled) so that equal states have equal bytes
 * within a version.  A version 1 and a version 2 value of the same state
 * differ in bytes, which nothing relies on: the type has no hash opclass,
 * its btree opclass no equalimage function, and its operators compare
 * values.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_TYPE_H
#define COUNTER_TYPE_H

#include "fmgr.h"

#define SC_VERSION_EXPANDED	1	/* struct ShardedCounter; stored before v2 */
#define SC_VERSION_COMPACT	2	/* varints; what is stored now */
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
	uint8		version;		/* SC_VERSION_EXPANDED */
	uint8		flags;			/* 0 */
	uint16		reserved;		/* 0 */
	int32		nshards;		/* number of entries */
	int32		pad;			/* 0; aligns entries to 8 bytes */
	ShardedCounterEntry entries[FLEXIBLE_ARRAY_MEMBER];
} ShardedCounter;

#define SC_HEADER_SIZE		offsetof(ShardedCounter, entries)
#define SC_SIZE(n)			(SC_HEADER_SIZE + (Size) (n) * sizeof(ShardedCounterEntry))

/* Longest version 2 encoding of n entries: 3-byte count, 5 + 9 + 9 per entry. */
#define SC_COMPACT_MAX_SIZE(n)	(VARHDRSZ + 1 + 3 + (Size) (n) * (5 + 9 + 9))

/*
 * Datum to expanded state: detoast, decode (version 2) or check (version 1)
 * the value, ERRCODE_DATA_CORRUPTED if it is malformed.  Expanded state to
 * datum: always the version 2 encoding, a new palloc'd value.
 */
#define DatumGetShardedCounterPCopy(X)	sharded_counter_from_datum(X, true)
#define PG_RETURN_SHARDED_COUNTER_P(x)	return sharded_counter_to_datum(x)

extern ShardedCounter *sharded_counter_from_datum(Datum d, bool copy);
extern Datum sharded_counter_to_datum(const ShardedCounter *sc);
extern ShardedCounter *sharded_counter_empty(void);
extern ShardedCounter *sharded_counter_add(ShardedCounter *sc, int32 shard,
										   int64 delta);
extern ShardedCounter *sharded_counter_join(ShardedCounter *a,
											ShardedCounter *b);
extern int64 sharded_counter_value(ShardedCounter *sc);

#endif							/* COUNTER_TYPE_H */
