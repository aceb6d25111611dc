#!/usr/bin/env bash
# The ABI gate fails on a removed or changed exported function and passes on
# an added one. Works on a copy of the tree with its own fresh baseline.
# Usage: abi_test.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$1 work=$2/abi-tree
mkdir -p "$work"
tar -C "$src" --exclude=./build --exclude=./.git --exclude=./examples/rust/target -cf - . \
    | tar -C "$work" -xf -
cd "$work"
make -s abi-baseline >/dev/null
cp include/subsae.h include/subsae.h.orig
cp lib/version.c lib/version.c.orig
restore() { cp include/subsae.h.orig include/subsae.h; cp lib/version.c.orig lib/version.c; }

expect() { # expect pass|fail DESCRIPTION
    if make -s check-abi >"$work/out.txt" 2>&1; then got=pass; else got=fail; fi
    if [[ $got != "$1" ]]; then
        cat "$work/out.txt"
        echo "abi test: $2: check-abi should $1 but did $got"
        exit 1
    fi
    echo "abi test: $2: $got as expected"
}

# Cases 1 and 2 leave the header alone so that only one file recompiles.
# 1. Adding an exported function is compatible.
printf '\nSUBSAE_API int subsae_abi_test_added(void);\nint subsae_abi_test_added(void)\n{\n    return 42;\n}\n' >> lib/version.c
expect pass "added function"
restore

# 2. Removing an exported function is not.
sed -i '/^unsigned subsae_version_number(void)$/,/^}$/d' lib/version.c
expect fail "removed function"
restore

# 3. Changing a signature is not.
sed -i 's|^SUBSAE_API unsigned subsae_version_number(void);|SUBSAE_API unsigned subsae_version_number(int flags);|' include/subsae.h
sed -i 's|^unsigned subsae_version_number(void)$|unsigned subsae_version_number(int flags)|; s|^    return SUBSAE_VERSION_NUMBER;|    (void)flags;\n    return SUBSAE_VERSION_NUMBER;|' lib/version.c
expect fail "changed signature"
restore

# 4. The same removal with a SONAME major bump is allowed.
sed -i '/^unsigned subsae_version_number(void)$/,/^}$/d' lib/version.c
sed -i '/^SUBSAE_API unsigned subsae_version_number(void);$/d' include/subsae.h
sed -i 's/^#define SUBSAE_VERSION_MAJOR 0$/#define SUBSAE_VERSION_MAJOR 1/' include/subsae.h
expect pass "removed function with a major-version bump"
