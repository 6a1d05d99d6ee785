#!/usr/bin/env bash
# `make demo`: a private httpd with mod_reqin_log and the sensor on lo, a few real TLS requests
# from different clients, then the correlated log lines. Everything lives in a temp dir and is
# stopped on exit. Needs root (pcap on lo).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$top/target}/release
module=$target/libmod_reqin_log.so
sensor=$target/ja4sensor

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

root=$(mktemp -d /tmp/reqin-demo.XXXXXX)
chmod 755 "$root"
tls_port=$(free_port)
http_port=$(free_port)
ring=$root/ja4sensor.ring
log=$root/reqin.log
mkdir -p "$root/htdocs" && echo "hello from the mod_reqin_log demo" > "$root/htdocs/index.html"

sensor_pid=
cleanup() {
  apache2 -f "$root/httpd.conf" -k stop 2>/dev/null || true
  [[ -n $sensor_pid ]] && kill "$sensor_pid" 2>/dev/null && wait "$sensor_pid" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT

echo "== self-signed certificate for localhost"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$root/key.pem" -out "$root/cert.pem" 2>/dev/null
chmod 644 "$root/key.pem"

sed -e "s|@SERVER_ROOT@|$root|g" -e "s|@MODULES_DIR@|/usr/lib/apache2/modules|g" \
    -e "s|@MPM@|event|g" -e "s|@REQIN_MODULE@|$module|g" \
    -e "s|@LISTEN_TLS@|$tls_port|g" -e "s|@LISTEN_HTTP@|$http_port|g" \
    -e "s|@CERT@|$root/cert.pem|g" -e "s|@KEY@|$root/key.pem|g" \
    -e "s|@REQIN_LOG@|$log|g" -e "s|@RING@|$ring|g" -e "s|@DOCROOT@|$root/htdocs|g" \
    "$top/httpd-conf/test/httpd.conf.in" > "$root/httpd.conf"

echo "== ja4sensor capturing lo, port $tls_port, ring $ring"
"$sensor" run --interface lo --ports "$tls_port" --ring "$ring" --ring-group www-data 2> "$root/sensor.log" &
sensor_pid=$!
for _ in $(seq 100); do [[ -e $ring ]] && break; sleep 0.1; done
[[ -e $ring ]] || { echo "sensor did not start:"; cat "$root/sensor.log"; exit 1; }

echo "== httpd (event MPM) with mod_reqin_log on https://127.0.0.1:$tls_port and http://127.0.0.1:$http_port"
apache2 -f "$root/httpd.conf" -k start
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$http_port/" && break; sleep 0.1; done
# The readiness probe's own line (written within ReqinLogFlushInterval), then a clean log.
for _ in $(seq 50); do [[ -s $log ]] && break; sleep 0.1; done
: > "$log"

echo "== requests"
url=https://localhost:$tls_port
resolve=localhost:$tls_port:127.0.0.1
curl -sk --resolve "$resolve" --http1.1 -A "curl (honest)" "$url/" -o /dev/null -w '  curl --http1.1            -> %{http_code} from port %{local_port}\n'
curl -sk --resolve "$resolve" --http1.1 -A "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0" \
  "$url/" "$url/index.html" -o /dev/null -o /dev/null -w '  curl claiming to be Chrome -> %{http_code} from port %{local_port}\n'
printf 'GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: openssl\r\nConnection: close\r\n\r\n' \
  | openssl s_client -quiet -connect "127.0.0.1:$tls_port" -servername localhost 2>/dev/null | head -1 | sed 's/^/  openssl s_client          -> /'
curl -s "http://127.0.0.1:$http_port/" -o /dev/null -w '  curl plain http           -> %{http_code} from port %{local_port} (no TLS: an orphan)\n'
sleep 0.5

echo
echo "== the correlated log ($log): one JSON line per request"
if command -v jq >/dev/null; then
  jq -c '{src_port, method, path, scheme, status, correlated, tls_sni, ja4, ja3_hash, tcp_meta_options, ip_meta_ttl}' "$log"
  echo
  echo "== one full line"
  head -1 "$log" | jq .
else
  cat "$log"
fi
