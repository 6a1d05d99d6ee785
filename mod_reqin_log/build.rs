//! Generates the httpd/APR bindings (into OUT_DIR, never committed). Include directories come from the tools httpd and APR install (`apxs`,
//! `apr-1-config`, `apu-1-config`), with the usual Debian and RHEL locations as fallbacks.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian (`apache2-dev`) and RHEL (`httpd-devel`) put httpd's headers.
const FALLBACK_HTTPD_INCLUDES: &[&str] = &["/usr/include/apache2", "/usr/include/httpd"];
/// Where Debian and RHEL put APR's headers.
const FALLBACK_APR_INCLUDES: &[&str] = &["/usr/include/apr-1.0", "/usr/include/apr-1"];

fn tool_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn httpd_include_dir() -> PathBuf {
    if let Some(dir) = env::var_os("APACHE_INCLUDE_DIR") {
        return PathBuf::from(dir);
    }
    for apxs in ["apxs", "apxs2"] {
        if let Some(dir) = tool_output(apxs, &["-q", "INCLUDEDIR"]) {
            if Path::new(&dir).join("httpd.h").exists() {
                return PathBuf::from(dir);
            }
        }
    }
    FALLBACK_HTTPD_INCLUDES
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("httpd.h").exists())
        .unwrap_or_else(|| {
            panic!("httpd headers not found: install apache2-dev (Debian) or httpd-devel (RHEL), or set APACHE_INCLUDE_DIR")
        })
}

fn apr_include_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for tool in ["apr-1-config", "apu-1-config"] {
        if let Some(flags) = tool_output(tool, &["--includes"]) {
            for flag in flags.split_whitespace() {
                if let Some(dir) = flag.strip_prefix("-I") {
                    // apu-1-config adds /usr/include, which the compiler searches anyway.
                    let dir = PathBuf::from(dir);
                    if dir != Path::new("/usr/include") && !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
            }
        }
    }
    if dirs.is_empty() {
        dirs.extend(
            FALLBACK_APR_INCLUDES
                .iter()
                .map(PathBuf::from)
                .filter(|d| d.join("apr.h").exists()),
        );
    }
    if dirs.is_empty() {
        panic!("APR headers not found: install libapr1-dev/libaprutil1-dev (Debian) or apr-devel/apr-util-devel (RHEL)");
    }
    dirs
}

fn main() {
    println!("cargo:rerun-if-changed=c/wrapper.h");
    println!("cargo:rerun-if-env-changed=APACHE_INCLUDE_DIR");

    let mut includes = vec![httpd_include_dir()];
    includes.extend(apr_include_dirs());

    let mut bindings = bindgen::Builder::default()
        .header("c/wrapper.h")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .layout_tests(false)
        .generate_comments(false)
        .derive_default(false)
        .prepend_enum_name(false);
    for dir in &includes {
        bindings = bindings.clang_arg(format!("-I{}", dir.display()));
    }
    // Only what src/ffi uses; everything these reach is pulled in as needed.
    for ty in [
        "request_rec",
        "conn_rec",
        "server_rec",
        "module",
        "module_struct",
        "command_rec",
        "cmd_parms",
        "apr_pool_t",
        "apr_sockaddr_t",
        "apr_file_t",
        "piped_log",
        "apr_status_t",
        "ap_unixd_mpm_retained_data",
        "ap_expr_info_t",
        "ap_listen_rec",
        "apr_array_header_t",
        "apr_table_entry_t",
        "apr_os_sock_t",
    ] {
        bindings = bindings.allowlist_type(ty);
    }
    for func in [
        "ap_log_error_",
        "ap_hook_post_config",
        "ap_hook_child_init",
        "ap_hook_post_read_request",
        "ap_hook_log_transaction",
        "ap_hook_pre_connection",
        "ap_hook_handler",
        "ap_set_content_type",
        "ap_rwrite",
        "apr_table_set",
        "apr_table_setn",
        "apr_table_addn",
        "apr_is_empty_table",
        "ap_run_http_scheme",
        "ap_server_root_relative",
        "ap_open_piped_log",
        "ap_piped_log_write_fd",
        "ap_piped_log_read_fd",
        "apr_pool_cleanup_register",
        "apr_pool_cleanup_null",
        "apr_pool_userdata_get",
        "apr_pool_userdata_set",
        "ap_state_query",
        "ap_unixd_mpm_get_retained_data",
        "apr_file_close",
        "apr_pstrdup",
        "apr_pstrmemdup",
        "apr_file_write_full",
        "apr_table_get",
        "apr_strerror",
        "apr_dynamic_fn_retrieve",
        "ap_expr_parse_cmd_mi",
        "ap_expr_exec",
        "ap_expr_str_exec",
        "ap_find_linked_module",
        "ap_run_generate_log_id",
        "apr_optional_hook_add",
        "apr_os_sock_get",
        "ap_get_conn_socket",
        "apr_table_unset",
    ] {
        bindings = bindings.allowlist_function(func);
    }
    for var in [
        "MODULE_MAGIC_NUMBER_MAJOR",
        "MODULE_MAGIC_NUMBER_MINOR",
        "MODULE_MAGIC_COOKIE",
        "OK",
        "DECLINED",
        "RSRC_CONF",
        "APR_HOOK_REALLY_FIRST",
        "APR_HOOK_MIDDLE",
        "APR_SUCCESS",
        "APLOG_.*",
        "APR_INET6?",
        "AP_SQ_MAIN_STATE",
        "AP_SQ_MS_CREATE_PRE_CONFIG",
        "AP_EXPR_FLAG_.*",
        "ap_listeners",
        "ap_num_listen_buckets",
    ] {
        bindings = bindings.allowlist_var(var);
    }
    let bindings = bindings
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on c/wrapper.h: {e}"));
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("httpd_bindings.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
