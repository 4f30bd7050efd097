//! The base image documents the augmenter rewrites: configs, manifests and
//! indexes that an upstream registry sent, so any bytes at all.
#![no_main]

use berth_registry::augment::rewrite;
use berth_registry::augment::{Augmentation, InjectedLayer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let digest: berth_spec::Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
    let aug = Augmentation {
        layers: vec![InjectedLayer {
            digest: digest.clone(),
            size: 1,
            diff_id: digest,
            compressed: true,
        }],
        env: vec!["A=1".into()],
        labels: [("k".to_string(), "v".to_string())].into(),
        ..Augmentation::default()
    };
    // Never a panic; what comes out is JSON again, and the same every time.
    if let Ok(config) = rewrite::config(data, &aug, "id") {
        assert!(serde_json::from_slice::<serde_json::Value>(&config.bytes).is_ok());
        assert_eq!(rewrite::config(data, &aug, "id").unwrap(), config);
        let _ = rewrite::image_manifest(data, &config, &aug);
    }
    if let Ok(entries) = rewrite::index_entries(data) {
        let docs: Vec<_> = entries.iter().map(|_| None).collect();
        let _ = rewrite::index(data, &docs);
    }
});
