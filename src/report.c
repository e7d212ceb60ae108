/* report.c - the reporting views, as a terminal table, CSV, JSON or HTML
 *
 * Each report is one of the public views of the schema; --since/--until
 * narrow the reports that have a time axis.  Results are small (one row per
 * day, status or bucket), so they are read whole before printing: a table
 * needs every width first anyway. */
#include "config.h"

#include <jansson.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wchar.h>

#include "escape.h"
#include "log.h"
#include "report.h"

struct report_def {
	const char *name;
	const char *title;
	const char *sql;            /* no bounds */
	const char *bounded;        /* with ?1 since and ?2 until, or NULL */
};

static const struct report_def reports[] = {
	{ "by-status", "Conversations by status",
	  "SELECT * FROM report_by_status",
	  "SELECT status, sum(conversations) AS conversations\n"
	  "FROM report_daily\n"
	  "WHERE day BETWEEN ?1 AND ?2\n"
	  "GROUP BY status\n"
	  "ORDER BY status" },
	{ "daily", "Conversations created per day (UTC)",
	  "SELECT * FROM report_daily",
	  "SELECT * FROM report_daily WHERE day BETWEEN ?1 AND ?2" },
	{ "backlog", "Open and snoozed conversations by age",
	  "SELECT * FROM report_backlog", NULL },
	{ "outbox", "Outbox items by kind and state",
	  "SELECT * FROM report_outbox", NULL },
	{ "sync-history", "Last walks",
	  "SELECT * FROM report_sync_history LIMIT 100",
	  "SELECT * FROM report_sync_history\n"
	  "WHERE substr(started_at, 1, 10) BETWEEN ?1 AND ?2" },
	{ "user-attribute", "Users by custom attribute",
	  "SELECT * FROM report_user_attribute WHERE ?3 IS NULL OR attribute = ?3", NULL },
};

#define N_REPORTS (sizeof(reports) / sizeof(reports[0]))

/* A result read whole: ncols names, then rows of cells.  A cell keeps
 * its bytes exactly (a NUL among them included) for CSV and JSON; a table
 * and HTML show them escaped. */
struct cell {
	int type;               /* SQLITE_INTEGER, ..., SQLITE_NULL */
	char *text;             /* NULL for SQL NULL; NUL-terminated */
	size_t len;             /* bytes in text */
	long long integer;      /* SQLITE_INTEGER */
	double real;            /* SQLITE_FLOAT */
};

struct result {
	int ncols, nrows;
	char **names;
	struct cell *cells;     /* nrows * ncols */
};

const struct report_def *report_find(const char *name)
{
	for (size_t i = 0; i < N_REPORTS; i++)
		if (!strcmp(reports[i].name, name))
			return &reports[i];
	return NULL;
}

void report_list(FILE *out)
{
	for (size_t i = 0; i < N_REPORTS; i++)
		fprintf(out, "%-16s %s%s\n", reports[i].name, reports[i].title,
			reports[i].bounded ? " (--since, --until)" : "");
}

int report_format_from_name(const char *name)
{
	static const char *const names[] = { "table", "csv", "json", "html" };

	for (int i = 0; i < 4; i++)
		if (!strcmp(name, names[i]))
			return i;
	return -1;
}

static void result_free(struct result *res)
{
	for (int i = 0; res->names && i < res->ncols; i++)
		free(res->names[i]);
	for (int i = 0; i < res->ncols * res->nrows; i++)
		free(res->cells[i].text);
	free(res->names);
	free(res->cells);
	memset(res, 0, sizeof(*res));
}

static int result_read(sqlite3 *db, const struct report_def *r, const struct report_query *q,
		       struct result *res)
{
	int bounded = q->since || q->until;
	sqlite3_stmt *st = NULL;
	size_t cap = 0;
	int rc;

	memset(res, 0, sizeof(*res));
	if (sqlite3_prepare_v2(db, bounded ? r->bounded : r->sql, -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_text(st, 1, q->since ? q->since : "0000-00-00", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, q->until ? q->until : "9999-99-99", -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(st) >= 3)
		sqlite3_bind_text(st, 3, q->attribute, -1, SQLITE_STATIC);
	res->ncols = sqlite3_column_count(st);
	res->names = res->ncols > 0 ? calloc((size_t)res->ncols, sizeof(char *)) : NULL;
	if (!res->names)
		goto fail;
	for (int i = 0; i < res->ncols; i++)
		if (!(res->names[i] = strdup(sqlite3_column_name(st, i))))
			goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((size_t)(res->nrows + 1) * (size_t)res->ncols > cap) {
			size_t want = cap ? cap * 2 : 64u * (size_t)res->ncols;
			struct cell *p = realloc(res->cells, want * sizeof(*p));

			if (!p)
				goto fail;
			memset(p + cap, 0, (want - cap) * sizeof(*p));
			res->cells = p;
			cap = want;
		}
		for (int i = 0; i < res->ncols; i++) {
			struct cell *c = &res->cells[res->nrows * res->ncols + i];
			const unsigned char *t;

			c->type = sqlite3_column_type(st, i);
			c->integer = sqlite3_column_int64(st, i);
			c->real = sqlite3_column_double(st, i);
			t = c->type == SQLITE_BLOB ? sqlite3_column_blob(st, i) : sqlite3_column_text(st, i);
			c->len = (size_t)sqlite3_column_bytes(st, i);
			if (c->type == SQLITE_NULL)
				continue;
			if (!(c->text = malloc(c->len + 1)))
				goto fail;
			if (c->len)
				memcpy(c->text, t, c->len);
			c->text[c->len] = '\0';
		}
		res->nrows++;
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	return 0;
fail:
	log_err("report %s: %s", r->name, sqlite3_errmsg(db));
	sqlite3_finalize(st);
	result_free(res);
	return -1;
}

size_t report_text_width(const char *s)
{
	size_t w = 0;
	mbstate_t ps;
	wchar_t wc;
	size_t n;

	memset(&ps, 0, sizeof(ps));
	while (*s) {
		n = mbrtowc(&wc, s, MB_CUR_MAX, &ps);
		if (n == (size_t)-1 || n == (size_t)-2) {   /* not UTF-8: a byte a column */
			memset(&ps, 0, sizeof(ps));
			s++;
			w++;
			continue;
		}
		int cw = wcwidth(wc);

		w += cw < 0 ? 1 : (size_t)cw;
		s += n;
	}
	return w;
}

static const char *shown(const struct cell *c)
{
	return c->text ? c->text : "";
}

/* The text of a cell (row >= 0) or column name (row -1) for a table:
 * escaped, malloc'd; NULL when out of memory. */
static char *table_text(const struct result *res, int row, int col)
{
	const struct cell *c = row < 0 ? NULL : &res->cells[row * res->ncols + col];

	if (!c)
		return escape_text(res->names[col], strlen(res->names[col]));
	return escape_text(shown(c), c->text ? c->len : 0);
}

/* One line of a terminal table: text left, numbers right; text is the
 * escaped text of each cell of the line. */
static void table_line(FILE *out, const struct result *res, const size_t *width, int row,
		       char *const *text)
{
	for (int i = 0; i < res->ncols; i++) {
		const struct cell *c = row < 0 ? NULL : &res->cells[row * res->ncols + i];
		const char *t = text[i];
		size_t pad = width[i] - report_text_width(t);
		int right = c && (c->type == SQLITE_INTEGER || c->type == SQLITE_FLOAT);

		if (i)
			fputs("  ", out);
		if (right)
			fprintf(out, "%*s", (int)pad, "");
		fputs(t, out);
		if (!right && i + 1 < res->ncols)
			fprintf(out, "%*s", (int)pad, "");
	}
	fputc('\n', out);
}

/* A terminal table: every name and cell escaped (a row anyone could
 * write must not drive the terminal), columns as wide as their widest. */
static int print_table(FILE *out, const struct result *res)
{
	size_t n = (size_t)(res->nrows + 1) * (size_t)res->ncols;
	size_t *width = calloc((size_t)res->ncols, sizeof(size_t));
	char **text = calloc(n ? n : 1, sizeof(char *));
	int rc = -1;

	if (!width || !text)
		goto out;
	for (int r = -1; r < res->nrows; r++)
		for (int i = 0; i < res->ncols; i++) {
			char **t = &text[(size_t)(r + 1) * (size_t)res->ncols + (size_t)i];
			size_t w;

			if (!(*t = table_text(res, r, i)))
				goto out;
			w = report_text_width(*t);
			width[i] = w > width[i] ? w : width[i];
		}
	table_line(out, res, width, -1, text);
	for (int i = 0; i < res->ncols; i++) {
		fprintf(out, "%s", i ? "  " : "");
		for (size_t k = 0; k < width[i]; k++)
			fputc('-', out);
	}
	fputc('\n', out);
	for (int r = 0; r < res->nrows; r++)
		table_line(out, res, width, r, text + (size_t)(r + 1) * (size_t)res->ncols);
	rc = 0;
out:
	for (size_t k = 0; text && k < n; k++)
		free(text[k]);
	free(text);
	free(width);
	if (rc < 0)
		log_err("out of memory");
	return rc;
}

/* RFC 4180: CRLF, quotes around a field with a comma, quote, CR or LF,
 * a quote doubled.  The n bytes of s are written exactly, whatever they
 * are: CSV is for programs. */
static void csv_field(FILE *out, const char *s, size_t n)
{
	int quote = 0;

	for (size_t k = 0; k < n && !quote; k++)
		quote = s[k] == ',' || s[k] == '"' || s[k] == '\r' || s[k] == '\n';
	if (!quote) {
		fwrite(s, 1, n, out);
		return;
	}
	fputc('"', out);
	for (size_t k = 0; k < n; k++) {
		if (s[k] == '"')
			fputc('"', out);
		fputc(s[k], out);
	}
	fputc('"', out);
}

static void print_csv(FILE *out, const struct result *res)
{
	for (int r = -1; r < res->nrows; r++) {
		for (int i = 0; i < res->ncols; i++) {
			const struct cell *c = r < 0 ? NULL : &res->cells[r * res->ncols + i];

			if (i)
				fputc(',', out);
			if (c)
				csv_field(out, shown(c), c->text ? c->len : 0);
			else
				csv_field(out, res->names[i], strlen(res->names[i]));
		}
		fputs("\r\n", out);
	}
}

/* The n bytes of s as a JSON string, NUL bytes and control characters
 * included (the encoder escapes them); bytes that are not UTF-8 (the
 * database holds whatever was written to it) become U+FFFD, which JSON
 * can carry, rather than an error.  NULL when out of memory. */
static json_t *text_json(const char *s, size_t n)
{
	json_t *j;
	char *fixed, *o;
	size_t k, len;

	for (k = 0; k < n && (len = escape_utf8_len(s + k, n - k)); k += len)
		;
	if (k == n)
		return json_stringn(s, n);
	if (n > (SIZE_MAX - 1) / 3 || !(fixed = malloc(n * 3 + 1)))
		return NULL;
	for (o = fixed, k = 0; k < n; k += len ? len : 1) {
		len = escape_utf8_len(s + k, n - k);
		if (len) {
			memcpy(o, s + k, len);
			o += len;
		} else {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
		}
	}
	j = json_stringn(fixed, (size_t)(o - fixed));
	free(fixed);
	return j;
}

/* A cell as JSON: numbers as numbers (a real that JSON cannot write, an
 * infinity, as null), text and blobs as strings. */
static json_t *cell_json(const struct cell *c)
{
	if (!c->text)
		return json_null();
	switch (c->type) {
	case SQLITE_INTEGER:
		return json_integer(c->integer);
	case SQLITE_FLOAT:
		return isfinite(c->real) ? json_real(c->real) : json_null();
	default:
		return text_json(c->text, c->len);
	}
}

/* An array of one object per row; a cell that cannot be built (out of
 * memory) fails the whole rather than leaving a key out. */
static int print_json(FILE *out, const struct result *res)
{
	json_t *arr = json_array();
	int rc = arr ? 0 : -1;

	for (int r = 0; rc == 0 && r < res->nrows; r++) {
		json_t *obj = json_object();

		if (!obj || json_array_append_new(arr, obj) < 0)
			rc = -1;
		for (int i = 0; rc == 0 && i < res->ncols; i++)
			if (json_object_set_new(obj, res->names[i], cell_json(&res->cells[r * res->ncols + i])) < 0)
				rc = -1;
	}
	if (rc == 0) {
		rc = json_dumpf(arr, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
		fputc('\n', out);
	}
	if (rc < 0)
		log_err("report: cannot write JSON (out of memory)");
	json_decref(arr);
	return rc;
}

/* Text for HTML: escaped as for a terminal (so a control character or a
 * broken byte shows as \xNN, not raw), then &, <, >, " and ' as entities. */
static void html_textn(FILE *out, const char *text, size_t n)
{
	char *safe = escape_text(text, n);

	for (const char *s = safe ? safe : "?"; *s; s++) {
		switch (*s) {
		case '&': fputs("&amp;", out); break;
		case '<': fputs("&lt;", out); break;
		case '>': fputs("&gt;", out); break;
		case '"': fputs("&quot;", out); break;
		case '\'': fputs("&#39;", out); break;
		default: fputc(*s, out);
		}
	}
	free(safe);
}

static void html_text(FILE *out, const char *s)
{
	html_textn(out, s, strlen(s));
}

static void html_table(FILE *out, const struct result *res)
{
	fputs("<table>\n<tr>", out);
	for (int i = 0; i < res->ncols; i++) {
		fputs("<th>", out);
		html_text(out, res->names[i]);
		fputs("</th>", out);
	}
	fputs("</tr>\n", out);
	for (int r = 0; r < res->nrows; r++) {
		fputs("<tr>", out);
		for (int i = 0; i < res->ncols; i++) {
			const struct cell *c = &res->cells[r * res->ncols + i];

			fputs(c->type == SQLITE_INTEGER || c->type == SQLITE_FLOAT ? "<td class=n>" : "<td>", out);
			html_textn(out, shown(c), c->text ? c->len : 0);
			fputs("</td>", out);
		}
		fputs("</tr>\n", out);
	}
	fputs("</table>\n", out);
}

/* An inline SVG bar chart: one bar per distinct label (column label, rows
 * in label order), its height the sum of columns first..last over them. */
static void html_bars(FILE *out, const struct result *res, int label, int first, int last)
{
	const int height = 160, bar_max = 24;
	int n = 0, bar;
	double *sum = calloc((size_t)res->nrows + 1, sizeof(double)), top = 0;
	const char **names = calloc((size_t)res->nrows + 1, sizeof(char *));

	if (!sum || !names)
		goto out;
	for (int r = 0; r < res->nrows; r++) {
		const char *l = shown(&res->cells[r * res->ncols + label]);
		double v = 0;

		for (int i = first; i <= last; i++)
			v += strtod(shown(&res->cells[r * res->ncols + i]), NULL);
		if (!n || strcmp(names[n - 1], l))
			names[n++] = l;
		sum[n - 1] += v;
	}
	for (int i = 0; i < n; i++)
		top = sum[i] > top ? sum[i] : top;
	bar = n ? 720 / n : bar_max;
	bar = bar > bar_max ? bar_max : bar < 2 ? 2 : bar;
	fprintf(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" role=\"img\">\n",
		n * bar + 40, height + 40);
	for (int i = 0; i < n; i++) {
		int h = top > 0 ? (int)(sum[i] / top * height) : 0;

		fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#4a7ab5\"><title>",
			20 + i * bar, 10 + height - h, bar - 1, h);
		html_text(out, names[i]);
		fprintf(out, ": %.0f</title></rect>\n", sum[i]);
	}
	if (n) {
		fprintf(out, "<text x=\"20\" y=\"%d\" font-size=\"11\">", height + 28);
		html_text(out, names[0]);
		fprintf(out, "</text>\n<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">",
			20 + n * bar, height + 28);
		html_text(out, names[n - 1]);
		fputs("</text>\n", out);
	}
	fputs("</svg>\n", out);
out:
	free(sum);
	free(names);
}

static int html_section(sqlite3 *db, const struct report_def *r, const struct report_query *q,
			FILE *out)
{
	struct report_query none = { NULL, NULL, q->attribute };
	struct result res;

	if (result_read(db, r, r->bounded ? q : &none, &res) < 0)
		return -1;
	fputs("<h2>", out);
	html_text(out, r->title);
	fputs("</h2>\n", out);
	if (!strcmp(r->name, "daily"))
		html_bars(out, &res, 0, 2, 2);           /* day, conversations */
	else if (!strcmp(r->name, "backlog"))
		html_bars(out, &res, 0, 1, 2);           /* age, open + snoozed */
	html_table(out, &res);
	result_free(&res);
	return 0;
}

static int print_html(sqlite3 *db, const struct report_def *only, const struct report_query *q,
		      FILE *out)
{
	char now[32];
	time_t t = time(NULL);
	struct tm tm;
	int rc = 0;

	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%d %H:%M UTC", &tm);
	fprintf(out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
		"<title>dexsync report</title>\n<style>\n"
		"body { font-family: sans-serif; margin: 2em; color: #222; }\n"
		"table { border-collapse: collapse; margin-bottom: 2em; }\n"
		"th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; }\n"
		"th { background: #eee; } td.n { text-align: right; }\n"
		"</style>\n</head>\n<body>\n<h1>dexsync report</h1>\n<p>Generated %s", now);
	if (q->since || q->until)
		fprintf(out, "; dated reports from %s to %s", q->since ? q->since : "the start",
			q->until ? q->until : "today");
	fputs(".</p>\n", out);
	for (size_t i = 0; i < N_REPORTS && rc == 0; i++)
		if (!only || only == &reports[i])
			rc = html_section(db, &reports[i], q, out);
	fputs("</body>\n</html>\n", out);
	return rc;
}

/* A date argument: YYYY-MM-DD that SQLite agrees is a date. */
static int valid_date(sqlite3 *db, const char *s)
{
	sqlite3_stmt *st;
	int ok = 0;

	if (strlen(s) != 10)
		return 0;
	if (sqlite3_prepare_v2(db, "SELECT date(?1, '+0 days') IS ?1", -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, s, -1, SQLITE_STATIC);
		ok = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
	}
	sqlite3_finalize(st);
	return ok;
}

int report_run(sqlite3 *db, const struct report_def *r, enum report_format fmt,
	       const struct report_query *q, FILE *out)
{
	struct result res;
	int rc = 0;

	setlocale(LC_CTYPE, "C.UTF-8");
	if ((q->since && !valid_date(db, q->since)) || (q->until && !valid_date(db, q->until))) {
		log_err("'%.40s' is not a date (YYYY-MM-DD)",
			q->since && !valid_date(db, q->since) ? q->since : q->until);
		return -1;
	}
	if (r && (q->since || q->until) && !r->bounded) {
		log_err("--since and --until do not apply to %s", r->name);
		return -1;
	}
	if (r && q->attribute && strcmp(r->name, "user-attribute")) {
		log_err("--attribute applies to user-attribute only");
		return -1;
	}
	if (fmt == REPORT_HTML)
		return print_html(db, r, q, out);
	if (!r) {
		log_err("which report? (dexsync report lists them)");
		return -1;
	}
	if (result_read(db, r, q, &res) < 0)
		return -1;
	if (fmt == REPORT_TABLE)
		rc = print_table(out, &res);
	else if (fmt == REPORT_CSV)
		print_csv(out, &res);
	else
		rc = print_json(out, &res);
	result_free(&res);
	return rc;
}
