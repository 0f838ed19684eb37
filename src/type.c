/*-------------------------------------------------------------------------
 *
 * type.c
 *	  The base type counter.sharded_counter: the state of a PN-counter.
 *
 * See type.h for the on-disk layout.  Text form: "{}" or
 * "{1:+15-3,7:+4}" (shard:+incremented-decremented, shards ascending).
 *
 * Exposed to the rest of the extension (declared in type.h):
 *
 *	ShardedCounter *sharded_counter_from_datum(Datum d, bool copy);
 *		detoast and validate a stored value (DatumGetShardedCounterP)
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
 *		inconsistent layout
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

/* Allocate a zero-filled value with room for n entries, header filled in. */
static ShardedCounter *
sc_alloc(int n)
{
	ShardedCounter *sc;

	Assert(n >= 0 && n <= SC_MAX_SHARDS);
	sc = (ShardedCounter *) palloc0(SC_SIZE(n));
	SET_VARSIZE(sc, SC_SIZE(n));
	sc->version = SC_FORMAT_VERSION;
	sc->nshards = n;
	return sc;
}

/* Return a new empty state "{}"; the identity element of the join. */
ShardedCounter *
sharded_counter_empty(void)
{
	return sc_alloc(0);
}

/* Check every invariant of a stored value; it may come from a corrupt page. */
static void
sc_check(const ShardedCounter *sc)
{
	Size		size = VARSIZE(sc);
	int			i;

	if (size < SC_HEADER_SIZE)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupted sharded_counter value"),
				 errdetail("Value is %zu bytes long, shorter than its header.",
						   size)));
	if (sc->version != SC_FORMAT_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("unsupported sharded_counter format version %d",
						(int) sc->version),
				 errdetail("Only version %d is supported.", SC_FORMAT_VERSION)));
	if (sc->nshards < 0 || sc->nshards > SC_MAX_SHARDS ||
		size != SC_SIZE(sc->nshards))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupted sharded_counter value"),
				 errdetail("Shard count does not match the value's length.")));
	for (i = 0; i < sc->nshards; i++)
	{
		const ShardedCounterEntry *e = &sc->entries[i];

		if (e->shard < 0 || e->inc < 0 || e->dec < 0 ||
			(i > 0 && e->shard <= sc->entries[i - 1].shard))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("corrupted sharded_counter value"),
					 errdetail("Entry %d is negative or out of order.", i + 1)));
	}
}

/* Detoast (optionally copying) and validate a sharded_counter datum. */
ShardedCounter *
sharded_counter_from_datum(Datum d, bool copy)
{
	ShardedCounter *sc;

	if (copy)
		sc = (ShardedCounter *) PG_DETOAST_DATUM_COPY(d);
	else
		sc = (ShardedCounter *) PG_DETOAST_DATUM(d);
	sc_check(sc);
	return sc;
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
	ShardedCounter *result;

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

	result = sc_alloc(n);
	if (n > 0)
		memcpy(result->entries, entries, n * sizeof(ShardedCounterEntry));
	pfree(entries);
	PG_RETURN_SHARDED_COUNTER_P(result);
}

/* Text output: canonical form, "-dec" only when dec > 0, "+inc" unless only dec. */
Datum
sharded_counter_out(PG_FUNCTION_ARGS)
{
	ShardedCounter *sc = PG_GETARG_SHARDED_COUNTER_P(0);
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
	ShardedCounter *sc = PG_GETARG_SHARDED_COUNTER_P(0);
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
	ShardedCounter *sc = PG_GETARG_SHARDED_COUNTER_P(0);

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
	ShardedCounter *sc = PG_GETARG_SHARDED_COUNTER_P(0);
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
	ShardedCounter *a = PG_GETARG_SHARDED_COUNTER_P(0);
	ShardedCounter *b = PG_GETARG_SHARDED_COUNTER_P(1);

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
	ShardedCounter *sc = PG_GETARG_SHARDED_COUNTER_P(0);
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
	ShardedCounter *a = PG_GETARG_SHARDED_COUNTER_P(0);
	ShardedCounter *b = PG_GETARG_SHARDED_COUNTER_P(1);
	int			result;

	result = int128_compare(sc_value128(a), sc_value128(b));
	PG_FREE_IF_COPY(a, 0);
	PG_FREE_IF_COPY(b, 1);
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
