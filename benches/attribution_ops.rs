//! The attribution ops (issue 6) one by one at TinyMem integrated-gradients shapes: `--queries` query
//! positions × `--steps` path points as rows, the model's width 128 (4 heads), MLP width 512, context
//! 150, vocabulary 14. Prints a table and one JSON line per op, on the cpu backend (the baseline) and,
//! with `--backend wgpu|cuda`, on that backend too. Not a test: nothing here asserts a speed.
//!
//! cargo bench --bench attribution_ops -- [--backend cpu|wgpu|cuda|cuda-emu] [--queries 64] [--steps 20] [--reps 5]

#[path = "common/mod.rs"]
mod common;

use common::{arg, time};
use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::{Backend, Device, Op};

struct Shape {
    queries: usize,
    steps: usize,
    c: usize,
    nh: usize,
    t_ctx: usize,
    hidden: usize,
    vocab: usize,
}

fn main() {
    let sh = Shape {
        queries: arg("--queries", "64").parse().expect("--queries"),
        steps: arg("--steps", "20").parse().expect("--steps"),
        c: 128,
        nh: 4,
        t_ctx: 150,
        hidden: 512,
        vocab: 14,
    };
    let reps: usize = arg("--reps", "5").parse().expect("--reps");
    let mut rows = run(&Device::new(CpuBackend::new()), &sh, reps);
    match arg("--backend", "cpu").as_str() {
        "cpu" => {}
        "wgpu" => rows.extend(run(&Device::new(memsieve::backend::wgpu::WgpuBackend::new().unwrap_or_else(|e| panic!("{e}"))), &sh, reps)),
        "cuda" => rows.extend(run(&Device::new(memsieve::backend::cuda::CudaDriverBackend::new(0).unwrap_or_else(|e| panic!("{e}"))), &sh, reps)),
        // The emulator is a smoke run of the kernels, not a timing.
        "cuda-emu" => rows.extend(run(&Device::new(memsieve::backend::cuda::CudaEmuBackend::emulator().unwrap_or_else(|e| panic!("{e}"))), &sh, reps)),
        other => panic!("unknown --backend {other} (cpu, wgpu, cuda or cuda-emu)"),
    }
    println!("{:<8} {:<24} {:>8} {:>12} {:>10} {:>10}", "backend", "op", "rows", "median ms", "GFLOP/s", "GB/s");
    for (backend, op, n, secs, flops, bytes) in &rows {
        println!("{backend:<8} {op:<24} {n:>8} {:>12.3} {:>10.2} {:>10.2}", secs * 1e3, flops / secs / 1e9, bytes / secs / 1e9);
    }
    for (backend, op, n, secs, flops, bytes) in &rows {
        println!(
            "{{\"bench\":\"attribution_ops\",\"backend\":\"{backend}\",\"op\":\"{op}\",\"rows\":{n},\"queries\":{},\"steps\":{},\"median_s\":{secs:.6e},\"gflops\":{:.3},\"gbps\":{:.3}}}",
            sh.queries, sh.steps, flops / secs / 1e9, bytes / secs / 1e9
        );
    }
}

/// (backend, op, rows, median seconds, FLOPs, bytes) per op.
fn run<B: Backend>(dev: &Device<B>, sh: &Shape, reps: usize) -> Vec<(String, &'static str, usize, f64, f64, f64)> {
    let Shape { queries, steps, c, nh, t_ctx, hidden, vocab } = *sh;
    let n = queries * steps;
    // A pseudo-random buffer of `len` words in [-1, 1) (or ids below `below`).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut buf = |len: usize, below: Option<u32>| {
        let b = dev.alloc(len).expect("alloc");
        let words: Vec<u32> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let x = (seed >> 40) as u32;
                match below {
                    Some(m) => x % m,
                    None => ((x as f32 / (1u32 << 24) as f32) * 2.0 - 1.0).to_bits(),
                }
            })
            .collect();
        dev.upload_u32(dev.view(&b), &words);
        b
    };
    // Each query's path points share its context position (index), as the IG driver lays them out.
    let positions = buf(queries, Some((queries * t_ctx) as u32));
    let pos = dev.download_u32(dev.view(&positions));
    let index = dev.alloc(n).expect("alloc");
    dev.upload_u32(dev.view(&index), &(0..n).map(|r| pos[r / steps]).collect::<Vec<_>>());
    let (acts, alphas, gathered) = (buf(queries * t_ctx * hidden, None), buf(n, None), buf(n * hidden, None));
    let (ctx, qkv, y, att) = (buf(queries * t_ctx * 3 * c, None), buf(n * 3 * c, None), buf(n * c, None), buf(n * nh * t_ctx, None));
    let (dqkv, probs, targets, ig) = (buf(n * 3 * c, None), buf(n * vocab, None), buf(n, Some(vocab as u32)), buf(queries * hidden, None));
    let names = ["gather_rows", "attention_row_forward", "attention_row_backward", "target_prob_backward", "ig_reduce"];
    let v = |b| dev.view(b);
    let op = |k: usize| match k {
        0 => Op::GatherRows { out: v(&gathered), src: v(&acts), index: v(&index), scale: Some(v(&alphas)), n, w: hidden },
        1 => Op::AttentionRowForward { out: v(&y), att: v(&att), qkv: v(&qkv), ctx: v(&ctx), index: v(&index), n, t_ctx, c, nh },
        2 => Op::AttentionRowBackward { dqkv: v(&dqkv), dout: v(&y), qkv: v(&qkv), ctx: v(&ctx), att: v(&att), index: v(&index), n, t_ctx, c, nh },
        3 => Op::TargetProbBackward { dlogits: v(&probs), probs: v(&probs), targets: v(&targets), n, v: vocab, log: false },
        _ => Op::IgReduce { ig: v(&ig), grads: v(&gathered), src: v(&acts), index: v(&index), n, m: steps, w: hidden },
    };
    names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let secs = time(reps, true, || {
                dev.exec(op(k));
                dev.backend.synchronize();
            });
            let cost = op(k).cost();
            (dev.backend.name().to_string(), *name, n, secs, cost.flops, cost.bytes)
        })
        .collect()
}
