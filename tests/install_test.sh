#!/usr/bin/env bash
# Install into a temporary prefix and link a program through pkg-config:
# once against the shared library, once statically against libsubsae.a.
# Usage: install_test.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$1 work=$2
prefix=$work/prefix
make -s -C "$src" install PREFIX="$prefix" >/dev/null

cat > "$work/hello.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <subsae.h>
int main(void)
{
    if (subsae_version_number() != SUBSAE_VERSION_NUMBER) return 1;
    printf("libsubsae %s\n", subsae_version_string());
    return strcmp(subsae_version_string(), SUBSAE_VERSION_STRING) != 0;
}
C
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
expected="libsubsae $(pkg-config --modversion subsae)"

# Shared: found at run time through LD_LIBRARY_PATH, as an installed SONAME.
cc -o "$work/hello_shared" "$work/hello.c" $(pkg-config --cflags --libs subsae)
out=$(LD_LIBRARY_PATH=$prefix/lib "$work/hello_shared")
[ "$out" = "$expected" ] || { echo "shared: got '$out', want '$expected'"; exit 1; }
readelf -d "$work/hello_shared" | grep -q 'NEEDED.*libsubsae.so.0' \
    || { echo "shared: hello_shared does not need libsubsae.so.0"; exit 1; }

# Static: a prefix holding only the archive, so --static must be complete.
static_prefix=$work/static-prefix
cp -r "$prefix" "$static_prefix"
rm -f "$static_prefix"/lib/libsubsae.so*
sed -i "s|^prefix=.*|prefix=$static_prefix|; s|^libdir=.*|libdir=$static_prefix/lib|; s|^includedir=.*|includedir=$static_prefix/include|" \
    "$static_prefix/lib/pkgconfig/subsae.pc"
export PKG_CONFIG_PATH=$static_prefix/lib/pkgconfig
cc -o "$work/hello_static" "$work/hello.c" $(pkg-config --static --cflags --libs subsae)
out=$("$work/hello_static")
[ "$out" = "$expected" ] || { echo "static: got '$out', want '$expected'"; exit 1; }
if readelf -d "$work/hello_static" | grep -q 'NEEDED.*libsubsae'; then
    echo "static: hello_static still needs libsubsae.so"; exit 1
fi

make -s -C "$src" uninstall PREFIX="$prefix" >/dev/null
left=$(find "$prefix" -type f | wc -l)
[ "$left" = 0 ] || { echo "uninstall left $left files in $prefix"; exit 1; }
echo "install test: $out (shared and static)"
