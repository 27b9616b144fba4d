#!/usr/bin/env bash
# Print the Python interpreter to build .venv with: $1 when given (it must be a supported version),
# else the first of python3.11, python3.12, python3.13 and python3 that is one. Exit 1 with a
# message naming what was found when none fits.
set -uo pipefail
SUPPORTED="3.11 3.12 3.13"

version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
supported() { case " $SUPPORTED " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if [ -n "${1:-}" ]; then
    version="$(version_of "$1")" || { echo "PYTHON=$1 does not run; set PYTHON to a Python $SUPPORTED" >&2; exit 1; }
    supported "$version" || { echo "PYTHON=$1 is Python $version; this project supports $SUPPORTED" >&2; exit 1; }
    echo "$1"
    exit 0
fi
seen=""
for candidate in python3.11 python3.12 python3.13 python3; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    version="$(version_of "$candidate")" || continue
    if supported "$version"; then echo "$candidate"; exit 0; fi
    seen="$seen $candidate=$version"
done
echo "no supported Python found (need one of $SUPPORTED; found:${seen:- none}); install one, or set PYTHON=/path/to/python" >&2
exit 1
