//! Shared test helpers: one cpu device, fixture loading, tolerance checks.
#![allow(dead_code)]

use memsieve::backend::cpu::CpuBackend;
pub mod parity;

use memsieve::backend::Device;
use memsieve::model::config::ModelConfig;
use memsieve::model::params::ParamLayout;
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub fn cpu_device() -> Arc<Device<CpuBackend>> {
    static DEV: OnceLock<Arc<Device<CpuBackend>>> = OnceLock::new();
    DEV.get_or_init(|| Arc::new(Device::new(CpuBackend::new()))).clone()
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// One golden fixture file written by tests/gen_fixtures.py.
pub struct Fixture {
    bytes: Vec<u8>,
    pub cfg: ModelConfig,
    pub params: Vec<f32>,
    pub tokens: Vec<u32>,
    pub b: usize,
    pub t: usize,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let path = fixture_path(&format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run tests/gen_fixtures.py)", path.display()));
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let hf: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
        let cfg = memsieve::checkpoint::config_from_hf_json(&hf).unwrap();
        let mut f = Fixture { bytes, cfg: cfg.clone(), params: vec![], tokens: vec![], b: 0, t: 0 };
        let layout = ParamLayout::new(&cfg);
        let mut params = vec![0f32; layout.total];
        for v in &layout.views {
            let t = f.tensor(&v.name);
            assert_eq!(t.len(), v.len(), "{}", v.name);
            params[v.range()].copy_from_slice(&t);
        }
        f.params = params;
        let st = SafeTensors::deserialize(&f.bytes).unwrap();
        let shape = st.tensor("tokens").unwrap().shape().to_vec();
        f.b = shape[0];
        f.t = shape[1];
        f.tokens = f.ints("tokens");
        f
    }

    pub fn tensor(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture has no tensor {name}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    pub fn ints(&self, name: &str) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        match t.dtype() {
            Dtype::I32 => t.data().chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32).collect(),
            Dtype::I64 => t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect(),
            d => panic!("{name}: unexpected dtype {d:?}"),
        }
    }

    pub fn int_rows(&self, name: &str) -> Vec<Vec<u32>> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let cols = st.tensor(name).unwrap().shape()[1];
        self.ints(name).chunks(cols).map(|r| r.to_vec()).collect()
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// |a − b| ≤ atol + rtol·|b| elementwise, reporting the worst offender.
pub fn assert_close(a: &[f32], b: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let excess = (x - y).abs() - (atol + rtol * y.abs());
        if !(excess <= worst.1) || x.is_nan() {
            worst = (i, if x.is_nan() { f32::INFINITY } else { excess });
        }
    }
    assert!(worst.1 <= 0.0, "{what}: element {} is {} vs reference {} (atol {atol}, rtol {rtol})", worst.0, a[worst.0], b[worst.0]);
}


/// The shared wgpu device of this test binary, or None (with a loud notice) where no Vulkan adapter
/// exists. Under CI (`CI=true`) a missing adapter fails the test instead: CI installs lavapipe.
pub fn wgpu_device() -> Option<Arc<Device<memsieve::backend::wgpu::WgpuBackend>>> {
    static DEV: OnceLock<Option<Arc<Device<memsieve::backend::wgpu::WgpuBackend>>>> = OnceLock::new();
    DEV.get_or_init(|| match memsieve::backend::wgpu::WgpuBackend::new() {
        Ok(b) => {
            eprintln!("wgpu tests run on {} ({:?})", b.adapter.name, b.adapter.device_type);
            Some(Arc::new(Device::new(b)))
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but no wgpu adapter: {e}");
            }
            eprintln!("\n!!!!!!!! SKIPPING wgpu tests: {e} !!!!!!!!\n");
            None
        }
    })
    .clone()
}

/// A small TinyMem run trained on the cpu into `dir` for one epoch (300 clean starts, 40 test rows,
/// 6 noised sequences: it memorizes nothing yet), with `data.json` beside the model; returns the
/// arguments it was trained with.
pub fn train_small_run(dir: PathBuf, layers: usize) -> memsieve::cli::train::TrainArgs {
    let mut a = memsieve::cli::demo::preset_args(memsieve::cli::demo::Preset::Small, dir);
    a.data.num_7 = 300;
    a.data.num_test = 40;
    a.data.num_noise = 6;
    a.layers = layers;
    a.epochs = 1;
    a.checkpoint_every = 0;
    memsieve::cli::train::train_run(&cpu_device(), &a).unwrap();
    a
}

/// Deterministic values in [-1, 1) without a device pair (for host-side inputs).
pub fn parity_free_random(n: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A tiny training run: 1 layer, a few hundred short rows, evaluated and saved every epoch.
pub fn tiny_train_args(out: PathBuf, epochs: usize) -> memsieve::cli::train::TrainArgs {
    let mut a = memsieve::cli::demo::preset_args(memsieve::cli::demo::Preset::Small, out);
    a.data.num_7 = 300;
    a.data.num_extra = 0;
    a.data.num_test = 50;
    a.data.num_noise = 20;
    a.data.dup_powers = vec![0, 1];
    a.layers = 1;
    a.epochs = epochs;
    a.eval_every = 1;
    a.checkpoint_every = 1;
    a
}
