/* confurl.h - the checks of the URL keys, for the programs that connect */
#ifndef DEXSYNC_CONFURL_H
#define DEXSYNC_CONFURL_H

#include "conf.h"

/* base-url and proxy, parsed by libcurl's URL API: for conf_load(). */
extern const struct conf_check conf_url_checks[];

#endif
