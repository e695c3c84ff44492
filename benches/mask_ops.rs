//! The masked-weight ops (issue 7) at TinyMem shapes beside the plain matmul they replace: a Subnet
//! step's forward and backward of `c_fc` [128, 512] and `c_proj` [512, 128] over `--rows` rows
//! (32 × 150 = 4800), the frozen weight's plain MatmulBackward (dinp + dweight) against the masked
//! one (dinp + the straight-through dscores), SelectRank over one matrix (65,536 scores, the mask
//! ratio's rank) and over Greedy's whole parameter buffer (`--params`, arg-max and a middle rank).
//! Prints a table and one JSON line per op, on the cpu backend and, with `--backend wgpu|cuda`, on
//! that backend too. Not a test: nothing here asserts a speed.
//!
//! cargo bench --bench mask_ops -- [--backend cpu|wgpu|cuda|cuda-emu] [--rows 4800] [--params 800000] [--reps 5]

#[path = "common/mod.rs"]
mod common;

use common::{arg, time};
use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::{Backend, Device, Op, SelectKey, WeightLayout};

fn main() {
    let rows: usize = arg("--rows", "4800").parse().expect("--rows");
    let params: usize = arg("--params", "800000").parse().expect("--params");
    let reps: usize = arg("--reps", "5").parse().expect("--reps");
    let mut out = run(&Device::new(CpuBackend::new()), rows, params, reps);
    match arg("--backend", "cpu").as_str() {
        "cpu" => {}
        "wgpu" => out.extend(run(&Device::new(memsieve::backend::wgpu::WgpuBackend::new().unwrap_or_else(|e| panic!("{e}"))), rows, params, reps)),
        "cuda" => out.extend(run(&Device::new(memsieve::backend::cuda::CudaDriverBackend::new(0).unwrap_or_else(|e| panic!("{e}"))), rows, params, reps)),
        // The emulator is a smoke run of the kernels, not a timing.
        "cuda-emu" => out.extend(run(&Device::new(memsieve::backend::cuda::CudaEmuBackend::emulator().unwrap_or_else(|e| panic!("{e}"))), rows, params, reps)),
        other => panic!("unknown --backend {other} (cpu, wgpu, cuda or cuda-emu)"),
    }
    println!("{:<8} {:<32} {:>10} {:>12} {:>10} {:>10}", "backend", "op", "size", "median ms", "GFLOP/s", "GB/s");
    for (backend, op, size, secs, flops, bytes) in &out {
        println!("{backend:<8} {op:<32} {size:>10} {:>12.3} {:>10.2} {:>10.2}", secs * 1e3, flops / secs / 1e9, bytes / secs / 1e9);
    }
    for (backend, op, size, secs, flops, bytes) in &out {
        println!(
            "{{\"bench\":\"mask_ops\",\"backend\":\"{backend}\",\"op\":\"{op}\",\"size\":\"{size}\",\"median_s\":{secs:.6e},\"gflops\":{:.3},\"gbps\":{:.3}}}",
            flops / secs / 1e9,
            bytes / secs / 1e9
        );
    }
}

type Row = (String, String, String, f64, f64, f64);

fn run<B: Backend>(dev: &Device<B>, n: usize, params: usize, reps: usize) -> Vec<Row> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut buf = |len: usize| {
        let b = dev.alloc(len).expect("alloc");
        let words: Vec<f32> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        dev.upload_f32(dev.view(&b), &words);
        b
    };
    let mut rows = Vec::new();
    for (tensor, c, oc) in [("c_fc", 128, 512), ("c_proj", 512, 128)] {
        let (inp, w, bias, scores, out, dout, dinp, dw, ds, cut) =
            (buf(n * c), buf(c * oc), buf(oc), buf(c * oc), buf(n * oc), buf(n * oc), buf(n * c), buf(c * oc), buf(c * oc), buf(2));
        let size = format!("{n}x{c}x{oc}");
        // The mask prunes 10% of the matrix (the rank the Subnet step selects).
        dev.exec(Op::SelectRank { cut: dev.view(&cut), x: dev.view(&scores), y: None, n: c * oc, k: c * oc / 10, key: SelectKey::Abs });
        record(dev, &mut rows, reps, format!("matmul_forward {tensor}"), size.clone(), || Op::MatmulForward {
            out: dev.view(&out), inp: dev.view(&inp), weight: dev.view(&w), bias: Some(dev.view(&bias)), n, c, oc, layout: WeightLayout::InOut,
        });
        record(dev, &mut rows, reps, format!("masked_matmul_forward {tensor}"), size.clone(), || Op::MaskedMatmulForward {
            out: dev.view(&out), inp: dev.view(&inp), weight: dev.view(&w), bias: Some(dev.view(&bias)), scores: dev.view(&scores), cut: dev.view(&cut), n, c, oc,
        });
        record(dev, &mut rows, reps, format!("matmul_backward {tensor}"), size.clone(), || Op::MatmulBackward {
            dinp: Some(dev.view(&dinp)), dweight: Some(dev.view(&dw)), dbias: None, dout: dev.view(&dout), inp: dev.view(&inp), weight: dev.view(&w), n, c, oc,
            layout: WeightLayout::InOut,
        });
        record(dev, &mut rows, reps, format!("masked_matmul_backward {tensor}"), size.clone(), || Op::MaskedMatmulBackward {
            dinp: Some(dev.view(&dinp)), dscores: Some(dev.view(&ds)), dout: dev.view(&dout), inp: dev.view(&inp), weight: dev.view(&w), scores: dev.view(&scores), cut: dev.view(&cut), n, c, oc,
        });
        record(dev, &mut rows, reps, format!("select_rank {tensor} (10%)"), format!("{}", c * oc), || Op::SelectRank {
            cut: dev.view(&cut), x: dev.view(&scores), y: None, n: c * oc, k: c * oc / 10, key: SelectKey::Abs,
        });
    }
    let (p, g, cut) = (buf(params), buf(params), buf(2));
    record(dev, &mut rows, reps, "select_rank greedy arg-max".into(), format!("{params}"), || Op::SelectRank {
        cut: dev.view(&cut), x: dev.view(&p), y: Some(dev.view(&g)), n: params, k: params - 1, key: SelectKey::Signed,
    });
    record(dev, &mut rows, reps, "select_rank middle".into(), format!("{params}"), || Op::SelectRank {
        cut: dev.view(&cut), x: dev.view(&p), y: Some(dev.view(&g)), n: params, k: params / 2, key: SelectKey::Signed,
    });
    record(dev, &mut rows, reps, "mask_apply greedy".into(), format!("{params}"), || Op::MaskApply {
        w: dev.view(&p), x: dev.view(&p), y: Some(dev.view(&g)), cut: dev.view(&cut), n: params, key: SelectKey::Signed, below: false,
    });
    rows
}

/// Time one op (median of `reps` after a warm-up) and add its row.
fn record<'a, B: Backend>(dev: &Device<B>, rows: &mut Vec<Row>, reps: usize, name: String, size: String, op: impl Fn() -> Op<'a, B::Buffer>) {
    let secs = time(reps, true, || {
        dev.exec(op());
        dev.backend.synchronize();
    });
    let cost = op().cost();
    rows.push((dev.backend.name().to_string(), name, size, secs, cost.flops, cost.bytes));
}
