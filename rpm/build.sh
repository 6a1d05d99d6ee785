#!/usr/bin/env bash
# Builds the packages: `rpm/build.sh rpm` (el8/el9/el10 RPMs) and `rpm/build.sh deb` (.debs for
# this Debian/Ubuntu). Called by `make rpm` and `make deb`; outputs under target/:
#
#   target/rpm/RPMS/x86_64/mod_reqin_log-<v>-1.x86_64.rpm, ja4sensor-<v>-1.x86_64.rpm
#   target/debian/libapache2-mod-reqin-log_<v>-1_amd64.deb, ja4sensor_<v>-1_amd64.deb
#
# RPM binaries are built once with `cargo zigbuild` for glibc 2.28 (el8's), so the same RPM
# installs on el8, el9 and el10, and rpmbuild only copies them (no Rust build inside rpmbuild).
# The .debs carry the same binaries (see build_deb).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
CARGO=${CARGO:-cargo}
target_dir=${CARGO_TARGET_DIR:-$top/target}
# The oldest glibc we run on: el8's. zigbuild links against zig's glibc 2.28 stubs.
GLIBC_BASELINE=2.28
TRIPLE=x86_64-unknown-linux-gnu
el8_out=$target_dir/$TRIPLE/release
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)

# Debian's libpcap has SONAME libpcap.so.0.8; RHEL's (libpcap 1.9 on el8, 1.10 on el9/10) is
# libpcap.so.1, with the same unversioned pcap_* ABI. Linking against Debian's library would make
# the binary need libpcap.so.0.8, which no RHEL has. So the el8 binary links against a stub
# carrying every pcap_* symbol of the host library under the SONAME libpcap.so.1; it is never
# packaged. LIBPCAP_VER=1.9.1 keeps the pcap crate to the API of el8's libpcap 1.9.1.
link_el8_pcap_stub() {
    local dir=$target_dir/el8-pcap-stub host_lib
    host_lib=$(readlink -f /usr/lib/x86_64-linux-gnu/libpcap.so)
    mkdir -p "$dir"
    if [[ ! -f $dir/libpcap.so || $host_lib -nt $dir/libpcap.so ]]; then
        nm -D --defined-only "$host_lib" | awk '
            $2 == "T" { printf "void %s(void) {}\n", $3 }
            $2 == "D" || $2 == "B" { printf "char %s[64];\n", $3 }' >"$dir/pcap_stub.c"
        cc -shared -fPIC -nostdlib -Wl,-soname,libpcap.so.1 -o "$dir/libpcap.so" "$dir/pcap_stub.c"
    fi
    echo "$dir"
}

zigbuild() {
    # cargo-zigbuild runs zig as `python3 -m ziglang` when the ziglang package is importable:
    # put the project's .venv (make deps installs ziglang there) first on PATH.
    if [[ -x $top/.venv/bin/python3 ]]; then
        export PATH="$top/.venv/bin:$PATH"
    fi
    if ! command -v cargo-zigbuild >/dev/null; then
        echo "build.sh: cargo-zigbuild not found; run: make deps" >&2
        exit 1
    fi
    local stub
    stub=$(link_el8_pcap_stub)
    # Run from outside the repository: zig prints its include directories relative to the
    # current directory when they are below it (.venv/...), cargo-zigbuild hands them to bindgen
    # as they are, and bindgen, running in the crate's directory, would not find them.
    (
        cd "$stub"
        LIBPCAP_LIBDIR=$stub LIBPCAP_VER=1.9.1 \
            "$CARGO" zigbuild --manifest-path "$top/Cargo.toml" --release \
            --target "$TRIPLE.$GLIBC_BASELINE" -p mod_reqin_log -p ja4sensor -p ja4sensor-pcap
    )
}

# Files that differ between the platforms only by the Apache group and log directory.
render() { # template output httpd_group httpd_log_dir
    sed -e "s|@HTTPD_GROUP@|$3|g" -e "s|@HTTPD_LOG_DIR@|$4|g" "$1" >"$2"
}

render_platform_files() { # dir httpd_group httpd_log_dir
    mkdir -p "$1"
    render rpm/ja4sensor.service.in "$1/ja4sensor.service" "$2" "$3"
    render rpm/ja4sensor-ship.service.in "$1/ja4sensor-ship.service" "$2" "$3"
    render rpm/ja4sensor-detect.service.in "$1/ja4sensor-detect.service" "$2" "$3"
    render rpm/config.yml.in "$1/config.yml" "$2" "$3"
}

build_rpm() {
    zigbuild
    local topdir=$target_dir/rpm
    rm -rf "$topdir"
    mkdir -p "$topdir"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}
    render_platform_files "$topdir/SOURCES" apache /var/log/httpd
    rpmbuild -bb --target x86_64 \
        --define "_topdir $topdir" \
        --define "srcroot $top" \
        --define "binroot $el8_out" \
        --define "platroot $topdir/SOURCES" \
        --define "pkg_version $version" \
        rpm/mod_reqin_log.spec
    ls -1 "$topdir"/RPMS/x86_64/*.rpm
}

# The .debs carry the same glibc 2.28 binaries as the RPMs (so they also install on Debian 10+
# and Ubuntu 18.04+, and one build serves both formats). Only the sensor's library name
# differs: Debian calls the same libpcap ABI libpcap.so.0.8, so the .deb's copy of the capture
# binary (the only one linked to libpcap) names that.
build_deb() {
    zigbuild
    if ! command -v patchelf >/dev/null; then
        echo "build.sh: patchelf not found; run: make deps" >&2
        exit 1
    fi
    # Under target/release/ so cargo-deb's asset paths (`target/release/...`) find them wherever
    # CARGO_TARGET_DIR points.
    local stage=$target_dir/release/deb-assets
    rm -rf "$stage"
    render_platform_files "$stage" www-data /var/log/apache2
    install -m 0644 "$el8_out/libmod_reqin_log.so" "$stage/mod_reqin_log.so"
    install -m 0755 "$el8_out/ja4sensor" "$el8_out/ja4sensor-pcap" "$stage/"
    # As dh_strip and rpmbuild's brp-strip do: no debug sections in the package.
    strip --strip-debug "$stage/mod_reqin_log.so" "$stage/ja4sensor" "$stage/ja4sensor-pcap"
    patchelf --replace-needed libpcap.so.1 libpcap.so.0.8 "$stage/ja4sensor-pcap"
    rm -f "$target_dir"/debian/*.deb
    "$CARGO" deb --no-build -p mod_reqin_log
    "$CARGO" deb --no-build -p ja4sensor
    ls -1 "$target_dir"/debian/*.deb
}

case "${1:-}" in
    rpm) build_rpm ;;
    deb) build_deb ;;
    zigbuild) zigbuild ;;
    *)
        echo "usage: $0 rpm|deb|zigbuild" >&2
        exit 2
        ;;
esac
