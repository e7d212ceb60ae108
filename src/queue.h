/* queue.h - turning dexsync(1) arguments into outbox payloads (pure, no I/O) */
#ifndef DEXSYNC_QUEUE_H
#define DEXSYNC_QUEUE_H

#include <jansson.h>
#include <stddef.h>

/* A Dexra id as dexsync accepts it on the command line: 1 to 200 printable
 * ASCII bytes, no space, no '/'.  A conversation may also be "outbox:N". */
int queue_valid_id(const char *id);

/* local@domain.tld, no spaces: enough to catch a typo, not RFC 5322. */
int queue_valid_email(const char *email);

/* Split "KEY=VALUE" into a key (malloc'd) and a JSON value: VALUE as JSON
 * when it parses as JSON (1200, true, null, "x", [1]), else as a string.
 * Returns 0, or -1 with the reason in err. */
int queue_parse_attribute(const char *arg, char **key, json_t **value, char *err, size_t errlen);

/* The body of POST /messages.  Text that is empty or only white space is
 * refused (-1 style: NULL with err). */
json_t *queue_message(const char *conversation, const char *text, int note, char *err, size_t errlen);

#endif
