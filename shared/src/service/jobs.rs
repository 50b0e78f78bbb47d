//! Operator jobs, run from the `rotate-keys` and `shred-org` functions or the local `vault-ops` command,
//! never from a public route:
//! - rewrap: move every secret's data key to the active master key, leaving values untouched;
//! - key usage: count secrets per master key id (the check before an old key leaves the ring);
//! - shred: destroy an organization's salt, then its secrets.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;

use super::Vault;
use crate::crypto::Binding;
use crate::error::{ApiError, Code};
use crate::model::{AuditEvent, EventKind, Owner, Principal, RequestMeta, TokenKind};
use crate::store::{ToItem, base_name, event_id};

/// Organizations read per page of the registry.
const ORG_PAGE: i32 = 100;
/// Passes the rewrap job makes, after the first, over organizations where values written meanwhile
/// still name a retired key.
const VERIFY_PASSES: usize = 2;
/// Most passes the shredder makes over an organization's secrets.
const SHRED_PASSES: usize = 5;

/// Bounds on one run of the rewrap job; a run that stops early is resumed by running it again.
#[derive(Debug, Clone, Default)]
pub struct RewrapOptions {
    /// Stop once this many secrets have been rewrapped.
    pub max_rewraps: Option<usize>,
    /// Stop before this instant (a Lambda invocation's deadline, less a margin).
    pub deadline: Option<Instant>,
}

/// What a rewrap run did. Every secret seen lands in exactly one of the four outcome counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RewrapReport {
    pub active_key_id: String,
    /// Organizations finished in this run.
    pub organizations: usize,
    /// Stored values seen: each secret's current version and its retained earlier versions.
    pub secrets_seen: usize,
    /// Data keys moved to the active key by this run.
    pub rewrapped: usize,
    /// Already under the active key.
    pub already_current: usize,
    /// Updated (or deleted) by the API while the job ran: its new data key is already current.
    pub changed_meanwhile: usize,
    /// Could not be opened (a key id missing from the ring, or a failed integrity check); logged.
    pub failed: usize,
    /// Stored values still under a retired key at the end (written under it while the run went on).
    pub remaining: usize,
    /// False when the run stopped early, or values still name a retired key: run the job again.
    pub complete: bool,
}

/// What shredding an organization did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShredReport {
    pub org_id: String,
    pub salt_destroyed: bool,
    pub secrets_deleted: usize,
}

enum Stop {
    Limit,
    Failed(ApiError),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Self::Failed(e)
    }
}

fn operator(org_id: &str) -> Principal {
    Principal {
        org_id: org_id.to_owned(),
        client_id: "token-vault-operator".into(),
        kind: TokenKind::Machine,
        scopes: Default::default(),
        admin: true,
    }
}

fn job_meta(job: &str) -> RequestMeta {
    RequestMeta {
        request_id: format!("{job}-{}", event_id(OffsetDateTime::now_utc())),
        source_ip: None,
        user_agent: Some(format!("token-vault {job}")),
    }
}

impl Vault {
    async fn record_job(
        &self,
        kind: EventKind,
        org_id: &str,
        meta: &RequestMeta,
        detail: String,
    ) -> Result<(), ApiError> {
        let p = operator(org_id);
        let event = AuditEvent {
            kind,
            principal: &p,
            meta,
            secret_name: "*",
            owner: None,
            outcome: "success",
            detail: Some(detail),
        };
        self.store.put_audit(event.to_item(OffsetDateTime::now_utc(), self.audit_retention_days)).await
    }

    fn is_active(&self, key_id: &str) -> Result<bool, ApiError> {
        let ring = self.keyring()?;
        Ok(ring.find(key_id).is_some_and(|k| k.id() == ring.active().id()))
    }

    /// Moves every secret's data key to the active master key, organization by organization.
    ///
    /// Safe while the API serves traffic: each data key is replaced only if the secret still holds the
    /// one read (a conditional write), so an update made meanwhile is never overwritten. Idempotent, and
    /// resumable: finished organizations are checkpointed, and a rerun skips secrets already current.
    /// Every organization whose data keys a run moved gets a `vault.key.rotated` audit event, an
    /// organization the run stopped in included (`partial=true`). The run says `complete` only after a
    /// check that no stored value of any organization still names a retired key: values written under
    /// the old key while it ran (by a container that had not yet seen the new ring) are moved by further
    /// passes, and while some remain the report says how many.
    pub async fn rewrap_all(&self, opts: &RewrapOptions, progress: impl Fn(&str)) -> Result<RewrapReport, ApiError> {
        let active = self.keyring()?.active().id().to_owned();
        let meta = job_meta("rotate-keys");
        let mut report = RewrapReport { active_key_id: active.clone(), ..RewrapReport::default() };
        let mut after = match self.store.get_checkpoint().await? {
            Some((key_id, last_org)) if key_id == active => {
                progress(&format!("resuming after organization {last_org:?}"));
                Some(last_org)
            }
            _ => None,
        };
        loop {
            let (orgs, more) = self.store.list_orgs(after.as_deref(), ORG_PAGE).await?;
            for org in &orgs {
                if !self.rewrap_and_audit(org, opts, &meta, &mut report, &progress).await? {
                    return Ok(report);
                }
                self.store.put_checkpoint(&active, org).await?;
                report.organizations += 1;
            }
            match more {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        for pass in 0..=VERIFY_PASSES {
            let stale = self.orgs_under_retired_keys().await?;
            report.remaining = stale.iter().map(|(_, n)| n).sum();
            if stale.is_empty() || pass == VERIFY_PASSES {
                break;
            }
            progress(&format!("{} values written under a retired key meanwhile; another pass", report.remaining));
            for (org, _) in &stale {
                if !self.rewrap_and_audit(org, opts, &meta, &mut report, &progress).await? {
                    return Ok(report);
                }
            }
        }
        if report.remaining > 0 {
            progress("values still name a retired key: run the job again once every container has the new ring");
            return Ok(report);
        }
        self.store.delete_checkpoint().await?;
        report.complete = true;
        Ok(report)
    }

    /// One organization's pass, audited when it moved or failed any key (also when it stopped early).
    /// Returns false when the run must stop (its limit was reached).
    async fn rewrap_and_audit(
        &self,
        org: &str,
        opts: &RewrapOptions,
        meta: &RequestMeta,
        report: &mut RewrapReport,
        progress: &impl Fn(&str),
    ) -> Result<bool, ApiError> {
        let before = report.clone();
        let outcome = self.rewrap_org(org, opts, report).await;
        let stopped = match outcome {
            Ok(()) => false,
            Err(Stop::Limit) => true,
            Err(Stop::Failed(e)) => return Err(e),
        };
        let detail = format!(
            "toKeyId={} rewrapped={} alreadyCurrent={} changedMeanwhile={} failed={}{}",
            report.active_key_id,
            report.rewrapped - before.rewrapped,
            report.already_current - before.already_current,
            report.changed_meanwhile - before.changed_meanwhile,
            report.failed - before.failed,
            if stopped { " partial=true" } else { "" }
        );
        // Only an organization whose keys this pass touched gets an event; a pass with nothing to do (a
        // scheduled run, or a rerun) records nothing.
        if report.rewrapped > before.rewrapped || report.failed > before.failed {
            self.record_job(EventKind::KeyRotated, org, meta, detail.clone()).await?;
        }
        progress(&format!("organization {org:?}: {detail}"));
        if stopped {
            progress("stopping early; run the job again to resume");
        }
        Ok(!stopped)
    }

    /// The organizations with stored values whose data key is under a retired master key, and how many.
    async fn orgs_under_retired_keys(&self) -> Result<Vec<(String, usize)>, ApiError> {
        let mut stale = Vec::new();
        for (org, usage) in self.key_usage_by_org().await? {
            let mut count = 0;
            for (key_id, n) in usage {
                if !self.is_active(&key_id)? {
                    count += n;
                }
            }
            if count > 0 {
                stale.push((org, count));
            }
        }
        Ok(stale)
    }

    /// Stored values per master key id (as their envelopes name it), organization by organization, from
    /// the `by-org` index.
    async fn key_usage_by_org(&self) -> Result<Vec<(String, BTreeMap<String, usize>)>, ApiError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (orgs, more) = self.store.list_orgs(after.as_deref(), ORG_PAGE).await?;
            for org in orgs {
                let mut usage = BTreeMap::new();
                let mut start = None;
                loop {
                    let (page, next) = self.store.org_secret_keys(&org, start).await?;
                    for (_, _, key_id) in page {
                        *usage.entry(key_id).or_insert(0) += 1;
                    }
                    match next {
                        Some(key) => start = Some(key),
                        None => break,
                    }
                }
                out.push((org, usage));
            }
            match more {
                Some(last) => after = Some(last),
                None => return Ok(out),
            }
        }
    }

    async fn rewrap_org(&self, org_id: &str, opts: &RewrapOptions, report: &mut RewrapReport) -> Result<(), Stop> {
        let mut start = None;
        loop {
            let (page, next) = self.store.org_secret_keys(org_id, start).await?;
            for (owner, name, key_id) in page {
                report.secrets_seen += 1;
                if self.is_active(&key_id)? {
                    report.already_current += 1;
                    continue;
                }
                let limit_hit = opts.max_rewraps.is_some_and(|max| report.rewrapped >= max)
                    || opts.deadline.is_some_and(|d| Instant::now() >= d);
                if limit_hit {
                    report.secrets_seen -= 1;
                    return Err(Stop::Limit);
                }
                self.rewrap_one(org_id, &owner, &name, report).await?;
            }
            match next {
                Some(key) => start = Some(key),
                None => return Ok(()),
            }
        }
    }

    async fn rewrap_one(
        &self,
        org_id: &str,
        owner: &Owner,
        name: &str,
        report: &mut RewrapReport,
    ) -> Result<(), ApiError> {
        let Some(item) = self.store.get_secret(org_id, owner, name).await? else {
            report.changed_meanwhile += 1;
            return Ok(());
        };
        let Some(envelope) = item.envelope else { return Err(ApiError::internal("secret read without its envelope")) };
        if self.is_active(&envelope.key_id)? {
            report.changed_meanwhile += 1;
            return Ok(());
        }
        // A retained version (`<name>#v<n>`) is sealed for its secret's name.
        let binding = Binding::new(org_id, owner, base_name(name)).with_usage(item.access, item.upstream.as_ref());
        let moved = async {
            let old = self.org_key(org_id, Some(&envelope.key_id), false).await?;
            let new = self.org_key(org_id, None, false).await?;
            old.rewrap(&new, binding, &envelope).map_err(|e| ApiError::Integrity(Box::new(e)))
        }
        .await;
        match moved {
            Ok(moved) => {
                if self.store.replace_wrapped_key(org_id, owner, name, &envelope, &moved).await? {
                    report.rewrapped += 1;
                } else {
                    report.changed_meanwhile += 1;
                }
                Ok(())
            }
            Err(e @ ApiError::Integrity(_)) => {
                tracing::error!(org = org_id, secret = name, error = %crate::error::chain(&e), "cannot rewrap secret");
                report.failed += 1;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Counts stored values per master key id (as their envelopes name it), across every organization.
    /// An old key may leave the ring once it counts zero.
    pub async fn key_usage(&self) -> Result<BTreeMap<String, usize>, ApiError> {
        let mut usage = BTreeMap::new();
        for (_, org_usage) in self.key_usage_by_org().await? {
            for (key_id, n) in org_usage {
                *usage.entry(key_id).or_insert(0) += n;
            }
        }
        Ok(usage)
    }

    /// Crypto-shreds an organization: destroys its salt (every secret of it becomes permanently
    /// unreadable, backups included), deletes its secret items, and records `vault.org.shredded`.
    /// Refuses unless `confirm` repeats the organization id.
    pub async fn shred_org(&self, org_id: &str, confirm: &str) -> Result<ShredReport, ApiError> {
        if org_id.is_empty() || confirm != org_id {
            return Err(ApiError::bad_request(
                Code::ConfirmationRequired,
                "Shredding is permanent: repeat the organization id as the confirmation.",
            ));
        }
        let salt_destroyed = self.store.delete_salt(org_id).await?;
        self.forget_org(org_id).await;
        // The index is eventually consistent: pass over it again until a pass finds nothing, so a secret
        // written just before the salt went is not left behind.
        let mut secrets_deleted = 0;
        for _ in 0..SHRED_PASSES {
            let mut found = 0;
            let mut start = None;
            loop {
                let (page, next) = self.store.org_secret_keys(org_id, start).await?;
                for (owner, name, _) in page {
                    self.store.delete_secret_item(org_id, &owner, &name).await?;
                    found += 1;
                }
                match next {
                    Some(key) => start = Some(key),
                    None => break,
                }
            }
            secrets_deleted += found;
            if found == 0 {
                break;
            }
        }
        let meta = job_meta("shred-org");
        let detail = format!("saltDestroyed={salt_destroyed} secretsDeleted={secrets_deleted}");
        self.record_job(EventKind::OrgShredded, org_id, &meta, detail).await?;
        tracing::warn!(org = org_id, secrets_deleted, salt_destroyed, "organization shredded");
        Ok(ShredReport { org_id: org_id.to_owned(), salt_destroyed, secrets_deleted })
    }
}
