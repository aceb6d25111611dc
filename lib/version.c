/* Run-time version queries. */
#include "internal.h"

unsigned subsae_version_number(void)
{
    return SUBSAE_VERSION_NUMBER;
}

const char *subsae_version_string(void)
{
    return SUBSAE_VERSION_STRING;
}
