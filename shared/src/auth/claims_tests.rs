//! Token fixtures in each provider's documented shape (README, "Identity providers"; sources there):
//! machines, users and admins, and the tokens a user of that provider could shape to pass for more.

use serde_json::{Value, json};

use super::*;
use crate::config::{ClaimRules, IdpProfile, MachineRule};

/// What a token comes to: (organization, client, user id or None for a machine, admin), or the
/// refusal.
type Outcome = Result<(String, String, Option<String>, bool), String>;

fn judge(rules: &ClaimRules, payload: Value, typ: Option<&str>) -> Outcome {
    rules
        .principal(&Claims::from_json(payload), typ)
        .map(|p| (p.user_id().map(str::to_owned), p))
        .map(|(user, p)| (p.org_id, p.client_id, user, p.admin))
        .map_err(|e| e.public_message())
}

fn ok(org: &str, client: &str, user: Option<&str>, admin: bool) -> Outcome {
    Ok((org.into(), client.into(), user.map(str::to_owned), admin))
}

fn rules(profile: IdpProfile) -> ClaimRules {
    ClaimRules::defaults(profile, "token-vault")
}

#[test]
fn auth0() {
    let r = rules(IdpProfile::Auth0);
    let org = "org_9ybsU1dN2dKfDkBi";
    let m2m =
        json!({"sub": "K1AU@clients", "azp": "K1AU", "gty": "client-credentials", "scope": "payments", "org_id": org});
    assert_eq!(judge(&r, m2m, None), ok(org, "K1AU", None, false));
    let admin =
        json!({"sub": "Adm@clients", "azp": "Adm", "gty": "client-credentials", "scope": "vault:admin", "org_id": org});
    assert_eq!(judge(&r, admin, None), ok(org, "Adm", None, true), "a machine's scope is its client grant");
    let user = json!({"sub": "auth0|602c", "azp": "WebApp", "scope": "openid payments", "permissions": ["payments"], "org_id": org});
    assert_eq!(judge(&r, user, None), ok(org, "WebApp", Some("auth0|602c"), false));
    let user_admin = json!({"sub": "auth0|602d", "azp": "WebApp", "scope": "openid vault:admin", "permissions": ["vault:admin"], "org_id": org});
    assert_eq!(judge(&r, user_admin, None), ok(org, "WebApp", Some("auth0|602d"), true));
    // RBAC off: a user asked for vault:admin in scope and got it there. Not an admin.
    let asked = json!({"sub": "auth0|6553", "azp": "WebApp", "scope": "openid vault:admin", "org_id": org});
    assert_eq!(judge(&r, asked, None), ok(org, "WebApp", Some("auth0|6553"), false));
    // A user whose sub equals its client id is still a user (no gty).
    let lookalike = json!({"sub": "WebApp", "azp": "WebApp", "org_id": org});
    assert_eq!(judge(&r, lookalike, None), ok(org, "WebApp", Some("WebApp"), false));
    // The RFC 9068 dialect: no gty, client_id, sub = client id + @clients.
    let dialect = json!({"sub": "K1AU@clients", "client_id": "K1AU", "scope": "payments", "org_id": org});
    assert_eq!(judge(&r, dialect, Some("at+jwt")), ok(org, "K1AU", None, false));
    let split =
        json!({"sub": "K1AU@clients", "client_id": "K1AU", "azp": "Other", "gty": "client-credentials", "org_id": org});
    assert!(judge(&r, split, None).unwrap_err().contains("name different clients"));
    let no_org = json!({"sub": "auth0|1", "azp": "WebApp"});
    assert!(judge(&r, no_org, None).unwrap_err().contains("organization"));
}

#[test]
fn okta() {
    let r = rules(IdpProfile::Okta);
    let m2m = json!({"cid": "0oa1billing", "sub": "0oa1billing", "scp": ["payments"], "org_id": "acme"});
    assert_eq!(judge(&r, m2m, None), ok("acme", "0oa1billing", None, false));
    let admin = json!({"cid": "0oa1admin", "sub": "0oa1admin", "scp": ["payments"], "org_id": "acme", "vault_roles": ["vault:admin"]});
    assert_eq!(judge(&r, admin, None), ok("acme", "0oa1admin", None, true));
    let user = json!({"cid": "0oa1web", "uid": "00uj", "sub": "jane@acme.com", "scp": ["openid", "payments"], "groups": ["vault-users"], "org_id": "acme"});
    assert_eq!(judge(&r, user, None), ok("acme", "0oa1web", Some("00uj"), false));
    let user_admin = json!({"cid": "0oa1web", "uid": "00uk", "sub": "ops@acme.com", "groups": ["vault-users", "vault:admin"], "org_id": "acme"});
    assert_eq!(judge(&r, user_admin, None), ok("acme", "0oa1web", Some("00uk"), true));
    // A user granted the scope by a permissive access policy, without the admin group.
    let scoped =
        json!({"cid": "0oa1web", "uid": "00ul", "sub": "x@acme.com", "scp": ["vault:admin"], "org_id": "acme"});
    assert_eq!(judge(&r, scoped, None), ok("acme", "0oa1web", Some("00ul"), false));
    // uid present: a user, even with sub equal to cid; and a user cannot set a machine's admin claim.
    let bound =
        json!({"cid": "0oa1web", "uid": "00um", "sub": "0oa1web", "vault_roles": ["vault:admin"], "org_id": "acme"});
    assert_eq!(judge(&r, bound, None), ok("acme", "0oa1web", Some("00um"), false));
}

#[test]
fn entra() {
    let r = rules(IdpProfile::Entra);
    let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let app = json!({"ver": "2.0", "azp": "9d3e", "idtyp": "app", "oid": "f13a", "sub": "f13a", "roles": ["Vault.Payments"], "tid": tid});
    assert_eq!(judge(&r, app, None), ok(tid, "9d3e", None, false));
    let app_admin =
        json!({"ver": "2.0", "azp": "9d3f", "idtyp": "app", "oid": "f13b", "roles": ["vault:admin"], "tid": tid});
    assert_eq!(judge(&r, app_admin, None), ok(tid, "9d3f", None, true));
    // A delegated token: scp is a space-separated string; the user is its oid, not its pairwise sub.
    let user = json!({"ver": "2.0", "azp": "5a1c", "oid": "0000-66f3", "sub": "AAAAIkzq", "scp": "payments vault.access", "tid": tid});
    assert_eq!(judge(&r, user.clone(), None), ok(tid, "5a1c", Some("0000-66f3"), false));
    let mut user_admin = user.clone();
    user_admin["roles"] = json!(["vault:admin"]);
    assert_eq!(judge(&r, user_admin, None), ok(tid, "5a1c", Some("0000-66f3"), true));
    let mut scope_admin = user;
    scope_admin["scp"] = json!("vault:admin");
    assert_eq!(judge(&r, scope_admin, None), ok(tid, "5a1c", Some("0000-66f3"), false), "a scope is no role");
    let both = json!({"ver": "2.0", "azp": "9d3e", "idtyp": "app", "scp": "payments", "oid": "x", "tid": tid});
    assert!(judge(&r, both, None).is_err());
    let msa = json!({"ver": "2.0", "azp": "5a1c", "oid": "x", "scp": "payments", "tid": "9188040d-6c67-4c5b-b112-36a304b66dad"});
    assert!(judge(&r, msa, None).unwrap_err().contains("personal"));
    let unsaid = json!({"ver": "2.0", "azp": "9d3e", "oid": "x", "roles": ["vault:admin"], "tid": tid});
    assert!(judge(&r, unsaid, None).unwrap_err().contains("idtyp"));
    let v1 = json!({"ver": "1.0", "appid": "9d3e", "idtyp": "app", "oid": "x", "tid": tid});
    assert!(judge(&r, v1, None).is_err());
    let id_token = json!({"ver": "2.0", "oid": "x", "scp": "payments", "tid": tid});
    assert!(judge(&r, id_token, None).unwrap_err().contains("azp"));
}

#[test]
fn cognito() {
    let mut r = rules(IdpProfile::Cognito);
    r.allowed_clients = vec!["1examplem2m".into(), "3exampleweb".into()];
    r.scope_prefix = Some("vault/".into());
    let m2m = json!({"sub": "1examplem2m", "token_use": "access", "scope": "vault/payments", "client_id": "1examplem2m", "org_id": "acme"});
    assert_eq!(judge(&r, m2m, None), ok("acme", "1examplem2m", None, false));
    let admin = json!({"sub": "1examplem2m", "token_use": "access", "scope": "vault/payments vault/vault:admin", "client_id": "1examplem2m", "org_id": "acme"});
    assert_eq!(judge(&r, admin, None), ok("acme", "1examplem2m", None, true));
    let user = json!({"sub": "aaaa-bbbb", "cognito:groups": ["vault-users"], "client_id": "3exampleweb", "token_use": "access", "scope": "openid vault/payments", "username": "jane", "org_id": "acme"});
    let p = r.principal(&Claims::from_json(user.clone()), None).unwrap();
    assert!(p.scopes.contains("payments") && p.scopes.contains("openid"), "the resource server's prefix is dropped");
    assert_eq!(judge(&r, user.clone(), None), ok("acme", "3exampleweb", Some("aaaa-bbbb"), false));
    let mut user_admin = user.clone();
    user_admin["cognito:groups"] = json!(["vault-users", "vault:admin"]);
    assert_eq!(judge(&r, user_admin, None), ok("acme", "3exampleweb", Some("aaaa-bbbb"), true));
    let mut scoped = user.clone();
    scoped["scope"] = json!("openid vault/vault:admin");
    assert_eq!(
        judge(&r, scoped, None),
        ok("acme", "3exampleweb", Some("aaaa-bbbb"), false),
        "a user's scope is no group"
    );
    let mut id_token = user.clone();
    id_token["token_use"] = json!("id");
    assert!(judge(&r, id_token, None).is_err());
    let mut other_client = user;
    other_client["client_id"] = json!("9unlisted");
    assert!(judge(&r, other_client, None).unwrap_err().contains("app client"));
}

#[test]
fn keycloak() {
    let r = rules(IdpProfile::Keycloak);
    let sa = json!({"sub": "bc2a72f4", "typ": "Bearer", "azp": "billing-worker", "scope": "payments",
        "resource_access": {"token-vault": {"roles": ["vault-user"]}}, "preferred_username": "service-account-billing-worker",
        "client_id": "billing-worker", "org_id": "acme"});
    assert_eq!(judge(&r, sa.clone(), None), ok("acme", "billing-worker", None, false));
    let mut sa_admin = sa.clone();
    sa_admin["resource_access"] = json!({"token-vault": {"roles": ["vault:admin"]}});
    assert_eq!(judge(&r, sa_admin, None), ok("acme", "billing-worker", None, true));
    let user = json!({"sub": "2d6f1b8e", "typ": "Bearer", "azp": "vault-portal", "scope": "openid payments", "preferred_username": "jane",
        "resource_access": {"token-vault": {"roles": ["vault-user"]}}, "organization": {"acme": {"id": "42c3e46f"}}});
    assert_eq!(judge(&r, user.clone(), None), ok("42c3e46f", "vault-portal", Some("2d6f1b8e"), false));
    let mut aliases = user.clone();
    aliases["organization"] = json!(["acme"]);
    assert_eq!(judge(&r, aliases, None), ok("acme", "vault-portal", Some("2d6f1b8e"), false));
    // A user named like a service account, without the service-account client_id note: a user.
    let mut lookalike = user.clone();
    lookalike["preferred_username"] = json!("service-account-vault-portal");
    assert_eq!(judge(&r, lookalike, None), ok("42c3e46f", "vault-portal", Some("2d6f1b8e"), false));
    let mut two = user.clone();
    two["organization"] = json!(["acme", "globex"]);
    assert!(judge(&r, two, None).unwrap_err().contains("more than one"));
    let mut realm_admin = user.clone();
    realm_admin["realm_access"] = json!({"roles": ["vault:admin"]});
    assert_eq!(
        judge(&r, realm_admin, None),
        ok("42c3e46f", "vault-portal", Some("2d6f1b8e"), false),
        "only the vault client's roles count"
    );
    let mut id_token = user;
    id_token["typ"] = json!("ID");
    assert!(judge(&r, id_token, None).is_err());
}

#[test]
fn rfc9068() {
    let mut r = rules(IdpProfile::Rfc9068);
    r.machine_rule = Some(MachineRule::Claim { name: "gty".into(), value: "client-credentials".into() });
    r.admin_claim = "permissions".into();
    let m2m =
        json!({"sub": "s6Bh", "client_id": "s6Bh", "gty": "client-credentials", "scope": "payments", "org_id": "acme"});
    assert_eq!(judge(&r, m2m.clone(), Some("at+jwt")), ok("acme", "s6Bh", None, false));
    assert!(judge(&r, m2m.clone(), Some("JWT")).unwrap_err().contains("at+jwt"));
    assert_eq!(judge(&r, m2m.clone(), Some("application/at+jwt")), ok("acme", "s6Bh", None, false));
    let user = json!({"sub": "5ba5", "client_id": "s6Bh", "scope": "openid vault:admin", "org_id": "acme"});
    assert_eq!(judge(&r, user.clone(), Some("at+jwt")), ok("acme", "s6Bh", Some("5ba5"), false), "never scope");
    let mut user_admin = user;
    user_admin["permissions"] = json!(["vault:admin"]);
    assert_eq!(judge(&r, user_admin, Some("at+jwt")), ok("acme", "s6Bh", Some("5ba5"), true));
    // Without the operator's attestation, sub equal to client_id is a user's token.
    let mut sub_only = m2m;
    sub_only.as_object_mut().unwrap().remove("gty");
    assert_eq!(judge(&r, sub_only.clone(), Some("at+jwt")), ok("acme", "s6Bh", Some("s6Bh"), false));
    r.machine_rule = Some(MachineRule::SubIsClientId);
    assert_eq!(judge(&r, sub_only, Some("at+jwt")), ok("acme", "s6Bh", None, false));
}

#[test]
fn repeated_or_wrongly_typed_claims_refuse_the_token() {
    let repeated = serde_json::from_str::<Claims>(r#"{"sub": "a", "sub": "b"}"#);
    assert!(repeated.is_err());
    let r = rules(IdpProfile::Auth0);
    let typed = json!({"sub": 5, "azp": "WebApp", "org_id": "acme"});
    assert!(judge(&r, typed, None).unwrap_err().contains("sub"));
    let bad_list = json!({"sub": "auth0|1", "azp": "WebApp", "org_id": "acme", "permissions": [1]});
    assert!(judge(&r, bad_list, None).is_err());
}
