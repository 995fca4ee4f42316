#!/usr/bin/env bash
# Writes this checkout's development settings, once: $THINKPOOL_VAR_DIR/local.env (var/local.env
# by default) with DEBUG=1 and a SECRET_KEY generated here. Kept afterwards (sessions and signed
# values outlive a restart); `make clean` removes it with the rest of var/.
#
# thinkpool/settings.py reads the file for every process of this checkout (manage.py, Celery,
# runserver, pytest) unless the environment turns DEBUG off; a variable the environment sets
# always wins. Production has no such file.
set -euo pipefail
cd "$(dirname "$0")/.."
VAR=${THINKPOOL_VAR_DIR:-var}
file="$VAR/local.env"
[ -f "$file" ] && exit 0

mkdir -p "$VAR"
py=.venv/bin/python
[ -x "$py" ] || py=python3
key=$("$py" -c "import secrets; print(secrets.token_urlsafe(50))")
tmp=$(umask 077 && mktemp "$VAR/local.env.XXXXXX")
trap 'rm -f "$tmp"' EXIT
printf '%s\n' \
    "# Development settings of this checkout, written once by 'make run' (scripts/local-env.sh)." \
    "# Read unless the environment sets DEBUG=0; a variable set in the environment wins." \
    "DEBUG=1" \
    "SECRET_KEY=$key" >"$tmp"
# A hard link appears whole or not at all, and never replaces a file another run just wrote.
ln "$tmp" "$file" 2>/dev/null || true
