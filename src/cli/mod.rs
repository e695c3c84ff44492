//! Command implementations behind `src/main.rs`: each takes parsed arguments and returns a Result,
//! prints a readable table and writes machine-readable JSON.

pub mod data;
pub mod report;
pub mod demo;
pub mod eval;
pub mod generate;
pub mod train;

use crate::backend::cpu::CpuBackend;
use crate::backend::{resolve, BackendChoice, Device};
use crate::error::Result;
use std::sync::Arc;

/// Options every command shares.
pub struct Context {
    pub backend: BackendChoice,
    pub profile: bool,
    /// cpu worker threads (0: all cores).
    pub threads: usize,
}

impl Context {
    /// The device for the chosen backend. Only the cpu backend exists yet, so the other choices
    /// resolve to a clear error (and `auto` to cpu).
    pub fn cpu_device(&self) -> Result<Arc<Device<CpuBackend>>> {
        match resolve(self.backend)? {
            BackendChoice::Cpu => {}
            // `auto` found a GPU, but the commands dispatch to the cpu backend only so far.
            _ if self.backend == BackendChoice::Auto => {}
            other => {
                return Err(crate::error::Error::Backend(format!(
                    "the {other:?} backend is available, but this command does not dispatch to it yet; use --backend cpu"
                )))
            }
        }
        let dev = Arc::new(Device::new(CpuBackend::with_threads(self.threads)));
        dev.profile.enable(self.profile);
        Ok(dev)
    }

    pub fn finish(&self, dev: &Device<CpuBackend>) {
        if self.profile {
            eprintln!("\nper-op profile (cpu backend, wall time):\n{}", dev.profile.table());
        }
    }
}

/// `memsieve info`: what this machine can run.
pub fn info() -> Result<()> {
    println!("memsieve {}", env!("CARGO_PKG_VERSION"));
    println!("backends:");
    println!("  cpu      available ({} threads)", CpuBackend::new().threads());
    for (name, choice) in [("wgpu", BackendChoice::Wgpu), ("cuda", BackendChoice::Cuda), ("cuda-emu", BackendChoice::CudaEmu)] {
        match resolve(choice) {
            Ok(_) => println!("  {name:<8} available"),
            Err(e) => println!("  {name:<8} unavailable: {e}"),
        }
    }
    for line in crate::backend::cuda::info_lines() {
        println!("  {line}");
    }
    println!("auto  → {:?}", resolve(BackendChoice::Auto)?);
    Ok(())
}

/// Write pretty JSON atomically.
pub fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serializable");
    crate::error::write_atomic(path, text.as_bytes())
}
