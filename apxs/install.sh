#!/usr/bin/env bash
# Installs the module built by `cargo build --release -p mod_reqin_log` (`make install` does both):
#
#   target/release/libmod_reqin_log.so -> $DESTDIR$(apxs -q LIBEXECDIR)/mod_reqin_log.so
#
# and the configuration snippets where the platform's httpd expects them:
#
#   debian: $DESTDIR$(apxs -q SYSCONFDIR)/mods-available/reqin_log.{load,conf}   (a2enmod reqin_log)
#   rhel:   $DESTDIR<httpd root>/conf.modules.d/10-reqin_log.conf, conf.d/reqin_log.conf
#           (<httpd root> is the parent of `apxs -q SYSCONFDIR`, /etc/httpd/conf on RHEL)
#
# The layout is detected from the live system (mods-available/ or conf.modules.d/ next to
# SYSCONFDIR); LAYOUT=debian|rhel forces it (a packager building for another platform).
# Configuration files an administrator may have edited are never overwritten: the new version is
# written beside them as <name>.new. Honours DESTDIR (staged installs), APXS (the apxs binary),
# MODULE_SO (the .so to install) and CARGO_TARGET_DIR.
# Enabling the module stays the administrator's call on Debian (`a2enmod reqin_log`); RHEL's
# httpd loads every conf.modules.d/ file at its next (graceful) restart.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
APXS=${APXS:-$(command -v apxs || command -v apxs2 || echo apxs)}
DESTDIR=${DESTDIR:-}
so=${MODULE_SO:-${CARGO_TARGET_DIR:-$top/target}/release/libmod_reqin_log.so}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

[[ -f $so ]] || die "$so not found; run: cargo build --release -p mod_reqin_log"
libexecdir=$("$APXS" -q LIBEXECDIR) || die "'$APXS -q LIBEXECDIR' failed; is apache2-dev/httpd-devel installed?"
sysconfdir=$("$APXS" -q SYSCONFDIR) || die "'$APXS -q SYSCONFDIR' failed"
[[ -n $libexecdir ]] || die "'$APXS -q LIBEXECDIR' gave nothing; is apache2-dev/httpd-devel installed?"
[[ -n $sysconfdir ]] || die "'$APXS -q SYSCONFDIR' gave nothing"
httpd_root=$(dirname "$sysconfdir")

layout=${LAYOUT:-}
if [[ -z $layout ]]; then
    if [[ -d $sysconfdir/mods-available ]]; then
        layout=debian
    elif [[ -d $httpd_root/conf.modules.d ]]; then
        layout=rhel
    else
        die "neither $sysconfdir/mods-available (Debian) nor $httpd_root/conf.modules.d (RHEL) exists; set LAYOUT=debian or LAYOUT=rhel"
    fi
fi

# Installs a config file unless an (edited) one is already there.
install_conf() { # source destination
    local src=$1 dst=$2
    install -d "$(dirname "$dst")"
    if [[ -e $dst ]] && ! cmp -s "$src" "$dst"; then
        install -m 0644 "$src" "$dst.new"
        echo "kept $dst (changed locally); the packaged version is $dst.new"
    else
        install -m 0644 "$src" "$dst"
        echo "installed $dst"
    fi
}

install -d "$DESTDIR$libexecdir"
install -m 0755 "$so" "$DESTDIR$libexecdir/mod_reqin_log.so"
echo "installed $DESTDIR$libexecdir/mod_reqin_log.so"

case $layout in
    debian)
        for f in reqin_log.load reqin_log.conf; do
            install_conf "$top/httpd-conf/debian/mods-available/$f" "$DESTDIR$sysconfdir/mods-available/$f"
        done
        echo "enable with: a2enmod reqin_log && systemctl restart apache2"
        ;;
    rhel)
        install_conf "$top/httpd-conf/rhel/conf.modules.d/10-reqin_log.conf" \
            "$DESTDIR$httpd_root/conf.modules.d/10-reqin_log.conf"
        install_conf "$top/httpd-conf/rhel/conf.d/reqin_log.conf" "$DESTDIR$httpd_root/conf.d/reqin_log.conf"
        echo "load with: apachectl configtest && systemctl reload httpd"
        ;;
    *)
        die "LAYOUT=$layout: expected debian or rhel"
        ;;
esac
