//! A run's picture in a real browser: the planted fork of
//! `majority-partition` (nodes that close on a majority of the votes they
//! received) drawn as HTML, opened in headless Chromium, and the
//! screenshot checked for the lanes and the arrows. The page and the
//! screenshot stay in the test's output folder (CARGO_TARGET_TMPDIR).

use hotpocket_node::consensus::PlantedBug;
use hotpocket_sim::check::violation::Kind;
use hotpocket_sim::picture;
use hotpocket_sim::runner::run_with;
use hotpocket_sim::Scenario;
use std::path::PathBuf;
use std::process::Command;

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!("no headless browser: install chromium (apt-get install chromium; ci/test.sh does)");
}

/// Pixels of the screenshot within `tol` of `rgb`.
fn count(png: &[u8], rgb: [u8; 3], tol: u8) -> usize {
    let mut dec = png::Decoder::new(std::io::Cursor::new(png));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(px)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= tol))
        .count()
}

#[test]
fn the_picture_of_a_planted_fork_shows_lanes_arrows_and_the_fork_in_chromium() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut s = Scenario::load(&dir.join("majority-partition.toml")).unwrap();
    s.consensus.planted_bug = Some(PlantedBug::CloseOnReceived);
    let report = run_with(&s, 1, false, true);
    assert!(
        report.violations.iter().any(|v| v.kind == Kind::Fork),
        "{:?}",
        report.violations
    );
    let log = report.log.as_ref().expect("kept for the picture");
    assert!(log.msgs.len() > 1000, "{}", log.msgs.len());
    let window = picture::default_window(&report, s.consensus.roundtime_ms, report.simulated_ms);
    let html = picture::html(log, &report, s.nodes, s.consensus.roundtime_ms, window);
    assert_eq!(html.matches(r#"class="lane""#).count(), 5);
    assert!(html.matches(r#"class="msg "#).count() > 100);
    assert!(html.contains(r#"class="violation""#));
    // The fork: the closes of the first forked seq carry two colours.
    let seq = report.violations[0]
        .detail
        .split("fork at seq ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap();
    let fills: std::collections::BTreeSet<&str> = html
        .split(r#"<circle class="mark Close""#)
        .filter(|c| c.contains(&format!("closed seq {seq} ")))
        .filter_map(|c| c.split(r#"fill=""#).nth(1)?.split('"').next())
        .collect();
    assert_eq!(fills.len(), 2, "seq {seq}: {fills:?}");
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "nothing fetched"
    );

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("picture");
    std::fs::create_dir_all(&out).unwrap();
    let page = out.join("fork.html");
    let shot = out.join("fork.png");
    std::fs::write(&page, &html).unwrap();
    let _ = std::fs::remove_file(&shot);
    let status = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg("--window-size=1600,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    // Lanes are #444444; the darkest arrows (stage-3 votes) #08306b; the
    // violation line #d62728.
    let lanes = count(&png, [0x44, 0x44, 0x44], 12);
    let votes = count(&png, [0x08, 0x30, 0x6b], 20);
    let violation = count(&png, [0xd6, 0x27, 0x28], 20);
    assert!(lanes > 1500, "lane pixels: {lanes}");
    assert!(votes > 200, "stage-3 arrow pixels: {votes}");
    assert!(violation > 100, "violation pixels: {violation}");
    println!("picture and screenshot: {}", out.display());
}
