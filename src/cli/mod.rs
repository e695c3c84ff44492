//! Command implementations behind `src/main.rs`: each takes parsed arguments and returns a Result,
//! prints a readable table and writes machine-readable JSON.

pub mod attention;
pub mod bench;
pub mod data;
pub mod info;
pub mod report;
pub mod screen;
pub mod demo;
pub mod eval;
pub mod experiment;
pub mod finetune;
pub mod generate;
pub mod localize;
pub mod train;
pub mod unlearn;

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{CudaDriverBackend, CudaEmuBackend};
use crate::backend::wgpu::WgpuBackend;
use crate::backend::{resolve, Backend, BackendChoice, Device};
use crate::error::Result;
use std::sync::{Arc, Mutex};

/// Options every command shares.
pub struct Context {
    pub backend: BackendChoice,
    pub profile: bool,
    /// cpu worker threads (0: all cores).
    pub threads: usize,
    /// `--trace FILE`: a Chrome/Perfetto trace of every op and host phase.
    pub trace: Option<std::path::PathBuf>,
    /// A wgpu device `auto` already opened while choosing.
    opened_wgpu: Mutex<Option<WgpuBackend>>,
    /// A CUDA device `auto` already opened while choosing.
    opened_cuda: Mutex<Option<CudaDriverBackend>>,
}

/// Run `$body` with `$dev: &Arc<Device<B>>` on the backend the context resolves to (the body is
/// compiled once per backend), then print the profile if one was asked for.
macro_rules! on_device {
    ($ctx:expr, |$dev:ident| $body:expr) => {{
        let ctx: &$crate::cli::Context = $ctx;
        match ctx.choose()? {
            $crate::backend::BackendChoice::Wgpu => {
                let d = ctx.wgpu_device()?;
                let $dev = &d;
                let r = $body;
                ctx.finish(&d)?;
                r
            }
            $crate::backend::BackendChoice::Cuda => {
                let d = ctx.cuda_device()?;
                let $dev = &d;
                let r = $body;
                ctx.finish(&d)?;
                r
            }
            $crate::backend::BackendChoice::CudaEmu => {
                let d = ctx.cuda_emu_device()?;
                let $dev = &d;
                let r = $body;
                ctx.finish(&d)?;
                r
            }
            _ => {
                let d = ctx.cpu_device()?;
                let $dev = &d;
                let r = $body;
                ctx.finish(&d)?;
                r
            }
        }
    }};
}
pub(crate) use on_device;

impl Context {
    pub fn new(backend: BackendChoice, profile: bool, threads: usize) -> Self {
        Context { backend, profile, threads, trace: None, opened_wgpu: Mutex::new(None), opened_cuda: Mutex::new(None) }
    }

    /// Record a trace of the run into `path` (written when the command finishes).
    pub fn with_trace(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.trace = path;
        self
    }

    /// Turn the device's profiler on as `--profile`/`--trace` ask.
    fn configure<B: Backend>(&self, dev: Device<B>) -> Arc<Device<B>> {
        dev.profile.enable(self.profile || self.trace.is_some());
        if self.trace.is_some() {
            dev.profile.enable_trace();
        }
        Arc::new(dev)
    }

    /// The backend to run on. `auto` takes wgpu only when it finds a real (non-CPU) GPU adapter and can
    /// open it; otherwise cpu, saying why on stderr.
    pub fn choose(&self) -> Result<BackendChoice> {
        let choice = resolve(self.backend)?;
        if self.backend == BackendChoice::Auto && choice == BackendChoice::Cuda {
            match CudaDriverBackend::new(0) {
                Ok(b) => {
                    eprintln!("backend: cuda on {} (auto)", b.describe());
                    *self.opened_cuda.lock().unwrap() = Some(b);
                }
                Err(e) => {
                    eprintln!("backend: cpu (auto; the CUDA device could not be opened: {e})");
                    return Ok(BackendChoice::Cpu);
                }
            }
        }
        if self.backend == BackendChoice::Auto && choice == BackendChoice::Wgpu {
            match WgpuBackend::new() {
                Ok(b) => {
                    eprintln!("backend: wgpu on {} (auto)", b.adapter.name);
                    *self.opened_wgpu.lock().unwrap() = Some(b);
                }
                Err(e) => {
                    eprintln!("backend: cpu (auto; the GPU adapter could not be opened: {e})");
                    return Ok(BackendChoice::Cpu);
                }
            }
        }
        Ok(choice)
    }

    pub fn cpu_device(&self) -> Result<Arc<Device<CpuBackend>>> {
        Ok(self.configure(Device::new(CpuBackend::with_threads(self.threads))))
    }

    pub fn cuda_device(&self) -> Result<Arc<Device<CudaDriverBackend>>> {
        let backend = match self.opened_cuda.lock().unwrap().take() {
            Some(b) => b,
            None => CudaDriverBackend::new(0)?,
        };
        Ok(self.configure(Device::new(backend)))
    }

    pub fn cuda_emu_device(&self) -> Result<Arc<Device<CudaEmuBackend>>> {
        Ok(self.configure(Device::new(CudaEmuBackend::emulator()?)))
    }

    pub fn wgpu_device(&self) -> Result<Arc<Device<WgpuBackend>>> {
        let backend = match self.opened_wgpu.lock().unwrap().take() {
            Some(b) => b,
            None => WgpuBackend::new()?,
        };
        Ok(self.configure(Device::new(backend)))
    }

    /// Print the profile and write the trace, as asked.
    pub fn finish<B: Backend>(&self, dev: &Device<B>) -> Result<()> {
        if self.profile {
            let name = dev.backend.name();
            let how = dev.backend.timing().label();
            eprintln!("\nper-kernel profile ({name} backend, {how}, synchronized per op):\n{}", dev.profile_table());
            let c = dev.backend.counters();
            if c != Default::default() {
                eprintln!(
                    "{name}: {} dispatches in {} submissions; {:.2} MB uploaded, {:.2} MB downloaded",
                    c.dispatches, c.submits, c.bytes_up as f64 / 1e6, c.bytes_down as f64 / 1e6
                );
            }
        }
        if let Some(path) = &self.trace {
            dev.write_trace(path)?;
            eprintln!("trace: {} (open in https://ui.perfetto.dev or chrome://tracing)", path.display());
        }
        Ok(())
    }
}

/// What a model is evaluated on: a TinyMem data description (regenerated from its seed) or rows of a
/// JSONL token file.
#[allow(clippy::large_enum_variant)]
pub enum EvalData {
    Math(crate::data::MathDataset),
    Rows(crate::data::TokenMatrix),
}

/// `--data FILE` (data.json or .jsonl), by default the data.json beside the model.
pub fn load_eval_data(model: &std::path::Path, data: Option<&std::path::Path>, cfg: &crate::model::config::ModelConfig) -> Result<EvalData> {
    use crate::error::Error;
    let path = match data {
        Some(p) => p.to_path_buf(),
        None => {
            let beside = if model.is_dir() { model.join("data.json") } else { model.with_file_name("data.json") };
            if !beside.exists() {
                return Err(Error::Input(format!("no --data given and no {} beside the model", beside.display())));
            }
            beside
        }
    };
    if path.extension().is_some_and(|e| e == "jsonl") {
        let pad = cfg.pad_token_id.unwrap_or(0);
        return Ok(EvalData::Rows(crate::data::load_jsonl(&path, cfg.vocab_size, cfg.n_positions, pad)?.tokens));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let dcfg: crate::data::MathDataConfig = serde_json::from_str(&text)
        .map_err(|e| Error::Data(format!("{} is not a TinyMem data description: {e}", path.display())))?;
    dcfg.validate()?;
    if dcfg.max_ctx > cfg.n_positions {
        return Err(Error::Input(format!("the data's context {} is longer than the model's {}", dcfg.max_ctx, cfg.n_positions)));
    }
    Ok(EvalData::Math(crate::data::MathDataset::generate(&dcfg)?))
}

/// Write pretty JSON atomically.
pub fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serializable");
    crate::error::write_atomic(path, text.as_bytes())
}
