/* Small JSON files (cfg.json, config.json, checkpoint.json). */
#include "io.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

json_t *subsae__json_parse(const char *text, size_t size, json_error_t *error,
                           bool *out_of_memory)
{
    errno = 0;
    json_t *root = json_loadb(text, size, JSON_REJECT_DUPLICATES, error);
    /* Jansson does not always say it ran out of memory (a string it could
     * not grow reads as a syntax error); malloc's ENOMEM does. */
    *out_of_memory = !root &&
                     (errno == ENOMEM || json_error_code(error) == json_error_out_of_memory);
    return root;
}

int subsae__read_json_object(const char *path, json_t **out)
{
    *out = NULL;
    void *map;
    size_t size;
    int rc = subsae__map_file(path, &map, &size);
    if (rc)
        return rc;
    json_error_t error;
    bool out_of_memory;
    json_t *root = subsae__json_parse(map ? map : "", size, &error, &out_of_memory);
    if (map)
        munmap(map, size);
    if (out_of_memory)
        return subsae__fail_nomem(path, size);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                            "%s: not a JSON object (%s, line %d)", path,
                            root ? "top level" : error.text, root ? 0 : error.line);
    }
    *out = root;
    return SUBSAE_OK;
}
