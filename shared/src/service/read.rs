//! Reads: one secret (or a retained version), a batch, and listings. No value leaves without its audit
//! event stored (fail closed).

use secrecy::SecretString;
use time::OffsetDateTime;

use super::Vault;
use crate::error::{ApiError, Code};
use crate::model::{EventKind, Owner, Principal, RequestMeta};
use crate::policy;
use crate::rules::RETAINED_VERSIONS;
use crate::store::{SecretItem, ToItem};

/// What a batch read returned: values, and the names it could not return with why.
#[derive(Debug, Default)]
pub struct BatchRead {
    pub secrets: Vec<SecretWithValue>,
    pub errors: Vec<(String, ApiError)>,
}

/// A secret returned with its value.
#[derive(Debug)]
pub struct SecretWithValue {
    pub item: SecretItem,
    pub value: SecretString,
}

/// Where a listing resumes: the index of the owner partition, the last name returned and, in an
/// organization-wide listing, the client that name belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    #[serde(rename = "o")]
    pub owner: usize,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// Whose secrets a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListTarget {
    /// The caller's own: a user's user-level secrets then its client's app-level ones; an M2M token's
    /// client's app-level secrets.
    Own,
    /// One client's app-level secrets (admins only).
    Client(String),
    /// Every app-level secret of the organization, across clients (admins only).
    Organization,
}

/// One page of a listing.
#[derive(Debug)]
pub struct ListPage {
    pub secrets: Vec<SecretItem>,
    pub next: Option<Cursor>,
}

impl Vault {
    /// The live secret `name` of the first of `owners` (most specific first) that has one, both read
    /// at once.
    pub(super) async fn live_secret(
        &self,
        p: &Principal,
        owners: &[Owner],
        name: &str,
    ) -> Result<SecretItem, ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let candidates = match owners {
            [only] => vec![self.store.get_secret(&p.org_id, only, name).await?],
            [first, second] => {
                let (a, b) = tokio::try_join!(
                    self.store.get_secret(&p.org_id, first, name),
                    self.store.get_secret(&p.org_id, second, name)
                )?;
                vec![a, b]
            }
            _ => return Err(ApiError::internal("unexpected number of read owners")),
        };
        candidates.into_iter().flatten().find(|s| !s.is_expired(now)).ok_or(ApiError::NotFound)
    }

    /// Reads a secret's value (the current version, or a retained earlier one): the caller's own,
    /// else its client's app-level one.
    pub async fn get_secret(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        name: &str,
        client_id: Option<&str>,
        version: Option<u64>,
    ) -> Result<SecretWithValue, ApiError> {
        let owners = self.allowed(policy::read_owners(p, client_id), p, meta, name).await?;
        let current = self.live_secret(p, &owners, name).await?;
        self.check_scope(p, meta, &current).await?;
        // A use-only secret returns no value, from any of its versions.
        self.check_readable(p, meta, &current).await?;
        let item = match version {
            None => current,
            Some(v) if v == current.version => current,
            Some(v) => {
                let old = self.retained_version(p, &current, v).await?;
                self.check_scope(p, meta, &old).await?;
                self.check_readable(p, meta, &old).await?;
                old
            }
        };
        let value = self.open(p, meta, &item).await?;
        let mut event = Self::event(EventKind::Retrieved, p, meta, name, Some(&item.owner), "success");
        if version.is_some() {
            event = event.with_detail(format!("version={}", item.version));
        }
        // Fail closed: no value leaves without its audit event stored.
        self.audit_first(self.store.put_audit(event.to_item(OffsetDateTime::now_utc(), self.audit_retention_days)))
            .await?;
        Ok(SecretWithValue { item, value })
    }

    /// A secret's versions, newest first: the current one and every earlier one still retained, metadata
    /// only (never a value, of any access mode). Shown to whoever may list the secret's owner, as a listing
    /// shows the current version's metadata.
    pub async fn list_versions(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        name: &str,
        client_id: Option<&str>,
    ) -> Result<Vec<SecretItem>, ApiError> {
        let owners = self.allowed(policy::read_owners(p, client_id), p, meta, name).await?;
        let current = self.live_secret(p, &owners, name).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut records: Vec<SecretItem> = self
            .store
            .version_records(&p.org_id, &current.owner, name)
            .await?
            .into_iter()
            // The same rules as a read of `?version=N`: retained, of this lifetime, not expired.
            .filter(|o| o.version < current.version && o.version + RETAINED_VERSIONS > current.version)
            .filter(|o| o.lifetime == current.lifetime && o.created_at == current.created_at && !o.is_expired(now))
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.version));
        records.dedup_by_key(|r| r.version);
        let mut versions = Vec::with_capacity(records.len() + 1);
        versions.push(current);
        versions.extend(records);
        Ok(versions)
    }

    /// Reads up to [`MAX_BATCH_NAMES`] secrets in one `BatchGetItem`. Each name is returned with its
    /// value, or listed with why not (`not_found`, `insufficient_scope`, `integrity_error`). Every
    /// value returned and every refusal is audited, all in one transaction that must succeed first.
    pub async fn batch_get(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        names: &[String],
        client_id: Option<&str>,
    ) -> Result<BatchRead, ApiError> {
        let owners = self.allowed(policy::read_owners(p, client_id), p, meta, "*").await?;
        let keys: Vec<(Owner, String)> =
            names.iter().flat_map(|name| owners.iter().map(move |o| (o.clone(), name.clone()))).collect();
        let mut found = self.store.batch_get_secrets(&p.org_id, &keys).await?;
        let now = OffsetDateTime::now_utc();
        let ts = now.unix_timestamp();
        let mut read = BatchRead::default();
        let mut audits = Vec::new();
        for name in names {
            let live =
                owners.iter().filter_map(|o| found.remove(&(o.clone(), name.clone()))).find(|s| !s.is_expired(ts));
            let Some(item) = live else {
                read.errors.push((name.clone(), ApiError::NotFound));
                continue;
            };
            if let Err(e) = policy::check_scope(p, &item.scope).and_then(|()| policy::check_readable(item.access)) {
                audits.push(
                    Self::event(EventKind::AccessDenied, p, meta, name, Some(&item.owner), e.code().as_str())
                        .to_item(now, self.audit_retention_days),
                );
                read.errors.push((name.clone(), e));
                continue;
            }
            match self.open(p, meta, &item).await {
                Ok(value) => {
                    audits.push(
                        Self::event(EventKind::Retrieved, p, meta, name, Some(&item.owner), "success")
                            .with_detail("batch=true".into())
                            .to_item(now, self.audit_retention_days),
                    );
                    read.secrets.push(SecretWithValue { item, value });
                }
                Err(e @ ApiError::Integrity(_)) => read.errors.push((name.clone(), e)),
                Err(e) => return Err(e),
            }
        }
        // Fail closed: no value leaves without its audit event stored.
        self.audit_first(self.store.put_audits(audits)).await?;
        Ok(read)
    }

    /// Lists live secrets without values.
    pub async fn list_secrets(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        target: ListTarget,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<ListPage, ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let client_id = match &target {
            ListTarget::Own => None,
            ListTarget::Client(c) => Some(c.as_str()),
            ListTarget::Organization => {
                self.allowed(policy::org_listing(p), p, meta, "*").await?;
                return self.list_organization(p, limit, cursor, now).await;
            }
        };
        let owners = self.allowed(policy::read_owners(p, client_id), p, meta, "*").await?;
        let Cursor { owner: start, mut after, client } =
            cursor.unwrap_or(Cursor { owner: 0, after: None, client: None });
        if start >= owners.len() || client.is_some() {
            return Err(ApiError::bad_request(Code::InvalidNextToken, "nextToken does not belong to this listing."));
        }
        let mut secrets = Vec::new();
        for (i, owner) in owners.iter().enumerate().skip(start) {
            let want = limit - secrets.len();
            let (page, more) = self.store.list_secrets(&p.org_id, owner, after.take().as_deref(), want, now).await?;
            let filled = page.len() == want;
            secrets.extend(page);
            if filled {
                let next = if more {
                    Some(Cursor { owner: i, after: secrets.last().map(|s| s.name.clone()), client: None })
                } else if i + 1 < owners.len() {
                    Some(Cursor { owner: i + 1, after: None, client: None })
                } else {
                    None
                };
                return Ok(ListPage { secrets, next });
            }
        }
        Ok(ListPage { secrets, next: None })
    }

    async fn list_organization(
        &self,
        p: &Principal,
        limit: usize,
        cursor: Option<Cursor>,
        now: i64,
    ) -> Result<ListPage, ApiError> {
        let after = match &cursor {
            None => None,
            Some(Cursor { owner: 0, after: Some(name), client: Some(client) }) => {
                Some((client.as_str(), name.as_str()))
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    Code::InvalidNextToken,
                    "nextToken does not belong to this listing.",
                ));
            }
        };
        let (secrets, more) = self.store.list_org_app_secrets(&p.org_id, after, limit, now).await?;
        let next = match secrets.last() {
            Some(last) if more => {
                Some(Cursor { owner: 0, after: Some(last.name.clone()), client: Some(last.owner.id().to_owned()) })
            }
            _ => None,
        };
        Ok(ListPage { secrets, next })
    }
}
