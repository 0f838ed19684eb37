/*-------------------------------------------------------------------------
 *
 * buffer.c
 *	  Buffered mode: adds held in shared memory, flushed by the worker.
 *
 * An add of a buffered counter writes neither heap nor WAL: it is kept in
 * backend memory until its transaction commits (commit.c, which calls the
 * functions here from its transaction callbacks), then added with one
 * atomic operation to the key's entry in a shared hash (a rolled-back or
 * subtransaction-aborted add never arrives).  The worker flushes entries
 * into totals and rollups, like a compaction, at its first round once
 * counter.flush_interval has passed.  A crash loses what was not flushed
 * yet: at most max(flush_interval, naptime) of adds, shown per counter as
 * buffered_unflushed in counter.stats.  The hash holds at most
 * counter.buffered_keys entries made by adds: an add of a new key past
 * that is stored as an event instead, never dropped.  The hash is of fixed
 * size (it never takes the server's spare shared memory) and has as many
 * entries again in reserve for the replay of wal-mode adds after a
 * restart, which therefore always finds room.
 *
 * Exact reads.  An entry holds
 *		base	the key's flushed amount F when the entry was made,
 *		added	the sum of all adds committed into the entry,
 *		shadow	F as the worker last committed it (the worker's own field);
 * and the table counter.flushed holds F per key, raised in the same
 * transaction that moves the amount into totals.  A reader adds
 * base + added - F as its snapshot sees F: before the flush commit the
 * snapshot sees neither the new F nor the new totals, after it both, so the
 * sum is exact either way.  F only grows through flushes of an existing
 * entry, so the F read when an entry is made is current.
 *
 * No wrap-around.  An add reserves its delta in the entry (reserved_pos
 * or reserved_neg) until its transaction ends, and is refused with 22003
 * when base + added could leave bigint with every reserved add committed;
 * a commit moves its reservation into added.
 *
 * Flushes in any transaction shape.  A flush (CounterBufferTake) moves the
 * shadows of the entries it takes at once, remembering the amounts with
 * the subtransaction that took them: a second flush in the same
 * transaction takes only what came since, and a (sub)transaction that
 * aborts, and with it the flush's rows, moves its shadows back.  Only
 * entries whose counter the flush's snapshot sees are taken: a counter
 * created by a transaction still in progress keeps its entry, which its
 * creator's adds reach at commit.
 *
 * Entries are keyed by database, counter id and creation time (one id can
 * come back after DROP EXTENSION), and key; keys longer than
 * COUNTER_BUFFER_KEY_MAX bytes go to events.  A flush removes, once it commits, the
 * entries of counters that no longer exist.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "funcapi.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "buffer.h"
#include "catalog.h"
#include "guc.h"
#include "legacy.h"
#include "wal.h"

#define BUFFER_PARTITIONS		16

typedef struct BufferEntry
{
	CounterBufferKey	key;
	int64		base;
	int64		shadow;			/* the flusher's own field */
	slock_t		mutex;			/* protects the four below */
	int64		added;
	int64		reserved_pos;	/* positive adds of transactions in flight */
	int64		reserved_neg;	/* minus their negative adds */
	TimestampTz updated;		/* start of the last committed add's xact */
} BufferEntry;

/*
 * Entries per bucket of counters, by hash of (database, id), of this many
 * buckets: a read of a counter whose bucket counts 0 has no entry to look
 * up (the default slots and events modes never make one).
 */
#define BUFFER_COUNTER_BUCKETS	1024

/* the partition locks and the number of entries made by adds */
typedef struct BufferShared
{
	LWLockPadded locks[BUFFER_PARTITIONS];
	pg_atomic_uint32 nentries;
	LWLockPadded fallback_lock;	/* entering a counter in fallback_hash */
	pg_atomic_uint32 counter_entries[BUFFER_COUNTER_BUCKETS];
} BufferShared;

/*
 * Adds of new keys stored as events because the hash was full, per
 * counter, since the server started: a small hash of its own, of
 * FALLBACK_COUNTERS counters (the adds of a counter that finds it full too
 * are not counted).
 */
#define FALLBACK_COUNTERS		1024

typedef struct FallbackKey
{
	Oid			dboid;
	int32		counter_id;
	TimestampTz created;
} FallbackKey;

typedef struct FallbackEntry
{
	FallbackKey key;
	pg_atomic_uint64 n;
} FallbackEntry;

static HTAB *fallback_hash = NULL;

/* an entry taken by a flush of this transaction */
typedef struct Taken
{
	CounterBufferKey	key;
	int64		amount;			/* moved into the shadow at the take */
	TimestampTz updated;		/* the entry's, at the take (totals.updated) */
	SubTransactionId subxid;
	bool		gone;			/* its counter is dropped: remove at commit */
} Taken;

static HTAB *buffer_hash = NULL;
static BufferShared *buffer_shared = NULL;

/* entries taken by this transaction's flushes, in TopTransactionContext */
static Taken *taken = NULL;
static int	taken_count = 0;
static int	taken_max = 0;

/* Entries of the hash: the adds' share, and as many again for replays. */
static long
buffer_capacity(void)
{
	return 2L * counter_buffered_keys;
}

/* Shared memory of the hash, its partition locks and its entry count. */
Size
CounterBufferShmemSize(void)
{
	return add_size(add_size(hash_estimate_size(buffer_capacity(), sizeof(BufferEntry)),
							 hash_estimate_size(FALLBACK_COUNTERS, sizeof(FallbackEntry))),
					MAXALIGN(sizeof(BufferShared)));
}

/* Create or attach to the hash; called from the shmem startup hook. */
void
CounterBufferShmemInit(void)
{
	HASHCTL		info;
	bool		found;
	int			i;

	buffer_shared = ShmemInitStruct("counter buffer locks", sizeof(BufferShared), &found);
	if (!found)
	{
		int			tranche = LWLockNewTrancheId();

		for (i = 0; i < BUFFER_PARTITIONS; i++)
			LWLockInitialize(&buffer_shared->locks[i].lock, tranche);
		pg_atomic_init_u32(&buffer_shared->nentries, 0);
		LWLockInitialize(&buffer_shared->fallback_lock.lock, tranche);
		for (i = 0; i < BUFFER_COUNTER_BUCKETS; i++)
			pg_atomic_init_u32(&buffer_shared->counter_entries[i], 0);
	}
	LWLockRegisterTranche(buffer_shared->locks[0].lock.tranche, "counter buffer");

	/* fixed size: all entries allocated now, none taken from spare memory */
	info.keysize = sizeof(CounterBufferKey);
	info.entrysize = sizeof(BufferEntry);
	info.num_partitions = BUFFER_PARTITIONS;
	buffer_hash = ShmemInitHash("counter buffer", buffer_capacity(), buffer_capacity(),
								&info, HASH_ELEM | HASH_BLOBS | HASH_PARTITION |
								HASH_FIXED_SIZE);

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(FallbackKey);
	info.entrysize = sizeof(FallbackEntry);
	fallback_hash = ShmemInitHash("counter buffer fallbacks", FALLBACK_COUNTERS,
								  FALLBACK_COUNTERS, &info,
								  HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

/* The fallback key of bk's counter. */
static FallbackKey
fallback_key(CounterBufferKey *bk)
{
	FallbackKey fk;

	memset(&fk, 0, sizeof(fk));
	fk.dboid = bk->dboid;
	fk.counter_id = bk->counter_id;
	fk.created = bk->created;
	return fk;
}

/*
 * Count an add of bk's counter that found the hash full (it is stored as
 * an event) in the counter's entry, made if there is room for it.
 */
static void
count_fallback(CounterBufferKey *bk)
{
	FallbackKey fk = fallback_key(bk);
	FallbackEntry *f;
	bool		found;

	LWLockAcquire(&buffer_shared->fallback_lock.lock, LW_SHARED);
	f = hash_search(fallback_hash, &fk, HASH_FIND, NULL);
	if (f != NULL)
		pg_atomic_fetch_add_u64(&f->n, 1);
	LWLockRelease(&buffer_shared->fallback_lock.lock);
	if (f != NULL)
		return;
	LWLockAcquire(&buffer_shared->fallback_lock.lock, LW_EXCLUSIVE);
	f = hash_search(fallback_hash, &fk, HASH_ENTER_NULL, &found);
	if (f != NULL && !found)
		pg_atomic_init_u64(&f->n, 0);
	if (f != NULL)
		pg_atomic_fetch_add_u64(&f->n, 1);
	LWLockRelease(&buffer_shared->fallback_lock.lock);
}

/*
 * Adds of counter meta (this database) stored as events since the server
 * started because the hash was full; 0 without shared memory.
 */
int64
CounterBufferFallbacks(CounterMeta *meta)
{
	CounterBufferKey bk;
	FallbackKey fk;
	FallbackEntry *f;
	int64		n = 0;

	if (fallback_hash == NULL)
		return 0;
	bk.dboid = MyDatabaseId;
	bk.counter_id = meta->id;
	bk.created = meta->created;
	fk = fallback_key(&bk);
	LWLockAcquire(&buffer_shared->fallback_lock.lock, LW_SHARED);
	f = hash_search(fallback_hash, &fk, HASH_FIND, NULL);
	if (f != NULL)
		n = (int64) pg_atomic_read_u64(&f->n);
	LWLockRelease(&buffer_shared->fallback_lock.lock);
	return n;
}

/* Fill the hash key of (counter, key); false when the key is too long. */
static bool
make_key(CounterBufferKey *bk, CounterMeta *meta, text *key)
{
	int			len = VARSIZE_ANY_EXHDR(key);

	if (len > COUNTER_BUFFER_KEY_MAX)
		return false;
	memset(bk, 0, sizeof(CounterBufferKey));
	bk->dboid = MyDatabaseId;
	bk->counter_id = meta->id;
	bk->created = meta->created;
	bk->keylen = len;
	memcpy(bk->key, VARDATA_ANY(key), len);
	return true;
}

/* The count of entries of the bucket of counter id of database dboid. */
static pg_atomic_uint32 *
counter_entries(Oid dboid, int32 id)
{
	return &buffer_shared->counter_entries[hash_combine(murmurhash32(dboid), (uint32) id) %
										   BUFFER_COUNTER_BUCKETS];
}

/*
 * Whether counter meta (this database) has no entry for a snapshot taken
 * before this call: an entry is made before the first add it holds
 * commits, so before any snapshot that sees that add, and counted in its
 * counter's bucket; a bucket counting none holds none of the counter's.
 */
static bool
no_entries(CounterMeta *meta)
{
	pg_memory_barrier();
	return pg_atomic_read_u32(counter_entries(MyDatabaseId, meta->id)) == 0;
}

/* The partition lock of a hash code. */
static LWLock *
partition_lock(uint32 hashcode)
{
	return &buffer_shared->locks[hashcode % BUFFER_PARTITIONS].lock;
}

/* Take every partition lock, in order, to read the whole hash stably. */
static void
lock_all_partitions(LWLockMode mode)
{
	int			i;

	for (i = 0; i < BUFFER_PARTITIONS; i++)
		LWLockAcquire(&buffer_shared->locks[i].lock, mode);
}

/* Undo lock_all_partitions. */
static void
unlock_all_partitions(void)
{
	int			i;

	for (i = 0; i < BUFFER_PARTITIONS; i++)
		LWLockRelease(&buffer_shared->locks[i].lock);
}

/* The key's flushed amount F in snapshot (0 without a row). */
static int64
read_flushed(CounterMeta *meta, text *key, Snapshot snapshot)
{
	CounterRels *r = CounterGetRels();
	Relation	rel = table_open(r->flushed, AccessShareLock);
	Relation	idx = index_open(r->flushed_pkey, AccessShareLock);
	TupleTableSlot *tts = table_slot_create(rel, NULL);
	IndexScanDesc scan;
	ScanKeyData keys[2];
	int64		f = 0;

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(meta->id));
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(key));
	keys[1].sk_collation = C_COLLATION_OID;
	scan = index_beginscan(rel, idx, snapshot, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, tts))
	{
		bool		isnull;

		f = DatumGetInt64(slot_getattr(tts, 3, &isnull));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(tts);
	/* held to the end of the transaction, as sum_rows() holds totals' */
	index_close(idx, NoLock);
	table_close(rel, NoLock);
	return f;
}

/*
 * The entry's base + added, read under its mutex, with (if updated is not
 * NULL) the time of its last committed add.
 */
static int64
entry_sum(BufferEntry *e, TimestampTz *updated)
{
	int64		added;

	SpinLockAcquire(&e->mutex);
	added = e->added;
	if (updated != NULL)
		*updated = e->updated;
	SpinLockRelease(&e->mutex);
	return e->base + added;
}

/*
 * Apply an add to the entry bk, which cannot fail: with reserved, the add
 * reserved its delta (CounterBufferAdd) and commit moves it into added,
 * abort (commit false) only gives the reservation back.  No entry means its
 * counter was dropped, and the add with it.
 */
static void
apply_delta(CounterBufferKey *bk, int64 delta, bool reserved, bool commit)
{
	uint32		hashcode = get_hash_value(buffer_hash, bk);
	LWLock	   *lock = partition_lock(hashcode);
	BufferEntry *e;

	LWLockAcquire(lock, LW_SHARED);
	e = hash_search_with_hash_value(buffer_hash, bk, hashcode, HASH_FIND, NULL);
	if (e != NULL)
	{
		SpinLockAcquire(&e->mutex);
		if (commit)
		{
			e->added += delta;
			e->updated = Max(e->updated, GetCurrentTransactionStartTimestamp());
		}
		if (reserved && delta > 0)
			e->reserved_pos -= delta;
		else if (reserved)
			e->reserved_neg -= delta;
		SpinLockRelease(&e->mutex);
	}
	LWLockRelease(lock);
}

/*
 * Reserve delta in the entry e (found under its partition lock) for a
 * transaction in flight: 22003, reserving nothing, when base + added could
 * leave bigint once every reserved add has committed.
 */
static void
reserve_delta(BufferEntry *e, CounterMeta *meta, text *key, int64 delta)
{
	int128		sum;
	bool		fits;

	SpinLockAcquire(&e->mutex);
	sum = (int128) e->base + e->added + delta +
		(delta > 0 ? e->reserved_pos : e->reserved_neg);
	fits = (sum <= PG_INT64_MAX && sum >= PG_INT64_MIN);
	if (fits && delta > 0)
		e->reserved_pos += delta;
	else if (fits)
		e->reserved_neg += delta;
	SpinLockRelease(&e->mutex);
	if (!fits)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("value of counter \"%s\" key \"%s\" would be out of range for bigint",
						meta->name, text_to_cstring(key)),
				 errdetail("Nothing was changed.")));
}

/*
 * Move the shadows of the entries taken by subtransaction subxid (all of
 * them when InvalidSubTransactionId) back: their flush was rolled back.
 * Forgets them.
 */
static void
untake(SubTransactionId subxid)
{
	int			i;
	int			n = 0;

	for (i = 0; i < taken_count; i++)
	{
		Taken	   *t = &taken[i];

		if (subxid == InvalidSubTransactionId || t->subxid == subxid)
		{
			uint32		hashcode = get_hash_value(buffer_hash, &t->key);
			LWLock	   *lock = partition_lock(hashcode);
			BufferEntry *e;

			LWLockAcquire(lock, LW_EXCLUSIVE);
			e = hash_search_with_hash_value(buffer_hash, &t->key, hashcode,
											HASH_FIND, NULL);
			if (e != NULL)
				e->shadow -= t->amount;
			LWLockRelease(lock);
		}
		else
			taken[n++] = *t;
	}
	taken_count = n;
}

/* Remove one entry from the hash, if it is there. */
static void
remove_entry(CounterBufferKey *bk)
{
	uint32		hashcode = get_hash_value(buffer_hash, bk);
	LWLock	   *lock = partition_lock(hashcode);
	bool		found;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	hash_search_with_hash_value(buffer_hash, bk, hashcode, HASH_REMOVE, &found);
	LWLockRelease(lock);
	if (found)
	{
		pg_atomic_fetch_sub_u32(&buffer_shared->nentries, 1);
		pg_atomic_fetch_sub_u32(counter_entries(bk->dboid, bk->counter_id), 1);
	}
}

/*
 * Find or make the entry bk of (meta, key), reading F for a new entry's
 * base, and with reserve reserve delta in it (22003 if it does not fit).
 * False when the hash holds counter.buffered_keys entries made by adds
 * already (a replay, for_replay, may use the reserve beyond them).
 */
static bool
make_entry(CounterMeta *meta, text *key, CounterBufferKey *bk, bool for_replay,
		   bool reserve, int64 delta)
{
	uint32		hashcode = get_hash_value(buffer_hash, bk);
	LWLock	   *lock = partition_lock(hashcode);
	BufferEntry *e;

	LWLockAcquire(lock, LW_SHARED);
	e = hash_search_with_hash_value(buffer_hash, bk, hashcode, HASH_FIND, NULL);
	if (e != NULL && reserve)
		reserve_delta(e, meta, key, delta);
	LWLockRelease(lock);
	if (e == NULL)
	{
		Snapshot	snapshot;
		int64		f;
		bool		found;

		if (pg_atomic_read_u32(&buffer_shared->nentries) >= counter_buffered_keys &&
			!for_replay)
		{
			count_fallback(bk);
			return false;
		}
		snapshot = RegisterSnapshot(GetLatestSnapshot());
		f = read_flushed(meta, key, snapshot);
		UnregisterSnapshot(snapshot);

		/* counted from here on, where nothing can raise an error */
		LWLockAcquire(lock, LW_EXCLUSIVE);
		if (pg_atomic_fetch_add_u32(&buffer_shared->nentries, 1) >= counter_buffered_keys &&
			!for_replay)
		{
			pg_atomic_fetch_sub_u32(&buffer_shared->nentries, 1);
			LWLockRelease(lock);
			count_fallback(bk);
			return false;
		}
		e = hash_search_with_hash_value(buffer_hash, bk, hashcode,
										HASH_ENTER_NULL, &found);
		if (e != NULL && !found)
		{
			pg_atomic_fetch_add_u32(counter_entries(bk->dboid, bk->counter_id), 1);
			e->base = f;
			e->shadow = f;
			SpinLockInit(&e->mutex);
			e->added = 0;
			e->reserved_pos = 0;
			e->reserved_neg = 0;
			e->updated = DT_NOBEGIN;
		}
		if (e == NULL || found)
			pg_atomic_fetch_sub_u32(&buffer_shared->nentries, 1);
		/* an error of reserve_delta releases the lock with the abort */
		if (e != NULL && reserve)
			reserve_delta(e, meta, key, delta);
		LWLockRelease(lock);
	}
	return e != NULL;
}

/*
 * Fill the hash key of (counter, key): false when the add cannot be
 * buffered (no shared memory, no counter.flushed in an older schema, a
 * long key).
 */
bool
CounterBufferMakeKey(CounterBufferKey *bk, CounterMeta *meta, text *key)
{
	return buffer_hash != NULL && !CounterLegacyLacks(LEGACY_FLUSHED) &&
		make_key(bk, meta, key);
}

/*
 * Make sure the key bk has an entry (reading F for its base) and reserve
 * delta in it until the transaction ends (CounterBufferApply).  False when
 * there is no room for a new entry; 22003 when the entry's sum could leave
 * bigint.
 */
bool
CounterBufferReserve(CounterMeta *meta, text *key, CounterBufferKey *bk, int64 delta)
{
	return make_entry(meta, key, bk, false, true, delta);
}

/*
 * At the end of the transaction of an add reserved in bk: with commit, move
 * its delta into the entry's added; else only give the reservation back.
 */
void
CounterBufferApply(CounterBufferKey *bk, int64 delta, bool commit)
{
	apply_delta(bk, delta, true, commit);
}

/*
 * This transaction has committed: remove the entries of dropped counters
 * its flushes found, and forget what they took.
 */
void
CounterBufferTakenCommit(void)
{
	int			i;

	for (i = 0; i < taken_count; i++)
		if (taken[i].gone)
			remove_entry(&taken[i].key);
	CounterBufferTakenReset();
}

/*
 * The flushes of subtransaction subxid (of the whole transaction when
 * InvalidSubTransactionId) were rolled back: move their shadows back.
 */
void
CounterBufferTakenAbort(SubTransactionId subxid)
{
	untake(subxid);
}

/* Subtransaction subxid committed: what it took is its parent's. */
void
CounterBufferTakenSubCommit(SubTransactionId subxid, SubTransactionId parent)
{
	int			i;

	for (i = 0; i < taken_count; i++)
		if (taken[i].subxid == subxid)
			taken[i].subxid = parent;
}

/* The transaction ended: its taken list went with TopTransactionContext. */
void
CounterBufferTakenReset(void)
{
	taken = NULL;
	taken_count = taken_max = 0;
}

/*
 * Put back the n adds of wal-mode transactions that committed before a
 * restart but were not flushed (wal.c), as if they had just committed:
 * visible at once to every snapshot, as they should be.  Every entry is
 * made first, from the reserve if need be, so an error leaves nothing added
 * that a retry would add again; adding them all then cannot fail, and makes
 * the database ready (wal.c).
 */
void
CounterBufferReplay(CounterWalAdd *adds, int n)
{
	CounterBufferKey  *keys = palloc(sizeof(CounterBufferKey) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
	{
		CounterMeta meta;

		memset(&meta, 0, sizeof(meta));
		meta.id = adds[i].counter_id;
		meta.created = adds[i].created;
		if (!make_key(&keys[i], &meta, adds[i].key) ||
			!make_entry(&meta, adds[i].key, &keys[i], true, false, 0))
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("no room in shared memory to replay the wal-mode adds of this database"),
					 errhint("Raise counter.buffered_keys (now %d) and restart.", counter_buffered_keys)));
	}
	CounterWalReplayBegin();
	for (i = 0; i < n; i++)
		apply_delta(&keys[i], adds[i].delta, false, true);
	CounterWalReplayEnd();
	pfree(keys);
}

/*
 * The buffered part of (counter, key)'s value for a reader with snapshot:
 * base + added - F(snapshot); *latest is raised to the time of the last
 * committed add the entry holds, counted by that sum or, once flushed, by
 * totals.  This transaction's own adds, not applied yet, are commit.c's
 * to add (and to date).
 */
int128
CounterBufferPending(CounterMeta *meta, text *key, Snapshot snapshot,
					 TimestampTz *latest)
{
	CounterBufferKey	bk;
	uint32		hashcode;
	LWLock	   *lock;
	BufferEntry *e;
	int128		sum;
	bool		have = false;

	if (buffer_hash == NULL || CounterLegacyLacks(LEGACY_FLUSHED))
		return 0;
	CounterWalWaitReady();
	if (no_entries(meta) || !make_key(&bk, meta, key))
		return 0;
	sum = 0;

	hashcode = get_hash_value(buffer_hash, &bk);
	lock = partition_lock(hashcode);
	LWLockAcquire(lock, LW_SHARED);
	e = hash_search_with_hash_value(buffer_hash, &bk, hashcode, HASH_FIND, NULL);
	if (e != NULL)
	{
		TimestampTz updated;

		sum += entry_sum(e, &updated);
		*latest = Max(*latest, updated);
		have = true;
	}
	LWLockRelease(lock);
	if (have)
		sum -= read_flushed(meta, key, snapshot);
	return sum;
}

/* ordinals of the taken entries whose counter this snapshot does not see */
static CounterStmt unseen_stmt = {
	"SELECT u.i FROM unnest($1::int4[], $2::timestamptz[]) WITH ORDINALITY AS u(id, created, i)"
	" WHERE NOT EXISTS (SELECT 1 FROM counter.counters c"
	"                    WHERE c.id = u.id AND c.created = u.created)",
	2, {INT4ARRAYOID, TIMESTAMPTZARRAYOID}
};

/* Append one entry to this transaction's taken list. */
static Taken *
take_one(CounterBufferKey *key, int64 amount, TimestampTz updated)
{
	Taken	   *t;

	if (taken_count == taken_max)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		taken_max = Max(64, taken_max * 2);
		taken = taken == NULL ? palloc(sizeof(Taken) * taken_max) :
			repalloc(taken, sizeof(Taken) * taken_max);
		MemoryContextSwitchTo(old);
	}
	t = &taken[taken_count++];
	t->key = *key;
	t->amount = amount;
	t->updated = updated;
	t->subxid = GetCurrentSubTransactionId();
	t->gone = false;
	return t;
}

/*
 * Take this database's entries for a flush (caller holds the compaction
 * lock, so there is one flusher at a time): fill out with the arrays of
 * their counter ids, creation times, keys, amounts (base + added - shadow)
 * and last add times (counter.get), and move the shadows, which
 * an abort of this (sub)transaction moves back.  Entries of counters the
 * statement's snapshot does not see are not taken; those of counters that
 * no longer exist are removed when this transaction commits.  Returns the
 * number of entries.
 */
int
CounterBufferTake(CounterBufferTaken *out)
{
	HASH_SEQ_STATUS status;
	BufferEntry *e;
	int			n = 0;
	int			max = 64;
	int			first = taken_count;
	Datum	   *ids;
	Datum	   *created;
	Datum	   *keys;
	Datum	   *amounts;
	Datum	   *times;
	int			i;
	uint64		j;
	MemoryContext old;

	out->n = 0;
	if (buffer_hash == NULL || CounterLegacyLacks(LEGACY_FLUSHED))
		return 0;

	old = MemoryContextSwitchTo(TopTransactionContext);
	ids = palloc(sizeof(Datum) * max);
	created = palloc(sizeof(Datum) * max);

	/* entries are added and removed only under their partition lock */
	CounterWalTakeBegin();
	lock_all_partitions(LW_SHARED);
	hash_seq_init(&status, buffer_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		TimestampTz updated;
		int64		sum;

		if (e->key.dboid != MyDatabaseId)
			continue;
		if (n == max)
		{
			max *= 2;
			ids = repalloc(ids, sizeof(Datum) * max);
			created = repalloc(created, sizeof(Datum) * max);
		}
		sum = entry_sum(e, &updated);
		take_one(&e->key, sum - e->shadow, updated);
		ids[n] = Int32GetDatum(e->key.counter_id);
		created[n] = TimestampTzGetDatum(e->key.created);
		n++;
	}
	unlock_all_partitions();
	CounterWalTakeEnd();

	out->ids = PointerGetDatum(construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT));
	out->created = PointerGetDatum(construct_array(created, n, TIMESTAMPTZOID, 8,
												   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	MemoryContextSwitchTo(old);

	/*
	 * A counter the flush statement will not see is either dropped (its
	 * entry goes at commit) or created by a transaction still in progress,
	 * whose adds reach the entry only after it commits: not taken either way
	 * (the statement's snapshot is at least as new as this one, and a drop
	 * cannot commit while we hold the compaction lock).
	 */
	if (n > 0)
	{
		CounterExec(&unseen_stmt, (Datum[]) {out->ids, out->created}, NULL, false);
		for (j = 0; j < SPI_processed; j++)
		{
			bool		isnull;
			Taken	   *t = &taken[first - 1 + DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[j],
																		   SPI_tuptable->tupdesc, 1, &isnull))];

			t->amount = 0;
			t->gone = !CounterExists(t->key.counter_id, t->key.created);
		}
	}

	old = MemoryContextSwitchTo(TopTransactionContext);
	keys = palloc(sizeof(Datum) * Max(n, 1));
	amounts = palloc(sizeof(Datum) * Max(n, 1));
	times = palloc(sizeof(Datum) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		Taken	   *t = &taken[first + i];

		keys[i] = PointerGetDatum(cstring_to_text_with_len(t->key.key, t->key.keylen));
		amounts[i] = Int64GetDatum(t->amount);
		times[i] = TimestampTzGetDatum(t->updated);
		if (t->amount != 0)
		{
			uint32		hashcode = get_hash_value(buffer_hash, &t->key);
			LWLock	   *lock = partition_lock(hashcode);

			LWLockAcquire(lock, LW_EXCLUSIVE);
			e = hash_search_with_hash_value(buffer_hash, &t->key, hashcode,
											HASH_FIND, NULL);
			Assert(e != NULL);
			e->shadow += t->amount;
			LWLockRelease(lock);
		}
	}
	out->keys = PointerGetDatum(construct_array(keys, n, TEXTOID, -1, false, TYPALIGN_INT));
	out->amounts = PointerGetDatum(construct_array(amounts, n, INT8OID, 8,
												   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	out->times = PointerGetDatum(construct_array(times, n, TIMESTAMPTZOID, 8,
												 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	MemoryContextSwitchTo(old);
	out->n = n;
	return n;
}

/* The adds of counter id (this database) not flushed yet: the crash loss. */
int64
CounterBufferUnflushed(CounterMeta *meta)
{
	HASH_SEQ_STATUS status;
	BufferEntry *e;
	int64		sum = 0;

	if (buffer_hash == NULL)
		return 0;
	lock_all_partitions(LW_SHARED);
	hash_seq_init(&status, buffer_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		if (e->key.dboid == MyDatabaseId && e->key.counter_id == meta->id &&
			e->key.created == meta->created)
			sum += entry_sum(e, NULL) - e->shadow;
	}
	unlock_all_partitions();
	return sum;
}

/*
 * The entries of counter meta (this database), with their base + added,
 * read under every partition lock: *n of them, palloc'd.  Waits for the
 * replay of wal-mode adds first, as a read does.  A counter with no entry
 * (no_entries, which an empty hash implies) is told without the walk over
 * every entry of every counter.
 */
CounterBufferEntry *
CounterBufferEntries(CounterMeta *meta, int *n)
{
	HASH_SEQ_STATUS status;
	BufferEntry *e;
	CounterBufferEntry *out;
	int			max = 16;

	*n = 0;
	if (buffer_hash == NULL)
		return NULL;
	CounterWalWaitReady();
	if (no_entries(meta))
		return NULL;
	out = palloc(sizeof(CounterBufferEntry) * max);
	lock_all_partitions(LW_SHARED);
	hash_seq_init(&status, buffer_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		if (e->key.dboid != MyDatabaseId || e->key.counter_id != meta->id ||
			e->key.created != meta->created)
			continue;
		if (*n == max)
		{
			max *= 2;
			out = repalloc(out, sizeof(CounterBufferEntry) * max);
		}
		out[*n].key = e->key;
		out[*n].sum = entry_sum(e, NULL);
		(*n)++;
	}
	unlock_all_partitions();
	return out;
}
