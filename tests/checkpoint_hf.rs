//! Checkpoints written by transformers' `save_pretrained` load into memsieve with the same weights
//! as the golden fixtures (tests/fixtures/README.md), and memsieve's own save is read back
//! identically.

use memsieve::checkpoint::{load_model, load_model_with_metadata, save_model};
use memsieve::model::config::Activation;
use memsieve::model::params::ParamLayout;
use safetensors::tensor::{Dtype, SafeTensors};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    assert!(p.exists(), "missing fixture {} (generate with `python3 tests/gen_fixtures.py`)", p.display());
    p
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Every parameter of the golden file equals the loaded flat buffer, bit for bit.
fn check_against_golden(hf_dir: &str, golden: &str) -> memsieve::model::config::ModelConfig {
    let (cfg, params) = load_model(fixture(hf_dir)).unwrap();
    let layout = ParamLayout::new(&cfg);
    assert_eq!(params.len(), layout.total);
    let buf = std::fs::read(fixture(golden)).unwrap();
    let st = SafeTensors::deserialize(&buf).unwrap();
    for v in &layout.views {
        let t = st.tensor(&v.name).unwrap_or_else(|_| panic!("{golden} lacks {}", v.name));
        assert_eq!(t.dtype(), Dtype::F32);
        assert_eq!(t.shape(), v.shape.as_slice(), "{}", v.name);
        let want = f32s(t.data());
        let got = &params[v.range()];
        assert!(
            want.iter().zip(got).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} differs from {golden}",
            v.name
        );
    }
    cfg
}

#[test]
fn hf_relu_l1_loads() {
    let cfg = check_against_golden("hf_relu_l1", "relu_l1.safetensors");
    assert_eq!((cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions, cfg.vocab_size), (1, 128, 4, 150, 14));
    assert_eq!(cfg.activation, Activation::Relu);
    assert_eq!((cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id), (Some(10), Some(11), Some(13)));
    assert_eq!(cfg.layer_norm_epsilon, 1e-5);
    assert_eq!(cfg.initializer_range, 0.2);
}

#[test]
fn hf_gelunew_l3_loads() {
    let cfg = check_against_golden("hf_gelunew_l3", "gelunew_l3.safetensors");
    assert_eq!((cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions, cfg.vocab_size), (3, 64, 4, 40, 23));
    assert_eq!(cfg.activation, Activation::GeluNew);
    assert_eq!((cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id), (Some(1), Some(2), Some(0)));
}

/// memsieve's save of an HF checkpoint holds the same tensors, names and bytes as transformers'.
#[test]
fn resave_matches_transformers_file() {
    let src = fixture("hf_relu_l1");
    let (cfg, params) = load_model(&src).unwrap();
    let out = std::env::temp_dir().join(format!("memsieve-ckpt-hf-resave-{}", std::process::id()));
    save_model(&out, &cfg, &params, &[("epoch", "0")]).unwrap();
    let m = load_model_with_metadata(&out).unwrap();
    assert_eq!((&m.config, &m.params), (&cfg, &params));
    assert_eq!(m.metadata.get("format").map(String::as_str), Some("pt"));

    let a = std::fs::read(src.join("model.safetensors")).unwrap();
    let b = std::fs::read(out.join("model.safetensors")).unwrap();
    let (sa, sb) = (SafeTensors::deserialize(&a).unwrap(), SafeTensors::deserialize(&b).unwrap());
    let (mut na, mut nb) = (sa.names(), sb.names());
    na.sort();
    nb.sort();
    assert_eq!(na, nb);
    for n in na {
        let (ta, tb) = (sa.tensor(n).unwrap(), sb.tensor(n).unwrap());
        assert_eq!((ta.dtype(), ta.shape(), ta.data()), (tb.dtype(), tb.shape(), tb.data()), "{n}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
