/*-------------------------------------------------------------------------
 *
 * shim.c
 *	  The few backend symbols src/type.c needs, so that type.c itself can be
 *	  compiled into a standalone libFuzzer binary (see fuzz_sc.c, run.sh).
 *
 * The list is what "nm -u" reports for type.o.  Memory: palloc and friends
 * allocate with malloc and chain every chunk on one list, so that the
 * harness frees everything an input left behind (also after an error,
 * which unwinds past the pfree calls) with ShimFreeAll(); LeakSanitizer
 * then reports only real leaks of the shim itself.  Errors: ereport(ERROR)
 * records its SQLSTATE and message and siglongjmps to PG_exception_stack,
 * exactly as the backend does, so the harness catches it with PG_TRY and
 * an error is a clean rejection.  An ereport below ERROR is ignored.
 * Functions type.c uses only for SRFs and numeric (shards(), the numeric
 * cast) are not reachable from the fuzzed functions: they abort.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include "access/htup_details.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "parser/scansup.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "shim.h"

/* port.h maps these to libpgport's pg_ versions; the shim uses libc's. */
#undef snprintf
#undef vsnprintf
#undef fprintf

/* Backend globals the PG_TRY machinery and palloc.h refer to. */
sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;
MemoryContext CurrentMemoryContext = NULL;

/* The last error raised: what the harness inspects after PG_CATCH. */
ShimError	shim_error;

/* State of the ereport being built (between errstart and errfinish). */
static int	shim_elevel;

/* Every live palloc chunk, doubly linked through this header. */
typedef struct ShimChunk
{
	struct ShimChunk *prev;
	struct ShimChunk *next;
	Size		size;
	Size		pad;			/* keeps the payload 16-byte aligned */
} ShimChunk;

static ShimChunk shim_chunks = {&shim_chunks, &shim_chunks, 0, 0};

/* Report a broken harness assumption and crash (a finding, not a rejection). */
void
ShimFatal(const char *what)
{
	fprintf(stderr, "fuzz shim: %s\n", what);
	abort();
}

/* Raise an ERROR with a SQLSTATE and message, as ereport(ERROR) would. */
static void
shim_raise(int sqlerrcode, const char *msg)
{
	shim_elevel = ERROR;
	shim_error.sqlerrcode = sqlerrcode;
	snprintf(shim_error.message, sizeof(shim_error.message), "%s", msg);
	errfinish(__FILE__, __LINE__, __func__);
	pg_unreachable();
}

/* Allocate a chunk of size bytes on the list; ERROR above MaxAllocSize. */
static void *
shim_alloc(Size size, bool zero)
{
	ShimChunk  *c;

	if (!AllocSizeIsValid(size))
		shim_raise(ERRCODE_INTERNAL_ERROR, "invalid memory alloc request size");
	c = zero ? calloc(1, sizeof(ShimChunk) + size) : malloc(sizeof(ShimChunk) + size);
	if (c == NULL)
		ShimFatal("out of memory");
	c->size = size;
	c->next = shim_chunks.next;
	c->prev = &shim_chunks;
	shim_chunks.next->prev = c;
	shim_chunks.next = c;
	return c + 1;
}

/* Take a chunk off the list and return its header. */
static ShimChunk *
shim_unlink(void *pointer)
{
	ShimChunk  *c = ((ShimChunk *) pointer) - 1;

	c->prev->next = c->next;
	c->next->prev = c->prev;
	return c;
}

/* palloc on malloc. */
void *
palloc(Size size)
{
	return shim_alloc(size, false);
}

/* palloc0 on calloc. */
void *
palloc0(Size size)
{
	return shim_alloc(size, true);
}

/* repalloc: a new chunk with the old contents (so ASan sees stale uses). */
void *
repalloc(void *pointer, Size size)
{
	ShimChunk  *old = ((ShimChunk *) pointer) - 1;
	void	   *result = shim_alloc(size, false);

	memcpy(result, pointer, Min(old->size, size));
	pfree(pointer);
	return result;
}

/* pfree: unlink and free. */
void
pfree(void *pointer)
{
	free(shim_unlink(pointer));
}

/* Free every chunk still allocated; called by the harness after each input. */
void
ShimFreeAll(void)
{
	while (shim_chunks.next != &shim_chunks)
		free(shim_unlink(shim_chunks.next + 1));
}

/* pnstrdup: copy at most len bytes of a string, NUL-terminated. */
char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = palloc(len + 1);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

/* errstart: only ERROR and above are acted on. */
bool
errstart(int elevel, const char *domain)
{
	if (elevel < ERROR)
		return false;
	shim_elevel = elevel;
	shim_error.sqlerrcode = ERRCODE_INTERNAL_ERROR;	/* as elog() without errcode */
	shim_error.message[0] = '\0';
	return true;
}

/* errstart_cold: the variant ereport uses for a constant elevel >= ERROR. */
bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

/* errfinish: jump to the innermost PG_TRY, as the backend does. */
void
errfinish(const char *filename, int lineno, const char *funcname)
{
	if (shim_elevel > ERROR)
		ShimFatal("FATAL or PANIC raised");
	if (PG_exception_stack == NULL)
		ShimFatal("ERROR raised outside PG_TRY");
	siglongjmp(*PG_exception_stack, 1);
}

/* errcode: remember the SQLSTATE. */
int
errcode(int sqlerrcode)
{
	shim_error.sqlerrcode = sqlerrcode;
	return 0;
}

/* errmsg: format the message (so that bad format arguments are exercised). */
int
errmsg(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vsnprintf(shim_error.message, sizeof(shim_error.message), fmt, args);
	va_end(args);
	return 0;
}

/* errdetail and errhint: formatted and dropped, for the same reason. */
static void
shim_format_aux(const char *fmt, va_list args)
{
	char		buf[1024];

	vsnprintf(buf, sizeof(buf), fmt, args);
}

/* errdetail: see shim_format_aux. */
int
errdetail(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	shim_format_aux(fmt, args);
	va_end(args);
	return 0;
}

/* errhint: see shim_format_aux. */
int
errhint(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	shim_format_aux(fmt, args);
	va_end(args);
	return 0;
}

/* scanner_isspace: the lexer's whitespace, as in PostgreSQL 15's scansup.c. */
bool
scanner_isspace(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f';
}

/* initStringInfo: an empty string with 1 kB of room. */
void
initStringInfo(StringInfo str)
{
	str->maxlen = 1024;
	str->data = palloc(str->maxlen);
	str->len = 0;
	str->data[0] = '\0';
	str->cursor = 0;
}

/* enlargeStringInfo: room for needed more bytes plus the NUL. */
void
enlargeStringInfo(StringInfo str, int needed)
{
	int			newlen;

	if (needed < 0 || ((Size) needed) >= (MaxAllocSize - (Size) str->len))
		shim_raise(ERRCODE_PROGRAM_LIMIT_EXCEEDED, "out of memory (string buffer)");
	needed += str->len + 1;
	if (needed <= str->maxlen)
		return;
	newlen = 2 * str->maxlen;
	while (needed > newlen)
		newlen = 2 * newlen;
	if (newlen > (int) MaxAllocSize)
		newlen = (int) MaxAllocSize;
	str->data = repalloc(str->data, newlen);
	str->maxlen = newlen;
}

/* appendStringInfo: printf into the string, growing it as needed. */
void
appendStringInfo(StringInfo str, const char *fmt,...)
{
	for (;;)
	{
		va_list		args;
		int			avail = str->maxlen - str->len;
		int			n;

		va_start(args, fmt);
		n = vsnprintf(str->data + str->len, avail, fmt, args);
		va_end(args);
		if (n < 0)
			ShimFatal("vsnprintf failed");
		if (n < avail)
		{
			str->len += n;
			return;
		}
		enlargeStringInfo(str, n);
	}
}

/* appendStringInfoChar: one character. */
void
appendStringInfoChar(StringInfo str, char ch)
{
	if (str->len + 1 >= str->maxlen)
		enlargeStringInfo(str, 1);
	str->data[str->len++] = ch;
	str->data[str->len] = '\0';
}

/* pq_begintypsend: a StringInfo with room reserved for the varlena header. */
void
pq_begintypsend(StringInfo buf)
{
	initStringInfo(buf);
	appendStringInfoChar(buf, '\0');
	appendStringInfoChar(buf, '\0');
	appendStringInfoChar(buf, '\0');
	appendStringInfoChar(buf, '\0');
}

/* pq_endtypsend: the buffer as a bytea. */
bytea *
pq_endtypsend(StringInfo buf)
{
	bytea	   *result = (bytea *) buf->data;

	SET_VARSIZE(result, buf->len);
	return result;
}

/* pq_getmsgint: a big-endian integer of b bytes; 08P01 past the end. */
unsigned int
pq_getmsgint(StringInfo msg, int b)
{
	unsigned char *p;
	unsigned int result = 0;
	int			i;

	if (b != 1 && b != 2 && b != 4)
		shim_raise(ERRCODE_INTERNAL_ERROR, "unsupported integer size");
	if (msg->cursor < 0 || b > msg->len - msg->cursor)
		shim_raise(ERRCODE_PROTOCOL_VIOLATION, "insufficient data left in message");
	p = (unsigned char *) msg->data + msg->cursor;
	for (i = 0; i < b; i++)
		result = (result << 8) | p[i];
	msg->cursor += b;
	return result;
}

/* pq_getmsgint64: a big-endian int64; 08P01 past the end. */
int64
pq_getmsgint64(StringInfo msg)
{
	uint64		hi = pq_getmsgint(msg, 4);
	uint64		lo = pq_getmsgint(msg, 4);

	return (int64) ((hi << 32) | lo);
}

/*
 * pg_detoast_datum: the harness makes plain values only, with a 4-byte
 * header (returned as is) or a 1-byte one (copied out to a new 4-byte-header
 * value, as the backend does); external and compressed ones are a bug.
 */
struct varlena *
pg_detoast_datum(struct varlena *datum)
{
	struct varlena *result;
	Size		len;

	if (VARATT_IS_4B_U(datum))
		return datum;
	if (!VARATT_IS_SHORT(datum))
		ShimFatal("pg_detoast_datum: neither a plain 4-byte nor a 1-byte-header value");
	len = VARSIZE_SHORT(datum) - VARHDRSZ_SHORT;
	result = palloc(len + VARHDRSZ);
	SET_VARSIZE(result, len + VARHDRSZ);
	memcpy(VARDATA(result), VARDATA_SHORT(datum), len);
	return result;
}

/* pg_detoast_datum_copy: a palloc'd 4-byte-header copy. */
struct varlena *
pg_detoast_datum_copy(struct varlena *datum)
{
	struct varlena *plain = pg_detoast_datum(datum);
	struct varlena *result;

	if (plain != datum)
		return plain;
	result = palloc(VARSIZE(plain));
	memcpy(result, plain, VARSIZE(plain));
	return result;
}

/* pg_detoast_datum_packed: plain values (either header) are returned as is. */
struct varlena *
pg_detoast_datum_packed(struct varlena *datum)
{
	if (!VARATT_IS_4B_U(datum) && !VARATT_IS_SHORT(datum))
		ShimFatal("pg_detoast_datum_packed: not a plain value");
	return datum;
}

/*
 * Not reachable from the fuzzed functions (shards() and the numeric cast
 * are not fuzzed): abort if ever called.
 */
TupleDesc
BlessTupleDesc(TupleDesc tupdesc)
{
	ShimFatal("BlessTupleDesc is not in the shim");
	return NULL;
}

/* See BlessTupleDesc. */
Datum
HeapTupleHeaderGetDatum(HeapTupleHeader tuple)
{
	ShimFatal("HeapTupleHeaderGetDatum is not in the shim");
	return (Datum) 0;
}

/* See BlessTupleDesc. */
HeapTuple
heap_form_tuple(TupleDesc tupleDescriptor, Datum *values, bool *isnull)
{
	ShimFatal("heap_form_tuple is not in the shim");
	return NULL;
}

/* See BlessTupleDesc. */
TypeFuncClass
get_call_result_type(FunctionCallInfo fcinfo, Oid *resultTypeId,
					 TupleDesc *resultTupleDesc)
{
	ShimFatal("get_call_result_type is not in the shim");
	return TYPEFUNC_OTHER;
}

/* See BlessTupleDesc. */
FuncCallContext *
init_MultiFuncCall(PG_FUNCTION_ARGS)
{
	ShimFatal("init_MultiFuncCall is not in the shim");
	return NULL;
}

/* See BlessTupleDesc. */
FuncCallContext *
per_MultiFuncCall(PG_FUNCTION_ARGS)
{
	ShimFatal("per_MultiFuncCall is not in the shim");
	return NULL;
}

/* See BlessTupleDesc. */
void
end_MultiFuncCall(PG_FUNCTION_ARGS, FuncCallContext *funcctx)
{
	ShimFatal("end_MultiFuncCall is not in the shim");
}

/* See BlessTupleDesc. */
Numeric
int64_to_numeric(int64 val)
{
	ShimFatal("int64_to_numeric is not in the shim");
	return NULL;
}

/* See BlessTupleDesc. */
Numeric
numeric_add_opt_error(Numeric num1, Numeric num2, bool *have_error)
{
	ShimFatal("numeric_add_opt_error is not in the shim");
	return NULL;
}
