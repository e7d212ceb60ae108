/* report.c - the reporting views, as a terminal table, CSV, JSON or HTML
 *
 * Each report is one of the public views of the schema; --since/--until
 * narrow the reports that have a time axis.  Results are small (one row per
 * day, status or bucket), so they are read whole before printing: a table
 * needs every width first anyway. */
#include "config.h"

#include <jansson.h>
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
	const char *sql;     /* no bounds */
	const char *bounded; /* with ?1 since and ?2 until, or NULL */
};

static const struct report_def reports[] = {
	{ "by-status", "Conversations by status", "SELECT * FROM report_by_status",
	  "SELECT status, sum(conversations) AS conversations\n"
	  "FROM report_daily\n"
	  "WHERE day BETWEEN ?1 AND ?2\n"
	  "GROUP BY status\n"
	  "ORDER BY status" },
	{ "daily", "Conversations created per day (UTC)", "SELECT * FROM report_daily",
	  "SELECT * FROM report_daily WHERE day BETWEEN ?1 AND ?2" },
	{ "backlog", "Open and snoozed conversations by age", "SELECT * FROM report_backlog", NULL },
	{ "outbox", "Outbox items by kind and state", "SELECT * FROM report_outbox", NULL },
	{ "sync-history", "Last walks", "SELECT * FROM report_sync_history LIMIT 100",
	  "SELECT * FROM report_sync_history\n"
	  "WHERE substr(started_at, 1, 10) BETWEEN ?1 AND ?2" },
	{ "user-attribute", "Users by custom attribute",
	  "SELECT * FROM report_user_attribute WHERE ?3 IS NULL OR attribute = ?3", NULL },
	/* From the history (conversation_events). */
	{ "backlog-daily", "Open and snoozed conversations at the end of each day (UTC)",
	  "SELECT * FROM report_backlog_daily",
	  "SELECT * FROM report_backlog_daily WHERE day BETWEEN ?1 AND ?2" },
	{ "time-to-close", "Hours from creation to the first close, per week of creation",
	  "SELECT * FROM report_time_to_close",
	  "SELECT * FROM report_time_to_close\n"
	  "WHERE week BETWEEN coalesce(date(?1, 'weekday 0', '-6 days'), ?1) AND ?2" },
	{ "reopened", "Conversations closed and opened again", "SELECT * FROM report_reopened",
	  "SELECT * FROM report_reopened WHERE substr(last_reopened_at, 1, 10) BETWEEN ?1 AND ?2" },
	{ "changes", "Changes seen per walk and field", "SELECT * FROM report_changes",
	  "SELECT * FROM report_changes\n"
	  "WHERE substr(coalesce(started_at, '9999'), 1, 10) BETWEEN ?1 AND ?2" },
};

#define N_REPORTS (sizeof(reports) / sizeof(reports[0]))

/* A result read whole: ncols names, then rows of cells.  A cell keeps
 * its bytes exactly (a NUL among them included) for CSV and JSON; a table
 * and HTML show them escaped. */
struct cell {
	int type;	   /* SQLITE_INTEGER, ..., SQLITE_NULL */
	char *text;	   /* NULL for SQL NULL; NUL-terminated */
	size_t len;	   /* bytes in text */
	long long integer; /* SQLITE_INTEGER */
	double real;	   /* SQLITE_FLOAT */
};

struct result {
	int ncols, nrows;
	char **names;
	struct cell *cells; /* nrows * ncols */
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

/* Read every row of the prepared statement st into *res (emptied first);
 * st is finalized.  0, or -1 after logging the error as name's. */
static int result_fill(sqlite3 *db, const char *name, sqlite3_stmt *st, struct result *res)
{
	size_t cap = 0;
	int rc;

	memset(res, 0, sizeof(*res));
	if (!st)
		goto fail;
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
	log_err("%s: %s", name, sqlite3_errmsg(db));
	sqlite3_finalize(st);
	result_free(res);
	return -1;
}

/* Run report r with the bounds and attribute of q into *res. */
static int result_read(sqlite3 *db, const struct report_def *r, const struct report_query *q,
		       struct result *res)
{
	int bounded = q->since || q->until;
	sqlite3_stmt *st = NULL;
	char name[64];

	snprintf(name, sizeof(name), "report %s", r->name);
	if (sqlite3_prepare_v2(db, bounded ? r->bounded : r->sql, -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, q->since ? q->since : "0000-00-00", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, q->until ? q->until : "9999-99-99", -1, SQLITE_STATIC);
		if (sqlite3_bind_parameter_count(st) >= 3)
			sqlite3_bind_text(st, 3, q->attribute, -1, SQLITE_STATIC);
	}
	return result_fill(db, name, st, res);
}

size_t report_text_width(const char *s)
{
	size_t w = 0;
	mbstate_t ps;
	wchar_t wc;
	size_t n;

	if (!s)
		return 0;
	memset(&ps, 0, sizeof(ps));
	while (*s) {
		n = mbrtowc(&wc, s, MB_CUR_MAX, &ps);
		if (n == (size_t)-1 || n == (size_t)-2) { /* not UTF-8: a byte a column */
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
static void table_line(FILE *out, const struct result *res, const size_t *width, int row, char *const *text)
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
void report_csv_field(FILE *out, const char *s, size_t n)
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
				report_csv_field(out, shown(c), c->text ? c->len : 0);
			else
				report_csv_field(out, res->names[i], strlen(res->names[i]));
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
			*o++ = '\xef'; /* U+FFFD, the replacement character */
			*o++ = '\xbf';
			*o++ = '\xbd';
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
			if (json_object_set_new(obj, res->names[i],
						cell_json(&res->cells[r * res->ncols + i])) < 0)
				rc = -1;
	}
	return report_json_write(out, arr, rc, "report");
}

int report_json_write(FILE *out, json_t *arr, int rc, const char *who)
{
	int written = rc == 0 &&
		      json_dumpf(arr, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) == 0 &&
		      fputc('\n', out) != EOF;

	if (!written && !ferror(out))
		log_err("%s: cannot write JSON (out of memory)", who);
	json_decref(arr);
	return written ? 0 : -1;
}

/* Text for HTML: escaped as for a terminal (so a control character or a
 * broken byte shows as \xNN, not raw), then &, <, >, " and ' as entities. */
static void html_textn(FILE *out, const char *text, size_t n)
{
	char *safe = escape_text(text, n);

	for (const char *s = safe ? safe : "?"; *s; s++) {
		switch (*s) {
		case '&':
			fputs("&amp;", out);
			break;
		case '<':
			fputs("&lt;", out);
			break;
		case '>':
			fputs("&gt;", out);
			break;
		case '"':
			fputs("&quot;", out);
			break;
		case '\'':
			fputs("&#39;", out);
			break;
		default:
			fputc(*s, out);
		}
	}
	free(safe);
}

static void html_text(FILE *out, const char *s)
{
	html_textn(out, s, strlen(s));
}

/* The HTML report is a dashboard: the numbers looked at first, then a
 * chart per report (labelled axes, a legend, a <title> on every bar and
 * point), then its table, folded when long and cut to its latest rows.
 * One file: inline CSS and SVG, no script, no external asset. */
#define CHART_W		720
#define CHART_H		250
#define PLOT_L		58 /* room for the y tick values */
#define PLOT_R		14
#define PLOT_T		14
#define PLOT_B		46 /* x tick values and the x axis title */
#define CHART_MAX_X	90 /* a chart shows the latest 90 days, weeks or walks */
#define TABLE_MAX_ROWS	30 /* a table shows its latest 30 rows */
#define TABLE_OPEN_ROWS 12 /* shorter tables are shown unfolded */
#define MAX_SERIES	8

enum chart_kind { CHART_BARS, CHART_LINES };

struct series {
	const char *name;
	const char *color;
	double *v; /* one value per x; NAN: none */
	int band;  /* the upper edge of a band from the series before */
};

struct chart {
	enum chart_kind kind;
	const char *xlabel, *ylabel;
	int n;		/* positions on the x axis */
	int total;	/* before the chart was cut to its latest CHART_MAX_X */
	const char **x; /* their labels (into a result) */
	int ns;
	struct series s[MAX_SERIES];
};

static const char *const status_colors[] = { "#2b6cb0", "#d69e2e", "#718096", "#9f7aea" };
static const char *const field_colors[] = { "#2b6cb0", "#38a169", "#d69e2e", "#9f7aea", "#e53e3e", "#319795" };

/* The smallest 1, 2 or 5 times a power of ten at or above v (1 for 0 or
 * less); without libm. */
static double nice_max(double v)
{
	double p = 1;

	if (!(v > 0))
		return 1;
	while (p * 10 < v)
		p *= 10;
	while (p > v && p > 1e-9)
		p /= 10;
	for (double m = 1;; m = m == 1 ? 2 : m == 2 ? 5 : 10)
		if (m * p >= v * (1 - 1e-9))
			return m * p;
}

/* A number for a label: whole numbers without decimals, others with one. */
static void html_num(FILE *out, double v)
{
	if (v > -1e15 && v < 1e15 && v == (double)(long long)v)
		fprintf(out, "%.0f", v);
	else
		fprintf(out, "%.1f", v);
}

/* A chart with n x positions and room for its series; NULL when out of
 * memory.  Series values start as NAN. */
static struct chart *chart_new(enum chart_kind kind, int n, const char *xlabel, const char *ylabel)
{
	struct chart *c = calloc(1, sizeof(*c));

	if (!c || !(c->x = calloc((size_t)n + 1, sizeof(char *)))) {
		free(c);
		return NULL;
	}
	c->kind = kind;
	c->n = n;
	c->total = n;
	c->xlabel = xlabel;
	c->ylabel = ylabel;
	return c;
}

/* Add a series; its values (all NAN) in the returned array, NULL when out
 * of memory or MAX_SERIES are there. */
static double *chart_series(struct chart *c, const char *name, const char *color, int band)
{
	struct series *s;

	if (c->ns == MAX_SERIES)
		return NULL;
	s = &c->s[c->ns];
	if (!(s->v = malloc(((size_t)c->n + 1) * sizeof(double))))
		return NULL;
	for (int i = 0; i < c->n; i++)
		s->v[i] = NAN;
	s->name = name;
	s->color = color;
	s->band = band;
	c->ns++;
	return s->v;
}

static void chart_free(struct chart *c)
{
	if (!c)
		return;
	for (int k = 0; k < c->ns; k++)
		free(c->s[k].v);
	free(c->x);
	free(c);
}

static double plot_x(const struct chart *c, int i)
{
	double slot = (double)(CHART_W - PLOT_L - PLOT_R) / (c->n ? c->n : 1);

	return PLOT_L + slot * (i + 0.5);
}

static double plot_y(double v, double top)
{
	double ph = CHART_H - PLOT_T - PLOT_B;

	return PLOT_T + ph - (v / top) * ph;
}

/* The axes: y grid lines with their values, x labels (about seven, the
 * last always), both titles. */
static void chart_axes(FILE *out, const struct chart *c, double top)
{
	int step = c->n > 7 ? (c->n + 6) / 7 : 1;

	for (int t = 0; t <= 4; t++) {
		double y = plot_y(top * t / 4, top);

		fprintf(out,
			"<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>"
			"<text x=\"%d\" y=\"%.1f\" class=\"yt\">",
			PLOT_L, y, CHART_W - PLOT_R, y, PLOT_L - 6, y + 4);
		html_num(out, top * t / 4);
		fputs("</text>\n", out);
	}
	fprintf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>\n", PLOT_L,
		CHART_H - PLOT_B, CHART_W - PLOT_R, CHART_H - PLOT_B);
	for (int i = 0; i < c->n; i++) {
		if (i % step && i != c->n - 1)
			continue;
		if (i != c->n - 1 && c->n - 1 - i < step)
			continue; /* too close to the last label */
		/* The last label ends at the plot's edge, not past it. */
		if (i == c->n - 1 && c->n > 1)
			fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"xt\" text-anchor=\"end\">",
				CHART_W - PLOT_R, CHART_H - PLOT_B + 16);
		else
			fprintf(out, "<text x=\"%.1f\" y=\"%d\" class=\"xt\">", plot_x(c, i),
				CHART_H - PLOT_B + 16);
		html_text(out, c->x[i] ? c->x[i] : "");
		fputs("</text>\n", out);
	}
	fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"at\">", PLOT_L + (CHART_W - PLOT_L - PLOT_R) / 2,
		CHART_H - 6);
	html_text(out, c->xlabel);
	fprintf(out, "</text>\n<text transform=\"translate(14 %d) rotate(-90)\" class=\"at\">",
		PLOT_T + (CHART_H - PLOT_T - PLOT_B) / 2);
	html_text(out, c->ylabel);
	fputs("</text>\n", out);
}

/* One value's <title>: "x: name value". */
static void chart_title(FILE *out, const struct chart *c, int i, const struct series *s, double v)
{
	fputs("<title>", out);
	html_text(out, c->x[i] ? c->x[i] : "");
	fputs(": ", out);
	html_text(out, s->name);
	fputc(' ', out);
	html_num(out, v);
	fputs("</title>", out);
}

static void chart_bars(FILE *out, const struct chart *c, double top)
{
	double slot = (double)(CHART_W - PLOT_L - PLOT_R) / (c->n ? c->n : 1);
	double w = slot > 3 ? slot * 0.8 : slot;

	for (int i = 0; i < c->n; i++) {
		double base = 0;

		for (int k = 0; k < c->ns; k++) {
			double v = c->s[k].v[i];

			if (isnan(v) || v <= 0)
				continue;
			fprintf(out,
				"<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">",
				plot_x(c, i) - w / 2, plot_y(base + v, top), w,
				plot_y(base, top) - plot_y(base + v, top), c->s[k].color);
			chart_title(out, c, i, &c->s[k], v);
			fputs("</rect>\n", out);
			base += v;
		}
	}
}

static void chart_lines(FILE *out, const struct chart *c, double top)
{
	/* Bands first, under the lines: the polygon between two series. */
	for (int k = 1; k < c->ns; k++) {
		const struct series *lo = &c->s[k - 1], *hi = &c->s[k];

		if (!hi->band)
			continue;
		fprintf(out, "<polygon fill=\"%s\" fill-opacity=\"0.22\" stroke=\"none\" points=\"",
			hi->color);
		for (int i = 0; i < c->n; i++)
			if (!isnan(hi->v[i]) && !isnan(lo->v[i]))
				fprintf(out, "%.1f,%.1f ", plot_x(c, i), plot_y(hi->v[i], top));
		for (int i = c->n - 1; i >= 0; i--)
			if (!isnan(hi->v[i]) && !isnan(lo->v[i]))
				fprintf(out, "%.1f,%.1f ", plot_x(c, i), plot_y(lo->v[i], top));
		fputs("\"><title>", out);
		html_text(out, lo->name);
		fputs(" to ", out);
		html_text(out, hi->name);
		fputs("</title></polygon>\n", out);
	}
	for (int k = 0; k < c->ns; k++) {
		const struct series *s = &c->s[k];
		int banded = s->band || (k + 1 < c->ns && c->s[k + 1].band);

		fprintf(out, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" points=\"", s->color,
			banded ? "1" : "2");
		for (int i = 0; i < c->n; i++)
			if (!isnan(s->v[i]))
				fprintf(out, "%.1f,%.1f ", plot_x(c, i), plot_y(s->v[i], top));
		fputs("\"/>\n", out);
		for (int i = 0; i < c->n; i++) {
			if (isnan(s->v[i]))
				continue;
			fprintf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\">", plot_x(c, i),
				plot_y(s->v[i], top), c->n > 60 ? "1.8" : "3", s->color);
			chart_title(out, c, i, s, s->v[i]);
			fputs("</circle>\n", out);
		}
	}
}

/* The chart as inline SVG, scaled to the page's width, with a legend. */
static void chart_print(FILE *out, const struct chart *c, const char *title)
{
	double top = 0;

	for (int i = 0; i < c->n; i++) {
		double sum = 0;

		for (int k = 0; k < c->ns; k++) {
			double v = c->s[k].v[i];

			if (isnan(v))
				continue;
			if (c->kind == CHART_BARS)
				sum += v > 0 ? v : 0;
			else
				top = v > top ? v : top;
		}
		top = sum > top ? sum : top;
	}
	top = nice_max(top);
	fprintf(out,
		"<figure>\n<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" "
		"role=\"img\" class=\"chart\">\n<title>",
		CHART_W, CHART_H);
	html_text(out, title);
	fputs("</title>\n", out);
	chart_axes(out, c, top);
	if (c->n == 0)
		fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"nd\">no data yet</text>\n", CHART_W / 2,
			CHART_H / 2);
	else if (c->kind == CHART_BARS)
		chart_bars(out, c, top);
	else
		chart_lines(out, c, top);
	fputs("</svg>\n<figcaption class=\"legend\">", out);
	for (int k = 0; k < c->ns; k++) {
		fprintf(out, "<span><i style=\"background:%s\"></i>", c->s[k].color);
		html_text(out, c->s[k].name);
		fputs("</span> ", out);
	}
	fputs("</figcaption>\n</figure>\n", out);
}

/* The column called name, or -1. */
static int column(const struct result *res, const char *name)
{
	for (int i = 0; i < res->ncols; i++)
		if (!strcmp(res->names[i], name))
			return i;
	return -1;
}

static const struct cell *cell_at(const struct result *res, int row, int col)
{
	return &res->cells[row * res->ncols + col];
}

static double cell_num(const struct result *res, int row, int col)
{
	const struct cell *c = cell_at(res, row, col);

	if (col < 0 || !c->text)
		return NAN;
	return c->type == SQLITE_INTEGER ? (double)c->integer : strtod(c->text, NULL);
}

/* Rows first..last of res (in order, or reversed: newest first) as the
 * x axis, from column xcol; first is set so that at most CHART_MAX_X are
 * shown, the latest. */
static struct chart *chart_rows(const struct result *res, int xcol, int reversed, enum chart_kind kind,
				const char *xlabel, const char *ylabel)
{
	int n = res->nrows > CHART_MAX_X ? CHART_MAX_X : res->nrows;
	struct chart *c = chart_new(kind, n, xlabel, ylabel);

	if (c)
		c->total = res->nrows;
	for (int i = 0; c && i < n; i++) {
		int row = reversed ? n - 1 - i : res->nrows - n + i;

		c->x[i] = shown(cell_at(res, row, xcol));
	}
	return c;
}

/* Fill series v from column col, the rows as chart_rows laid them out. */
static void chart_fill(const struct chart *c, double *v, const struct result *res, int col, int reversed)
{
	for (int i = 0; v && i < c->n; i++)
		v[i] = cell_num(res, reversed ? c->n - 1 - i : res->nrows - c->n + i, col);
}

/* daily: one stacked bar a day, a colour a status, the latest days. */
static struct chart *chart_daily(const struct result *res)
{
	static const char *const names[] = { "open", "snoozed", "closed", "other" };
	int n = 0, first;
	struct chart *c;
	double *v[4];

	for (int r = 0; r < res->nrows; r++)
		n += !r || strcmp(shown(cell_at(res, r, 0)), shown(cell_at(res, r - 1, 0)));
	first = n > CHART_MAX_X ? n - CHART_MAX_X : 0;
	if (!(c = chart_new(CHART_BARS, n - first, "day created (UTC)", "conversations")))
		return NULL;
	c->total = n;
	for (int k = 0; k < 4; k++)
		if (!(v[k] = chart_series(c, names[k], status_colors[k], 0))) {
			chart_free(c);
			return NULL;
		}
	for (int r = 0, i = -1; r < res->nrows; r++) {
		const char *st = shown(cell_at(res, r, 1));
		int k = !strcmp(st, "open") ? 0 : !strcmp(st, "snoozed") ? 1 : !strcmp(st, "closed") ? 2 : 3;

		if (!r || strcmp(shown(cell_at(res, r, 0)), shown(cell_at(res, r - 1, 0))))
			i++;
		if (i < first)
			continue;
		c->x[i - first] = shown(cell_at(res, r, 0));
		v[k][i - first] = (isnan(v[k][i - first]) ? 0 : v[k][i - first]) + cell_num(res, r, 2);
	}
	return c;
}

/* reopened: conversations by how often they were reopened. */
static struct chart *chart_reopened(const struct result *res)
{
	static const char *const labels[] = { "1", "2", "3", "4 or more" };
	struct chart *c = chart_new(CHART_BARS, 4, "times reopened", "conversations");
	double *v = c ? chart_series(c, "conversations", status_colors[0], 0) : NULL;
	int col = column(res, "reopened");

	if (!v) {
		chart_free(c);
		return NULL;
	}
	for (int i = 0; i < 4; i++) {
		c->x[i] = labels[i];
		v[i] = 0;
	}
	for (int r = 0; r < res->nrows; r++) {
		double k = cell_num(res, r, col);

		if (k >= 1)
			v[k >= 4 ? 3 : (int)k - 1]++;
	}
	return c;
}

/* changes: a stacked bar per walk (newest last), a colour per field; the
 * outbox's events (no walk) are left to the table. */
static struct chart *chart_changes(const struct result *res)
{
	static const char *const fields[] = {
		"status", "subject", "last_message", "user", "gone", "returned"
	};
	int n = 0, first, i = -1;
	struct chart *c;
	double *v[6];

	/* Rows: newest walk first, the outbox's (run_id NULL) at the end. */
	for (int r = 0; r < res->nrows; r++)
		if (cell_at(res, r, 0)->text)
			n += !r || strcmp(shown(cell_at(res, r, 0)), shown(cell_at(res, r - 1, 0)));
	first = n > CHART_MAX_X ? n - CHART_MAX_X : 0;
	if (!(c = chart_new(CHART_BARS, n - first, "walk (sync_runs.id)", "events")))
		return NULL;
	c->total = n;
	for (int k = 0; k < 6; k++)
		if (!(v[k] = chart_series(c, fields[k], field_colors[k], 0))) {
			chart_free(c);
			return NULL;
		}
	for (int r = 0; r < res->nrows; r++) {
		const char *f = shown(cell_at(res, r, 2));
		int k, pos;

		if (!cell_at(res, r, 0)->text)
			break;
		if (!r || strcmp(shown(cell_at(res, r, 0)), shown(cell_at(res, r - 1, 0))))
			i++;
		pos = n - 1 - i - first; /* oldest on the left */
		if (pos < 0)
			continue;
		for (k = 0; k < 5 && strcmp(f, fields[k]); k++)
			;
		c->x[pos] = shown(cell_at(res, r, 0));
		v[k][pos] = cell_num(res, r, 3);
	}
	return c;
}

/* The chart of report r, or NULL (none, or out of memory). */
static struct chart *chart_for(const struct report_def *r, const struct result *res)
{
	struct chart *c = NULL;

	if (!strcmp(r->name, "daily"))
		return chart_daily(res);
	if (!strcmp(r->name, "reopened"))
		return chart_reopened(res);
	if (!strcmp(r->name, "changes"))
		return chart_changes(res);
	if (!strcmp(r->name, "backlog")) {
		c = chart_rows(res, 0, 0, CHART_BARS, "age since created", "conversations");
		if (c) {
			chart_fill(c, chart_series(c, "open", status_colors[0], 0), res, 1, 0);
			chart_fill(c, chart_series(c, "snoozed", status_colors[1], 0), res, 2, 0);
		}
	} else if (!strcmp(r->name, "backlog-daily")) {
		c = chart_rows(res, 0, 0, CHART_LINES, "end of day (UTC)", "conversations");
		if (c) {
			chart_fill(c, chart_series(c, "open", status_colors[0], 0), res, 1, 0);
			chart_fill(c, chart_series(c, "snoozed", status_colors[1], 0), res, 2, 0);
		}
	} else if (!strcmp(r->name, "time-to-close")) {
		c = chart_rows(res, 0, 0, CHART_LINES, "week created (Monday)", "hours to the first close");
		if (c) {
			chart_fill(c, chart_series(c, "median, earliest", "#2b6cb0", 0), res, 2, 0);
			chart_fill(c, chart_series(c, "median, latest", "#2b6cb0", 1), res, 3, 0);
			chart_fill(c, chart_series(c, "90th percentile, earliest", "#dd6b20", 0), res, 4, 0);
			chart_fill(c, chart_series(c, "90th percentile, latest", "#dd6b20", 1), res, 5, 0);
		}
	}
	return c;
}

static void html_table(FILE *out, const struct result *res, int first, int last)
{
	fputs("<div class=\"scroll\"><table>\n<tr>", out);
	for (int i = 0; i < res->ncols; i++) {
		fputs("<th>", out);
		html_text(out, res->names[i]);
		fputs("</th>", out);
	}
	fputs("</tr>\n", out);
	for (int r = first; r < last; r++) {
		fputs("<tr>", out);
		for (int i = 0; i < res->ncols; i++) {
			const struct cell *c = cell_at(res, r, i);

			fputs(c->type == SQLITE_INTEGER || c->type == SQLITE_FLOAT ? "<td class=n>" : "<td>",
			      out);
			html_textn(out, shown(c), c->text ? c->len : 0);
			fputs("</td>", out);
		}
		fputs("</tr>\n", out);
	}
	fputs("</table></div>\n", out);
}

/* Reports listed newest first: their latest rows are their first. */
static int newest_first(const struct report_def *r)
{
	return !strcmp(r->name, "sync-history") || !strcmp(r->name, "changes") ||
	       !strcmp(r->name, "reopened");
}

/* The table of report r, folded when long, cut to its latest rows with a
 * note that says so and how to get them all. */
static void html_rows(FILE *out, const struct report_def *r, const struct result *res)
{
	int shown_rows = res->nrows > TABLE_MAX_ROWS ? TABLE_MAX_ROWS : res->nrows;
	int first = newest_first(r) ? 0 : res->nrows - shown_rows;

	fprintf(out, "<details%s><summary>Table: %d row%s</summary>\n",
		res->nrows <= TABLE_OPEN_ROWS ? " open" : "", res->nrows, res->nrows == 1 ? "" : "s");
	if (shown_rows < res->nrows)
		fprintf(out,
			"<p class=\"note\">The latest %d of %d rows; all of them: "
			"<code>dexsync report %s --format csv</code>.</p>\n",
			shown_rows, res->nrows, r->name);
	html_table(out, res, first, first + shown_rows);
	fputs("</details>\n", out);
}

static int html_section(sqlite3 *db, const struct report_def *r, const struct report_query *q, FILE *out)
{
	struct report_query none = { NULL, NULL, q->attribute };
	struct result res;
	struct chart *c;

	if (result_read(db, r, r->bounded ? q : &none, &res) < 0)
		return -1;
	fprintf(out, "<section id=\"%s\">\n<h2>", r->name);
	html_text(out, r->title);
	fputs("</h2>\n", out);
	if ((c = chart_for(r, &res))) {
		if (c->n < c->total)
			fprintf(out, "<p class=\"note\">The chart shows the latest %d of %d.</p>\n", c->n,
				c->total);
		chart_print(out, c, r->title);
		chart_free(c);
	}
	html_rows(out, r, &res);
	fputs("</section>\n", out);
	result_free(&res);
	return 0;
}

/* The numbers looked at first, each one query. */
static const char tiles_sql[] =
	"SELECT (SELECT count(*) FROM conversations WHERE gone_at IS NULL AND status = 'open'),\n"
	"	(SELECT count(*) FROM conversations WHERE gone_at IS NULL AND status = 'snoozed'),\n"
	"	(SELECT count(*) FROM conversations\n"
	"	 WHERE gone_at IS NULL AND substr(created_at, 1, 10) >= date('now', '-6 days')),\n"
	"	(SELECT count(*) FROM conversation_events\n"
	"	 WHERE field = 'status' AND new_value = 'closed'\n"
	"		AND seen_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-7 days')),\n"
	"	(SELECT min(created_at) FROM conversations WHERE gone_at IS NULL AND status = 'open'),\n"
	"	(SELECT CAST(julianday('now') - julianday(min(created_at)) AS INTEGER)\n"
	"	 FROM conversations WHERE gone_at IS NULL AND status = 'open'),\n"
	"	(SELECT count(*) FROM outbox WHERE state = 'pending'),\n"
	"	(SELECT count(*) FROM outbox WHERE state = 'failed'),\n"
	"	(SELECT replace(substr(started_at, 1, 16), 'T', ' ') FROM sync_runs ORDER BY id DESC LIMIT 1),\n"
	"	(SELECT outcome || ', ' || seen || ' seen, ' || changed || ' changed'\n"
	"	 FROM sync_runs ORDER BY id DESC LIMIT 1)";

/* The median hours to close of the closes seen in the last 4 weeks, at
 * their earliest and latest (see report_time_to_close). */
static const char median_sql[] =
	"WITH c AS (\n"
	"	SELECT max(0, (julianday(coalesce(after, conversation_created_at))\n"
	"			- julianday(conversation_created_at)) * 24) AS low,\n"
	"		max(0, (julianday(seen_at) - julianday(conversation_created_at)) * 24) AS high\n"
	"	FROM conversation_events\n"
	"	WHERE field = 'status' AND new_value = 'closed'\n"
	"		AND seen_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-28 days')\n"
	"		AND julianday(conversation_created_at) IS NOT NULL\n"
	"), n AS (SELECT count(*) AS n FROM c)\n"
	"SELECT (SELECT round(low, 1) FROM c ORDER BY low LIMIT 1 OFFSET (SELECT (n - 1) / 2 FROM n)),\n"
	"	(SELECT round(high, 1) FROM c ORDER BY high LIMIT 1 OFFSET (SELECT (n - 1) / 2 FROM n))";

static void html_tile(FILE *out, const char *value, const char *label, const char *sub)
{
	fputs("<div class=\"tile\"><div class=\"v\">", out);
	html_text(out, value && *value ? value : "-");
	fputs("</div><div class=\"k\">", out);
	html_text(out, label);
	fputs("</div>", out);
	if (sub && *sub) {
		fputs("<div class=\"s\">", out);
		html_text(out, sub);
		fputs("</div>", out);
	}
	fputs("</div>\n", out);
}

static int html_tiles(sqlite3 *db, FILE *out)
{
	struct result t, m;
	sqlite3_stmt *st;
	char oldest[64] = "", median[64] = "", sub[96];
	int rc = -1;

	if (sqlite3_prepare_v2(db, tiles_sql, -1, &st, NULL) != SQLITE_OK)
		st = NULL;
	if (result_fill(db, "report", st, &t) < 0)
		return -1;
	if (sqlite3_prepare_v2(db, median_sql, -1, &st, NULL) != SQLITE_OK)
		st = NULL;
	if (result_fill(db, "report", st, &m) < 0)
		goto out;
	if (t.nrows != 1 || m.nrows != 1)
		goto done;
	if (cell_at(&t, 0, 5)->text)
		snprintf(oldest, sizeof(oldest), "%s d", shown(cell_at(&t, 0, 5)));
	if (cell_at(&m, 0, 0)->text) {
		double lo = cell_num(&m, 0, 0), hi = cell_num(&m, 0, 1);

		/* Hours up to two days, then days. */
		if (hi < 48)
			snprintf(median, sizeof(median), "%.1f-%.1f h", lo, hi);
		else
			snprintf(median, sizeof(median), "%.1f-%.1f d", lo / 24, hi / 24);
	}
	fputs("<section class=\"tiles\">\n", out);
	snprintf(sub, sizeof(sub), "and %s snoozed", shown(cell_at(&t, 0, 1)));
	html_tile(out, shown(cell_at(&t, 0, 0)), "open now", sub);
	html_tile(out, shown(cell_at(&t, 0, 2)), "created, last 7 days", NULL);
	html_tile(out, shown(cell_at(&t, 0, 3)), "closed, last 7 days", "closes seen by the walks");
	html_tile(out, median, "median time to close, last 4 weeks", "earliest-latest the walks allow");
	html_tile(out, oldest, "oldest open", shown(cell_at(&t, 0, 4)));
	snprintf(sub, sizeof(sub), "%s failed", shown(cell_at(&t, 0, 7)));
	html_tile(out, shown(cell_at(&t, 0, 6)), "outbox pending", sub);
	html_tile(out, shown(cell_at(&t, 0, 8)), "last walk", shown(cell_at(&t, 0, 9)));
	fputs("</section>\n", out);
done:
	rc = 0;
	result_free(&m);
out:
	result_free(&t);
	return rc;
}

/* The order of the dashboard: what changes first, the lists after. */
static const char *const dashboard[] = {
	"daily",   "backlog-daily", "time-to-close", "backlog",	     "reopened",
	"changes", "by-status",	    "outbox",	     "sync-history", "user-attribute",
};

static const char html_style[] =
	"body { font-family: system-ui, sans-serif; margin: 1em auto; max-width: 60em;\n"
	"	padding: 0 1em; color: #1a202c; }\n"
	"h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin: 1.6em 0 0.4em; }\n"
	".tiles { display: flex; flex-wrap: wrap; gap: 0.6em; }\n"
	".tile { flex: 1 1 10em; border: 1px solid #cbd5e0; border-radius: 6px; padding: 0.5em 0.7em; }\n"
	".tile .v { font-size: 1.5em; font-weight: 600; } .tile .k { font-size: 0.9em; }\n"
	".tile .s, .note, .gen { color: #4a5568; font-size: 0.85em; }\n"
	"figure { margin: 0; } svg.chart { width: 100%; max-width: 720px; height: auto; }\n"
	"svg text { font-size: 11px; fill: #2d3748; } .yt { text-anchor: end; }\n"
	".xt, .at, .nd { text-anchor: middle; } .xt[text-anchor=end] { text-anchor: end; } .at { font-size: 12px; }\n"
	".grid { stroke: #e2e8f0; } .axis { stroke: #4a5568; }\n"
	".legend span { margin-right: 1em; white-space: nowrap; font-size: 0.9em; }\n"
	".legend i { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em;\n"
	"	vertical-align: -0.05em; }\n"
	".scroll { overflow-x: auto; }\n"
	"table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.9em; }\n"
	"th, td { border: 1px solid #cbd5e0; padding: 0.15em 0.5em; }\n"
	"th { background: #edf2f7; } td.n { text-align: right; font-variant-numeric: tabular-nums; }\n"
	"summary { cursor: pointer; color: #2b6cb0; }\n"
	"@media print { body { max-width: none; } .tile { break-inside: avoid; }\n"
	"	section, figure { break-inside: avoid; } summary { color: #1a202c; } }\n";

static int print_html(sqlite3 *db, const struct report_def *only, const struct report_query *q, FILE *out)
{
	char now[32];
	time_t t = time(NULL);
	struct tm tm;
	int rc = 0;

	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%d %H:%M UTC", &tm);
	fprintf(out,
		"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
		"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
		"<title>dexsync report</title>\n<style>\n%s</style>\n</head>\n<body>\n"
		"<h1>dexsync report</h1>\n<p class=\"gen\">Generated %s",
		html_style, now);
	if (q->since || q->until) {
		fputs("; dated reports from ", out);
		html_text(out, q->since ? q->since : "the start");
		fputs(" to ", out);
		html_text(out, q->until ? q->until : "today");
	}
	fputs(".</p>\n", out);
	if (!only)
		rc = html_tiles(db, out);
	for (size_t i = 0; i < sizeof(dashboard) / sizeof(dashboard[0]) && rc == 0; i++) {
		const struct report_def *r = report_find(dashboard[i]);

		if (r && (!only || only == r))
			rc = html_section(db, r, q, out);
	}
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

/* Print res as a table, CSV or JSON, then free it.  0, or -1 after logging. */
static int print_result(FILE *out, struct result *res, enum report_format fmt)
{
	int rc = 0;

	if (fmt == REPORT_TABLE)
		rc = print_table(out, res);
	else if (fmt == REPORT_CSV)
		print_csv(out, res);
	else
		rc = print_json(out, res);
	result_free(res);
	return rc;
}

int report_run(sqlite3 *db, const struct report_def *r, enum report_format fmt, const struct report_query *q,
	       FILE *out)
{
	struct result res;

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
	return print_result(out, &res, fmt);
}

int report_print_sql(sqlite3 *db, const char *name, const char *sql, const char *param, size_t param_len,
		     enum report_format fmt, FILE *out)
{
	struct result res;
	sqlite3_stmt *st = NULL;

	if (fmt == REPORT_HTML) {
		log_err("%s: the formats are table, csv and json", name);
		return -1;
	}
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK)
		sqlite3_bind_text64(st, 1, param, param_len, SQLITE_STATIC, SQLITE_UTF8);
	if (result_fill(db, name, st, &res) < 0)
		return -1;
	return print_result(out, &res, fmt);
}
