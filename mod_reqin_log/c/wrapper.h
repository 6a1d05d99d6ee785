/* The httpd/APR headers bindgen reads (build.rs allowlists what src/ffi uses). */
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <ap_mmn.h>
#include <apr_file_io.h>
#include <apr_optional.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include <http_connection.h>
#include <ap_expr.h>
#include <unixd.h>
