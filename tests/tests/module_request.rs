//! What mod_reqin_log does with a request: the headers it logs (hostile ones, credentials), the
//! environment variables it exports for the rest of httpd, and the original C module's UNIX
//! datagram sink. Real httpd, real sensor on `lo`, real clients.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use e2e_tests::*;
use serde_json::Value;

const LINE_TIMEOUT: Duration = Duration::from_secs(10);

fn last_line_with_path(h: &Httpd, path: &str) -> Result<Value> {
    wait_for(LINE_TIMEOUT, &format!("a line for {path}"), || {
        h.log_lines()
            .ok()?
            .into_iter()
            .rev()
            .find(|l| l.get("path").and_then(Value::as_str) == Some(path))
    })
}

#[test]
fn hostile_headers_give_valid_json_truncated_and_counted() -> Result<()> {
    let conf = "JsonSockLogHeaders User-Agent X-Evil X-Big X-Utf8 X-Many\n\
                HttpProtocolOptions Unsafe\n\
                LimitRequestFieldSize 100000\n\
                LimitRequestFields 1000\n";
    let stack = Stack::start("event", &format!("{conf}{STATUS_CONF}"))?;
    let h = &stack.httpd;
    let mut req = b"GET /index.html?q=%22x HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    req.extend_from_slice(b"User-Agent: evil\x01\x1b[31m\"}{\\\r\n");
    req.extend_from_slice(b"X-Evil: \x7f\t\"injected\":true\r\n");
    req.extend_from_slice(b"X-Utf8: caf\xc3\xa9 \xff\xfe bad\r\n");
    req.extend_from_slice(format!("X-Big: {}\r\n", "A".repeat(64 * 1024)).as_bytes());
    for i in 0..400 {
        req.extend_from_slice(format!("X-Filler-{i}: v{i}\r\n").as_bytes());
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    let answer = raw_http(h.http_port, &req)?;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    // Every line of the file parses (log_lines fails otherwise) and is one line.
    let line = last_line_with_path(h, "/index.html")?;
    assert_eq!(
        str_field(&line, "header_User-Agent")?,
        "evil\u{1}\u{1b}[31m\"}{\\"
    );
    assert!(line.get("injected").is_none());
    assert_eq!(
        str_field(&line, "header_X-Utf8")?,
        "café \u{fffd}\u{fffd} bad"
    );
    assert_eq!(
        str_field(&line, "header_X-Utf8_raw")?,
        "caf\\xc3\\xa9 \\xff\\xfe bad",
        "the exact bytes beside the replacement"
    );
    assert!(
        line.get("header_User-Agent_raw").is_none(),
        "valid UTF-8: no raw copy"
    );
    assert_eq!(
        str_field(&line, "header_X-Big")?,
        "A".repeat(256),
        "cut at JsonSockLogMaxHeaderValueLen"
    );
    assert!(
        line.get("header_X-Many").is_none(),
        "absent headers are not logged"
    );
    assert!(
        line.get("header_X-Filler-1").is_none(),
        "only configured headers"
    );
    let m = prometheus(&h.http_url("/reqin-status"))?;
    assert!(m["reqin_log_header_values_truncated_total"] >= 1.0, "{m:?}");
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn sensitive_headers_are_redacted() -> Result<()> {
    let conf = "JsonSockLogHeaders User-Agent Authorization Cookie Proxy-Authorization X-Api-Key\n\
                ReqinLogRedactHeaders X-Api-Key\n";
    let stack = Stack::start("event", conf)?;
    let h = &stack.httpd;
    curl_output(&[
        "-A",
        "ua-visible",
        "-H",
        "Authorization: Bearer s3cr3t-token",
        "-H",
        "Cookie: session=s3cr3t-cookie",
        "-H",
        "Proxy-Authorization: Basic s3cr3t-proxy",
        "-H",
        "X-Api-Key: s3cr3t-key",
        &h.https_url("/index.html"),
    ])?;
    let line = last_line_with_path(h, "/index.html")?;
    for name in [
        "Authorization",
        "Cookie",
        "Proxy-Authorization",
        "X-Api-Key",
    ] {
        assert_eq!(
            str_field(&line, &format!("header_{name}"))?,
            "[REDACTED]",
            "{line}"
        );
    }
    assert_eq!(str_field(&line, "header_User-Agent")?, "ua-visible");
    let text = fs::read_to_string(&h.log)?;
    assert!(!text.contains("s3cr3t"), "no secret anywhere in the log");
    Ok(())
}

#[test]
fn fingerprint_env_vars_drive_headers_rewrite_require_setenvif_and_cgi() -> Result<()> {
    let root_cgi = tempfile::Builder::new().prefix("reqin-cgi-").tempdir()?;
    fs::set_permissions(root_cgi.path(), fs::Permissions::from_mode(0o755))?;
    let script = root_cgi.path().join("env.cgi");
    fs::write(
        &script,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\nenv | sort\n",
    )?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    let m = "/usr/lib/apache2/modules";
    let conf = format!(
        "LoadModule headers_module {m}/mod_headers.so\n\
         LoadModule rewrite_module {m}/mod_rewrite.so\n\
         LoadModule setenvif_module {m}/mod_setenvif.so\n\
         LoadModule alias_module {m}/mod_alias.so\n\
         LoadModule cgid_module {m}/mod_cgid.so\n\
         ScriptSock {root}/cgid.sock\n\
         Header always set X-JA4 \"%{{JA4}}e\"\n\
         Header always set X-Correlated \"%{{REQIN_CORRELATED}}e\"\n\
         SetEnvIf JA4 \"^t13\" CLIENT_IS_TLS13\n\
         Header always set X-SetEnvIf \"%{{CLIENT_IS_TLS13}}e\"\n\
         <DirectoryMatch \"/reqin-e2e-[^/]+/htdocs\">\n\
           RewriteEngine On\n\
           RewriteCond %{{ENV:JA4}} ^t13\n\
           RewriteRule /rewritten$ /index.html [L]\n\
         </DirectoryMatch>\n\
         <Location /only-tls12>\n  Require expr \"! (%{{ENV:JA4}} =~ /^t13/)\"\n</Location>\n\
         ScriptAlias /cgi-bin/ {cgi}/\n\
         <Directory {cgi}>\n  Require all granted\n</Directory>\n",
        root = root_cgi.path().display(),
        cgi = root_cgi.path().display(),
    );
    // The same rules must reach the TLS virtual host: they are in the main server, inherited.
    let stack = Stack::start("event", &conf)?;
    let h = &stack.httpd;
    fs::create_dir_all(stack.root.path().join("htdocs/only-tls12"))?;
    fs::write(
        stack.root.path().join("htdocs/only-tls12/index.html"),
        "ok\n",
    )?;

    // Header set X-JA4 "%{JA4}e" and SetEnvIf JA4.
    let head = curl_output(&["-D", "-", "-o", "/dev/null", &h.https_url("/index.html")])?;
    let line = last_line_with_path(h, "/index.html")?;
    let ja4 = str_field(&line, "ja4")?;
    assert!(
        head.contains(&format!("x-ja4: {ja4}")) || head.contains(&format!("X-JA4: {ja4}")),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("x-correlated: 1"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("x-setenvif: 1"),
        "{head}"
    );

    // RewriteCond %{ENV:JA4}: only a TLS 1.3 client is rewritten to an existing page.
    let code = |extra: &[&str], path: &str| -> Result<String> {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        let url = h.https_url(path);
        args.push(&url);
        curl_output(&args)
    };
    assert_eq!(code(&[], "/rewritten")?, "200", "{}", h.error_log_text());
    assert_eq!(code(&["--tls-max", "1.2"], "/rewritten")?, "404");

    // Require expr on %{ENV:JA4}: denied to TLS 1.3, granted to a TLS 1.2 client.
    assert_eq!(code(&[], "/only-tls12/")?, "403");
    assert_eq!(code(&["--tls-max", "1.2"], "/only-tls12/")?, "200");

    // A CGI script sees the variables in its environment.
    let env = curl_output(&[&h.https_url("/cgi-bin/env.cgi")])?;
    assert!(env.contains(&format!("JA4={ja4}")), "{env}");
    for var in [
        "JA3_HASH=",
        "TLS_VERSION=1.3",
        "TCP_TTL=64",
        "TCP_MSS=",
        "REQIN_CORRELATED=1",
    ] {
        assert!(env.contains(var), "{var} in {env}");
    }
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn json_sock_log_socket_gets_one_object_per_datagram() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("reqin-sock-").tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let sock_path = dir.path().join("http.socket");
    let collector = UnixDatagram::bind(&sock_path)?;
    fs::set_permissions(&sock_path, fs::Permissions::from_mode(0o666))?;
    collector.set_read_timeout(Some(LINE_TIMEOUT))?;
    // An httpd.conf written for the C module, loaded unchanged.
    let conf = format!(
        "JsonSockLogEnabled On\n\
         JsonSockLogSocket {}\n\
         JsonSockLogHeaders X-Request-Id User-Agent\n\
         JsonSockLogMaxHeaders 25\n\
         JsonSockLogMaxHeaderValueLen 256\n\
         JsonSockLogReconnectInterval 1\n\
         JsonSockLogErrorReportInterval 10\n\
         JsonSockLogLevel INFO\n",
        sock_path.display()
    );
    let stack = Stack::start("event", &conf)?;
    let h = &stack.httpd;
    curl_output(&["-H", "X-Request-Id: abc", &h.https_url("/index.html")])?;
    let mut buf = vec![0u8; 65536];
    let n = collector.recv(&mut buf)?;
    let v: Value = serde_json::from_slice(&buf[..n])?;
    assert_eq!(str_field(&v, "header_X-Request-Id")?, "abc");
    assert_eq!(str_field(&v, "path")?, "/index.html");
    assert!(!buf[..n].contains(&b'\n'), "one object, no newline");
    assert!(bool_field(&v, "correlated")?, "{v}");
    // The file sink got the same line.
    last_line_with_path(h, "/index.html")?;
    Ok(())
}

#[test]
fn request_fields_are_capped_and_invalid_bytes_kept_exactly() -> Result<()> {
    let stack = Stack::start("event", STATUS_CONF)?;
    let h = &stack.httpd;
    // An 8 151-byte path, as a scanner sends: logged cut to ReqinLogMaxFieldLen.
    let long = format!("/{}", "a".repeat(8150));
    let req = format!("GET {long} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let answer = raw_http(h.http_port, req.as_bytes())?;
    assert!(
        answer.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A path and a query with bytes that are not UTF-8.
    let answer = raw_http(
        h.http_port,
        b"GET /caf\xe9/x\\y?q=\xff\xfe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )?;
    assert!(
        answer.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let lines = h.wait_log_lines(2)?;
    let cut = lines
        .iter()
        .find(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/aaa")))
        .ok_or("no line for the long path")?;
    assert_eq!(str_field(cut, "path")?, &long[..2048]);
    let bad = lines
        .iter()
        .find(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/caf")))
        .ok_or("no line for the non-UTF-8 path")?;
    assert_eq!(str_field(bad, "path")?, "/caf\u{fffd}/x\\y");
    assert_eq!(str_field(bad, "path_raw")?, "/caf\\xe9/x\\x5cy");
    assert_eq!(str_field(bad, "query")?, "q=\u{fffd}\u{fffd}");
    assert_eq!(str_field(bad, "query_raw")?, "q=\\xff\\xfe");
    assert!(bad.get("host_raw").is_none());
    let m = prometheus(&h.http_url("/reqin-status"))?;
    assert_eq!(m["reqin_log_request_fields_truncated_total"], 1.0, "{m:?}");
    assert_eq!(m["reqin_log_fields_not_utf8_total"], 2.0, "{m:?}");
    Ok(())
}

#[test]
fn the_client_map_labels_the_connection_for_httpd_rules_without_the_detector() -> Result<()> {
    let map = workspace_root().join("sensor/detect/data/clients.csv");
    let conf = format!(
        "ReqinLogClientMap \"{}\"\n\
         LoadModule headers_module /usr/lib/apache2/modules/mod_headers.so\n\
         Header set X-Reqin-Client \"%{{REQIN_CLIENT}}e\"\n",
        map.display()
    );
    let stack = Stack::start("event", &conf)?;
    let h = &stack.httpd;
    let out = curl_output(&["--http1.1", "-D", "-", "-o", "/dev/null", &h.https_url("/")])?;
    assert!(
        out.to_ascii_lowercase().contains("x-reqin-client: curl"),
        "curl's JA4 is curl's in the shipped map: {out}"
    );
    let line = last_line_with_path(h, "/")?;
    assert!(bool_field(&line, "correlated")?, "{line}");
    assert_eq!(str_field(&line, "ja4_client")?, "curl");
    // openssl s_client is another family.
    openssl_get(h.tls_port, "/index.html")?;
    let line = last_line_with_path(h, "/index.html")?;
    assert_ne!(str_field(&line, "ja4_client")?, "curl", "{line}");
    Ok(())
}
