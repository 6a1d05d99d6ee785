#!/bin/sh
# Installs the module built by `cargo build --release -p mod_reqin_log`:
#   target/release/libmod_reqin_log.so  ->  $DESTDIR$(apxs -q LIBEXECDIR)/mod_reqin_log.so
# and, where httpd uses Debian's layout (mods-available/), reqin_log.load and reqin_log.conf.
# Honours DESTDIR (staged installs, packaging), APXS (apxs binary) and CARGO_TARGET_DIR.
# Enabling the module stays the administrator's call (`a2enmod reqin_log` on Debian).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
APXS=${APXS:-$(command -v apxs || command -v apxs2 || echo apxs)}
DESTDIR=${DESTDIR:-}
so=${MODULE_SO:-${CARGO_TARGET_DIR:-$top/target}/release/libmod_reqin_log.so}

if [ ! -f "$so" ]; then
    echo "install.sh: $so not found; run: cargo build --release -p mod_reqin_log" >&2
    exit 1
fi
libexecdir=$("$APXS" -q LIBEXECDIR)
sysconfdir=$("$APXS" -q SYSCONFDIR)
if [ -z "$libexecdir" ]; then
    echo "install.sh: '$APXS -q LIBEXECDIR' gave nothing; is apache2-dev/httpd-devel installed?" >&2
    exit 1
fi

install -d "$DESTDIR$libexecdir"
install -m 0644 "$so" "$DESTDIR$libexecdir/mod_reqin_log.so"
echo "installed $DESTDIR$libexecdir/mod_reqin_log.so"

if [ -d "$sysconfdir/mods-available" ]; then
    install -d "$DESTDIR$sysconfdir/mods-available"
    for f in reqin_log.load reqin_log.conf; do
        install -m 0644 "$top/httpd-conf/debian/mods-available/$f" "$DESTDIR$sysconfdir/mods-available/$f"
        echo "installed $DESTDIR$sysconfdir/mods-available/$f"
    done
fi
