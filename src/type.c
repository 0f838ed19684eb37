/*-------------------------------------------------------------------------
 *
 * type.c
 *	  The base type counter.sharded_counter: the state of a PN-counter.
 *
 * See type.h for both layouts.  Every function works on the expanded form
 * (version 1, struct ShardedCounter) and returns the compact version 2
 * encoding; stored values of either version are read.  Text form: "{}" or
 * "{1:+15-3,7:+4}" (shard:+incremented-decremented, shards ascending); the
 * text and binary (send/recv) forms do not depend on the stored version.
 *
 * Reading a value costs one palloc at most: a version 2 value of up to
 * SC_LOCAL_SHARDS shards read by a function of this file for the length of
 * one call is decoded on the stack, a bigger one into one palloc'd
 * expanded state; a version 1 value is used in place, as before.
 *
 * Exposed to the rest of the extension (declared in type.h):
 *
 *	ShardedCounter *sharded_counter_from_datum(Datum d, bool copy);
 *		detoast, decode and validate a stored value of either version
 *		(DatumGetShardedCounterPCopy with copy); the result is palloc'd
 *		unless it is a version 1 value used in place (never when copy is
 *		set)
 *	Datum sharded_counter_to_datum(const ShardedCounter *sc);
 *		the version 2 encoding of an expanded state, for every function
 *		returning the type (PG_RETURN_SHARDED_COUNTER_P)
 *	ShardedCounter *sharded_counter_empty(void);
 *		a new empty state "{}"
 *	ShardedCounter *sharded_counter_add(ShardedCounter *sc, int32 shard,
 *										int64 delta);
 *		a new state with delta added to one shard (sc is not modified)
 *	ShardedCounter *sharded_counter_join(ShardedCounter *a, ShardedCounter *b);
 *		a new state that is the PN-counter join of a and b
 *	int64 sharded_counter_value(ShardedCounter *sc);
 *		sum of (inc - dec), error if it does not fit in int8
 *
 * SQLSTATE policy:
 *	22P02 invalid_text_representation: any text input syntax error,
 *		including duplicate, unsorted and negative shard numbers (a negative
 *		shard is a malformed value, not an out-of-range number, so it is
 *		reported like the other structural errors, with a detail line)
 *	22003 numeric_value_out_of_range: a shard number outside int4 or a count
 *		outside int8 in text input; value() or increment() overflowing int8
 *	22P03 invalid_binary_representation: any malformed binary input
 *	54000 program_limit_exceeded: more than SC_MAX_SHARDS shards, from text
 *		input, binary input, merge or increment
 *	22023 invalid_parameter_value: increment() of a negative shard
 *	XX001 data_corrupted: a stored value with an unknown version or an
 *		inconsistent layout (version 1), or a truncated, overlong,
 *		non-minimal or out-of-range varint, unordered shards, too many
 *		shards or trailing bytes (version 2)
 *
 * Comparison operators compare by value (sum of inc - dec), computed exactly
 * in 128 bits so that comparisons never fail.  Because two different states
 * can compare equal, the btree opclass deliberately has no equalimage
 * support function, so btree deduplication is never used for this type.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "common/int128.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "parser/scansup.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "type.h"

StaticAssertDecl(offsetof(ShardedCounter, entries) == 16,
				 "sharded_counter header must be 16 bytes");
StaticAssertDecl(sizeof(ShardedCounterEntry) == 24,
				 "sharded_counter entry must be 24 bytes");

/* Size of one entry in the binary send/recv format: int32 + int64 + int64. */
#define SC_WIRE_ENTRY_SIZE	20

/* Longest varint of a version 2 value: 9 bytes carry 63 bits. */
#define SC_VARINT_MAX_BYTES	9

/*
 * Stack room for the expanded form of a small state, so that a function
 * reading a version 2 value for one call allocates nothing for it.
 */
#define SC_LOCAL_SHARDS		4

typedef union SCLocal
{
	char		data[SC_SIZE(SC_LOCAL_SHARDS)];
	int64		force_align;	/* the entries hold int64 */
} SCLocal;

PG_FUNCTION_INFO_V1(sharded_counter_in);
PG_FUNCTION_INFO_V1(sharded_counter_out);
PG_FUNCTION_INFO_V1(sharded_counter_recv);
PG_FUNCTION_INFO_V1(sharded_counter_send);
PG_FUNCTION_INFO_V1(sharded_counter_get_value);
PG_FUNCTION_INFO_V1(sharded_counter_to_numeric);
PG_FUNCTION_INFO_V1(sharded_counter_merge);
PG_FUNCTION_INFO_V1(sharded_counter_increment);
PG_FUNCTION_INFO_V1(sharded_counter_shards);
PG_FUNCTION_INFO_V1(sharded_counter_lt);
PG_FUNCTION_INFO_V1(sharded_counter_le);
PG_FUNCTION_INFO_V1(sharded_counter_eq);
PG_FUNCTION_INFO_V1(sharded_counter_ne);
PG_FUNCTION_INFO_V1(sharded_counter_ge);
PG_FUNCTION_INFO_V1(sharded_counter_gt);
PG_FUNCTION_INFO_V1(sharded_counter_cmp);

/* Raise the standard syntax error for text input, with a detail line. */
#define SC_SYNTAX_ERROR(input, ...) \
	ereport(ERROR, \
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION), \
			 errmsg("invalid input syntax for type %s: \"%s\"", \
					"sharded_counter", (input)), \
			 errdetail(__VA_ARGS__)))

static void sc_too_many_shards(void) pg_attribute_noreturn();

/* Raise the error for exceeding the shard limit (shared by all producers). */
static void
sc_too_many_shards(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("too many shards in sharded_counter value"),
			 errdetail("A sharded_counter can hold at most %d shards.",
					   SC_MAX_SHARDS)));
}

/* Raise the error for a malformed stored value, with a detail line. */
#define SC_CORRUPTED(...) \
	ereport(ERROR, \
			(errcode(ERRCODE_DATA_CORRUPTED), \
			 errmsg("corrupted sharded_counter value"), \
			 errdetail(__VA_ARGS__)))

/* Allocate a zero-filled expanded state with room for n entries, header filled in. */
static ShardedCounter *
sc_alloc(int n)
{
	ShardedCounter *sc;

	Assert(n >= 0 && n <= SC_MAX_SHARDS);
	sc = (ShardedCounter *) palloc0(SC_SIZE(n));
	SET_VARSIZE(sc, SC_SIZE(n));
	sc->version = SC_VERSION_EXPANDED;
	sc->nshards = n;
	return sc;
}

/* Return a new empty state "{}"; the identity element of the join. */
ShardedCounter *
sharded_counter_empty(void)
{
	return sc_alloc(0);
}

/* Check every invariant of a version 1 value; it may come from a corrupt page. */
static void
sc_check(const ShardedCounter *sc)
{
	Size		size = VARSIZE(sc);
	int			i;

	if (size < SC_HEADER_SIZE)
		SC_CORRUPTED("Value is %zu bytes long, shorter than its header.", size);
	if (sc->version != SC_VERSION_EXPANDED)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("unsupported sharded_counter format version %d",
						(int) sc->version),
				 errdetail("Only versions %d and %d are supported.",
						   SC_VERSION_EXPANDED, SC_VERSION_COMPACT)));
	if (sc->nshards < 0 || sc->nshards > SC_MAX_SHARDS ||
		size != SC_SIZE(sc->nshards))
		SC_CORRUPTED("Shard count does not match the value's length.");
	for (i = 0; i < sc->nshards; i++)
	{
		const ShardedCounterEntry *e = &sc->entries[i];

		if (e->shard < 0 || e->inc < 0 || e->dec < 0 ||
			(i > 0 && e->shard <= sc->entries[i - 1].shard))
			SC_CORRUPTED("Entry %d is negative or out of order.", i + 1);
	}
}

static void sc_bad_varint(int entry, const char *field,
						  const char *problem) pg_attribute_noreturn();

/*
 * Report a malformed varint of a version 2 value: field of entry (1-based;
 * 0 for the shard count, which belongs to no entry) has the problem.
 */
static void
sc_bad_varint(int entry, const char *field, const char *problem)
{
	if (entry == 0)
		SC_CORRUPTED("The %s %s.", field, problem);
	SC_CORRUPTED("The %s of entry %d %s.", field, entry, problem);
}

/*
 * Read one varint at *pp (before end), advancing *pp past it.  It must be
 * minimal, at most SC_VARINT_MAX_BYTES long and at most max; entry and
 * field name it in the error otherwise.  One byte is the fast path.
 */
static inline uint64
sc_get_varint(const uint8 **pp, const uint8 *end, uint64 max,
			  int entry, const char *field)
{
	const uint8 *p = *pp;
	uint64		v;

	if (likely(p < end && *p < 0x80))
		v = *p++;
	else
	{
		int			shift = 0;

		v = 0;
		for (;;)
		{
			uint8		b;

			if (p >= end)
				sc_bad_varint(entry, field, "is truncated");
			b = *p++;
			v |= (uint64) (b & 0x7F) << shift;
			if ((b & 0x80) == 0)
			{
				/* not the first byte here: the first had its high bit set */
				if (b == 0)
					sc_bad_varint(entry, field, "is not minimally encoded");
				break;
			}
			shift += 7;
			if (shift >= SC_VARINT_MAX_BYTES * 7)
				sc_bad_varint(entry, field, "is longer than 9 bytes");
		}
	}
	if (v > max)
		sc_bad_varint(entry, field, "is out of range");
	*pp = p;
	return v;
}

/*
 * Decode the version 2 bytes p[0 .. len) (p[0] is the version byte) into
 * an expanded state: into *local if it is given and has room, else into
 * one palloc'd state.  Every invariant is checked on the way.
 */
static ShardedCounter *
sc_decode(const uint8 *p, Size len, SCLocal *local)
{
	const uint8 *end = p + len;
	ShardedCounter *sc;
	uint64		n;
	int64		shard = 0;
	int			i;

	Assert(len >= 1 && p[0] == SC_VERSION_COMPACT);
	p++;
	n = sc_get_varint(&p, end, PG_INT64_MAX, 0, "shard count");
	if (n > SC_MAX_SHARDS)
		SC_CORRUPTED("Shard count " UINT64_FORMAT " exceeds the limit of %d.",
					 n, SC_MAX_SHARDS);
	/* an entry takes at least 3 bytes: refuse a count the bytes cannot hold */
	if (n * 3 > (uint64) (end - p))
		SC_CORRUPTED("Value is %zu bytes long, too short for a shard count of %d.",
					 len, (int) n);

	if (local != NULL && n <= SC_LOCAL_SHARDS)
		sc = (ShardedCounter *) local;
	else
		sc = (ShardedCounter *) palloc(SC_SIZE(n));
	SET_VARSIZE(sc, SC_SIZE(n));
	sc->version = SC_VERSION_EXPANDED;
	sc->flags = 0;
	sc->reserved = 0;
	sc->nshards = (int32) n;
	sc->pad = 0;

	for (i = 0; i < (int) n; i++)
	{
		ShardedCounterEntry *e = &sc->entries[i];
		uint64		delta;

		delta = sc_get_varint(&p, end, PG_INT32_MAX, i + 1, "shard delta");
		if (i > 0 && delta == 0)
			SC_CORRUPTED("Entry %d repeats shard " INT64_FORMAT ".",
						 i + 1, shard);
		shard += (int64) delta;
		if (shard > PG_INT32_MAX)
			SC_CORRUPTED("The shard number of entry %d is out of range.", i + 1);
		e->shard = (int32) shard;
		e->reserved = 0;
		e->inc = (int64) sc_get_varint(&p, end, PG_INT64_MAX, i + 1,
									   "incremented total");
		e->dec = (int64) sc_get_varint(&p, end, PG_INT64_MAX, i + 1,
									   "decremented total");
	}
	if (p != end)
		SC_CORRUPTED("Value is %zu bytes long, but its last entry ends at byte %zu.",
					 len, len - (Size) (end - p));
	return sc;
}

/*
 * Read a stored value of either version as an expanded state.  Version 2
 * is decoded (into *local when given and big enough, else into palloc'd
 * memory); version 1 is checked and used in place if it is a plain
 * 4-byte-header value and copy is not set, else copied.  Anything else is
 * a corrupted value (sc_check reports it).  See sc_release.
 */
static ShardedCounter *
sc_read(Datum d, SCLocal *local, bool copy)
{
	struct varlena *raw = PG_DETOAST_DATUM_PACKED(d);
	const uint8 *data = (const uint8 *) VARDATA_ANY(raw);
	Size		len = VARSIZE_ANY_EXHDR(raw);
	ShardedCounter *sc;

	if (likely(len >= 1 && data[0] == SC_VERSION_COMPACT))
	{
		sc = sc_decode(data, len, local);
		if ((Pointer) raw != DatumGetPointer(d))
			pfree(raw);
		return sc;
	}

	/* version 1 (or garbage): the entries need an aligned 4-byte header */
	if (VARATT_IS_SHORT(raw))
		sc = (ShardedCounter *) PG_DETOAST_DATUM(PointerGetDatum(raw));
	else if (copy && (Pointer) raw == DatumGetPointer(d))
		sc = (ShardedCounter *) PG_DETOAST_DATUM_COPY(d);
	else
		sc = (ShardedCounter *) raw;
	sc_check(sc);
	return sc;
}

/* Free what sc_read(d, local, ...) allocated for sc, if anything. */
static inline void
sc_release(ShardedCounter *sc, Datum d, SCLocal *local)
{
	if ((void *) sc != (void *) local && (Pointer) sc != DatumGetPointer(d))
		pfree(sc);
}

/* Detoast, decode (version 2) or check (version 1) a sharded_counter datum. */
ShardedCounter *
sharded_counter_from_datum(Datum d, bool copy)
{
	return sc_read(d, NULL, copy);
}

/* Append v as a minimal unsigned LEB128 varint at p; returns the end. */
static inline uint8 *
sc_put_varint(uint8 *p, uint64 v)
{
	while (v >= 0x80)
	{
		*p++ = (uint8) (v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8) v;
	return p;
}

/* The version 2 encoding of n valid entries, a new palloc'd value. */
static Datum
sc_encode(const ShardedCounterEntry *entries, int n)
{
	struct varlena *result;
	uint8	   *start;
	uint8	   *p;
	int32		prev = 0;
	int			i;

	Assert(n >= 0 && n <= SC_MAX_SHARDS);
	result = (struct varlena *) palloc(SC_COMPACT_MAX_SIZE(n));
	start = p = (uint8 *) VARDATA(result);
	*p++ = SC_VERSION_COMPACT;
	p = sc_put_varint(p, (uint64) n);
	for (i = 0; i < n; i++)
	{
		const ShardedCounterEntry *e = &entries[i];

		Assert(e->shard >= 0 && (i == 0 || e->shard > prev));
		Assert(e->inc >= 0 && e->dec >= 0);
		p = sc_put_varint(p, (uint64) (e->shard - prev));
		p = sc_put_varint(p, (uint64) e->inc);
		p = sc_put_varint(p, (uint64) e->dec);
		prev = e->shard;
	}
	Assert(VARHDRSZ + (p - start) <= SC_COMPACT_MAX_SIZE(n));
	SET_VARSIZE(result, VARHDRSZ + (p - start));
	return PointerGetDatum(result);
}

/* An expanded state as a datum: its version 2 encoding (sc is not freed). */
Datum
sharded_counter_to_datum(const ShardedCounter *sc)
{
	return sc_encode(sc->entries, sc->nshards);
}

/*
 * Parse an unsigned decimal number at *pp (digits only, no sign), advancing
 * *pp past it.  Returns false if there are no digits.  On a value above max,
 * reports 22003 naming the whole digit run and the type it must fit in.
 */
static bool
sc_parse_number(const char **pp, uint64 max, const char *typname,
				const char *what, uint64 *result)
{
	const char *start = *pp;
	const char *p = start;
	uint64		val = 0;
	bool		overflow = false;

	while (*p >= '0' && *p <= '9')
	{
		uint64		digit = (uint64) (*p - '0');

		if (!overflow)
		{
			if (val > (max - digit) / 10)
				overflow = true;
			else
				val = val * 10 + digit;
		}
		p++;
	}
	if (p == start)
		return false;
	if (overflow)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("value \"%s\" is out of range for type %s",
						pnstrdup(start, p - start), typname),
				 errdetail("%s must be between 0 and " UINT64_FORMAT ".",
						   what, max)));
	*pp = p;
	*result = val;
	return true;
}

/* Skip optional whitespace between tokens. */
static inline const char *
sc_skip_ws(const char *p)
{
	while (scanner_isspace(*p))
		p++;
	return p;
}

/*
 * Text input.  Grammar (whitespace allowed around every token, but not
 * between a sign and its digits):
 *
 *	value := '{' [ entry { ',' entry } ] '}'
 *	entry := shard ':' ( '+' digits [ '-' digits ] | '-' digits )
 *
 * The sign is required so that a bare number cannot be mistaken for a net
 * value: "{1:5}" is rejected, write "{1:+5}".  Shards must be strictly
 * ascending, so every state has exactly one text form.
 */
Datum
sharded_counter_in(PG_FUNCTION_ARGS)
{
	const char *input = PG_GETARG_CSTRING(0);
	const char *p = input;
	ShardedCounterEntry *entries;
	int			n = 0;
	int			cap = 8;
	Datum		result;

	entries = (ShardedCounterEntry *) palloc0(cap * sizeof(ShardedCounterEntry));

	p = sc_skip_ws(p);
	if (*p != '{')
		SC_SYNTAX_ERROR(input, "Value must start with \"{\".");
	p = sc_skip_ws(p + 1);

	if (*p == '}')
		p++;
	else
	{
		for (;;)
		{
			uint64		shard;
			uint64		inc = 0;
			uint64		dec = 0;
			bool		seen_inc = false;
			bool		seen_dec = false;

			/* shard number */
			if (*p == '-' && *(p + 1) >= '0' && *(p + 1) <= '9')
				SC_SYNTAX_ERROR(input, "Shard numbers must not be negative.");
			if (*p == '\0')
				SC_SYNTAX_ERROR(input, "Unexpected end of input.");
			if (!sc_parse_number(&p, PG_INT32_MAX, "integer",
								 "Shard number", &shard))
				SC_SYNTAX_ERROR(input, "Expected a shard number.");
			p = sc_skip_ws(p);

			/* colon */
			if (*p == '\0')
				SC_SYNTAX_ERROR(input, "Unexpected end of input.");
			if (*p != ':')
				SC_SYNTAX_ERROR(input, "Expected \":\" after shard number %d.",
								(int) shard);
			p = sc_skip_ws(p + 1);

			/* "+N", "-N" or "+N -N" */
			if (*p == '+')
			{
				p++;
				if (!sc_parse_number(&p, PG_INT64_MAX, "bigint",
									 "Incremented total", &inc))
					SC_SYNTAX_ERROR(input,
									"Expected digits after \"+\" for shard %d.",
									(int) shard);
				seen_inc = true;
				p = sc_skip_ws(p);
			}
			if (*p == '-')
			{
				p++;
				if (!sc_parse_number(&p, PG_INT64_MAX, "bigint",
									 "Decremented total", &dec))
					SC_SYNTAX_ERROR(input,
									"Expected digits after \"-\" for shard %d.",
									(int) shard);
				seen_dec = true;
				p = sc_skip_ws(p);
			}
			if (!seen_inc && !seen_dec)
			{
				if (*p == '\0')
					SC_SYNTAX_ERROR(input, "Unexpected end of input.");
				SC_SYNTAX_ERROR(input,
								"Expected \"+\" or \"-\" and digits after \"%d:\".",
								(int) shard);
			}
			if (*p == '+' && !seen_inc)
				SC_SYNTAX_ERROR(input,
								"The \"+\" part must come before the \"-\" part for shard %d.",
								(int) shard);
			if (*p == '+' || (*p == '-' && seen_dec))
				SC_SYNTAX_ERROR(input,
								"Shard %d has more than one \"%c\" part.",
								(int) shard, *p);

			/* order and duplicates */
			if (n > 0 && (int32) shard <= entries[n - 1].shard)
			{
				if ((int32) shard == entries[n - 1].shard)
					SC_SYNTAX_ERROR(input, "Shard %d appears more than once.",
									(int) shard);
				SC_SYNTAX_ERROR(input,
								"Shard %d appears after shard %d; shards must be in ascending order.",
								(int) shard, entries[n - 1].shard);
			}

			if (n >= SC_MAX_SHARDS)
				sc_too_many_shards();
			if (n >= cap)
			{
				cap = Min(cap * 2, SC_MAX_SHARDS);
				entries = (ShardedCounterEntry *)
					repalloc(entries, cap * sizeof(ShardedCounterEntry));
			}
			entries[n].shard = (int32) shard;
			entries[n].reserved = 0;
			entries[n].inc = (int64) inc;
			entries[n].dec = (int64) dec;
			n++;

			/* separator or end */
			if (*p == ',')
			{
				p = sc_skip_ws(p + 1);
				continue;
			}
			if (*p == '}')
			{
				p++;
				break;
			}
			if (*p == '\0')
				SC_SYNTAX_ERROR(input, "Unexpected end of input.");
			SC_SYNTAX_ERROR(input, "Expected \",\" or \"}\" after shard %d.",
							(int) shard);
		}
	}

	p = sc_skip_ws(p);
	if (*p != '\0')
		SC_SYNTAX_ERROR(input, "Junk after closing \"}\".");

	result = sc_encode(entries, n);
	pfree(entries);
	PG_RETURN_DATUM(result);
}

/* Text output: canonical form, "-dec" only when dec > 0, "+inc" unless only dec. */
Datum
sharded_counter_out(PG_FUNCTION_ARGS)
{
	SCLocal		local;
	ShardedCounter *sc = sc_read(PG_GETARG_DATUM(0), &local, false);
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; i < sc->nshards; i++)
	{
		const ShardedCounterEntry *e = &sc->entries[i];

		if (i > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfo(&buf, "%d:", e->shard);
		if (e->inc > 0 || e->dec == 0)
			appendStringInfo(&buf, "+" INT64_FORMAT, e->inc);
		if (e->dec > 0)
			appendStringInfo(&buf, "-" INT64_FORMAT, e->dec);
	}
	appendStringInfoChar(&buf, '}');
	PG_RETURN_CSTRING(buf.data);
}

/*
 * Binary input: int32 nshards, then per shard int32 shard, int64 inc,
 * int64 dec.  Everything is validated before it is read, so a malformed
 * message can only raise an error.
 */
Datum
sharded_counter_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	ShardedCounter *result;
	int32		nshards;
	int			remaining;
	int			i;

	if (buf->len - buf->cursor < (int) sizeof(int32))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid external sharded_counter value"),
				 errdetail("Value has %d bytes, too short for the shard count.",
						   buf->len - buf->cursor)));
	nshards = (int32) pq_getmsgint(buf, sizeof(int32));
	if (nshards < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid external sharded_counter value"),
				 errdetail("Shard count %d is negative.", nshards)));
	if (nshards > SC_MAX_SHARDS)
		sc_too_many_shards();

	remaining = buf->len - buf->cursor;
	if ((int64) remaining != (int64) nshards * SC_WIRE_ENTRY_SIZE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid external sharded_counter value"),
				 errdetail("Shard count %d needs %d bytes of shard data, found %d.",
						   nshards, nshards * SC_WIRE_ENTRY_SIZE, remaining)));

	result = sc_alloc(nshards);
	for (i = 0; i < nshards; i++)
	{
		ShardedCounterEntry *e = &result->entries[i];

		e->shard = (int32) pq_getmsgint(buf, sizeof(int32));
		e->inc = pq_getmsgint64(buf);
		e->dec = pq_getmsgint64(buf);

		if (e->shard < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid external sharded_counter value"),
					 errdetail("Shard number %d is negative.", e->shard)));
		if (i > 0 && e->shard == result->entries[i - 1].shard)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid external sharded_counter value"),
					 errdetail("Shard %d appears more than once.", e->shard)));
		if (i > 0 && e->shard < result->entries[i - 1].shard)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid external sharded_counter value"),
					 errdetail("Shard %d follows shard %d; shards must be strictly ascending.",
							   e->shard, result->entries[i - 1].shard)));
		if (e->inc < 0 || e->dec < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid external sharded_counter value"),
					 errdetail("Shard %d has a negative total.", e->shard)));
	}
	PG_RETURN_SHARDED_COUNTER_P(result);
}

/* Binary output, the format sharded_counter_recv reads. */
Datum
sharded_counter_send(PG_FUNCTION_ARGS)
{
	SCLocal		local;
	ShardedCounter *sc = sc_read(PG_GETARG_DATUM(0), &local, false);
	StringInfoData buf;
	int			i;

	pq_begintypsend(&buf);
	pq_sendint32(&buf, (uint32) sc->nshards);
	for (i = 0; i < sc->nshards; i++)
	{
		pq_sendint32(&buf, (uint32) sc->entries[i].shard);
		pq_sendint64(&buf, sc->entries[i].inc);
		pq_sendint64(&buf, sc->entries[i].dec);
	}
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* Exact value in 128 bits: at most 65536 * 2^63 in magnitude, never overflows. */
static INT128
sc_value128(const ShardedCounter *sc)
{
	INT128		acc = int64_to_int128(0);
	int			i;

	for (i = 0; i < sc->nshards; i++)
	{
		int128_add_int64(&acc, sc->entries[i].inc);
		int128_add_int64(&acc, -sc->entries[i].dec);	/* dec >= 0: no overflow */
	}
	return acc;
}

/* Value as int8; 22003 if the exact sum does not fit (cast to numeric then). */
int64
sharded_counter_value(ShardedCounter *sc)
{
	INT128		v = sc_value128(sc);

	if (int128_compare(v, int64_to_int128(PG_INT64_MAX)) > 0 ||
		int128_compare(v, int64_to_int128(PG_INT64_MIN)) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("sharded_counter value out of range for type bigint"),
				 errhint("Cast to numeric to get the exact value.")));
	return int128_to_int64(v);
}

/* SQL counter.value(sc) and the cast to int8. */
Datum
sharded_counter_get_value(PG_FUNCTION_ARGS)
{
	SCLocal		local;
	ShardedCounter *sc = sc_read(PG_GETARG_DATUM(0), &local, false);

	PG_RETURN_INT64(sharded_counter_value(sc));
}

/*
 * Cast to numeric: exact for every state.  Per-shard differences always fit
 * in int64; they are summed in int64 and only flushed into a numeric when the
 * running sum would overflow, so the usual case costs one int64_to_numeric.
 */
Datum
sharded_counter_to_numeric(PG_FUNCTION_ARGS)
{
	SCLocal		local;
	ShardedCounter *sc = sc_read(PG_GETARG_DATUM(0), &local, false);
	Numeric		acc = NULL;
	int64		partial = 0;
	int			i;

	for (i = 0; i < sc->nshards; i++)
	{
		int64		diff = sc->entries[i].inc - sc->entries[i].dec;
		int64		next;

		if (pg_add_s64_overflow(partial, diff, &next))
		{
			Numeric		np = int64_to_numeric(partial);

			acc = acc ? numeric_add_opt_error(acc, np, NULL) : np;
			next = diff;
		}
		partial = next;
	}
	if (acc == NULL)
		PG_RETURN_NUMERIC(int64_to_numeric(partial));
	PG_RETURN_NUMERIC(numeric_add_opt_error(acc, int64_to_numeric(partial),
											NULL));
}

/*
 * The PN-counter join: union of shards, per shard max(inc) and max(dec).
 * A linear merge of the two sorted arrays; 54000 if the union is too big.
 */
ShardedCounter *
sharded_counter_join(ShardedCounter *a, ShardedCounter *b)
{
	ShardedCounterEntry *out;
	ShardedCounter *result;
	int			i = 0;
	int			j = 0;
	int			n = 0;

	/* worst case na + nb entries; counted exactly before allocating */
	while (i < a->nshards || j < b->nshards)
	{
		if (j >= b->nshards ||
			(i < a->nshards && a->entries[i].shard < b->entries[j].shard))
			i++;
		else if (i >= a->nshards || b->entries[j].shard < a->entries[i].shard)
			j++;
		else
		{
			i++;
			j++;
		}
		n++;
	}
	if (n > SC_MAX_SHARDS)
		sc_too_many_shards();

	result = sc_alloc(n);
	out = result->entries;
	i = j = 0;
	while (i < a->nshards || j < b->nshards)
	{
		if (j >= b->nshards ||
			(i < a->nshards && a->entries[i].shard < b->entries[j].shard))
			*out = a->entries[i++];
		else if (i >= a->nshards || b->entries[j].shard < a->entries[i].shard)
			*out = b->entries[j++];
		else
		{
			out->shard = a->entries[i].shard;
			out->inc = Max(a->entries[i].inc, b->entries[j].inc);
			out->dec = Max(a->entries[i].dec, b->entries[j].dec);
			i++;
			j++;
		}
		out->reserved = 0;
		out++;
	}
	Assert(out == result->entries + n);
	return result;
}

/* SQL counter.merge(a, b), also the aggregate's transition and combine function. */
Datum
sharded_counter_merge(PG_FUNCTION_ARGS)
{
	SCLocal		local_a;
	SCLocal		local_b;
	ShardedCounter *a = sc_read(PG_GETARG_DATUM(0), &local_a, false);
	ShardedCounter *b = sc_read(PG_GETARG_DATUM(1), &local_b, false);

	PG_RETURN_SHARDED_COUNTER_P(sharded_counter_join(a, b));
}

/*
 * Return a new state with delta applied to one shard (sc is not modified):
 * delta > 0 adds to inc, delta < 0 adds -delta to dec, delta = 0 changes
 * nothing (no entry is created).  An absent shard is inserted in order.
 * 22023 for a negative shard, 22003 if a total would exceed int8 (always the
 * case for delta = INT64_MIN, whose magnitude is 2^63), 54000 if full.
 */
ShardedCounter *
sharded_counter_add(ShardedCounter *sc, int32 shard, int64 delta)
{
	ShardedCounter *result;
	int			lo = 0;
	int			hi = sc->nshards;
	bool		found;
	ShardedCounterEntry *e;

	if (shard < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid shard number %d", shard),
				 errdetail("Shard numbers must not be negative.")));

	/* binary search for the first entry with entry.shard >= shard */
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (sc->entries[mid].shard < shard)
			lo = mid + 1;
		else
			hi = mid;
	}
	found = (lo < sc->nshards && sc->entries[lo].shard == shard);

	if (delta == 0)
	{
		result = (ShardedCounter *) palloc(VARSIZE(sc));
		memcpy(result, sc, VARSIZE(sc));
		return result;
	}

	if (found)
	{
		result = (ShardedCounter *) palloc(VARSIZE(sc));
		memcpy(result, sc, VARSIZE(sc));
	}
	else
	{
		if (sc->nshards >= SC_MAX_SHARDS)
			sc_too_many_shards();
		result = sc_alloc(sc->nshards + 1);
		memcpy(result->entries, sc->entries, lo * sizeof(ShardedCounterEntry));
		memcpy(result->entries + lo + 1, sc->entries + lo,
			   (sc->nshards - lo) * sizeof(ShardedCounterEntry));
		result->entries[lo].shard = shard;
	}
	e = &result->entries[lo];

	if (delta > 0)
	{
		if (pg_add_s64_overflow(e->inc, delta, &e->inc))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("incremented total of shard %d out of range for type bigint",
							shard)));
	}
	else
	{
		if (delta == PG_INT64_MIN ||
			pg_add_s64_overflow(e->dec, -delta, &e->dec))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("decremented total of shard %d out of range for type bigint",
							shard)));
	}
	return result;
}

/* SQL counter.increment(sc, shard, delta). */
Datum
sharded_counter_increment(PG_FUNCTION_ARGS)
{
	SCLocal		local;
	ShardedCounter *sc = sc_read(PG_GETARG_DATUM(0), &local, false);
	int32		shard = PG_GETARG_INT32(1);
	int64		delta = PG_GETARG_INT64(2);

	PG_RETURN_SHARDED_COUNTER_P(sharded_counter_add(sc, shard, delta));
}

/* SQL counter.shards(sc): one row (shard, incremented, decremented) per entry. */
Datum
sharded_counter_shards(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	ShardedCounter *sc;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcontext;
		TupleDesc	tupdesc;

		funcctx = SRF_FIRSTCALL_INIT();
		oldcontext = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("function returning record called in context "
							"that cannot accept type record")));
		funcctx->tuple_desc = BlessTupleDesc(tupdesc);
		sc = DatumGetShardedCounterPCopy(PG_GETARG_DATUM(0));
		funcctx->user_fctx = sc;
		funcctx->max_calls = sc->nshards;
		MemoryContextSwitchTo(oldcontext);
	}

	funcctx = SRF_PERCALL_SETUP();
	sc = (ShardedCounter *) funcctx->user_fctx;

	if (funcctx->call_cntr < funcctx->max_calls)
	{
		const ShardedCounterEntry *e = &sc->entries[funcctx->call_cntr];
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		HeapTuple	tuple;

		values[0] = Int32GetDatum(e->shard);
		values[1] = Int64GetDatum(e->inc);
		values[2] = Int64GetDatum(e->dec);
		tuple = heap_form_tuple(funcctx->tuple_desc, values, nulls);
		SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum(tuple));
	}
	SRF_RETURN_DONE(funcctx);
}

/* Compare two states by exact value; never fails, for btree use. */
static int
sc_cmp(FunctionCallInfo fcinfo)
{
	SCLocal		local_a;
	SCLocal		local_b;
	ShardedCounter *a = sc_read(PG_GETARG_DATUM(0), &local_a, false);
	ShardedCounter *b = sc_read(PG_GETARG_DATUM(1), &local_b, false);
	int			result;

	result = int128_compare(sc_value128(a), sc_value128(b));
	sc_release(a, PG_GETARG_DATUM(0), &local_a);
	sc_release(b, PG_GETARG_DATUM(1), &local_b);
	return result;
}

/* Operator <: value(a) < value(b). */
Datum
sharded_counter_lt(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(sc_cmp(fcinfo) < 0);
}

/* Operator <=: value(a) <= value(b). */
Datum
sharded_counter_le(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(sc_cmp(fcinfo) <= 0);
}

/* Operator =: equal values, even if the per-shard states differ. */
Datum
sharded_counter_eq(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(sc_cmp(fcinfo) == 0);
}

/* Operator <>: different values. */
Datum
sharded_counter_ne(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(sc_cmp(fcinfo) != 0);
}

/* Operator >=: value(a) >= value(b). */
Datum
sharded_counter_ge(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(sc_cmp(fcinfo) >= 0);
}

/* Operator >: value(a) > value(b). */
Datum
sharded_counter_gt(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(sc_cmp(fcinfo) > 0);
}

/* Btree support function 1: -1, 0 or 1 by value. */
Datum
sharded_counter_cmp(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(sc_cmp(fcinfo));
}
