use super::*;
use crate::model::config::Activation;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique scratch directory, removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "memsieve-ckpt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tiny_cfg() -> ModelConfig {
    ModelConfig { n_embd: 8, n_head: 2, n_positions: 6, ..ModelConfig::tinymem_math(2) }
}

fn tiny_params(cfg: &ModelConfig) -> Vec<f32> {
    let n = ParamLayout::new(cfg).total;
    (0..n).map(|i| ((i as f32) * 0.37).sin() * 0.5).collect()
}

/// Write named f32 tensors (taken from `params` by layout view) under arbitrary names/dtypes.
fn write_custom(dir: &Path, cfg: &ModelConfig, tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>) {
    write_config(dir, cfg).unwrap();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(dir.join(MODEL_FILE), safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

fn f32_tensors(cfg: &ModelConfig, params: &[f32], rename: impl Fn(&str) -> String) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    ParamLayout::new(cfg)
        .views
        .iter()
        .map(|v| (rename(&v.name), Dtype::F32, v.shape.clone(), f32_le_bytes(&params[v.range()]).into_owned()))
        .collect()
}

fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn save_load_round_trip() {
    let d = TempDir::new("rt");
    let cfg = tiny_cfg();
    let p = tiny_params(&cfg);
    save_model(d.path(), &cfg, &p, &[("epoch", "3500")]).unwrap();
    let m = load_model_with_metadata(d.path()).unwrap();
    assert_eq!(m.config, cfg);
    assert_eq!(m.params, p);
    assert_eq!(m.metadata.get("format").map(String::as_str), Some("pt"));
    assert_eq!(m.metadata.get("epoch").map(String::as_str), Some("3500"));
    // The file path works too, and no lm_head was written.
    let (cfg2, p2) = load_model(d.path().join(MODEL_FILE)).unwrap();
    assert_eq!((cfg2, p2), (cfg.clone(), p.clone()));
    let buf = std::fs::read(d.path().join(MODEL_FILE)).unwrap();
    let st = SafeTensors::deserialize(&buf).unwrap();
    assert!(st.names().iter().all(|n| n.starts_with("transformer.")));
    assert_eq!(st.len(), ParamLayout::new(&cfg).views.len());
    // config.json has the HF keys.
    let cj: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(cj["model_type"], "gpt2");
    assert_eq!(cj["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(cj["activation_function"], "relu");
    assert_eq!(cj["layer_norm_epsilon"], json!(1e-5));
    assert_eq!(cj["n_inner"], serde_json::Value::Null);
    assert_eq!(cj["tie_word_embeddings"], true);
    assert_eq!(cj["pad_token_id"], 13);
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn save_refuses_bad_input() {
    let d = TempDir::new("savebad");
    let cfg = tiny_cfg();
    let mut p = tiny_params(&cfg);
    assert!(err_text(save_model(d.path(), &cfg, &p[1..], &[])).contains("needs"));
    assert!(save_model(d.path(), &cfg, &p, &[("format", "x")]).is_err());
    p[3] = f32::NAN;
    assert!(err_text(save_model(d.path(), &cfg, &p, &[])).contains("transformer.wte.weight"));
}

#[test]
fn loads_without_transformer_prefix_and_with_mask_buffers() {
    let d = TempDir::new("bare");
    let cfg = tiny_cfg();
    let p = tiny_params(&cfg);
    let mut t = f32_tensors(&cfg, &p, |n| n.strip_prefix("transformer.").unwrap().to_string());
    // Older checkpoints carry causal-mask buffers; they are ignored.
    for l in 0..cfg.n_layer {
        t.push((format!("h.{l}.attn.bias"), Dtype::U8, vec![1, 1, 6, 6], vec![1; 36]));
        t.push((format!("h.{l}.attn.masked_bias"), Dtype::F32, vec![], (-1e4f32).to_le_bytes().to_vec()));
    }
    write_custom(d.path(), &cfg, t);
    let (c, q) = load_model(d.path()).unwrap();
    assert_eq!(c, cfg);
    assert_eq!(q, p);
}

#[test]
fn lm_head_equal_ok_different_err() {
    let cfg = tiny_cfg();
    let p = tiny_params(&cfg);
    let wte = ParamLayout::new(&cfg).by_name("transformer.wte.weight").unwrap().clone();
    let head = |delta: f32| {
        let mut h = p[wte.range()].to_vec();
        h[5] += delta;
        ("lm_head.weight".to_string(), Dtype::F32, wte.shape.clone(), f32_le_bytes(&h).into_owned())
    };
    let d = TempDir::new("head-ok");
    let mut t = f32_tensors(&cfg, &p, |n| n.to_string());
    t.push(head(0.0));
    write_custom(d.path(), &cfg, t);
    assert_eq!(load_model(d.path()).unwrap().1, p);

    let d = TempDir::new("head-bad");
    let mut t = f32_tensors(&cfg, &p, |n| n.to_string());
    t.push(head(0.25));
    write_custom(d.path(), &cfg, t);
    let e = err_text(load_model(d.path()));
    assert!(e.contains("lm_head.weight") && e.contains("index 5"), "{e}");
}

#[test]
fn truncated_file_is_an_error() {
    let d = TempDir::new("trunc");
    let cfg = tiny_cfg();
    save_model(d.path(), &cfg, &tiny_params(&cfg), &[]).unwrap();
    let f = d.path().join(MODEL_FILE);
    let bytes = std::fs::read(&f).unwrap();
    for cut in [bytes.len() / 2, 4, 0, bytes.len() - 1] {
        std::fs::write(&f, &bytes[..cut]).unwrap();
        let e = err_text(load_model(d.path()));
        assert!(e.contains("not a valid safetensors"), "{e}");
    }
    // Garbage header.
    let mut junk = 100u64.to_le_bytes().to_vec();
    junk.extend([b'x'; 100]);
    std::fs::write(&f, &junk).unwrap();
    assert!(err_text(load_model(d.path())).contains("not a valid safetensors"));
}

#[test]
fn wrong_shape_names_the_tensor() {
    let d = TempDir::new("shape");
    let cfg = tiny_cfg();
    let p = tiny_params(&cfg);
    let mut t = f32_tensors(&cfg, &p, |n| n.to_string());
    let i = t.iter().position(|x| x.0 == "transformer.h.1.mlp.c_fc.weight").unwrap();
    t[i].2 = vec![32, 8]; // transposed (PyTorch Linear layout)
    write_custom(d.path(), &cfg, t);
    let e = err_text(load_model(d.path()));
    assert!(e.contains("transformer.h.1.mlp.c_fc.weight") && e.contains("[32, 8]") && e.contains("[8, 32]"), "{e}");
}

#[test]
fn unknown_and_missing_tensors() {
    let cfg = tiny_cfg();
    let p = tiny_params(&cfg);
    let d = TempDir::new("unknown");
    let mut t = f32_tensors(&cfg, &p, |n| n.to_string());
    t.push(("score.weight".into(), Dtype::F32, vec![2], vec![0; 8]));
    write_custom(d.path(), &cfg, t);
    let e = err_text(load_model(d.path()));
    assert!(e.contains("unknown") && e.contains("score.weight"), "{e}");

    // A layer beyond n_layer is unknown too.
    let d = TempDir::new("unknown2");
    let mut t = f32_tensors(&cfg, &p, |n| n.to_string());
    t.push(("transformer.h.2.ln_1.bias".into(), Dtype::F32, vec![8], vec![0; 32]));
    write_custom(d.path(), &cfg, t);
    assert!(err_text(load_model(d.path())).contains("transformer.h.2.ln_1.bias"));

    let d = TempDir::new("missing");
    let t: Vec<_> = f32_tensors(&cfg, &p, |n| n.to_string())
        .into_iter()
        .filter(|x| x.0 != "transformer.ln_f.bias")
        .collect();
    write_custom(d.path(), &cfg, t);
    let e = err_text(load_model(d.path()));
    assert!(e.contains("missing") && e.contains("transformer.ln_f.bias"), "{e}");
}

#[test]
fn non_finite_weight_names_the_tensor() {
    let cfg = tiny_cfg();
    for bad in [f32::NAN, f32::INFINITY] {
        let d = TempDir::new("nan");
        let mut p = tiny_params(&cfg);
        let v = ParamLayout::new(&cfg).by_name("transformer.h.0.attn.c_proj.bias").unwrap().clone();
        p[v.offset + 2] = bad;
        write_custom(d.path(), &cfg, f32_tensors(&cfg, &p, |n| n.to_string()));
        let e = err_text(load_model(d.path()));
        assert!(e.contains("transformer.h.0.attn.c_proj.bias") && e.contains("non-finite"), "{e}");
    }
}

#[test]
fn f16_and_bf16_load() {
    let cfg = tiny_cfg();
    let p = tiny_params(&cfg);
    let layout = ParamLayout::new(&cfg);
    for dt in [Dtype::F16, Dtype::BF16] {
        let d = TempDir::new("half");
        let t = layout
            .views
            .iter()
            .map(|v| {
                let bytes: Vec<u8> = p[v.range()]
                    .iter()
                    .flat_map(|x| match dt {
                        Dtype::F16 => half::f16::from_f32(*x).to_le_bytes(),
                        _ => half::bf16::from_f32(*x).to_le_bytes(),
                    })
                    .collect();
                (v.name.clone(), dt, v.shape.clone(), bytes)
            })
            .collect();
        write_custom(d.path(), &cfg, t);
        let (_, q) = load_model(d.path()).unwrap();
        let want: Vec<f32> = p
            .iter()
            .map(|x| match dt {
                Dtype::F16 => half::f16::from_f32(*x).to_f32(),
                _ => half::bf16::from_f32(*x).to_f32(),
            })
            .collect();
        assert_eq!(q, want, "{dt}");
    }
    // Integer dtypes are refused, naming the tensor.
    let d = TempDir::new("int");
    let mut t = f32_tensors(&cfg, &p, |n| n.to_string());
    t[0].1 = Dtype::I32;
    write_custom(d.path(), &cfg, t);
    let e = err_text(load_model(d.path()));
    assert!(e.contains("transformer.wte.weight") && e.contains("I32"), "{e}");
}

#[test]
fn config_json_parsing() {
    let cfg = tiny_cfg();
    let good = config_to_hf_json(&cfg);
    assert_eq!(config_from_hf_json(&good).unwrap(), cfg);

    // A transformers-style config with extra keys and some keys left out.
    let hf = json!({
        "_name_or_path": "x", "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "activation_function": "relu", "n_embd": 128, "n_head": 4, "n_layer": 2, "n_positions": 150,
        "vocab_size": 14, "bos_token_id": 10, "eos_token_id": 11, "transformers_version": "4.46.0",
        "summary_type": "cls_index", "use_cache": true, "torch_dtype": "float32"
    });
    let c = config_from_hf_json(&hf).unwrap();
    assert_eq!((c.n_layer, c.n_embd, c.n_head, c.n_positions, c.vocab_size), (2, 128, 4, 150, 14));
    assert_eq!((c.bos_token_id, c.eos_token_id, c.pad_token_id), (Some(10), Some(11), None));
    assert_eq!(c.layer_norm_epsilon, 1e-5);
    assert_eq!(c.initializer_range, 0.02);

    // Empty config = GPT-2 small.
    let c = config_from_hf_json(&json!({})).unwrap();
    assert_eq!((c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head), (50257, 1024, 768, 12, 12));
    assert_eq!((c.activation, c.bos_token_id), (Activation::GeluNew, Some(50256)));

    let with = |k: &str, v: serde_json::Value| {
        let mut j = good.clone();
        j[k] = v;
        config_from_hf_json(&j)
    };
    assert!(err_text(with("activation_function", json!("swish"))).contains("swish"));
    assert!(err_text(with("model_type", json!("llama"))).contains("llama"));
    assert!(err_text(with("n_inner", json!(64))).contains("n_inner"));
    assert!(with("n_inner", json!(32)).is_ok());
    assert!(err_text(with("scale_attn_weights", json!(false))).contains("scale_attn_weights"));
    assert!(err_text(with("scale_attn_by_inverse_layer_idx", json!(true))).contains("inverse_layer_idx"));
    assert!(with("reorder_and_upcast_attn", json!(true)).is_ok());
    assert!(err_text(with("tie_word_embeddings", json!(false))).contains("tie_word_embeddings"));
    assert!(err_text(with("n_head", json!(3))).contains("divisible"));
    assert!(err_text(with("n_embd", json!("eight"))).contains("n_embd"));
    assert!(with("activation_function", json!("gelu_pytorch_tanh")).unwrap().activation == Activation::GeluNew);

    // Through the loader: bad activation in config.json is an error naming the file.
    let d = TempDir::new("badact");
    save_model(d.path(), &cfg, &tiny_params(&cfg), &[]).unwrap();
    let mut j = good.clone();
    j["activation_function"] = json!("silu");
    std::fs::write(d.path().join(CONFIG_FILE), j.to_string()).unwrap();
    let e = err_text(load_model(d.path()));
    assert!(e.contains("silu") && e.contains("config.json"), "{e}");
    std::fs::write(d.path().join(CONFIG_FILE), "{not json").unwrap();
    assert!(err_text(load_model(d.path())).contains("not valid JSON"));
}

#[test]
fn missing_paths_and_pickles() {
    let d = TempDir::new("missing-dir");
    let e = err_text(load_model(d.path().join("nope")));
    assert!(e.contains("does not exist"), "{e}");
    let e = err_text(load_model(d.path()));
    assert!(e.contains("no model.safetensors"), "{e}");
    std::fs::write(d.path().join("pytorch_model.bin"), b"PK").unwrap();
    let e = err_text(load_model(d.path()));
    assert!(e.contains("pytorch_model.bin") && e.contains("safe_serialization=True"), "{e}");
    let e = err_text(load_model(d.path().join("pytorch_model.bin")));
    assert!(e.contains("safe_serialization=True"), "{e}");
    // Weights without config.json.
    let cfg = tiny_cfg();
    save_model(d.path(), &cfg, &tiny_params(&cfg), &[]).unwrap();
    std::fs::remove_file(d.path().join(CONFIG_FILE)).unwrap();
    assert!(err_text(load_model(d.path())).contains("config.json"));
    assert!(load_train_state(d.path().join("nope")).is_err());
    assert!(err_text(load_train_state(d.path())).contains("missing"));
}

#[test]
fn sharded_checkpoint_loads() {
    let d = TempDir::new("shard");
    let cfg = tiny_cfg();
    let p = tiny_params(&cfg);
    let t = f32_tensors(&cfg, &p, |n| n.to_string());
    let (a, b) = t.split_at(t.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [a, b].into_iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let views: Vec<(String, TensorView)> =
            part.iter().map(|(n, dt, s, by)| (n.clone(), TensorView::new(*dt, s.clone(), by).unwrap())).collect();
        for (n, _) in &views {
            weight_map.insert(n.clone(), json!(file));
        }
        std::fs::write(d.path().join(&file), safetensors::serialize(views, None).unwrap()).unwrap();
    }
    std::fs::write(d.path().join(MODEL_INDEX_FILE), json!({"metadata": {}, "weight_map": weight_map}).to_string()).unwrap();
    write_config(d.path(), &cfg).unwrap();
    assert_eq!(load_model(d.path()).unwrap().1, p);
}

fn tiny_state(n: usize) -> TrainState {
    let mut s = TrainState::new(n, 3, crate::model::AdamW::default(), json!({"data_name": "mult", "num_extra": 3000}));
    s.step = 1234;
    s.epoch = 7;
    s.batch_in_epoch = 42;
    s.batch = Some(64);
    s.mask_pad = Some(true);
    s.m = (0..n).map(|i| (i as f32 * 0.1).cos() * 1e-3).collect();
    s.v = (0..n).map(|i| (i as f32 * 0.2).sin().abs() * 1e-6).collect();
    s.metrics = vec![json!({"epoch": 5, "train_loss": 1.25}), json!({"epoch": 6, "train_loss": 1.0})];
    s
}

#[test]
fn train_state_round_trip() {
    let d = TempDir::new("state");
    let cfg = tiny_cfg();
    let p = tiny_params(&cfg);
    let s = tiny_state(p.len());
    save_checkpoint(d.path(), &cfg, &p, &s, &[("run", "abc")]).unwrap();
    assert_eq!(load_train_state(d.path()).unwrap(), s);
    let ck = load_checkpoint(d.path()).unwrap();
    assert_eq!(ck.model.params, p);
    assert_eq!(ck.train.as_ref(), Some(&s));
    assert_eq!(ck.model.metadata.get("epoch").map(String::as_str), Some("7"));
    assert_eq!(ck.model.metadata.get("run").map(String::as_str), Some("abc"));
    // A state written before the batch was recorded still loads, without it.
    let path = d.path().join(TRAINER_STATE_FILE);
    let mut js: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(js["batch"], 64);
    js.as_object_mut().unwrap().retain(|k, _| k != "batch" && k != "mask_pad");
    std::fs::write(&path, js.to_string()).unwrap();
    assert_eq!(load_train_state(d.path()).unwrap(), TrainState { batch: None, mask_pad: None, ..s.clone() });

    // Length mismatch vs the model.
    let short = tiny_state(p.len() - 1);
    assert!(err_text(save_checkpoint(d.path(), &cfg, &p, &short, &[])).contains("model has"));
    save_train_state(d.path(), &short).unwrap();
    assert!(err_text(load_train_state(d.path())).contains("model has"));
    let mut uneven = tiny_state(p.len());
    uneven.v.pop();
    assert!(save_train_state(d.path(), &uneven).is_err());

    // A save interrupted between the model and the train state is detected.
    let mut later = s.clone();
    later.step += 1;
    save_train_state(d.path(), &later).unwrap();
    assert!(err_text(load_checkpoint(d.path())).contains("interrupted"));
    // ... and between the two train-state files.
    let opt = std::fs::read(d.path().join(OPTIMIZER_FILE)).unwrap();
    save_train_state(d.path(), &s).unwrap();
    std::fs::write(d.path().join(OPTIMIZER_FILE), opt).unwrap();
    assert!(err_text(load_train_state(d.path())).contains("interrupted"));
    // Truncated optimizer file.
    let opt = std::fs::read(d.path().join(OPTIMIZER_FILE)).unwrap();
    std::fs::write(d.path().join(OPTIMIZER_FILE), &opt[..opt.len() / 2]).unwrap();
    assert!(err_text(load_train_state(d.path())).contains("not a valid safetensors"));
}

#[test]
fn model_only_checkpoint_has_no_train_state() {
    let d = TempDir::new("noopt");
    let cfg = tiny_cfg();
    save_model(d.path(), &cfg, &tiny_params(&cfg), &[]).unwrap();
    assert!(load_checkpoint(d.path()).unwrap().train.is_none());
}
