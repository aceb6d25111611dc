#!/usr/bin/env bash
# Install into a temporary prefix and link a program the ways the README
# says: shared through pkg-config, and static with the README's own static
# line (read from README.md), both libraries being installed; the static
# binary must not need libsubsae.so (ldd), and must run without it. Also
# the archive-only prefix with `pkg-config --static subsae`, and the C++
# wrapper subsae.hpp from the installed headers.
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

# Static, as the README says, with libsubsae.so installed too.
line=$(grep -E '^cc prog\.c .*# static' "$src/README.md" | sed 's/ *#.*//')
[ -n "$line" ] || { echo "README.md: no static link line"; exit 1; }
line=${line/prog.c/\"$work/hello.c\"}
eval "$line -o \"$work/hello_static\""
if ldd "$work/hello_static" | grep -q libsubsae; then
    echo "static (README: $line): the binary still needs libsubsae.so:"
    ldd "$work/hello_static"
    exit 1
fi
out=$(env -u LD_LIBRARY_PATH "$work/hello_static")
[ "$out" = "$expected" ] || { echo "static: got '$out', want '$expected'"; exit 1; }

# Static from a prefix holding only the archive: --static must be complete.
static_prefix=$work/static-prefix
cp -r "$prefix" "$static_prefix"
rm -f "$static_prefix"/lib/libsubsae.so*
sed -i "s|^prefix=.*|prefix=$static_prefix|; s|^libdir=.*|libdir=$static_prefix/lib|; s|^includedir=.*|includedir=$static_prefix/include|" \
    "$static_prefix/lib/pkgconfig/subsae.pc"
PKG_CONFIG_PATH=$static_prefix/lib/pkgconfig \
    cc -o "$work/hello_archive" "$work/hello.c" \
    $(PKG_CONFIG_PATH=$static_prefix/lib/pkgconfig pkg-config --static --cflags --libs subsae)
out=$("$work/hello_archive")
[ "$out" = "$expected" ] || { echo "archive only: got '$out', want '$expected'"; exit 1; }

# The C++ wrapper is installed with the header.
[ -f "$prefix/include/subsae.hpp" ] || { echo "make install left out subsae.hpp"; exit 1; }
if command -v c++ >/dev/null; then
    printf '#include <subsae.hpp>\n#include <iostream>\nint main() { std::cout << "libsubsae " << subsae::version() << "\\n"; }\n' \
        > "$work/hello.cpp"
    c++ -std=c++17 -o "$work/hello_cpp" "$work/hello.cpp" $(pkg-config --cflags --libs subsae)
    out=$(LD_LIBRARY_PATH=$prefix/lib "$work/hello_cpp")
    [ "$out" = "$expected" ] || { echo "C++: got '$out', want '$expected'"; exit 1; }
fi

make -s -C "$src" uninstall PREFIX="$prefix" >/dev/null
left=$(find "$prefix" -type f | wc -l)
[ "$left" = 0 ] || { echo "uninstall left $left files in $prefix"; exit 1; }
echo "install test: $out (shared, static from the README's line without libsubsae.so, archive only, C++)"
