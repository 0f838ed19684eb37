/*-------------------------------------------------------------------------
 *
 * fuzz_sc.c
 *	  libFuzzer harness for the input functions of counter.sharded_counter.
 *
 * Built twice by run.sh against src/type.c itself and shim.c:
 *	fuzz_text	(default)		 the input is a C string for sharded_counter_in
 *	fuzz_binary (-DSC_FUZZ_BINARY) the input is a message for sharded_counter_recv
 *
 * An input is either rejected with ereport(ERROR) and one of the SQLSTATEs
 * the type documents for that function, or accepted; then every check below
 * must hold.  Anything else calls abort(), which libFuzzer reports as a
 * crash (as are ASan and UBSan findings, built with no recovery):
 *	- text rejected with a SQLSTATE other than 22P02, 22003, 54000;
 *	  binary rejected with one other than 22P03, 54000 (08P01 would mean
 *	  recv read past the message instead of validating it first)
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
#ifdef SC_FUZZ_BINARY
	return sqlerrcode == ERRCODE_INVALID_BINARY_REPRESENTATION ||
		sqlerrcode == ERRCODE_PROGRAM_LIMIT_EXCEEDED;
#else
	return sqlerrcode == ERRCODE_INVALID_TEXT_REPRESENTATION ||
		sqlerrcode == ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE ||
		sqlerrcode == ERRCODE_PROGRAM_LIMIT_EXCEEDED;
#endif
}

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

#ifdef SC_FUZZ_BINARY
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
