//! The developer portal's settings' defaults (the settings are fields of [`crate::ApiSettings`],
//! `[api]`: `portal_enabled`, `portal_oidc_client_id`, `portal_oidc_scopes`, `portal_environment`).

pub(crate) fn default_oidc_scopes() -> String {
    "openid profile email".into()
}

pub(crate) fn default_environment() -> String {
    "DEFAULT".into()
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use crate::Config;

    #[test]
    fn the_portal_is_off_by_default_and_set_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(!c.api.portal_on(), "the portal is off by default");
            assert_eq!(c.api.portal_oidc_client_id, None);
            assert_eq!(c.api.portal_oidc_scopes, "openid profile email");
            assert_eq!(c.api.portal_environment, "DEFAULT");
            jail.set_env("APPREG_API__PORTAL_ENABLED", "true");
            jail.set_env("APPREG_API__PORTAL_OIDC_CLIENT_ID", "portal");
            jail.set_env("APPREG_API__PORTAL_ENVIRONMENT", "TEAM");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(c.api.portal_on());
            assert_eq!(c.api.portal_oidc_client_id.as_deref(), Some("portal"));
            assert_eq!(c.api.portal_environment, "TEAM");
            Ok(())
        });
    }
}
