#!/usr/bin/env bash
# The system packages a target needs, installed when this machine lets us, else one command to run.
#
#   scripts/system-deps.sh venv   python3-venv, when .venv does not exist yet
#   scripts/system-deps.sh run    make run: venv, and bubblewrap for the code sandbox and git for
#                                 releases to a local folder (both optional)
#   scripts/system-deps.sh test   make test: venv, PostgreSQL and Redis for the second pass
#                                 (unless PG_TEST_URL / REDIS_TEST_URL name running ones), git
#                                 (the release tests), chromium (the browser tests), and
#                                 bubblewrap (optional: without it the sandbox tests skip)
#   scripts/system-deps.sh ci     .ci/run: everything above, plus make, always
#
# As root with apt-get (these machines, CI, a container) the missing packages are installed.
# Otherwise a missing required package stops here at once with the command that installs it, and
# a missing optional one is named and skipped. Package names are Debian's (and Ubuntu's).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-}
required=() optional=()

have_postgres() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null
}
have_venv() { python3 -c "import ensurepip, venv" >/dev/null 2>&1; }
need_venv() { [ -d .venv ] || have_venv || required+=(python3-venv); }

case "$profile" in
venv)
    need_venv
    ;;
run)
    need_venv
    command -v bwrap >/dev/null || optional+=(bubblewrap)
    command -v git >/dev/null || optional+=(git)
    ;;
test)
    need_venv
    if [ -z "${PG_TEST_URL:-}" ]; then have_postgres || required+=(postgresql); fi
    if [ -z "${REDIS_TEST_URL:-}" ]; then
        { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; } ||
            required+=(redis-server)
    fi
    command -v git >/dev/null || required+=(git)
    command -v chromium >/dev/null || required+=(chromium)
    command -v bwrap >/dev/null || optional+=(bubblewrap)
    ;;
ci)
    command -v make >/dev/null || required+=(make)
    command -v python3 >/dev/null || required+=(python3)
    have_venv || required+=(python3-venv)
    have_postgres || required+=(postgresql)
    command -v redis-server >/dev/null || required+=(redis-server)
    command -v bwrap >/dev/null || required+=(bubblewrap)
    command -v git >/dev/null || required+=(git)
    command -v chromium >/dev/null || required+=(chromium)
    ;;
*)
    echo "usage: $0 venv|run|test|ci" >&2
    exit 64
    ;;
esac

missing=("${required[@]}" "${optional[@]}")
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing system packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # A fresh image has no package lists; an old list can name versions the mirror dropped.
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    exit 0
fi

case "$profile" in
ci) label=".ci/run" ;;
venv) label="the virtual environment (.venv)" ;;
*) label="make $profile" ;;
esac
if command -v apt-get >/dev/null; then
    how() { printf '    sudo apt-get install -y %s\n' "$*"; }
else
    how() { printf "    (your system's package manager; these are Debian's names) %s\n" "$*"; }
fi
if [ ${#required[@]} -gt 0 ]; then
    {
        echo "Missing system packages for $label: ${missing[*]}. Install them with:"
        echo
        how "${missing[@]}"
        echo
        if [ "$profile" = test ]; then
            echo "(or point PG_TEST_URL and REDIS_TEST_URL at a running PostgreSQL and Redis)"
        fi
    } >&2
    exit 2
fi
{
    echo "Note: bubblewrap is not installed, so code samples are not judged here. To judge them:"
    how bubblewrap
} >&2
