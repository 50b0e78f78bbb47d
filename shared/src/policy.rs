//! Who may do what. Deny by default: every function here returns the one owner an operation may touch,
//! or an error.

use crate::error::{ApiError, Code};
use crate::model::{Access, Owner, Principal, TokenKind};

fn admin_only() -> ApiError {
    ApiError::forbidden(
        Code::Forbidden,
        "Only organization admins (vault:admin) may name a clientId; leave it out to use your own secrets.",
    )
}

/// The owner a create, update or delete acts on.
///
/// - no `clientId`: an M2M token writes its own client's app-level secret; a user token its own
///   user-level secret.
/// - `clientId`: only an admin, for that client's app-level secret in the admin's organization.
pub(crate) fn mutation_owner(p: &Principal, client_id: Option<&str>) -> Result<Owner, ApiError> {
    match (client_id, &p.kind) {
        (Some(target), _) if p.admin => Ok(Owner::App { client_id: target.to_owned() }),
        (Some(_), _) => Err(admin_only()),
        (None, TokenKind::Machine) => Ok(Owner::App { client_id: p.client_id.clone() }),
        (None, TokenKind::User { user_id }) => Ok(Owner::User { user_id: user_id.clone() }),
    }
}

/// The owners a read or list looks at, most specific first.
///
/// A user token sees its own user-level secrets, then its client's app-level ones ("all users of that
/// OAuth client"); an M2M token its client's; an admin naming `clientId` that client's.
pub(crate) fn read_owners(p: &Principal, client_id: Option<&str>) -> Result<Vec<Owner>, ApiError> {
    match (client_id, &p.kind) {
        (Some(target), _) if p.admin => Ok(vec![Owner::App { client_id: target.to_owned() }]),
        (Some(_), _) => Err(admin_only()),
        (None, TokenKind::Machine) => Ok(vec![Owner::App { client_id: p.client_id.clone() }]),
        (None, TokenKind::User { user_id }) => {
            Ok(vec![Owner::User { user_id: user_id.clone() }, Owner::App { client_id: p.client_id.clone() }])
        }
    }
}

/// Listing every app-level secret of the organization is for admins only.
pub(crate) fn org_listing(p: &Principal) -> Result<(), ApiError> {
    if p.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            Code::Forbidden,
            "Only organization admins (vault:admin) may list the whole organization.",
        ))
    }
}

/// Whose audit events a caller may read: `None` for an admin (the whole organization); otherwise only
/// its own (a user's, through any client; an M2M client's own, not its users').
pub(crate) fn audit_visibility(p: &Principal) -> Option<Owner> {
    match (&p.kind, p.admin) {
        (_, true) => None,
        (TokenKind::User { user_id }, false) => Some(Owner::User { user_id: user_id.clone() }),
        (TokenKind::Machine, false) => Some(Owner::App { client_id: p.client_id.clone() }),
    }
}

/// A secret with a non-empty scope list is returned only to tokens holding at least one of its scopes.
pub(crate) fn check_scope(p: &Principal, secret_scope: &[String]) -> Result<(), ApiError> {
    if secret_scope.is_empty() || secret_scope.iter().any(|s| p.scopes.contains(s)) {
        Ok(())
    } else {
        Err(ApiError::forbidden(Code::InsufficientScope, "The token holds none of the scopes this secret requires."))
    }
}

/// A use-only secret's value is never returned, to anyone: only the proxy uses it.
pub(crate) fn check_readable(access: Access) -> Result<(), ApiError> {
    match access {
        Access::Readable => Ok(()),
        Access::UseOnly => Err(ApiError::forbidden(
            Code::UseOnly,
            "This secret is use-only: its value is never returned. Call its upstream through /vault/proxy/{name}/... instead.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn principal(kind: TokenKind, admin: bool, scopes: &[&str]) -> Principal {
        Principal {
            org_id: "org1".into(),
            client_id: "client-a".into(),
            kind,
            scopes: scopes.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
            admin,
        }
    }

    fn m2m() -> Principal {
        principal(TokenKind::Machine, false, &[])
    }

    fn user() -> Principal {
        principal(TokenKind::User { user_id: "auth0|u1".into() }, false, &[])
    }

    fn app(c: &str) -> Owner {
        Owner::App { client_id: c.into() }
    }

    #[test]
    fn m2m_writes_and_reads_its_own_client() {
        assert_eq!(mutation_owner(&m2m(), None).unwrap(), app("client-a"));
        assert_eq!(read_owners(&m2m(), None).unwrap(), vec![app("client-a")]);
    }

    #[test]
    fn user_writes_own_and_reads_own_then_app() {
        let u = Owner::User { user_id: "auth0|u1".into() };
        assert_eq!(mutation_owner(&user(), None).unwrap(), u);
        assert_eq!(read_owners(&user(), None).unwrap(), vec![u, app("client-a")]);
    }

    #[test]
    fn client_id_is_for_admins_only() {
        for p in [m2m(), user()] {
            assert_eq!(mutation_owner(&p, Some("client-b")).unwrap_err().status(), 403);
            assert_eq!(read_owners(&p, Some("client-b")).unwrap_err().status(), 403);
            assert_eq!(org_listing(&p).unwrap_err().status(), 403);
            // Even naming its own client is reserved to admins: the rule is simple and explicit.
            assert_eq!(mutation_owner(&p, Some("client-a")).unwrap_err().status(), 403);
        }
    }

    #[test]
    fn admins_reach_any_client_but_never_a_user_secret() {
        for kind in [TokenKind::Machine, TokenKind::User { user_id: "admin-user".into() }] {
            let admin = principal(kind, true, &[]);
            assert_eq!(mutation_owner(&admin, Some("client-b")).unwrap(), app("client-b"));
            assert_eq!(read_owners(&admin, Some("client-b")).unwrap(), vec![app("client-b")]);
            for owner in read_owners(&admin, Some("client-b")).unwrap() {
                assert!(matches!(owner, Owner::App { .. }));
            }
            assert!(org_listing(&admin).is_ok());
        }
        // An admin user without clientId only reaches its own user-level secret, like any user.
        let admin_user = principal(TokenKind::User { user_id: "admin-user".into() }, true, &[]);
        assert_eq!(mutation_owner(&admin_user, None).unwrap(), Owner::User { user_id: "admin-user".into() });
    }

    #[test]
    fn audit_is_the_whole_org_for_admins_and_ones_own_otherwise() {
        assert_eq!(audit_visibility(&m2m()), Some(app("client-a")));
        assert_eq!(audit_visibility(&user()), Some(Owner::User { user_id: "auth0|u1".into() }));
        assert_eq!(audit_visibility(&principal(TokenKind::Machine, true, &[])), None);
        assert_eq!(audit_visibility(&principal(TokenKind::User { user_id: "x".into() }, true, &[])), None);
    }

    #[test]
    fn scopes_gate_reads() {
        let scoped = vec!["payments".to_string(), "billing".to_string()];
        assert!(check_scope(&m2m(), &[]).is_ok());
        let err = check_scope(&m2m(), &scoped).unwrap_err();
        assert_eq!((err.status(), err.code().as_str()), (403, "insufficient_scope"));
        assert!(check_scope(&principal(TokenKind::Machine, false, &["billing"]), &scoped).is_ok());
        assert!(check_scope(&principal(TokenKind::Machine, false, &["Payments"]), &scoped).is_err());
        // Admin status does not bypass scopes.
        assert!(check_scope(&principal(TokenKind::Machine, true, &[]), &scoped).is_err());
    }
}
