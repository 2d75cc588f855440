use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rand::rngs::StdRng;
use rand::SeedableRng;
use secrecy::{ExposeSecret, SecretString};

use super::*;

const AAD: &[u8] = b"application/0190c6f2-0000-7000-8000-000000000001/client_secret";
const KEY1: [u8; 32] = [0x11; 32];
const KEY2: [u8; 32] = [0x22; 32];

fn config(id: &str, key: &[u8]) -> String {
    format!("{id}:{}", STANDARD.encode(key))
}

fn key(id: &str, bytes: [u8; 32]) -> MasterKey {
    MasterKey::parse(&config(id, &bytes)).unwrap()
}

fn ring1() -> Keyring {
    Keyring::new(key("k1", KEY1), vec![]).unwrap()
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

#[test]
fn round_trip_through_the_compact_string() {
    let keyring = ring1();
    let sealed = keyring.seal(&secret("client-secret-value"), AAD);
    assert_eq!(sealed.key_id(), "k1");
    let compact = sealed.to_compact();
    assert!(compact.starts_with("v1.k1."), "{compact}");
    assert_eq!(compact.split('.').count(), 4);
    assert!(!compact.contains("client-secret-value"));

    let parsed: Sealed = compact.parse().unwrap();
    assert_eq!(parsed, sealed);
    let opened = keyring.open(&parsed, AAD).unwrap();
    assert_eq!(opened.expose_secret(), "client-secret-value");
}

#[test]
fn round_trip_of_empty_and_unicode_secrets() {
    let keyring = ring1();
    for s in ["", "ü∑ 🔑 multi\nline", &"x".repeat(10_000)] {
        let sealed = keyring.seal(&secret(s), AAD);
        assert_eq!(keyring.open(&sealed, AAD).unwrap().expose_secret(), s);
    }
}

#[test]
fn every_seal_uses_a_fresh_nonce() {
    let keyring = ring1();
    let a = keyring.seal(&secret("same"), AAD);
    let b = keyring.seal(&secret("same"), AAD);
    assert_ne!(a.nonce(), b.nonce());
    assert_ne!(a.ciphertext(), b.ciphertext());
}

#[test]
fn serde_uses_the_compact_string() {
    let keyring = ring1();
    let sealed = keyring.seal(&secret("v"), AAD);
    let json = serde_json::to_string(&sealed).unwrap();
    assert_eq!(json, format!("\"{}\"", sealed.to_compact()));
    let back: Sealed = serde_json::from_str(&json).unwrap();
    assert_eq!(back, sealed);
    assert!(serde_json::from_str::<Sealed>("\"v2.k1.a.b\"").is_err());
}

#[test]
fn rotation_opens_old_values_and_seals_with_the_new_key() {
    let old = ring1();
    let before = old.seal(&secret("sealed before rotation"), AAD);

    let rotated = old.rotate(key("k2", KEY2)).unwrap();
    assert_eq!(rotated.current().id(), "k2");
    assert_eq!(rotated.previous().len(), 1);
    assert_eq!(rotated.previous()[0].id(), "k1");

    assert_eq!(
        rotated.open(&before, AAD).unwrap().expose_secret(),
        "sealed before rotation"
    );
    assert!(rotated.needs_reseal(&before));

    let after = rotated.seal(&secret("sealed after rotation"), AAD);
    assert_eq!(after.key_id(), "k2");
    assert!(!rotated.needs_reseal(&after));
    assert_eq!(
        rotated.open(&after, AAD).unwrap().expose_secret(),
        "sealed after rotation"
    );

    // The same rotation from configuration strings.
    let configured = Keyring::parse(&config("k2", &KEY2), [config("k1", &KEY1).as_str()]).unwrap();
    assert_eq!(
        configured.open(&before, AAD).unwrap().expose_secret(),
        "sealed before rotation"
    );
    assert_eq!(
        configured.open(&after, AAD).unwrap().expose_secret(),
        "sealed after rotation"
    );

    // Once k1 is dropped, its values no longer open.
    let k2_only = Keyring::new(key("k2", KEY2), vec![]).unwrap();
    assert_eq!(
        k2_only.open(&before, AAD).unwrap_err(),
        VaultError::UnknownKeyId("k1".into())
    );
}

#[test]
fn wrong_aad_fails() {
    let keyring = ring1();
    let sealed = keyring.seal(&secret("mine"), AAD);
    let other = b"application/0190c6f2-0000-7000-8000-000000000002/client_secret";
    assert_eq!(
        keyring.open(&sealed, other).unwrap_err(),
        VaultError::WrongAad
    );
    assert_eq!(
        keyring.open(&sealed, b"").unwrap_err(),
        VaultError::WrongAad
    );
}

fn tampered(sealed: &Sealed, part: usize, flip: impl Fn(&mut Vec<u8>)) -> Sealed {
    let compact = sealed.to_compact();
    let mut parts: Vec<String> = compact.split('.').map(str::to_owned).collect();
    let mut bytes = URL_SAFE_NO_PAD.decode(&parts[part]).unwrap();
    flip(&mut bytes);
    parts[part] = URL_SAFE_NO_PAD.encode(bytes);
    parts.join(".").parse().unwrap()
}

#[test]
fn tampering_fails() {
    let keyring = ring1();
    let sealed = keyring.seal(&secret("integrity"), AAD);
    let ct_len = sealed.ciphertext().len();

    // every byte of the ciphertext (owner tag, secret and GCM tag) is authenticated
    for i in 0..ct_len {
        let t = tampered(&sealed, 3, |b| b[i] ^= 0x01);
        assert_eq!(
            keyring.open(&t, AAD).unwrap_err(),
            VaultError::Tampered,
            "byte {i}"
        );
    }
    // the nonce
    let t = tampered(&sealed, 2, |b| b[0] ^= 0x80);
    assert_eq!(keyring.open(&t, AAD).unwrap_err(), VaultError::Tampered);
    // truncation and extension
    let t = tampered(&sealed, 3, |b| {
        b.pop();
    });
    assert_eq!(keyring.open(&t, AAD).unwrap_err(), VaultError::Tampered);
    let t = tampered(&sealed, 3, |b| b.push(0));
    assert_eq!(keyring.open(&t, AAD).unwrap_err(), VaultError::Tampered);
}

#[test]
fn relabelled_key_id_fails() {
    // Same key bytes known under two ids: moving a value to the other id must not open it.
    let keyring = Keyring::new(key("k1", KEY1), vec![key("k1b", KEY1)]).unwrap();
    let sealed = keyring.seal(&secret("bound to k1"), AAD);
    let relabelled: Sealed = sealed
        .to_compact()
        .replacen("v1.k1.", "v1.k1b.", 1)
        .parse()
        .unwrap();
    assert_eq!(
        keyring.open(&relabelled, AAD).unwrap_err(),
        VaultError::Tampered
    );
}

#[test]
fn a_different_key_under_the_same_id_fails() {
    let sealed = ring1().seal(&secret("x"), AAD);
    let impostor = Keyring::new(key("k1", KEY2), vec![]).unwrap();
    assert_eq!(
        impostor.open(&sealed, AAD).unwrap_err(),
        VaultError::Tampered
    );
}

#[test]
fn unknown_key_id_fails() {
    let sealed = ring1().seal(&secret("x"), AAD);
    let other = Keyring::new(key("k9", KEY2), vec![key("k8", KEY1)]).unwrap();
    let err = other.open(&sealed, AAD).unwrap_err();
    assert_eq!(err, VaultError::UnknownKeyId("k1".into()));
    assert_eq!(
        err.to_string(),
        "no master key with id \"k1\" in the keyring"
    );
}

#[test]
fn errors_are_distinct() {
    let all = [
        VaultError::UnknownKeyId("k".into()).to_string(),
        VaultError::Tampered.to_string(),
        VaultError::WrongAad.to_string(),
        VaultError::InvalidPlaintext.to_string(),
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn master_key_parse_errors() {
    let good = STANDARD.encode(KEY1);
    assert!(MasterKey::parse(&format!("k1:{good}")).is_ok());
    assert!(MasterKey::parse(&format!("k1:{}", good.trim_end_matches('='))).is_ok());
    assert!(format!("key_2024-01:{good}").parse::<MasterKey>().is_ok());

    assert_eq!(
        MasterKey::parse(&good).unwrap_err(),
        KeyError::MissingSeparator
    );
    assert_eq!(
        MasterKey::parse(&format!(":{good}")).unwrap_err(),
        KeyError::InvalidKeyId
    );
    assert_eq!(
        MasterKey::parse(&format!("k.1:{good}")).unwrap_err(),
        KeyError::InvalidKeyId
    );
    assert_eq!(
        MasterKey::parse(&format!("{}:{good}", "k".repeat(65))).unwrap_err(),
        KeyError::InvalidKeyId
    );
    assert_eq!(
        MasterKey::parse("k1:not base64!").unwrap_err(),
        KeyError::InvalidBase64
    );
    assert_eq!(
        MasterKey::parse(&format!("k1:{}", STANDARD.encode([7u8; 16]))).unwrap_err(),
        KeyError::WrongLength(16)
    );
    assert_eq!(
        MasterKey::parse(&format!("k1:{}", STANDARD.encode([7u8; 33]))).unwrap_err(),
        KeyError::WrongLength(33)
    );
    assert!(MasterKey::generate("bad id", &mut StdRng::seed_from_u64(1)).is_err());
}

#[test]
fn parse_errors_never_echo_key_material() {
    let material = STANDARD.encode([0xAB; 31]);
    for input in [
        material.clone(),
        format!("k1:{material}"),
        format!("bad id:{material}"),
        format!("k1:{material}!!"),
    ] {
        let err = MasterKey::parse(&input).unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(&material), "{text}");
            assert!(!text.contains("q6ur"), "{text}"); // base64 of 0xAB bytes
        }
    }
}

#[test]
fn keyring_rejects_duplicate_ids() {
    assert_eq!(
        Keyring::new(key("k1", KEY1), vec![key("k1", KEY2)]).unwrap_err(),
        KeyError::DuplicateKeyId("k1".into())
    );
    assert!(ring1().rotate(key("k1", KEY2)).is_err());
}

#[test]
fn sealed_parse_errors() {
    let good = ring1().seal(&secret("x"), AAD).to_compact();
    let parts: Vec<&str> = good.split('.').collect();
    let (id, nonce, ct) = (parts[1], parts[2], parts[3]);

    assert_eq!(
        Sealed::parse("").unwrap_err(),
        SealedParseError::UnsupportedVersion
    );
    assert_eq!(
        Sealed::parse(&format!("v2.{id}.{nonce}.{ct}")).unwrap_err(),
        SealedParseError::UnsupportedVersion
    );
    assert_eq!(
        Sealed::parse("v1").unwrap_err(),
        SealedParseError::Malformed
    );
    assert_eq!(
        Sealed::parse(&format!("v1.{id}.{nonce}")).unwrap_err(),
        SealedParseError::Malformed
    );
    assert_eq!(
        Sealed::parse(&format!("{good}.extra")).unwrap_err(),
        SealedParseError::Malformed
    );
    assert_eq!(
        Sealed::parse(&format!("v1..{nonce}.{ct}")).unwrap_err(),
        SealedParseError::InvalidKeyId
    );
    assert_eq!(
        Sealed::parse(&format!("v1.k:1.{nonce}.{ct}")).unwrap_err(),
        SealedParseError::InvalidKeyId
    );
    assert_eq!(
        Sealed::parse(&format!(
            "v1.{id}.{}.{ct}",
            URL_SAFE_NO_PAD.encode([0u8; 11])
        ))
        .unwrap_err(),
        SealedParseError::InvalidNonce
    );
    assert_eq!(
        Sealed::parse(&format!("v1.{id}.***.{ct}")).unwrap_err(),
        SealedParseError::InvalidNonce
    );
    assert_eq!(
        Sealed::parse(&format!("v1.{id}.{nonce}.***")).unwrap_err(),
        SealedParseError::InvalidCiphertext
    );
    assert_eq!(
        Sealed::parse(&format!(
            "v1.{id}.{nonce}.{}",
            URL_SAFE_NO_PAD.encode([0u8; 31])
        ))
        .unwrap_err(),
        SealedParseError::InvalidCiphertext
    );
}

#[test]
fn generated_keys_are_random_and_round_trip_through_config() {
    let mut rng = StdRng::seed_from_u64(7);
    let a = MasterKey::generate("a", &mut rng).unwrap();
    let b = MasterKey::generate("b", &mut rng).unwrap();
    let a_conf = a.to_config_string();
    let b_conf = b.to_config_string();
    assert!(a_conf.expose_secret().starts_with("a:"));
    assert_ne!(a_conf.expose_secret()[2..], b_conf.expose_secret()[2..]);

    let reparsed = MasterKey::parse(a_conf.expose_secret()).unwrap();
    let sealed = Keyring::new(a, vec![]).unwrap().seal(&secret("v"), AAD);
    let opened = Keyring::new(reparsed, vec![])
        .unwrap()
        .open(&sealed, AAD)
        .unwrap();
    assert_eq!(opened.expose_secret(), "v");
}

#[test]
fn debug_never_prints_secrets() {
    let key_b64 = STANDARD.encode(KEY1);
    let key_bytes_debug = format!("{KEY1:?}");
    let keyring = Keyring::new(key("k1", KEY1), vec![key("k0", KEY1)]).unwrap();
    let plaintext = secret("do-not-print-me");
    let sealed = keyring.seal(&plaintext, AAD);
    let opened = keyring.open(&sealed, AAD).unwrap();

    let outputs = [
        format!("{:?}", keyring.current()),
        format!("{:#?}", keyring.current()),
        format!("{keyring:?}"),
        format!("{keyring:#?}"),
        format!("{plaintext:?}"),
        format!("{opened:?}"),
        format!("{sealed:?}"),
        format!("{:?}", keyring.current().to_config_string()),
    ];
    let ct_b64 = URL_SAFE_NO_PAD.encode(sealed.ciphertext());
    for out in &outputs {
        assert!(!out.contains(&key_b64), "{out}");
        assert!(!out.contains(&key_bytes_debug), "{out}");
        assert!(!out.contains("17, 17, 17"), "{out}");
        assert!(!out.contains("do-not-print-me"), "{out}");
        assert!(!out.contains(&ct_b64), "{out}");
    }
    assert!(outputs[0].contains("k1") && outputs[0].contains("REDACTED"));
    assert!(outputs[2].contains("k0"));
    assert!(outputs[6].contains("k1"));
}

#[test]
fn fingerprint_and_lookup_hash() {
    // SHA-256("abc")
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(lookup_hash(&secret("abc")), abc);
    assert_eq!(
        fingerprint(&secret("abc")),
        format!("sha256:{}", &abc[..16])
    );
    assert_eq!(fingerprint(&secret("abc")), "sha256:ba7816bf8f01cfea");
    assert_ne!(fingerprint(&secret("abd")), fingerprint(&secret("abc")));
    assert_eq!(lookup_hash(&secret("")).len(), 64);
}
