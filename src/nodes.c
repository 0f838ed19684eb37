/*-------------------------------------------------------------------------
 *
 * nodes.c
 *	  Multi-node meshes in one call: counter.add_node(), counter.remove_node().
 *
 * A mesh is a full mesh of PostgreSQL logical replication: every member
 * publishes in full the tables that must converge (counter.totals and the
 * others of mesh_tables, publication counter_mesh) and subscribes to every
 * other member's publication, subscription and slot
 * counter_n<subscriber id>_from_n<publisher id>.  Every node therefore
 * holds and republishes every shard, also the shards of nodes that left,
 * and a replica trigger joins each applied row with the one already there
 * (counter--1.3--1.4.sql, section nodes; section members for the member
 * rows of membership counters), so echoes stop at the first node that has
 * the row already and an initial copy merges over existing rows.
 * Each member keeps the list of members in counter.mesh.
 *
 * add_node() runs on the joining node J and wires everything through libpq
 * connections: to every member, and to J itself by its own
 * counter.node_conninfo (a loopback connection).  Each step runs there in
 * autocommit, while the calling transaction writes nothing: CREATE
 * SUBSCRIPTION cannot run in a transaction block, and the logical slot a
 * member creates on J waits for every J transaction that holds an xid,
 * which would include ours (a deadlock) had it written anything.
 * remove_node() runs on any member: it drains a reachable leaver (compacts
 * it and waits until every member has applied its WAL to that point), then
 * drops the subscriptions and slots of both directions on every node it
 * reaches; a dead leaver's subscriptions are detached from their slot
 * (slot_name = NONE) so that dropping them does not try to reach it.
 *
 * Every wait on a remote server is a latch wait on its socket: a cancel or
 * statement_timeout stops it, and the connections are closed on the way
 * out.  Every step is idempotent (it checks what exists first), so a call
 * that failed half way is finished by calling it again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "guc.h"

PG_FUNCTION_INFO_V1(counter_add_node);
PG_FUNCTION_INFO_V1(counter_remove_node);

#define CONNECT_TIMEOUT_MS	10000
#define POLL_MS				100
#define SUBNAME_FMT			"counter_n%d_from_n%d"

/* a member of the mesh, with its open connection (NULL: unreachable) */
typedef struct Member
{
	char	   *name;
	int32		id;
	char	   *conninfo;
	PGconn	   *conn;
} Member;

/* connections opened by the running call, closed by close_all() */
static List *open_conns = NIL;

/* Cancel what runs on every open connection and close them all. */
static void
close_all(void)
{
	ListCell   *lc;

	foreach(lc, open_conns)
	{
		PGconn	   *conn = lfirst(lc);

		if (PQtransactionStatus(conn) == PQTRANS_ACTIVE)
		{
			PGcancel   *cancel = PQgetCancel(conn);
			char		buf[256];

			if (cancel)
			{
				PQcancel(cancel, buf, sizeof(buf));
				PQfreeCancel(cancel);
			}
		}
		PQfinish(conn);
		ReleaseExternalFD();
	}
	list_free(open_conns);
	open_conns = NIL;
}

/*
 * Wait on conn's socket for the events, or the latch, at most timeout ms
 * (-1: no limit); a cancel or statement_timeout raises its error here.
 */
static void
wait_socket(PGconn *conn, int events, long timeout)
{
	(void) WaitLatchOrSocket(MyLatch,
							 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | events |
							 (timeout >= 0 ? WL_TIMEOUT : 0),
							 PQsocket(conn), timeout, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Connect to node name at conninfo, interruptibly, in at most
 * CONNECT_TIMEOUT_MS.  NULL when it cannot be reached and missing_ok, else
 * an error with libpq's reason.
 */
static PGconn *
node_connect(const char *name, const char *conninfo, bool missing_ok)
{
	const char *keys[] = {"application_name", "dbname", NULL};
	const char *vals[] = {"counter nodes", conninfo, NULL};
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   CONNECT_TIMEOUT_MS);
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	PGconn	   *conn;
	char	   *reason;

	if (!AcquireExternalFD())
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("could not connect to node \"%s\": out of file descriptors", name)));
	conn = PQconnectStartParams(keys, vals, 1);
	if (conn == NULL)
	{
		ReleaseExternalFD();
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory connecting to node \"%s\"", name)));
	}
	open_conns = lappend(open_conns, conn);
	while (PQstatus(conn) != CONNECTION_BAD &&
		   st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														   deadline);

		if (left <= 0)
			break;
		wait_socket(conn, st == PGRES_POLLING_READING ?
					WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE, left);
		st = PQconnectPoll(conn);
	}
	if (PQstatus(conn) == CONNECTION_OK)
		return conn;

	reason = pchomp(st == PGRES_POLLING_OK || PQstatus(conn) != CONNECTION_BAD ?
					"timeout expired" : PQerrorMessage(conn));
	open_conns = list_delete_ptr(open_conns, conn);
	PQfinish(conn);
	ReleaseExternalFD();
	if (missing_ok)
	{
		ereport(WARNING,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("node \"%s\" is unreachable: %s", name, reason)));
		return NULL;
	}
	ereport(ERROR,
			(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
			 errmsg("could not connect to node \"%s\": %s", name, reason),
			 errhint("Every member of the mesh must be reachable; remove a dead one first with counter.remove_node().")));
	return NULL;				/* keep compiler quiet */
}

/* Send sql (parameters as text, NULL for none) to node name. */
static void
node_send(PGconn *conn, const char *name, const char *sql,
		  int nparams, const char *const *params)
{
	/* the simple protocol when there are no parameters: CREATE SUBSCRIPTION */
	if (!(nparams == 0 ? PQsendQuery(conn, sql) :
		  PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0)))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not send a query to node \"%s\": %s",
						name, pchomp(PQerrorMessage(conn)))));
}

static PGresult *node_result(PGconn *conn, const char *name, const char *sql,
							 bool soft);

/*
 * Run sql on node name and return its result (node_send, node_result):
 * a remote error is raised with its SQLSTATE, or, when soft, gives NULL
 * (the caller retries).
 */
static PGresult *
node_query(PGconn *conn, const char *name, const char *sql,
		   int nparams, const char *const *params, bool soft)
{
	node_send(conn, name, sql, nparams, params);
	return node_result(conn, name, sql, soft);
}

/*
 * Wait for the result of sql, sent to node name by node_send(); a remote
 * error is raised here with its own SQLSTATE, or, when soft, returns NULL.
 */
static PGresult *
node_result(PGconn *conn, const char *name, const char *sql, bool soft)
{
	PGresult   *res = NULL;
	PGresult   *next;
	char	   *msg;
	const char *state;
	int			code;

	for (;;)
	{
		while (PQisBusy(conn))
		{
			wait_socket(conn, WL_SOCKET_READABLE, -1);
			if (!PQconsumeInput(conn))
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("lost the connection to node \"%s\": %s",
								name, pchomp(PQerrorMessage(conn)))));
		}
		next = PQgetResult(conn);
		if (next == NULL)
			break;
		PQclear(res);
		res = next;
	}
	if (res != NULL && (PQresultStatus(res) == PGRES_COMMAND_OK ||
						PQresultStatus(res) == PGRES_TUPLES_OK))
		return res;

	msg = pchomp(res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
	state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	code = state && strlen(state) == 5 ?
		MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]) :
		ERRCODE_CONNECTION_FAILURE;
	PQclear(res);
	if (soft)
		return NULL;
	ereport(ERROR,
			(errcode(code),
			 errmsg("node \"%s\": %s", name, msg),
			 errcontext("remote statement: %s", sql)));
	return NULL;				/* keep compiler quiet */
}

/* Run sql on node name and return the first column of its first row. */
static char *
node_value(PGconn *conn, const char *name, const char *sql,
		   int nparams, const char *const *params)
{
	PGresult   *res = node_query(conn, name, sql, nparams, params, false);
	char	   *v = NULL;

	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		v = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return v;
}

/* Run a statement on node name, its result unused. */
static void
node_exec(PGconn *conn, const char *name, const char *sql,
		  int nparams, const char *const *params)
{
	PQclear(node_query(conn, name, sql, nparams, params, false));
}

/*
 * Poll sql (a boolean) on node name every POLL_MS until it is true; false
 * once timeout ms have passed (-1: no limit).
 */
static bool
node_wait_until(PGconn *conn, const char *name, const char *sql,
				int nparams, const char *const *params, long timeout)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   timeout);

	for (;;)
	{
		char	   *v = node_value(conn, name, sql, nparams, params);

		if (v && strcmp(v, "t") == 0)
			return true;
		if (timeout >= 0 &&
			TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline) <= 0)
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* counter_n<sub>_from_n<pub>: a subscription and its slot, by node ids. */
static char *
subname(int32 sub, int32 pub)
{
	return psprintf(SUBNAME_FMT, sub, pub);
}

/*
 * Both functions change replication on many servers: superusers only, and
 * never from a transaction that holds an xid (a peer creating a slot here
 * would wait for it while it waits for the peer).
 */
static void
check_caller(const char *fn)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to run %s", fn),
				 errhint("Subscriptions are created by a superuser.")));
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s cannot run in a transaction that has written", fn),
				 errhint("Call it in a transaction of its own.")));
}

/* settings of one node that add_node() checks */
typedef struct Probe
{
	int32		node_id;
	bool		id_default;
	char	   *wal_level;
	char	   *version;
	int			free_slots;
	int			free_senders;
	int			free_workers;
	int			missing_subs;	/* of the names asked for */
	int			missing_slots;
} Probe;

/*
 * Read node name's settings; subs and slots (text arrays) are the
 * subscriptions and slots the join needs there, counted if missing.
 */
static Probe
probe(PGconn *conn, const char *name, const char *subs, const char *slots)
{
	const char *params[2] = {subs, slots};
	PGresult   *res;
	Probe		p;

	res = node_query(conn, name,
					 "SELECT pg_catalog.current_setting('counter.node_id')::int4,"
					 " (SELECT s.source = 'default' FROM pg_catalog.pg_settings s"
					 "   WHERE s.name = 'counter.node_id'),"
					 " pg_catalog.current_setting('wal_level'),"
					 " (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'counter'),"
					 " pg_catalog.current_setting('max_replication_slots')::int4"
					 "  - (SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_slots),"
					 " pg_catalog.current_setting('max_wal_senders')::int4"
					 "  - (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_replication),"
					 " pg_catalog.current_setting('max_logical_replication_workers')::int4"
					 "  - (SELECT pg_catalog.count(*) FROM pg_catalog.pg_subscription WHERE subenabled),"
					 " (SELECT pg_catalog.count(*) FROM pg_catalog.unnest($1::text[]) n"
					 "   WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s"
					 "                      WHERE s.subname = n AND s.subdbid ="
					 "                        (SELECT d.oid FROM pg_catalog.pg_database d"
					 "                          WHERE d.datname = pg_catalog.current_database()))),"
					 " (SELECT pg_catalog.count(*) FROM pg_catalog.unnest($2::text[]) n"
					 "   WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s"
					 "                      WHERE s.slot_name = n))",
					 2, params, false);
	p.node_id = atoi(PQgetvalue(res, 0, 0));
	p.id_default = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	p.wal_level = pstrdup(PQgetvalue(res, 0, 2));
	p.version = pstrdup(PQgetvalue(res, 0, 3));
	p.free_slots = atoi(PQgetvalue(res, 0, 4));
	p.free_senders = atoi(PQgetvalue(res, 0, 5));
	p.free_workers = atoi(PQgetvalue(res, 0, 6));
	p.missing_subs = atoi(PQgetvalue(res, 0, 7));
	p.missing_slots = atoi(PQgetvalue(res, 0, 8));
	PQclear(res);
	return p;
}

/*
 * Refuse to wire node name (probed as p) into a mesh: wal_level, an
 * explicit node id, the same extension version as this node, and room for
 * the slots, wal senders and apply workers the join adds there (one more
 * of each while the initial copy runs).
 */
static void
check_node(const char *name, const Probe *p, const char *version)
{
	int			slots = p->missing_slots + (p->missing_slots > 0);
	int			workers = p->missing_subs + (p->missing_subs > 0);

	if (strcmp(p->wal_level, "logical") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("wal_level is \"%s\" on node \"%s\"", p->wal_level, name),
				 errhint("Set wal_level = logical in its postgresql.conf and restart it.")));
	if (p->id_default)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("counter.node_id is not set on node \"%s\"", name),
				 errhint("Set counter.node_id in its postgresql.conf to an id that no other node uses, then reload.")));
	if (strcmp(p->version, version) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension counter is at version %s on node \"%s\", %s here",
						p->version, name, version),
				 errhint("Run ALTER EXTENSION counter UPDATE on every node.")));
	if (p->free_slots < slots || p->free_senders < slots)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("node \"%s\" has %d free replication slots and %d free wal senders, the join needs %d of each",
						name, p->free_slots, p->free_senders, slots),
				 errhint("Raise max_replication_slots and max_wal_senders there (a restart).")));
	if (p->free_workers < workers)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("node \"%s\" has room for %d more logical replication workers, the join needs %d",
						name, p->free_workers, workers),
				 errhint("Raise max_logical_replication_workers (and max_worker_processes) there (a restart).")));
}

/* '{"a","b"}': a text array literal of the names. */
static char *
text_array(List *names)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	foreach(lc, names)
	{
		if (lc != list_head(names))
			appendStringInfoChar(&buf, ',');
		appendStringInfo(&buf, "\"%s\"", (char *) lfirst(lc));
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* The members in node name's counter.mesh. */
static List *
read_mesh(PGconn *conn, const char *name)
{
	PGresult   *res = node_query(conn, name,
								 "SELECT name, node_id, conninfo FROM counter.mesh ORDER BY node_id",
								 0, NULL, false);
	List	   *members = NIL;

	for (int i = 0; i < PQntuples(res); i++)
	{
		Member	   *m = palloc0(sizeof(Member));

		m->name = pstrdup(PQgetvalue(res, i, 0));
		m->id = atoi(PQgetvalue(res, i, 1));
		m->conninfo = pstrdup(PQgetvalue(res, i, 2));
		members = lappend(members, m);
	}
	PQclear(res);
	return members;
}

/* Record member m in node name's counter.mesh (replacing a stale entry). */
static void
record_member(PGconn *conn, const char *name, const Member *m)
{
	char		id[16];
	const char *params[3] = {m->name, id, m->conninfo};

	snprintf(id, sizeof(id), "%d", m->id);
	node_exec(conn, name,
			  "INSERT INTO counter.mesh (name, node_id, conninfo) VALUES ($1, $2, $3)"
			  " ON CONFLICT (name) DO UPDATE SET node_id = excluded.node_id,"
			  " conninfo = excluded.conninfo",
			  3, params);
}

/* The subscriptions of node name's database whose names match pattern. */
static PGresult *
subscriptions(PGconn *conn, const char *name, const char *pattern)
{
	return node_query(conn, name,
					  "SELECT s.subname FROM pg_catalog.pg_subscription s"
					  " WHERE s.subname ~ $1 AND s.subdbid = (SELECT d.oid"
					  " FROM pg_catalog.pg_database d"
					  " WHERE d.datname = pg_catalog.current_database())",
					  1, &pattern, false);
}

/*
 * The tables every member publishes in full (publication counter_mesh) and
 * takes from every other member: the state that must converge on all nodes.
 */
static const char *const mesh_tables[] = {
	"counter.totals",
	"counter.idempotency",
	"counter.bound_rights",
	"counter.members",
};

/* On node name: publish every table of mesh_tables, adding any it lacks. */
static void
ensure_publication(PGconn *conn, const char *name)
{
	char	   *v = node_value(conn, name,
							   "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication"
							   " WHERE pubname = 'counter_mesh')", 0, NULL);

	if (strcmp(v, "f") == 0)
		node_exec(conn, name,
				  "CREATE PUBLICATION counter_mesh"
				  " WITH (publish = 'insert, update, delete')", 0, NULL);
	for (int i = 0; i < lengthof(mesh_tables); i++)
	{
		const char *table = mesh_tables[i];

		v = node_value(conn, name,
					   "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel r"
					   " JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid"
					   " WHERE p.pubname = 'counter_mesh' AND r.prrelid = $1::regclass)",
					   1, &table);
		if (strcmp(v, "f") == 0)
			node_exec(conn, name,
					  psprintf("ALTER PUBLICATION counter_mesh ADD TABLE %s", table),
					  0, NULL);
	}
}

/* a statement sent by start_subscription(), its result not yet read */
typedef struct Pending
{
	PGconn	   *conn;
	const char *name;
	char	   *sql;
} Pending;

/*
 * On node name: start subscribing (as sub) to the publication at conninfo,
 * with the initial copy, on conn (a connection of its own: the statements
 * of one phase run at once, each waiting for its slot on another server);
 * pending gets it.  Nothing when the subscription exists.
 */
static List *
start_subscription(List *pending, PGconn *conn, const char *name,
				   const char *sub, const char *conninfo)
{
	PGresult   *res = subscriptions(conn, name, psprintf("^%s$", sub));
	bool		exists = PQntuples(res) > 0;
	Pending    *p;

	PQclear(res);
	if (exists)
		return pending;
	p = palloc(sizeof(Pending));
	p->conn = conn;
	p->name = name;
	p->sql = psprintf("CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION counter_mesh"
					  " WITH (copy_data = true)",
					  quote_identifier(sub), quote_literal_cstr(conninfo));
	node_send(conn, name, p->sql, 0, NULL);
	return lappend(pending, p);
}

/* Wait for every pending statement to succeed (else raise its error). */
static void
finish_pending(List *pending)
{
	ListCell   *lc;

	foreach(lc, pending)
	{
		Pending    *p = lfirst(lc);

		PQclear(node_result(p->conn, p->name, p->sql, false));
	}
}

/* Wait until node name's subscriptions subs (text array) have copied all. */
static void
wait_synced(PGconn *conn, const char *name, const char *subs)
{
	(void) node_wait_until(conn, name,
						   "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s"
						   "  LEFT JOIN pg_catalog.pg_subscription_rel r ON r.srsubid = s.oid"
						   " WHERE s.subname = ANY ($1::text[])"
						   "   AND (r.srsubstate IS NULL OR r.srsubstate <> 'r'))",
						   1, &subs, -1);
}

/* WARNING for each orphaned counter slot (a subscriber gone) on node name. */
static void
warn_orphans(PGconn *conn, const char *name)
{
	char	   *v = node_value(conn, name,
							   "SELECT pg_catalog.string_agg(slot, ', ') FROM counter.nodes"
							   " WHERE status = 'orphaned slot'", 0, NULL);

	if (v)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("node \"%s\" keeps WAL for orphaned counter slots: %s", name, v),
				 errhint("Drop each with pg_drop_replication_slot() there, unless its subscriber comes back.")));
}

/*
 * counter.add_node(name, conninfo): join this node, under name, to the mesh
 * of the member at conninfo (NULL: found a mesh of one).
 */
Datum
counter_add_node(PG_FUNCTION_ARGS)
{
	Member		self;
	PGconn	   *peer;
	List	   *members;
	List	   *mine = NIL;		/* subscriptions here */
	List	   *theirs = NIL;	/* slots here */
	List	   *pending;
	Probe		sp;
	ListCell   *lc;
	char		pid[16];
	const char *params[2];

	check_caller("counter.add_node()");
	if (PG_ARGISNULL(0) || strlen(text_to_cstring(PG_GETARG_TEXT_PP(0))) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("node name must not be empty")));
	if (counter_node_conninfo == NULL || counter_node_conninfo[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("counter.node_conninfo is not set"),
				 errhint("Set it in postgresql.conf to the connection string by which the other nodes reach this database, then reload.")));
	self.name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	self.id = counter_node_id;
	self.conninfo = pstrdup(counter_node_conninfo);

	PG_TRY();
	{
		/* the loopback connection must reach this very backend's database */
		self.conn = node_connect(self.name, self.conninfo, false);
		snprintf(pid, sizeof(pid), "%d", MyProcPid);
		params[0] = pid;
		params[1] = timestamptz_to_str(MyStartTimestamp);
		if (strcmp(node_value(self.conn, self.name,
							  "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity"
							  " WHERE pid = $1 AND backend_start = $2::timestamptz"
							  " AND datname = pg_catalog.current_database())",
							  2, params), "t") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("counter.node_conninfo does not lead to this database"),
					 errhint("Set it to the connection string by which the other nodes reach this database.")));

		/* this node's own prerequisites first, whatever the peers say */
		sp = probe(self.conn, self.name, "{}", "{}");
		check_node(self.name, &sp, sp.version);

		if (PG_ARGISNULL(1))
		{
			/* a mesh of one: this node alone */
			foreach(lc, read_mesh(self.conn, self.name))
			{
				Member	   *m = lfirst(lc);

				if (m->id != self.id || strcmp(m->name, self.name) != 0)
					ereport(ERROR,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("this node is in a mesh already, with node \"%s\"", m->name),
							 errhint("Call counter.remove_node() first to leave it.")));
			}
			members = NIL;
		}
		else
		{
			char	   *pconninfo = text_to_cstring(PG_GETARG_TEXT_PP(1));

			peer = node_connect("peer", pconninfo, false);
			members = NIL;
			foreach(lc, read_mesh(peer, "peer"))
			{
				Member	   *m = lfirst(lc);

				if (m->id == self.id && strcmp(m->name, self.name) == 0)
					continue;	/* this node: a call that is finishing a join */
				if (m->id == self.id)
					ereport(ERROR,
							(errcode(ERRCODE_DUPLICATE_OBJECT),
							 errmsg("node id %d is already used by node \"%s\"", m->id, m->name),
							 errhint("Set counter.node_id on this node to an id that no other node uses, then reload.")));
				if (strcmp(m->name, self.name) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_DUPLICATE_OBJECT),
							 errmsg("node \"%s\" is already in the mesh, with node id %d", m->name, m->id),
							 errhint("Choose another name, or remove that node first.")));
				members = lappend(members, m);
			}
			if (members == NIL)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("the node at that connection string is in no mesh"),
						 errhint("Run SELECT counter.add_node('<its name>') on it first.")));
		}

		/* check every node before changing anything */
		foreach(lc, members)
		{
			Member	   *m = lfirst(lc);

			mine = lappend(mine, subname(self.id, m->id));
			theirs = lappend(theirs, subname(m->id, self.id));
		}
		sp = probe(self.conn, self.name, text_array(mine), text_array(theirs));
		check_node(self.name, &sp, sp.version);
		foreach(lc, members)
		{
			Member	   *m = lfirst(lc);
			Probe		mp;

			m->conn = node_connect(m->name, m->conninfo, false);
			mp = probe(m->conn, m->name,
					   text_array(list_make1(subname(m->id, self.id))),
					   text_array(list_make1(subname(self.id, m->id))));
			if (mp.node_id != m->id)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("node \"%s\" has counter.node_id %d, its mesh knows it as %d",
								m->name, mp.node_id, m->id),
						 errhint("Set counter.node_id back to %d there.", m->id)));
			check_node(m->name, &mp, sp.version);
		}

		/*
		 * Publication first, then this node's subscriptions to every member
		 * (copying the whole history), then theirs to this node.  Within a
		 * phase the subscriptions are created at once: each waits for its
		 * slot on another server (for the transactions running there, until
		 * a running-transactions record shows them ended: up to 15 s or so
		 * under load).  Never the two phases together: a member creating
		 * its slot here waits for this node's transactions, among them the
		 * CREATE SUBSCRIPTION waiting for its slot on that member, which
		 * waits for the member's, and so on in a circle.
		 */
		ensure_publication(self.conn, self.name);
		pending = NIL;
		foreach(lc, members)
		{
			Member	   *m = lfirst(lc);

			pending = start_subscription(pending,
										 node_connect(self.name, self.conninfo, false),
										 self.name, subname(self.id, m->id),
										 m->conninfo);
		}
		finish_pending(pending);
		pending = NIL;
		foreach(lc, members)
		{
			Member	   *m = lfirst(lc);

			pending = start_subscription(pending, m->conn, m->name,
										 subname(m->id, self.id), self.conninfo);
		}
		finish_pending(pending);
		foreach(lc, members)
		{
			Member	   *m = lfirst(lc);

			record_member(m->conn, m->name, &self);
		}
		record_member(self.conn, self.name, &self);
		foreach(lc, members)
			record_member(self.conn, self.name, lfirst(lc));

		/* return once every direction has made its initial copy */
		wait_synced(self.conn, self.name, text_array(mine));
		foreach(lc, members)
		{
			Member	   *m = lfirst(lc);

			wait_synced(m->conn, m->name,
						text_array(list_make1(subname(m->id, self.id))));
		}
		warn_orphans(self.conn, self.name);
	}
	PG_FINALLY();
	{
		close_all();
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}

/*
 * On node name: drop the subscriptions whose names match the pattern
 * without reaching their publisher (disable, detach from the slot, drop).
 */
static void
drop_subscriptions(PGconn *conn, const char *name, const char *pattern)
{
	PGresult   *res = subscriptions(conn, name, pattern);

	for (int i = 0; i < PQntuples(res); i++)
	{
		const char *sub = quote_identifier(PQgetvalue(res, i, 0));

		node_exec(conn, name, psprintf("ALTER SUBSCRIPTION %s DISABLE", sub), 0, NULL);
		node_exec(conn, name, psprintf("ALTER SUBSCRIPTION %s SET (slot_name = NONE)", sub),
				  0, NULL);
		node_exec(conn, name, psprintf("DROP SUBSCRIPTION %s", sub), 0, NULL);
	}
	PQclear(res);
}

/*
 * On node name: drop the replication slots whose names match the pattern,
 * ending the wal senders that still hold them (their subscriber is gone
 * or disabled, so none comes back).
 */
static void
drop_slots(PGconn *conn, const char *name, const char *pattern)
{
	while (!node_wait_until(conn, name,
							"SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots"
							" WHERE slot_name ~ $1)", 1, &pattern, 0))
	{
		PQclear(node_query(conn, name,
						   "SELECT pg_catalog.pg_terminate_backend(active_pid)"
						   "  FROM pg_catalog.pg_replication_slots"
						   " WHERE slot_name ~ $1 AND active_pid IS NOT NULL",
						   1, &pattern, false));
		/* a slot that a wal sender still holds is dropped at the next turn */
		PQclear(node_query(conn, name,
						   "SELECT pg_catalog.pg_drop_replication_slot(slot_name)"
						   "  FROM pg_catalog.pg_replication_slots"
						   " WHERE slot_name ~ $1 AND NOT active",
						   1, &pattern, true));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Drain the leaver: compact it (buffered adds flushed, everything in its
 * totals), hand its rights on bounded keys over to a remaining member
 * (rights.c), then wait until every reachable member has applied its WAL up
 * to that point, at most timeout ms.
 */
static void
drain(Member *leaver, List *others, long timeout)
{
	const char *params[2];
	ListCell   *lc;

	node_exec(leaver->conn, leaver->name, "SELECT counter.compact()", 0, NULL);
	node_exec(leaver->conn, leaver->name, "SELECT counter._rights_hand_over()", 0, NULL);
	params[1] = node_value(leaver->conn, leaver->name,
						   "SELECT pg_catalog.pg_current_wal_lsn()::text", 0, NULL);
	foreach(lc, others)
	{
		Member	   *m = lfirst(lc);

		if (m->conn == NULL)
			continue;
		params[0] = subname(m->id, leaver->id);
		if (!node_wait_until(leaver->conn, leaver->name,
							 "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_replication"
							 " WHERE application_name = $1 AND replay_lsn >= $2::pg_lsn)",
							 2, params, timeout))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("node \"%s\" has not received the last changes of node \"%s\"",
							m->name, leaver->name),
					 errhint("See counter.nodes on node \"%s\"; call counter.remove_node() again once it receives, or stop node \"%s\" to remove it without draining.",
							 m->name, leaver->name)));
	}
}

/*
 * counter.remove_node(name, drain_timeout): take member name out of the
 * mesh, on every member this node reaches.  A reachable leaver is drained
 * first and left with no subscription, slot, publication or mesh; an
 * unreachable one is cut off from the others.  Its shard stays everywhere.
 */
Datum
counter_remove_node(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Interval   *iv = PG_GETARG_INTERVAL_P(1);
	long		timeout;
	List	   *members = NIL;
	List	   *others = NIL;
	Member	   *leaver = NULL;
	ListCell   *lc;

	check_caller("counter.remove_node()");
	timeout = (long) Min((iv->time + (int64) (iv->day + iv->month * DAYS_PER_MONTH) *
						  USECS_PER_DAY) / 1000, (int64) LONG_MAX);
	if (timeout < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("drain_timeout must not be negative")));

	PG_TRY();
	{
		MemoryContext caller = CurrentMemoryContext;

		/* this node's own list of members, read through its own SPI */
		SPI_connect();
		if (SPI_execute("SELECT name, node_id, conninfo FROM counter.mesh ORDER BY node_id",
						true, 0) != SPI_OK_SELECT)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not read counter.mesh")));
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			MemoryContext old = MemoryContextSwitchTo(caller);
			Member	   *m = palloc0(sizeof(Member));

			m->name = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
			m->id = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			m->conninfo = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
			members = lappend(members, m);
			MemoryContextSwitchTo(old);
		}
		SPI_finish();

		foreach(lc, members)
		{
			Member	   *m = lfirst(lc);

			if (strcmp(m->name, name) == 0)
				leaver = m;
			else
				others = lappend(others, m);
		}
		if (leaver == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("node \"%s\" is not in this node's mesh", name),
					 errhint("SELECT name FROM counter.nodes lists the members.")));

		leaver->conn = node_connect(leaver->name, leaver->conninfo, true);
		foreach(lc, others)
		{
			Member	   *m = lfirst(lc);

			m->conn = node_connect(m->name, m->conninfo, true);
		}
		if (leaver->conn)
			drain(leaver, others, timeout);

		/* the others stop receiving from it, then it stops receiving */
		foreach(lc, others)
		{
			Member	   *m = lfirst(lc);

			if (m->conn)
				drop_subscriptions(m->conn, m->name,
								   psprintf("^%s$", subname(m->id, leaver->id)));
		}
		if (leaver->conn)
		{
			drop_slots(leaver->conn, leaver->name,
					   psprintf("^counter_n[0-9]+_from_n%d$", leaver->id));
			drop_subscriptions(leaver->conn, leaver->name,
							   psprintf("^counter_n%d_from_n[0-9]+$", leaver->id));
			node_exec(leaver->conn, leaver->name,
					  "DROP PUBLICATION IF EXISTS counter_mesh", 0, NULL);
			node_exec(leaver->conn, leaver->name, "DELETE FROM counter.mesh", 0, NULL);
		}
		foreach(lc, others)
		{
			Member	   *m = lfirst(lc);
			const char *leaver_name = leaver->name;

			if (m->conn == NULL)
				continue;
			drop_slots(m->conn, m->name,
					   psprintf("^%s$", subname(leaver->id, m->id)));
			node_exec(m->conn, m->name, "DELETE FROM counter.mesh WHERE name = $1",
					  1, &leaver_name);
			warn_orphans(m->conn, m->name);
		}
	}
	PG_FINALLY();
	{
		close_all();
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}
