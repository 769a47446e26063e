use super::*;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hp-cfg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A node directory holding an executable `contract`.
fn node(tag: &str) -> (PathBuf, Config) {
    use std::os::unix::fs::PermissionsExt;
    let d = dir(tag);
    std::fs::create_dir_all(&d).unwrap();
    let bin = d.join("contract");
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = Config::new_node(
        &Keypair::from_seed([5; 32]),
        "contract".into(),
        "--x 1".into(),
    );
    (d, cfg)
}

/// Saves `cfg` in `d` and returns the error `load` gives.
fn load_err(d: &Path, cfg: &Config) -> String {
    cfg.save(d).unwrap();
    Config::load(d)
        .err()
        .expect("the config is refused")
        .to_string()
}

#[test]
fn a_saved_config_loads_and_a_bad_field_is_named() {
    let (d, cfg) = node("roundtrip");
    cfg.save(&d).unwrap();
    let c = Config::load(&d).unwrap();
    assert_eq!(c.key.public(), Keypair::from_seed([5; 32]).public());
    assert_eq!(c.binary, d.join("contract"));
    assert_eq!(c.warnings, Vec::<String>::new());

    let mut bad = cfg.clone();
    bad.roundtime = 5;
    let e = load_err(&d, &bad);
    assert!(e.contains("field `roundtime`"), "{e}");

    let mut bad = cfg.clone();
    bad.seckey = Keypair::from_seed([6; 32]).secret_hex();
    let e = load_err(&d, &bad);
    assert!(e.contains("field `seckey`"), "{e}");

    std::fs::write(Config::path(&d), r#"{"pubkey": "x", "surprise": 1}"#).unwrap();
    let e = Config::load(&d).err().unwrap().to_string();
    assert!(e.contains("not a valid config"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn settings_that_would_stall_or_kill_every_run_are_named() {
    let (d, cfg) = node("limits");
    type Spoil = fn(&mut Config);
    let cases: [(&str, Spoil); 7] = [
        ("stage_thresholds", |c| c.stage_thresholds = [90, 65, 10]),
        ("stage_thresholds", |c| c.stage_thresholds = [0, 65, 80]),
        ("close_threshold", |c| c.close_threshold = 50),
        ("contract_max_output_bytes", |c| {
            c.contract_max_output_bytes = 0
        }),
        ("state_sync_gap", |c| c.state_sync_gap = 0),
        ("memory_ledgers", |c| c.memory_ledgers = 3),
        ("user_io", |c| {
            c.user_io = UserIo::Framed;
            c.fdlist = FdlistFormat::Text;
        }),
    ];
    for (field, spoil) in cases {
        let mut bad = cfg.clone();
        spoil(&mut bad);
        let e = load_err(&d, &bad);
        assert!(e.contains(&format!("field `{field}`")), "{field}: {e}");
    }
    // Equal thresholds are fine: only a drop is refused.
    let mut flat = cfg.clone();
    flat.stage_thresholds = [80, 80, 80];
    flat.save(&d).unwrap();
    assert!(Config::load(&d).is_ok());
    // Framed user I/O and the contract directory, as hp.cfg spells them.
    let mut text = serde_json::to_value(&cfg).unwrap();
    text["user_io"] = "framed".into();
    text["workdir"] = "contract".into();
    std::fs::write(Config::path(&d), text.to_string()).unwrap();
    let c = Config::load(&d).unwrap();
    assert_eq!(
        (c.cfg.user_io, c.cfg.workdir),
        (UserIo::Framed, Workdir::Contract)
    );
    text["user_io"] = "cbor".into();
    std::fs::write(Config::path(&d), text.to_string()).unwrap();
    assert!(Config::load(&d).is_err());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_contract_that_cannot_start_is_refused_by_path() {
    use std::os::unix::fs::PermissionsExt;
    let (d, cfg) = node("binary");
    let mut missing = cfg.clone();
    missing.binary = "nope.py".into();
    let e = load_err(&d, &missing);
    assert!(e.contains("field `binary`"), "{e}");
    assert!(
        e.contains(&format!("{}/nope.py does not exist", d.display())),
        "{e}"
    );

    let mut a_dir = cfg.clone();
    a_dir.binary = "state".into();
    std::fs::create_dir_all(d.join("state")).unwrap();
    let e = load_err(&d, &a_dir);
    assert!(e.contains("is not a file"), "{e}");

    std::fs::set_permissions(d.join("contract"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load_err(&d, &cfg);
    assert!(e.contains("not executable by this user (mode 644)"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_config_is_private_and_a_readable_one_or_a_key_outside_the_unl_warns() {
    use std::os::unix::fs::PermissionsExt;
    let (d, cfg) = node("private");
    let path = Config::path(&d);
    // Saving over a file of a wider mode narrows it too.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{}").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    cfg.save(&d).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let w = Config::load(&d).unwrap().warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("mode 640") && w[0].contains("chmod 600"),
        "{w:?}"
    );

    let mut observer = cfg.clone();
    observer.unl = vec![Keypair::from_seed([9; 32]).public().to_hex()];
    observer.save(&d).unwrap();
    let w = Config::load(&d).unwrap().warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("not in its `unl`"), "{w:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn both_secret_key_layouts_parse() {
    let key = Keypair::from_seed([7; 32]);
    let long = format!("{}{}", key.secret_hex(), key.public().to_hex());
    assert_eq!(
        parse_secret(&key.secret_hex()).unwrap().public(),
        key.public()
    );
    assert_eq!(parse_secret(&long).unwrap().public(), key.public());
    let wrong = format!(
        "{}{}",
        key.secret_hex(),
        Keypair::from_seed([8; 32]).public().to_hex()
    );
    assert!(parse_secret(&wrong).is_err());
    assert!(parse_secret("abc").is_err());
}
