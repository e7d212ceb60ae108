/* result.c - the name of each result code */
#include "config.h"

#include "result.h"

static const char *const names[DX_RESULT_COUNT] = {
	[DX_OK] = "no error",
	[DX_NOMEM] = "out of memory",
	[DX_DB] = "database error",
	[DX_SCHEMA] = "not a dexsync mirror of this version",
	[DX_TRANSIENT] = "request failed, may succeed later",
	[DX_PERMANENT] = "request refused by the server",
	[DX_GONE] = "no such resource on the server",
	[DX_BAD_ANSWER] = "unexpected answer from the server",
	[DX_LOOPING] = "the server is looping",
	[DX_STOPPED] = "stopped",
	[DX_SYSTEM] = "system error",
};

const char *dx_strerror(enum dx_result r)
{
	if ((unsigned)r >= DX_RESULT_COUNT || !names[r])
		return "unknown result code";
	return names[r];
}
