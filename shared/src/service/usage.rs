//! Uses: the proxy's side of the vault. A use is authorised by the same rules as a read (ownership,
//! scope, organization), then by the secret's upstream (its methods and paths) and its limits, and is
//! audited before anything is sent (fail closed: no audit, no call).

use secrecy::SecretString;
use time::OffsetDateTime;

use super::Vault;
use crate::error::{ApiError, Code};
use crate::model::{EventKind, Injection, Principal, RequestMeta, Upstream};
use crate::policy;
use crate::rules::{self, path_allowed};
use crate::store::{Count, SecretItem, ToItem};

/// Longest path an audit record keeps.
const MAX_AUDITED_PATH: usize = 512;

/// One use the proxy asks for.
#[derive(Debug, Clone, Copy)]
pub struct UseRequest<'a> {
    pub name: &'a str,
    /// Upper case.
    pub method: &'a str,
    /// Normalised, under the upstream's base URL (`/chat/completions`).
    pub path: &'a str,
    /// The query string the caller sent, if any.
    pub query: Option<&'a str>,
}

/// A use, authorised and audited: the value and where it goes.
#[derive(Debug)]
pub struct Usable {
    pub item: SecretItem,
    pub upstream: Upstream,
    pub value: SecretString,
}

impl Vault {
    /// Authorises one use of the caller's secret `name` (its own user-level one, else its client's
    /// app-level one, as a read), counts it against the secret's limits and stores its
    /// `vault.secret.used` event. Refusals are audited.
    pub async fn use_secret(&self, meta: &RequestMeta, p: &Principal, req: UseRequest<'_>) -> Result<Usable, ApiError> {
        let owners = self.allowed(policy::read_owners(p, None), p, meta, req.name).await?;
        let item = self.live_secret(p, &owners, req.name).await?;
        self.check_scope(p, meta, &item).await?;
        let refuse = |code: Code, message: String| ApiError::forbidden(code, message);
        let decision = match &item.upstream {
            None => Err(refuse(
                Code::NoUpstream,
                "This secret has no upstream, so the proxy cannot use it; write it with an upstream first.".into(),
            )),
            Some(up) if !up.methods.is_empty() && !up.methods.iter().any(|m| m == req.method) => Err(refuse(
                Code::MethodNotPermitted,
                format!("This secret's upstream allows only {}.", up.methods.join(", ")),
            )),
            Some(up) if !path_allowed(&up.paths, req.path) => Err(refuse(
                Code::PathNotPermitted,
                format!("This secret's upstream allows only paths under {}.", up.paths.join(", ")),
            )),
            Some(up) => Ok(up.clone()),
        };
        let upstream = match decision {
            Ok(up) => up,
            Err(e) => {
                self.record_failure(EventKind::AccessDenied, p, meta, &item.name, Some(&item.owner), &e).await;
                return Err(e);
            }
        };
        // What would make the call impossible to send is refused before the use is counted or recorded.
        if let Err(e) = sendable(&upstream, req.query, None) {
            self.record_failure(EventKind::AccessDenied, p, meta, &item.name, Some(&item.owner), &e).await;
            return Err(e);
        }
        let value = self.open(p, meta, &item).await?;
        if let Err(e) = sendable(&upstream, None, Some(secrecy::ExposeSecret::expose_secret(&value))) {
            self.record_failure(EventKind::AccessDenied, p, meta, &item.name, Some(&item.owner), &e).await;
            return Err(e);
        }
        let at = OffsetDateTime::now_utc();
        if !item.limits.is_none()
            && let Count::Limited { retry_after } =
                self.store.count_use(&p.org_id, &item.owner, &item.name, item.limits, at).await?
        {
            let e = ApiError::RateLimited { retry_after };
            self.record_failure(EventKind::AccessDenied, p, meta, &item.name, Some(&item.owner), &e).await;
            return Err(e);
        }
        let base_path = crate::rules::parse_base_url(&upstream.base_url).map(|b| b.path).unwrap_or_default();
        let mut path = format!("{base_path}{}", req.path);
        if path.len() > MAX_AUDITED_PATH {
            let mut cut = MAX_AUDITED_PATH;
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
        }
        let event = Self::event(EventKind::Used, p, meta, &item.name, Some(&item.owner), "success")
            .with_detail(format!("method={} host={} path={path}", req.method, upstream.host()));
        // Fail closed: nothing is sent before the use is on record.
        self.audit_first(self.store.put_audit(event.to_item(at, self.audit_retention_days))).await?;
        Ok(Usable { item, upstream, value })
    }
}

/// Whether the call can be sent: the caller's query does not name the parameter the vault sets, and the
/// value fits where it is injected (a header carries no control character).
fn sendable(upstream: &Upstream, query: Option<&str>, value: Option<&str>) -> Result<(), ApiError> {
    match (&upstream.inject, query, value) {
        (Injection::Query { name }, Some(q), _) => rules::check_query_leaves_out(q, name),
        (Injection::Header { template, .. }, _, Some(v)) => rules::fill_header(template, v).map(drop),
        _ => Ok(()),
    }
}
