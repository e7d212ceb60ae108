/* report.h - dexsync report: the reporting views in four formats */
#ifndef DEXSYNC_REPORT_H
#define DEXSYNC_REPORT_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>

enum report_format { REPORT_TABLE, REPORT_CSV, REPORT_JSON, REPORT_HTML };

struct report_query {
	const char *since;     /* YYYY-MM-DD or NULL */
	const char *until;     /* inclusive */
	const char *attribute; /* user-attribute: only this attribute */
};

struct report_def;

/* The report called name, or NULL. */
const struct report_def *report_find(const char *name);
/* One line per report: its name and what it shows. */
void report_list(FILE *out);
/* "table", "csv", "json", "html" to a format; -1 if unknown. */
int report_format_from_name(const char *name);

/* Print report r (or, with r NULL and REPORT_HTML, every report on one
 * page).  Returns 0, or -1 after logging a one-line error.  Like every
 * function here that measures text, it takes the program's LC_CTYPE as
 * UTF-8: the program sets it (dexsync's main sets C.UTF-8), a library
 * function does not change the process's locale under its caller. */
int report_run(sqlite3 *db, const struct report_def *r, enum report_format fmt, const struct report_query *q,
	       FILE *out);

/* Print the rows of sql, its ?1 bound to the param_len bytes at param,
 * as a table, CSV or JSON like a report; name prefixes an error.  Returns
 * 0, or -1 after logging a one-line error. */
int report_print_sql(sqlite3 *db, const char *name, const char *sql, const char *param, size_t param_len,
		     enum report_format fmt, FILE *out);

/* Display width of UTF-8 text in a terminal (wide characters count 2). */
size_t report_text_width(const char *s);

/* One CSV field (RFC 4180): the n bytes of s exactly, quoted when they
 * hold a comma, quote, CR or LF, a quote doubled.  Search writes its CSV
 * with it too. */
void report_csv_field(FILE *out, const char *s, size_t n);

/* The end of a JSON answer: arr (which it frees) written to out, indented,
 * keys in order, as ASCII, when rc is 0 (arr was built whole); else
 * "WHO: cannot write JSON (out of memory)" is logged, but not for a write
 * error (ferror(out)), which the program says at its end.  Returns 0 or
 * -1. */
int report_json_write(FILE *out, json_t *arr, int rc, const char *who);

#endif
