//! `memsieve info`: the machine (CPU identity, SIMD, FMA assumption, clock, derived and measured
//! peaks, measured memory bandwidth) and the backends it can run, with their devices' figures.

use crate::backend::cpu::CpuBackend;
use crate::backend::{resolve, BackendChoice};
use crate::error::Result;

/// `memsieve info`
pub fn run(threads: usize) -> Result<()> {
    println!("memsieve {}", env!("CARGO_PKG_VERSION"));
    let m = crate::machine::machine(threads);
    let c = &m.cpu;
    println!("machine:");
    println!("  cpu    {} ({} logical CPUs)", c.model, c.logical_cpus);
    println!("         SIMD {} ({} f32 lanes); FMA units {} (assumed: {})", c.simd, c.simd_f32_lanes, c.fma_units, c.fma_assumption);
    println!("         clock {:.2} GHz ({})", c.clock_ghz, c.clock_source);
    println!(
        "         peak fp32 at {} threads: {:.1} GFLOP/s derived ({} × {} × {} × 2 × {:.2} GHz), {:.1} GFLOP/s measured (FMA loop)",
        m.threads, m.peak_gflops_derived, m.threads, c.simd_f32_lanes, c.fma_units, c.clock_ghz, m.fma_gflops_measured
    );
    if m.fma_gflops_measured > m.peak_gflops_derived {
        let ghz = m.fma_gflops_measured / (m.threads as f64 * c.simd_f32_lanes as f64 * c.fma_units * 2.0);
        println!("         (the FMA loop beats the derived peak: it implies {ghz:.2} GHz under the FMA assumption, a boost clock above the reported one)");
    }
    println!("         memory bandwidth at {} threads: {:.1} GB/s measured (triad, 3 × 32 MiB)", m.threads, m.bandwidth_gbs_measured);
    println!("backends:");
    println!("  cpu    available ({} threads)", CpuBackend::new().threads());
    let adapters = crate::backend::wgpu::adapters();
    if adapters.is_empty() {
        println!("  wgpu   unavailable: no Vulkan adapter (install a Vulkan driver; mesa-vulkan-drivers gives lavapipe)");
    }
    for a in &adapters {
        let l = &a.limits;
        println!("  wgpu   {} ({:?}, {}, driver {})", a.name, a.device_type, a.backend, a.driver);
        println!(
            "         limits: storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, {} invocations/workgroup, {} storage buffers/stage",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_storage_buffers_per_shader_stage
        );
        let compute_features = [
            (wgpu::Features::SHADER_F16, "shader-f16"),
            (wgpu::Features::SHADER_F64, "shader-f64"),
            (wgpu::Features::SUBGROUP, "subgroup"),
            (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
            (wgpu::Features::SHADER_FLOAT32_ATOMIC, "f32-atomics"),
        ];
        let have: Vec<_> = compute_features.iter().filter(|(f, _)| a.features.contains(*f)).map(|(_, n)| *n).collect();
        println!("         compute features: {}", have.join(" "));
        let timing = if a.features.contains(wgpu::Features::TIMESTAMP_QUERY) { "gpu timestamp queries" } else { "wall time" };
        println!("         --profile timing: {timing}; peaks: not exposed by wgpu (no clock or core counts)");
    }
    for (name, choice) in [("cuda", BackendChoice::Cuda), ("cuda-emu", BackendChoice::CudaEmu)] {
        match resolve(choice) {
            Ok(_) => println!("  {name:<6} available"),
            Err(e) => println!("  {name:<6} unavailable: {e}"),
        }
    }
    for line in crate::backend::cuda::info_lines() {
        println!("         {line}");
    }
    println!("auto → {:?}", resolve(BackendChoice::Auto)?);
    Ok(())
}
