/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Backend-local caches of the extension's relations and of counter
 *	  metadata, and the rights checks every function makes.
 *
 * Hot paths must not look anything up by name or run SQL per call, so the
 * OIDs of our relations and each counter's row of counter.counters are
 * cached per backend.  The counter cache is flushed by a relcache callback:
 * every function that changes counter.counters or counter.grants calls
 * CacheInvalidateRelcacheByRelid() on that table (the changing backend sees
 * it at once, also on abort).  Rights are cached with the counter, so the
 * cache is also flushed when a role changes (superuser, rename, drop: the
 * syscache of pg_authid) or a role membership does (pg_auth_members).  The
 * relation cache is flushed when any schema changes (DROP EXTENSION drops
 * our schema).
 *
 * Other backends' invalidations are queued until a backend takes them in,
 * which it does at transaction start and at a lock acquisition, but not
 * when it already holds the lock (as a transaction that has read a counter
 * does).  So every CounterLookup takes them in itself first: a revoke, a
 * lost membership or superuser bit committed elsewhere counts from the next
 * statement on, also inside an open transaction.  That is one read of a
 * shared counter when nothing is queued.
 *
 * Counter rows are read with the latest snapshot, so a counter created by
 * a committed transaction is found at once whatever the isolation level.
 * In parallel mode (the leader of a Gather evaluating a function above it,
 * or a parallel worker) no new snapshot may be taken; there a counter not
 * cached is read with the active snapshot, the one the query reads the
 * counter's values with, so the row, its rights and the values agree.  Such
 * a row may be older than invalidations already taken in, so it is not
 * cached: it serves the call and is read again at the next (a query above
 * a Gather reads it once per row; the next lookup outside parallel mode
 * caches it).
 *
 * Internal SQL runs as the owner of the extension's schema, after the
 * caller's rights were checked here, and is planned with a search_path of
 * pg_catalog alone, so nothing depends on the caller's search_path.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/backendid.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "catalog.h"

/* attribute numbers of counter.counters and counter.grants */
#define Anum_counters_id		1
#define Anum_counters_name		2
#define Anum_counters_owner		3
#define Anum_counters_mode		4
#define Anum_counters_slots		5
#define Anum_counters_min		8
#define Anum_counters_max		9
#define Anum_counters_members	10
#define Anum_counters_created	11

#define Anum_grants_counter_id	1
#define Anum_grants_grantee		2
#define Anum_grants_privilege	3
#define Natts_grants			3

static CounterRels rels;
static HTAB *meta_cache = NULL;
static bool meta_cache_stale = false;
static bool callbacks_registered = false;

/* a counter read in parallel mode, not cached (see the header) */
static CounterMeta parallel_meta;

/* Forget every cached counter (their grants live in CacheMemoryContext). */
static void
meta_cache_reset(void)
{
	HASH_SEQ_STATUS status;
	CounterMeta *meta;

	if (meta_cache == NULL)
		return;
	hash_seq_init(&status, meta_cache);
	while ((meta = hash_seq_search(&status)) != NULL)
	{
		if (meta->grants)
			pfree(meta->grants);
	}
	hash_destroy(meta_cache);
	meta_cache = NULL;
}

/*
 * Relcache callback: our catalog tables changed, or everything did.  Only
 * marks the cache stale: invalidations arrive at any lock acquisition, also
 * while an entry is being filled or used, so the reset waits for the next
 * CounterLookup.
 */
static void
counter_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || !rels.valid ||
		relid == rels.counters || relid == rels.grants)
		meta_cache_stale = true;
}

/* Syscache callback: a schema, a role or a role membership changed. */
static void
counter_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	if (cacheid == NAMESPACEOID)
		rels.valid = false;
	meta_cache_stale = true;
}

/* Look up one of our relations by name in our schema. */
static Oid
counter_relid(const char *relname)
{
	Oid			relid = get_relname_relid(relname, rels.schema);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("relation \"%s.%s\" of extension \"counter\" is missing",
						COUNTER_SCHEMA, relname),
				 errhint("Reinstall the extension with DROP EXTENSION counter; CREATE EXTENSION counter;")));
	return relid;
}

static void lookup_update_rels(void);

/*
 * The installed version of extension counter as major * 100 + minor (104
 * for "1.4"), read from pg_extension: what the internal SQL may rely on.
 */
static int
installed_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int			version = 0;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("counter"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);
		int			major = 0,
					minor = 0;

		if (!isnull &&
			sscanf(TextDatumGetCString(d), "%d.%d", &major, &minor) == 2)
			version = major * 100 + minor;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/* Return the cached OIDs of our relations, filling the cache if needed. */
CounterRels *
CounterGetRels(void)
{
	HeapTuple	tup;

	if (rels.valid)
	{
		lookup_update_rels();
		return &rels;
	}

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(counter_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, counter_syscache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, counter_syscache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, counter_syscache_callback, (Datum) 0);
		callbacks_registered = true;
	}

	rels.schema = get_namespace_oid(COUNTER_SCHEMA, true);
	if (!OidIsValid(rels.schema))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"counter\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION counter;")));

	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(rels.schema));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg_internal("cache lookup failed for namespace %u", rels.schema)));
	rels.owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);

	rels.counters = counter_relid("counters");
	rels.grants = counter_relid("grants");
	rels.slots = counter_relid("slots");
	rels.slots_pkey = counter_relid("slots_pkey");
	rels.events[0] = counter_relid("events");
	rels.events_key[0] = counter_relid("events_key");
	rels.totals = counter_relid("totals");
	rels.totals_pkey = counter_relid("totals_pkey");
	rels.flushed = InvalidOid;
	rels.flushed_pkey = InvalidOid;
	rels.events[1] = InvalidOid;
	rels.events_key[1] = InvalidOid;
	rels.event_tables = InvalidOid;
	rels.feed_channel = InvalidAttrNumber;
	rels.quarantine = InvalidOid;
	rels.totals_updated = InvalidAttrNumber;
	rels.feed = InvalidAttrNumber;
	rels.totals_top = InvalidOid;
	rels.version = 0;
	rels.valid = true;
	lookup_update_rels();
	return &rels;
}

/*
 * The installed version, and the relations (and the columns
 * counters.feed_channel and feed) of versions 1.1 to 1.4, absent until ALTER
 * EXTENSION counter UPDATE: looked up again while older or absent, so an
 * update is seen at once.
 */
static void
lookup_update_rels(void)
{
	if (rels.version < COUNTER_VERSION_CURRENT)
		rels.version = installed_version();
	if (!OidIsValid(rels.flushed))
	{
		rels.flushed = get_relname_relid("flushed", rels.schema);
		rels.flushed_pkey = get_relname_relid("flushed_pkey", rels.schema);
	}
	if (rels.feed_channel == InvalidAttrNumber)
		rels.feed_channel = get_attnum(rels.counters, "feed_channel");
	if (!OidIsValid(rels.quarantine))
		rels.quarantine = get_relname_relid("quarantine", rels.schema);
	/* of 1.4's shape only: 1.0's index of that name lacks the key */
	if (!OidIsValid(rels.totals_top) && rels.version >= 104)
		rels.totals_top = get_relname_relid("totals_top", rels.schema);
	if (rels.totals_updated == InvalidAttrNumber)
		rels.totals_updated = get_attnum(rels.totals, "updated");
	if (rels.feed == InvalidAttrNumber)
		rels.feed = get_attnum(rels.counters, "feed");
	if (!OidIsValid(rels.event_tables))
	{
		rels.events[1] = get_relname_relid("events_1", rels.schema);
		rels.events_key[1] = get_relname_relid("events_1_key", rels.schema);
		rels.event_tables = get_relname_relid("event_tables", rels.schema);
		if (!OidIsValid(rels.event_tables))
			rels.events[1] = InvalidOid;
	}
}

/* Parse a mode name; 22023 for anything else. */
CounterMode
CounterParseMode(const char *mode)
{
	if (strcmp(mode, "slots") == 0)
		return COUNTER_MODE_SLOTS;
	if (strcmp(mode, "events") == 0)
		return COUNTER_MODE_EVENTS;
	if (strcmp(mode, "buffered") == 0)
		return COUNTER_MODE_BUFFERED;
	if (strcmp(mode, "wal") == 0)
		return COUNTER_MODE_WAL;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid counter mode \"%s\"", mode),
			 errhint("Valid modes are \"slots\", \"events\", \"buffered\" and \"wal\".")));
	return COUNTER_MODE_SLOTS;	/* keep compiler quiet */
}

/* Read the grants of one counter into CacheMemoryContext. */
static void
load_grants(CounterMeta *meta, Snapshot snapshot)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData skey;
	HeapTuple	tup;
	int			allocated = 4;

	meta->ngrants = 0;
	meta->grants = MemoryContextAlloc(CacheMemoryContext,
									  allocated * sizeof(CounterGrant));

	rel = table_open(rels.grants, AccessShareLock);
	ScanKeyInit(&skey, Anum_grants_counter_id, BTEqualStrategyNumber,
				F_INT4EQ, Int32GetDatum(meta->id));
	scan = systable_beginscan(rel, InvalidOid, false, snapshot, 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Datum		values[Natts_grants];
		bool		nulls[Natts_grants];
		char	   *priv;

		heap_deform_tuple(tup, RelationGetDescr(rel), values, nulls);
		if (meta->ngrants == allocated)
		{
			allocated *= 2;
			meta->grants = repalloc(meta->grants, allocated * sizeof(CounterGrant));
		}
		priv = TextDatumGetCString(values[Anum_grants_privilege - 1]);
		meta->grants[meta->ngrants].grantee = DatumGetObjectId(values[Anum_grants_grantee - 1]);
		meta->grants[meta->ngrants].privs =
			strcmp(priv, "read") == 0 ? COUNTER_PRIV_READ :
			strcmp(priv, "add") == 0 ? COUNTER_PRIV_ADD : COUNTER_PRIV_ALL;
		meta->ngrants++;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

/* Forget the grants of the counter last read in parallel mode. */
static void
parallel_meta_reset(void)
{
	if (parallel_meta.grants)
		pfree(parallel_meta.grants);
	parallel_meta.grants = NULL;
}

/*
 * Read counter name's row of counter.counters and its grants in snapshot
 * into meta (name, id, ... , grants; the per-backend fields are reset).
 * False when there is no such counter.  On error meta->grants is NULL or
 * allocated in CacheMemoryContext, for the caller to free.
 */
static bool
load_meta(CounterMeta *meta, const char *name, Snapshot snapshot)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData skey;
	HeapTuple	tup;
	TupleDesc	desc;
	Datum	   *values;
	bool	   *nulls;
	char	   *mode;

	meta->grants = NULL;
	rel = table_open(rels.counters, AccessShareLock);
	ScanKeyInit(&skey, Anum_counters_name, BTEqualStrategyNumber,
				F_TEXTEQ, CStringGetTextDatum(name));
	skey.sk_collation = C_COLLATION_OID;
	scan = systable_beginscan(rel, InvalidOid, false, snapshot, 1, &skey);
	tup = systable_getnext(scan);
	if (!HeapTupleIsValid(tup))
	{
		systable_endscan(scan);
		table_close(rel, AccessShareLock);
		return false;
	}

	/* later versions add columns: deform as many as the table has */
	desc = RelationGetDescr(rel);
	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(tup, desc, values, nulls);
	strlcpy(meta->name, name, sizeof(meta->name));
	meta->id = DatumGetInt32(values[Anum_counters_id - 1]);
	meta->owner = DatumGetObjectId(values[Anum_counters_owner - 1]);
	mode = TextDatumGetCString(values[Anum_counters_mode - 1]);
	meta->mode = CounterParseMode(mode);
	meta->nslots = DatumGetInt32(values[Anum_counters_slots - 1]);
	meta->has_min = !nulls[Anum_counters_min - 1];
	meta->min = meta->has_min ? DatumGetInt64(values[Anum_counters_min - 1]) : 0;
	meta->has_max = !nulls[Anum_counters_max - 1];
	meta->max = meta->has_max ? DatumGetInt64(values[Anum_counters_max - 1]) : 0;
	meta->members = DatumGetBool(values[Anum_counters_members - 1]);
	meta->created = DatumGetTimestampTz(values[Anum_counters_created - 1]);
	meta->feed_channel[0] = '\0';
	if (rels.feed_channel != InvalidAttrNumber && !nulls[rels.feed_channel - 1])
		text_to_cstring_buffer(DatumGetTextPP(values[rels.feed_channel - 1]),
							   meta->feed_channel, sizeof(meta->feed_channel));
	meta->feed = rels.feed == InvalidAttrNumber || DatumGetBool(values[rels.feed - 1]);
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	meta->checked_user = InvalidOid;
	meta->checked_privs = 0;
	meta->last_slot = MyBackendId;
	load_grants(meta, snapshot);
	return true;
}

/*
 * Find a counter by name: from the backend cache, else from counter.counters
 * (see the header for the snapshot and the invalidations).  The entry
 * returned stays valid until the next call.
 */
CounterMeta *
CounterLookup(const char *name, bool missing_ok)
{
	CounterMeta *meta;
	char		keybuf[COUNTER_NAME_MAXLEN + 1];
	Snapshot	snapshot;
	bool		found;

	AcceptInvalidationMessages();
	CounterGetRels();
	if (meta_cache_stale)
	{
		meta_cache_stale = false;
		meta_cache_reset();
	}

	if (strlen(name) > COUNTER_NAME_MAXLEN)
	{
		if (missing_ok)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("counter \"%s\" does not exist", name)));
	}

	if (meta_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = COUNTER_NAME_MAXLEN + 1;
		ctl.entrysize = sizeof(CounterMeta);
		ctl.hcxt = CacheMemoryContext;
		meta_cache = hash_create("counter metadata", 64, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}

	memset(keybuf, 0, sizeof(keybuf));
	strlcpy(keybuf, name, sizeof(keybuf));
	meta = hash_search(meta_cache, keybuf, HASH_FIND, NULL);
	if (meta != NULL)
		return meta;

	if (IsInParallelMode())
	{
		/* GetLatestSnapshot() is forbidden here: the query's own snapshot */
		parallel_meta_reset();
		meta = &parallel_meta;
		found = load_meta(meta, name, GetActiveSnapshot());
	}
	else
	{
		snapshot = RegisterSnapshot(GetLatestSnapshot());
		meta = hash_search(meta_cache, keybuf, HASH_ENTER, NULL);
		meta->grants = NULL;
		PG_TRY();
		{
			found = load_meta(meta, name, snapshot);
		}
		PG_CATCH();
		{
			if (meta->grants)
				pfree(meta->grants);
			hash_search(meta_cache, keybuf, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
		UnregisterSnapshot(snapshot);
		if (!found)
			hash_search(meta_cache, keybuf, HASH_REMOVE, NULL);
	}
	if (found)
		return meta;
	if (missing_ok)
		return NULL;
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("counter \"%s\" does not exist", name),
			 errhint("Create it with counter.create('%s').", name)));
	return NULL;				/* keep compiler quiet */
}

/* The rights the current role holds on a counter (owner: all of them). */
static int
counter_privs(CounterMeta *meta)
{
	Oid			userid = GetUserId();
	int			privs = 0;
	int			i;

	if (meta->checked_user == userid)
		return meta->checked_privs;

	if (superuser_arg(userid) || has_privs_of_role(userid, meta->owner))
		privs = COUNTER_PRIV_ALL;
	else
	{
		for (i = 0; i < meta->ngrants; i++)
		{
			Oid			grantee = meta->grants[i].grantee;

			if (!OidIsValid(grantee) || has_privs_of_role(userid, grantee))
				privs |= meta->grants[i].privs;
		}
	}
	meta->checked_user = userid;
	meta->checked_privs = privs;
	return privs;
}

/* Raise 42501 unless the current role holds every right in privs. */
void
CounterCheckPrivs(CounterMeta *meta, int privs)
{
	if ((counter_privs(meta) & privs) != privs)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for counter \"%s\"", meta->name),
				 errhint("The owner can grant it with counter.grant('%s', role, '%s').",
						 meta->name,
						 (privs & COUNTER_PRIV_ADMIN) ? "admin" :
						 (privs & COUNTER_PRIV_ADD) ? "add" : "read")));
}

/* Whether the current role may read the counter; false if it is unknown. */
bool
CounterCanRead(const char *name)
{
	CounterMeta *meta = CounterLookup(name, true);

	return meta != NULL && (counter_privs(meta) & COUNTER_PRIV_READ) != 0;
}

/* Forget cached metadata here and in every backend at commit. */
void
CounterInvalidate(void)
{
	CounterRels *r = CounterGetRels();

	CacheInvalidateRelcacheByRelid(r->counters);
}

/* Fetch argument argno as a counter name: 22004 when NULL. */
char *
CounterArgName(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("counter name must not be null")));
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/* Check a counter key's length: 22023 when longer than COUNTER_KEY_MAXLEN. */
text *
CounterCheckKey(text *key)
{
	if (VARSIZE_ANY_EXHDR(key) > COUNTER_KEY_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("counter key is too long"),
				 errdetail("A key has at most %d bytes; this one has %d.",
						   COUNTER_KEY_MAXLEN, (int) VARSIZE_ANY_EXHDR(key))));
	return key;
}

/* Fetch argument argno as a counter key: 22004 when NULL, 22023 when long. */
text *
CounterArgKey(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("counter key must not be null"),
				 errhint("Use '' as the key of a counter with a single value.")));
	return CounterCheckKey(PG_GETARG_TEXT_PP(argno));
}

/* Become the owner of the extension's schema, to run internal SQL. */
static void
switch_to_owner(Oid *save_userid, int *save_sec_context)
{
	CounterRels *r = CounterGetRels();

	GetUserIdAndSecContext(save_userid, save_sec_context);
	SetUserIdAndSecContext(r->owner,
						   *save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

/* Undo switch_to_owner. */
static void
restore_user(Oid save_userid, int save_sec_context)
{
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/* Push search_path = pg_catalog alone (no pg_temp, no caller schema). */
static void
push_catalog_path(void)
{
	OverrideSearchPath path;

	path.schemas = NIL;
	path.addCatalog = true;
	path.addTemp = false;
	path.generation = 0;
	PushOverrideSearchPath(&path);
}

/*
 * Run an internal statement as the owner of the extension's schema, with
 * search_path = pg_catalog alone while it is parsed, re-parsed (the plan
 * cache re-parses whenever the path in force differs from the one it was
 * parsed with) and run: no object of the caller's schemas or of pg_temp can
 * be picked up.  The plan is prepared on first use and kept.  SPI must be
 * connected; rows are left in SPI_tuptable.  An error unwinds the user and
 * the path with the (sub)transaction.
 *
 * JIT is off while the statement is planned and run (the setting is undone
 * after it, or by the abort of an error): our statements touch few rows
 * through indexes, but some carry branches costed as whole-table scans that
 * never run (top()'s peer rows), and JIT compiling those took longer than
 * running them, hundreds of milliseconds at every call on a million keys.
 */
int
CounterExec(CounterStmt *stmt, Datum *values, const char *nulls, bool read_only)
{
	Oid			save_userid;
	int			save_sec_context;
	int			ret;
	int			nest = NewGUCNestLevel();

	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	push_catalog_path();
	if (stmt->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(stmt->sql, stmt->nargs, stmt->argtypes);

		if (plan == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg_internal("SPI_prepare failed for \"%s\": %s",
									 stmt->sql, SPI_result_code_string(SPI_result))));
		SPI_keepplan(plan);
		stmt->plan = plan;
	}
	switch_to_owner(&save_userid, &save_sec_context);
	ret = SPI_execute_plan(stmt->plan, values, nulls, read_only, 0);
	restore_user(save_userid, save_sec_context);
	PopOverrideSearchPath();
	AtEOXact_GUC(true, nest);
	if (ret < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg_internal("internal statement failed: %s", SPI_result_code_string(ret))));
	return ret;
}

/*
 * Whether counter (id, created) exists as it stands, its insertion or
 * deletion by a transaction still in progress included (a dirty snapshot);
 * not when this transaction deleted it.  For the flush, which must tell a
 * dropped counter from one being created.
 */
bool
CounterExists(int32 id, TimestampTz created)
{
	Relation	rel = table_open(CounterGetRels()->counters, AccessShareLock);
	SnapshotData dirty;
	SysScanDesc scan;
	ScanKeyData skey;
	HeapTuple	tup;
	bool		exists = false;

	InitDirtySnapshot(dirty);
	ScanKeyInit(&skey, Anum_counters_id, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(id));
	scan = systable_beginscan(rel, InvalidOid, false, &dirty, 1, &skey);
	while (!exists && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;

		exists = DatumGetTimestampTz(heap_getattr(tup, Anum_counters_created,
												  RelationGetDescr(rel), &isnull)) == created;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return exists;
}

/*
 * Run fn(arg) in a subtransaction.  On an error, roll the subtransaction
 * back and return a copy of the error (the caller's memory context and
 * resource owner are as before); NULL on success.  SPI connected before
 * stays connected, and rows fn left in SPI_tuptable stay readable.
 */
ErrorData *
CounterInSubxact(void (*fn) (void *), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *edata = NULL;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

/*
 * Look up the counter named by argument 0 and check the caller's rights
 * (and, for an add, that the transaction may write).
 */
CounterMeta *
CounterArgCounter(FunctionCallInfo fcinfo, int privs)
{
	CounterMeta *meta;

	/*
	 * Adds write by direct heap access or into shared memory, which no
	 * executor check covers: refuse them in a read-only transaction (and so
	 * on a hot standby) ourselves.
	 */
	if ((privs & COUNTER_PRIV_ADD) && XactReadOnly)
		PreventCommandIfReadOnly(psprintf("counter.%s()",
										   get_func_name(fcinfo->flinfo->fn_oid)));
	meta = CounterLookup(CounterArgName(fcinfo, 0), false);

	CounterCheckPrivs(meta, privs);
	return meta;
}

/* Raise 22003: the exact value of meta's key does not fit in bigint (reads, top). */
void
CounterValueOutOfRange(CounterMeta *meta, const char *key)
{
	ereport(ERROR,
			(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
			 errmsg("value of counter \"%s\" key \"%s\" is out of range for bigint",
					meta->name, key)));
}

/* Fill scan keys (counter_id int4, key text[, third int4]) for our indexes. */
int
CounterScanKeys(ScanKey keys, int32 id, text *key, bool with_slot, int32 slot)
{
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(id));
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_TEXTEQ,
				PointerGetDatum(key));
	keys[1].sk_collation = C_COLLATION_OID;
	if (!with_slot)
		return 2;
	ScanKeyInit(&keys[2], 3, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(slot));
	return 3;
}
