//! The device PSMI pipeline (src/smi/pipeline.rs) on one backend, beside `smi::psmi` on the cpu, on the
//! synthetic Gaussian classes of benches/smi.rs: one JSON line per workload, then the ratio. `--ksg`
//! adds the per-slice KSG MI to both (on the device: `Op::SmiKsg`); `--max-memory BYTES` forces
//! sample chunks.
//!
//! cargo bench --bench smi_pipeline -- [--backend cpu|wgpu|cuda|cuda-emu] [--n 4000] [--d 1024]
//!     [--k 1000] [--classes 4] [--reps 3] [--max-memory BYTES] [--ksg]

use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::cuda::{CudaDriverBackend, CudaEmuBackend};
use memsieve::backend::wgpu::WgpuBackend;
use memsieve::backend::{Backend, Device};
use memsieve::smi::pipeline::{psmi_on_device, Input, PipelineOptions};
use memsieve::smi::{psmi, Classes, Ddof, Directions, KsgOptions, PsmiOptions};
use std::hint::black_box;

#[path = "common/mod.rs"]
mod common;
use common::arg;

fn time(reps: usize, f: impl FnMut()) -> f64 {
    common::time(reps, true, f)
}

struct Setup {
    n: usize,
    d: usize,
    k: usize,
    c: usize,
    reps: usize,
    x: Vec<f32>,
    classes: Classes,
    opts: PipelineOptions,
}

fn bench<B: Backend>(dev: &Device<B>, s: &Setup) -> (f64, f64) {
    let dirs = Directions::seeded(0, s.d);
    let inp = Input { x: &s.x, n: s.n, d: s.d, classes: &s.classes };
    let none = |_: usize, _: usize| {};
    let (_, plan) = psmi_on_device(dev, &inp, &dirs, s.k, &s.opts, None, &none).unwrap();
    let secs = time(s.reps, || {
        black_box(psmi_on_device(dev, &inp, &dirs, s.k, &s.opts, None, &none).unwrap());
    });
    println!(
        "{{\"impl\":\"memsieve-{}\",\"workload\":\"psmi_pipeline_f32{}\",\"n\":{},\"d\":{},\"k\":{},\"classes\":{},\"block\":{},\"chunk\":{},\"seconds\":{secs:.4}}}",
        dev.backend.name(), if s.opts.ksg.is_some() { "_ksg" } else { "" }, s.n, s.d, s.k, s.c, plan.block, plan.chunk
    );
    let reference = time(s.reps, || {
        let o = PsmiOptions { ddof: Ddof::Zero, block: 500, ksg: s.opts.ksg.clone() };
        black_box(psmi(&s.x, s.n, s.d, &s.classes, &dirs, s.k, &o, &none).unwrap());
    });
    println!("{{\"impl\":\"memsieve-cpu\",\"workload\":\"psmi_f32{}\",\"n\":{},\"d\":{},\"k\":{},\"classes\":{},\"seconds\":{reference:.4}}}", if s.opts.ksg.is_some() { "_ksg" } else { "" }, s.n, s.d, s.k, s.c);
    (secs, reference)
}

fn main() {
    let (n, d, k, c): (usize, usize, usize, usize) =
        (arg("--n", "4000").parse().unwrap(), arg("--d", "1024").parse().unwrap(), arg("--k", "1000").parse().unwrap(), arg("--classes", "4").parse().unwrap());
    let reps: usize = arg("--reps", "3").parse().unwrap();
    let max_memory = std::env::args().position(|a| a == "--max-memory").map(|_| arg("--max-memory", "0").parse::<usize>().unwrap());
    let (x, labels) = memsieve::bench::gaussian_classes(n, d, c);
    let classes = Classes::new(&labels).unwrap();
    let s = Setup { n, d, k, c, reps, x, classes, opts: PipelineOptions { ddof: Ddof::Zero, block: 500, ksg: std::env::args().any(|a| a == "--ksg").then(KsgOptions::default), max_memory } };
    let (secs, reference) = match arg("--backend", "cpu").as_str() {
        "cpu" => bench(&Device::new(CpuBackend::new()), &s),
        "wgpu" => bench(&Device::new(WgpuBackend::new().unwrap()), &s),
        "cuda" => bench(&Device::new(CudaDriverBackend::new(0).unwrap()), &s),
        "cuda-emu" => bench(&Device::new(CudaEmuBackend::emulator().unwrap()), &s),
        other => panic!("unknown --backend {other}"),
    };
    eprintln!("pipeline / smi::psmi (cpu) = {:.2}", secs / reference);
}
