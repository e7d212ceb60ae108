/* queue.h - turning dexsync(1) arguments into outbox payloads (pure, no I/O)
 *
 * Input that is not what it seems is refused, never changed: text that is
 * not UTF-8, holds a NUL or a control character, a number JSON can write
 * but this program cannot hold, a name given twice. */
#ifndef DEXSYNC_QUEUE_H
#define DEXSYNC_QUEUE_H

#include <jansson.h>
#include <stddef.h>

/* The largest message text dexsync queues (bytes). */
#define QUEUE_MAX_TEXT (1u << 20)

/* A Dexra id as dexsync accepts it on the command line: 1 to 200 printable
 * ASCII bytes, no space, no '/'.  A conversation may also be "outbox:N". */
int queue_valid_id(const char *id);

/* "outbox:N" with N a positive decimal written plainly (no sign, no
 * leading zero, no more than an int64 holds): N.  0 when s does not start
 * with "outbox:", -1 when it does but N is not such a number. */
long long queue_outbox_ref(const char *s);

/* An outbox id as retry and cancel take it, "N" or "outbox:N": N, digits
 * only, 1 to INT64_MAX; -1 for anything else. */
long long queue_parse_item(const char *s);

/* local@domain.tld, no spaces: enough to catch a typo, not RFC 5322. */
int queue_valid_email(const char *email);

/* What is wrong with the n bytes of text at s for a field of a payload:
 * NULL when nothing, else the reason ("is not valid UTF-8", "holds a NUL
 * byte", "holds a control character").  multiline lets tab, CR and LF in. */
const char *queue_text_problem(const char *s, size_t n, int multiline);

/* Split "KEY=VALUE" into a key (malloc'd) and a JSON value: VALUE as JSON
 * when it parses as JSON (1200, true, null, "x", [1]), else as a string.
 * The key is valid UTF-8 without control characters or white space at
 * either end; a string value is valid UTF-8 without control characters but
 * tab, CR and LF; a JSON value that cannot be held exactly (an integer
 * beyond int64, a real beyond double, a key twice in an object) is refused
 * rather than queued as a string.  Returns 0, or -1 with the reason in err. */
int queue_parse_attribute(const char *arg, char **key, json_t **value, char *err, size_t errlen);

/* The body of POST /messages from the len bytes of text.  Text that is
 * empty or only white space (space, tab, CR, LF), longer than
 * QUEUE_MAX_TEXT, or with a problem queue_text_problem names (multi-line)
 * is refused: NULL with the reason in err. */
json_t *queue_message(const char *conversation, const char *text, size_t len, int note, char *err,
		      size_t errlen);

#endif
