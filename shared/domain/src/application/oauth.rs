//! The OAuth settings of an application: checked and normalised for its type.

use super::*;

/// Checks the OAuth settings for a type and returns them normalised (deduplicated, defaults
/// applied, response types computed). Collects every problem into `errors`.
pub fn check_oauth_settings(
    app_type: ApplicationType,
    redirect_uris: &[RedirectUri],
    grant_types: &[GrantType],
    client_uri: Option<&HttpUrl>,
    logo_uri: Option<&HttpUrl>,
    policy: &Policy,
    errors: &mut FieldErrors,
) -> Option<OAuthSettings> {
    if !app_type.is_oauth() {
        if !redirect_uris.is_empty() {
            errors.add(
                "redirect_uris",
                "redirect_uris.not_applicable",
                "simple applications have no redirect URIs",
            );
        }
        if !grant_types.is_empty() {
            errors.add(
                "grant_types",
                "grant_types.not_applicable",
                "simple applications have no grant types",
            );
        }
        if client_uri.is_some() {
            errors.add(
                "client_uri",
                "client_uri.not_applicable",
                "client_uri is for OAuth applications only",
            );
        }
        if logo_uri.is_some() {
            errors.add(
                "logo_uri",
                "logo_uri.not_applicable",
                "logo_uri is for OAuth applications only",
            );
        }
        return None;
    }
    let before = errors.0.len();

    // Redirect URIs.
    let mut uris: Vec<RedirectUri> = Vec::new();
    if app_type.requires_redirect_uris() {
        if redirect_uris.is_empty() {
            errors.add(
                "redirect_uris",
                "redirect_uris.required",
                format!(
                    "applications of type {} need at least one redirect URI",
                    app_type.as_str()
                ),
            );
        } else if redirect_uris.len() > MAX_REDIRECT_URIS {
            errors.add(
                "redirect_uris",
                "redirect_uris.too_many",
                format!("at most {MAX_REDIRECT_URIS} redirect URIs"),
            );
        }
        for (i, uri) in redirect_uris.iter().enumerate() {
            let field = format!("redirect_uris[{i}]");
            match uri.scheme().as_str() {
                "https" => {}
                "http" if uri.is_loopback() || policy.allow_http_redirect_uris => {}
                "http" => errors.add(
                    field,
                    "redirect_uri.insecure",
                    format!(
                        "{:?}: http is only allowed for loopback hosts; use https",
                        uri.as_str()
                    ),
                ),
                other if app_type == ApplicationType::Native => {
                    // RFC 8252 §7.1: private-use URI schemes for native apps.
                    let _ = other;
                }
                other => errors.add(
                    field,
                    "redirect_uri.scheme",
                    format!("the scheme {other:?} is only allowed for native applications"),
                ),
            }
            if !uris.contains(uri) {
                uris.push(uri.clone());
            }
        }
    } else if !redirect_uris.is_empty() {
        errors.add(
            "redirect_uris",
            "redirect_uris.not_applicable",
            format!(
                "applications of type {} have no redirect URIs",
                app_type.as_str()
            ),
        );
    }

    // Grant types: defaults when none, each allowed, every mandatory one present.
    let mut grants: Vec<GrantType> = if grant_types.is_empty() {
        app_type.default_grant_types().to_vec()
    } else {
        grant_types.to_vec()
    };
    grants.sort();
    grants.dedup();
    let allowed = app_type.allowed_grant_types();
    for g in &grants {
        if !allowed.contains(g) {
            errors.add(
                "grant_types",
                "grant_type.not_allowed",
                format!(
                    "grant type {} is not allowed for type {} (allowed: {})",
                    g.as_str(),
                    app_type.as_str(),
                    allowed
                        .iter()
                        .map(GrantType::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    for m in app_type.mandatory_grant_types() {
        if !grants.contains(m) {
            errors.add(
                "grant_types",
                "grant_type.mandatory_missing",
                format!(
                    "grant type {} is mandatory for type {}",
                    m.as_str(),
                    app_type.as_str()
                ),
            );
        }
    }
    if errors.0.len() > before {
        return None;
    }
    Some(OAuthSettings {
        response_types: ResponseType::for_grants(&grants),
        redirect_uris: uris,
        grant_types: grants,
        client_uri: client_uri.cloned(),
        logo_uri: logo_uri.cloned(),
    })
}
