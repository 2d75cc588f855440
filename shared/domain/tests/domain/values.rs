//! Typed values, parsed at the edge: each rule is checked once, when the value is made.

use crate::support::*;
use appreg_domain::*;

#[track_caller]
fn err_code<T: std::fmt::Debug>(r: Result<T, ParseError>) -> &'static str {
    match r {
        Ok(v) => panic!("expected an error, parsed {v:?}"),
        Err((code, message)) => {
            assert!(!message.is_empty());
            code
        }
    }
}

// --- ApplicationName ---------------------------------------------------------------------

#[test]
fn name_is_trimmed() {
    assert_eq!(
        ApplicationName::parse("  My app \t").unwrap().as_str(),
        "My app"
    );
    assert_eq!(ApplicationName::parse("a  b").unwrap().as_str(), "a  b");
}

#[test]
fn name_must_not_be_empty_or_blank() {
    assert_eq!(err_code(ApplicationName::parse("")), "name.empty");
    assert_eq!(err_code(ApplicationName::parse("   ")), "name.empty");
    assert_eq!(err_code(ApplicationName::parse("\t\n ")), "name.empty");
}

#[test]
fn name_has_at_most_200_characters() {
    assert!(ApplicationName::parse(&"n".repeat(200)).is_ok());
    assert_eq!(
        err_code(ApplicationName::parse(&"n".repeat(201))),
        "name.too_long"
    );
}

#[test]
fn name_length_counts_characters_not_bytes() {
    let name = "é".repeat(200);
    assert_eq!(name.len(), 400);
    assert!(ApplicationName::parse(&name).is_ok());
    assert_eq!(
        err_code(ApplicationName::parse(&"日".repeat(201))),
        "name.too_long"
    );
}

#[test]
fn name_length_is_measured_after_trimming() {
    let padded = format!("   {}   ", "n".repeat(200));
    assert_eq!(ApplicationName::parse(&padded).unwrap().as_str().len(), 200);
}

#[test]
fn name_rejects_control_characters() {
    for s in [
        "a\u{7}b",
        "a\nb",
        "a\u{0}b",
        "line\r\nbreak",
        "a\u{1b}[31mred",
        "a\u{7f}b",
    ] {
        assert_eq!(err_code(ApplicationName::parse(s)), "name.invalid", "{s:?}");
    }
}

#[test]
fn name_rejects_bidi_and_zero_width_characters() {
    for s in [
        "\u{202e}gnp.exe",
        "pay\u{200b}pal",
        "a\u{2066}b\u{2069}",
        "\u{feff}shop",
        "left\u{200f}right",
    ] {
        assert_eq!(err_code(ApplicationName::parse(s)), "name.invalid", "{s:?}");
    }
}

#[test]
fn name_accepts_unicode() {
    assert_eq!(
        ApplicationName::parse("Météo 天気 🌦").unwrap().as_str(),
        "Météo 天気 🌦"
    );
}

// --- ClientId ----------------------------------------------------------------------------

#[test]
fn client_id_must_not_be_empty() {
    assert_eq!(err_code(ClientId::parse("")), "client_id.empty");
}

#[test]
fn client_id_has_at_most_255_characters() {
    assert_eq!(
        ClientId::parse(&"c".repeat(255)).unwrap().as_str().len(),
        255
    );
    assert_eq!(
        err_code(ClientId::parse(&"c".repeat(256))),
        "client_id.too_long"
    );
    // Characters, not bytes.
    assert!(ClientId::parse(&"ü".repeat(255)).is_ok());
    assert_eq!(
        err_code(ClientId::parse(&"ü".repeat(256))),
        "client_id.too_long"
    );
}

#[test]
fn client_id_rejects_whitespace() {
    for s in [" abc", "abc ", "a b", "a\tb", "a\u{a0}b", "a\u{2003}b", " "] {
        assert_eq!(err_code(ClientId::parse(s)), "client_id.invalid", "{s:?}");
    }
}

#[test]
fn client_id_rejects_control_characters() {
    for s in ["a\u{0}b", "a\u{7}b", "a\u{7f}", "\u{1b}x"] {
        assert_eq!(err_code(ClientId::parse(s)), "client_id.invalid", "{s:?}");
    }
}

#[test]
fn client_id_accepts_unicode_and_punctuation() {
    for s in ["my-client_01", "clé", "クライアント", "a.b:c/d@e", "🦀"] {
        assert_eq!(ClientId::parse(s).unwrap().as_str(), s);
    }
}

// --- RedirectUri -------------------------------------------------------------------------

#[test]
fn redirect_uri_accepts_absolute_uris() {
    for s in [
        "https://app.example/callback",
        "https://app.example:8443/cb?x=1",
        "http://localhost:3000/cb",
        "com.example.app:/oauth2redirect",
        "myapp://callback",
    ] {
        assert_eq!(RedirectUri::parse(s).unwrap().as_str(), s);
    }
}

#[test]
fn redirect_uri_must_be_absolute() {
    for s in ["/callback", "callback", "//app.example/cb", "", "?x=1"] {
        assert_eq!(
            err_code(RedirectUri::parse(s)),
            "redirect_uri.not_absolute",
            "{s:?}"
        );
    }
}

#[test]
fn redirect_uri_must_not_have_a_fragment() {
    for s in [
        "https://app.example/cb#frag",
        "https://app.example/cb#",
        "myapp://cb#x",
    ] {
        assert_eq!(
            err_code(RedirectUri::parse(s)),
            "redirect_uri.fragment",
            "{s:?}"
        );
    }
}

#[test]
fn redirect_uri_rejects_userinfo_and_wildcard_hosts() {
    for (s, code) in [
        (
            "https://good.example@evil.example/cb",
            "redirect_uri.userinfo",
        ),
        ("https://user:pw@app.example/cb", "redirect_uri.userinfo"),
        ("https://:pw@app.example/cb", "redirect_uri.userinfo"),
        ("https://*.example.com/cb", "redirect_uri.wildcard"),
        ("https://app.*.example/cb", "redirect_uri.wildcard"),
    ] {
        assert_eq!(err_code(RedirectUri::parse(s)), code, "{s:?}");
    }
}

#[test]
fn redirect_uri_rejects_dangerous_schemes() {
    for s in [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "vbscript:msgbox",
        "about:blank",
    ] {
        assert_eq!(
            err_code(RedirectUri::parse(s)),
            "redirect_uri.scheme",
            "{s:?}"
        );
    }
}

#[test]
fn redirect_uri_http_needs_a_host() {
    // The url parser refuses an empty authority outright …
    for s in ["http://", "https://", "https://:443/", "http://?x", "http:"] {
        assert_eq!(
            err_code(RedirectUri::parse(s)),
            "redirect_uri.not_absolute",
            "{s:?}"
        );
    }
    // … but makes up a host when the authority is missing; the string must spell one out.
    for s in [
        "http:app.example",
        "https:/app.example/cb",
        "http:///app.example/cb",
        "https:\\\\app.example",
    ] {
        assert_eq!(
            err_code(RedirectUri::parse(s)),
            "redirect_uri.no_host",
            "{s:?}"
        );
    }
}

#[test]
fn redirect_uri_rejects_whitespace_and_control_characters() {
    for s in [
        "https://app.example/a b",
        " https://app.example/",
        "https://app.example/\n",
        "https://app.example/\u{0}",
    ] {
        assert_eq!(
            err_code(RedirectUri::parse(s)),
            "redirect_uri.invalid",
            "{s:?}"
        );
    }
}

#[test]
fn redirect_uri_has_at_most_2000_characters() {
    let base = "https://app.example/";
    let ok = format!("{base}{}", "p".repeat(2000 - base.len()));
    assert_eq!(ok.len(), 2000);
    assert!(RedirectUri::parse(&ok).is_ok());
    let long = format!("{ok}p");
    assert_eq!(err_code(RedirectUri::parse(&long)), "redirect_uri.too_long");
}

#[test]
fn redirect_uri_knows_its_scheme_and_loopback_hosts() {
    assert_eq!(uri("HTTPS://App.Example/cb").scheme(), "https");
    assert_eq!(uri("com.example.app:/cb").scheme(), "com.example.app");
    for s in [
        "http://localhost/cb",
        "http://LOCALHOST:8080/cb",
        "http://127.0.0.1:8080/cb",
        "http://127.1.2.3/cb",
        "http://[::1]:8080/cb",
    ] {
        assert!(uri(s).is_loopback(), "{s}");
    }
    for s in [
        "http://localhost.evil.example/cb",
        "http://app.example/cb",
        "http://10.0.0.1/cb",
        "http://[::2]/cb",
        "com.example.app:/cb",
    ] {
        assert!(!uri(s).is_loopback(), "{s}");
    }
}

// --- HttpUrl -----------------------------------------------------------------------------

#[test]
fn http_url_accepts_absolute_http_and_https() {
    for s in [
        "https://app.example",
        "http://app.example/logo.png",
        "https://app.example:8443/a?b#c",
    ] {
        assert_eq!(HttpUrl::parse(s).unwrap().as_str(), s);
    }
}

#[test]
fn http_url_rejects_everything_else() {
    let long = format!("https://app.example/{}", "p".repeat(2000));
    for s in [
        "",
        "app.example",
        "/logo.png",
        "ftp://app.example/logo.png",
        "javascript:alert(1)",
        "mailto:team@app.example",
        "https://",
        "http:app.example",
        "https:///app.example",
        "https://app.example/a b",
        long.as_str(),
    ] {
        assert_eq!(err_code(HttpUrl::parse(s)), "url.invalid", "{s:?}");
    }
}

// --- ApplicationType and GrantType -------------------------------------------------------

#[test]
fn application_types_parse_from_their_names() {
    for t in ApplicationType::ALL {
        assert_eq!(ApplicationType::parse(t.as_str()).unwrap(), t);
    }
    let names: Vec<_> = ApplicationType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        names,
        ["simple", "browser", "web", "native", "backend_to_backend"]
    );
}

#[test]
fn unknown_application_type_is_rejected() {
    for s in ["", "SIMPLE", "spa", "backend-to-backend", "service", " web"] {
        assert_eq!(err_code(ApplicationType::parse(s)), "type.unknown", "{s:?}");
    }
}

#[test]
fn grant_types_parse_from_their_names() {
    for g in GrantType::ALL {
        assert_eq!(GrantType::parse(g.as_str()).unwrap(), g);
    }
    let names: Vec<_> = GrantType::ALL.iter().map(|g| g.as_str()).collect();
    assert_eq!(
        names,
        [
            "authorization_code",
            "implicit",
            "refresh_token",
            "password",
            "client_credentials"
        ]
    );
}

#[test]
fn unknown_grant_type_is_rejected() {
    for s in [
        "",
        "Authorization_Code",
        "token",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "device_code",
    ] {
        assert_eq!(err_code(GrantType::parse(s)), "grant_type.unknown", "{s:?}");
    }
}

#[test]
fn the_type_table_of_design_section_1() {
    use ApplicationType::*;
    // (type, oauth, redirect_uris required, allowed, default, mandatory)
    type Row = (
        ApplicationType,
        bool,
        bool,
        &'static [GrantType],
        &'static [GrantType],
        &'static [GrantType],
    );
    let table: [Row; 5] = [
        (Simple, false, false, &[], &[], &[]),
        (Browser, true, true, &[AC, IMPLICIT], &[AC], &[]),
        (Web, true, true, &[AC, RT, IMPLICIT], &[AC], &[AC]),
        (
            Native,
            true,
            true,
            &[AC, RT, PASSWORD, IMPLICIT],
            &[AC],
            &[AC],
        ),
        (BackendToBackend, true, false, &[CC], &[CC], &[CC]),
    ];
    for (t, oauth, redirect, allowed, default, mandatory) in table {
        assert_eq!(t.is_oauth(), oauth, "{t:?}");
        assert_eq!(t.requires_redirect_uris(), redirect, "{t:?}");
        let mut a = t.allowed_grant_types().to_vec();
        let mut want = allowed.to_vec();
        a.sort();
        want.sort();
        assert_eq!(a, want, "allowed grants of {t:?}");
        assert_eq!(t.default_grant_types(), default, "default grants of {t:?}");
        assert_eq!(
            t.mandatory_grant_types(),
            mandatory,
            "mandatory grants of {t:?}"
        );
        // Defaults and mandatory grants are always allowed.
        for g in default.iter().chain(mandatory) {
            assert!(t.allowed_grant_types().contains(g), "{t:?} {g:?}");
        }
    }
}

// --- Response types ----------------------------------------------------------------------

#[test]
fn response_types_are_computed_from_grants() {
    use ResponseType::*;
    let cases: [(&[GrantType], &[ResponseType]); 9] = [
        (&[], &[]),
        (&[AC], &[Code]),
        (&[IMPLICIT], &[Token, IdToken]),
        (&[CC], &[]),
        (&[RT], &[]),
        (&[PASSWORD], &[]),
        (&[AC, IMPLICIT], &[Code, Token, IdToken]),
        (&[IMPLICIT, AC], &[Code, Token, IdToken]),
        (&[AC, RT, PASSWORD, IMPLICIT, CC], &[Code, Token, IdToken]),
    ];
    for (grants, expected) in cases {
        assert_eq!(ResponseType::for_grants(grants), expected, "{grants:?}");
    }
}

#[test]
fn response_type_names() {
    assert_eq!(ResponseType::Code.as_str(), "code");
    assert_eq!(ResponseType::Token.as_str(), "token");
    assert_eq!(ResponseType::IdToken.as_str(), "id_token");
}

// --- EnvironmentId, UserId, ApplicationId, BoundedText -----------------------------------

#[test]
fn environment_id_rules() {
    assert_eq!(EnvironmentId::default_env().as_str(), "DEFAULT");
    assert_eq!(EnvironmentId::parse(EnvironmentId::DEFAULT).unwrap(), env());
    for s in ["a", "acme-prod_2", &"e".repeat(64)] {
        assert_eq!(EnvironmentId::parse(s).unwrap().to_string(), s);
    }
    for s in [
        "",
        &"e".repeat(65),
        "a b",
        "a/b",
        "a.b",
        "é",
        "DEFAULT\n",
        "../x",
    ] {
        assert_eq!(
            err_code(EnvironmentId::parse(s)),
            "environment.invalid",
            "{s:?}"
        );
    }
}

#[test]
fn user_id_rules() {
    for s in [
        "alice",
        "auth0|5f7c8ec7c33c6c004bbafe82",
        "user@example.com",
        "with space",
        "ünï",
    ] {
        assert_eq!(UserId::parse(s).unwrap().as_str(), s);
        assert_eq!(UserId::parse(s).unwrap().to_string(), s);
    }
    assert!(UserId::parse(&"u".repeat(255)).is_ok());
    for s in ["", &"u".repeat(256), "a\u{0}b", "a\nb", "\u{7f}"] {
        assert_eq!(err_code(UserId::parse(s)), "user.invalid", "{s:?}");
    }
}

#[test]
fn application_id_names_its_stream() {
    assert_eq!(APP.stream_id(), format!("application-{}", APP.0));
    assert_eq!(APP.to_string(), APP.0.to_string());
}

#[test]
fn bounded_text_counts_characters() {
    assert!(BoundedText::parse("", 3).is_ok());
    assert_eq!(BoundedText::parse("ééé", 3).unwrap().as_str(), "ééé");
    assert_eq!(err_code(BoundedText::parse("abcd", 3)), "text.too_long");
}

// --- Errors ------------------------------------------------------------------------------

#[test]
fn every_domain_error_has_a_stable_code() {
    let cases = [
        (
            DomainError::Invalid(FieldErrors::new()),
            "validation.failed",
        ),
        (DomainError::Archived, "application.archived"),
        (DomainError::NotArchived, "application.not_archived"),
        (DomainError::NotFound, "application.not_found"),
        (
            DomainError::Forbidden("DEFINITION[D]".into()),
            "permission.denied",
        ),
        (DomainError::AdminOnly, "permission.admin_only"),
    ];
    for (e, code) in cases {
        assert_eq!(e.code(), code);
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn field_errors_collect_every_parse_failure_at_once() {
    // How the edge parses a request: every field is tried, every failure kept.
    let mut errors = FieldErrors::new();
    let n = errors.take("name", ApplicationName::parse("   "));
    let c = errors.take("client_id", ClientId::parse("has space"));
    let r = errors.take("redirect_uris[0]", RedirectUri::parse("/relative"));
    let g = errors.take("grant_types[0]", GrantType::parse("token"));
    let ok = errors.take("type", ApplicationType::parse("web"));
    assert!(n.is_none() && c.is_none() && r.is_none() && g.is_none());
    assert_eq!(ok, Some(ApplicationType::Web));
    let got: Vec<_> = errors
        .0
        .iter()
        .map(|f| (f.field.as_str(), f.code))
        .collect();
    assert_eq!(
        got,
        [
            ("name", "name.empty"),
            ("client_id", "client_id.invalid"),
            ("redirect_uris[0]", "redirect_uri.not_absolute"),
            ("grant_types[0]", "grant_type.unknown"),
        ]
    );
    assert_eq!(
        errors.into_result().unwrap_err().code(),
        "validation.failed"
    );
    assert_eq!(FieldErrors::new().into_result(), Ok(()));
}
