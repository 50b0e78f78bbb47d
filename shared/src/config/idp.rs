//! Which identity provider issues the tokens, and the claim rules that follow from it (README,
//! "Identity providers"). `auth::claims` applies them.

use super::ConfigError;

/// The identity provider that issues the tokens (`VAULT_IDP_PROFILE`): it fixes which claim carries
/// the organization, what marks a machine (client-credentials) token, and where the admin permission
/// comes from, each from claims the provider sets and its users cannot (README, "Identity providers").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpProfile {
    Auth0,
    Okta,
    Entra,
    Cognito,
    Keycloak,
    /// A generic RFC 9068 provider: the operator names the machine marker and the admin claim.
    Rfc9068,
}

impl IdpProfile {
    pub(super) fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "auth0" => Self::Auth0,
            "okta" => Self::Okta,
            "entra" => Self::Entra,
            "cognito" => Self::Cognito,
            "keycloak" => Self::Keycloak,
            "rfc9068" => Self::Rfc9068,
            _ => return None,
        })
    }
}

/// How a generic RFC 9068 provider marks a machine token (`VAULT_MACHINE_CLAIM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineRule {
    /// `name=value`: the token is a machine's when that claim has that value (`gty=client-credentials`).
    Claim { name: String, value: String },
    /// `sub=client_id`: the operator attests that the provider keeps client ids and user subjects apart
    /// (RFC 9068 section 5), so a `sub` equal to the `client_id` is a machine.
    SubIsClientId,
}

/// The claim rules of one deployment.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub profile: IdpProfile,
    /// `VAULT_ORG_CLAIM`: the claim carrying the organization (`tid` for Entra, else `org_id`).
    pub org_claim: String,
    /// `VAULT_ADMIN_VALUE`: the permission, role or group that makes an admin (`vault:admin`).
    pub admin_value: String,
    /// `VAULT_ADMIN_CLAIM`: Okta's groups claim (`groups`), RFC 9068's role claim (`roles`), Keycloak's
    /// client whose roles count (the audience).
    pub admin_claim: String,
    /// `VAULT_MACHINE_ADMIN_CLAIM`: Okta's claim (from the app profile) that makes a machine an admin
    /// (`vault_roles`).
    pub machine_admin_claim: String,
    /// RFC 9068 only: what marks a machine token.
    pub machine_rule: Option<MachineRule>,
    /// Cognito only (its access tokens have no `aud`): the app clients whose tokens are accepted.
    pub allowed_clients: Vec<String>,
    /// Cognito only: the resource server's prefix of its scopes (`vault/` of `vault/payments`).
    pub scope_prefix: Option<String>,
}

impl ClaimRules {
    /// The rules of `profile` with its defaults (the local stack's HS256 tokens are Auth0-shaped).
    pub fn defaults(profile: IdpProfile, audience: &str) -> Self {
        let (org_claim, admin_claim) = match profile {
            IdpProfile::Entra => ("tid", "roles"),
            IdpProfile::Okta => ("org_id", "groups"),
            IdpProfile::Rfc9068 => ("org_id", "roles"),
            IdpProfile::Keycloak => ("org_id", audience),
            IdpProfile::Auth0 | IdpProfile::Cognito => ("org_id", "permissions"),
        };
        Self {
            profile,
            org_claim: org_claim.into(),
            admin_value: crate::model::ADMIN_PERMISSION.into(),
            admin_claim: admin_claim.into(),
            machine_admin_claim: "vault_roles".into(),
            machine_rule: None,
            allowed_clients: Vec::new(),
            scope_prefix: None,
        }
    }

    pub(super) fn from_lookup(
        get: &impl Fn(&'static str) -> Option<String>,
        profile: IdpProfile,
        audience: &str,
    ) -> Result<Self, ConfigError> {
        let mut rules = Self::defaults(profile, audience);
        if let Some(v) = get("VAULT_ORG_CLAIM") {
            rules.org_claim = v;
        }
        if let Some(v) = get("VAULT_ADMIN_VALUE") {
            rules.admin_value = v;
        }
        if let Some(v) = get("VAULT_ADMIN_CLAIM") {
            rules.admin_claim = v;
        }
        if let Some(v) = get("VAULT_MACHINE_ADMIN_CLAIM") {
            rules.machine_admin_claim = v;
        }
        rules.scope_prefix = get("VAULT_SCOPE_PREFIX");
        rules.allowed_clients = get("VAULT_ALLOWED_CLIENT_IDS")
            .map(|v| v.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        rules.machine_rule = match get("VAULT_MACHINE_CLAIM") {
            None => None,
            Some(v) if v == "sub=client_id" => Some(MachineRule::SubIsClientId),
            Some(v) => match v.split_once('=') {
                Some((name, value)) if !name.is_empty() && !value.is_empty() => {
                    Some(MachineRule::Claim { name: name.into(), value: value.into() })
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "VAULT_MACHINE_CLAIM",
                        why: "must be claim=value (such as gty=client-credentials) or sub=client_id".into(),
                    });
                }
            },
        };
        match profile {
            IdpProfile::Rfc9068 if rules.machine_rule.is_none() => Err(ConfigError::Invalid {
                name: "VAULT_MACHINE_CLAIM",
                why: "the rfc9068 profile has no standard machine marker: name one (claim=value or sub=client_id)"
                    .into(),
            }),
            IdpProfile::Cognito if rules.allowed_clients.is_empty() => Err(ConfigError::Invalid {
                name: "VAULT_ALLOWED_CLIENT_IDS",
                why: "Cognito access tokens carry no audience: list the app client ids to accept".into(),
            }),
            _ => Ok(rules),
        }
    }
}
