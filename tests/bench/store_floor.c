/* store_floor.c - the store floor of the benchmark: what storing the pages
 * costs at the least.  json_loadb each page file with Jansson,
 * json_dumps(JSON_COMPACT) each item, insert 7 columns with one prepared
 * statement in one transaction; WAL, synchronous=NORMAL, default cache.
 * With --parse-only it stops after the parsing and dumping.
 *
 *   store_floor [--parse-only] DB PAGE_DIR PAGES */
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n)
		*len = (size_t)n;
	else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

static const char *str(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

int main(int argc, char **argv)
{
	int parse_only = argc > 1 && !strcmp(argv[1], "--parse-only");
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char path[4096];
	long pages;

	if (argc - parse_only != 4) {
		fprintf(stderr, "usage: store_floor [--parse-only] DB PAGE_DIR PAGES\n");
		return 2;
	}
	argv += parse_only;
	pages = atol(argv[3]);
	if (!parse_only) {
		if (sqlite3_open(argv[1], &db) != SQLITE_OK ||
		    sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
				 "CREATE TABLE c(id TEXT PRIMARY KEY, status TEXT, subject TEXT, created_at TEXT,"
				 " last_message_id TEXT, last_message_text TEXT, raw TEXT);"
				 "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_prepare_v2(db, "INSERT INTO c VALUES (?, ?, ?, ?, ?, ?, ?)", -1, &st, NULL)) {
			fprintf(stderr, "store_floor: %s\n", sqlite3_errmsg(db));
			return 1;
		}
	}
	for (long p = 0; p < pages; p++) {
		size_t len, i;
		json_t *root, *item;
		char *body;

		snprintf(path, sizeof(path), "%s/p%ld.json", argv[2], p);
		if (!(body = slurp(path, &len)) || !(root = json_loadb(body, len, 0, NULL))) {
			fprintf(stderr, "store_floor: %s: unreadable\n", path);
			return 1;
		}
		json_array_foreach(json_object_get(root, "data"), i, item) {
			char *raw = json_dumps(item, JSON_COMPACT);
			json_t *lm = json_object_get(item, "last_message");

			if (!parse_only) {
				sqlite3_bind_text(st, 1, str(item, "id"), -1, SQLITE_STATIC);
				sqlite3_bind_text(st, 2, str(item, "status"), -1, SQLITE_STATIC);
				sqlite3_bind_text(st, 3, str(item, "subject"), -1, SQLITE_STATIC);
				sqlite3_bind_text(st, 4, str(item, "created_at"), -1, SQLITE_STATIC);
				sqlite3_bind_text(st, 5, str(lm, "id"), -1, SQLITE_STATIC);
				sqlite3_bind_text(st, 6, str(lm, "text"), -1, SQLITE_STATIC);
				sqlite3_bind_text(st, 7, raw, -1, SQLITE_STATIC);
				if (sqlite3_step(st) != SQLITE_DONE) {
					fprintf(stderr, "store_floor: %s\n", sqlite3_errmsg(db));
					return 1;
				}
				sqlite3_reset(st);
			}
			free(raw);
		}
		json_decref(root);
		free(body);
	}
	if (!parse_only) {
		sqlite3_finalize(st);
		if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
			fprintf(stderr, "store_floor: %s\n", sqlite3_errmsg(db));
			return 1;
		}
		sqlite3_close(db);
	}
	return 0;
}
