#!/bin/sh
# check-includes.sh — dependencies point down only:
#   util ← core ← store ← daemon and cli (cli talks to the daemon through
#   the admin socket only, and hosts the engine itself for sim/replay);
#   store/sqlite_int.h is private to src/store. Also refuses the banned
#   functions (STYLE.md) anywhere in src/. Exit 1 with the offending lines.
set -u
cd "$(dirname "$0")/.."
bad=0
check() { # dir, forbidden-pattern
    hits=$(grep -rnE "#include \"($2)/" "src/$1" 2>/dev/null)
    if [ -n "$hits" ]; then
        echo "layering: src/$1 must not include $2:"
        echo "$hits"
        bad=1
    fi
}
check util "core|store|daemon|cli"
check core "store|daemon|cli"
check store "daemon|cli"
check cli "daemon"
# the SQLite store's private header stays inside src/store
hits=$(grep -rn '#include "store/sqlite_int.h"' src | grep -v '^src/store/')
if [ -n "$hits" ]; then
    echo "layering: store/sqlite_int.h is private to src/store:"
    echo "$hits"
    bad=1
fi
banned='\b(strcpy|strcat|sprintf|vsprintf|gets|strtok|strncpy|atoi|atol|sscanf|alloca|system|popen)\('
hits=$(grep -rnE "$banned" src)
if [ -n "$hits" ]; then
    echo "banned functions:"
    echo "$hits"
    bad=1
fi
[ $bad = 0 ] && echo "check-includes: layering and banned functions OK"
exit $bad
