//! `ReqinLogFingerprint inline` (and `both`): the fingerprint of a TLS connection from what
//! httpd itself holds, no capture, no sensor, no ring.
//!
//! - The SYN: `post_config` sets `TCP_SAVE_SYN` on every listener ([`configure_listeners`]);
//!   at mod_ssl's `pre_handshake` the connection's saved SYN is read once
//!   (`getsockopt(TCP_SAVED_SYN)`, the kernel then frees it).
//! - The ClientHello: at the same hook, OpenSSL's message callback is installed on the
//!   connection's `SSL *`; it copies the hello into the connection's [`HelloSlot`] (bounded)
//!   and returns, so the handshake never waits for us (`ffi::openssl`).
//! - At the first request that needs it, both are parsed and fingerprinted by correlate-lib —
//!   the code the sensor runs — into the same [`TlsRecord`] the sensor would publish
//!   ([`fingerprint`]), except what only the sensor knows: no `sensor_id`, no SYN time (so no
//!   `syn_to_clienthello_ms`), the accept time as the hello's time (`b_timestamp`).
//!
//! `crosscheck` compares an inline record with the sensor's (`both`).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use correlate_lib::fingerprint::hello::{self, HelloError, MAX_HELLO_BYTES};
use correlate_lib::fingerprint::os::OsDatabase;
use correlate_lib::fingerprint::syn::SynTraits;
use correlate_lib::fingerprint::{syn, TlsFingerprint, Transport};
use correlate_lib::{ConnKey, IpMeta, TlsRecord};

use crate::ffi::openssl::{CapturedHello, HelloSlot, OpenSsl, TlsConn};
use crate::ffi::socket::{self, ClientSocket, SavedSyn};
use crate::ffi::{Conn, EnvBlock, Level, Server};
use crate::hooks::{ConnState, ModuleLog, ServerState};
use crate::record::{OrphanReason, RecordParts};

/// A handshake message of at most this many bytes is copied: correlate-lib's limit on a hello
/// body plus the 4-byte handshake header. A longer one is refused by the parser anyway.
pub const MAX_CAPTURED_HELLO: usize = MAX_HELLO_BYTES + 4;

/// Bytes read with `TCP_SAVED_SYN`: an IPv6 header with a few extension headers and a
/// 60-byte TCP header fit (an IPv4 SYN is at most 120). A longer one is counted as not saved.
const SYN_BUFFER: usize = 512;

/// Disagreements of `both` logged per child (all are counted).
const DISAGREEMENTS_LOGGED: u32 = 10;

/// Distinct ClientHellos, and distinct SYN shapes, whose fingerprint a child remembers (see
/// [`Memo`]): a few hundred client builds cover a site's traffic; at a few KiB an entry, the
/// memory stays under a MiB per child however many distinct hellos arrive.
const MEMO_ENTRIES: usize = 256;

/// Results of a pure function of `K` a child has computed, so a client that sends what an
/// earlier connection of the child sent costs a hash and a lookup. The key is the complete
/// input (a hello's [`hello::hello_key`]: every byte its parse reads; for the SYN's fields and
/// OS guess, its [`SynShape`]), compared whole, so a hit is the function's own result. Bounded:
/// full, it starts over. The lock is held for a lookup or an insert, never for a computation.
struct Memo<K, V> {
    hasher: foldhash::quality::RandomState,
    /// By the key's hash (already a good one: the map's own hasher only spreads it).
    map: Mutex<HashMap<u64, (K, V), foldhash::fast::RandomState>>,
}

impl<K, V: Clone> Memo<K, V> {
    fn new() -> Self {
        Self {
            hasher: foldhash::quality::RandomState::default(),
            map: Mutex::new(HashMap::with_capacity_and_hasher(
                MEMO_ENTRIES,
                foldhash::fast::RandomState::default(),
            )),
        }
    }

    /// The hash a key is looked up by: of a borrowed view of it, so a lookup needs no key of
    /// its own (only an insert makes one).
    fn hash(&self, key: &(impl Hash + ?Sized)) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The value remembered for the key of `hash` that `is_key` recognises, else `compute`'s,
    /// remembered under `key()`.
    fn get_or<E>(
        &self,
        hash: u64,
        is_key: impl Fn(&K) -> bool,
        key: impl FnOnce() -> K,
        compute: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        if let Some((k, v)) = self.lock().get(&hash) {
            if is_key(k) {
                return Ok(v.clone());
            }
        }
        let value = compute()?;
        let mut map = self.lock();
        if map.len() >= MEMO_ENTRIES {
            map.clear();
        }
        map.insert(hash, (key(), value.clone()));
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (K, V), foldhash::fast::RandomState>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A hello's fingerprint, its fields as the line writes them ([`crate::record::tls_json`])
/// and its environment variables ([`crate::env::hello_vars`]).
pub struct KnownHello {
    /// The TLS fields of a record ([`RecordParts::hello`]).
    record: Arc<TlsRecord>,
    pub json: Vec<u8>,
    pub env: Arc<EnvBlock>,
}

/// What the line takes from a SYN shape: the SYN's fields of a record with the OS guess
/// ([`RecordParts::syn`]), as the fragment writes them ([`crate::record::syn_json`]) and
/// their environment variables ([`crate::env::syn_vars`]).
pub struct KnownSyn {
    record: Arc<TlsRecord>,
    pub json: Vec<u8>,
    pub env: Arc<EnvBlock>,
}

/// A SYN without its IP id, the one trait that changes from one connection of a client to the
/// next: the key of what [`KnownSyn`] holds, which depends on nothing else. Hashed and compared
/// in place (every field named, so a new one cannot be left out unnoticed).
struct SynShape<'a>(&'a SynTraits);

/// A SYN's fields but its IP id, as references: what [`SynShape`] hashes and compares.
type ShapeParts<'a> = (
    &'a u8,
    &'a u16,
    &'a bool,
    &'a correlate_lib::TcpMeta,
    &'a correlate_lib::fingerprint::syn::OptionKinds,
    &'a correlate_lib::fingerprint::syn::P0fTraits,
);

fn shape_parts(syn: &SynTraits) -> ShapeParts<'_> {
    let SynTraits {
        ip,
        tcp,
        option_kinds,
        p0f,
    } = syn;
    let IpMeta {
        ttl,
        total_length,
        id: _,
        df,
    } = ip;
    (ttl, total_length, df, tcp, option_kinds, p0f)
}

impl Hash for SynShape<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        shape_parts(self.0).hash(state);
    }
}

impl SynShape<'_> {
    fn is(&self, other: &SynTraits) -> bool {
        shape_parts(self.0) == shape_parts(other)
    }
}

/// What a configuration generation that fingerprints inline needs, shared by its servers.
pub struct InlineGeneration {
    /// OpenSSL's functions (`None`: mod_ssl or libssl not loaded).
    pub openssl: Option<OpenSsl>,
    /// The p0f signatures for `tcp_os`; `None` if the embedded database did not load.
    pub os: Option<OsDatabase>,
    /// Disagreements logged so far by this child (each child has its own copy after fork).
    disagreements_logged: AtomicU32,
    /// The child's fingerprints of the hellos and SYNs it has seen.
    hellos: Memo<Vec<u8>, Arc<KnownHello>>,
    syns: Memo<SynTraits, Arc<KnownSyn>>,
}

impl InlineGeneration {
    /// Looks OpenSSL up and loads the OS signatures, saying in the error log what is missing.
    pub fn load(main: Server<'_>, report: bool) -> Self {
        let openssl = OpenSsl::lookup();
        if openssl.is_none() && report {
            main.log(
                Level::Warning,
                0,
                "ReqinLogFingerprint inline/both: libssl's SSL_set_msg_callback is not loaded in httpd (is mod_ssl loaded?): inline TLS lines carry no fingerprint (orphan_reason hello_not_captured)",
            );
        }
        let os = match OsDatabase::load() {
            Ok(db) => Some(db),
            Err(e) => {
                if report {
                    main.log(
                        Level::Warning,
                        0,
                        &format!("{e}: inline lines carry no tcp_os"),
                    );
                }
                None
            }
        };
        Self {
            openssl,
            os,
            disagreements_logged: AtomicU32::new(0),
            hellos: Memo::new(),
            syns: Memo::new(),
        }
    }

    /// The TLS fingerprint of a ClientHello message (correlate-lib's `fingerprint_client_hello`,
    /// remembered by the message's [`hello::hello_key`]).
    fn tls(&self, message: &[u8]) -> Result<Arc<KnownHello>, HelloError> {
        thread_local! {
            /// The key of the thread's last hello: a lookup copies the message into it, and
            /// only a new hello's entry gets a key of its own.
            static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        KEY.with(|cell| {
            let Ok(mut key) = cell.try_borrow_mut() else {
                return Self::known(message);
            };
            if hello::hello_key_into(message, &mut key).is_none() {
                return Self::known(message);
            }
            let key = key.as_slice();
            self.hellos.get_or(
                self.hellos.hash(key),
                |k| k.as_slice() == key,
                || key.to_vec(),
                || Self::known(message),
            )
        })
    }

    fn known(message: &[u8]) -> Result<Arc<KnownHello>, HelloError> {
        let parsed = hello::parse_handshake_message(message)?;
        let fingerprint = TlsFingerprint::of(&parsed, Transport::Tcp);
        let rec = TlsRecord {
            tls_version: fingerprint.tls_version,
            tls_sni: fingerprint.sni.unwrap_or_default(),
            tls_alpn: fingerprint.tls_alpn,
            ja4: fingerprint.ja4,
            ja4_r: fingerprint.ja4_r,
            ja3: fingerprint.ja3,
            ja3_hash: fingerprint.ja3_hash,
            ..TlsRecord::default()
        };
        let json = crate::record::tls_json(&rec);
        let env = Arc::new(EnvBlock::new(crate::env::hello_vars(&rec), |v| v.as_str()));
        Ok(Arc::new(KnownHello {
            record: Arc::new(rec),
            json,
            env,
        }))
    }

    /// The OS guess of a SYN (correlate-lib's; `None` without the database) and its rendered
    /// fields, remembered by the SYN's shape.
    fn syn(&self, syn: &SynTraits) -> Arc<KnownSyn> {
        let known = || {
            let guess = self.os.as_ref().map(|db| db.guess(syn));
            let rec = TlsRecord {
                ip: Some(syn.ip),
                tcp: Some(syn.tcp.clone()),
                tcp_os: guess
                    .as_ref()
                    .and_then(|g| g.label.clone())
                    .unwrap_or_default(),
                tcp_os_distance: guess.as_ref().map(|g| g.distance),
                tcp_option_kinds: syn.option_kinds,
                ..TlsRecord::default()
            };
            let json = crate::record::syn_json(&rec);
            let env = Arc::new(EnvBlock::new(crate::env::syn_vars(&rec), |v| v.as_str()));
            Ok::<_, std::convert::Infallible>(Arc::new(KnownSyn {
                record: Arc::new(rec),
                json,
                env,
            }))
        };
        let shape = SynShape(syn);
        match self.syns.get_or(
            self.syns.hash(&shape),
            |k| shape.is(k),
            || syn.clone(),
            known,
        ) {
            Ok(k) => k,
            Err(never) => match never {},
        }
    }

    /// True for the first [`DISAGREEMENTS_LOGGED`] calls of this child.
    pub fn log_disagreement(&self) -> bool {
        self.disagreements_logged.fetch_add(1, Ordering::Relaxed) < DISAGREEMENTS_LOGGED
    }
}

/// `TCP_SAVE_SYN` on every listener when `on` (off where it is set otherwise); what failed is
/// reported when `report` (the real start and every restart, not the configuration pre-check).
pub fn configure_listeners(main: Server<'_>, on: bool, report: bool) {
    let outcomes = socket::save_syn_on_listeners(on);
    if !report || !on {
        return;
    }
    main.log(
        Level::Debug,
        0,
        &format!(
            "TCP_SAVE_SYN set on {} of {} listeners",
            outcomes.iter().filter(|o| o.result.is_ok()).count(),
            outcomes.len()
        ),
    );
    for o in outcomes {
        if let Err(e) = o.result {
            let addr = o.addr.map_or_else(|| "?".to_owned(), |a| a.to_string());
            main.log(
                Level::Warning,
                0,
                &format!(
                    "ReqinLogFingerprint inline/both: cannot set TCP_SAVE_SYN on the listener {addr} ({e}); its connections are logged with the TLS fields only (orphan_reason syn_not_saved)"
                ),
            );
        }
    }
    let buckets = socket::listen_buckets();
    if buckets > 1 {
        main.log(
            Level::Warning,
            0,
            &format!(
                "ReqinLogFingerprint inline/both: ListenCoresBucketsRatio makes {buckets} sets of listeners; only the first is httpd's list, so connections accepted on the other {} get the TLS fields only (orphan_reason syn_not_saved)",
                buckets - 1
            ),
        );
    }
}

/// What httpd holds of one connection's handshake until its first request.
pub struct Capture {
    /// The client socket, from `pre_connection`.
    socket: Option<ClientSocket>,
    syn: OnceLock<SynCapture>,
    hello: HelloSlot,
}

/// The bytes of a SYN up to this many are kept in the connection's state itself, not in an
/// allocation of their own: an IPv4 SYN always fits (60-byte IP and TCP headers at most), an
/// IPv6 one unless it carries extension headers.
const SYN_INLINE: usize = 120;

enum SynCapture {
    Inline { len: u8, bytes: [u8; SYN_INLINE] },
    Saved(Box<[u8]>),
    NotSaved,
}

impl SynCapture {
    fn saved(syn: &[u8]) -> Self {
        let mut bytes = [0u8; SYN_INLINE];
        if let (Ok(len), Some(inline)) = (u8::try_from(syn.len()), bytes.get_mut(..syn.len())) {
            inline.copy_from_slice(syn);
            return SynCapture::Inline { len, bytes };
        }
        SynCapture::Saved(syn.into())
    }

    /// The SYN's bytes, if it was saved.
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            SynCapture::Inline { len, bytes } => bytes.get(..usize::from(*len)),
            SynCapture::Saved(bytes) => Some(bytes),
            SynCapture::NotSaved => None,
        }
    }
}

impl Capture {
    pub fn new(socket: Option<ClientSocket>) -> Self {
        Self {
            socket,
            syn: OnceLock::new(),
            hello: HelloSlot::new(MAX_CAPTURED_HELLO),
        }
    }

    pub fn hello_slot(&self) -> &HelloSlot {
        &self.hello
    }
}

/// mod_ssl's `pre_handshake`: reads the SYN, installs the ClientHello callback. Only client
/// connections of a generation that fingerprints inline, whose state `pre_connection` made.
pub fn pre_handshake(conn: Conn<'_>, tls: TlsConn<'_>, is_proxy: bool) {
    if is_proxy || conn.is_secondary() {
        return;
    }
    let Some(generation) = conn
        .base_server()
        .and_then(|s| s.state::<ServerState>())
        .and_then(|s| s.inline_generation())
    else {
        return;
    };
    let Some(cs) = conn.state::<ConnState>() else {
        return;
    };
    let capture = cs.capture();
    let mut buf = [0u8; SYN_BUFFER];
    let saved = capture
        .socket
        .map_or(SavedSyn::Failed, |s| s.take_saved_syn(&mut buf));
    let syn = match saved {
        SavedSyn::Saved(n) => SynCapture::saved(buf.get(..n).unwrap_or_default()),
        SavedSyn::NotSaved | SavedSyn::TooLong | SavedSyn::Failed => SynCapture::NotSaved,
    };
    let _ = capture.syn.set(syn);
    if let Some(api) = &generation.openssl {
        tls.capture_client_hello::<ConnState>(api, conn);
    }
}

/// A connection's record as [`fingerprint`] builds it.
pub struct Fingerprinted {
    /// The record, its hello's and SYN's parts shared with earlier connections (no copy).
    pub parts: RecordParts,
    /// Why the SYN's fields are missing, if they are.
    pub partial: Option<OrphanReason>,
    pub hello: Arc<KnownHello>,
    pub syn: Option<Arc<KnownSyn>>,
}

/// The record of a connection from its capture: `Err` when there is no usable ClientHello.
pub fn fingerprint(
    generation: &InlineGeneration,
    capture: &Capture,
    key: ConnKey,
    accept_ns: u64,
) -> Result<Fingerprinted, OrphanReason> {
    let message = match capture.hello.take() {
        CapturedHello::Message(m) => m,
        CapturedHello::None => return Err(OrphanReason::HelloNotCaptured),
        CapturedHello::TooLong { .. } => return Err(OrphanReason::HelloUnparsable),
    };
    let known = generation
        .tls(&message)
        .map_err(|_| OrphanReason::HelloUnparsable)?;
    let (ip, partial, known_syn) = match capture.syn.get().and_then(SynCapture::bytes) {
        Some(bytes) => match syn::parse_syn(bytes) {
            Ok(traits) => (Some(traits.ip), None, Some(generation.syn(&traits))),
            Err(_) => (None, Some(OrphanReason::SynUnparsable), None),
        },
        None => (None, Some(OrphanReason::SynNotSaved), None),
    };
    // What `fingerprint::connection_record` makes of the same parts: the accept time stands in
    // for the hello's (`b_timestamp`); the SYN's time is not known inline (no
    // `syn_to_clienthello_ms`), nor a `sensor_id`.
    let parts = RecordParts {
        own: TlsRecord {
            key: Some(key),
            hello_time_ns: accept_ns,
            ip,
            ..TlsRecord::default()
        },
        hello: Arc::clone(&known.record),
        syn: known_syn.as_ref().map(|k| Arc::clone(&k.record)),
    };
    Ok(Fingerprinted {
        parts,
        partial,
        hello: known,
        syn: known_syn,
    })
}
