/*
 * The one piece of mod_reqin_log written in C: the directive table. AP_INIT_TAKE1 fills the
 * `cmd_func` union through a designated initializer (`{ .take1 = f }`), which is what httpd's
 * headers promise and what Rust cannot spell without reimplementing the macro.
 *
 * The `module` struct itself lives in Rust (src/ffi/module.rs): a Rust cdylib links with a version
 * script that exports only symbols Rust defines (`local: *` for the rest), so a C-defined
 * `reqin_log_module` would be hidden from httpd's dlsym().
 *
 * Every handler is an `extern "C"` Rust function (src/ffi/module.rs) that returns NULL or an
 * error message allocated from cmd->pool; httpd prints it with the file and line.
 */
#include <httpd.h>
#include <http_config.h>

extern const char *reqin_log_cmd_file(cmd_parms *cmd, void *mconfig, const char *arg);
extern const char *reqin_log_cmd_ring(cmd_parms *cmd, void *mconfig, const char *arg);

const command_rec reqin_log_cmds[] = {
    AP_INIT_TAKE1("ReqinLogFile", reqin_log_cmd_file, NULL, RSRC_CONF,
                  "where to write one JSON line per request: an absolute path (or relative to "
                  "ServerRoot) opened for append, or |program for a piped log"),
    AP_INIT_TAKE1("ReqinLogRing", reqin_log_cmd_ring, NULL, RSRC_CONF,
                  "absolute path of the ja4sensor shared-memory ring to join "
                  "requests with (default: the sensor's default ring)"),
    { NULL }
};
