/*
 * The one piece of mod_reqin_log written in C: the directive table. AP_INIT_* fill the
 * `cmd_func` union through a designated initializer (`{ .take1 = f }`), which is what httpd's
 * headers promise and what Rust cannot spell without reimplementing the macros.
 *
 * The `module` struct itself lives in Rust (src/ffi/module.rs): a Rust cdylib links with a version
 * script that exports only symbols Rust defines (`local: *` for the rest), so a C-defined
 * `reqin_log_module` would be hidden from httpd's dlsym().
 *
 * Every directive goes to one Rust handler, which dispatches on the directive's name
 * (src/config.rs `Settings::apply`) and returns NULL or an error message allocated from
 * cmd->pool; httpd prints it with the file and line. FLAG directives are passed as "On"/"Off",
 * ITERATE directives once per argument.
 */
#include <httpd.h>
#include <http_config.h>

extern const char *reqin_log_cmd(cmd_parms *cmd, void *mconfig, const char *arg);

static const char *reqin_log_cmd_flag(cmd_parms *cmd, void *mconfig, int on)
{
    return reqin_log_cmd(cmd, mconfig, on ? "On" : "Off");
}

#define TAKE1(name, usage) AP_INIT_TAKE1(name, reqin_log_cmd, NULL, RSRC_CONF, usage)
#define ITERATE(name, usage) AP_INIT_ITERATE(name, reqin_log_cmd, NULL, RSRC_CONF, usage)
#define FLAG(name, usage) AP_INIT_FLAG(name, reqin_log_cmd_flag, NULL, RSRC_CONF, usage)

const command_rec reqin_log_cmds[] = {
    /* The original C module's directives, same meaning and defaults. */
    FLAG("JsonSockLogEnabled",
         "On|Off: log requests of this server (default On when a sink is configured)"),
    TAKE1("JsonSockLogSocket",
          "absolute path of a UNIX datagram socket that receives one JSON object per datagram"),
    ITERATE("JsonSockLogHeaders",
            "request header names to log as header_<Name> (repeatable, case-insensitive)"),
    TAKE1("JsonSockLogMaxHeaders", "at most this many configured headers per line (default 25)"),
    TAKE1("JsonSockLogMaxHeaderValueLen",
          "header values are cut after this many bytes (default 256)"),
    TAKE1("JsonSockLogReconnectInterval",
          "seconds between reconnection attempts of the socket (default 10)"),
    TAKE1("JsonSockLogErrorReportInterval",
          "seconds between two error-log reports of a failing sink (default 10)"),
    TAKE1("JsonSockLogLevel",
          "DEBUG|INFO|WARN|ERROR: least severe module message written (default DEBUG)"),
    /* mod_reqin_log's own. */
    TAKE1("ReqinLogFile",
          "where to write one JSON line per request: an absolute path (or relative to "
          "ServerRoot) opened for append, or |program for a piped log"),
    TAKE1("ReqinLogRing",
          "absolute path of the ja4sensor shared-memory ring to join "
          "requests with (default /dev/shm/ja4sensor.ring)"),
    TAKE1("ReqinLogTimeWindow",
          "a handshake joins a connection only if its SYN is this close to the accept "
          "(default 2s)"),
    TAKE1("ReqinLogOrphanDelay",
          "how long a request without a handshake waits for the sensor before it is logged "
          "uncorrelated (default 500ms)"),
    TAKE1("ReqinLogMatchMode",
          "one_to_many (every request of a connection joins its handshake, default) or "
          "one_to_one (only the first)"),
    ITERATE("ReqinLogExcludeSource", "client IPs or CIDRs never joined (repeatable)"),
    ITERATE("ReqinLogIncludePorts",
            "only requests to these local ports are joined (repeatable; default all)"),
    ITERATE("ReqinLogRedactHeaders",
            "Name adds, -Name removes a header from the redaction list, none clears it "
            "(default Authorization Cookie Set-Cookie Proxy-Authorization)"),
    FLAG("ReqinLogExportEnv",
         "On|Off: set JA4, JA3, TLS_*, TCP_* environment variables for the request (default On)"),
    TAKE1("ReqinLogLookupWait",
          "longest wait at post_read_request for the sensor to publish the handshake "
          "(default 20ms)"),
    TAKE1("ReqinLogBuffer",
          "bytes of lines a child collects before one write to ReqinLogFile, e.g. 16K; "
          "0 or Off: one write per line (default 16K)"),
    TAKE1("ReqinLogFlushInterval",
          "longest a buffered line waits before it is written (default 100ms)"),
    TAKE1("ReqinLogTestPanic",
          "testing only: a request for this exact path makes the log hook panic"),
    { NULL }
};
