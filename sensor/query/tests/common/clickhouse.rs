//! A private `clickhouse-server` (Debian's 18.16, `make deps`) on free loopback ports, its config
//! in a temp dir, killed on drop: the same set-up as the shipper's tests (shipper/tests/common),
//! reduced to what the SQL tests need. HTTP/1.0 requests by hand: no client library to trust.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn server_binary() -> PathBuf {
    for p in [
        "/usr/bin/clickhouse-server",
        "/usr/sbin/clickhouse-server",
        "/usr/bin/clickhouse",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("clickhouse-server is not installed: run `make deps`");
}

pub struct ClickHouse {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    child: Option<Child>,
}

impl ClickHouse {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let d = dir.path().display();
        let config = format!(
            r#"<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{}</tcp_port>
  <interserver_http_port>{}</interserver_http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>104857600</mark_cache_size>
</yandex>
"#,
            free_port(),
            free_port()
        );
        std::fs::write(dir.path().join("config.xml"), config).unwrap();
        std::fs::write(
            dir.path().join("users.xml"),
            r#"<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"#,
        )
        .unwrap();
        let bin = server_binary();
        let mut cmd = Command::new(&bin);
        if bin.ends_with("clickhouse") {
            cmd.arg("server");
        }
        let child = cmd
            .arg(format!("--config-file={}/config.xml", dir.path().display()))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ch = Self {
            dir,
            http_port,
            child: Some(child),
        };
        let t0 = Instant::now();
        while t0.elapsed() < START_TIMEOUT {
            if let Ok((200, body)) = ch.http("GET", "/ping", "") {
                if body.starts_with("Ok") {
                    return ch;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("clickhouse-server did not answer /ping within {START_TIMEOUT:?}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Runs `sql`; panics on a ClickHouse error. The answer as the server sent it.
    pub fn query(&self, sql: &str) -> String {
        let (status, body) = self.http("POST", "/", sql).unwrap();
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }

    /// `sql` (an INSERT ... FORMAT ...) with `data` as its body.
    pub fn insert(&self, sql: &str, data: &str) {
        let mut url = String::from("/?query=");
        for b in sql.bytes() {
            if b.is_ascii_alphanumeric() {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        let (status, body) = self.http("POST", &url, data).unwrap();
        assert_eq!(status, 200, "{sql}: {body}");
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
