//! What the gateway changes in headers on the way through: hop-by-hop headers dropped,
//! identity headers stripped from clients and set from a verified token, request ids and W3C
//! trace context carried on.

use http::{header, HeaderMap, HeaderName, HeaderValue};
use rand::RngCore as _;

pub use service_kit::http::REQUEST_ID;

/// Identity of the verified caller, set by the gateway only. Any of these a client sends is
/// removed before the request goes upstream, whatever the route's access rule. Services read
/// them with `service_kit::Identity`.
pub use service_kit::identity::{ASSERTION, HEADERS as IDENTITY, SESSION_ID, USER_ID, USER_ROLES};

/// The verified caller as the gateway passes it on: the plain headers (user, roles,
/// session) and, when the gateway holds an identity key, the assertion it signed, the only
/// one services trust.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub plain: [HeaderValue; 3],
    pub assertion: Option<HeaderValue>,
}

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including any the `Connection` header names. `Upgrade` is
/// removed too unless `keep_upgrade` (a WebSocket handshake being passed on).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass of comparisons instead of a hashed removal per name,
    // twice per request.
    let any = headers
        .keys()
        .any(|name| name == header::UPGRADE || HOP_BY_HOP.contains(name));
    if !any && !keep_upgrade {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The request id: the client's when it is sane, otherwise a new one (as every service does).
pub use service_kit::http::request_id_from as request_id;

/// The `traceparent` to send upstream, given the caller's (`incoming`): the caller's trace continued with a new parent id
/// (the gateway's own span), or a new trace when the caller sent none or a malformed one.
fn traceparent(incoming: Option<&HeaderValue>) -> HeaderValue {
    let mut rng = rand::thread_rng();
    let mut span = [0u8; 8];
    while span == [0; 8] {
        rng.fill_bytes(&mut span);
    }
    let incoming = incoming
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    // version "-" trace-id (32) "-" parent-id (16) "-" flags (2), written in place: this runs
    // on every request.
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-01";
    use service_kit::telemetry::export::{parent_based, sample_child, sample_root};
    match incoming {
        Some((trace, flags)) => {
            value[3..35].copy_from_slice(trace.as_bytes());
            value[53..55].copy_from_slice(flags.as_bytes());
            // The caller's decision stands unless the sampler decides again (parsed only
            // then: this runs on every request).
            if !parent_based() {
                let id = u128::from_str_radix(trace, 16).unwrap_or(0);
                let caller = u8::from_str_radix(flags, 16).unwrap_or(0);
                let mut ours = [caller & !1];
                ours[0] |= u8::from(sample_child(id, caller & 1 == 1));
                hex_into(&mut value[53..55], &ours);
            }
        }
        None => {
            let mut trace = [0u8; 16];
            while trace == [0; 16] {
                rng.fill_bytes(&mut trace);
            }
            hex_into(&mut value[3..35], &trace);
            if !sample_root(u128::from_be_bytes(trace)) {
                value[54] = b'0';
            }
        }
    }
    hex_into(&mut value[36..52], &span);
    HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `(trace-id, flags)` of a valid W3C `traceparent` (version 00, or a later version read as
/// 00 as the spec asks).
fn parse_traceparent(v: &str) -> Option<(&str, &str)> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = lower_hex(version, 2)
        && version != "ff"
        && lower_hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && lower_hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2);
    ok.then_some((trace, flags))
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// `client` as a header value. A connection's requests all come from one address, so each
/// thread remembers the last one instead of formatting it for every request.
fn address_value(client: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return fresh_address_value(client);
        };
        match &*last {
            Some((ip, value)) if *ip == client => value.clone(),
            _ => {
                let value = fresh_address_value(client);
                *last = Some((client, value.clone()));
                value
            }
        }
    })
}

fn fresh_address_value(client: std::net::IpAddr) -> HeaderValue {
    // An address's text is always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(client.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The headers the gateway sets on a request on its way upstream: forwarding (RFC 7239's
/// de facto `X-Forwarded-*` trio), the request id, the trace context and the verified
/// identity. They replace any the client sent under the same names.
///
/// Kept beside the request's own headers rather than inserted into them: on the common path
/// (`exchange`) they are written straight after the request's headers, which saves a hashed
/// insert (and the map's growth) per header on every request.
pub struct Added {
    forwarded_for: HeaderValue,
    forwarded_host: Option<HeaderValue>,
    request_id: HeaderValue,
    traceparent: HeaderValue,
    identity: Option<IdentityHeaders>,
}

/// The names [`Added`] sets, whatever the request held under them.
const REPLACED: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    REQUEST_ID,
    TRACEPARENT,
];

const HTTP: HeaderValue = HeaderValue::from_static("http");

impl Added {
    /// What to add to `headers` for a request from `client`; the previous `X-Forwarded-For`
    /// is extended only when `trust_incoming`.
    pub fn new(
        headers: &HeaderMap,
        client: std::net::IpAddr,
        trust_incoming: bool,
        request_id: HeaderValue,
        identity: Option<IdentityHeaders>,
    ) -> Self {
        // One pass of comparisons rather than a hashed look-up per name.
        let (mut host, mut trace, mut previous) = (None, None, None);
        for (name, value) in headers {
            if name == header::HOST {
                host.get_or_insert(value);
            } else if name == TRACEPARENT {
                trace.get_or_insert(value);
            } else if trust_incoming && name == X_FORWARDED_FOR {
                previous.get_or_insert(value);
            }
        }
        let forwarded_for = match previous.and_then(|v| v.to_str().ok()) {
            Some(p) if !p.trim().is_empty() => HeaderValue::from_str(&format!("{p}, {client}"))
                .unwrap_or_else(|_| address_value(client)),
            _ => address_value(client),
        };
        Self {
            forwarded_for,
            forwarded_host: host.cloned(),
            request_id,
            traceparent: traceparent(trace),
            identity,
        }
    }

    /// Whether the request's own header `name` gives way to one of these.
    pub fn replaces(name: &HeaderName) -> bool {
        REPLACED.contains(name)
    }

    /// Every header to add, in the order written.
    pub fn for_each(&self, mut write: impl FnMut(&HeaderName, &HeaderValue)) {
        write(&X_FORWARDED_FOR, &self.forwarded_for);
        write(&X_FORWARDED_PROTO, &HTTP);
        if let Some(host) = &self.forwarded_host {
            write(&X_FORWARDED_HOST, host);
        }
        write(&REQUEST_ID, &self.request_id);
        write(&TRACEPARENT, &self.traceparent);
        if let Some(identity) = &self.identity {
            let [user, roles, session] = &identity.plain;
            write(&USER_ID, user);
            write(&USER_ROLES, roles);
            write(&SESSION_ID, session);
            if let Some(assertion) = &identity.assertion {
                write(&ASSERTION, assertion);
            }
        }
    }

    /// Puts these into `headers`, replacing the request's own (for requests sent through
    /// hyper's client, which takes a whole header map).
    /// The `traceparent` sent upstream: the caller's trace continued, or a new one.
    pub fn traceparent(&self) -> &HeaderValue {
        &self.traceparent
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in REPLACED {
            headers.remove(name);
        }
        self.for_each(|name, value| {
            headers.insert(name.clone(), value.clone());
        });
    }
}

/// The token of an `Authorization: Bearer` header, as bytes; `Err` when the header is there
/// but is not a bearer token.
///
/// Not checked as text here: a token is hundreds of bytes, and the verifier's cache answers
/// for the exact bytes it verified, so only a token it has not seen is checked, once, when it
/// is verified (`KeySet::verify`).
/// The bearer token of `Authorization`, any case of the scheme, trimmed; `None` without the
/// header, an error for any other value.
pub fn bearer(headers: &http::HeaderMap) -> Option<Result<&[u8], &'static str>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    const SCHEME: &[u8] = b"bearer ";
    let token = match value.split_at_checked(SCHEME.len()) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(SCHEME) => token.trim_ascii(),
        _ => return Some(Err("the Authorization header is not a bearer token")),
    };
    if token.is_empty() {
        return Some(Err("the Authorization header is not a bearer token"));
    }
    Some(Ok(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_found_in_any_case_of_the_scheme_and_trimmed() {
        let with = |value: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            bearer(&h).map(|r| r.map(<[u8]>::to_vec))
        };
        assert_eq!(with("Bearer abc.def"), Some(Ok(b"abc.def".to_vec())));
        assert_eq!(with("bEaReR   abc  "), Some(Ok(b"abc".to_vec())));
        for bad in ["Basic abc", "Bearer", "Bearer    ", "Bearerabc", ""] {
            assert!(matches!(with(bad), Some(Err(_))), "{bad:?}");
        }
        assert_eq!(bearer(&http::HeaderMap::new()), None);
    }

    #[test]
    fn traceparent_is_continued_or_started() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let out = traceparent(h.get(TRACEPARENT));
        let out = out.to_str().unwrap();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"));
        assert!(!out.contains("00f067aa0ba902b7"), "a new parent id: {out}");

        h.insert(TRACEPARENT, HeaderValue::from_static("00-0000-bad"));
        let fresh = traceparent(h.get(TRACEPARENT));
        let parts: Vec<&str> = fresh.to_str().unwrap().split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        let all_zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(all_zero), None);
    }

    fn written(added: &Added) -> Vec<(String, String)> {
        let mut out = Vec::new();
        added.for_each(|n, v| out.push((n.to_string(), v.to_str().unwrap().to_owned())));
        out
    }

    #[test]
    fn added_headers_replace_the_clients_own_and_apply_sets_the_same() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(REQUEST_ID, HeaderValue::from_static("client-id"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let client: std::net::IpAddr = "10.0.0.7".parse().unwrap();
        let identity = IdentityHeaders {
            plain: [
                HeaderValue::from_static("u"),
                HeaderValue::from_static("admin"),
                HeaderValue::from_static("s"),
            ],
            assertion: Some(HeaderValue::from_static("a.b.c")),
        };
        let added = Added::new(
            &h,
            client,
            false,
            HeaderValue::from_static("rid"),
            Some(identity),
        );
        let out = written(&added);
        let get = |name: &str| {
            let found: Vec<&str> = out
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(found.len(), 1, "{name} once: {out:?}");
            found[0].to_owned()
        };
        assert_eq!(get("x-forwarded-for"), "10.0.0.7", "not trusted: replaced");
        assert_eq!(get("x-forwarded-host"), "api.example.com");
        assert_eq!(get("x-forwarded-proto"), "http");
        assert_eq!(get("x-request-id"), "rid");
        assert_eq!(get("traceparent").len(), 55);
        assert_eq!(get("x-user-roles"), "admin");
        for (name, _) in &h {
            let replaced = Added::replaces(name);
            assert_eq!(replaced, name != header::HOST && name != "x-kept", "{name}");
        }

        // Trusted: the client's chain is extended.
        let trusted = Added::new(&h, client, true, HeaderValue::from_static("rid"), None);
        let out = written(&trusted);
        assert!(out.contains(&("x-forwarded-for".into(), "6.6.6.6, 10.0.0.7".into())));
        assert!(!out.iter().any(|(n, _)| n == "x-user-id"));

        // Into a map: the same headers, each once, the client's gone, others kept.
        let mut map = h.clone();
        added.apply(&mut map);
        for (name, value) in written(&added) {
            let all: Vec<_> = map.get_all(name.as_str()).iter().collect();
            assert_eq!(all, [value.as_str()], "{name}");
        }
        assert_eq!(map["x-kept"], "1");
        // Without a Host, a client's X-Forwarded-Host does not pass as the gateway's.
        let mut bare = HeaderMap::new();
        bare.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        let added = Added::new(&bare, client, false, HeaderValue::from_static("r"), None);
        added.apply(&mut bare);
        assert!(!bare.contains_key(X_FORWARDED_HOST));
    }

    #[test]
    fn hop_by_hop_headers_go_and_so_do_the_ones_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut upgrade = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(upgrade[header::UPGRADE], "websocket");
        assert_eq!(upgrade[header::CONNECTION], "upgrade");
    }
}
