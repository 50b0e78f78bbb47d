//! From a verified token's claims to the principal, by the rules of the configured identity provider.
//!
//! Each decision (organization, client, machine or user, admin) reads only claims that provider sets
//! and its users cannot: Auth0's `gty` and `permissions` (never `scope` for a user), Okta's `uid` and
//! `cid`, Entra's `idtyp`, `tid`, `oid` and `roles`, Cognito's `username` and `cognito:groups`,
//! Keycloak's service-account `client_id` and client roles, and for a generic RFC 9068 provider what
//! the operator names. When the claims disagree with each other, the token is refused: no guess.

use std::collections::{BTreeSet, HashMap};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::config::{ClaimRules, IdpProfile, MachineRule};
use crate::error::ApiError;
use crate::model::{Principal, TokenKind};
use crate::rules::is_valid_id;

/// Entra's tenant of personal Microsoft accounts: every consumer user shares it, so it is no
/// organization.
const MSA_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// A token's claims, each at most once: a repeated claim refuses the token (a parser that took the
/// first and another that took the last would disagree about who is calling).
#[derive(Debug, Default)]
pub(crate) struct Claims(HashMap<String, Value>);

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Unique;
        impl<'de> Visitor<'de> for Unique {
            type Value = Claims;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of claims")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
                let mut out = HashMap::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if out.insert(key, value).is_some() {
                        return Err(serde::de::Error::custom("a claim is repeated"));
                    }
                }
                Ok(Claims(out))
            }
        }
        d.deserialize_map(Unique)
    }
}

fn malformed(claim: &str) -> ApiError {
    ApiError::invalid_token(&format!("its claim {claim} is malformed or of the wrong type"))
}

impl Claims {
    #[cfg(test)]
    pub(crate) fn from_json(v: Value) -> Self {
        match v {
            Value::Object(m) => Self(m.into_iter().collect()),
            _ => Self::default(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|v| !v.is_null())
    }

    /// A string claim (absent or null: `None`; another type refuses the token).
    fn str(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(malformed(name)),
        }
    }

    /// A list claim, as providers write them: an array of strings, or one space-separated string.
    fn list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned).collect()),
            Some(Value::Array(items)) => {
                items.iter().map(|i| i.as_str().map(str::to_owned).ok_or_else(|| malformed(name))).collect()
            }
            Some(_) => Err(malformed(name)),
        }
    }

    /// `iat`, a NumericDate (which may have a fraction).
    pub(crate) fn issued_at(&self) -> Result<Option<f64>, ApiError> {
        match self.0.get("iat") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(malformed("iat")),
        }
    }
}

/// An id claim that must be there and be a valid id.
fn id(value: Option<&str>, what: &str, claim: &str) -> Result<String, ApiError> {
    value
        .filter(|v| is_valid_id(v))
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid_token(&format!("it has no valid {what} ({claim})")))
}

/// The one value of two claims naming the same thing (`client_id` and `azp`): refused when both are
/// present and differ.
fn one_of<'a>(claims: &'a Claims, a: &str, b: &str) -> Result<Option<&'a str>, ApiError> {
    match (claims.str(a)?, claims.str(b)?) {
        (Some(x), Some(y)) if x != y => {
            Err(ApiError::invalid_token(&format!("its claims {a} and {b} name different clients")))
        }
        (x, y) => Ok(x.or(y)),
    }
}

/// What the profile found before the common checks: the organization, the client, the kind of token,
/// the scopes that gate secrets, and whether it is an admin.
struct Found {
    org: Option<String>,
    client: Option<String>,
    kind: Result<TokenKind, ApiError>,
    scopes: Vec<String>,
    admin: bool,
}

impl ClaimRules {
    /// The principal a verified token describes, or why it is refused (401).
    pub(crate) fn principal(&self, c: &Claims, header_typ: Option<&str>) -> Result<Principal, ApiError> {
        let found = match self.profile {
            IdpProfile::Auth0 => self.auth0(c)?,
            IdpProfile::Okta => self.okta(c)?,
            IdpProfile::Entra => self.entra(c)?,
            IdpProfile::Cognito => self.cognito(c)?,
            IdpProfile::Keycloak => self.keycloak(c)?,
            IdpProfile::Rfc9068 => self.rfc9068(c, header_typ)?,
        };
        let org_id = id(found.org.as_deref(), "organization", &self.org_claim)?;
        let client_id = id(found.client.as_deref(), "OAuth client", "client_id")?;
        let kind = found.kind?;
        let scopes: BTreeSet<String> = found.scopes.into_iter().collect();
        Ok(Principal { org_id, client_id, kind, scopes, admin: found.admin })
    }

    fn user(&self, c: &Claims, claim: &str) -> Result<TokenKind, ApiError> {
        Ok(TokenKind::User { user_id: id(c.str(claim)?, "subject", claim)? })
    }

    fn org(&self, c: &Claims) -> Result<Option<String>, ApiError> {
        Ok(c.str(&self.org_claim)?.map(str::to_owned))
    }

    fn holds_admin(&self, values: &[String]) -> bool {
        values.contains(&self.admin_value)
    }

    /// Auth0: a machine's token says `gty: client-credentials` (the RFC 9068 dialect, which has no
    /// `gty`, makes its `sub` the client id plus `@clients`, which no user id can be: user ids hold a
    /// `|`). Admin comes from `permissions` (RBAC with "Add Permissions in the Access Token"), never
    /// from a user's `scope`, which any user may ask for; a machine's `scope` is its client grant, set by
    /// the tenant's admin.
    fn auth0(&self, c: &Claims) -> Result<Found, ApiError> {
        let client = one_of(c, "client_id", "azp")?.map(str::to_owned);
        let sub = c.str("sub")?;
        let machine = match c.str("gty")? {
            Some(gty) => gty == "client-credentials",
            None => client.as_deref().is_some_and(|cl| sub == Some(format!("{cl}@clients").as_str())),
        };
        let scopes = c.list("scope")?;
        let permissions = c.list("permissions")?;
        let admin = self.holds_admin(&permissions) || (machine && self.holds_admin(&scopes));
        let kind = if machine { Ok(TokenKind::Machine) } else { self.user(c, "sub") };
        Ok(Found { org: self.org(c)?, client, kind, scopes, admin })
    }

    /// Okta (a custom authorization server): `uid` is there exactly when a user is bound to the token,
    /// so a machine's token has none, and its `sub` is its client id (`cid`). A user is its `uid` (its
    /// `sub` is a login name, which changes). Admin: a user in the admin group (the groups claim), a
    /// machine whose app profile says so.
    fn okta(&self, c: &Claims) -> Result<Found, ApiError> {
        let client = c.str("cid")?.map(str::to_owned);
        let machine = !c.has("uid") && client.is_some() && c.str("sub")? == client.as_deref();
        let scopes = c.list("scp")?;
        let admin = if machine {
            self.holds_admin(&c.list(&self.machine_admin_claim)?)
        } else {
            self.holds_admin(&c.list(&self.admin_claim)?)
        };
        let kind = if machine { Ok(TokenKind::Machine) } else { self.user(c, "uid") };
        Ok(Found { org: self.org(c)?, client, kind, scopes, admin })
    }

    /// Microsoft Entra ID (v2.0 tokens): an app-only token says `idtyp: app` (an optional claim the
    /// operator enables) and carries no delegated `scp`; a user is its `oid` (its `sub` differs per
    /// application). The organization is the tenant, never the shared tenant of personal accounts.
    /// Admin is an app role (`roles`), which only the tenant's admins assign.
    fn entra(&self, c: &Claims) -> Result<Found, ApiError> {
        if c.str("ver")? != Some("2.0") {
            return Err(ApiError::invalid_token("it is not an Entra v2.0 access token (ver)"));
        }
        let client = c.str("azp")?.map(str::to_owned);
        if client.is_none() {
            return Err(ApiError::invalid_token("it names no client (azp): an ID token is not an access token"));
        }
        let org = self.org(c)?;
        if org.as_deref() == Some(MSA_TENANT) {
            return Err(ApiError::invalid_token("its tenant is the one of personal Microsoft accounts"));
        }
        let delegated = c.has("scp");
        let machine = match c.str("idtyp")? {
            Some("app") if delegated => {
                return Err(ApiError::invalid_token("it says app-only (idtyp) but carries delegated scopes (scp)"));
            }
            Some("app") => true,
            Some(_) => false,
            None if delegated => false,
            None => {
                return Err(ApiError::invalid_token(
                    "it is app-only or delegated without saying which: enable the idtyp optional claim",
                ));
            }
        };
        let roles = c.list("roles")?;
        let scopes = if machine { roles.clone() } else { c.list("scp")? };
        let admin = self.holds_admin(&roles);
        let kind = if machine { Ok(TokenKind::Machine) } else { self.user(c, "oid") };
        Ok(Found { org, client, kind, scopes, admin })
    }

    /// Amazon Cognito: only access tokens (`token_use: access`), from the app clients listed (its access
    /// tokens carry no `aud`). A machine's token has no `username` and its `sub` is its client id. Admin:
    /// a user in the admin group (`cognito:groups`, changed by admin APIs only), a machine with the admin
    /// scope (the app client's allowed scopes are set by the pool's admin).
    fn cognito(&self, c: &Claims) -> Result<Found, ApiError> {
        if c.str("token_use")? != Some("access") {
            return Err(ApiError::invalid_token("it is not a Cognito access token (token_use)"));
        }
        let client = c.str("client_id")?.map(str::to_owned);
        if !client.as_deref().is_some_and(|cl| self.allowed_clients.iter().any(|a| a == cl)) {
            return Err(ApiError::invalid_token("its app client is not one this vault accepts"));
        }
        let machine = !c.has("username") && c.str("sub")? == client.as_deref();
        let prefix = self.scope_prefix.as_deref().unwrap_or("");
        let scopes: Vec<String> = c
            .list("scope")?
            .into_iter()
            .map(|s| if prefix.is_empty() { s } else { s.strip_prefix(prefix).map(str::to_owned).unwrap_or(s) })
            .collect();
        let admin = if machine { self.holds_admin(&scopes) } else { self.holds_admin(&c.list("cognito:groups")?) };
        let kind = if machine { Ok(TokenKind::Machine) } else { self.user(c, "sub") };
        Ok(Found { org: self.org(c)?, client, kind, scopes, admin })
    }

    /// Keycloak: only access tokens (`typ: Bearer`). A service account's token carries the `client_id`
    /// session note equal to `azp` and the service account's own user name (`service-account-<client>`);
    /// the user-name prefix alone proves nothing. The organization of a user is its one `organization`
    /// (Keycloak 26; more than one refuses the token), of a service account the configured claim. Admin
    /// is a role of the vault's client.
    fn keycloak(&self, c: &Claims) -> Result<Found, ApiError> {
        if c.str("typ")? != Some("Bearer") {
            return Err(ApiError::invalid_token("it is not a Keycloak access token (typ)"));
        }
        let client = c.str("azp")?.map(str::to_owned);
        let machine = client.as_deref().is_some_and(|azp| {
            matches!(c.str("client_id"), Ok(Some(id)) if id == azp)
                && matches!(c.str("preferred_username"),
                    Ok(Some(name)) if name == format!("service-account-{}", azp.to_lowercase()))
        });
        let org = match c.0.get("organization") {
            None | Some(Value::Null) => self.org(c)?,
            Some(Value::Array(orgs)) => match orgs.as_slice() {
                [Value::String(one)] => Some(one.clone()),
                _ => return Err(ApiError::invalid_token("it names no organization, or more than one")),
            },
            Some(Value::Object(orgs)) => match orgs.iter().collect::<Vec<_>>().as_slice() {
                [(alias, detail)] => Some(detail["id"].as_str().unwrap_or(alias).to_owned()),
                _ => return Err(ApiError::invalid_token("it names no organization, or more than one")),
            },
            Some(_) => return Err(malformed("organization")),
        };
        let roles = match c.0.get("resource_access").and_then(|r| r.get(&self.admin_claim)).and_then(|r| r.get("roles"))
        {
            None => Vec::new(),
            Some(Value::Array(roles)) => roles.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect(),
            Some(_) => return Err(malformed("resource_access")),
        };
        let admin = self.holds_admin(&roles);
        let kind = if machine { Ok(TokenKind::Machine) } else { self.user(c, "sub") };
        Ok(Found { org, client, kind, scopes: c.list("scope")?, admin })
    }

    /// A generic RFC 9068 provider: `typ: at+jwt`, the client in `client_id`, a machine by the rule the
    /// operator named, admin from the claim the operator named (`roles`, `groups`, `entitlements` or
    /// `permissions`), never from `scope`.
    fn rfc9068(&self, c: &Claims, header_typ: Option<&str>) -> Result<Found, ApiError> {
        if !header_typ.is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"))
        {
            return Err(ApiError::invalid_token("it is not an RFC 9068 access token (typ at+jwt)"));
        }
        let client = c.str("client_id")?.map(str::to_owned);
        let machine = match &self.machine_rule {
            Some(MachineRule::Claim { name, value }) => c.str(name)? == Some(value.as_str()),
            Some(MachineRule::SubIsClientId) => client.is_some() && c.str("sub")? == client.as_deref(),
            None => false,
        };
        let admin = self.holds_admin(&c.list(&self.admin_claim)?);
        let kind = if machine { Ok(TokenKind::Machine) } else { self.user(c, "sub") };
        Ok(Found { org: self.org(c)?, client, kind, scopes: c.list("scope")?, admin })
    }
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod tests;
