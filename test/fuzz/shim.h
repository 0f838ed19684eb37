/*-------------------------------------------------------------------------
 *
 * shim.h
 *	  What the fuzz harness sees of shim.c: the last error and the arena.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_FUZZ_SHIM_H
#define COUNTER_FUZZ_SHIM_H

/* The SQLSTATE and message of the last ereport(ERROR). */
typedef struct ShimError
{
	int			sqlerrcode;
	char		message[1024];
} ShimError;

extern ShimError shim_error;

extern void ShimFreeAll(void);
extern void ShimFatal(const char *what) pg_attribute_noreturn();

#endif							/* COUNTER_FUZZ_SHIM_H */
