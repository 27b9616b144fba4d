#!/usr/bin/env bash
# make test-pythons: for each supported Python found on this machine, a fresh clone of this
# checkout's commit with a fresh .venv (`make install PYTHON=...`, timed), then the whole
# `make test` (slow tests included); prints a table: Python | install s | passed | failed | skipped | test s.
# Exits non-zero when an install or a test run failed, or when no supported Python was found.
#
# Where it looks: python3.X and python3 on PATH, then pyenv's versions ($(pyenv root)/versions/*/bin),
# the newest of each X first; for each version the first that runs. PYTHONS="/path/a /path/b" tests
# those instead. The clones sit in a temporary folder beside a `shared` link to this checkout's
# ../shared (the real-video tests read ../shared/data); each clone (6.5 GB of .venv, and the tests'
# temporary files: TMPDIR is a folder beside it) is removed after its run unless KEEP=1. The logs stay.
# CI is unset for the tests, so that what is missing on this machine skips, as in a developer's run.
set -uo pipefail
SUPPORTED="3.11 3.12 3.13"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD)" || exit 1

version_of() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null; }

candidates_for() {  # $1 = 3.X: the interpreters that may be Python 3.X, best first
    command -v "python$1" python3 2>/dev/null
    if command -v pyenv >/dev/null 2>&1; then
        ls -d "$(pyenv root)/versions/$1".*/bin/"python$1" 2>/dev/null | sort -V -r
    fi
}

pythons=()
if [ -n "${PYTHONS:-}" ]; then
    read -r -a pythons <<< "$PYTHONS"
else
    missing=""
    for minor in $SUPPORTED; do
        found=""
        for candidate in $(candidates_for "$minor"); do
            version="$(version_of "$candidate")" || continue  # e.g. a pyenv shim of a version not selected
            # its real path, not a shim's: the same interpreter for the whole run
            case "$version" in "$minor".*) found="$("$candidate" -c 'import sys; print(sys.executable)')"; break ;; esac
        done
        if [ -n "$found" ]; then pythons+=("$found"); else missing="$missing $minor"; fi
    done
    [ -n "$missing" ] && echo "supported Pythons not found on this machine:$missing"
fi
if [ ${#pythons[@]} -eq 0 ]; then
    echo "no supported Python ($SUPPORTED) found; install one, or set PYTHONS=\"/path/to/python ...\"" >&2
    exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/test-pythons.XXXXXX")"
[ -d "$ROOT/../shared" ] && ln -s "$(cd "$ROOT/../shared" && pwd)" "$WORK/shared"
mkdir "$WORK/logs"
echo "testing commit $COMMIT in $WORK with:"
for python in "${pythons[@]}"; do echo "  $python ($(version_of "$python" || echo "does not run"))"; done
git -C "$ROOT" diff --quiet HEAD -- || echo "note: uncommitted changes in $ROOT are not tested (the clones hold $COMMIT)"

rows=()
status=0
for python in "${pythons[@]}"; do
    if ! version="$(version_of "$python")"; then
        echo "$python does not run"
        rows+=("| $python (does not run) | failed | - | - | - | - |")
        status=1
        continue
    fi
    clone="$WORK/$version"
    install_log="$WORK/logs/$version-install.log"
    test_log="$WORK/logs/$version-test.log"
    echo
    echo "==> Python $version ($python): installing (log: $install_log)"
    git clone --quiet --local "$ROOT" "$clone" && git -C "$clone" checkout --quiet --detach "$COMMIT" \
        && mkdir "$clone.tmp" || exit 1
    # the inner make is a fresh one: nothing of this make's flags or of CI comes along
    inner=(env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS -u CI TMPDIR="$clone.tmp" make -C "$clone")
    start=$SECONDS
    if "${inner[@]}" install PYTHON="$python" > "$install_log" 2>&1; then
        install_s=$((SECONDS - start))
        echo "    installed in ${install_s} s; running make test (log: $test_log)"
        start=$SECONDS
        "${inner[@]}" test > "$test_log" 2>&1
        test_rc=$?
        test_s=$((SECONDS - start))
        summary="$(grep -E '^=+ .*( passed| failed| skipped| error| no tests ran).* in [0-9.]+s' "$test_log" | tail -n 1)"
        count() { grep -oE "[0-9]+ $1" <<< "$summary" | grep -oE '^[0-9]+' || echo 0; }
        failed=$(( $(count failed) + $(count 'errors?') ))
        echo "    make test exit $test_rc in ${test_s} s: ${summary:-no pytest summary line}"
        rows+=("| $version | $install_s | $(count passed) | $failed | $(count skipped) | $test_s |")
        [ "$test_rc" -eq 0 ] || status=1
    else
        echo "    make install FAILED after $((SECONDS - start)) s; the end of its log:"
        tail -n 15 "$install_log" | sed 's/^/    /'
        rows+=("| $version | failed | - | - | - | - |")
        status=1
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "    kept $clone and $clone.tmp"; else rm -rf "$clone" "$clone.tmp"; fi
done

echo
echo "make test on each Python, commit $COMMIT, $(date -u +%Y-%m-%d), $(nproc) CPU cores (failed includes errors):"
echo
echo "| Python | install s | passed | failed | skipped | test s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "logs: $WORK/logs"
exit $status
