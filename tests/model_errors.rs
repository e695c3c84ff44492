//! Bad input to the model gives a clear error, never a panic.

mod common;

use common::cpu_device;
use memsieve::model::config::ModelConfig;
use memsieve::model::generate::GenerateOptions;
use memsieve::model::params::ParamLayout;
use memsieve::model::{AdamW, Model};
use memsieve::Error;

fn small() -> ModelConfig {
    let mut cfg = ModelConfig::tinymem_math(1);
    cfg.n_positions = 16;
    cfg
}

#[test]
fn token_id_outside_vocabulary_is_an_input_error() {
    let mut m = Model::new(cpu_device(), small(), 0).unwrap();
    let tokens = vec![1, 2, 14, 3];
    let err = m.forward(&tokens, None, 1, 4).unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
    assert!(err.to_string().contains("token id 14"), "{err}");
}

#[test]
fn sequence_longer_than_context_is_an_input_error() {
    let mut m = Model::new(cpu_device(), small(), 0).unwrap();
    let tokens = vec![1u32; 17];
    let err = m.forward(&tokens, None, 1, 17).unwrap_err();
    assert!(err.to_string().contains("longer than the model's context"), "{err}");
    let err = m
        .generate(&[vec![1, 2, 3]], &GenerateOptions { max_length: 17, min_length: 17, batch: 1 })
        .unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}

#[test]
fn nan_weight_is_refused_with_its_tensor_name() {
    let cfg = small();
    let layout = ParamLayout::new(&cfg);
    let mut p = memsieve::model::init_params(&cfg, &layout, 0);
    let v = layout.by_name("transformer.h.0.mlp.c_fc.weight").unwrap();
    p[v.offset + 7] = f32::NAN;
    let err = Model::from_params(cpu_device(), cfg, &p).err().unwrap();
    assert!(err.to_string().contains("transformer.h.0.mlp.c_fc.weight"), "{err}");
}

#[test]
fn non_finite_loss_stops_training_naming_the_step() {
    let cfg = small();
    let mut m = Model::new(cpu_device(), cfg, 0).unwrap();
    let tokens: Vec<u32> = (0..32).map(|i| (i % 14) as u32).collect();
    let targets = m.lm_targets(&tokens, 2, 16, false);
    let h = AdamW { lr: f32::INFINITY, ..AdamW::default() };
    m.train_step(&tokens, &targets, 2, 16, &h).unwrap(); // the loss of step 1 is finite; its update is not
    let err = m.train_step(&tokens, &targets, 2, 16, &h).unwrap_err();
    assert!(matches!(err, Error::Numerical(_)), "{err}");
    assert!(err.to_string().contains("step 2"), "{err}");
}

#[test]
fn bad_configs_are_refused() {
    let mut cfg = small();
    cfg.n_head = 3; // 128 is not divisible by 3
    assert!(Model::new(cpu_device(), cfg, 0).is_err());
    let mut cfg = small();
    cfg.eos_token_id = Some(99);
    assert!(Model::new(cpu_device(), cfg, 0).is_err());
    let mut cfg = small();
    cfg.vocab_size = 1 << 40; // out-of-memory size: refused before allocating
    assert!(Model::new(cpu_device(), cfg, 0).is_err());
}

#[test]
fn training_reduces_the_loss_and_is_deterministic() {
    let run = || {
        let mut m = Model::new(cpu_device(), small(), 3).unwrap();
        let tokens: Vec<u32> = (0..4 * 16).map(|i| ((i * 7) % 13) as u32).collect();
        let targets = m.lm_targets(&tokens, 4, 16, false);
        let h = AdamW { lr: 3e-3, ..AdamW::default() };
        (0..30).map(|_| m.train_step(&tokens, &targets, 4, 16, &h).unwrap()).collect::<Vec<_>>()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b, "same seed, same losses bit for bit");
    assert!(a[29] < 0.5 * a[0], "loss {} → {}", a[0], a[29]);
}
