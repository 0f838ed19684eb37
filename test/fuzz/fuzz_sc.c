/*-------------------------------------------------------------------------
 *
 * fuzz_sc.c
 *	  libFuzzer harness for the input functions of counter.sharded_counter
 *	  and for the decoder of its stored values.
 *
 * Built three times by run.sh against src/type.c itself and shim.c:
 *	fuzz_text	(default)		 the input is a C string for sharded_counter_in
 *	fuzz_binary (-DSC_FUZZ_BINARY) the input is a message for sharded_counter_recv
 *	fuzz_stored (-DSC_FUZZ_STORED) the input is a stored value after its
 *								   varlena header (version 1 or 2, or garbage)
 *								   for sharded_counter_from_datum
 *
 * An input is either rejected with ereport(ERROR) and one of the SQLSTATEs
 * the type documents for that function, or accepted; then every check below
 * must hold.  Anything else calls abort(), which libFuzzer reports as a
 * crash (as are ASan and UBSan findings, built with no recovery):
 *	- text rejected with a SQLSTATE other than 22P02, 22003, 54000;
 *	  binary rejected with one other than 22P03, 54000 (08P01 would mean
 *	  recv read past the message instead of validating it first); a stored
 *	  value rejected with one other than XX001
 *	- a stored value read differently with a 1-byte and a 4-byte varlena
 *	  header, or with and without copy; its expanded form breaking an
 *	  invariant (shards ascending, totals >= 0); a version 2 value whose
 *	  re-encoding differs from it (the encoding of a state is unique); a
 *	  version 1 value whose re-encoding reads back to other entries
 *	- recv accepted a message without consuming all of it, or send() of
 *	  the result differs from the message (the wire form is unique)
 *	- out() of an accepted value does not parse back to identical bytes,
 *	  or is not a fixed point (out(in(out(v))) = out(v))
 *	- recv(send(v)) differs from v, or did not consume the message
 *	- any error raised while checking an accepted value (out, send, recv,
 *	  and the format check of a stored value, XX001)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include "fmgr.h"
#include "lib/stringinfo.h"

#include "shim.h"
#include "type.h"

#undef fprintf

extern Datum sharded_counter_in(PG_FUNCTION_ARGS);
extern Datum sharded_counter_out(PG_FUNCTION_ARGS);
extern Datum sharded_counter_recv(PG_FUNCTION_ARGS);
extern Datum sharded_counter_send(PG_FUNCTION_ARGS);

extern int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Call a one-argument V1 function the way fmgr would. */
static Datum
sc_call(PGFunction fn, Datum arg)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = arg;
	fcinfo->args[0].isnull = false;
	result = fn(fcinfo);
	if (fcinfo->isnull)
		ShimFatal("function returned NULL");
	return result;
}

/* Report a violated check with the text involved, then crash. */
static void
sc_violation(const char *what, const char *text)
{
	fprintf(stderr, "fuzz_sc: %s: \"%s\"\n", what, text ? text : "");
	abort();
}

/* Are two varlena values byte-identical? */
static bool
sc_same_bytes(const struct varlena *a, const struct varlena *b)
{
	return VARSIZE(a) == VARSIZE(b) && memcmp(a, b, VARSIZE(a)) == 0;
}

/* recv of the payload of a bytea (as COPY BINARY hands it over), checking it is all consumed. */
static struct varlena *
sc_recv_bytes(const char *bytes, int len)
{
	StringInfoData buf;
	struct varlena *v;

	/* PostgreSQL NUL-terminates the buffer it hands to a recv function */
	buf.data = palloc(len + 1);
	memcpy(buf.data, bytes, len);
	buf.data[len] = '\0';
	buf.len = len;
	buf.maxlen = len + 1;
	buf.cursor = 0;
	v = (struct varlena *) DatumGetPointer(sc_call(sharded_counter_recv,
												   PointerGetDatum(&buf)));
	if (buf.cursor != buf.len)
		sc_violation("recv accepted a message without consuming all of it", NULL);
	return v;
}

/* Every check on an accepted value v: text and binary round trips. */
static void
sc_check_value(struct varlena *v)
{
	char	   *text = DatumGetCString(sc_call(sharded_counter_out, PointerGetDatum(v)));
	struct varlena *back = (struct varlena *)
		DatumGetPointer(sc_call(sharded_counter_in, CStringGetDatum(text)));
	char	   *text2 = DatumGetCString(sc_call(sharded_counter_out, PointerGetDatum(back)));
	bytea	   *wire;
	struct varlena *v2;

	if (!sc_same_bytes(v, back))
		sc_violation("in(out(v)) differs from v", text);
	if (strcmp(text, text2) != 0)
		sc_violation("out(in(out(v))) differs from out(v)", text);

	wire = DatumGetByteaP(sc_call(sharded_counter_send, PointerGetDatum(v)));
	v2 = sc_recv_bytes(VARDATA(wire), VARSIZE(wire) - VARHDRSZ);
	if (!sc_same_bytes(v, v2))
		sc_violation("recv(send(v)) differs from v", text);
}

/* The five-character SQLSTATE of an error code (unpack_sql_state is in elog.c). */
static const char *
sc_sqlstate(int sqlerrcode)
{
	static char buf[6];
	int			i;

	for (i = 0; i < 5; i++)
	{
		buf[i] = PGUNSIXBIT(sqlerrcode);
		sqlerrcode >>= 6;
	}
	buf[5] = '\0';
	return buf;
}

/* Is sqlerrcode one this input function documents for bad input? */
static bool
sc_expected_rejection(int sqlerrcode)
{
#if defined(SC_FUZZ_BINARY)
	return sqlerrcode == ERRCODE_INVALID_BINARY_REPRESENTATION ||
		sqlerrcode == ERRCODE_PROGRAM_LIMIT_EXCEEDED;
#elif defined(SC_FUZZ_STORED)
	return sqlerrcode == ERRCODE_DATA_CORRUPTED;
#else
	return sqlerrcode == ERRCODE_INVALID_TEXT_REPRESENTATION ||
		sqlerrcode == ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE ||
		sqlerrcode == ERRCODE_PROGRAM_LIMIT_EXCEEDED;
#endif
}

#ifdef SC_FUZZ_STORED
/* The datum of a stored value: data after a 4-byte or a 1-byte varlena header. */
static Datum
sc_stored_datum(const uint8_t *data, size_t size, bool short_header)
{
	char	   *v;

	if (short_header)
	{
		if (size + VARHDRSZ_SHORT > VARATT_SHORT_MAX)
			ShimFatal("value too long for a 1-byte header");
		v = palloc(size + VARHDRSZ_SHORT);
		SET_VARSIZE_SHORT(v, size + VARHDRSZ_SHORT);
		memcpy(v + VARHDRSZ_SHORT, data, size);
	}
	else
	{
		v = palloc(size + VARHDRSZ);
		SET_VARSIZE(v, size + VARHDRSZ);
		memcpy(v + VARHDRSZ, data, size);
	}
	return PointerGetDatum(v);
}

/* Are two expanded states the same state (same entries)? */
static bool
sc_same_state(const ShardedCounter *a, const ShardedCounter *b)
{
	int			i;

	if (a->nshards != b->nshards)
		return false;
	for (i = 0; i < a->nshards; i++)
		if (a->entries[i].shard != b->entries[i].shard ||
			a->entries[i].inc != b->entries[i].inc ||
			a->entries[i].dec != b->entries[i].dec)
			return false;
	return true;
}

/*
 * Read a stored value every way (4-byte header with and without copy,
 * 1-byte header when it fits), check the readings agree and the invariants
 * hold, and return the 4-byte-header reading.  Errors propagate.
 */
static ShardedCounter *
sc_read_stored(const uint8_t *data, size_t size)
{
	ShardedCounter *sc = sharded_counter_from_datum(sc_stored_datum(data, size, false), false);
	ShardedCounter *copy = sharded_counter_from_datum(sc_stored_datum(data, size, false), true);
	int			i;

	if (!sc_same_state(sc, copy))
		sc_violation("reading with copy differs", NULL);
	if (size + VARHDRSZ_SHORT <= VARATT_SHORT_MAX)
	{
		ShardedCounter *shortsc = sharded_counter_from_datum(sc_stored_datum(data, size, true), false);

		if (!sc_same_state(sc, shortsc))
			sc_violation("reading with a 1-byte header differs", NULL);
	}
	if (sc->nshards < 0 || sc->nshards > SC_MAX_SHARDS)
		sc_violation("shard count out of range", NULL);
	for (i = 0; i < sc->nshards; i++)
		if (sc->entries[i].shard < 0 || sc->entries[i].inc < 0 || sc->entries[i].dec < 0 ||
			(i > 0 && sc->entries[i].shard <= sc->entries[i - 1].shard))
			sc_violation("expanded state breaks an invariant", NULL);
	return sc;
}
#endif

/* libFuzzer entry point: parse one input, then check what was accepted. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	volatile bool parsed = false;

	if (size > 1024 * 1024)
		return -1;				/* not added to the corpus */

	PG_TRY();
	{
		struct varlena *v;

#if defined(SC_FUZZ_STORED)
		ShardedCounter *sc = sc_read_stored(data, size);

		parsed = true;
		v = (struct varlena *) DatumGetPointer(sharded_counter_to_datum(sc));
		if (size >= 1 && data[0] == SC_VERSION_COMPACT)
		{
			/* the version 2 encoding of a state is unique */
			if (VARSIZE(v) - VARHDRSZ != size ||
				memcmp(VARDATA(v), data, size) != 0)
				sc_violation("encode(decode(x)) differs from x", NULL);
		}
		else if (!sc_same_state(sc, sharded_counter_from_datum(PointerGetDatum(v), false)))
			sc_violation("version 2 of a version 1 value reads back differently", NULL);
#elif defined(SC_FUZZ_BINARY)
		v = sc_recv_bytes((const char *) data, (int) size);
		parsed = true;
		{
			/* the wire form of a state is unique: send must give the input back */
			bytea	   *wire = DatumGetByteaP(sc_call(sharded_counter_send,
													  PointerGetDatum(v)));

			if (VARSIZE(wire) - VARHDRSZ != size ||
				memcmp(VARDATA(wire), data, size) != 0)
				sc_violation("send(recv(x)) differs from x", NULL);
		}
#else
		char	   *input = palloc(size + 1);

		memcpy(input, data, size);
		input[size] = '\0';
		v = (struct varlena *)
			DatumGetPointer(sc_call(sharded_counter_in, CStringGetDatum(input)));
		parsed = true;
#endif
		sc_check_value(v);
	}
	PG_CATCH();
	{
		if (parsed)
		{
			fprintf(stderr, "fuzz_sc: error %s while checking an accepted value: %s\n",
					sc_sqlstate(shim_error.sqlerrcode), shim_error.message);
			abort();
		}
		if (!sc_expected_rejection(shim_error.sqlerrcode))
		{
			fprintf(stderr, "fuzz_sc: input rejected with unexpected SQLSTATE %s: %s\n",
					sc_sqlstate(shim_error.sqlerrcode), shim_error.message);
			abort();
		}
	}
	PG_END_TRY();
	ShimFreeAll();
	return 0;
}
