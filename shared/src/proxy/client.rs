//! The upstream client: hyper with rustls (the stack the AWS SDK already brings), TLS verified against
//! the system's roots ([`crate::tls`], read once per process; plus any a test adds), never following
//! redirects, and an address guard that refuses every address that is not a public one, twice: when a
//! name is resolved (at call time, so a name that changes its answer is judged on the answer used), and
//! on the peer of every connection.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper::Uri;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::error::ApiError;

/// TCP connect, per attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What only code can set (never the environment): names answered without DNS, and roots trusted
/// besides the system's. The tests use them to reach an HTTPS upstream on loopback under a name its
/// test certificate carries; the addresses given still face the address guard.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    pub hosts: HashMap<String, Vec<IpAddr>>,
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// The upstream's name resolved to, or the connection reached, an address the proxy never calls.
#[derive(Debug, thiserror::Error)]
#[error("the upstream resolves to an address the proxy does not call (loopback, private, link-local or reserved)")]
pub(crate) struct Blocked;

/// Which addresses the proxy may connect to: public unicast ones, and loopback under the
/// local-development switch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddrPolicy {
    pub(crate) allow_loopback: bool,
}

fn v4_in(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn v6_in(ip: Ipv6Addr, net: Ipv6Addr, bits: u32) -> bool {
    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

impl AddrPolicy {
    pub(crate) fn allows(self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.allows_v4(v4),
            IpAddr::V6(v6) => self.allows_v6(v6),
        }
    }

    fn allows_v4(self, ip: Ipv4Addr) -> bool {
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        const REFUSED: &[([u8; 4], u32)] = &[
            ([0, 0, 0, 0], 8),       // "this network"
            ([10, 0, 0, 0], 8),      // private
            ([100, 64, 0, 0], 10),   // shared (carrier-grade NAT)
            ([169, 254, 0, 0], 16),  // link-local: instance metadata (169.254.169.254), ECS and Lambda agents
            ([172, 16, 0, 0], 12),   // private
            ([192, 0, 0, 0], 24),    // IETF protocol assignments
            ([192, 0, 2, 0], 24),    // documentation
            ([192, 88, 99, 0], 24),  // 6to4 relay anycast
            ([192, 168, 0, 0], 16),  // private
            ([198, 18, 0, 0], 15),   // benchmarking
            ([198, 51, 100, 0], 24), // documentation
            ([203, 0, 113, 0], 24),  // documentation
            ([224, 0, 0, 0], 4),     // multicast
            ([240, 0, 0, 0], 4),     // reserved, broadcast
        ];
        !REFUSED.iter().any(|(net, bits)| v4_in(ip, *net, *bits))
    }

    fn allows_v6(self, ip: Ipv6Addr) -> bool {
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        if let Some(v4) = ip.to_ipv4_mapped() {
            return self.allows_v4(v4);
        }
        let embedded_v4 = |at: usize| {
            let o = ip.octets();
            Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3])
        };
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address: judge that one.
        if v6_in(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
            return self.allows_v4(embedded_v4(12));
        }
        if v6_in(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
            return self.allows_v4(embedded_v4(2));
        }
        // IPv4-translated (SIIT, ::ffff:0:0/96, RFC 2765) carries one too.
        if v6_in(ip, Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96) {
            return self.allows_v4(embedded_v4(12));
        }
        let refused: &[(Ipv6Addr, u32)] = &[
            (Ipv6Addr::UNSPECIFIED, 96),                          // unspecified and IPv4-compatible
            (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48),  // local-use NAT64
            (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),      // discard
            (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32),     // Teredo
            (Ipv6Addr::new(0x2001, 0x10, 0, 0, 0, 0, 0, 0), 28),  // ORCHID
            (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
            (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),      // unique local (EC2's fd00:ec2::254)
            (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),     // link-local
            (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),     // site-local
            (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),      // multicast
        ];
        !refused.iter().any(|(net, bits)| v6_in(ip, *net, *bits))
    }
}

/// Resolves at call time and refuses an answer holding any address the policy refuses (a mixed answer
/// is refused whole, never filtered: it is a sign of a name pointed inwards).
#[derive(Debug, Clone)]
struct GuardedResolver {
    policy: AddrPolicy,
    hosts: Arc<HashMap<String, Vec<IpAddr>>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = BoxFuture<io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_ascii_lowercase();
            let addrs: Vec<IpAddr> = match this.hosts.get(&host) {
                Some(fixed) => fixed.clone(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect(),
            };
            if addrs.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "the upstream's name has no address"));
            }
            if addrs.iter().any(|ip| !this.policy.allows(*ip)) {
                return Err(io::Error::other(Blocked));
            }
            Ok(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect::<Vec<_>>().into_iter())
        })
    }
}

/// The TCP connector, checking the peer of every connection it makes against the policy (an address
/// literal in a URL skips the resolver; this does not).
#[derive(Debug, Clone)]
pub(crate) struct GuardedConnector {
    inner: HttpConnector<GuardedResolver>,
    policy: AddrPolicy,
}

impl Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let policy = self.policy;
        Box::pin(async move {
            let io = connecting.await?;
            let peer = io.inner().peer_addr()?;
            if !policy.allows(peer.ip()) {
                return Err(Box::new(io::Error::other(Blocked)) as Self::Error);
            }
            Ok(io)
        })
    }
}

pub(crate) type UpstreamClient = Client<hyper_rustls::HttpsConnector<GuardedConnector>, Full<Bytes>>;

/// Builds the upstream client. Plain `http://` is allowed only with the local-development switch (and
/// the policy then lets loopback alone through beside public addresses).
pub(crate) fn upstream_client(policy: AddrPolicy, options: &ProxyOptions) -> Result<UpstreamClient, ApiError> {
    let mut roots = crate::tls::system_roots();
    if !options.extra_roots.is_empty() {
        let mut with_extra = (*roots).clone();
        for root in &options.extra_roots {
            with_extra
                .add(root.clone())
                .map_err(|e| ApiError::internal(format!("an extra root certificate is unusable: {e}")))?;
        }
        roots = Arc::new(with_extra);
    }
    if roots.is_empty() {
        return Err(ApiError::internal("no root certificates to verify upstreams with"));
    }
    let tls = crate::tls::client_config(roots).map_err(ApiError::internal)?;
    let mut http = HttpConnector::new_with_resolver(GuardedResolver { policy, hosts: Arc::new(options.hosts.clone()) });
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    let guarded = GuardedConnector { inner: http, policy };
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let https = if policy.allow_loopback { builder.https_or_http() } else { builder.https_only() };
    let connector = https.enable_http1().wrap_connector(guarded);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(8)
        // A proxied request may not be idempotent: never send it twice.
        .retry_canceled_requests(false)
        .build(connector))
}

/// Whether an upstream call failed on the address guard.
pub(crate) fn is_blocked(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<Blocked>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<Blocked>())
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass_and_loopback_only_with_the_switch() {
        let strict = AddrPolicy { allow_loopback: false };
        let local = AddrPolicy { allow_loopback: true };
        for refused in [
            "127.0.0.1",
            "127.5.6.7",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.170.2",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "fe80::1",
            "fc00::1",
            "ff02::1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:db8::1",
            "::127.0.0.1",
            "2001::1",
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:7f00:1",
            "::ffff:0:a00:1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(!strict.allows(ip), "{refused}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "::ffff:0:808:808",
        ] {
            assert!(strict.allows(public.parse().unwrap()), "{public}");
        }
        assert!(local.allows("127.0.0.1".parse().unwrap()) && local.allows("::1".parse().unwrap()));
        for still_refused in ["10.0.0.1", "169.254.169.254", "192.168.0.1", "fd00:ec2::254"] {
            assert!(!local.allows(still_refused.parse().unwrap()), "{still_refused}");
        }
    }
}
